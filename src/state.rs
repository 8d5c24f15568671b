//! Shared application state.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, RwLock,
    },
};

use sea_orm::DatabaseConnection;

use crate::{
    cache::{AnswerCache, RouteCache},
    config::Config,
    db::writer::Writer,
    domain::{alerts::DiagnosticsBuffer, token::TokenIssuer},
    metrics::Metrics,
    worker::supervisor::TaskHealth,
};

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub config: Arc<Config>,
    pub tokens: TokenIssuer,
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    pub routes: Arc<RouteCache>,
    pub answers: Arc<AnswerCache>,
    pub diagnostics: Arc<DiagnosticsBuffer>,
    /// Batches the webhook hot path's writes.
    pub writer: Arc<Writer>,
    /// Which supervised tasks are down; `/readyz` reports them.
    pub tasks: Arc<TaskHealth>,
}

impl AppState {
    /// Drops cached routes and answers after an admin change on this instance.
    pub fn admin_changed(&self) {
        self.routes.invalidate();
        self.answers.invalidate();
    }

    /// Builds the state for a connected, migrated database.
    pub fn new(db: DatabaseConnection, config: Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        let writer = Writer::new(
            db.clone(),
            config.database_max_connections,
            metrics.write_batch_size.clone(),
        );
        let tokens = TokenIssuer::new(config.token_secret.expose().as_bytes(), config.stream_token_ttl);
        Self {
            routes: Arc::new(RouteCache::new(config.route_cache_ttl)),
            answers: Arc::new(AnswerCache::new(config.stream_token_ttl)),
            diagnostics: Arc::new(DiagnosticsBuffer::default()),

            db,
            config: Arc::new(config),
            tokens,
            runtime: Arc::new(Runtime::default()),
            metrics,
            writer: Arc::new(writer),
            tasks: Arc::default(),
        }
    }
}

/// Per-instance runtime state: drain mode, stream count, agent health.
#[derive(Default)]
pub struct Runtime {
    draining: AtomicBool,
    active_streams: AtomicUsize,
    unhealthy_agents: RwLock<HashMap<String, String>>,
    probe_failures: RwLock<HashMap<String, u32>>,
}

/// Consecutive failed health checks that open an agent's circuit.
pub const AGENT_FAILURES_TO_OPEN: u32 = 2;

impl Runtime {
    /// Whether new calls are answered with the fallback instead of a stream.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Turns drain mode on or off.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Media streams open on this instance.
    pub fn active_streams(&self) -> usize {
        self.active_streams.load(Ordering::Relaxed)
    }

    /// Counts a stream as open until the guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.active_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Records the health of the agent at `agent_url`: `None` healthy, `Some(reason)` failing.
    pub fn set_agent_health(&self, agent_url: &str, failure: Option<String>) {
        let mut map = self.unhealthy_agents.write().expect("agent health lock");
        match failure {
            Some(reason) => map.insert(agent_url.to_owned(), reason),
            None => map.remove(agent_url),
        };
    }

    /// Records a health check of an agent: its circuit opens (calls get the fallback) after
    /// [`AGENT_FAILURES_TO_OPEN`] consecutive failures and closes at the first success.
    pub fn record_agent_probe(&self, agent_url: &str, result: Result<(), String>) {
        let mut failures = self.probe_failures.write().expect("probe lock");
        match result {
            Ok(()) => {
                failures.remove(agent_url);
                self.set_agent_health(agent_url, None);
            }
            Err(reason) => {
                let count = failures.entry(agent_url.to_owned()).or_insert(0);
                *count += 1;
                if *count >= AGENT_FAILURES_TO_OPEN {
                    self.set_agent_health(agent_url, Some(reason));
                }
            }
        }
    }

    /// Why the agent at `agent_url` is failing its health check, if it is.
    pub fn agent_failure(&self, agent_url: &str) -> Option<String> {
        self.unhealthy_agents
            .read()
            .expect("agent health lock")
            .get(agent_url)
            .cloned()
    }
}

/// Keeps a stream counted as open while alive.
pub struct StreamGuard(Arc<Runtime>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
