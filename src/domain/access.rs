//! Who calls the admin API and what they may reach. The admin token reaches everything. A
//! tenant API key reaches its tenant's records: any other tenant's is "not found" to it (so ids
//! cannot be probed), and platform operations (tenants, API keys, the runtime) are forbidden.
use subtle::ConstantTimeEq;

use super::{
    api_keys::{self, KeyIdentity, PresentedKey},
    Error,
};
use crate::db::Scope;

/// An authenticated caller of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The bearer of `VOICE_ADMIN_TOKEN`.
    Admin,
    /// The bearer of a live tenant API key.
    TenantKey(KeyIdentity),
}

impl Caller {
    /// The records this caller may see.
    pub fn scope(&self) -> Scope {
        match self {
            Self::Admin => Scope::Platform,
            Self::TenantKey(key) => Scope::Tenant(key.tenant_id.clone()),
        }
    }

    /// The scope of a list, filtered by its `tenant_id` when given; a tenant key's lists
    /// default to its tenant, and a filter naming another tenant is "tenant not found".
    pub fn list_scope(&self, tenant_id: Option<&str>) -> Result<Scope, Error> {
        self.scope().narrowed(tenant_id).ok_or(Error::NotFound("tenant"))
    }

    /// Admits the caller to a platform operation: the admin only.
    pub fn platform(&self) -> Result<(), Error> {
        match self {
            Self::Admin => Ok(()),
            Self::TenantKey(_) => Err(Error::Forbidden(
                "this operation needs the admin token; a tenant API key cannot perform it",
            )),
        }
    }
}

/// What a bearer token is, before any lookup.
#[derive(Debug)]
pub enum Credential<'a> {
    /// The admin token.
    AdminToken,
    /// A token in the shape of a tenant API key.
    Key(PresentedKey<'a>),
    /// Anything else: refused with this reason.
    Invalid(&'static str),
}

/// Tells what `bearer` is. The admin token (when one is configured) is compared in constant
/// time and wins; a token starting with `sk_` must have a key's exact shape.
pub fn classify<'a>(bearer: &'a str, admin_token: Option<&str>) -> Credential<'a> {
    if admin_token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(bearer.as_bytes()))) {
        return Credential::AdminToken;
    }
    if api_keys::looks_like_key(bearer) {
        return match PresentedKey::parse(bearer) {
            Some(key) => Credential::Key(key),
            None => Credential::Invalid("malformed API key"),
        };
    }
    match admin_token {
        Some(_) => Credential::Invalid("invalid bearer token"),
        None => Credential::Invalid(
            "the admin token is not configured (VOICE_ADMIN_TOKEN); only tenant API keys are accepted",
        ),
    }
}

/// The caller a bearer token authenticates; [`Error::Unauthorized`] when it authenticates none
/// (wrong token, malformed, unknown or revoked key).
pub async fn authenticate<C: sea_orm::ConnectionTrait>(
    db: &C,
    bearer: &str,
    admin_token: Option<&str>,
) -> Result<Caller, Error> {
    match classify(bearer, admin_token) {
        Credential::AdminToken => Ok(Caller::Admin),
        Credential::Key(key) => api_keys::authenticate(db, key)
            .await?
            .map(Caller::TenantKey)
            .ok_or(Error::Unauthorized("unknown or revoked API key")),
        Credential::Invalid(why) => Err(Error::Unauthorized(why)),
    }
}

#[cfg(test)]
mod tests {
    use entity::id::{ApiKeyId, TenantId};

    use super::*;

    const KEY: &str = "sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn key_of(tenant: &str) -> Caller {
        Caller::TenantKey(KeyIdentity {
            id: ApiKeyId("k1".to_owned()),
            tenant_id: TenantId(tenant.to_owned()),
        })
    }

    fn tenant(id: &str) -> Scope {
        Scope::Tenant(TenantId(id.to_owned()))
    }

    #[test]
    fn the_admin_sees_the_platform_and_a_key_its_tenant() {
        assert_eq!(Caller::Admin.scope(), Scope::Platform);
        assert_eq!(key_of("a").scope(), tenant("a"));
    }

    #[test]
    fn lists_default_to_the_keys_tenant_and_another_tenant_is_not_found() {
        assert_eq!(Caller::Admin.list_scope(None).unwrap(), Scope::Platform);
        assert_eq!(Caller::Admin.list_scope(Some("b")).unwrap(), tenant("b"));
        assert_eq!(key_of("a").list_scope(None).unwrap(), tenant("a"));
        assert_eq!(key_of("a").list_scope(Some("a")).unwrap(), tenant("a"));
        assert!(matches!(
            key_of("a").list_scope(Some("b")),
            Err(Error::NotFound("tenant"))
        ));
    }

    #[test]
    fn platform_operations_are_the_admins_only() {
        assert!(Caller::Admin.platform().is_ok());
        assert!(matches!(key_of("a").platform(), Err(Error::Forbidden(_))));
    }

    #[test]
    fn bearer_tokens_are_classified_before_any_lookup() {
        let admin = Some("admin-secret");
        assert!(matches!(classify("admin-secret", admin), Credential::AdminToken));
        assert!(matches!(classify(KEY, admin), Credential::Key(_)));
        assert!(matches!(classify(KEY, None), Credential::Key(_)));
        assert!(matches!(
            classify("sk_short", admin),
            Credential::Invalid("malformed API key")
        ));
        assert!(matches!(
            classify("admin-secre", admin),
            Credential::Invalid("invalid bearer token")
        ));
        // Without an admin token nothing but a key is accepted, not even an empty token.
        assert!(matches!(classify("", None), Credential::Invalid(m) if m.contains("VOICE_ADMIN_TOKEN")));
        assert!(matches!(classify("admin-secret", None), Credential::Invalid(_)));
    }

    #[test]
    fn an_admin_token_shaped_like_a_key_is_still_the_admin_token() {
        assert!(matches!(classify(KEY, Some(KEY)), Credential::AdminToken));
    }
}
