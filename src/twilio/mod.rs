//! Twilio's wire protocols, free of HTTP framework and database types.
pub mod audio;
pub mod form;
pub mod media;
pub mod signature;
pub mod signed_url;
pub mod twiml;
