//! Tenant secrets encrypted at rest: what the database holds (read with raw SQL), what the
//! admin API writes and answers, encryption at start and rotation, on SQLite and PostgreSQL.
use reqwest::{Method, StatusCode};
use sea_orm::TransactionTrait;
use serde_json::{json, Value};
use stateset_voice::{
    backend_test, db,
    domain::{
        admin::{self, NewRoute, NewTenant},
        secrets_at_rest::{self, AtStart},
        Error,
    },
    secrets::{Key, Keyring},
    testkit::*,
    twilio::signature::{compute, Algorithm},
};

const SECONDARY: &str = "secondary-auth-token-0123456789";
const SHARED_KEY: &str = "customer-shared-key-0123456789";
/// `whsec_` + base64 of 32 bytes.
const WEBHOOK_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn ring(current: &str, previous: Option<&str>) -> Keyring {
    let key = |k: &str| Key::from_base64(k).expect("a test key");
    Keyring::new(Some(key(current)), previous.map(key))
}

/// Asserts that each stored value is encrypted under `key` and holds none of `plaintexts`.
fn assert_encrypted(stored: &StoredTenantSecrets, key: &str, plaintexts: &[&str]) {
    let prefix = format!("enc:v1:{}:", key_id(key));
    for value in stored.values() {
        assert!(value.starts_with(&prefix), "{value}");
        for plain in plaintexts {
            assert!(!value.contains(plain), "{value} holds {plain}");
        }
    }
}

/// The status of the standard call signed with `token` (SHA-1, the auth-token scheme).
async fn call_signed_with(app: &TestApp, token: &str) -> u16 {
    app.post_signed("/api/v1/incoming-call", &incoming_form(&call_sid()), token)
        .await
        .status()
        .as_u16()
}

/// The fields of a tenant in the admin API's answers, as without encryption at rest.
const TENANT_FIELDS: &[&str] = &[
    "account_sid",
    "created_at",
    "default_fallback",
    "environment",
    "has_secondary_auth_token",
    "has_shared_key",
    "id",
    "name",
    "updated_at",
    "webhook_url",
];

/// Asserts an admin answer is a tenant as the API shows it, without any secret.
fn assert_shows_no_secret(body: &str, secrets: &[&str]) -> Value {
    for secret in secrets.iter().chain(&["enc:v1:"]) {
        assert!(!body.contains(secret), "{body}");
    }
    let tenant: Value = serde_json::from_str(body).expect("JSON");
    let mut fields: Vec<&str> = tenant
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, TENANT_FIELDS);
    tenant
}

backend_test!(the_admin_api_writes_ciphertext_and_webhooks_still_validate, |a| {
    a.secrets_key = Some(SECRETS_KEY.to_owned());
});
async fn the_admin_api_writes_ciphertext_and_webhooks_still_validate(app: TestApp) {
    let res = app
        .admin(Method::POST, "/api/v1/tenants")
        .json(&json!({
            "name": "Acme",
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "secondary_auth_token": SECONDARY,
            "shared_key": SHARED_KEY,
            "webhook_secret": WEBHOOK_SECRET,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let all = [AUTH_TOKEN, SECONDARY, SHARED_KEY, WEBHOOK_SECRET];
    let tenant = assert_shows_no_secret(&res.text().await.unwrap(), &all);
    let id = tenant["id"].as_str().unwrap().to_owned();
    app.create_route(&id, NewRoute::default()).await;

    let stored = stored_secrets_of(&app.state.db, &id).await;
    assert_eq!(stored.values().len(), 4);
    assert_encrypted(&stored, SECRETS_KEY, &all);
    let opened = db::tenants::get(&app.state.db, &app.state.config.secrets, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            opened.auth_token.as_str(),
            opened.secondary_auth_token.as_deref(),
            opened.shared_key.as_deref(),
            opened.webhook_secret.as_str()
        ),
        (AUTH_TOKEN, Some(SECONDARY), Some(SHARED_KEY), WEBHOOK_SECRET)
    );
    assert!(!format!("{opened:?}").contains(AUTH_TOKEN));

    // The webhook validates with the tenant's tokens and key, as they were given.
    assert_eq!(call_signed_with(&app, AUTH_TOKEN).await, 200);
    assert_eq!(call_signed_with(&app, SECONDARY).await, 200);
    assert_eq!(call_signed_with(&app, "not-the-token").await, 403);
    let form = incoming_form(&call_sid());
    let url = app.public("/api/v1/incoming-call");
    let sha256 = compute(Algorithm::HmacSha256, SHARED_KEY.as_bytes(), &url, &form);
    let res = app
        .post_raw(
            "/api/v1/incoming-call",
            form.encode().into_bytes(),
            &[
                ("X-Twilio-Signature", &sha256),
                (
                    "X-Twilio-Webhooks-Signature-Settings",
                    "SharedKey, algorithm=HMAC_SHA256",
                ),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);

    // An update writes ciphertext too, and the new token signs at once.
    let res = app
        .admin(Method::PATCH, &format!("/api/v1/tenants/{id}"))
        .json(&json!({ "auth_token": "the-new-auth-token" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_shows_no_secret(&res.text().await.unwrap(), &all);
    let updated = stored_secrets_of(&app.state.db, &id).await;
    assert_encrypted(&updated, SECRETS_KEY, &["the-new-auth-token", AUTH_TOKEN]);
    assert_ne!(updated.auth_token, stored.auth_token);
    assert_eq!(
        updated.webhook_secret, stored.webhook_secret,
        "unchanged values are not rewritten"
    );
    assert_eq!(call_signed_with(&app, "the-new-auth-token").await, 200);
    assert_eq!(call_signed_with(&app, AUTH_TOKEN).await, 403);

    let res = app
        .admin(Method::GET, &format!("/api/v1/tenants/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_shows_no_secret(&res.text().await.unwrap(), &all);
    let res = app.admin(Method::GET, "/api/v1/tenants").send().await.unwrap();
    let list = res.text().await.unwrap();
    for secret in all.iter().chain(&["enc:v1:", "the-new-auth-token"]) {
        assert!(!list.contains(secret), "{list}");
    }
}

backend_test!(a_secret_in_the_stored_form_is_refused_and_nothing_stored, |a| {
    a.secrets_key = Some(SECRETS_KEY.to_owned());
});
async fn a_secret_in_the_stored_form_is_refused_and_nothing_stored(app: TestApp) {
    let stored_form = format!("enc:v1:{}:AAAA", key_id(SECRETS_KEY));
    for field in ["auth_token", "secondary_auth_token", "shared_key"] {
        let mut body = json!({ "name": "Acme", "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN });
        body[field] = json!(stored_form);
        let res = app
            .admin(Method::POST, "/api/v1/tenants")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let problem: Value = res.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains(field), "{problem}");
    }
    assert_eq!(app.count(entity::tenant::Entity).await, 0);
}

backend_test!(rows_stored_in_clear_are_encrypted_at_start_once);
async fn rows_stored_in_clear_are_encrypted_at_start_once(fresh: FreshDatabase) {
    let clear = Keyring::default();
    let tenant = seed_tenant_in(
        &fresh.db,
        &clear,
        NewTenant {
            shared_key: Some(SHARED_KEY.to_owned()),
            webhook_secret: Some(WEBHOOK_SECRET.to_owned()),
            ..NewTenant::default()
        },
    )
    .await;
    seed_route_in(&fresh.db, &tenant.id, NewRoute::default()).await;
    let before = stored_secrets_of(&fresh.db, &tenant.id).await;
    assert_eq!(
        before.values(),
        [AUTH_TOKEN, SHARED_KEY, WEBHOOK_SECRET],
        "stored in clear"
    );
    assert_eq!(
        secrets_at_rest::at_start(&fresh.db, &clear).await.unwrap(),
        AtStart::InClear
    );

    let keys = ring(SECRETS_KEY, None);
    let key = keys.current_id().unwrap();
    assert_eq!(
        secrets_at_rest::at_start(&fresh.db, &keys).await.unwrap(),
        AtStart::Encrypted {
            key_id: key,
            sealed_now: 1
        }
    );
    let sealed = stored_secrets_of(&fresh.db, &tenant.id).await;
    assert_encrypted(&sealed, SECRETS_KEY, &[AUTH_TOKEN, SHARED_KEY, WEBHOOK_SECRET]);
    assert_eq!(
        secrets_at_rest::at_start(&fresh.db, &keys).await.unwrap(),
        AtStart::Encrypted {
            key_id: key,
            sealed_now: 0
        }
    );
    assert_eq!(stored_secrets_of(&fresh.db, &tenant.id).await, sealed, "once");

    let app = spawn_app_on(fresh, |a| a.secrets_key = Some(SECRETS_KEY.to_owned())).await;
    assert_eq!(call_signed_with(&app, AUTH_TOKEN).await, 200);
    assert_eq!(call_signed_with(&app, "not-the-token").await, 403);
}

backend_test!(rotation_moves_every_row_to_the_current_key_in_batches);
async fn rotation_moves_every_row_to_the_current_key_in_batches(fresh: FreshDatabase) {
    // More tenants than one batch: most under the first key, one in clear.
    let first = ring(SECRETS_KEY, None);
    let txn = fresh.db.begin().await.unwrap();
    let count = db::tenant_secrets::PAGE + 5;
    for i in 0..count {
        let keys = if i == 7 { Keyring::default() } else { first.clone() };
        let account_sid = if i == 0 {
            ACCOUNT_SID.to_owned()
        } else {
            format!("AC{i:032x}")
        };
        admin::create_tenant(
            &txn,
            &keys,
            standard_tenant(NewTenant {
                account_sid,
                ..NewTenant::default()
            }),
        )
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
    let standard = standard_tenant_id(&fresh).await;
    seed_route_in(&fresh.db, &standard, NewRoute::default()).await;
    let in_clear = stored_tenant_secrets(&fresh.db).await;
    assert_eq!(
        in_clear
            .iter()
            .filter(|(_, s)| s.key_ids().contains(&None))
            .count(),
        1
    );

    let next = ring(NEXT_SECRETS_KEY, Some(SECRETS_KEY));
    let rotation = secrets_at_rest::rotate(&fresh.db, &next).await.unwrap();
    assert_eq!(rotation.key_id, next.current_id().unwrap());
    assert_eq!(rotation.rows_changed, count);
    let stored = stored_tenant_secrets(&fresh.db).await;
    assert_eq!(stored.len() as u64, count);
    for (_, s) in &stored {
        assert_encrypted(s, NEXT_SECRETS_KEY, &[AUTH_TOKEN]);
    }
    let again = secrets_at_rest::rotate(&fresh.db, &next).await.unwrap();
    assert_eq!(again.rows_changed, 0, "idempotent");
    assert_eq!(stored_tenant_secrets(&fresh.db).await, stored);

    // Without the new key the rows do not open, and the error names the key they need.
    for keys in [Keyring::default(), first] {
        let err = secrets_at_rest::at_start(&fresh.db, &keys).await.unwrap_err();
        assert!(
            matches!(&err, Error::KeysMissing(ids) if ids == &[key_id(NEXT_SECRETS_KEY)]),
            "{err}"
        );
    }
    let err = secrets_at_rest::rotate(&fresh.db, &Keyring::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("VOICE_SECRETS_KEY is not set"), "{err}");

    let app = spawn_app_on(fresh, |a| a.secrets_key = Some(NEXT_SECRETS_KEY.to_owned())).await;
    assert_eq!(call_signed_with(&app, AUTH_TOKEN).await, 200);
}

/// The id of the tenant with the standard account SID.
async fn standard_tenant_id(fresh: &FreshDatabase) -> String {
    db::tenants::by_account_sid(&fresh.db, &ring(SECRETS_KEY, None), ACCOUNT_SID)
        .await
        .unwrap()
        .expect("the standard tenant")
        .id
}
