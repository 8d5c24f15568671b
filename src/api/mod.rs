//! HTTP only: one module per resource (its handlers and JSON shapes), shapes shared by the admin
//! resources in [`common`], composed into one OpenAPI service.
pub mod allow;
pub mod api_keys;
pub mod calls;
pub mod common;
pub mod health;
pub mod input;
pub mod media;
pub mod ops;
pub mod payload;
pub mod request_span;
pub mod routes;
pub mod spec;
pub mod tenants;
pub mod voice;
pub mod webhooks;

use poem::{http::StatusCode, Request};
use poem_openapi::{auth::Bearer, OpenApiService, SecurityScheme, Tags};

use crate::{
    domain::{
        self,
        access::{self, Caller},
        api_keys::{looks_like_key, KeyIdentity},
    },
    state::AppState,
};

/// Tags grouping the operations in the published spec.
#[derive(Tags)]
pub enum ApiTags {
    /// Twilio webhooks (signed with X-Twilio-Signature).
    Voice,
    /// Tenants: Twilio accounts and where their events go.
    Tenants,
    /// Phone routes: called numbers and what answers them.
    Routes,
    /// Tenant API keys: bearer credentials scoped to one tenant.
    ApiKeys,
    /// Call records.
    Calls,
    /// Diagnostics, alerts, events and runtime controls.
    Operations,
    /// Liveness and readiness.
    Health,
}

/// The admin token: `Authorization: Bearer $VOICE_ADMIN_TOKEN`. It reaches every tenant;
/// platform operations (tenants, API keys, the runtime) accept only it, and answer a tenant API
/// key with 403.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_admin_token")]
pub struct AdminAuth(());

/// A tenant API key: `Authorization: Bearer sk_...`. It reaches only its tenant's records (any
/// other tenant's are 404) and may manage its tenant's routes; unknown or revoked keys are 401.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_tenant_key")]
pub struct TenantKeyAuth(KeyIdentity);

/// The admin token or a tenant API key: the operations a tenant may perform on its own records.
#[derive(SecurityScheme)]
pub enum AdminOrTenantKey {
    /// Tried first: a key costs one lookup, and the admin token none.
    TenantKey(TenantKeyAuth),
    Admin(AdminAuth),
}

impl AdminOrTenantKey {
    /// Who is calling.
    pub fn caller(&self) -> Caller {
        match self {
            Self::TenantKey(key) => Caller::TenantKey(key.0.clone()),
            Self::Admin(_) => Caller::Admin,
        }
    }
}

/// The caller a bearer token authenticates.
async fn caller_of(req: &Request, bearer: &Bearer) -> poem::Result<Caller> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| poem::Error::from_string("admin API unavailable", StatusCode::UNAUTHORIZED))?;
    let admin_token = state.config.admin.token.as_ref().map(|t| t.expose());
    access::authenticate(&state.db, &bearer.token, admin_token)
        .await
        .map_err(refusal)
}

async fn check_admin_token(req: &Request, bearer: Bearer) -> poem::Result<()> {
    caller_of(req, &bearer).await?.platform().map_err(refusal)
}

async fn check_tenant_key(req: &Request, bearer: Bearer) -> poem::Result<KeyIdentity> {
    if !looks_like_key(&bearer.token) {
        return Err(poem::Error::from_string(
            "not a tenant API key",
            StatusCode::UNAUTHORIZED,
        ));
    }
    match caller_of(req, &bearer).await? {
        Caller::TenantKey(key) => Ok(key),
        // An admin token that looks like a key: the admin scheme takes it.
        Caller::Admin => Err(poem::Error::from_string(
            "not a tenant API key",
            StatusCode::UNAUTHORIZED,
        )),
    }
}

/// The answer to a refused credential, a problem body with its status (`error::problem_for`).
fn refusal(err: domain::Error) -> poem::Error {
    match err {
        domain::Error::Unauthorized(m) => poem::Error::from_string(m, StatusCode::UNAUTHORIZED),
        domain::Error::Forbidden(m) => poem::Error::from_string(m, StatusCode::FORBIDDEN),
        other => {
            tracing::error!(error = %other, "authenticating an admin request failed");
            poem::Error::from_string("internal error", StatusCode::INTERNAL_SERVER_ERROR)
        }
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
        api_keys::ApiKeysApi,
        calls::CallsApi,
        ops::OpsApi,
        health::HealthApi,
    ),
    webhooks::Events,
>;

/// Builds the OpenAPI service. The published spec depends on code only, never on config.
pub fn service(state: AppState) -> Service {
    OpenApiService::new(
        (
            voice::VoiceApi { state: state.clone() },
            tenants::TenantsApi { state: state.clone() },
            routes::RoutesApi { state: state.clone() },
            api_keys::ApiKeysApi { state: state.clone() },
            calls::CallsApi { state: state.clone() },
            ops::OpsApi { state: state.clone() },
            health::HealthApi { state },
        ),
        "stateset-voice",
        env!("CARGO_PKG_VERSION"),
    )
    .webhooks::<webhooks::Events>()
    .description(
        "Answers Twilio Voice webhooks for many tenants: validates X-Twilio-Signature, routes the \
         called number, mints a single-use media stream token and returns TwiML, with a fallback \
         that never leaves a caller in silence. Admin endpoints need `Authorization: Bearer` with \
         the admin token, or with a tenant API key (`sk_...`) for a tenant's own records.",
    )
}
