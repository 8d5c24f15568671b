//! Payload types of the voice webhooks: the raw form body in, TwiML out.
use std::marker::PhantomData;

use entity::states::CallStatus;
use poem::{http::StatusCode, IntoResponse, Request, RequestBody, Response, Result};
use poem_openapi::impl_apirequest_for_payload;
use poem_openapi::{
    payload::{ParsePayload, Payload},
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry},
    types::Type,
    ApiResponse,
};

use super::input::schema;
use crate::domain::input::{self as rules, Rule};

/// Largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How much of an oversized body is read and dropped so the 413 reaches the client; larger
/// declared bodies are refused without reading.
const MAX_DISCARD_BYTES: usize = 1024 * 1024;

/// The raw bytes of a form-encoded webhook body, read once, at most [`MAX_BODY_BYTES`].
/// Parsing happens later so that malformed input gets a precise 400. `S` names the fields the
/// published schema lists.
pub struct TwilioForm<S = VoiceFields>(pub Vec<u8>, PhantomData<fn() -> S>);

/// The fields a kind of webhook form documents.
pub trait FormFields: Send + Sync + 'static {
    /// The schema's name in the published spec.
    const NAME: &'static str;
    /// The schema's description.
    const DESCRIPTION: &'static str;
    /// Whether `CallStatus` is required.
    const STATUS_REQUIRED: bool;
}

/// The voice webhooks' form (incoming call, Fallback URL, stream ended).
pub enum VoiceFields {}

impl FormFields for VoiceFields {
    const NAME: &'static str = "TwilioVoiceWebhook";
    const DESCRIPTION: &'static str =
        "The fields Twilio posts to a voice webhook. Every field, known or not, is \
        accepted and covered by the signature. AccountSid, CallSid and To are checked once the signature \
        is (403 first), or before the platform message when no route has the called number; no field \
        name or value may contain NUL.";
    const STATUS_REQUIRED: bool = false;
}

/// The call status callback's form.
pub enum StatusFields {}

impl FormFields for StatusFields {
    const NAME: &'static str = "TwilioStatusCallback";
    const DESCRIPTION: &'static str =
        "The fields Twilio posts to a status callback: those of a voice webhook, \
        with `CallStatus` required.";
    const STATUS_REQUIRED: bool = true;
}

/// The schema of a webhook form: the fields the domain checks (`VoiceForm::parse`) with
/// their rules, the others documented, and any other field (a string) allowed.
fn form_schema<S: FormFields>(registry: &mut Registry) -> MetaSchema {
    <CallStatus as Type>::register(registry);
    let described = |rule: &Rule, description: &'static str| {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(description),
            ..schema(rule)
        }))
    };
    let mut required = vec!["AccountSid", "CallSid", "To"];
    if S::STATUS_REQUIRED {
        required.push("CallStatus");
    }
    MetaSchema {
        title: Some(S::NAME.to_owned()),
        description: Some(S::DESCRIPTION),
        required,
        properties: vec![
            (
                "AccountSid",
                described(&rules::ACCOUNT_SID, "The Twilio account the call belongs to."),
            ),
            (
                "CallSid",
                described(
                    &rules::CALL_SID,
                    "Unique id of the call (Twilio's: `CA` + 32 hex digits; 2 to 64 letters and digits \
                     are accepted for test tools).",
                ),
            ),
            ("From", described(&rules::NO_NUL, "The caller, usually E.164.")),
            (
                "To",
                described(
                    &rules::NON_EMPTY_NO_NUL,
                    "The called number; selects the route (E.164, or any text with `?route_id=`). A \
                     number no route has is answered with the platform message.",
                ),
            ),
            ("CallStatus", <CallStatus as Type>::schema_ref()),
            (
                "CallDuration",
                described(&rules::NO_NUL, "Status callbacks: seconds, once the call ended."),
            ),
            (
                "Direction",
                described(&rules::NO_NUL, "`inbound` for these webhooks."),
            ),
            ("ApiVersion", described(&rules::NO_NUL, "`2010-04-01`.")),
            (
                "ErrorCode",
                described(
                    &rules::NO_NUL,
                    "Fallback URL callbacks: the error that made Twilio call it.",
                ),
            ),
            (
                "ErrorUrl",
                described(&rules::NO_NUL, "Fallback URL callbacks: the URL that failed."),
            ),
        ],
        additional_properties: Some(Box::new(MetaSchemaRef::Inline(Box::new(schema(&rules::NO_NUL))))),
        ..MetaSchema::new("object")
    }
}

impl<S: FormFields> Payload for TwilioForm<S> {
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";

    fn check_content_type(content_type: &str) -> bool {
        content_type
            .split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(Self::CONTENT_TYPE))
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(S::NAME.to_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(S::NAME.to_owned(), form_schema::<S>);
    }
}

impl<S: FormFields> ParsePayload for TwilioForm<S> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> Result<Self> {
        use tokio::io::AsyncReadExt as _;
        let too_large = || {
            poem::Error::from_string(
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                StatusCode::PAYLOAD_TOO_LARGE,
            )
        };
        let declared = request
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > (MAX_BODY_BYTES + MAX_DISCARD_BYTES) as u64) {
            return Err(too_large());
        }
        let deadline = request
            .data::<crate::state::AppState>()
            .map_or(std::time::Duration::from_secs(10), |s| {
                s.config.http.body_read_timeout
            });
        let mut reader = body.take()?.into_async_read();
        let mut bytes =
            Vec::with_capacity(declared.map_or(1024, |len| len.min(MAX_BODY_BYTES as u64) as usize));
        let mut limited = (&mut reader).take(MAX_BODY_BYTES as u64 + 1);
        match tokio::time::timeout(deadline, limited.read_to_end(&mut bytes)).await {
            Err(_) => {
                return Err(poem::Error::from_string(
                    format!(
                        "the request body did not arrive within {} ms",
                        deadline.as_millis()
                    ),
                    StatusCode::REQUEST_TIMEOUT,
                ))
            }
            Ok(Err(e)) => {
                return Err(poem::Error::from_string(
                    format!("reading the body: {e}"),
                    StatusCode::BAD_REQUEST,
                ))
            }
            Ok(Ok(_)) => {}
        }
        if bytes.len() > MAX_BODY_BYTES {
            // Read (and drop) a bounded remainder so the client, still sending, gets the 413
            // instead of a reset connection.
            let _ = tokio::io::copy(&mut reader.take(MAX_DISCARD_BYTES as u64), &mut tokio::io::sink()).await;
            return Err(too_large());
        }
        Ok(Self(bytes, PhantomData))
    }
}

impl_apirequest_for_payload!(TwilioForm<S>, S: FormFields);

/// A TwiML document, served as `text/xml`.
pub struct TwiML(pub String);

impl Payload for TwiML {
    const CONTENT_TYPE: &'static str = "text/xml";

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }
}

impl IntoResponse for TwiML {
    fn into_response(self) -> Response {
        Response::builder().content_type(Self::CONTENT_TYPE).body(self.0)
    }
}

impl ApiResponse for TwiML {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "TwiML for Twilio to execute",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(_registry: &mut Registry) {}
}
