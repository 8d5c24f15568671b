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

/// Declares the admin error enums from one variant list, and for each a `not_found` constructor
/// and `From<domain::Error>` / `From<DbErr>`. Every variant belongs to both enums unless marked
/// `#[body_only]`; `#[body_doc = "…"]` gives a variant another description in the body enum.
macro_rules! admin_errors {
    (
        $(#[doc = $plain_doc:tt])* pub enum $plain:ident;
        $(#[doc = $body_doc:tt])* pub enum $body:ident;
        $($variants:tt)*
    ) => {
        admin_errors!(@split
            { $(#[doc = $plain_doc])* pub enum $plain; $(#[doc = $body_doc])* pub enum $body; }
            [] [] $($variants)*
        );
    };
    (@split $head:tt [$($plain:tt)*] [$($body:tt)*]
        $(#[doc = $doc:tt])* #[body_only] #[oai(status = $status:tt)] $name:ident, $($rest:tt)*
    ) => {
        admin_errors!(@split $head
            [$($plain)*]
            [$($body)* $(#[doc = $doc])* #[oai(status = $status)] $name(ProblemJson),]
            $($rest)*
        );
    };
    (@split $head:tt [$($plain:tt)*] [$($body:tt)*]
        $(#[doc = $doc:tt])* #[body_doc = $body_doc:tt] #[oai(status = $status:tt)] $name:ident,
        $($rest:tt)*
    ) => {
        admin_errors!(@split $head
            [$($plain)* $(#[doc = $doc])* #[oai(status = $status)] $name(ProblemJson),]
            [$($body)* #[doc = $body_doc] #[oai(status = $status)] $name(ProblemJson),]
            $($rest)*
        );
    };
    (@split $head:tt [$($plain:tt)*] [$($body:tt)*]
        $(#[doc = $doc:tt])* #[oai(status = $status:tt)] $name:ident, $($rest:tt)*
    ) => {
        admin_errors!(@split $head
            [$($plain)* $(#[doc = $doc])* #[oai(status = $status)] $name(ProblemJson),]
            [$($body)* $(#[doc = $doc])* #[oai(status = $status)] $name(ProblemJson),]
            $($rest)*
        );
    };
    (@split
        { $(#[doc = $plain_doc:tt])* pub enum $plain:ident; $(#[doc = $body_doc:tt])* pub enum $body:ident; }
        [$($plain_variants:tt)*] [$($body_variants:tt)*]
    ) => {
        $(#[doc = $plain_doc])*
        #[derive(Debug, ApiResponse)]
        pub enum $plain { $($plain_variants)* }

        $(#[doc = $body_doc])*
        #[derive(Debug, ApiResponse)]
        pub enum $body { $($body_variants)* }

        admin_errors!(@impls $plain);
        admin_errors!(@impls $body);
    };
    (@impls $ty:ident) => {
        impl $ty {
            /// 404 for a named record.
            pub fn not_found(what: &str) -> Self {
                Self::NotFound(ProblemJson::new(
                    StatusCode::NOT_FOUND,
                    format!("{what} not found"),
                ))
            }
        }

        impl From<domain::Error> for $ty {
            fn from(err: domain::Error) -> Self {
                let err_text = err.to_string();
                match err {
                    domain::Error::Invalid(m) => {
                        Self::Unprocessable(ProblemJson::new(StatusCode::UNPROCESSABLE_ENTITY, m))
                    }
                    domain::Error::NotFound(what) => Self::not_found(what),
                    domain::Error::Conflict(m) => {
                        Self::Conflict(ProblemJson::new(StatusCode::CONFLICT, m))
                    }
                    domain::Error::Unauthorized(m) => {
                        Self::Unauthorized(ProblemJson::new(StatusCode::UNAUTHORIZED, m))
                    }
                    domain::Error::Forbidden(m) => {
                        Self::Forbidden(ProblemJson::new(StatusCode::FORBIDDEN, m))
                    }
                    domain::Error::Db(_)
                    | domain::Error::Spool(_)
                    | domain::Error::Unavailable
                    | domain::Error::KeysMissing(_) => {
                        tracing::error!(error = %err_text, "admin request failed");
                        Self::Internal(ProblemJson::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal error",
                        ))
                    }
                }
            }
        }

        impl From<sea_orm::DbErr> for $ty {
            fn from(err: sea_orm::DbErr) -> Self {
                domain::Error::from(err).into()
            }
        }
    };
}

admin_errors! {
    /// Error responses of the admin API.
    pub enum AdminError;
    /// Error responses of the admin operations that take a JSON body: those of [`AdminError`], and
    /// 415 when the body is not JSON.
    pub enum AdminBodyError;

    /// The request is malformed.
    #[body_doc = "The request is malformed, or the body is not valid JSON of the documented shape."]
    #[oai(status = 400)]
    BadRequest,
    /// Missing or wrong bearer token: not the admin token, nor a live tenant API key.
    #[oai(status = 401)]
    Unauthorized,
    /// A tenant API key was used for a platform operation (tenants, API keys, the runtime).
    #[oai(status = 403)]
    Forbidden,
    /// No such record.
    #[oai(status = 404)]
    NotFound,
    /// The change conflicts with an existing record.
    #[oai(status = 409)]
    Conflict,
    /// The body is not `application/json`.
    #[body_only]
    #[oai(status = 415)]
    UnsupportedMediaType,
    /// A value is well-formed but not acceptable.
    #[oai(status = 422)]
    Unprocessable,
    /// The service failed; the cause is logged.
    #[oai(status = 500)]
    Internal,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses<T: ApiResponse>() -> Vec<Option<u16>> {
        T::meta().responses.iter().map(|r| r.status).collect()
    }

    #[test]
    fn the_body_enum_adds_415_in_status_order() {
        let plain = [400, 401, 403, 404, 409, 422, 500].map(Some).to_vec();
        assert_eq!(statuses::<AdminError>(), plain);
        let body = [400, 401, 403, 404, 409, 415, 422, 500].map(Some).to_vec();
        assert_eq!(statuses::<AdminBodyError>(), body);
        let bad_request = AdminBodyError::meta().responses[0].description;
        assert!(bad_request.contains("not valid JSON"), "{bad_request}");
        assert_eq!(
            AdminError::meta().responses[0].description,
            "The request is malformed."
        );
    }

    #[test]
    fn domain_errors_map_to_the_same_problem_in_both_enums() {
        let AdminError::NotFound(ProblemJson(plain)) = domain::Error::NotFound("tenant").into() else {
            panic!("not a 404");
        };
        let AdminBodyError::NotFound(ProblemJson(body)) = domain::Error::NotFound("tenant").into() else {
            panic!("not a 404");
        };
        assert_eq!(plain, body);
        assert_eq!((plain.status, plain.detail.as_str()), (404, "tenant not found"));
        let conflict = AdminBodyError::from(domain::Error::Conflict("taken".to_owned()));
        assert!(
            matches!(conflict, AdminBodyError::Conflict(ProblemJson(p)) if p.status == 409 && p.detail == "taken")
        );
        let invalid = AdminError::from(domain::Error::Invalid("bad".to_owned()));
        assert!(matches!(invalid, AdminError::Unprocessable(ProblemJson(p)) if p.status == 422));
        let forbidden = AdminError::from(domain::Error::Forbidden("no"));
        assert!(
            matches!(forbidden, AdminError::Forbidden(ProblemJson(p)) if p.status == 403 && p.detail == "no")
        );
        let unauthorized = AdminBodyError::from(domain::Error::Unauthorized("who"));
        assert!(matches!(unauthorized, AdminBodyError::Unauthorized(ProblemJson(p)) if p.status == 401));
        let db = AdminError::from(sea_orm::DbErr::Custom("boom".to_owned()));
        assert!(matches!(db, AdminError::Internal(ProblemJson(p)) if p.detail == "internal error"));
    }
}
