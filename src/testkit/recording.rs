//! The recorded Twilio Media Streams session (`tests/fixtures/media-stream-session.jsonl`),
//! replayed by the media tests and the conformance suite for calls of their own.

/// The recorded session, one Twilio frame a line.
pub const RECORDING: &str = include_str!("../../tests/fixtures/media-stream-session.jsonl");
/// The CallSid of the recording, replaced by the replaying call's.
pub const RECORDED_CALL_SID: &str = "CAa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
/// The stream token placeholder of the recording, replaced by the token the webhook minted.
pub const TOKEN_PLACEHOLDER: &str = "<token minted by the webhook for this call>";

/// A recorded `frame` for the call `call_sid` whose stream token is `token`.
pub fn recorded_frame(frame: &str, call_sid: &str, token: &str) -> String {
    frame
        .replace(RECORDED_CALL_SID, call_sid)
        .replace(TOKEN_PLACEHOLDER, token)
}

/// The recorded session's frames for `call_sid`, carrying `token` in `customParameters`.
pub fn recorded_session(call_sid: &str, token: &str) -> Vec<String> {
    RECORDING
        .lines()
        .map(|line| recorded_frame(line, call_sid, token))
        .collect()
}
