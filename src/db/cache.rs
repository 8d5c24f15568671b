//! In-process caches of the webhook hot path. Both are short-lived and bounded; the database
//! stays the source of truth, so instances sharing PostgreSQL agree within the TTL.
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use entity::{
    id::{CallId, WebhookId},
    route,
    states::WebhookKind,
    tenant,
};
use moka::sync::Cache;
use sea_orm::{ConnectionTrait, DbErr};

/// A route and its tenant.
pub type RouteEntry = Arc<(route::Model, tenant::Model)>;

/// Route lookups by called number or id, unknown numbers included (so a flood of calls to
/// unknown numbers does not reach the database every time). Admin writes on this instance
/// clear it; other instances see changes within the TTL.
pub struct RouteCache {
    cache: Option<Cache<String, Option<RouteEntry>>>,
}

impl RouteCache {
    /// A cache whose entries live `ttl`; zero disables caching.
    pub fn new(ttl: Duration) -> Self {
        let cache =
            (!ttl.is_zero()).then(|| Cache::builder().max_capacity(100_000).time_to_live(ttl).build());
        Self { cache }
    }

    async fn get_or_load<F, Fut>(&self, key: String, load: F) -> Result<Option<RouteEntry>, DbErr>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<(route::Model, tenant::Model)>, DbErr>>,
    {
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(hit);
        }
        let loaded = load().await?.map(Arc::new);
        if let Some(cache) = &self.cache {
            cache.insert(key, loaded.clone());
        }
        Ok(loaded)
    }

    /// The route for a normalised number.
    pub async fn by_number<C: ConnectionTrait>(
        &self,
        db: &C,
        number: &str,
    ) -> Result<Option<RouteEntry>, DbErr> {
        self.get_or_load(format!("n:{number}"), || {
            super::routes::with_tenant_by_number(db, number)
        })
        .await
    }

    /// The route with this id.
    pub async fn by_id<C: ConnectionTrait>(&self, db: &C, id: &str) -> Result<Option<RouteEntry>, DbErr> {
        self.get_or_load(format!("i:{id}"), || super::routes::with_tenant_by_id(db, id))
            .await
    }

    /// Forgets everything (after a tenant or route changed).
    pub fn invalidate(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }
}

/// A stored answer to a voice webhook, kept while its stream token is valid so that provider
/// retries need no transaction.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    pub call_id: CallId,
    pub route_id: String,
    pub webhook_id: WebhookId,
    pub twiml: String,
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// Answers by (CallSid, webhook kind).
pub struct AnswerCache {
    cache: Cache<(String, WebhookKind), Arc<CachedAnswer>>,
}

impl AnswerCache {
    /// A cache whose entries live `ttl` (the stream token lifetime).
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl.max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// The answer for a call and kind, if cached and its token stays valid for a while yet.
    pub fn get(&self, call_sid: &str, kind: WebhookKind) -> Option<Arc<CachedAnswer>> {
        let hit = self.cache.get(&(call_sid.to_owned(), kind))?;
        let fresh = hit
            .token_expires_at
            .is_none_or(|exp| exp > Utc::now() + chrono::Duration::seconds(2));
        fresh.then_some(hit)
    }

    /// Forgets everything (after a tenant or route was deleted).
    pub fn invalidate(&self) {
        self.cache.invalidate_all();
    }

    /// Remembers an answer.
    pub fn put(&self, call_sid: &str, kind: WebhookKind, answer: CachedAnswer) {
        self.cache.insert((call_sid.to_owned(), kind), Arc::new(answer));
    }
}
