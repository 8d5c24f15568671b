//! `stateset-voice tenant add` with and without `--webhook-secret`.
use entity::tenant;
use sea_orm::EntityTrait;
use stateset_voice::{backend_test, testkit::*};

use crate::support;

/// `whsec_` + base64 of 32 bytes.
const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

backend_test!(tenant_add_takes_a_webhook_secret_or_generates_one);
async fn tenant_add_takes_a_webhook_secret_or_generates_one(fresh: FreshDatabase) {
    let url = fresh.process_url();
    let base = [
        "tenant",
        "add",
        "--name",
        "Acme",
        "--account-sid",
        ACCOUNT_SID,
        "--auth-token",
        AUTH_TOKEN,
    ];

    let given = support::cli_output(&url, &[&base[..], &["--webhook-secret", SECRET]].concat()).await;
    assert!(
        given.status.success(),
        "{}",
        String::from_utf8_lossy(&given.stderr)
    );
    let id = String::from_utf8(given.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8_lossy(&given.stderr);
    assert!(
        !stderr.contains("whsec_"),
        "a supplied secret is not printed: {stderr}"
    );
    let row = tenant::Entity::find_by_id(id.clone())
        .one(&fresh.db)
        .await
        .unwrap()
        .expect("the tenant exists");
    assert_eq!(row.webhook_secret, SECRET);

    // Without the flag the secret is generated and printed once on stderr.
    let generated = support::cli_output(
        &url,
        &[
            "tenant",
            "add",
            "--name",
            "Other",
            "--account-sid",
            &format!("AC{}", "1".repeat(32)),
            "--auth-token",
            AUTH_TOKEN,
        ],
    )
    .await;
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let other = String::from_utf8(generated.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8_lossy(&generated.stderr);
    let printed = stderr
        .lines()
        .find_map(|l| l.strip_prefix("webhook secret (shown once): "))
        .expect("the generated secret is printed");
    let row = tenant::Entity::find_by_id(other)
        .one(&fresh.db)
        .await
        .unwrap()
        .expect("the tenant exists");
    assert_eq!(row.webhook_secret, printed);
    assert_ne!(row.webhook_secret, SECRET);

    let third = format!("AC{}", "2".repeat(32));
    let malformed = support::cli_output(
        &url,
        &[
            "tenant",
            "add",
            "--name",
            "Third",
            "--account-sid",
            &third,
            "--auth-token",
            AUTH_TOKEN,
            "--webhook-secret",
            "whsec_c2hvcnQ=",
        ],
    )
    .await;
    assert_eq!(malformed.status.code(), Some(2), "a secret of 5 bytes is refused");
    let stderr = String::from_utf8_lossy(&malformed.stderr);
    assert!(stderr.contains("at least 24 bytes"), "{stderr}");
}
