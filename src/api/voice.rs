//! Twilio voice webhooks: form in, TwiML out. Handlers only unpack the request.
use poem::{http::StatusCode, Request};
use poem_openapi::{param::Header, payload::PlainText, ApiResponse, OpenApi};

use super::{
    payload::{TwiML, TwilioForm},
    ApiTags,
};
use crate::{
    config::Config,
    domain::webhook::{self, Answer, InboundWebhook, WebhookKind},
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
        voice_webhook(&self.state, WebhookKind::Incoming, req, signature.0, body)
            .await
            .into()
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
        voice_webhook(&self.state, WebhookKind::Fallback, req, signature.0, body)
            .await
            .into()
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
        voice_webhook(&self.state, WebhookKind::StreamEnded, req, signature.0, body)
            .await
            .into()
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
        body: TwilioForm,
    ) -> StatusResponse {
        match voice_webhook(&self.state, WebhookKind::Status, req, signature.0, body).await {
            Answered::Answer(Answer::NoContent | Answer::TwiML(_)) => StatusResponse::Accepted,
            Answered::Answer(Answer::NotFound(why)) => {
                StatusResponse::NotFound(ProblemJson::new(StatusCode::NOT_FOUND, why))
            }
            other => match VoiceResponse::from(other) {
                VoiceResponse::BadRequest(p) => StatusResponse::BadRequest(p),
                VoiceResponse::Forbidden(p) => StatusResponse::Forbidden(p),
                VoiceResponse::Conflict(p) => StatusResponse::Conflict(p),
                VoiceResponse::PayloadTooLarge(p) => StatusResponse::PayloadTooLarge(p),
                VoiceResponse::RequestTimeout(p) => StatusResponse::RequestTimeout(p),
                VoiceResponse::UnsupportedMediaType(p) => StatusResponse::UnsupportedMediaType(p),
                VoiceResponse::Ok(_) | VoiceResponse::Unavailable(_) => {
                    StatusResponse::Unavailable(ProblemJson::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the status could not be recorded",
                    ))
                }
            },
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

/// The outcome of a voice webhook before it is shaped into an operation's response.
enum Answered {
    Answer(Answer),
    Malformed(String),
    Failed,
}

impl From<Answered> for VoiceResponse {
    fn from(answered: Answered) -> Self {
        let problem = ProblemJson::new;
        match answered {
            Answered::Answer(Answer::TwiML(twiml)) => Self::Ok(TwiML(twiml)),
            Answered::Answer(Answer::Forbidden(why)) => Self::Forbidden(PlainText(why.to_owned())),
            Answered::Answer(Answer::BadRequest(why)) | Answered::Malformed(why) => {
                Self::BadRequest(problem(StatusCode::BAD_REQUEST, why))
            }
            Answered::Answer(Answer::Conflict(why)) => Self::Conflict(problem(StatusCode::CONFLICT, why)),
            Answered::Answer(Answer::NoContent | Answer::NotFound(_)) | Answered::Failed => {
                Self::Unavailable(problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the call could not be recorded".to_owned(),
                ))
            }
        }
    }
}

async fn voice_webhook(
    state: &AppState,
    kind: WebhookKind,
    req: &Request,
    signature: Option<String>,
    body: TwilioForm,
) -> Answered {
    let params = match FormParams::parse(&body.0) {
        Ok(params) => params,
        Err(e) => return Answered::Malformed(format!("malformed form body: {e}")),
    };
    let query = req.original_uri().query();
    let route_hint = query
        .and_then(|q| FormParams::parse(q.as_bytes()).ok())
        .and_then(|q| q.get("route_id").map(str::to_owned));
    let hook = InboundWebhook {
        kind,
        url: signed_url(&state.config, req),
        params,
        signature,
        signature_settings: header(req, "X-Twilio-Webhooks-Signature-Settings"),
        route_hint,
    };
    if let Some(token) = header(req, "I-Twilio-Idempotency-Token") {
        tracing::debug!(idempotency_token = %token, kind = kind.as_str(), "webhook delivery");
    }
    match webhook::handle(state, hook).await {
        Ok(answer) => Answered::Answer(answer),
        Err(e) => {
            tracing::error!(error = %e, kind = kind.as_str(), "voice webhook failed");
            Answered::Failed
        }
    }
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
