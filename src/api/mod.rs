//! HTTP only: one module per resource (its handlers and JSON shapes), shapes shared by the admin
//! resources in [`common`], composed into one OpenAPI service.
pub mod calls;
pub mod common;
pub mod health;
pub mod media;
pub mod ops;
pub mod payload;
pub mod request_span;
pub mod routes;
pub mod tenants;
pub mod voice;

use poem::Request;
use poem_openapi::{auth::Bearer, OpenApiService, SecurityScheme, Tags};
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// Tags grouping the operations in the published spec.
#[derive(Tags)]
pub enum ApiTags {
    /// Twilio webhooks (signed with X-Twilio-Signature).
    Voice,
    /// Tenants: Twilio accounts and where their events go.
    Tenants,
    /// Phone routes: called numbers and what answers them.
    Routes,
    /// Call records.
    Calls,
    /// Diagnostics, alerts, events and runtime controls.
    Operations,
    /// Liveness and readiness.
    Health,
}

/// Admin API authentication: `Authorization: Bearer $VOICE_ADMIN_TOKEN`. The admin API is
/// disabled when no token is configured.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_admin_token")]
pub struct AdminAuth(());

async fn check_admin_token(req: &Request, bearer: Bearer) -> poem::Result<()> {
    let unauthorized = |m: &str| poem::Error::from_string(m, poem::http::StatusCode::UNAUTHORIZED);
    let state = req
        .data::<AppState>()
        .ok_or_else(|| unauthorized("admin API unavailable"))?;
    let Some(expected) = &state.config.admin.token else {
        return Err(unauthorized(
            "the admin API is disabled: VOICE_ADMIN_TOKEN is not set",
        ));
    };
    if bool::from(expected.expose().as_bytes().ct_eq(bearer.token.as_bytes())) {
        Ok(())
    } else {
        Err(unauthorized("invalid bearer token"))
    }
}

/// Refuses an API request whose path or query encodes a NUL byte (`%00`) with 400: no id,
/// cursor or filter contains one, and PostgreSQL cannot compare text with it.
pub async fn reject_nul_in_url(req: Request) -> poem::Result<Request> {
    let encodes_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    let uri = req.uri();
    if uri.path().starts_with("/api/") && (encodes_nul(uri.path()) || uri.query().is_some_and(encodes_nul)) {
        return Err(poem::Error::from_string(
            "the URL must not contain NUL characters (%00)",
            poem::http::StatusCode::BAD_REQUEST,
        ));
    }
    Ok(req)
}

/// All operations, as one OpenAPI service.
pub type Service = OpenApiService<
    (
        voice::VoiceApi,
        tenants::TenantsApi,
        routes::RoutesApi,
        calls::CallsApi,
        ops::OpsApi,
        health::HealthApi,
    ),
    (),
>;

/// Builds the OpenAPI service. The published spec depends on code only, never on config.
pub fn service(state: AppState) -> Service {
    OpenApiService::new(
        (
            voice::VoiceApi { state: state.clone() },
            tenants::TenantsApi { state: state.clone() },
            routes::RoutesApi { state: state.clone() },
            calls::CallsApi { state: state.clone() },
            ops::OpsApi { state: state.clone() },
            health::HealthApi { state },
        ),
        "stateset-voice",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Answers Twilio Voice webhooks for many tenants: validates X-Twilio-Signature, routes the \
         called number, mints a single-use media stream token and returns TwiML, with a fallback \
         that never leaves a caller in silence. Admin endpoints need `Authorization: Bearer`.",
    )
}
