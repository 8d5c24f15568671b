//! Decisions and workflows, testable without HTTP.
pub mod admin;
pub mod agent_token;
pub mod alerts;
pub mod fallback;
pub mod phone;
pub mod runtime;
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
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}
