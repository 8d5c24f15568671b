//! `serve --demo`: a demo tenant and route, a signed curl command to try them, and a
//! `stateset-voice call` command for a whole test call.
use crate::{
    config::Config,
    db,
    domain::{
        self,
        admin::{self, NewRoute, NewTenant},
    },
    secrets::Keyring,
    twilio::{
        form::FormParams,
        signature::{self, Algorithm},
    },
};
use entity::{
    states::{RouteEnvironment, TenantEnvironment},
    tenant,
};

/// The demo tenant's account SID.
pub const DEMO_ACCOUNT_SID: &str = "ACde000000000000000000000000000001";
/// The demo route's number.
pub const DEMO_NUMBER: &str = "+15555551234";

/// Creates the demo tenant and route unless they exist; returns the tenant.
pub async fn seed(db: &db::Pool, keys: &Keyring) -> Result<tenant::Model, domain::Error> {
    let tenant = match db::tenants::by_account_sid(db, keys, DEMO_ACCOUNT_SID).await? {
        Some(t) => t,
        None => {
            let mut token = [0u8; 16];
            getrandom::fill(&mut token).expect("the OS random source is available");
            admin::create_tenant(
                db,
                keys,
                NewTenant {
                    name: "Demo tenant".to_owned(),
                    account_sid: DEMO_ACCOUNT_SID.to_owned(),
                    auth_token: hex::encode(token),
                    environment: Some(TenantEnvironment::Sandbox),
                    ..NewTenant::default()
                },
            )
            .await?
            .tenant
        }
    };
    if db::routes::with_tenant_by_number(db, keys, DEMO_NUMBER)
        .await?
        .is_none()
    {
        admin::create_route(
            db,
            &db::Scope::Platform,
            &tenant.id,
            NewRoute {
                phone_number: DEMO_NUMBER.to_owned(),
                label: Some("Demo line (echo agent)".to_owned()),
                environment: Some(RouteEnvironment::Test),
                ..NewRoute::default()
            },
        )
        .await?;
    }
    Ok(tenant)
}

/// A ready-to-paste curl command posting a signed inbound-call webhook with a fresh CallSid.
pub fn curl_command(config: &Config, tenant: &tenant::Model) -> String {
    let url = format!("{}/api/v1/incoming-call", config.urls.public);
    let call_sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    let form = FormParams::from_pairs([
        ("AccountSid", tenant.account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid.as_str()),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+15555555678"),
        ("To", DEMO_NUMBER),
    ]);
    let sig = signature::compute(Algorithm::HmacSha1, tenant.auth_token.as_bytes(), &url, &form);
    format!(
        "curl -sS -i -X POST '{url}' \\\n  -H 'Content-Type: application/x-www-form-urlencoded' \\\n  -H 'X-Twilio-Signature: {sig}' \\\n  --data '{}'",
        form.encode()
    )
}

/// A ready-to-paste `stateset-voice call` command for the demo number: a whole test call
/// against the echo agent, recording what it plays back to `out.wav`.
pub fn call_command(config: &Config, tenant: &tenant::Model) -> String {
    format!(
        "cargo run --release -- call --url '{}' \\\n  --token '{}' --account-sid {} \\\n  --to '{DEMO_NUMBER}' --record out.wav",
        config.urls.public, tenant.auth_token, tenant.account_sid
    )
}
