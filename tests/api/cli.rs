//! The `stateset-voice` binary: `sign` and its `--check`.
use std::process::Command;

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
fn sign_rejects_fields_without_equals() {
    let out = voice(&["sign", "--url", "https://x.example/", "--token", "t", "NoEquals"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
}
