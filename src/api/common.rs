//! Shapes and helpers shared by the admin resources: pages of a list, fallbacks, the create and
//! delete responses.
use std::marker::PhantomData;

use poem::{http::StatusCode, IntoResponse, Response};
use poem_openapi::{
    param::Query,
    payload::{Json, Payload},
    registry::{MetaResponse, MetaResponses, Registry},
    types::{MaybeUndefined, ParseFromJSON, ToJSON},
    ApiResponse, Object, ResponseContent, Union,
};

use super::input::{Checked, HttpUrl, Message, NonNull, Phone};
use crate::{
    db::Page,
    domain::{admin::Paging, fallback::FallbackAction},
};

/// Default page size of every list.
pub const DEFAULT_LIMIT: u64 = 20;

/// The page a list request asks for: `limit` defaults to [`DEFAULT_LIMIT`].
pub fn paging(limit: Query<Option<u64>>, cursor: Query<Option<String>>) -> Paging {
    Paging {
        cursor: cursor.0,
        limit: limit.0.unwrap_or(DEFAULT_LIMIT),
    }
}

/// A page of a list.
#[derive(Debug, Object)]
pub struct List<T: ParseFromJSON + ToJSON> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

impl<T: ParseFromJSON + ToJSON> List<T> {
    /// Converts a page of records.
    pub fn from_page<M>(page: Page<M>) -> Self
    where
        T: From<M>,
    {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// A PATCH field: `None` when absent, `Some(None)` when `null`, `Some(Some(v))` when set.
pub fn optional<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

/// A nullable PATCH string field, as [`optional`] gives it.
pub fn optional_string<F>(value: MaybeUndefined<Checked<F>>) -> Option<Option<String>> {
    optional(value).map(|v| v.map(Checked::into_inner))
}

/// A record the admin API creates and deletes, and how those responses describe it.
pub trait Resource {
    /// Description of the 201 response carrying the created record.
    const CREATED: &'static str;
    /// Description of the 204 response to a delete.
    const DELETED: &'static str;
}

/// 201 with the created record.
#[derive(Debug)]
pub struct Created<T>(pub T);

impl<T: ToJSON> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        Json(self.0)
            .into_response()
            .with_status(StatusCode::CREATED)
            .into_response()
    }
}

impl<T: ToJSON + Resource> ApiResponse for Created<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: T::CREATED,
                status: Some(StatusCode::CREATED.as_u16()),
                status_range: None,
                content: <Json<T> as ResponseContent>::media_types(),
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        <Json<T> as Payload>::register(registry);
    }
}

/// 204 after deleting a `T`.
#[derive(Debug)]
pub struct Deleted<T>(PhantomData<fn() -> T>);

impl<T> Deleted<T> {
    /// The response to a delete that found its record.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for Deleted<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> IntoResponse for Deleted<T> {
    fn into_response(self) -> Response {
        StatusCode::NO_CONTENT.into_response()
    }
}

impl<T: Resource> ApiResponse for Deleted<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: T::DELETED,
                status: Some(StatusCode::NO_CONTENT.as_u16()),
                status_range: None,
                content: vec![],
                headers: vec![],
            }],
        }
    }

    fn register(_registry: &mut Registry) {}
}

/// Say a message (optional), then transfer the call.
#[derive(Debug, Clone, Object)]
pub struct DialFallback {
    /// E.164 number to dial, formatting allowed.
    pub number: Checked<Phone>,
    /// Said before dialling.
    #[oai(skip_serializing_if_is_none)]
    pub message: NonNull<Checked<Message>>,
}

/// Say a message, then hang up.
#[derive(Debug, Clone, Object)]
pub struct SayFallback {
    pub message: Checked<Message>,
}

/// Continue with the TwiML at a URL (a callback workflow), fetched with POST.
#[derive(Debug, Clone, Object)]
pub struct RedirectFallback {
    pub url: Checked<HttpUrl>,
}

/// What a caller gets when the media stream is unavailable.
#[derive(Debug, Clone, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum Fallback {
    #[oai(mapping = "dial")]
    Dial(DialFallback),
    #[oai(mapping = "say")]
    Say(SayFallback),
    #[oai(mapping = "redirect")]
    Redirect(RedirectFallback),
}

impl Fallback {
    /// The fallback stored as JSON text; `None` when absent or unreadable.
    pub fn stored(text: Option<&str>) -> Option<Self> {
        text.and_then(|t| FallbackAction::from_json(t).ok())
            .map(Into::into)
    }
}

impl From<Fallback> for FallbackAction {
    fn from(f: Fallback) -> Self {
        match f {
            Fallback::Dial(d) => Self::Dial {
                number: d.number.into_inner(),
                message: d.message.into_string(),
            },
            Fallback::Say(s) => Self::Say {
                message: s.message.into_inner(),
            },
            Fallback::Redirect(r) => Self::Redirect {
                url: r.url.into_inner(),
            },
        }
    }
}

impl From<FallbackAction> for Fallback {
    fn from(a: FallbackAction) -> Self {
        match a {
            FallbackAction::Dial { number, message } => Self::Dial(DialFallback {
                number: Checked::new(number),
                message: NonNull(message.map(Checked::new)),
            }),
            FallbackAction::Say { message } => Self::Say(SayFallback {
                message: Checked::new(message),
            }),
            FallbackAction::Redirect { url } => Self::Redirect(RedirectFallback {
                url: Checked::new(url),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Object)]
    struct Thing {
        name: String,
    }

    impl Resource for Thing {
        const CREATED: &'static str = "Thing created.";
        const DELETED: &'static str = "Thing deleted.";
    }

    #[test]
    fn paging_defaults_the_limit_and_keeps_the_cursor() {
        assert_eq!(
            paging(Query(None), Query(Some("c1".to_owned()))),
            Paging {
                cursor: Some("c1".to_owned()),
                limit: DEFAULT_LIMIT
            }
        );
        assert_eq!(paging(Query(Some(7)), Query(None)).limit, 7);
    }

    #[test]
    fn optional_tells_absent_from_null() {
        assert_eq!(optional::<u8>(MaybeUndefined::Undefined), None);
        assert_eq!(optional::<u8>(MaybeUndefined::Null), Some(None));
        assert_eq!(optional(MaybeUndefined::Value(3)), Some(Some(3)));
    }

    #[tokio::test]
    async fn created_answers_201_with_the_record() {
        let resp = Created(Thing { name: "a".to_owned() }).into_response();
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.content_type(), Some("application/json; charset=utf-8"));
        let body = resp.into_body().into_string().await.unwrap();
        assert_eq!(body, r#"{"name":"a"}"#);
    }

    #[tokio::test]
    async fn deleted_answers_204_without_a_body() {
        let resp = Deleted::<Thing>::new().into_response();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(resp.into_body().into_vec().await.unwrap().is_empty());
    }

    #[test]
    fn responses_are_described_by_their_resource() {
        let created = Created::<Thing>::meta().responses;
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].status, Some(201));
        assert_eq!(created[0].description, "Thing created.");
        assert_eq!(created[0].content.len(), 1);
        assert_eq!(
            created[0].content[0].content_type,
            "application/json; charset=utf-8"
        );

        let deleted = Deleted::<Thing>::meta().responses;
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].status, Some(204));
        assert_eq!(deleted[0].description, "Thing deleted.");
        assert!(deleted[0].content.is_empty());
    }
}
