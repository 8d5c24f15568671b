//! Records for the webhook pipeline's unit tests.
use chrono::Utc;
use entity::{
    route,
    states::{RouteEnvironment, TenantEnvironment},
    tenant,
};

/// The tenant's account.
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
/// The tenant's primary auth token.
pub const AUTH_TOKEN: &str = "primary-auth-token";

/// A production route, enabled or not, with an optional stored fallback action.
pub fn route_with(enabled: bool, fallback: Option<&str>) -> route::Model {
    route::Model {
        id: "r1".to_owned(),
        tenant_id: "t1".to_owned(),
        phone_number: "+15555550100".to_owned(),
        label: None,
        environment: RouteEnvironment::Production,
        enabled,
        fallback: fallback.map(str::to_owned),
        agent_url: None,
        agent_health_url: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

/// A production tenant with an optional default fallback action.
pub fn tenant_with(default_fallback: Option<&str>) -> tenant::Model {
    tenant::Model {
        id: "t1".to_owned(),
        name: "Acme".to_owned(),
        account_sid: ACCOUNT_SID.to_owned(),
        auth_token: AUTH_TOKEN.to_owned(),
        secondary_auth_token: None,
        shared_key: None,
        environment: TenantEnvironment::Production,
        webhook_url: None,
        webhook_secret: "whsec_x".to_owned(),
        default_fallback: default_fallback.map(str::to_owned),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}
