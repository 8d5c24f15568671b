//! `stateset-voice call`: a test call without a phone. It plays Twilio's part against any
//! deployment: signs and posts the inbound-call webhook, follows the TwiML as Twilio does
//! (`<Connect><Stream>` over the media WebSocket, then the `<Connect action>`, `<Redirect>`s),
//! and reports whether the call went as the TwiML said.
//!
//! An edge of the service like `api`: it uses the protocol layer (`twilio`) and nothing of the
//! database or the service configuration.
pub mod stream;
pub mod wav;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use url::Url;

use crate::twilio::{
    audio::{FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE},
    form::FormParams,
    signature::{self, Algorithm},
    twiml::{self, Instruction, Method},
};
pub use stream::{EndedBy, StreamReport};

/// The caller number when none is given.
pub const DEFAULT_FROM: &str = "+15555555678";
/// Documents fetched after the webhook (`<Connect action>`s and `<Redirect>`s) before the call
/// is abandoned as a loop.
pub const MAX_HOPS: u32 = 10;
/// Default listening time after the caller's audio, before `stop`.
pub const DEFAULT_TAIL: Duration = Duration::from_secs(2);
/// The webhook path of the service.
pub const WEBHOOK_PATH: &str = "/api/v1/incoming-call";
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Receives each step of the call as a line of text, as it happens.
pub type StepSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What to call and how.
#[derive(Clone)]
pub struct CallOptions {
    /// The deployment's public base URL, or its full webhook URL (ending in
    /// `/api/v1/incoming-call`).
    pub url: String,
    /// The tenant's Twilio auth token: signs every request.
    pub auth_token: String,
    pub account_sid: String,
    /// The called number.
    pub to: String,
    /// The caller number.
    pub from: String,
    /// The CallSid; a fresh one when `None`.
    pub call_sid: Option<String>,
    /// The caller's audio (8 kHz mono WAV, PCM or mu-law); the built-in speech when `None`.
    pub audio: Option<PathBuf>,
    /// Where to write what the agent played, as an 8 kHz mono 16-bit WAV.
    pub record: Option<PathBuf>,
    /// Key presses to send during the audio (0-9, *, #).
    pub dtmf: String,
    /// How long to keep listening after the audio before `stop`.
    pub tail: Duration,
    /// Where the steps go as they happen (they are also in the report).
    pub on_step: Option<StepSink>,
}

impl CallOptions {
    /// Options with the defaults for everything but what identifies the call.
    pub fn new(url: &str, auth_token: &str, account_sid: &str, to: &str) -> Self {
        Self {
            url: url.to_owned(),
            auth_token: auth_token.to_owned(),
            account_sid: account_sid.to_owned(),
            to: to.to_owned(),
            from: DEFAULT_FROM.to_owned(),
            call_sid: None,
            audio: None,
            record: None,
            dtmf: String::new(),
            tail: DEFAULT_TAIL,
            on_step: None,
        }
    }
}

impl std::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("url", &self.url)
            .field("auth_token", &"<redacted>")
            .field("account_sid", &self.account_sid)
            .field("to", &self.to)
            .field("from", &self.from)
            .field("call_sid", &self.call_sid)
            .field("audio", &self.audio)
            .field("record", &self.record)
            .field("dtmf", &self.dtmf)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

/// Why a call could not be placed at all (bad options): exit status 2. A call that was placed
/// and went wrong is a [`Report`] with `ok: false` instead.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("--url {0}")]
    Url(String),
    #[error("--dtmf: {0:?} is not a key (0-9, *, #)")]
    Dtmf(char),
    #[error("--audio: {0}")]
    Audio(#[source] wav::WavError),
    #[error("--record: {0}")]
    Record(#[source] wav::WavError),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// The outcome of a call, also written as JSON by `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The call went as the TwiML said.
    pub ok: bool,
    pub call_sid: String,
    pub webhook_url: String,
    pub webhook_status: Option<u16>,
    /// The last media stream, if the TwiML offered one.
    pub stream: Option<StreamReport>,
    /// The status of the last `<Connect action>` request.
    pub action_status: Option<u16>,
    /// The verb names of the last TwiML document run.
    pub final_verbs: Vec<String>,
    /// `<Redirect>`s followed.
    pub redirects: u32,
    /// Why the call did not go as the TwiML said (the first reason).
    pub error: Option<String>,
    /// Where the agent's audio was written (`--record`).
    pub recording: Option<String>,
    /// Seconds of audio the agent sent.
    pub recorded_seconds: f64,
    /// The one-line summary (the last step).
    pub summary: String,
    /// Every step, as printed.
    pub steps: Vec<String>,
}

/// The printed steps of a call.
pub struct Steps {
    sink: Option<StepSink>,
    lines: Mutex<Vec<String>>,
}

impl Steps {
    fn new(sink: Option<StepSink>) -> Self {
        Self {
            sink,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Records a step and passes it on.
    pub fn say(&self, line: impl Into<String>) {
        let line = line.into();
        if let Some(sink) = &self.sink {
            sink(&line);
        }
        self.lock().push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lines.lock().expect("steps lock")
    }
}

/// Places a test call and follows it to its end.
pub async fn run(options: CallOptions) -> Result<Report, CallError> {
    let webhook_url = webhook_url(&options.url)?;
    let dtmf: Vec<char> = options.dtmf.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some(bad) = dtmf
        .iter()
        .find(|c| !(c.is_ascii_digit() || **c == '*' || **c == '#'))
    {
        return Err(CallError::Dtmf(*bad));
    }
    let (audio, audio_source) = match &options.audio {
        Some(path) => (
            wav::read(path).map_err(CallError::Audio)?,
            path.display().to_string(),
        ),
        None => (wav::BUILTIN_SPEECH.to_vec(), "built-in speech".to_owned()),
    };
    if let Some(path) = &options.record {
        // Fail before calling when the recording cannot be written.
        wav::write_pcm(path, &[]).map_err(CallError::Record)?;
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .user_agent("TwilioProxy/1.1")
        .build()
        .map_err(|e| CallError::Client(e.to_string()))?;
    let call_sid = options
        .call_sid
        .clone()
        .unwrap_or_else(|| format!("CA{}", uuid::Uuid::new_v4().simple()));
    let steps = Steps::new(options.on_step.clone());
    let mut call = Call {
        options: &options,
        client,
        steps: &steps,
        audio,
        dtmf,
        recorded: Vec::new(),
        report: Report {
            ok: false,
            call_sid,
            webhook_url,
            webhook_status: None,
            stream: None,
            action_status: None,
            final_verbs: Vec::new(),
            redirects: 0,
            error: None,
            recording: None,
            recorded_seconds: 0.0,
            summary: String::new(),
            steps: Vec::new(),
        },
    };
    steps.say(format!(
        "calling {} from {} as CallSid {} (caller audio: {audio_source}, {:.1} s)",
        options.to,
        options.from,
        call.report.call_sid,
        seconds(call.audio.len())
    ));
    call.place().await;
    call.save_recording();
    let mut report = call.report;
    report.ok = report.error.is_none();
    report.summary = summary(&report);
    steps.say(report.summary.clone());
    report.steps = steps.take();
    Ok(report)
}

/// The webhook URL for `--url`: a base URL gets `/api/v1/incoming-call` appended; a URL that
/// already ends with it is used as given.
pub fn webhook_url(url: &str) -> Result<String, CallError> {
    let parsed = Url::parse(url).map_err(|e| CallError::Url(format!("{url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(CallError::Url(format!("{url:?} is not an http(s) URL")));
    }
    if parsed.path().trim_end_matches('/').ends_with(WEBHOOK_PATH) {
        return Ok(url.to_owned());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(CallError::Url(format!(
            "{url:?}: give the public base URL, or the full webhook URL ending in {WEBHOOK_PATH}"
        )));
    }
    Ok(format!("{}{WEBHOOK_PATH}", url.trim_end_matches('/')))
}

/// `url` resolved against the document's URL, as Twilio resolves relative verb URLs.
fn resolve(base: &str, url: &str) -> Result<String, String> {
    let base = Url::parse(base).map_err(|e| format!("{base:?}: {e}"))?;
    let joined = base.join(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(joined.scheme(), "http" | "https") {
        return Err(format!("{url:?} is not an http(s) URL"));
    }
    Ok(joined.to_string())
}

/// The `<Stream url>` Twilio connects to: its query string (and fragment) removed.
fn stream_connect_url(url: &str) -> Result<String, String> {
    let mut parsed = Url::parse(url).map_err(|e| format!("<Stream url> {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "ws" | "wss") {
        return Err(format!("<Stream url> {url:?} is not a ws(s):// URL"));
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed.to_string())
}

/// A URL fit for printing: path segments that look like JWTs are elided.
pub(crate) fn printable(url: &str) -> String {
    url.split('/')
        .map(|segment| {
            if segment.starts_with("eyJ") {
                "<token>"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// What to do after a TwiML document.
enum Next {
    End,
    Fetch { url: String, method: Method, hop: Hop },
}

/// Why a TwiML document is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// The inbound-call webhook.
    Webhook,
    /// The `<Connect action>`, after the stream.
    Action,
    /// A `<Redirect>`.
    Redirect,
}

impl Hop {
    fn describe(self) -> &'static str {
        match self {
            Self::Webhook => "incoming call",
            Self::Action => "Connect action",
            Self::Redirect => "Redirect",
        }
    }
}

struct Call<'a> {
    options: &'a CallOptions,
    client: reqwest::Client,
    steps: &'a Steps,
    audio: Vec<u8>,
    dtmf: Vec<char>,
    recorded: Vec<i16>,
    report: Report,
}

/// An HTTP answer: status, content type, body.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Call<'_> {
    /// Records the first reason the call did not go as the TwiML said.
    fn fail(&mut self, why: String) {
        self.steps.say(format!("problem: {why}"));
        self.report.error.get_or_insert(why);
    }

    /// The fields Twilio posts for this call, with `status`.
    fn fields(&self, status: &str) -> FormParams {
        let o = self.options;
        let country = |number: &str| if number.starts_with("+1") { "US" } else { "" };
        FormParams::from_pairs([
            ("AccountSid", o.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", self.report.call_sid.as_str()),
            ("CallStatus", status),
            ("Called", o.to.as_str()),
            ("CalledCity", ""),
            ("CalledCountry", country(&o.to)),
            ("CalledState", ""),
            ("CalledZip", ""),
            ("Caller", o.from.as_str()),
            ("CallerCity", ""),
            ("CallerCountry", country(&o.from)),
            ("CallerState", ""),
            ("CallerZip", ""),
            ("Direction", "inbound"),
            ("From", o.from.as_str()),
            ("FromCity", ""),
            ("FromCountry", country(&o.from)),
            ("FromState", ""),
            ("FromZip", ""),
            ("To", o.to.as_str()),
            ("ToCity", ""),
            ("ToCountry", country(&o.to)),
            ("ToState", ""),
            ("ToZip", ""),
        ])
    }

    /// Sends a signed request as Twilio does (POST form, or GET with the fields in the query).
    async fn request(&self, method: Method, url: &str, form: &FormParams) -> Result<Answer, String> {
        let token = self.options.auth_token.as_bytes();
        let request = match method {
            Method::Post => {
                let sig = signature::compute(Algorithm::HmacSha1, token, url, form);
                self.client
                    .post(url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .header("X-Twilio-Signature", sig)
                    .body(form.encode())
            }
            Method::Get => {
                let separator = if url.contains('?') { '&' } else { '?' };
                let full = format!("{url}{separator}{}", form.encode());
                let sig = signature::compute(Algorithm::HmacSha1, token, &full, &FormParams::default());
                self.client.get(full).header("X-Twilio-Signature", sig)
            }
        };
        let response = request
            .header("I-Twilio-Idempotency-Token", uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .map_err(|e| format!("{} {}: {e}", method.as_str(), printable(url)))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_owned();
        let body = response
            .text()
            .await
            .map_err(|e| format!("reading the answer of {}: {e}", printable(url)))?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }

    /// Fetches a TwiML document; `None` (after recording why) when it is not 200 TwiML.
    async fn fetch(
        &mut self,
        hop: Hop,
        method: Method,
        url: &str,
        form: &FormParams,
    ) -> Option<Vec<Instruction>> {
        self.steps.say(format!(
            "{} {} ({what})",
            method.as_str(),
            printable(url),
            what = hop.describe()
        ));
        let answer = match self.request(method, url, form).await {
            Ok(answer) => answer,
            Err(e) => {
                self.fail(e);
                return None;
            }
        };
        match hop {
            Hop::Webhook => self.report.webhook_status = Some(answer.status),
            Hop::Action => self.report.action_status = Some(answer.status),
            Hop::Redirect => {}
        }
        let what = hop.describe();
        if answer.status != 200 {
            let first_line = answer.body.lines().next().unwrap_or("").trim();
            self.fail(format!(
                "the {what} request was answered {} ({first_line:?})",
                answer.status
            ));
            return None;
        }
        match twiml::parse(&answer.body) {
            Ok(verbs) => {
                let names: Vec<&str> = verbs.iter().map(Instruction::name).collect();
                self.steps.say(format!(
                    "answered 200 ({}): {}",
                    answer.content_type,
                    if names.is_empty() {
                        "empty <Response>".to_owned()
                    } else {
                        names.join(", ")
                    }
                ));
                Some(verbs)
            }
            Err(e) => {
                self.fail(format!("the {what} answer is not TwiML: {e}"));
                None
            }
        }
    }

    /// The whole call: the webhook, then every document the TwiML leads to.
    async fn place(&mut self) {
        let mut url = self.report.webhook_url.clone();
        let form = self.fields("ringing");
        let Some(mut verbs) = self.fetch(Hop::Webhook, Method::Post, &url, &form).await else {
            return;
        };
        let mut hops = 0;
        loop {
            self.report.final_verbs = verbs.iter().map(|v| v.name().to_owned()).collect();
            let (next_url, method, hop) = match self.execute(&verbs, &url).await {
                Next::End => return,
                Next::Fetch { url, method, hop } => (url, method, hop),
            };
            hops += 1;
            if hops > MAX_HOPS {
                self.fail(format!(
                    "more than {MAX_HOPS} actions and redirects: a TwiML loop"
                ));
                return;
            }
            let mut form = self.fields("in-progress");
            match hop {
                Hop::Action => {
                    if let Some(stream) = &self.report.stream {
                        form.push("StreamSid", stream.stream_sid.clone());
                    }
                }
                Hop::Redirect => self.report.redirects += 1,
                Hop::Webhook => {}
            }
            let Some(next) = self.fetch(hop, method, &next_url, &form).await else {
                return;
            };
            verbs = next;
            url = next_url;
        }
    }

    /// Runs one TwiML document fetched from `url`.
    async fn execute(&mut self, verbs: &[Instruction], url: &str) -> Next {
        for verb in verbs {
            match verb {
                Instruction::Hangup => {
                    self.steps.say("<Hangup/>: the call ends");
                    return Next::End;
                }
                Instruction::Say(text) => self.steps.say(format!("<Say> {text:?} (not spoken)")),
                Instruction::Play(audio) => self.steps.say(format!("<Play> {audio} (not played)")),
                Instruction::Dial(number) => self.steps.say(format!("<Dial> {number} (not dialled)")),
                Instruction::Pause { length } => self.steps.say(format!(
                    "<Pause> {} s (not waited)",
                    length.as_deref().unwrap_or("1")
                )),
                Instruction::Other(name) => self.steps.say(format!("<{name}> (not simulated)")),
                Instruction::Redirect { url: target, method } => {
                    return match resolve(url, target) {
                        Ok(target) => {
                            self.steps.say(format!("<Redirect> to {}", printable(&target)));
                            Next::Fetch {
                                url: target,
                                method: *method,
                                hop: Hop::Redirect,
                            }
                        }
                        Err(e) => {
                            self.fail(format!("<Redirect>: {e}"));
                            Next::End
                        }
                    };
                }
                Instruction::Connect {
                    action,
                    method,
                    stream,
                } => {
                    match stream {
                        Some(target) => self.stream(target).await,
                        None => self.steps.say("<Connect> without <Stream> (not simulated)"),
                    }
                    if let Some(action) = action {
                        return match resolve(url, action) {
                            Ok(target) => Next::Fetch {
                                url: target,
                                method: *method,
                                hop: Hop::Action,
                            },
                            Err(e) => {
                                self.fail(format!("<Connect action>: {e}"));
                                Next::End
                            }
                        };
                    }
                }
            }
        }
        self.steps.say("end of the TwiML: the call ends");
        Next::End
    }

    /// Runs a `<Connect><Stream>`.
    async fn stream(&mut self, target: &twiml::StreamTarget) {
        let names: Vec<&str> = target.parameters.iter().map(|(k, _)| k.as_str()).collect();
        self.steps.say(format!(
            "<Connect><Stream> to {} with parameters: {}",
            printable(target.url.split('?').next().unwrap_or_default()),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
        let connect_url = match stream_connect_url(&target.url) {
            Ok(url) => url,
            Err(e) => return self.fail(e),
        };
        let plan = stream::StreamPlan {
            url: connect_url,
            stream_sid: format!("MZ{}", uuid::Uuid::new_v4().simple()),
            account_sid: self.options.account_sid.clone(),
            call_sid: self.report.call_sid.clone(),
            parameters: target.parameters.clone(),
            audio: &self.audio,
            dtmf: &self.dtmf,
            tail: self.options.tail,
        };
        let outcome = stream::run(plan, self.steps).await;
        self.recorded.extend(outcome.recorded);
        let report = outcome.report;
        self.steps.say(format!(
            "media stream {}: {} frames sent, {} received, {} of {} marks answered, {} clears",
            report.ended_by.describe(),
            report.frames_sent,
            report.frames_received,
            report.marks_answered,
            report.marks_received,
            report.clears
        ));
        if !report.ended_by.is_ok() {
            let detail = match (report.close_code, &report.close_reason) {
                (Some(code), Some(reason)) => format!(" (close {code}: {reason})"),
                (None, Some(reason)) => format!(" ({reason})"),
                _ => String::new(),
            };
            self.fail(format!("the media stream {}{detail}", report.ended_by.describe()));
        }
        self.report.stream = Some(report);
    }

    fn save_recording(&mut self) {
        self.report.recorded_seconds = self.recorded.len() as f64 / f64::from(SAMPLE_RATE);
        let Some(path) = &self.options.record else {
            return;
        };
        match wav::write_pcm(path, &self.recorded) {
            Ok(()) => {
                self.steps.say(format!(
                    "recorded {:.2} s of the agent's audio to {}",
                    self.report.recorded_seconds,
                    path.display()
                ));
                self.report.recording = Some(path.display().to_string());
            }
            Err(e) => self.fail(e.to_string()),
        }
    }
}

/// The last line: how the call went, in one line.
fn summary(report: &Report) -> String {
    let mut parts = Vec::new();
    if let Some(status) = report.webhook_status {
        parts.push(format!("webhook {status}"));
    }
    if let Some(stream) = &report.stream {
        parts.push(format!(
            "stream {} ({} frames sent, {} received, marks {}/{})",
            stream.ended_by.describe(),
            stream.frames_sent,
            stream.frames_received,
            stream.marks_answered,
            stream.marks_received
        ));
    }
    if let Some(status) = report.action_status {
        parts.push(format!("action {status}"));
    }
    if report.redirects > 0 {
        parts.push(format!("{} redirect(s)", report.redirects));
    }
    if !report.final_verbs.is_empty() {
        parts.push(format!("final TwiML: {}", report.final_verbs.join(", ")));
    }
    let details = parts.join("; ");
    match &report.error {
        None => format!("OK call {}: {details}", report.call_sid),
        Some(why) => format!("FAILED call {}: {why}; {details}", report.call_sid),
    }
}

/// Seconds of audio in `bytes` of mu-law.
pub fn seconds(bytes: usize) -> f64 {
    bytes.div_ceil(FRAME_SAMPLES) as f64 * FRAME_MS as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_url_from_base_or_full_url() {
        assert_eq!(
            webhook_url("https://voice.example.com").unwrap(),
            "https://voice.example.com/api/v1/incoming-call"
        );
        assert_eq!(
            webhook_url("https://voice.example.com/prefix/").unwrap(),
            "https://voice.example.com/prefix/api/v1/incoming-call"
        );
        assert_eq!(
            webhook_url("http://127.0.0.1:8080/api/v1/incoming-call?route_id=r1").unwrap(),
            "http://127.0.0.1:8080/api/v1/incoming-call?route_id=r1"
        );
        assert!(webhook_url("ftp://x.example").is_err());
        assert!(webhook_url("voice.example.com").is_err());
        assert!(webhook_url("https://x.example/?a=1").is_err());
    }

    #[test]
    fn stream_url_loses_its_query_only() {
        assert_eq!(
            stream_connect_url("wss://v.example/media-stream?stream_token=abc#x").unwrap(),
            "wss://v.example/media-stream"
        );
        assert_eq!(
            stream_connect_url("ws://127.0.0.1:9/media-stream/eyJabc").unwrap(),
            "ws://127.0.0.1:9/media-stream/eyJabc"
        );
        assert!(stream_connect_url("https://v.example/media-stream").is_err());
        assert_eq!(
            printable("ws://h/media-stream/eyJabc.d.e"),
            "ws://h/media-stream/<token>"
        );
    }

    #[test]
    fn relative_urls_resolve_against_the_document() {
        assert_eq!(
            resolve("https://v.example/api/v1/stream-ended", "/next?x=1").unwrap(),
            "https://v.example/next?x=1"
        );
        assert_eq!(
            resolve("https://v.example/a/b", "c").unwrap(),
            "https://v.example/a/c"
        );
        assert_eq!(
            resolve("https://v.example/a", "http://other.example/cb").unwrap(),
            "http://other.example/cb"
        );
        assert!(resolve("https://v.example/a", "mailto:x@y").is_err());
    }

    #[test]
    fn builtin_speech_lasts_six_point_four_seconds() {
        assert!((seconds(wav::BUILTIN_SPEECH.len()) - 6.38).abs() < 0.01);
    }
}
