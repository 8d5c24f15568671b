//! Payload types of the voice webhooks: the raw form body in, TwiML out.
use poem::{http::StatusCode, IntoResponse, Request, RequestBody, Response, Result};
use poem_openapi::impl_apirequest_for_payload;
use poem_openapi::{
    payload::{ParsePayload, Payload},
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::Type,
    ApiResponse, Object,
};

/// Largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How much of an oversized body is read and dropped so the 413 reaches the client; larger
/// declared bodies are refused without reading.
const MAX_DISCARD_BYTES: usize = 1024 * 1024;

/// The raw bytes of a form-encoded webhook body, read once, at most [`MAX_BODY_BYTES`].
/// Parsing happens later so that malformed input gets a precise 400.
pub struct TwilioForm(pub Vec<u8>);

/// The fields Twilio posts to a voice webhook (documentation only: every field, known or
/// not, is accepted and covered by the signature).
#[derive(Object)]
#[oai(rename = "TwilioVoiceWebhook")]
#[allow(dead_code)]
struct TwilioVoiceWebhook {
    /// The Twilio account the call belongs to (`AC` + 32 hex digits).
    #[oai(rename = "AccountSid")]
    account_sid: String,
    /// Unique id of the call (`CA` + 32 hex digits).
    #[oai(rename = "CallSid")]
    call_sid: String,
    /// The caller, usually E.164.
    #[oai(rename = "From")]
    from: String,
    /// The called number (E.164); selects the route.
    #[oai(rename = "To")]
    to: String,
    /// Twilio's call status, e.g. `ringing`.
    #[oai(rename = "CallStatus")]
    call_status: Option<String>,
    /// `inbound` for these webhooks.
    #[oai(rename = "Direction")]
    direction: Option<String>,
    /// `2010-04-01`.
    #[oai(rename = "ApiVersion")]
    api_version: Option<String>,
    /// Fallback URL callbacks: the error that made Twilio call it.
    #[oai(rename = "ErrorCode")]
    error_code: Option<String>,
    /// Fallback URL callbacks: the URL that failed.
    #[oai(rename = "ErrorUrl")]
    error_url: Option<String>,
}

impl Payload for TwilioForm {
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";

    fn check_content_type(content_type: &str) -> bool {
        content_type
            .split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(Self::CONTENT_TYPE))
    }

    fn schema_ref() -> MetaSchemaRef {
        TwilioVoiceWebhook::schema_ref()
    }

    fn register(registry: &mut Registry) {
        TwilioVoiceWebhook::register(registry);
    }
}

impl ParsePayload for TwilioForm {
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
        Ok(Self(bytes))
    }
}

impl_apirequest_for_payload!(TwilioForm);

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
