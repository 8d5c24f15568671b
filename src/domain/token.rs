//! Media stream tokens: short-lived HS256 JWTs bound to one call, single use by `jti`.
use chrono::{DateTime, Utc};
use entity::id::{RouteId, TenantId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::phone::CallSid;

/// The audience every stream token carries.
pub const AUDIENCE: &str = "media-stream";

/// Claims of a stream token. Nothing secret and no caller data beyond routing ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamClaims {
    /// The CallSid the stream belongs to.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Route id.
    pub rid: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Unique token id; a media session consumes it once.
    pub jti: String,
}

/// A freshly minted token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("stream token expired")]
    Expired,
    #[error("stream token invalid: {0}")]
    Invalid(String),
}

/// Mints and verifies stream tokens with the secret shared by all instances.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: chrono::Duration,
}

impl TokenIssuer {
    /// An issuer for `secret` whose tokens live `ttl`.
    pub fn new(secret: &[u8], ttl: std::time::Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60)),
        }
    }

    /// Mints a token for a call on a tenant's route.
    pub fn mint(&self, call_sid: &CallSid, tenant_id: &TenantId, route_id: &RouteId) -> MintedToken {
        let now = Utc::now();
        let expires_at = now + self.ttl;
        let jti = uuid::Uuid::new_v4().simple().to_string();
        let claims = StreamClaims {
            sub: call_sid.as_str().to_owned(),
            tid: tenant_id.as_str().to_owned(),
            rid: route_id.as_str().to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: jti.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail");
        MintedToken {
            token,
            jti,
            expires_at,
        }
    }

    /// Verifies signature, audience and expiry (no leeway) and returns the claims.
    pub fn verify(&self, token: &str) -> Result<StreamClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<StreamClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(value: &str) -> CallSid {
        CallSid::parse(value).unwrap()
    }

    #[test]
    fn round_trip_binds_the_call() {
        let issuer = TokenIssuer::new(
            b"0123456789abcdef0123456789abcdef",
            std::time::Duration::from_secs(60),
        );
        let minted = issuer.mint(&sid("CA1"), &TenantId("t1".to_owned()), &RouteId("r1".to_owned()));
        let claims = issuer.verify(&minted.token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.tid.as_str(), claims.rid.as_str()),
            ("CA1", "t1", "r1")
        );
        assert_eq!(claims.aud, AUDIENCE);
        assert_eq!(claims.jti, minted.jti);
        assert_eq!(claims.exp - claims.iat, 60);
        assert_ne!(
            issuer
                .mint(&sid("CA1"), &TenantId("t1".to_owned()), &RouteId("r1".to_owned()))
                .jti,
            minted.jti
        );
    }

    #[test]
    fn refuses_other_secret_expired_and_tampered() {
        let issuer = TokenIssuer::new(
            b"secret-one-secret-one-secret-one",
            std::time::Duration::from_secs(60),
        );
        let other = TokenIssuer::new(
            b"secret-two-secret-two-secret-two",
            std::time::Duration::from_secs(60),
        );
        let token = issuer
            .mint(&sid("CA1"), &TenantId("t".to_owned()), &RouteId("r".to_owned()))
            .token;
        assert!(matches!(other.verify(&token), Err(TokenError::Invalid(_))));
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(issuer.verify(&tampered).is_err());

        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &StreamClaims {
                sub: "CA1".into(),
                tid: "t".into(),
                rid: "r".into(),
                aud: AUDIENCE.into(),
                iat: 0,
                exp: Utc::now().timestamp() - 1,
                jti: "j".into(),
            },
            &EncodingKey::from_secret(b"secret-one-secret-one-secret-one"),
        )
        .unwrap();
        assert_eq!(issuer.verify(&expired), Err(TokenError::Expired));
    }
}
