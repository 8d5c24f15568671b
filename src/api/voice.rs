//! Twilio voice webhooks: form in, TwiML out. Handlers only unpack the request.
use poem::{http::StatusCode, Request};
use poem_openapi::{param::Header, payload::PlainText, ApiResponse, OpenApi};

use super::{
    payload::{StatusFields, TwiML, TwilioForm},
    ApiTags,
};
use crate::{
    config::Config,
    domain::webhook::{self, InboundWebhook, Rejection, StatusReply, VoiceKind},
    error::ProblemJson,
    state::AppState,
    twilio::form::FormParams,
};

/// The voice webhooks.
pub struct VoiceApi {
    pub state: AppState,
}

/// Answers of a voice webhook.
#[derive(ApiResponse)]
pub enum VoiceResponse {
    /// TwiML for Twilio: the stream, or a fallback that is never silent.
    #[oai(status = 200)]
    Ok(TwiML),
    /// Malformed body (bad percent-escape, invalid UTF-8, NUL), or CallSid/To missing after a
    /// valid signature.
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// Missing or invalid X-Twilio-Signature, or an AccountSid that is not the route's tenant's.
    #[oai(status = 403)]
    Forbidden(PlainText<String>),
    /// The CallSid was already answered on another route.
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The body did not arrive within `VOICE_BODY_READ_TIMEOUT`.
    #[oai(status = 408)]
    RequestTimeout(ProblemJson),
    /// The body exceeds 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(ProblemJson),
    /// The body is not application/x-www-form-urlencoded.
    #[oai(status = 415)]
    UnsupportedMediaType(ProblemJson),
    /// The answer could not be stored; Twilio will try the number's Fallback URL.
    #[oai(status = 503)]
    Unavailable(ProblemJson),
}

#[OpenApi(tag = "ApiTags::Voice")]
impl VoiceApi {
    /// Inbound call webhook (the number's voice URL)
    ///
    /// Validates the Twilio signature, resolves the route from `To`, and answers with
    /// `<Connect><Stream>` carrying a single-use stream token, or with the route's fallback.
    /// Retries of the same CallSid get the same answer.
    #[oai(
        path = "/api/v1/incoming-call",
        method = "post",
        operation_id = "incomingCall"
    )]
    async fn incoming_call(
        &self,
        req: &Request,
        #[oai(name = "X-Twilio-Signature")] signature: Header<Option<String>>,
        body: TwilioForm,
    ) -> VoiceResponse {
        voice(&self.state, VoiceKind::Incoming, req, signature.0, body).await
    }

    /// Twilio Fallback URL
    ///
    /// Called by Twilio when the voice URL failed. Same signature rules; always answers with
    /// the fallback and records the call with Twilio's `ErrorCode` and `ErrorUrl`.
    #[oai(
        path = "/api/v1/incoming-call/fallback",
        method = "post",
        operation_id = "incomingCallFallback"
    )]
    async fn incoming_call_fallback(
        &self,
        req: &Request,
        #[oai(name = "X-Twilio-Signature")] signature: Header<Option<String>>,
        body: TwilioForm,
    ) -> VoiceResponse {
        voice(&self.state, VoiceKind::Fallback, req, signature.0, body).await
    }

    /// Stream ended (`<Connect action>`)
    ///
    /// Twilio calls this when the media stream ends for any reason. Answers `<Hangup/>` when a
    /// media session of the call received `stop`, and the route's fallback otherwise.
    #[oai(path = "/api/v1/stream-ended", method = "post", operation_id = "streamEnded")]
    async fn stream_ended(
        &self,
        req: &Request,
        #[oai(name = "X-Twilio-Signature")] signature: Header<Option<String>>,
        body: TwilioForm,
    ) -> VoiceResponse {
        voice(&self.state, VoiceKind::StreamEnded, req, signature.0, body).await
    }

    /// Call status callback
    ///
    /// Twilio reports call progress here (the number's status callback URL). Same signature
    /// rules. Records the latest `CallStatus`, the duration and end time, and emits
    /// `call.completed` once when the call reaches a final status. Repeated callbacks are
    /// idempotent; a status never goes back from a final one.
    #[oai(path = "/api/v1/call-status", method = "post", operation_id = "callStatus")]
    async fn call_status(
        &self,
        req: &Request,
        #[oai(name = "X-Twilio-Signature")] signature: Header<Option<String>>,
        body: TwilioForm<StatusFields>,
    ) -> StatusResponse {
        let hook = match inbound(&self.state, req, signature.0, &body.0) {
            Ok(hook) => hook,
            Err(rejection) => return rejection.into(),
        };
        match webhook::call_status(self.state.webhook_context(), hook).await {
            Ok(StatusReply::Recorded) => StatusResponse::Accepted,
            Ok(StatusReply::UnknownCall(why)) => {
                StatusResponse::NotFound(ProblemJson::new(StatusCode::NOT_FOUND, why))
            }
            Err(rejection) => rejection.into(),
        }
    }
}

/// Answers of the call status callback.
#[derive(ApiResponse)]
pub enum StatusResponse {
    /// Recorded (or a repeat of a status already recorded).
    #[oai(status = 204)]
    Accepted,
    /// Malformed body, or CallSid/CallStatus missing after a valid signature.
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// Missing or invalid X-Twilio-Signature, or an AccountSid that is not the route's tenant's.
    #[oai(status = 403)]
    Forbidden(PlainText<String>),
    /// No call with this CallSid was answered on this route.
    #[oai(status = 404)]
    NotFound(ProblemJson),
    /// The CallSid belongs to another route.
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The body did not arrive within `VOICE_BODY_READ_TIMEOUT`.
    #[oai(status = 408)]
    RequestTimeout(ProblemJson),
    /// The body exceeds 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(ProblemJson),
    /// The body is not application/x-www-form-urlencoded.
    #[oai(status = 415)]
    UnsupportedMediaType(ProblemJson),
    /// The status could not be stored; Twilio may retry.
    #[oai(status = 503)]
    Unavailable(ProblemJson),
}

/// Maps a [`Rejection`] into a response enum that has the four rejection variants; a failure
/// is logged as `$failed` and answered 503 with `$unavailable`.
macro_rules! from_rejection {
    ($response:ident, $failed:literal, $unavailable:literal) => {
        impl From<Rejection> for $response {
            fn from(rejection: Rejection) -> Self {
                match rejection {
                    Rejection::BadRequest(why) => Self::BadRequest(ProblemJson::new(StatusCode::BAD_REQUEST, why)),
                    Rejection::Forbidden(why) => Self::Forbidden(PlainText(why.to_owned())),
                    Rejection::Conflict(why) => Self::Conflict(ProblemJson::new(StatusCode::CONFLICT, why)),
                    // An outage is logged once, where it starts, not once per request.
                    Rejection::Failed(e) if e.is_unavailable() => {
                        tracing::debug!(error = %e, $failed);
                        Self::Unavailable(ProblemJson::new(StatusCode::SERVICE_UNAVAILABLE, $unavailable))
                    }
                    Rejection::Failed(e) => {
                        tracing::error!(error = %e, $failed);
                        Self::Unavailable(ProblemJson::new(StatusCode::SERVICE_UNAVAILABLE, $unavailable))
                    }
                }
            }
        }
    };
}

from_rejection!(
    VoiceResponse,
    "voice webhook failed",
    "the call could not be recorded"
);
from_rejection!(
    StatusResponse,
    "status callback failed",
    "the status could not be recorded"
);

/// Answers one voice webhook.
async fn voice(
    state: &AppState,
    kind: VoiceKind,
    req: &Request,
    signature: Option<String>,
    body: TwilioForm,
) -> VoiceResponse {
    let answered = match inbound(state, req, signature, &body.0) {
        Ok(hook) => webhook::voice(state.webhook_context(), kind, hook).await,
        Err(rejection) => Err(rejection),
    };
    match answered {
        Ok(twiml) => VoiceResponse::Ok(TwiML(twiml)),
        Err(rejection) => rejection.into(),
    }
}

/// Unpacks a webhook request; only the body's form encoding is checked here.
fn inbound(
    state: &AppState,
    req: &Request,
    signature: Option<String>,
    body: &[u8],
) -> Result<InboundWebhook, Rejection> {
    let params =
        FormParams::parse(body).map_err(|e| Rejection::BadRequest(format!("malformed form body: {e}")))?;
    let route_hint = req
        .original_uri()
        .query()
        .and_then(|q| FormParams::parse(q.as_bytes()).ok())
        .and_then(|q| q.get("route_id").map(str::to_owned));
    if let Some(token) = header(req, "I-Twilio-Idempotency-Token") {
        tracing::debug!(idempotency_token = %token, path = req.uri().path(), "webhook delivery");
    }
    Ok(InboundWebhook {
        url: signed_url(&state.config, req),
        params,
        signature,
        signature_settings: header(req, "X-Twilio-Webhooks-Signature-Settings"),
        route_hint,
    })
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The URL Twilio signed: the configured public base URL (or, when trusted, the forwarded
/// scheme and host with the base URL's path prefix) + the request path + the raw query.
pub fn signed_url(config: &Config, req: &Request) -> String {
    let base = &config.urls.public;
    let mut url = if config.urls.trust_forwarded {
        let after_scheme = base.find("://").map_or(0, |i| i + 3);
        let prefix_at = base[after_scheme..]
            .find('/')
            .map_or(base.len(), |i| after_scheme + i);
        let first = |name| header(req, name).and_then(|v| v.split(',').next().map(|s| s.trim().to_owned()));
        let scheme =
            first("X-Forwarded-Proto").unwrap_or_else(|| base[..after_scheme.saturating_sub(3)].to_owned());
        let host = first("X-Forwarded-Host").unwrap_or_else(|| base[after_scheme..prefix_at].to_owned());
        format!("{scheme}://{host}{}", &base[prefix_at..])
    } else {
        base.clone()
    };
    let uri = req.original_uri();
    url.push_str(uri.path());
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(query);
    }
    url
}
