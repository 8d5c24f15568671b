//! The bearer token the service presents to an agent runtime, so the agent can check that the
//! connection is this service calling for this call: HS256 keyed with the tenant's webhook
//! secret (the bytes after `whsec_`, as Standard Webhooks uses them).
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::admin::webhook_secret_key;

/// The audience of agent tokens.
pub const AUDIENCE: &str = "agent";

/// How long an agent token is valid, in seconds. It is checked once, at connect.
pub const TTL_SECS: i64 = 60;

/// Claims of an agent token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaims {
    /// The CallSid.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Route id.
    pub rid: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// The tenant's webhook secret is not `whsec_` + base64.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the tenant's webhook secret is not a whsec_ secret")]
pub struct BadSecret;

/// Mints the token for one call's agent connection.
pub fn mint(
    webhook_secret: &str,
    call_sid: &str,
    tenant_id: &str,
    route_id: &str,
) -> Result<String, BadSecret> {
    let key = webhook_secret_key(webhook_secret).ok_or(BadSecret)?;
    let iat = chrono::Utc::now().timestamp();
    let claims = AgentClaims {
        sub: call_sid.to_owned(),
        tid: tenant_id.to_owned(),
        rid: route_id.to_owned(),
        aud: AUDIENCE.to_owned(),
        iat,
        exp: iat + TTL_SECS,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&key),
    )
    .expect("HS256 encoding cannot fail"))
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    #[test]
    fn verifies_with_the_decoded_webhook_secret() {
        let raw = b"0123456789abcdef01234567";
        let secret = format!("whsec_{}", STANDARD.encode(raw));
        let token = mint(&secret, "CA1", "t1", "r1").unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<AgentClaims>(&token, &DecodingKey::from_secret(raw), &validation)
            .unwrap()
            .claims;
        assert_eq!(
            (
                claims.sub.as_str(),
                claims.tid.as_str(),
                claims.rid.as_str(),
                claims.aud.as_str()
            ),
            ("CA1", "t1", "r1", "agent")
        );
        assert_eq!(claims.exp - claims.iat, 60);
        // Keyed with the decoded bytes, not the text of the secret.
        assert!(jsonwebtoken::decode::<AgentClaims>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation
        )
        .is_err());
        // Stream tokens' audience is not accepted where an agent token is expected, and back.
        validation.set_audience(&[crate::domain::token::AUDIENCE]);
        assert!(
            jsonwebtoken::decode::<AgentClaims>(&token, &DecodingKey::from_secret(raw), &validation).is_err()
        );
    }

    #[test]
    fn refuses_a_secret_that_is_not_base64() {
        assert_eq!(mint("whsec_not base64!", "CA1", "t", "r"), Err(BadSecret));
    }
}
