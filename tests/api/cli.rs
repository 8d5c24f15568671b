//! The `stateset-voice` binary: `sign` and its `--check`; `tenant add` and `route add`.
use std::process::Command;

use stateset_voice::{backend_test, db, testkit::*};

fn voice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stateset-voice"))
        .args(args)
        .output()
        .expect("binary runs")
}

const DOCS_ARGS: [&str; 9] = [
    "--url",
    "https://mycompany.com/myapp.php?foo=1&bar=2",
    "--token",
    "12345",
    "CallSid=CA1234567890ABCDE",
    "Caller=+12349013030",
    "Digits=1234",
    "From=+12349013030",
    "To=+18005551212",
];

#[test]
fn sign_agrees_with_twilio_documentation_example() {
    let out = voice(&[&["sign"], &DOCS_ARGS[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    );
}

#[test]
fn sign_check_exits_zero_only_for_valid_signatures() {
    let valid = voice(
        &[
            &["sign"],
            &DOCS_ARGS[..],
            &["--check", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="],
        ]
        .concat(),
    );
    assert_eq!(valid.status.code(), Some(0));
    let invalid = voice(
        &[
            &["sign"],
            &DOCS_ARGS[..],
            &["--check", "0/KCTR6DLpKmkAf8muzZqo1nDgR="],
        ]
        .concat(),
    );
    assert_eq!(invalid.status.code(), Some(1));
    // Twilio signed with :443 while the URL has no port: the webhook accepts it, so does --check.
    let port = voice(&[
        "sign",
        "--url",
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        "--token",
        "12345",
        "CallSid=CA1234567890ABCDE",
        "Caller=+14158675309",
        "Digits=1234",
        "From=+14158675309",
        "To=+18005551212",
        "--check",
        "kvajT1Ptam85bY51eRf/AJRuM3w=",
    ]);
    assert_eq!(port.status.code(), Some(0));
}

#[test]
fn sign_check_accepts_a_lower_case_scheme_for_an_upper_case_one() {
    // Twilio's Python and Node helpers both accept a signature over `https://` for a URL
    // received as `HTTPS://`; not one over a lower-cased host.
    let check = |url: &str, signature: &str| {
        voice(&[&["sign", "--url", url], &DOCS_ARGS[2..], &["--check", signature]].concat())
            .status
            .code()
    };
    let signature = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
    assert_eq!(
        check("HTTPS://mycompany.com/myapp.php?foo=1&bar=2", signature),
        Some(0)
    );
    assert_eq!(
        check("HTTPS://mycompany.com:443/myapp.php?foo=1&bar=2", signature),
        Some(0)
    );
    assert_eq!(
        check("https://MyCompany.com/myapp.php?foo=1&bar=2", signature),
        Some(1)
    );
    assert_eq!(
        check("HTTP://mycompany.com/myapp.php?foo=1&bar=2", signature),
        Some(1)
    );
}

#[test]
fn sign_rejects_fields_without_equals() {
    let out = voice(&["sign", "--url", "https://x.example/", "--token", "t", "NoEquals"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
}

/// Runs the binary against the database at `url`.
fn voice_on(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stateset-voice"))
        .env("VOICE_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .expect("binary runs")
}

backend_test!(route_add_takes_an_agent_health_url);
async fn route_add_takes_an_agent_health_url(fresh: FreshDatabase) {
    let url = fresh.process_url();
    let tenant = voice_on(
        &url,
        &[
            "tenant",
            "add",
            "--name",
            "Acme",
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
        ],
    );
    assert!(
        tenant.status.success(),
        "{}",
        String::from_utf8_lossy(&tenant.stderr)
    );
    let tenant_id = String::from_utf8(tenant.stdout).unwrap().trim().to_owned();
    let add = |health: &str| {
        voice_on(
            &url,
            &[
                "route",
                "add",
                "--tenant",
                &tenant_id,
                "--phone-number",
                NUMBER,
                "--agent-url",
                "wss://agent.example.com/ws",
                "--agent-health-url",
                health,
            ],
        )
    };
    let refused = add("ftp://agent.example.com/health");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("agent_health_url"));
    let added = add("https://agent.example.com/health");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let route_id = String::from_utf8(added.stdout).unwrap();
    let route_id = route_id.split('\t').next().unwrap();
    let route = db::routes::get(&fresh.db, route_id)
        .await
        .unwrap()
        .expect("route stored");
    assert_eq!(
        route.agent_health_url.as_deref(),
        Some("https://agent.example.com/health")
    );
}
