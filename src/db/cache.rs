//! In-process caches of the webhook hot path. Both are short-lived and bounded; the database
//! stays the source of truth, so instances sharing PostgreSQL agree within the TTL.
use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use entity::{
    id::{CallId, WebhookId},
    route,
    states::WebhookKind,
    tenant,
};
use moka::sync::Cache;
use quick_cache::Equivalent;
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
    pub twiml: CachedTwiml,
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// A cached answer's TwiML: a stream answer as the token it is rendered from (half the bytes
/// of its TwiML, which holds the token twice), any other answer as rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedTwiml {
    Stream { token: String },
    Rendered(String),
}

/// A cached answer with the moment the cache lets go of it.
#[derive(Clone)]
struct Entry {
    answer: Arc<CachedAnswer>,
    until: Instant,
}

/// The cache's key: a CallSid and a webhook kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AnswerKey {
    call_sid: String,
    kind: WebhookKind,
}

/// An [`AnswerKey`] borrowed, to look one up without allocating (it hashes the same).
#[derive(Hash)]
struct AnswerKeyRef<'a> {
    call_sid: &'a str,
    kind: WebhookKind,
}

impl Equivalent<AnswerKey> for AnswerKeyRef<'_> {
    fn equivalent(&self, key: &AnswerKey) -> bool {
        self.call_sid == key.call_sid && self.kind == key.kind
    }
}

/// Answers by (CallSid, webhook kind), at most [`AnswerCache::CAPACITY`] of them, each for
/// the TTL it was created with.
///
/// Every new call puts its answer here, so this cache is on the hot path: quick_cache (a
/// sharded map with CLOCK eviction, the TTL checked on read) in place of moka, whose insert
/// does far more bookkeeping (frequency sketch, access and write deques, timer wheel). With
/// stream answers kept as their token, ×1.12 less server CPU per new call side by side with
/// the moka cache of rendered TwiML (`bench/budget.md`).
pub struct AnswerCache {
    cache: quick_cache::sync::Cache<AnswerKey, Entry>,
    ttl: Duration,
}

impl AnswerCache {
    /// Most answers kept; past it the cache evicts those least used lately (CLOCK).
    pub const CAPACITY: usize = 100_000;

    /// A cache whose entries live `ttl` (the stream token lifetime), at least a second.
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: quick_cache::sync::Cache::new(Self::CAPACITY),
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    /// The answer for a call and kind, if cached and its token stays valid for a while yet.
    pub fn get(&self, call_sid: &str, kind: WebhookKind) -> Option<Arc<CachedAnswer>> {
        let entry = self.cache.get(&AnswerKeyRef { call_sid, kind })?;
        if entry.until <= Instant::now() {
            return None;
        }
        let fresh = entry
            .answer
            .token_expires_at
            .is_none_or(|exp| exp > Utc::now() + chrono::Duration::seconds(2));
        fresh.then_some(entry.answer)
    }

    /// Forgets everything (after a tenant or route was deleted).
    pub fn invalidate(&self) {
        self.cache.clear();
    }

    /// Remembers an answer.
    pub fn put(&self, call_sid: &str, kind: WebhookKind, answer: CachedAnswer) {
        let key = AnswerKey {
            call_sid: call_sid.to_owned(),
            kind,
        };
        let entry = Entry {
            answer: Arc::new(answer),
            until: Instant::now() + self.ttl,
        };
        self.cache.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(twiml: &str, token_expires_at: Option<DateTime<Utc>>) -> CachedAnswer {
        CachedAnswer {
            call_id: CallId("c1".to_owned()),
            route_id: "r1".to_owned(),
            webhook_id: WebhookId("w1".to_owned()),
            twiml: CachedTwiml::Rendered(twiml.to_owned()),
            token_expires_at,
        }
    }

    #[test]
    fn answers_are_found_by_call_sid_and_kind() {
        let cache = AnswerCache::new(Duration::from_secs(60));
        cache.put("CA1", WebhookKind::Incoming, answer("<a/>", None));
        cache.put("CA1", WebhookKind::Fallback, answer("<b/>", None));
        let hit = |sid, kind| cache.get(sid, kind).map(|a| a.twiml.clone());
        let rendered = |twiml: &str| Some(CachedTwiml::Rendered(twiml.to_owned()));
        assert_eq!(hit("CA1", WebhookKind::Incoming), rendered("<a/>"));
        assert_eq!(hit("CA1", WebhookKind::Fallback), rendered("<b/>"));
        assert_eq!(hit("CA2", WebhookKind::Incoming), None);
        cache.invalidate();
        assert_eq!(hit("CA1", WebhookKind::Incoming), None);
    }

    #[test]
    fn answers_whose_token_is_about_to_expire_are_not_served() {
        let cache = AnswerCache::new(Duration::from_secs(60));
        let soon = Utc::now() + chrono::Duration::seconds(1);
        let later = Utc::now() + chrono::Duration::seconds(30);
        cache.put("CA1", WebhookKind::Incoming, answer("<a/>", Some(soon)));
        cache.put("CA2", WebhookKind::Incoming, answer("<b/>", Some(later)));
        assert!(cache.get("CA1", WebhookKind::Incoming).is_none());
        assert!(cache.get("CA2", WebhookKind::Incoming).is_some());
    }

    #[test]
    fn answers_are_let_go_after_the_ttl() {
        let cache = AnswerCache::new(Duration::from_secs(1));
        cache.put("CA1", WebhookKind::Incoming, answer("<a/>", None));
        assert!(cache.get("CA1", WebhookKind::Incoming).is_some());
        std::thread::sleep(Duration::from_millis(1_050));
        assert!(cache.get("CA1", WebhookKind::Incoming).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = AnswerCache::new(Duration::from_secs(60));
        for i in 0..AnswerCache::CAPACITY + 5_000 {
            cache.put(&format!("CA{i}"), WebhookKind::Incoming, answer("", None));
        }
        assert!(
            cache.cache.len() <= AnswerCache::CAPACITY,
            "{}",
            cache.cache.len()
        );
        let newest = format!("CA{}", AnswerCache::CAPACITY + 4_999);
        assert!(cache.get(&newest, WebhookKind::Incoming).is_some());
    }
}
