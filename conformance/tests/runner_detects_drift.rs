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
