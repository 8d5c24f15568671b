//! The retention purge: deletes what is older than `VOICE_RETENTION_DAYS` in small batches,
//! with a pause after each, so the writes of new calls never queue behind it.
//!
//! Deleted: calls created before the cutoff with their stored answers and media sessions;
//! finished outbox events (delivered, dead, skipped) created before it; diagnostics last seen
//! before it; alerts raised before it. Pending events are never deleted. On SQLite the freed
//! pages are given back to the file system after each batch.
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{outage::Outage, Error};
use crate::{
    config::Retention,
    db::{self, retention::Selection, Pool},
    metrics::Metrics,
};

/// How often a purge waiting for the database (circuit open) looks again.
const OUTAGE_RECHECK: Duration = Duration::from_secs(1);

/// A batch is followed by a pause of at least this many times its own duration, so the purge
/// holds the database (SQLite's one writer) at most a fifth of the time, however slow a batch
/// turns out on a loaded machine.
const PAUSE_PER_BATCH_TIME: u32 = 4;

/// What one purge run deletes and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Records older than this are deleted.
    pub max_age: Duration,
    /// Rows (calls, with their answers and sessions) per transaction.
    pub batch_size: u64,
    /// Pause after each batch.
    pub pause: Duration,
}

impl Policy {
    /// The configured policy, or `None` when everything is kept (`VOICE_RETENTION_DAYS=0`).
    pub fn from_config(retention: &Retention) -> Option<Self> {
        Some(Self {
            max_age: retention.max_age()?,
            batch_size: retention.batch_size.max(1),
            pause: retention.pause,
        })
    }

    /// The creation time before which records are deleted, for a run at `now`.
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.max_age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// Rows one run deleted, by table, and the transactions it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub calls: u64,
    pub call_webhooks: u64,
    pub media_sessions: u64,
    pub outbox_events: u64,
    pub diagnostics: u64,
    pub alerts: u64,
    /// Batches that deleted at least one row.
    pub batches: u64,
    /// False when the run was stopped (shutdown) before it deleted everything due.
    pub complete: bool,
}

impl Purged {
    /// Every row deleted.
    pub fn total(&self) -> u64 {
        self.calls
            + self.call_webhooks
            + self.media_sessions
            + self.outbox_events
            + self.diagnostics
            + self.alerts
    }
}

/// The tables purged after the calls, each one batch at a time.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Events,
    Diagnostics,
    Alerts,
}

/// Runs one purge at `now`: every table in batches of `policy.batch_size`, pausing after each
/// batch and, while the database circuit is open (an outage), until it closes. Each batch is
/// counted in `voice_retention_deleted_total` as it commits. Returns early (`complete: false`)
/// when `stop` is cancelled.
pub async fn purge(
    db: &Pool,
    policy: &Policy,
    now: DateTime<Utc>,
    outage: &Outage,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<Purged, Error> {
    let cutoff = policy.cutoff(now);
    let limit = policy.batch_size;
    let mut purged = Purged::default();
    loop {
        if !ready(outage, stop).await {
            return Ok(purged);
        }
        let started = Instant::now();
        let batch = db::retention::delete_calls_before(db, cutoff, limit).await?;
        if batch.calls == 0 {
            break;
        }
        purged.calls += batch.calls;
        purged.call_webhooks += batch.call_webhooks;
        purged.media_sessions += batch.media_sessions;
        metrics.retention_deleted("calls", batch.calls);
        metrics.retention_deleted("call_webhooks", batch.call_webhooks);
        metrics.retention_deleted("media_sessions", batch.media_sessions);
        if !after_batch(db, policy, started, &mut purged, stop).await? {
            return Ok(purged);
        }
        if batch.calls < limit {
            break;
        }
    }
    for kind in [Kind::Events, Kind::Diagnostics, Kind::Alerts] {
        loop {
            if !ready(outage, stop).await {
                return Ok(purged);
            }
            let (selection, table, total) = match kind {
                Kind::Events => (
                    Selection::FinishedEvents,
                    "outbox_events",
                    &mut purged.outbox_events,
                ),
                Kind::Diagnostics => (Selection::Diagnostics, "diagnostics", &mut purged.diagnostics),
                Kind::Alerts => (Selection::Alerts, "alerts", &mut purged.alerts),
            };
            let started = Instant::now();
            let deleted = db::retention::delete_before(db, selection, cutoff, limit).await?;
            if deleted == 0 {
                break;
            }
            *total += deleted;
            metrics.retention_deleted(table, deleted);
            if !after_batch(db, policy, started, &mut purged, stop).await? {
                return Ok(purged);
            }
            if deleted < limit {
                break;
            }
        }
    }
    purged.complete = true;
    Ok(purged)
}

/// Waits while the database circuit is open; false when `stop` was cancelled meanwhile.
async fn ready(outage: &Outage, stop: &CancellationToken) -> bool {
    while outage.circuit_open() {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(OUTAGE_RECHECK) => {}
        }
    }
    !stop.is_cancelled()
}

/// After a batch that deleted rows (begun at `started`): counts it, gives the freed pages back
/// (SQLite) and pauses (`pause_after`); false when `stop` was cancelled during the pause.
async fn after_batch(
    db: &Pool,
    policy: &Policy,
    started: Instant,
    purged: &mut Purged,
    stop: &CancellationToken,
) -> Result<bool, Error> {
    purged.batches += 1;
    db::retention::release_free_pages(db).await?;
    tokio::select! {
        () = stop.cancelled() => Ok(false),
        () = tokio::time::sleep(pause_after(policy, started.elapsed())) => Ok(true),
    }
}

/// The pause after a batch that took `took` (its deletes and the page release): the policy's
/// pause, or `PAUSE_PER_BATCH_TIME` times the batch's time when that is longer.
fn pause_after(policy: &Policy, took: Duration) -> Duration {
    policy.pause.max(took * PAUSE_PER_BATCH_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_batch_is_followed_by_a_longer_pause() {
        let policy = Policy {
            max_age: DAY,
            batch_size: 100,
            pause: Duration::from_millis(50),
        };
        assert_eq!(
            pause_after(&policy, Duration::from_millis(2)),
            Duration::from_millis(50)
        );
        assert_eq!(
            pause_after(&policy, Duration::from_millis(30)),
            Duration::from_millis(120)
        );
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn keeping_everything_is_no_policy() {
        let mut retention = Retention {
            days: 0,
            batch_size: 0,
            pause: Duration::ZERO,
            interval: Duration::from_secs(1),
        };
        assert_eq!(Policy::from_config(&retention), None);
        retention.days = 2;
        let policy = Policy::from_config(&retention).unwrap();
        assert_eq!(policy.batch_size, 1, "a batch deletes at least one row");
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            policy.cutoff(now),
            DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
                .unwrap()
                .to_utc()
        );
    }
}
