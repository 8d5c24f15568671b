//! Tenant API keys: minted as `sk_` + base64url (no padding) of 32 random bytes and shown once;
//! only the key's SHA-256 is stored, with a short prefix to recognise it by. A presented key is
//! checked for its shape before any lookup, found by its hash, compared in constant time and
//! refused once revoked, on every instance (the database is asked on each request).
use std::{fmt, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chrono::Utc;
use entity::{
    api_key,
    id::{new_id, ApiKeyId, TenantId},
};
use sea_orm::{ConnectionTrait, Set};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{admin::Paging, Error};
use crate::db::{self, Page};

/// What every key starts with.
pub const KEY_PREFIX: &str = "sk_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;
/// Characters after [`KEY_PREFIX`] a key has: base64url of [`KEY_BYTES`] without padding.
const KEY_CHARS: usize = (KEY_BYTES * 4).div_ceil(3);
/// Characters after [`KEY_PREFIX`] kept for display.
const DISPLAY_CHARS: usize = 8;
/// Longest label.
const LABEL_MAX: usize = 200;
/// How old `last_used_at` may be before a request writes it again.
pub const LAST_USED_INTERVAL: Duration = Duration::from_secs(60);

/// A bearer token in the shape of a key (not yet known to exist).
#[derive(Clone, Copy)]
pub struct PresentedKey<'a>(&'a str);

impl<'a> PresentedKey<'a> {
    /// `token` when it is `sk_` followed by the base64url of exactly 32 bytes.
    pub fn parse(token: &'a str) -> Option<Self> {
        let encoded = token.strip_prefix(KEY_PREFIX)?;
        // Checked first so that nothing long is decoded; decoding refuses other characters,
        // padding and non-canonical trailing bits.
        if encoded.len() != KEY_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        (bytes.len() == KEY_BYTES).then_some(Self(token))
    }

    /// The stored form: lower-case hex SHA-256 of the whole key.
    fn hash(&self) -> String {
        hash(self.0)
    }
}

impl fmt::Debug for PresentedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresentedKey([redacted])")
    }
}

/// Whether a bearer token claims to be a key (it may still be malformed).
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key.
fn generate() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The tenant a live key authenticates, and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
}

/// Input of a new key.
#[derive(Debug, Default)]
pub struct NewApiKey {
    pub label: Option<String>,
}

/// A created key and the key itself, which is shown only in the response that created it.
pub struct CreatedApiKey {
    pub record: api_key::Model,
    pub key: String,
}

impl fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("record", &self.record)
            .field("key", &"[redacted]")
            .finish()
    }
}

fn label(value: String) -> Result<String, Error> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > LABEL_MAX || trimmed.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "label must be 1 to {LABEL_MAX} printable characters"
        )));
    }
    Ok(trimmed.to_owned())
}

async fn existing_tenant<C: ConnectionTrait>(db: &C, tenant_id: &str) -> Result<TenantId, Error> {
    if !db::tenants::exists(db, tenant_id).await? {
        return Err(Error::NotFound("tenant"));
    }
    Ok(TenantId(tenant_id.to_owned()))
}

/// Mints and stores a key of a tenant.
pub async fn create<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    new: NewApiKey,
) -> Result<CreatedApiKey, Error> {
    let label = new.label.map(label).transpose()?;
    let tenant_id = existing_tenant(db, tenant_id).await?;
    let key = generate();
    let display = &key[..KEY_PREFIX.len() + DISPLAY_CHARS];
    let record = db::api_keys::insert(
        db,
        api_key::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(tenant_id.0),
            key_hash: Set(hash(&key)),
            prefix: Set(display.to_owned()),
            label: Set(label),
            created_at: Set(Utc::now()),
            last_used_at: Set(None),
            revoked_at: Set(None),
        },
    )
    .await?;
    Ok(CreatedApiKey { record, key })
}

/// Lists a tenant's live keys, oldest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    paging: &Paging,
) -> Result<Page<api_key::Model>, Error> {
    let tenant_id = existing_tenant(db, tenant_id).await?;
    Ok(db::api_keys::list(db, &tenant_id, paging.cursor.as_deref(), paging.limit).await?)
}

/// Revokes a tenant's key: from then on it authenticates nothing.
pub async fn revoke<C: ConnectionTrait>(db: &C, tenant_id: &str, key_id: &str) -> Result<(), Error> {
    let tenant_id = existing_tenant(db, tenant_id).await?;
    let key_id = ApiKeyId(key_id.to_owned());
    if db::api_keys::revoke(db, &tenant_id, &key_id, Utc::now()).await? {
        Ok(())
    } else {
        Err(Error::NotFound("API key"))
    }
}

/// The identity of a presented key when it exists and is not revoked; notes its use (at most
/// once per [`LAST_USED_INTERVAL`]).
pub async fn authenticate<C: ConnectionTrait>(
    db: &C,
    key: PresentedKey<'_>,
) -> Result<Option<KeyIdentity>, Error> {
    let presented = key.hash();
    let Some(stored) = db::api_keys::live_by_hash(db, &presented).await? else {
        return Ok(None);
    };
    if !bool::from(stored.key_hash.as_bytes().ct_eq(presented.as_bytes())) {
        return Ok(None);
    }
    let identity = KeyIdentity {
        id: ApiKeyId(stored.id),
        tenant_id: TenantId(stored.tenant_id),
    };
    let now = Utc::now();
    let stale_before = now - chrono::Duration::from_std(LAST_USED_INTERVAL).expect("a minute fits");
    if stored.last_used_at.is_none_or(|at| at < stale_before) {
        if let Err(e) = db::api_keys::touch(db, &identity.id, now, stale_before).await {
            // Bookkeeping only: the request is still authenticated.
            tracing::warn!(key_id = %identity.id, error = %e, "recording an API key's use failed");
        }
    }
    Ok(Some(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_have_the_documented_shape_and_differ() {
        let key = generate();
        assert_eq!(key.len(), KEY_PREFIX.len() + 43);
        assert!(PresentedKey::parse(&key).is_some());
        assert_ne!(key, generate());
        let encoded = &key[KEY_PREFIX.len()..];
        assert!(encoded
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn malformed_keys_are_refused_before_any_lookup() {
        let key = generate();
        let body = &key[KEY_PREFIX.len()..];
        let cases = [
            body.to_owned(),                      // no prefix
            format!("pk_{body}"),                 // another prefix
            key[..key.len() - 1].to_owned(),      // one character short
            format!("{key}A"),                    // one too many
            format!("sk_{}+", &body[..42]),       // standard base64 alphabet
            format!("sk_{}=", &body[..42]),       // padding
            format!("sk_{}", "A".repeat(10_000)), // long
            "sk_".to_owned(),
        ];
        for case in cases {
            assert!(PresentedKey::parse(&case).is_none(), "{case}");
        }
    }

    #[test]
    fn the_stored_hash_is_the_sha256_of_the_key() {
        let key = generate();
        let hashed = PresentedKey::parse(&key).unwrap().hash();
        assert_eq!(hashed, hex::encode(Sha256::digest(key.as_bytes())));
        assert_eq!(hashed.len(), 64);
        assert!(!hashed.contains(&key[3..]));
    }

    #[test]
    fn labels_are_trimmed_and_bounded() {
        assert_eq!(label("  ci  ".to_owned()).unwrap(), "ci");
        assert!(label("x".repeat(LABEL_MAX)).is_ok());
        for bad in ["", "   ", "a\nb", "a\u{0}b"] {
            assert!(label(bad.to_owned()).is_err(), "{bad:?}");
        }
        assert!(label("x".repeat(LABEL_MAX + 1)).is_err());
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let key = generate();
        let presented = format!("{:?}", PresentedKey::parse(&key).unwrap());
        assert!(!presented.contains(&key[3..]), "{presented}");
    }
}
