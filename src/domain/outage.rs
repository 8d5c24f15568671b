//! Database outages as this instance lives through them, and the replay of what it spooled.
//!
//! A request that finds the database unreachable opens the circuit ([`Outage::failed`]): from
//! then on webhooks are answered from the last known configuration without trying the
//! database, and new calls are spooled to local disk. The spool task probes the database; when
//! it answers, the circuit closes and requests try it again ([`Outage::probe_succeeded`]). The
//! outage ends at the first write that succeeds ([`Outage::write_succeeded`]): one log line at
//! its start, one at its end, an operator diagnostic and an alert, and gauges in between.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use entity::states::{DiagnosticKind, FallbackReason};
use sea_orm::{DbErr, TransactionTrait};

use super::{
    alerts::{Diagnostics, Occurrence},
    Error,
};
use crate::{
    db::{
        self,
        spool::{Spool, Taken},
        writer::{NewCall, Writer},
    },
    metrics::Metrics,
};

/// The outage going on.
struct Episode {
    started_at: DateTime<Utc>,
    started: Instant,
}

/// How an outage ended: what the alert and the log line say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub started_at: DateTime<Utc>,
    pub lasted: Duration,
    /// Calls answered with their route's fallback and spooled meanwhile.
    pub answered: u64,
}

impl Ended {
    /// The alert's message.
    pub fn message(&self) -> String {
        format!(
            "the database was unreachable for {:.1} s from {}; {} calls were answered with their \
             route's fallback from the last known configuration and spooled",
            self.lasted.as_secs_f64(),
            self.started_at.to_rfc3339(),
            self.answered
        )
    }
}

/// This instance's view of the database's availability.
pub struct Outage {
    /// Requests skip the database (answered from the last known configuration).
    circuit_open: AtomicBool,
    /// An outage is going on (set with the episode; read on the hot path).
    ongoing: AtomicBool,
    /// A write succeeded since the outage began.
    recovered: AtomicBool,
    episode: Mutex<Option<Episode>>,
    answered: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Outage {
    /// No outage, reporting to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.database_available.set(1);
        Self {
            circuit_open: AtomicBool::new(false),
            ongoing: AtomicBool::new(false),
            recovered: AtomicBool::new(false),
            episode: Mutex::default(),
            answered: AtomicU64::new(0),
            metrics,
        }
    }

    /// Whether requests should not try the database now.
    pub fn circuit_open(&self) -> bool {
        self.circuit_open.load(Ordering::Relaxed)
    }

    /// Whether an outage is going on.
    pub fn ongoing(&self) -> bool {
        self.ongoing.load(Ordering::Relaxed)
    }

    /// The database could not be reached: opens the circuit. The first failure of an outage
    /// is logged (once) and counted as a diagnostic.
    pub fn failed(&self, err: &DbErr, diagnostics: &Diagnostics) {
        self.circuit_open.store(true, Ordering::Relaxed);
        self.recovered.store(false, Ordering::Relaxed);
        let mut episode = self.episode.lock().unwrap_or_else(PoisonError::into_inner);
        if episode.is_some() {
            return;
        }
        *episode = Some(Episode {
            started_at: Utc::now(),
            started: Instant::now(),
        });
        self.ongoing.store(true, Ordering::Relaxed);
        self.answered.store(0, Ordering::Relaxed);
        self.metrics.database_available.set(0);
        self.metrics.database_outages.inc();
        tracing::error!(
            error = %err,
            "database unreachable: answering calls to known routes with their fallback from the \
             last known configuration and spooling them to local disk until it is back"
        );
        diagnostics.record(Occurrence {
            kind: DiagnosticKind::DatabaseUnavailable,
            key: "database",
            tenant_id: None,
            route_id: None,
            detail: Some(err.to_string()),
        });
    }

    /// A call was answered without the database and spooled.
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.metrics.degraded_calls.inc();
    }

    /// The database answered a probe: requests try it again.
    pub fn probe_succeeded(&self) {
        self.circuit_open.store(false, Ordering::Relaxed);
    }

    /// A write reached the database.
    pub fn write_succeeded(&self) {
        if self.ongoing.load(Ordering::Relaxed) && !self.circuit_open.load(Ordering::Relaxed) {
            self.recovered.store(true, Ordering::Relaxed);
        }
    }

    /// Ends the outage if a write succeeded since it began (and the circuit is closed).
    pub fn take_ended(&self) -> Option<Ended> {
        if !self.recovered.load(Ordering::Relaxed) || self.circuit_open() {
            return None;
        }
        let mut episode = self.episode.lock().unwrap_or_else(PoisonError::into_inner);
        let ended = episode.take()?;
        self.recovered.store(false, Ordering::Relaxed);
        self.ongoing.store(false, Ordering::Relaxed);
        self.metrics.database_available.set(1);
        Some(Ended {
            started_at: ended.started_at,
            lasted: ended.started.elapsed(),
            answered: self.answered.swap(0, Ordering::Relaxed),
        })
    }
}

/// What replaying the spool did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Calls stored from the spool.
    pub stored: usize,
    /// Calls the database already had (a retry answered from it meanwhile wins).
    pub duplicates: usize,
    /// Calls that cannot be stored (their route is gone, say), kept in the rejected file.
    pub rejected: usize,
}

/// Replays every spool file there is: each call is stored unless its CallSid is known, then
/// the file is removed. Stops at the first failure that says the database is away again
/// (what is not replayed stays in the spool).
pub async fn replay(
    spool: &Spool,
    writer: &Writer,
    db: &db::Pool,
    metrics: &Metrics,
) -> Result<Replayed, Error> {
    let mut total = Replayed::default();
    let taken = spool.take()?;
    for file in taken {
        let replayed = replay_file(spool, writer, db, &file).await?;
        spool.finish(file)?;
        for (outcome, n) in [
            ("stored", replayed.stored),
            ("duplicate", replayed.duplicates),
            ("rejected", replayed.rejected),
        ] {
            Metrics::outcome_by(&metrics.spool_replayed, outcome, n as u64);
        }
        total.stored += replayed.stored;
        total.duplicates += replayed.duplicates;
        total.rejected += replayed.rejected;
    }
    Ok(total)
}

/// Calls submitted to the writer at once (it writes them in batches).
const REPLAY_CHUNK: usize = 256;

async fn replay_file(spool: &Spool, writer: &Writer, db: &db::Pool, file: &Taken) -> Result<Replayed, Error> {
    let mut replayed = Replayed {
        rejected: file.unreadable,
        ..Replayed::default()
    };
    for chunk in file.calls.chunks(REPLAY_CHUNK) {
        let results = futures::future::join_all(chunk.iter().map(|call| writer.claim(call.clone()))).await;
        for (call, result) in chunk.iter().zip(results) {
            match result {
                Ok(true) => replayed.stored += 1,
                Ok(false) => {
                    if merge_known(db, call).await? {
                        replayed.stored += 1;
                    } else {
                        replayed.duplicates += 1;
                    }
                }
                Err(e) if db::is_unavailable(&e) => return Err(e.into()),
                Err(e) => {
                    tracing::error!(
                        call_sid = %call.call.call_sid,
                        error = %e,
                        rejected_file = %spool.dir().join(db::spool::REJECTED_FILE).display(),
                        "a spooled call cannot be stored; it is kept in the rejected file"
                    );
                    spool.reject(call)?;
                    replayed.rejected += 1;
                }
            }
        }
    }
    Ok(replayed)
}

/// A spooled call whose CallSid the database knows: true when it is this very call; otherwise
/// the database's answer wins and the spooled delivery counts as one more attempt of the call.
///
/// The same call is either stored by an earlier replay of the file (that stopped before
/// removing it), or the write the caller could not wait for committed after all, with the
/// answer the caller never heard: then the call is corrected to what the caller heard (its
/// fallback), with the spooled `call.fallback` event.
async fn merge_known(db: &db::Pool, spooled: &NewCall) -> Result<bool, Error> {
    let Some(existing) = db::calls::by_sid(db, &spooled.call.call_sid).await? else {
        return Err(Error::Conflict(
            "a spooled call vanished while it was replayed".to_owned(),
        ));
    };
    if existing.id == spooled.call.id {
        if existing.fallback_reason != spooled.call.fallback_reason {
            let txn = db.begin().await?;
            db::calls::set_fallback(
                &txn,
                existing,
                FallbackReason::DatabaseUnavailable,
                spooled.call.error_code.clone(),
                spooled.call.error_url.clone(),
            )
            .await?;
            db::calls::replace_answer(&txn, &spooled.answer).await?;
            db::outbox::insert(&txn, spooled.event.clone()).await?;
            txn.commit().await?;
            tracing::warn!(
                call_sid = %spooled.call.call_sid,
                "a write that missed its deadline committed later; the call is corrected to the fallback its caller heard"
            );
        }
        return Ok(true);
    }
    if existing.route_id == spooled.call.route_id {
        db::calls::bump_attempts(db, &existing.id).await?;
    }
    Ok(false)
}
