//! What clients see of errors: a stable JSON problem body (RFC 9457 shape). Internal causes
//! are logged with context and answered with an opaque message.
use poem::{http::StatusCode, IntoResponse, Response};
use poem_openapi::{
    payload::{Json, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
    ApiResponse, Object,
};

use crate::domain;

/// A JSON problem body.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[oai(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
}

impl Problem {
    /// A problem for `status` with a detail message.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    /// The problem as a response with its status.
    pub fn into_http(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ProblemJson(self)
            .into_response()
            .with_status(status)
            .into_response()
    }
}

/// A problem body served as `application/problem+json`.
#[derive(Debug)]
pub struct ProblemJson(pub Problem);

impl ProblemJson {
    /// A problem for `status` with a detail message.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self(Problem::new(status, detail))
    }
}

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = "application/problem+json";

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    fn into_response(self) -> Response {
        Json(self.0)
            .into_response()
            .with_content_type(Self::CONTENT_TYPE)
            .into_response()
    }
}

/// Error responses of the admin API.
#[derive(Debug, ApiResponse)]
pub enum AdminError {
    /// The request is malformed.
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// Missing or wrong bearer token, or the admin API is disabled.
    #[oai(status = 401)]
    Unauthorized(ProblemJson),
    /// No such record.
    #[oai(status = 404)]
    NotFound(ProblemJson),
    /// The change conflicts with an existing record.
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// A value is well-formed but not acceptable.
    #[oai(status = 422)]
    Unprocessable(ProblemJson),
    /// The service failed; the cause is logged.
    #[oai(status = 500)]
    Internal(ProblemJson),
}

impl AdminError {
    /// 404 for a named record.
    pub fn not_found(what: &str) -> Self {
        Self::NotFound(ProblemJson::new(
            StatusCode::NOT_FOUND,
            format!("{what} not found"),
        ))
    }
}

impl From<domain::Error> for AdminError {
    fn from(err: domain::Error) -> Self {
        match err {
            domain::Error::Invalid(m) => {
                Self::Unprocessable(ProblemJson::new(StatusCode::UNPROCESSABLE_ENTITY, m))
            }
            domain::Error::NotFound(what) => Self::not_found(what),
            domain::Error::Conflict(m) => Self::Conflict(ProblemJson::new(StatusCode::CONFLICT, m)),
            domain::Error::Db(e) => {
                tracing::error!(error = %e, "admin request failed");
                Self::Internal(ProblemJson::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                ))
            }
        }
    }
}

impl From<sea_orm::DbErr> for AdminError {
    fn from(err: sea_orm::DbErr) -> Self {
        domain::Error::from(err).into()
    }
}

/// Error responses of the admin operations that take a JSON body: those of [`AdminError`], and
/// 415 when the body is not JSON.
#[derive(Debug, ApiResponse)]
pub enum AdminBodyError {
    /// The request is malformed, or the body is not valid JSON of the documented shape.
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// Missing or wrong bearer token, or the admin API is disabled.
    #[oai(status = 401)]
    Unauthorized(ProblemJson),
    /// No such record.
    #[oai(status = 404)]
    NotFound(ProblemJson),
    /// The change conflicts with an existing record.
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(ProblemJson),
    /// A value is well-formed but not acceptable.
    #[oai(status = 422)]
    Unprocessable(ProblemJson),
    /// The service failed; the cause is logged.
    #[oai(status = 500)]
    Internal(ProblemJson),
}

impl From<AdminError> for AdminBodyError {
    fn from(err: AdminError) -> Self {
        match err {
            AdminError::BadRequest(p) => Self::BadRequest(p),
            AdminError::Unauthorized(p) => Self::Unauthorized(p),
            AdminError::NotFound(p) => Self::NotFound(p),
            AdminError::Conflict(p) => Self::Conflict(p),
            AdminError::Unprocessable(p) => Self::Unprocessable(p),
            AdminError::Internal(p) => Self::Internal(p),
        }
    }
}

impl From<domain::Error> for AdminBodyError {
    fn from(err: domain::Error) -> Self {
        AdminError::from(err).into()
    }
}

/// Turns any framework error (unknown path, bad JSON, wrong content type, oversized body,
/// failed authentication) into a problem body with the same status.
pub async fn problem_for(err: poem::Error) -> Response {
    if err.is_from_response() {
        // A documented response of an operation (a problem body, a TwiML answer): keep it.
        return err.into_response();
    }
    let status = err.status();
    let detail = if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
        "internal error".to_owned()
    } else {
        err.to_string()
    };
    Problem::new(status, detail).into_http()
}
