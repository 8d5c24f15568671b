//! The media WebSocket as Twilio drives it: `connected`, `start`, the caller's audio as 20 ms
//! mu-law `media` frames in real time, `dtmf` key presses, `mark` answers once the agent's
//! audio queued before them has played, `stop`; and a recording of everything the agent sent.
use std::{collections::VecDeque, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use futures::{SinkExt, StreamExt};
use serde::{Serialize, Serializer};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::{protocol::CloseFrame, Message};

use super::Steps;
use crate::twilio::audio::{self, FRAME_MS, FRAME_SAMPLES};

/// How long to wait for the WebSocket to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the service to close the socket after `stop` (or after a failed send).
const CLOSE_WAIT: Duration = Duration::from_secs(2);
const FRAME: Duration = Duration::from_millis(FRAME_MS);

/// What to stream, and to where.
#[derive(Debug, Clone)]
pub struct StreamPlan<'a> {
    /// The `<Stream url>` with its query string removed.
    pub url: String,
    pub stream_sid: String,
    pub account_sid: String,
    pub call_sid: String,
    /// The `<Parameter>`s, sent as `customParameters`.
    pub parameters: Vec<(String, String)>,
    /// The caller's audio, mu-law.
    pub audio: &'a [u8],
    /// Key presses, spread evenly through the audio.
    pub dtmf: &'a [char],
    /// How long to keep listening after the audio before `stop`.
    pub tail: Duration,
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// We sent `stop` and the service closed normally (or left the closing to us).
    Stop,
    /// The service closed with 1000 or 1001 before `stop`: the agent hung up.
    AgentHangup,
    /// Closed with 1008: the service refused the stream.
    Refused,
    /// Could not connect, or closed with another code (1011: the agent failed).
    Failed,
    /// The connection ended without a close frame.
    Dropped,
}

impl EndedBy {
    /// Whether the stream went as the TwiML said.
    pub fn is_ok(self) -> bool {
        matches!(self, Self::Stop | Self::AgentHangup)
    }

    /// Words for the printed steps.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Stop => "ended by our stop",
            Self::AgentHangup => "ended by the agent hanging up",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

/// What happened on one stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub stream_sid: String,
    /// `media` frames sent (the caller's audio).
    pub frames_sent: u64,
    /// `media` frames received from the service (the agent's audio).
    pub frames_received: u64,
    pub dtmf_sent: u64,
    /// Marks the agent sent, by name, in order.
    pub marks: Vec<String>,
    pub marks_received: u64,
    /// Marks answered, after their audio played or at a `clear`.
    pub marks_answered: u64,
    pub clears: u64,
    /// Frames from the service that were not usable Media Streams messages, or named another
    /// stream; Twilio would drop them.
    pub frames_ignored: u64,
    pub ended_by: EndedBy,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
}

/// A finished stream: its report and the agent's audio as PCM.
#[derive(Debug)]
pub struct StreamOutcome {
    pub report: StreamReport,
    pub recorded: Vec<i16>,
}

/// The playback clock of the caller's phone: each `media` frame received plays for 20 ms after
/// the audio queued before it; a mark is answered when the audio queued before it has played,
/// and at once on `clear`, which also drops the queued audio.
#[derive(Debug)]
pub struct Playback {
    /// When the queued audio will have played.
    until: Instant,
    pending: VecDeque<(Instant, String)>,
}

impl Playback {
    pub fn new(now: Instant) -> Self {
        Self {
            until: now,
            pending: VecDeque::new(),
        }
    }

    /// Queues one 20 ms frame.
    pub fn media(&mut self, now: Instant) {
        self.until = self.until.max(now) + FRAME;
    }

    /// A mark: answered now (returned) when nothing is queued, else when its audio has played.
    pub fn mark(&mut self, now: Instant, name: String) -> Option<String> {
        if self.until <= now && self.pending.is_empty() {
            Some(name)
        } else {
            self.pending.push_back((self.until.max(now), name));
            None
        }
    }

    /// `clear`: drops the queued audio; every pending mark is answered now.
    pub fn clear(&mut self, now: Instant) -> Vec<String> {
        self.until = now;
        self.pending.drain(..).map(|(_, name)| name).collect()
    }

    /// The marks whose audio has played by `now`, in order.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        while self.pending.front().is_some_and(|(at, _)| *at <= now) {
            out.extend(self.pending.pop_front().map(|(_, name)| name));
        }
        out
    }

    /// When the next pending mark is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.front().map(|(at, _)| *at)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a, B: Serialize> {
    event: &'static str,
    sequence_number: String,
    stream_sid: &'a str,
    #[serde(flatten)]
    body: B,
}

#[derive(Serialize)]
struct StartBody<'a> {
    start: StartPayload<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StartPayload<'a> {
    account_sid: &'a str,
    stream_sid: &'a str,
    call_sid: &'a str,
    tracks: [&'static str; 1],
    #[serde(serialize_with = "as_map")]
    custom_parameters: &'a [(String, String)],
    media_format: MediaFormat,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaFormat {
    encoding: &'static str,
    sample_rate: u32,
    channels: u32,
}

#[derive(Serialize)]
struct MediaBody {
    media: MediaPayload,
}

#[derive(Serialize)]
struct MediaPayload {
    track: &'static str,
    chunk: String,
    timestamp: String,
    payload: String,
}

#[derive(Serialize)]
struct DtmfBody {
    dtmf: DtmfPayload,
}

#[derive(Serialize)]
struct DtmfPayload {
    track: &'static str,
    digit: String,
}

#[derive(Serialize)]
struct MarkBody<'a> {
    mark: MarkName<'a>,
}

#[derive(Serialize)]
struct MarkName<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct StopBody<'a> {
    stop: StopPayload<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StopPayload<'a> {
    account_sid: &'a str,
    call_sid: &'a str,
}

fn as_map<S: Serializer>(pairs: &&[(String, String)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// Writes the frames Twilio sends, numbering them as Twilio does: `connected` counts as the
/// first message, so `start` is 2.
struct Frames<'a> {
    stream_sid: &'a str,
    sequence: u64,
}

impl<'a> Frames<'a> {
    fn new(stream_sid: &'a str) -> Self {
        Self {
            stream_sid,
            sequence: 1,
        }
    }

    fn connected(&self) -> String {
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned()
    }

    fn envelope<B: Serialize>(&mut self, event: &'static str, body: B) -> String {
        self.sequence += 1;
        serde_json::to_string(&Envelope {
            event,
            sequence_number: self.sequence.to_string(),
            stream_sid: self.stream_sid,
            body,
        })
        .expect("frames serialise")
    }

    fn start(&mut self, plan: &StreamPlan<'_>) -> String {
        let start = StartPayload {
            account_sid: &plan.account_sid,
            stream_sid: &plan.stream_sid,
            call_sid: &plan.call_sid,
            tracks: ["inbound"],
            custom_parameters: &plan.parameters,
            media_format: MediaFormat {
                encoding: "audio/x-mulaw",
                sample_rate: audio::SAMPLE_RATE,
                channels: 1,
            },
        };
        self.envelope("start", StartBody { start })
    }

    /// Media chunk `chunk` (1-based), stamped with its place in the stream.
    fn media(&mut self, chunk: u64, payload: &[u8]) -> String {
        let media = MediaPayload {
            track: "inbound",
            chunk: chunk.to_string(),
            timestamp: ((chunk - 1) * FRAME_MS).to_string(),
            payload: STANDARD.encode(payload),
        };
        self.envelope("media", MediaBody { media })
    }

    fn dtmf(&mut self, digit: char) -> String {
        let dtmf = DtmfPayload {
            track: "inbound_track",
            digit: digit.to_string(),
        };
        self.envelope("dtmf", DtmfBody { dtmf })
    }

    fn mark(&mut self, name: &str) -> String {
        self.envelope(
            "mark",
            MarkBody {
                mark: MarkName { name },
            },
        )
    }

    fn stop(&mut self, account_sid: &str, call_sid: &str) -> String {
        let stop = StopPayload {
            account_sid,
            call_sid,
        };
        self.envelope("stop", StopBody { stop })
    }
}

/// The caller's audio cut into 20 ms frames; a short last frame is padded with silence.
fn frames_of(audio: &[u8]) -> Vec<Vec<u8>> {
    audio
        .chunks(FRAME_SAMPLES)
        .map(|chunk| {
            let mut frame = chunk.to_vec();
            frame.resize(FRAME_SAMPLES, audio::encode(0));
            frame
        })
        .collect()
}

/// After how many frames each key is pressed: evenly spread, never before the first frame.
fn dtmf_schedule(frames: usize, digits: &[char]) -> VecDeque<(usize, char)> {
    let slots = digits.len() + 1;
    digits
        .iter()
        .enumerate()
        .map(|(i, d)| (((i + 1) * frames / slots).max(1.min(frames)), *d))
        .collect()
}

/// Where the call is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Streaming the caller's audio.
    Sending,
    /// Audio sent; listening until the deadline, then `stop`.
    Tail(Instant),
    /// Waiting until the deadline for the service to close; `stop` was sent when `stopped`.
    Closing { deadline: Instant, stopped: bool },
}

/// A far deadline for disabled select branches.
fn never() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// Runs one stream to its end.
pub async fn run(plan: StreamPlan<'_>, steps: &Steps) -> StreamOutcome {
    let mut report = StreamReport {
        stream_sid: plan.stream_sid.clone(),
        frames_sent: 0,
        frames_received: 0,
        dtmf_sent: 0,
        marks: Vec::new(),
        marks_received: 0,
        marks_answered: 0,
        clears: 0,
        frames_ignored: 0,
        ended_by: EndedBy::Failed,
        close_code: None,
        close_reason: None,
    };
    let mut recorded = Vec::new();
    steps.say(format!(
        "connecting to {} (query string removed, as Twilio does)",
        super::printable(&plan.url)
    ));
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(plan.url.as_str(), None, true),
    )
    .await;
    let mut socket = match connected {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => {
            report.close_reason = Some(format!("connecting: {e}"));
            steps.say(format!("media stream failed: could not connect: {e}"));
            return StreamOutcome { report, recorded };
        }
        Err(_) => {
            report.close_reason = Some(format!("no connection within {CONNECT_TIMEOUT:?}"));
            steps.say(format!(
                "media stream failed: no connection within {CONNECT_TIMEOUT:?}"
            ));
            return StreamOutcome { report, recorded };
        }
    };

    let mut out = Frames::new(&plan.stream_sid);
    let frames = frames_of(plan.audio);
    let mut dtmf = dtmf_schedule(frames.len(), plan.dtmf);
    let opening = [out.connected(), out.start(&plan)];
    let mut phase = Phase::Sending;
    for text in opening {
        if socket.send(Message::text(text)).await.is_err() {
            phase = Phase::Closing {
                deadline: Instant::now() + CLOSE_WAIT,
                stopped: false,
            };
            break;
        }
    }
    let names: Vec<&str> = plan.parameters.iter().map(|(k, _)| k.as_str()).collect();
    steps.say(format!(
        "sent connected and start (streamSid {}, customParameters: {})",
        plan.stream_sid,
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    ));
    steps.say(format!(
        "streaming {:.1} s of audio ({} frames of 20 ms) in real time{}",
        frames.len() as f64 * FRAME_MS as f64 / 1000.0,
        frames.len(),
        if plan.dtmf.is_empty() {
            String::new()
        } else {
            format!(", with key presses {}", plan.dtmf.iter().collect::<String>())
        }
    ));

    let mut ticks = tokio::time::interval(FRAME);
    let mut playback = Playback::new(Instant::now());
    let mut next = 0usize;
    let mut reported_foreign_sid = false;
    let ended_by = loop {
        let tail_deadline = match phase {
            Phase::Tail(at) => at,
            _ => never(),
        };
        let close_deadline = match phase {
            Phase::Closing { deadline, .. } => deadline,
            _ => never(),
        };
        let mark_due = playback.next_due().unwrap_or_else(never);
        // After `stop` Twilio sends nothing more: marks are no longer answered.
        let after_stop = matches!(phase, Phase::Closing { stopped: true, .. });
        let mut outgoing: Vec<String> = Vec::new();
        tokio::select! {
            _ = ticks.tick(), if matches!(phase, Phase::Sending) => {
                while dtmf.front().is_some_and(|(after, _)| *after <= next) {
                    let (_, digit) = dtmf.pop_front().expect("checked");
                    outgoing.push(out.dtmf(digit));
                    report.dtmf_sent += 1;
                    steps.say(format!("sent dtmf {digit}"));
                }
                if let Some(frame) = frames.get(next) {
                    next += 1;
                    outgoing.push(out.media(next as u64, frame));
                    report.frames_sent += 1;
                }
                if next == frames.len() && dtmf.is_empty() {
                    steps.say(format!(
                        "audio sent ({} frames); listening {:.1} s more",
                        report.frames_sent,
                        plan.tail.as_secs_f64()
                    ));
                    phase = Phase::Tail(Instant::now() + plan.tail);
                }
            }
            _ = sleep_until(tail_deadline), if matches!(phase, Phase::Tail(_)) => {
                outgoing.push(out.stop(&plan.account_sid, &plan.call_sid));
                steps.say("sent stop");
                phase = Phase::Closing { deadline: Instant::now() + CLOSE_WAIT, stopped: true };
            }
            _ = sleep_until(close_deadline), if matches!(phase, Phase::Closing { .. }) => {
                let stopped = matches!(phase, Phase::Closing { stopped: true, .. });
                steps.say(format!("the service did not close the stream within {CLOSE_WAIT:?}; closing it"));
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                if !stopped {
                    report.close_reason = Some("sending to the stream failed".to_owned());
                }
                break if stopped { EndedBy::Stop } else { EndedBy::Dropped };
            }
            _ = sleep_until(mark_due), if playback.next_due().is_some() => {
                for name in playback.due(Instant::now()) {
                    answer_mark(
                        after_stop,
                        &mut out,
                        &mut report,
                        steps,
                        &mut outgoing,
                        &name,
                        "its audio played",
                    );
                }
            }
            message = socket.next() => {
                let stopped = matches!(phase, Phase::Closing { stopped: true, .. });
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let now = Instant::now();
                        match Incoming::parse(&text, &plan.stream_sid) {
                            Incoming::Media(payload) => {
                                report.frames_received += 1;
                                recorded.extend(audio::decode_all(&payload));
                                playback.media(now);
                            }
                            Incoming::Mark(name) => {
                                report.marks_received += 1;
                                report.marks.push(name.clone());
                                if let Some(name) = playback.mark(now, name) {
                                    answer_mark(
                                        after_stop,
                                        &mut out,
                                        &mut report,
                                        steps,
                                        &mut outgoing,
                                        &name,
                                        "nothing was queued",
                                    );
                                }
                            }
                            Incoming::Clear => {
                                report.clears += 1;
                                steps.say("agent sent clear: queued audio dropped");
                                for name in playback.clear(now) {
                                    answer_mark(
                                        after_stop,
                                        &mut out,
                                        &mut report,
                                        steps,
                                        &mut outgoing,
                                        &name,
                                        "clear",
                                    );
                                }
                            }
                            Incoming::ForeignStream(sid) => {
                                report.frames_ignored += 1;
                                if !reported_foreign_sid {
                                    reported_foreign_sid = true;
                                    steps.say(format!(
                                        "ignoring frames addressed to streamSid {sid:?}, not ours"
                                    ));
                                }
                            }
                            Incoming::Unusable => report.frames_ignored += 1,
                        }
                    }
                    Some(Ok(Message::Binary(_))) => report.frames_ignored += 1,
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = close_parts(frame);
                        report.close_code = code;
                        report.close_reason = Some(reason.clone());
                        let ended = classify(code, stopped);
                        steps.say(format!(
                            "the service closed the stream: {} {reason:?} ({})",
                            code.map_or("no code".to_owned(), |c| c.to_string()),
                            ended.describe()
                        ));
                        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                        break ended;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        report.close_reason = Some(e.to_string());
                        steps.say(format!("the stream connection broke: {e}"));
                        break if stopped { EndedBy::Stop } else { EndedBy::Dropped };
                    }
                    None => {
                        steps.say("the stream connection ended without a close frame");
                        break if stopped { EndedBy::Stop } else { EndedBy::Dropped };
                    }
                }
            }
        }
        for text in outgoing {
            if socket.send(Message::text(text)).await.is_err() {
                if !matches!(phase, Phase::Closing { .. }) {
                    phase = Phase::Closing {
                        deadline: Instant::now() + CLOSE_WAIT,
                        stopped: false,
                    };
                }
                break;
            }
        }
    };
    report.ended_by = ended_by;
    StreamOutcome { report, recorded }
}

fn answer_mark(
    after_stop: bool,
    out: &mut Frames<'_>,
    report: &mut StreamReport,
    steps: &Steps,
    outgoing: &mut Vec<String>,
    name: &str,
    why: &str,
) {
    if after_stop {
        return;
    }
    outgoing.push(out.mark(name));
    report.marks_answered += 1;
    steps.say(format!("answered mark {name:?} ({why})"));
}

fn close_parts(frame: Option<CloseFrame>) -> (Option<u16>, String) {
    match frame {
        Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
        None => (None, String::new()),
    }
}

/// How a close frame ends the stream.
fn classify(code: Option<u16>, stopped: bool) -> EndedBy {
    match (code, stopped) {
        (Some(1000 | 1001), true) => EndedBy::Stop,
        (Some(1000 | 1001), false) => EndedBy::AgentHangup,
        (Some(1008), _) => EndedBy::Refused,
        _ => EndedBy::Failed,
    }
}

/// A frame from the service, as Twilio would take it.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// Audio to play: the decoded mu-law bytes.
    Media(Vec<u8>),
    Mark(String),
    Clear,
    /// A message naming another stream.
    ForeignStream(String),
    /// Not JSON, an unknown event, or a message missing what it needs.
    Unusable,
}

impl Incoming {
    fn parse(text: &str, stream_sid: &str) -> Self {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return Self::Unusable;
        };
        match value.get("streamSid").and_then(|s| s.as_str()) {
            Some(sid) if sid == stream_sid => {}
            Some(sid) => return Self::ForeignStream(sid.to_owned()),
            None => return Self::ForeignStream(String::new()),
        }
        match value.get("event").and_then(|e| e.as_str()) {
            Some("media") => value
                .pointer("/media/payload")
                .and_then(|p| p.as_str())
                .and_then(|p| STANDARD.decode(p).ok())
                .map_or(Self::Unusable, Self::Media),
            Some("mark") => value
                .pointer("/mark/name")
                .and_then(|n| n.as_str())
                .map_or(Self::Unusable, |n| Self::Mark(n.to_owned())),
            Some("clear") => Self::Clear,
            _ => Self::Unusable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_twilio_shapes() {
        let plan = StreamPlan {
            url: "ws://x/media-stream".into(),
            stream_sid: "MZ1".into(),
            account_sid: "AC1".into(),
            call_sid: "CA1".into(),
            parameters: vec![("stream_token".into(), "t".into()), ("a".into(), "b".into())],
            audio: &[],
            dtmf: &[],
            tail: Duration::ZERO,
        };
        let mut frames = Frames::new("MZ1");
        assert_eq!(
            frames.connected(),
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#
        );
        assert_eq!(
            frames.start(&plan),
            r#"{"event":"start","sequenceNumber":"2","streamSid":"MZ1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{"stream_token":"t","a":"b"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#
        );
        assert_eq!(
            frames.media(1, &[0xFF, 0xFF, 0xFF]),
            r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"////"}}"#
        );
        assert_eq!(
            frames.media(2, &[0xFF]),
            r#"{"event":"media","sequenceNumber":"4","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"/w=="}}"#
        );
        assert_eq!(
            frames.dtmf('4'),
            r#"{"event":"dtmf","sequenceNumber":"5","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"4"}}"#
        );
        assert_eq!(
            frames.mark("greeting-played"),
            r#"{"event":"mark","sequenceNumber":"6","streamSid":"MZ1","mark":{"name":"greeting-played"}}"#
        );
        assert_eq!(
            frames.stop("AC1", "CA1"),
            r#"{"event":"stop","sequenceNumber":"7","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#
        );
    }

    #[test]
    fn the_recorded_session_parses_as_what_we_send() {
        // Every frame we write is one the service's own parser takes, as Twilio's.
        let plan = StreamPlan {
            url: String::new(),
            stream_sid: "MZ1".into(),
            account_sid: "AC1".into(),
            call_sid: "CA1".into(),
            parameters: vec![("stream_token".into(), "t".into())],
            audio: &[],
            dtmf: &[],
            tail: Duration::ZERO,
        };
        let mut frames = Frames::new("MZ1");
        for text in [
            frames.connected(),
            frames.start(&plan),
            frames.media(1, &[1, 2, 3]),
            frames.dtmf('#'),
            frames.stop("AC1", "CA1"),
        ] {
            crate::twilio::media::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        }
    }

    #[test]
    fn audio_is_cut_into_padded_frames() {
        let frames = frames_of(&[0x11; 330]);
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.len() == FRAME_SAMPLES));
        assert_eq!(frames[2][9], 0x11);
        assert_eq!(frames[2][10], 0xFF);
        assert!(frames_of(&[]).is_empty());
    }

    #[test]
    fn key_presses_are_spread_through_the_audio() {
        assert_eq!(dtmf_schedule(300, &['1', '2']), [(100, '1'), (200, '2')]);
        assert_eq!(dtmf_schedule(10, &['9']), [(5, '9')]);
        assert_eq!(dtmf_schedule(1, &['1', '2', '3']), [(1, '1'), (1, '2'), (1, '3')]);
        assert_eq!(dtmf_schedule(0, &['1']), [(0, '1')]);
    }

    #[test]
    fn marks_wait_for_their_audio_and_clear_answers_them() {
        let t0 = Instant::now();
        let mut playback = Playback::new(t0);
        assert_eq!(playback.mark(t0, "idle".into()), Some("idle".into()));
        for _ in 0..3 {
            playback.media(t0);
        }
        assert_eq!(playback.mark(t0, "after-3".into()), None);
        playback.media(t0);
        assert_eq!(playback.mark(t0, "after-4".into()), None);
        assert_eq!(playback.next_due(), Some(t0 + FRAME * 3));
        assert!(playback.due(t0 + FRAME * 2).is_empty());
        assert_eq!(playback.due(t0 + FRAME * 3), ["after-3"]);
        assert_eq!(playback.next_due(), Some(t0 + FRAME * 4));
        playback.media(t0 + FRAME * 3);
        assert_eq!(playback.mark(t0 + FRAME * 3, "after-5".into()), None);
        assert_eq!(playback.clear(t0 + FRAME * 3), ["after-4", "after-5"]);
        assert_eq!(playback.next_due(), None);
        // After a clear nothing is queued: a new mark is answered at once.
        assert_eq!(
            playback.mark(t0 + FRAME * 3, "fresh".into()),
            Some("fresh".into())
        );
        // Audio that arrives after a gap starts playing when it arrives.
        let later = t0 + FRAME * 100;
        playback.media(later);
        assert_eq!(playback.mark(later, "late".into()), None);
        assert_eq!(playback.next_due(), Some(later + FRAME));
    }

    #[test]
    fn incoming_frames_are_taken_as_twilio_takes_them() {
        let sid = "MZ1";
        assert_eq!(
            Incoming::parse(
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/w=="}}"#,
                sid
            ),
            Incoming::Media(vec![0xFF])
        );
        assert_eq!(
            Incoming::parse(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m"}}"#, sid),
            Incoming::Mark("m".into())
        );
        assert_eq!(
            Incoming::parse(r#"{"event":"clear","streamSid":"MZ1"}"#, sid),
            Incoming::Clear
        );
        assert_eq!(
            Incoming::parse(r#"{"event":"clear","streamSid":"MZ2"}"#, sid),
            Incoming::ForeignStream("MZ2".into())
        );
        for bad in [
            "nope",
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"***"}}"#,
            r#"{"event":"mark","streamSid":"MZ1","mark":{}}"#,
            r#"{"event":"other","streamSid":"MZ1"}"#,
        ] {
            assert_eq!(Incoming::parse(bad, sid), Incoming::Unusable, "{bad}");
        }
    }

    #[test]
    fn close_codes() {
        assert_eq!(classify(Some(1000), true), EndedBy::Stop);
        assert_eq!(classify(Some(1000), false), EndedBy::AgentHangup);
        assert_eq!(classify(Some(1001), false), EndedBy::AgentHangup);
        assert_eq!(classify(Some(1008), false), EndedBy::Refused);
        assert_eq!(classify(Some(1011), false), EndedBy::Failed);
        assert_eq!(classify(Some(1011), true), EndedBy::Failed);
        assert_eq!(classify(None, false), EndedBy::Failed);
    }
}
