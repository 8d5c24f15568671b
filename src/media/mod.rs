//! Twilio Media Streams sessions: token checks at `start`, the agent bridge, recording.
pub mod agent;
pub mod session;
