//! Operator diagnostics and alerting. Occurrences (signature failures, calls to unknown numbers,
//! refused streams, ...) are counted in memory on the request path and written in one
//! transaction per flush interval, so a flood of forged or misdirected requests costs no
//! database write per request. Signature failures on production routes raise an alert in the
//! flush whose counts cross the threshold within the window: one per window.
//!
//! Nor does such a flood write a log line per request: the caller logs an occurrence only when
//! it is its key's first since the last flush ([`Diagnostics::record`] says so), and the flush
//! logs one line per key for the occurrences that followed it. So a key costs at most two lines
//! per flush interval, however many requests repeat it.
use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use entity::states::{DiagnosticKind, RouteEnvironment};
use sea_orm::TransactionTrait;

use super::Error;
use crate::{
    db,
    events::{AlertRaisedData, Event},
    metrics::Metrics,
};

/// One occurrence to count: what happened (`kind`) to what (`key`: a number, route id or
/// CallSid), with the ids it concerns.
#[derive(Debug, Clone)]
pub struct Occurrence<'a> {
    pub kind: DiagnosticKind,
    pub key: &'a str,
    pub tenant_id: Option<&'a str>,
    pub route_id: Option<&'a str>,
    pub detail: Option<String>,
}

/// When repeated signature failures raise an alert.
#[derive(Debug, Clone, Copy)]
pub struct AlertRule {
    /// Failures within `window` that raise one.
    pub threshold: u32,
    pub window: Duration,
}

/// Most distinct keys stored per diagnostic kind (extra keys are counted under one row).
pub const MAX_KEYS_PER_KIND: u64 = 1000;

/// Most distinct keys buffered between flushes.
const MAX_PENDING: usize = 10_000;

/// Occurrences not yet written.
#[derive(Debug, Clone, Default)]
struct Pending {
    count: i64,
    tenant_id: Option<String>,
    route_id: Option<String>,
    detail: Option<String>,
    /// A signature failure on a production route (alerts apply).
    production: bool,
    /// Occurrences since the key's last log line (the first is logged by its caller).
    unlogged: i64,
}

impl Pending {
    /// Adds `other`'s counts; its ids and detail win when present (they are the same for a key).
    fn merge(&mut self, other: Pending) {
        self.count += other.count;
        self.unlogged += other.unlogged;
        self.production |= other.production;
        self.tenant_id = other.tenant_id.or(self.tenant_id.take());
        self.route_id = other.route_id.or(self.route_id.take());
        self.detail = other.detail.or(self.detail.take());
    }
}

/// Buffered keys: (kind, key).
type Buffer = HashMap<(DiagnosticKind, String), Pending>;

/// Diagnostics of one instance: counted in memory, written by [`Diagnostics::flush`].
pub struct Diagnostics {
    pending: Mutex<Buffer>,
    db: db::Pool,
    metrics: Arc<Metrics>,
    rule: AlertRule,
}

impl Diagnostics {
    /// Diagnostics written to `db`, alerting by `rule`.
    pub fn new(db: db::Pool, metrics: Arc<Metrics>, rule: AlertRule) -> Self {
        Self {
            pending: Mutex::default(),
            db,
            metrics,
            rule,
        }
    }

    /// Counts one occurrence. True when it is the first of its key since the last flush: log it
    /// then (the flush logs how many followed it).
    pub fn record(&self, occurrence: Occurrence<'_>) -> bool {
        self.add(occurrence, false)
    }

    /// Counts a signature failure on a route; true when it is the route's first since the last
    /// flush, as for [`Diagnostics::record`].
    pub fn signature_failure(&self, route: &entity::route::Model, tenant: &entity::tenant::Model) -> bool {
        self.metrics.signature_failures.inc();
        self.add(
            Occurrence {
                kind: DiagnosticKind::SignatureFailure,
                key: &route.id,
                tenant_id: Some(&tenant.id),
                route_id: Some(&route.id),
                detail: Some(route.phone_number.clone()),
            },
            route.environment == RouteEnvironment::Production,
        )
    }

    /// Counts one occurrence; `production` marks signature failures on production routes.
    /// True when its key was not buffered.
    fn add(&self, occurrence: Occurrence<'_>, production: bool) -> bool {
        let mut pending = self.lock();
        let mut key = (occurrence.kind, occurrence.key.to_owned());
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            key.1 = db::diagnostics::OVERFLOW_KEY.to_owned();
        }
        let entry = pending.entry(key);
        let first = matches!(entry, std::collections::hash_map::Entry::Vacant(_));
        entry.or_default().merge(Pending {
            count: 1,
            tenant_id: occurrence.tenant_id.map(str::to_owned),
            route_id: occurrence.route_id.map(str::to_owned),
            detail: occurrence.detail,
            production,
            unlogged: i64::from(!first),
        });
        first
    }

    /// Logs, one line per key, the occurrences not logged since its last line, at the level
    /// its callers log the first at. Called every flush interval, also while the database is
    /// away (when the flush writes nothing).
    pub fn log_repeats(&self) {
        let repeats = unlogged(&mut self.lock());
        log_repeats(repeats);
    }

    /// The buffer; a panic while it was held loses nothing worth stopping for.
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Buffer {
        std::mem::take(&mut *self.lock())
    }

    /// Writes buffered occurrences and raises the alerts they call for; returns how many
    /// distinct keys were written. Failed writes are put back for the next flush.
    pub async fn flush(&self) -> Result<usize, Error> {
        // Taken with the buffer, under one lock: an occurrence counted in between would be
        // written but never logged.
        let mut pending = self.take();
        log_repeats(unlogged(&mut pending));
        let n = pending.len();
        let mut entries = pending.into_iter();
        while let Some(((kind, key), p)) = entries.next() {
            if let Err(e) = self.write(kind, &key, &p).await {
                let mut buffer = self.lock();
                for (key, p) in std::iter::once(((kind, key), p)).chain(entries) {
                    buffer.entry(key).or_default().merge(p);
                }
                return Err(e);
            }
        }
        Ok(n)
    }

    async fn write(&self, kind: DiagnosticKind, key: &str, p: &Pending) -> Result<(), Error> {
        let rule = self.rule;
        let row = db::diagnostics::DiagnosticRow {
            kind,
            key,
            tenant_id: p.tenant_id.as_deref(),
            route_id: p.route_id.as_deref(),
            detail: p.detail.clone(),
        };
        if kind != DiagnosticKind::SignatureFailure {
            db::diagnostics::record_bounded(&self.db, &row, p.count, rule.window, MAX_KEYS_PER_KIND).await?;
            return Ok(());
        }
        let txn = self.db.begin().await?;
        let counts = db::diagnostics::record(&txn, &row, p.count, rule.window).await?;
        let threshold = i64::from(rule.threshold);
        if p.production && crosses(counts.in_window, p.count, threshold) {
            let message = format!(
                "{} signature failures within {} s on production route {key} ({})",
                counts.in_window,
                rule.window.as_secs(),
                p.detail.as_deref().unwrap_or("-"),
            );
            let alert = db::alerts::insert(
                &txn,
                db::alerts::NewAlert {
                    tenant_id: p.tenant_id.as_deref(),
                    route_id: Some(key),
                    kind,
                    message: message.clone(),
                    failure_count: counts.in_window,
                    window_start: counts.window_start,
                },
            )
            .await?;
            if let Some(tenant_id) = &p.tenant_id {
                let event = Event::AlertRaised(AlertRaisedData {
                    alert_id: alert.id.clone(),
                    kind: alert.kind,
                    route_id: key.to_owned(),
                    failure_count: counts.in_window,
                    window_seconds: i64::try_from(rule.window.as_secs()).unwrap_or(i64::MAX),
                    message: message.clone(),
                });
                db::outbox::record(&txn, tenant_id, &event).await?;
            }
            tracing::error!(alert_id = %alert.id, route_id = %key, "{message}");
            self.metrics.alert_raised(kind);
        }
        txn.commit().await?;
        Ok(())
    }
}

/// The occurrences of each key in `buffer` not logged yet, which are then counted as logged.
fn unlogged(buffer: &mut Buffer) -> Vec<(DiagnosticKind, String, i64)> {
    buffer
        .iter_mut()
        .filter(|(_, p)| p.unlogged > 0)
        .map(|((kind, key), p)| (*kind, key.clone(), std::mem::take(&mut p.unlogged)))
        .collect()
}

/// Logs each key's `repeats`, one line per key.
fn log_repeats(repeats: Vec<(DiagnosticKind, String, i64)>) {
    for (kind, key, n) in repeats {
        let level = logged_at(kind);
        let kind = kind.as_str();
        match level {
            Some(tracing::Level::WARN) => {
                tracing::warn!(kind, key = %key, repeats = n, "{n} more {kind} since the last line");
            }
            Some(_) => tracing::info!(kind, key = %key, repeats = n, "{n} more {kind} since the last line"),
            None => {}
        }
    }
}

/// The level the callers of `kind` log its first occurrence at; `None` for kinds they do not
/// log (their counts are in the diagnostics API).
fn logged_at(kind: DiagnosticKind) -> Option<tracing::Level> {
    match kind {
        DiagnosticKind::SignatureFailure | DiagnosticKind::StreamRefused => Some(tracing::Level::WARN),
        DiagnosticKind::UnknownRoute => Some(tracing::Level::INFO),
        DiagnosticKind::AccountMismatch
        | DiagnosticKind::CallRouteConflict
        | DiagnosticKind::DatabaseUnavailable => None,
    }
}

/// Whether the `added` occurrences took the window's count (`in_window`, them included) to the
/// threshold: true in exactly one flush per window.
fn crosses(in_window: i64, added: i64, threshold: i64) -> bool {
    in_window >= threshold && in_window - added < threshold
}

#[cfg(test)]
mod tests {
    use entity::states::RouteEnvironment;

    use super::*;
    use crate::domain::webhook::fixtures::{route_with, tenant_with};

    fn diagnostics(db: db::Pool) -> Diagnostics {
        let rule = AlertRule {
            threshold: 3,
            window: Duration::from_secs(300),
        };
        Diagnostics::new(db, Arc::new(Metrics::default()), rule)
    }

    fn occurrence(kind: DiagnosticKind, key: &str) -> Occurrence<'_> {
        Occurrence {
            kind,
            key,
            tenant_id: None,
            route_id: None,
            detail: None,
        }
    }

    /// Log lines written while `f` runs, at every level.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_key_is_first_once_per_flush_and_its_repeats_are_logged_as_one_line() {
        let d = diagnostics(sea_orm::DatabaseConnection::Disconnected.into());
        let (route, tenant) = (route_with(true, None), tenant_with(None));
        let unknown = || occurrence(DiagnosticKind::UnknownRoute, "+15555550111");
        let firsts: Vec<bool> = (0..5).map(|_| d.record(unknown())).collect();
        assert_eq!(firsts, [true, false, false, false, false]);
        let firsts: Vec<bool> = (0..3).map(|_| d.signature_failure(&route, &tenant)).collect();
        assert_eq!(firsts, [true, false, false]);
        assert!(d.record(occurrence(DiagnosticKind::UnknownRoute, "+15555550112")));
        // Kinds their callers do not log have no repeat lines either.
        for _ in 0..3 {
            let _ = d.record(occurrence(DiagnosticKind::AccountMismatch, "r1"));
        }

        let lines = logged(|| d.log_repeats());
        assert_eq!(lines.len(), 2, "{lines:?}");
        let line = |kind: &str| lines.iter().find(|l| l.contains(kind)).expect(kind).as_str();
        let signature = line("signature_failure");
        assert!(
            signature.contains("WARN") && signature.contains("2 more signature_failure"),
            "{signature}"
        );
        assert!(signature.contains("key=r1"), "{signature}");
        let number = line("unknown_route");
        assert!(
            number.contains("INFO") && number.contains("4 more unknown_route"),
            "{number}"
        );
        assert!(number.contains("key=+15555550111"), "{number}");
        assert!(logged(|| d.log_repeats()).is_empty(), "repeats are logged once");

        // Still buffered: the next occurrence is a repeat, in the next line.
        assert!(!d.record(unknown()));
        let lines = logged(|| d.log_repeats());
        assert!(
            lines.len() == 1 && lines[0].contains("1 more unknown_route"),
            "{lines:?}"
        );
        // The counts written are every occurrence, logged or not.
        let pending = d.take();
        assert_eq!(
            pending[&(DiagnosticKind::UnknownRoute, "+15555550111".to_owned())].count,
            6
        );
        assert_eq!(
            pending[&(DiagnosticKind::SignatureFailure, "r1".to_owned())].count,
            3
        );
        // After a flush took them, a key is first again.
        assert!(d.record(unknown()));
    }

    #[test]
    fn an_alert_is_due_once_per_window() {
        // Threshold 3: flushes adding 1, 1, 1, 1 cross at the third only.
        let due: Vec<bool> = [1, 2, 3, 4].iter().map(|&n| crosses(n, 1, 3)).collect();
        assert_eq!(due, [false, false, true, false]);
        // One flush bringing 5 at once crosses; the next one does not.
        assert!(crosses(5, 5, 3));
        assert!(!crosses(7, 2, 3));
    }

    #[test]
    fn occurrences_of_a_key_are_merged_and_only_production_signature_failures_alert() {
        let d = diagnostics(sea_orm::DatabaseConnection::Disconnected.into());
        let (mut route, tenant) = (route_with(true, None), tenant_with(None));
        d.signature_failure(&route, &tenant);
        d.signature_failure(&route, &tenant);
        route.id = "r2".to_owned();
        route.environment = RouteEnvironment::Test;
        d.signature_failure(&route, &tenant);
        d.record(occurrence(DiagnosticKind::UnknownRoute, "+15555550111"));
        let pending = d.take();
        assert_eq!(pending.len(), 3);
        let on = |key: &str| &pending[&(DiagnosticKind::SignatureFailure, key.to_owned())];
        assert_eq!((on("r1").count, on("r1").production), (2, true));
        assert_eq!((on("r2").count, on("r2").production), (1, false));
        assert_eq!(on("r1").tenant_id.as_deref(), Some("t1"));
        assert_eq!(d.metrics.signature_failures.get(), 3);
        assert!(d.take().is_empty(), "taking empties the buffer");
    }

    #[test]
    fn keys_beyond_the_buffer_bound_are_counted_under_one_overflow_key() {
        let d = diagnostics(sea_orm::DatabaseConnection::Disconnected.into());
        let keys: Vec<String> = (0..MAX_PENDING + 5).map(|i| format!("+1555{i:07}")).collect();
        for key in &keys {
            d.record(occurrence(DiagnosticKind::UnknownRoute, key));
        }
        let pending = d.take();
        assert_eq!(pending.len(), MAX_PENDING + 1);
        let overflow = &pending[&(
            DiagnosticKind::UnknownRoute,
            db::diagnostics::OVERFLOW_KEY.to_owned(),
        )];
        assert_eq!(overflow.count, 5);
    }

    #[tokio::test]
    async fn a_failed_flush_puts_its_occurrences_back() {
        // A database without the schema: every write fails.
        let d = diagnostics(
            db::connect_url("sqlite::memory:", 1, Default::default(), None)
                .await
                .unwrap(),
        );
        d.record(occurrence(DiagnosticKind::UnknownRoute, "+15555550111"));
        d.record(occurrence(DiagnosticKind::StreamRefused, "invalid_token"));
        assert!(d.flush().await.is_err(), "no tables");
        let pending = d.take();
        assert_eq!(pending.len(), 2, "nothing lost");
    }

    #[tokio::test]
    async fn a_flush_writes_counts_and_raises_one_alert_when_the_threshold_is_crossed() {
        let db = db::connect_url("sqlite::memory:", 1, Default::default(), None)
            .await
            .unwrap();
        db::migrate(&db).await.unwrap();
        let d = diagnostics(db.clone());
        let (route, tenant) = (route_with(true, None), tenant_with(None));
        db::tenants::insert(
            &db,
            &Default::default(),
            sea_orm::IntoActiveModel::into_active_model(tenant.clone()),
        )
        .await
        .unwrap();
        for _ in 0..2 {
            d.signature_failure(&route, &tenant);
        }
        assert_eq!(d.flush().await.unwrap(), 1);
        assert!(db::alerts::list(&db, &db::Scope::Platform, None, 10)
            .await
            .unwrap()
            .items
            .is_empty());
        d.signature_failure(&route, &tenant);
        d.flush().await.unwrap();
        d.signature_failure(&route, &tenant);
        d.flush().await.unwrap();
        let alerts = db::alerts::list(&db, &db::Scope::Platform, None, 10)
            .await
            .unwrap()
            .items;
        assert_eq!(alerts.len(), 1, "one alert per window");
        assert_eq!(
            (alerts[0].kind, alerts[0].failure_count),
            (DiagnosticKind::SignatureFailure, 3)
        );
        let stored = db::diagnostics::list(
            &db,
            &db::Scope::Platform,
            Some(DiagnosticKind::SignatureFailure),
            None,
            10,
        )
        .await
        .unwrap()
        .items;
        assert_eq!(stored[0].count, 4);
        assert_eq!(d.metrics.alerts_raised(DiagnosticKind::SignatureFailure), 1);
        assert_eq!(d.metrics.alerts_raised(DiagnosticKind::DatabaseUnavailable), 0);
        let events = db::outbox::list(
            &db,
            &db::Scope::Tenant(entity::id::TenantId("t1".to_owned())),
            None,
            10,
        )
        .await
        .unwrap()
        .items;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, entity::states::EventType::AlertRaised);
    }
}
