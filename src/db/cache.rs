//! In-process caches of the webhook hot path. Both are short-lived and bounded; the database
//! stays the source of truth, so instances sharing PostgreSQL agree within the TTL.
use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use entity::{
    id::{CallId, WebhookId},
    route,
    states::WebhookKind,
    tenant,
};
use moka::sync::Cache;
use sea_orm::{ConnectionTrait, DbErr};

use crate::secrets::Keyring;

/// A route and its tenant, the tenant's secrets decrypted.
pub type RouteEntry = Arc<(route::Model, tenant::Model)>;

/// Route lookups by called number or id, unknown numbers included (so a flood of calls to
/// unknown numbers does not reach the database every time). Admin writes on this instance
/// clear it; other instances see changes within the TTL.
///
/// Beside the short-lived cache it keeps the last known configuration: every route (with its
/// tenant, signing keys included) this instance loaded or found in its periodic snapshot
/// ([`RouteCache::replace_last_known`]), kept until a load or a snapshot says otherwise. It is
/// read only when the database cannot be reached.
///
/// Tenant secrets are decrypted when an entry is loaded, with the cache's key ring, never on a
/// hit: entries hold them decrypted, in memory only.
pub struct RouteCache {
    cache: Option<Cache<String, Option<RouteEntry>>>,
    last_known: RwLock<HashMap<String, RouteEntry>>,
    keys: Arc<Keyring>,
}

impl RouteCache {
    /// A cache whose entries live `ttl`; zero disables caching (not the last known
    /// configuration). Loads decrypt tenant secrets with `keys`.
    pub fn new(ttl: Duration, keys: Arc<Keyring>) -> Self {
        let cache =
            (!ttl.is_zero()).then(|| Cache::builder().max_capacity(100_000).time_to_live(ttl).build());
        Self {
            cache,
            last_known: RwLock::default(),
            keys,
        }
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
        {
            let mut last_known = self.last_known.write().unwrap_or_else(PoisonError::into_inner);
            match &loaded {
                Some(entry) => {
                    last_known.insert(number_key(&entry.0.phone_number), entry.clone());
                    last_known.insert(id_key(&entry.0.id), entry.clone());
                }
                None => {
                    last_known.remove(&key);
                }
            }
        }
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
        self.get_or_load(number_key(number), || {
            super::routes::with_tenant_by_number(db, &self.keys, number)
        })
        .await
    }

    /// The route with this id.
    pub async fn by_id<C: ConnectionTrait>(&self, db: &C, id: &str) -> Result<Option<RouteEntry>, DbErr> {
        self.get_or_load(id_key(id), || {
            super::routes::with_tenant_by_id(db, &self.keys, id)
        })
        .await
    }

    /// The route for a normalised number without the database: cached, else last known.
    pub fn known_by_number(&self, number: &str) -> Option<RouteEntry> {
        self.known(&number_key(number))
    }

    /// The route with this id without the database: cached, else last known.
    pub fn known_by_id(&self, id: &str) -> Option<RouteEntry> {
        self.known(&id_key(id))
    }

    fn known(&self, key: &str) -> Option<RouteEntry> {
        if let Some(Some(hit)) = self.cache.as_ref().and_then(|c| c.get(key)) {
            return Some(hit);
        }
        let last_known = self.last_known.read().unwrap_or_else(PoisonError::into_inner);
        last_known.get(key).cloned()
    }

    /// Replaces the last known configuration with a snapshot of every route and its tenant.
    pub fn replace_last_known(&self, entries: Vec<(route::Model, tenant::Model)>) {
        let mut snapshot = HashMap::with_capacity(entries.len() * 2);
        for entry in entries {
            let entry = Arc::new(entry);
            snapshot.insert(number_key(&entry.0.phone_number), entry.clone());
            snapshot.insert(id_key(&entry.0.id), entry);
        }
        *self.last_known.write().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    /// Routes in the last known configuration.
    pub fn last_known_routes(&self) -> usize {
        let last_known = self.last_known.read().unwrap_or_else(PoisonError::into_inner);
        last_known.keys().filter(|key| key.starts_with("i:")).count()
    }

    /// Forgets the cached lookups (after a tenant or route changed); the last known
    /// configuration is corrected by the next load or snapshot.
    pub fn invalidate(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }
}

fn number_key(number: &str) -> String {
    format!("n:{number}")
}

fn id_key(id: &str) -> String {
    format!("i:{id}")
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
