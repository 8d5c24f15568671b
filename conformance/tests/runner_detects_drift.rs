//! The runner itself: an answer that differs from its snapshot by one TwiML attribute fails.
use std::panic::{catch_unwind, AssertUnwindSafe};

use conformance::{assert_matches_snapshot, load_fixtures, replay};
use stateset_voice::testkit::Backend;

#[tokio::test]
async fn a_changed_twiml_attribute_fails_the_snapshot() {
    // This test must never write or accept snapshots.
    std::env::set_var("INSTA_UPDATE", "no");
    std::env::set_var("INSTA_FORCE_PASS", "0");
    let (name, fixture) = load_fixtures()
        .into_iter()
        .find(|(name, _)| name == "incoming-call-streams")
        .expect("the basic fixture exists");
    let transcript = replay(Backend::Sqlite, &fixture)
        .await
        .expect("SQLite is always available");
    assert_matches_snapshot(&name, &transcript);

    let original = "<Connect action=\"https://voice.example.com/api/v1/stream-ended\">";
    assert!(transcript.contains(original), "{transcript}");
    let changed = transcript.replace(
        original,
        "<Connect action=\"https://voice.example.com/api/v1/stream-end\">",
    );
    let outcome = catch_unwind(AssertUnwindSafe(|| assert_matches_snapshot(&name, &changed)));
    assert!(
        outcome.is_err(),
        "a changed <Connect action> must not match the snapshot"
    );

    let changed = transcript.replace("<Parameter name=\"stream_token\"", "<Parameter name=\"token\"");
    let outcome = catch_unwind(AssertUnwindSafe(|| assert_matches_snapshot(&name, &changed)));
    assert!(
        outcome.is_err(),
        "a changed <Parameter name> must not match the snapshot"
    );
}

#[tokio::test]
async fn a_changed_agent_frame_fails_the_snapshot() {
    std::env::set_var("INSTA_UPDATE", "no");
    std::env::set_var("INSTA_FORCE_PASS", "0");
    let (name, fixture) = load_fixtures()
        .into_iter()
        .find(|(name, _)| name == "stream-agent-twilio-relay")
        .expect("the relay fixture exists");
    let transcript = replay(Backend::Sqlite, &fixture)
        .await
        .expect("SQLite is always available");
    assert_matches_snapshot(&name, &transcript);
    assert!(
        transcript.contains("Authorization: Bearer [agent_token]"),
        "the agent token is checked and never shown: {transcript}"
    );

    // The metadata the service adds to the agent's `start`.
    let original = r#","route_id":"[route:main]""#;
    assert!(transcript.contains(original), "{transcript}");
    let changed = transcript.replacen(original, "", 1);
    let outcome = catch_unwind(AssertUnwindSafe(|| assert_matches_snapshot(&name, &changed)));
    assert!(
        outcome.is_err(),
        "a start without route_id must not match the snapshot"
    );

    // A frame the agent got that is no longer byte-identical to what Twilio sent.
    let changed = transcript.replacen("= #13 ", "~ ", 1);
    assert_ne!(changed, transcript);
    let outcome = catch_unwind(AssertUnwindSafe(|| assert_matches_snapshot(&name, &changed)));
    assert!(
        outcome.is_err(),
        "an edited relayed frame must not match the snapshot"
    );
}
