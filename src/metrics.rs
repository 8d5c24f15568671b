//! Prometheus metrics, exposed at `GET /metrics`.
use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// Which kind of health check an agent gets: HTTP when its route names a health URL, else TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// GET of the route's `agent_health_url`.
    Http,
    /// TCP connection to the `agent_url`'s host and port.
    Tcp,
}

impl ProbeKind {
    /// Every kind.
    pub const ALL: [Self; 2] = [Self::Http, Self::Tcp];

    /// The metric label of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

/// The `voice_webhook_deliveries_total` outcome of an attempt that will be retried (the other
/// outcomes are final outbox statuses).
pub const DELIVERY_RETRIED: &str = "failed";

/// A label set with one label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

/// A label set with one label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

/// The label of an alert: its kind (`signature_failure`, `database_unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertKind {
    pub kind: &'static str,
}

/// The kinds of alert the service raises, each a series from the start.
pub const ALERT_KINDS: [entity::states::DiagnosticKind; 2] = [
    entity::states::DiagnosticKind::SignatureFailure,
    entity::states::DiagnosticKind::DatabaseUnavailable,
];

/// HTTP request labels; `path` is a bounded set of route templates.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// The label of a supervised task.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Worker {
    pub worker: String,
}

/// The label of a table the retention purge deletes from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Table {
    pub table: &'static str,
}

/// The tables the retention purge deletes from, as `voice_retention_deleted_total` labels them.
pub const RETENTION_TABLES: [&str; 6] = [
    "calls",
    "call_webhooks",
    "media_sessions",
    "outbox_events",
    "diagnostics",
    "alerts",
];

/// Agent health check labels: the kind of check (`http`, `tcp`) and its outcome (`healthy`,
/// `unhealthy`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthCheckLabels {
    pub check: &'static str,
    pub outcome: &'static str,
}

impl HealthCheckLabels {
    /// The labels of one check's result.
    pub fn new(kind: ProbeKind, healthy: bool) -> Self {
        Self {
            check: kind.as_str(),
            outcome: if healthy { "healthy" } else { "unhealthy" },
        }
    }
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// New calls by outcome (`streamed`, `fallback`).
    pub calls: Family<Outcome, Counter>,
    /// Fallback answers by reason.
    pub fallbacks: Family<Reason, Counter>,
    /// Missing or invalid webhook signatures on known routes.
    pub signature_failures: Counter,
    /// Calls to numbers with no route.
    pub unknown_routes: Counter,
    /// Alerts raised, by kind.
    pub alerts: Family<AlertKind, Counter>,
    /// Media streams open on this instance.
    pub active_streams: Gauge,
    /// Media streams refused, by reason.
    pub streams_refused: Family<Reason, Counter>,
    /// Frames from agents dropped (never fatal), by reason.
    pub agent_frames_dropped: Family<Reason, Counter>,
    /// Media streams ended, by end reason.
    pub streams_ended: Family<Reason, Counter>,
    /// Outbox events waiting for delivery (set at scrape time).
    pub outbox_backlog: Gauge,
    /// Event deliveries by result (`delivered`, `failed`, `dead`, `skipped`).
    pub deliveries: Family<Outcome, Counter>,
    /// Request latency in seconds.
    pub http: Family<HttpLabels, Histogram>,
    /// Requests written per database transaction by the hot-path writer.
    pub write_batch_size: Histogram,
    /// Agent health checks by kind and outcome.
    pub agent_health_checks: Family<HealthCheckLabels, Counter>,
    /// Restarts of supervised tasks (after an exit or a panic), by task name.
    pub worker_restarts: Family<Worker, Counter>,
    /// 1 while the database takes this instance's writes, 0 during an outage.
    pub database_available: Gauge,
    /// Database outages this instance went through.
    pub database_outages: Counter,
    /// Calls answered from the last known configuration and spooled (database unreachable).
    pub degraded_calls: Counter,
    /// Spooled calls not yet stored in the database (set at scrape time).
    pub spool_depth: Gauge,
    /// Spooled calls replayed, by result (`stored`, `duplicate`, `rejected`).
    pub spool_replayed: Family<Outcome, Counter>,
    /// Routes in the last known configuration (set at scrape time).
    pub last_known_routes: Gauge,
    /// Agent runtimes whose circuit is open: calls to them get the fallback (set at scrape time).
    pub agent_circuits_open: Gauge,
    /// Rows deleted by the retention purge, by table.
    pub retention_deleted: Family<Table, Counter>,
    /// When the last retention purge run finished, in seconds since the Unix epoch (0: none yet).
    pub retention_last_run: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("voice");
        let m = Self {
            calls: Family::default(),
            fallbacks: Family::default(),
            signature_failures: Counter::default(),
            unknown_routes: Counter::default(),
            alerts: Family::default(),
            active_streams: Gauge::default(),
            streams_refused: Family::default(),
            agent_frames_dropped: Family::default(),
            streams_ended: Family::default(),
            outbox_backlog: Gauge::default(),
            deliveries: Family::default(),
            http: Family::new_with_constructor(latency_histogram),
            write_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            agent_health_checks: Family::default(),
            worker_restarts: Family::default(),
            database_available: Gauge::default(),
            database_outages: Counter::default(),
            degraded_calls: Counter::default(),
            spool_depth: Gauge::default(),
            spool_replayed: Family::default(),
            last_known_routes: Gauge::default(),
            agent_circuits_open: Gauge::default(),
            retention_deleted: Family::default(),
            retention_last_run: Gauge::default(),
            registry: Registry::default(),
        };
        for kind in ALERT_KINDS {
            let _ = m.alerts.get_or_create(&AlertKind { kind: kind.as_str() });
        }
        for table in RETENTION_TABLES {
            let _ = m.retention_deleted.get_or_create(&Table { table });
        }
        for outcome in SPOOL_REPLAYED {
            let _ = m.spool_replayed.get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            });
        }
        // Known series exist from the start, at zero, so rates and alerts see them.
        for outcome in entity::states::Outcome::ALL {
            let _ = m.calls.get_or_create(&Outcome {
                outcome: outcome.as_str().to_owned(),
            });
        }
        use entity::states::OutboxStatus;
        let delivered = [OutboxStatus::Delivered, OutboxStatus::Dead, OutboxStatus::Skipped];
        for outcome in delivered.iter().map(|s| s.as_str()).chain([DELIVERY_RETRIED]) {
            let _ = m.deliveries.get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            });
        }
        for reason in crate::twilio::media::Dropped::ALL {
            let _ = m.agent_frames_dropped.get_or_create(&Reason {
                reason: reason.as_str().to_owned(),
            });
        }
        for reason in entity::states::EndReason::ALL {
            let _ = m.streams_ended.get_or_create(&Reason {
                reason: reason.as_str().to_owned(),
            });
        }
        for kind in ProbeKind::ALL {
            for healthy in [true, false] {
                let _ = m
                    .agent_health_checks
                    .get_or_create(&HealthCheckLabels::new(kind, healthy));
            }
        }
        registry.register("calls", "Calls answered, by outcome", m.calls.clone());
        registry.register("fallbacks", "Fallback answers, by reason", m.fallbacks.clone());
        registry.register(
            "signature_failures",
            "Invalid or missing X-Twilio-Signature on known routes",
            m.signature_failures.clone(),
        );
        registry.register(
            "unknown_routes",
            "Calls to numbers with no route",
            m.unknown_routes.clone(),
        );
        registry.register("alerts", "Alerts raised, by kind", m.alerts.clone());
        registry.register(
            "active_streams",
            "Media streams open on this instance",
            m.active_streams.clone(),
        );
        registry.register(
            "streams_refused",
            "Media streams refused, by reason",
            m.streams_refused.clone(),
        );
        registry.register(
            "agent_frames_dropped",
            "Frames from agent runtimes dropped, by reason",
            m.agent_frames_dropped.clone(),
        );
        registry.register(
            "streams_ended",
            "Media streams ended, by end reason",
            m.streams_ended.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Outbox events waiting for delivery",
            m.outbox_backlog.clone(),
        );
        registry.register(
            "event_deliveries",
            "Event delivery attempts, by result",
            m.deliveries.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            m.http.clone(),
        );
        registry.register(
            "write_batch_size",
            "Requests written per database transaction by the hot-path writer",
            m.write_batch_size.clone(),
        );
        registry.register(
            "agent_health_checks",
            "Agent runtime health checks, by kind of check and outcome",
            m.agent_health_checks.clone(),
        );
        registry.register(
            "worker_restarts",
            "Restarts of supervised tasks after an exit or a panic, by task",
            m.worker_restarts.clone(),
        );
        registry.register(
            "database_available",
            "1 while the database takes this instance's writes, 0 during an outage",
            m.database_available.clone(),
        );
        registry.register(
            "database_outages",
            "Database outages this instance went through",
            m.database_outages.clone(),
        );
        registry.register(
            "degraded_calls",
            "Calls answered from the last known configuration and spooled while the database was unreachable",
            m.degraded_calls.clone(),
        );
        registry.register(
            "spool_depth",
            "Spooled calls not yet stored in the database",
            m.spool_depth.clone(),
        );
        registry.register(
            "spool_replayed",
            "Spooled calls replayed into the database, by result",
            m.spool_replayed.clone(),
        );
        registry.register(
            "last_known_routes",
            "Routes in the last known configuration (answered from while the database is unreachable)",
            m.last_known_routes.clone(),
        );
        registry.register(
            "agent_circuits_open",
            "Agent runtimes whose circuit is open after failed health checks (their calls get the fallback)",
            m.agent_circuits_open.clone(),
        );
        registry.register(
            "retention_deleted",
            "Rows deleted by the retention purge (VOICE_RETENTION_DAYS), by table",
            m.retention_deleted.clone(),
        );
        registry.register(
            "retention_last_run_timestamp_seconds",
            "When the last retention purge run finished, in seconds since the Unix epoch",
            m.retention_last_run.clone(),
        );
        Self { registry, ..m }
    }
}

/// The results of replaying a spooled call.
pub const SPOOL_REPLAYED: [&str; 3] = ["stored", "duplicate", "rejected"];

impl Metrics {
    /// Counts an alert raised of `kind`.
    pub fn alert_raised(&self, kind: entity::states::DiagnosticKind) {
        self.alerts
            .get_or_create(&AlertKind { kind: kind.as_str() })
            .inc();
    }

    /// The count of alerts raised of `kind`.
    pub fn alerts_raised(&self, kind: entity::states::DiagnosticKind) -> u64 {
        self.alerts
            .get_or_create(&AlertKind { kind: kind.as_str() })
            .get()
    }

    /// Counts one labelled event.
    pub fn outcome(family: &Family<Outcome, Counter>, outcome: &str) {
        family
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts `n` labelled events.
    pub fn outcome_by(family: &Family<Outcome, Counter>, outcome: &str, n: u64) {
        if n > 0 {
            family
                .get_or_create(&Outcome {
                    outcome: outcome.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Counts one event with a reason.
    pub fn reason(family: &Family<Reason, Counter>, reason: &str) {
        family
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The restart counter of the supervised task `name`, created at zero.
    pub fn worker_restarts(&self, name: &str) -> Counter {
        self.worker_restarts
            .get_or_create(&Worker {
                worker: name.to_owned(),
            })
            .clone()
    }

    /// Counts `n` rows the retention purge deleted from `table` (one of [`RETENTION_TABLES`]).
    pub fn retention_deleted(&self, table: &'static str, n: u64) {
        self.retention_deleted.get_or_create(&Table { table }).inc_by(n);
    }

    /// Records one HTTP request.
    pub fn observe_http(&self, method: &str, path: &str, status: u16, elapsed: Duration) {
        let labels = HttpLabels {
            method: method.to_owned(),
            path: route_template(path).to_owned(),
            status,
        };
        self.http.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Maps a request path to a bounded set of labels.
pub fn route_template(path: &str) -> &'static str {
    const EXACT: [&str; 9] = [
        "/api/v1/incoming-call",
        "/api/v1/incoming-call/fallback",
        "/api/v1/stream-ended",
        "/api/v1/call-status",
        "/media-stream",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/runtime/drain",
    ];
    if let Some(exact) = EXACT.iter().find(|p| **p == path) {
        return exact;
    }
    const PREFIXES: [&str; 8] = [
        "/media-stream/",
        "/api/v1/tenants",
        "/api/v1/routes",
        "/api/v1/calls",
        "/api/v1/diagnostics",
        "/api/v1/alerts",
        "/api/v1/events",
        "/api/v1/runtime",
    ];
    PREFIXES
        .iter()
        .find(|p| path.starts_with(**p))
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_bounded_paths() {
        let m = Metrics::default();
        Metrics::outcome(&m.calls, "streamed");
        m.observe_http(
            "POST",
            "/api/v1/tenants/abc/routes",
            201,
            Duration::from_millis(3),
        );
        m.observe_http("GET", "/wp-admin/x", 404, Duration::from_millis(1));
        let text = m.encode();
        assert!(
            text.contains("voice_calls_total{outcome=\"streamed\"} 1"),
            "{text}"
        );
        assert!(text.contains("path=\"/api/v1/tenants\""));
        for kind in ["signature_failure", "database_unavailable"] {
            assert!(
                text.contains(&format!("voice_alerts_total{{kind=\"{kind}\"}} 0")),
                "{text}"
            );
        }
        assert!(text.contains("voice_agent_circuits_open 0"), "{text}");
        assert!(text.contains("path=\"other\""));
        assert!(!text.contains("wp-admin"));
        assert_eq!(route_template("/media-stream/eyJabc"), "/media-stream/");
    }
}
