//! Conformance runner: each fixture in `fixtures/` is a recorded Twilio exchange (decoded form
//! fields in arrival order, the signature Twilio sent, headers) plus the tenant and route state
//! it expects. The runner boots the real service on a fresh database, seeds that state, replays
//! the requests over HTTP and renders a stable transcript (status, content type, body, then the
//! stored calls, events, diagnostics and alerts) for snapshot testing. Stream tokens are decoded
//! and their claims checked before they are replaced by placeholders.
//!
//! A request may carry a media-stream step ([`media_step::MediaStream`]): the runner then opens
//! the stream of its answer, plays Twilio's side from the recorded session against the echo
//! agent or a scripted agent ([`scripted_agent`]), and renders both sides of the call.
//!
//! [`fixture`] is the schema and its loading, `replay` seeds through the testkit (its account,
//! number and seeding) and sends the requests, `redact` names stream tokens, `transcript`
//! renders what a snapshot holds; `frames` compares and abbreviates media frames.
pub mod fixture;
mod frames;
pub mod media_step;
mod redact;
mod replay;
pub mod scripted_agent;
mod transcript;

pub use fixture::{
    fixtures_dir, load_fixtures, Fixture, Request, Setup, AUTH_TOKEN, PUBLIC_URL, SECONDARY_AUTH_TOKEN,
    SHARED_KEY,
};
pub use redact::TokenNames;
pub use replay::replay;

/// Asserts `transcript` matches the stored snapshot `conformance/snapshots/<name>.snap`.
pub fn assert_matches_snapshot(name: &str, transcript: &str) {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, transcript);
    });
}
