//! Decisions and workflows, testable without HTTP.
pub mod access;
pub mod admin;
pub mod agent_token;
pub mod alerts;
pub mod api_keys;
pub mod fallback;
pub mod input;
pub mod outage;
pub mod phone;
pub mod retention;
pub mod runtime;
pub mod secrets_at_rest;
pub mod shutdown;
pub mod token;
pub mod webhook;

use sea_orm::DbErr;

/// Errors of the domain layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that cannot be accepted (422).
    #[error("{0}")]
    Invalid(String),
    /// A referenced record does not exist (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule would be broken (409).
    #[error("{0}")]
    Conflict(String),
    /// The credential authenticates no one (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The caller may not perform the operation (403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// The database cannot be reached and the request needs it (503).
    #[error("the database is unreachable")]
    Unavailable,
    /// Stored tenant secrets are encrypted with keys that are not configured: the service
    /// does not start rather than serve without them.
    #[error(
        "tenant secrets are stored encrypted with key {}, which is not configured: set \
         VOICE_SECRETS_KEY (or, during a rotation, VOICE_SECRETS_KEY_PREVIOUS) to it",
        .0.join(" and ")
    )]
    KeysMissing(Vec<String>),
    /// The local spool failed.
    #[error(transparent)]
    Spool(#[from] crate::db::spool::SpoolError),
}

impl Error {
    /// Whether the database could not be reached (an outage, not a fault of the request).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable => true,
            Self::Db(e) => crate::db::is_unavailable(e),
            _ => false,
        }
    }
}
