//! Shared application state: the parts each edge (API, media, workers) hands to the domain.
use std::sync::Arc;

use crate::{
    config::Config,
    db::{cache::RouteCache, spool::Spool, writer::Writer, Pool},
    domain::{
        alerts::{AlertRule, Diagnostics},
        outage::Outage,
        runtime::{Runtime, TaskHealth},
        token::TokenIssuer,
        webhook::{AnswerStore, VoiceSettings, WebhookContext},
    },
    metrics::Metrics,
};

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Pool,
    pub config: Arc<Config>,
    pub tokens: TokenIssuer,
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    pub routes: Arc<RouteCache>,
    /// Stored answers of the voice webhooks (cache, batch writer, replays).
    pub answers: Arc<AnswerStore>,
    pub diagnostics: Arc<Diagnostics>,
    /// Batches the webhook hot path's writes.
    pub writer: Arc<Writer>,
    /// What the voice webhooks read of the configuration.
    pub voice: Arc<VoiceSettings>,
    /// Which supervised tasks are down; `/readyz` reports them.
    pub tasks: Arc<TaskHealth>,
    /// Whether the database is reachable, as this instance sees it.
    pub outage: Arc<Outage>,
    /// New calls answered while the database was unreachable, until they are stored.
    pub spool: Arc<Spool>,
}

impl AppState {
    /// Drops cached routes and answers after an admin change on this instance.
    pub fn admin_changed(&self) {
        self.routes.invalidate();
        self.answers.invalidate();
    }

    /// The parts of the state the voice webhooks use.
    pub fn webhook_context(&self) -> WebhookContext<'_> {
        WebhookContext {
            db: &self.db,
            routes: &self.routes,
            answers: &self.answers,
            tokens: &self.tokens,
            runtime: &self.runtime,
            diagnostics: &self.diagnostics,
            metrics: &self.metrics,
            settings: &self.voice,
            outage: &self.outage,
        }
    }

    /// Builds the state for a connected, migrated database.
    pub fn new(db: Pool, config: Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        let writer = Arc::new(Writer::new(&db, metrics.write_batch_size.clone()));
        let tokens = TokenIssuer::new(
            config.stream_tokens.secret.expose().as_bytes(),
            config.stream_tokens.ttl,
        );
        let diagnostics = Diagnostics::new(
            db.clone(),
            metrics.clone(),
            AlertRule {
                threshold: config.alerts.threshold,
                window: config.alerts.window,
            },
        );
        let spool = Arc::new(Spool::new(config.database.spool_dir.clone()));
        let voice = VoiceSettings {
            unknown_route_message: config.messages.unknown_route.clone(),
            fallback_message: config.messages.fallback.clone(),
            stream_url: config.urls.stream.clone(),
            token_placement: config.stream_tokens.placement,
            stream_ended_url: config.urls.stream_ended(),
            max_streams: config.media.max_streams,
        };
        Self {
            routes: Arc::new(RouteCache::new(
                config.database.route_cache_ttl,
                config.secrets.clone(),
            )),
            answers: Arc::new(AnswerStore::new(
                db.clone(),
                writer.clone(),
                spool.clone(),
                config.stream_tokens.ttl,
            )),
            outage: Arc::new(Outage::new(metrics.clone())),
            spool,
            diagnostics: Arc::new(diagnostics),
            voice: Arc::new(voice),
            db,
            config: Arc::new(config),
            tokens,
            runtime: Arc::new(Runtime::default()),
            metrics,
            writer,
            tasks: Arc::default(),
        }
    }
}
