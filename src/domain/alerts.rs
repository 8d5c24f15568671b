//! Operator diagnostics and alerting. Occurrences (signature failures, calls to unknown numbers,
//! refused streams, ...) are counted in memory on the request path and written in one
//! transaction per flush interval, so a flood of forged or misdirected requests costs no
//! database write per request. Signature failures on production routes raise an alert in the
//! flush whose counts cross the threshold within the window: one per window.
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
}

impl Pending {
    /// Adds `other`'s counts; its ids and detail win when present (they are the same for a key).
    fn merge(&mut self, other: Pending) {
        self.count += other.count;
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

    /// Counts one occurrence.
    pub fn record(&self, occurrence: Occurrence<'_>) {
        self.add(occurrence, false);
    }

    /// Counts a signature failure on a route.
    pub fn signature_failure(&self, route: &entity::route::Model, tenant: &entity::tenant::Model) {
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
        );
    }

    /// Counts one occurrence; `production` marks signature failures on production routes.
    fn add(&self, occurrence: Occurrence<'_>, production: bool) {
        let mut pending = self.lock();
        let mut key = (occurrence.kind, occurrence.key.to_owned());
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            key.1 = db::diagnostics::OVERFLOW_KEY.to_owned();
        }
        pending.entry(key).or_default().merge(Pending {
            count: 1,
            tenant_id: occurrence.tenant_id.map(str::to_owned),
            route_id: occurrence.route_id.map(str::to_owned),
            detail: occurrence.detail,
            production,
        });
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
        let pending = self.take();
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
