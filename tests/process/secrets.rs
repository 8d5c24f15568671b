//! Tenant secrets at rest through the real binary: `serve` encrypts rows stored in clear,
//! `secrets rotate` moves every row to the current key, and a process whose keys cannot open
//! the stored rows, or whose key is malformed, does not start.
use std::time::Duration;

use stateset_voice::{backend_test, testkit::*};

use crate::support::{self, Server, Webhook};

/// Bound of a command that must exit on its own.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// Asserts that every stored secret value is encrypted under `key` and none holds the
/// standard auth token.
async fn assert_all_under(db: &stateset_voice::db::Pool, key: &str) {
    let rows = stored_tenant_secrets(db).await;
    assert!(!rows.is_empty(), "tenants are stored");
    for (id, stored) in rows {
        for key_id_of_value in stored.key_ids() {
            assert_eq!(
                key_id_of_value.as_deref(),
                Some(key_id(key).as_str()),
                "tenant {id}: {stored:?}"
            );
        }
        assert!(!stored.auth_token.contains(AUTH_TOKEN), "tenant {id}");
    }
}

/// Asserts that the standard call is answered with a stream (its signature validated with the
/// tenant's token) and a forged one refused.
async fn assert_validates(server: &Server) {
    let client = support::client();
    let (status, body) = Webhook::incoming(&call_sid())
        .send(&client, &server.base)
        .await
        .expect("answered");
    assert_eq!(status, 200, "{body}\n{}", server.log());
    assert!(body.contains("<Stream"), "{body}");
    let mut forged = Webhook::incoming(&call_sid());
    forged.signature = "forged".to_owned();
    let (status, _) = forged.send(&client, &server.base).await.expect("answered");
    assert_eq!(status, 403);
}

backend_test!(serve_encrypts_rows_stored_in_clear_once_and_still_validates);
async fn serve_encrypts_rows_stored_in_clear_once_and_still_validates(fresh: FreshDatabase) {
    let url = fresh.process_url();
    let tenant = support::seed(&url, None).await;
    assert_eq!(stored_secrets_of(&fresh.db, &tenant).await.auth_token, AUTH_TOKEN);

    // Without a key: served as before, and said once at start.
    let mut clear = Server::start(&url, &[]).await;
    assert_validates(&clear).await;
    let said = clear.log().matches("tenant secrets are stored in clear").count();
    assert_eq!(said, 1, "{}", clear.log());
    clear.kill();
    assert_eq!(stored_secrets_of(&fresh.db, &tenant).await.auth_token, AUTH_TOKEN);

    // With a key the rows in clear are encrypted at start, and the token still signs.
    let mut keyed = Server::start(&url, &[("VOICE_SECRETS_KEY", SECRETS_KEY)]).await;
    assert_all_under(&fresh.db, SECRETS_KEY).await;
    assert!(keyed.log().contains("tenants_encrypted_now=1"), "{}", keyed.log());
    assert!(!keyed.log().contains("stored in clear"), "{}", keyed.log());
    assert_validates(&keyed).await;
    keyed.kill();
    let sealed = stored_secrets_of(&fresh.db, &tenant).await;

    // Once: a second start finds nothing in clear and rewrites nothing.
    let again = Server::start(&url, &[("VOICE_SECRETS_KEY", SECRETS_KEY)]).await;
    assert!(again.log().contains("tenants_encrypted_now=0"), "{}", again.log());
    assert_eq!(stored_secrets_of(&fresh.db, &tenant).await, sealed);
    assert_validates(&again).await;
}

backend_test!(rotate_re_encrypts_every_row_under_the_current_key);
async fn rotate_re_encrypts_every_row_under_the_current_key(fresh: FreshDatabase) {
    let url = fresh.process_url();
    support::seed(&url, None).await;
    let first = [("VOICE_SECRETS_KEY", SECRETS_KEY)];
    let rotated = support::cli_output_with(&url, &["secrets", "rotate"], &first, EXIT_DEADLINE).await;
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&rotated.stdout),
        format!("tenants re-encrypted under key {}: 1\n", key_id(SECRETS_KEY))
    );
    assert_all_under(&fresh.db, SECRETS_KEY).await;

    // A tenant added under the first key, then the rotation to the next one.
    let other = support::cli_output_with(
        &url,
        &[
            "tenant",
            "add",
            "--name",
            "Other",
            "--account-sid",
            &format!("AC{}", "1".repeat(32)),
            "--auth-token",
            "another-auth-token",
        ],
        &first,
        EXIT_DEADLINE,
    )
    .await;
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert_all_under(&fresh.db, SECRETS_KEY).await;
    let next = [
        ("VOICE_SECRETS_KEY", NEXT_SECRETS_KEY),
        ("VOICE_SECRETS_KEY_PREVIOUS", SECRETS_KEY),
    ];
    for expected in [2, 0] {
        let out = support::cli_output_with(&url, &["secrets", "rotate"], &next, EXIT_DEADLINE).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "tenants re-encrypted under key {}: {expected}\n",
                key_id(NEXT_SECRETS_KEY)
            )
        );
        assert_all_under(&fresh.db, NEXT_SECRETS_KEY).await;
    }

    // The old key alone no longer opens the rows: the start fails and names the key needed.
    for settings in [&[("VOICE_SECRETS_KEY", SECRETS_KEY)][..], &[][..]] {
        let out = support::cli_output_with(&url, &["serve"], settings, EXIT_DEADLINE).await;
        assert_eq!(out.status.code(), Some(2), "{settings:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&key_id(NEXT_SECRETS_KEY)) && stderr.contains("VOICE_SECRETS_KEY"),
            "{stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
    let server = Server::start(&url, &[("VOICE_SECRETS_KEY", NEXT_SECRETS_KEY)]).await;
    assert_validates(&server).await;
}

backend_test!(encrypted_rows_without_their_key_stop_every_command);
async fn encrypted_rows_without_their_key_stop_every_command(fresh: FreshDatabase) {
    let url = fresh.process_url();
    support::seed(&url, None).await;
    let sealed = support::cli_output_with(
        &url,
        &["secrets", "rotate"],
        &[("VOICE_SECRETS_KEY", SECRETS_KEY)],
        EXIT_DEADLINE,
    )
    .await;
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let before = stored_tenant_secrets(&fresh.db).await;
    for args in [
        &["serve"][..],
        &["tenant", "list"][..],
        &["secrets", "rotate"][..],
    ] {
        for settings in [&[][..], &[("VOICE_SECRETS_KEY", NEXT_SECRETS_KEY)][..]] {
            let out = support::cli_output_with(&url, args, settings, EXIT_DEADLINE).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {settings:?}: {stderr}");
            let expected = if settings.is_empty() && args == ["secrets", "rotate"] {
                "VOICE_SECRETS_KEY is not set".to_owned()
            } else {
                format!(
                    "encrypted with key {}, which is not configured",
                    key_id(SECRETS_KEY)
                )
            };
            assert!(stderr.contains(&expected), "{args:?} {settings:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?} {settings:?}");
        }
    }
    assert_eq!(
        stored_tenant_secrets(&fresh.db).await,
        before,
        "nothing was rewritten"
    );
}

#[tokio::test]
async fn a_malformed_key_is_a_config_error_that_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("voice.db").display());
    let short = "c2hvcnQta2V5LW9mLTE2Yg==";
    let not_base64 = "this is not base64 at all!";
    for (name, value, reason) in [
        ("VOICE_SECRETS_KEY", short, "must encode 32 bytes, not 16"),
        ("VOICE_SECRETS_KEY", not_base64, "must be standard base64"),
        (
            "VOICE_SECRETS_KEY_PREVIOUS",
            short,
            "must encode 32 bytes, not 16",
        ),
    ] {
        let settings = [("VOICE_SECRETS_KEY", SECRETS_KEY), (name, value)];
        let out = support::cli_output_with(&url, &["serve"], &settings, EXIT_DEADLINE).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(name) && stderr.contains(reason), "{stderr}");
        assert!(
            !stderr.contains(value) && !stderr.contains(SECRETS_KEY),
            "{stderr}"
        );
    }
    assert!(
        !dir.path().join("voice.db").exists(),
        "a config error stops the process before the database is opened"
    );
}
