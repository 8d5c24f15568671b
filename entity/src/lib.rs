//! sea-orm entities of stateset-voice. Ids are UUIDv7 strings, so ordering by id is
//! ordering by creation time; timestamps are UTC.
pub mod alert;
pub mod api_key;
pub mod call;
pub mod call_webhook;
pub mod diagnostic;
pub mod id;
pub mod media_session;
pub mod outbox_event;
pub mod route;
pub mod states;
pub mod tenant;
