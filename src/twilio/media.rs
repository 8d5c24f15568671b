//! Twilio Media Streams messages (JSON text frames over the `<Connect><Stream>` WebSocket).
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A message Twilio sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    /// First message of every stream.
    Connected {
        #[serde(default)]
        protocol: Option<String>,
        #[serde(default)]
        version: Option<String>,
    },
    /// Stream metadata; carries the `<Parameter>`s in `customParameters`.
    Start {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        start: Start,
    },
    /// 20 ms of base64 mu-law audio.
    Media {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        media: Media,
    },
    /// A key press.
    Dtmf {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        dtmf: Dtmf,
    },
    /// Audio sent with a mark finished playing.
    Mark {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        mark: Mark,
    },
    /// The stream ended (the call hung up or the `<Stream>` was stopped).
    Stop {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        #[serde(default)]
        stop: Option<Stop>,
    },
}

/// The `start` payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    #[serde(default)]
    pub account_sid: String,
    pub call_sid: String,
    #[serde(default)]
    pub tracks: Vec<String>,
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub media_format: Option<MediaFormat>,
}

/// Audio format of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

/// A media chunk from Twilio.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Media {
    #[serde(default)]
    pub track: Option<String>,
    #[serde(default)]
    pub chunk: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    pub payload: String,
}

/// A DTMF digit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Dtmf {
    #[serde(default)]
    pub track: Option<String>,
    pub digit: String,
}

/// A named mark.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Mark {
    pub name: String,
}

/// The `stop` payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub call_sid: Option<String>,
}

/// A message to Twilio. Agents may omit `streamSid`; the session fills it in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound {
    /// Audio to play to the caller (base64 mu-law, 8 kHz).
    Media {
        #[serde(rename = "streamSid", default)]
        stream_sid: String,
        media: OutboundMedia,
    },
    /// Ask Twilio to report when the audio sent so far has played.
    Mark {
        #[serde(rename = "streamSid", default)]
        stream_sid: String,
        mark: Mark,
    },
    /// Drop audio queued for playback (barge-in).
    Clear {
        #[serde(rename = "streamSid", default)]
        stream_sid: String,
    },
}

/// Audio in an outbound `media` message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct OutboundMedia {
    pub payload: String,
}

impl Outbound {
    /// The same message addressed to `stream_sid` (agents need not know it).
    pub fn for_stream(self, stream_sid: &str) -> Self {
        let sid = stream_sid.to_owned();
        match self {
            Self::Media { media, .. } => Self::Media {
                stream_sid: sid,
                media,
            },
            Self::Mark { mark, .. } => Self::Mark {
                stream_sid: sid,
                mark,
            },
            Self::Clear { .. } => Self::Clear { stream_sid: sid },
        }
    }

    /// The JSON text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("outbound messages serialise")
    }
}

/// Parses a text frame from Twilio.
pub fn parse(frame: &str) -> Result<Inbound, serde_json::Error> {
    serde_json::from_str(frame)
}

/// The `event` name of a JSON text frame, for frames [`parse`] does not know (newer Twilio
/// events are relayed, not dropped); `None` when the frame is not a JSON object with one.
pub fn event_name(frame: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        event: String,
    }
    serde_json::from_str::<Named>(frame).ok().map(|n| n.event)
}

/// The `connected` message Twilio opens every stream with, for streams whose peer skipped it.
pub const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;

/// Keys of `customParameters` never passed on to an agent.
pub const PRIVATE_PARAMETERS: [&str; 1] = ["stream_token"];

/// A JSON object whose members keep their order and their exact text.
type RawObject = indexmap::IndexMap<String, Box<serde_json::value::RawValue>>;

/// Twilio's `start` frame as an agent sees it: the [`PRIVATE_PARAMETERS`] are removed from
/// `start.customParameters` and `added` are set there (as strings). Every other member keeps
/// its position and its exact text, unknown ones included.
pub fn start_for_agent(frame: &str, added: &[(&str, &str)]) -> Result<String, serde_json::Error> {
    let mut message: RawObject = serde_json::from_str(frame)?;
    let mut start: RawObject = match message.get("start") {
        Some(raw) => serde_json::from_str(raw.get())?,
        None => RawObject::default(),
    };
    let mut params: indexmap::IndexMap<String, serde_json::Value> = match start.get("customParameters") {
        Some(raw) => serde_json::from_str(raw.get())?,
        None => indexmap::IndexMap::new(),
    };
    for key in PRIVATE_PARAMETERS {
        params.shift_remove(key);
    }
    for (key, value) in added {
        params.insert((*key).to_owned(), serde_json::Value::from(*value));
    }
    start.insert(
        "customParameters".to_owned(),
        serde_json::value::to_raw_value(&params)?,
    );
    message.insert("start".to_owned(), serde_json::value::to_raw_value(&start)?);
    serde_json::to_string(&message)
}

/// Why a frame from an agent was dropped. Dropped frames are counted, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A binary WebSocket frame.
    Binary,
    /// Not JSON, or a known event whose members have the wrong shape.
    Malformed,
    /// An event Twilio does not take from a stream.
    UnknownEvent,
    /// A `mark` without a name.
    NamelessMark,
}

impl Dropped {
    /// Every reason.
    pub const ALL: [Self; 4] = [
        Self::Binary,
        Self::Malformed,
        Self::UnknownEvent,
        Self::NamelessMark,
    ];

    /// Stable name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::Malformed => "malformed",
            Self::UnknownEvent => "unknown_event",
            Self::NamelessMark => "nameless_mark",
        }
    }
}

/// Parses what an agent sends, leniently: `streamSid` may be missing, null or anything (the
/// session writes the real one), unknown members are ignored.
pub fn parse_from_agent(frame: &str) -> Result<Outbound, Dropped> {
    #[derive(Deserialize)]
    struct Loose {
        event: String,
        #[serde(default)]
        media: Option<LooseMedia>,
        #[serde(default)]
        mark: Option<LooseMark>,
    }
    #[derive(Deserialize)]
    struct LooseMedia {
        payload: String,
    }
    #[derive(Deserialize)]
    struct LooseMark {
        #[serde(default)]
        name: Option<String>,
    }
    let loose: Loose = serde_json::from_str(frame).map_err(|_| Dropped::Malformed)?;
    let stream_sid = String::new();
    match loose.event.as_str() {
        "media" => match loose.media {
            Some(LooseMedia { payload }) => Ok(Outbound::Media {
                stream_sid,
                media: OutboundMedia { payload },
            }),
            None => Err(Dropped::Malformed),
        },
        "mark" => match loose.mark.and_then(|m| m.name).filter(|n| !n.is_empty()) {
            Some(name) => Ok(Outbound::Mark {
                stream_sid,
                mark: Mark { name },
            }),
            None => Err(Dropped::NamelessMark),
        },
        "clear" => Ok(Outbound::Clear { stream_sid }),
        _ => Err(Dropped::UnknownEvent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_message_of_the_recorded_session() {
        let session = include_str!("../../tests/fixtures/media-stream-session.jsonl");
        let mut counts = BTreeMap::new();
        for line in session.lines() {
            let kind = match parse(line).unwrap_or_else(|e| panic!("{e}: {line}")) {
                Inbound::Connected { .. } => "connected",
                Inbound::Start { start, .. } => {
                    assert_eq!(start.media_format.unwrap().sample_rate, 8000);
                    assert!(start.custom_parameters.contains_key("stream_token"));
                    "start"
                }
                Inbound::Media { .. } => "media",
                Inbound::Dtmf { .. } => "dtmf",
                Inbound::Mark { .. } => "mark",
                Inbound::Stop { .. } => "stop",
            };
            *counts.entry(kind).or_insert(0) += 1;
        }
        assert_eq!(counts["media"], 319);
        assert_eq!(
            (
                counts["connected"],
                counts["start"],
                counts["dtmf"],
                counts["mark"],
                counts["stop"]
            ),
            (1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for bad in [
            "",
            "{}",
            "{\"event\":\"media\"}",
            "{\"event\":\"unknown\"}",
            "[1,2]",
            "{\"event\":\"start\",\"streamSid\":1}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_for_agent_edits_only_custom_parameters() {
        let frame = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"stream_token":"secret.jwt","lang":"fr"},"futureField":{"x":[1, 2]}},"streamSid":"MZ1"}"#;
        let edited = start_for_agent(frame, &[("tenant_id", "t1"), ("route_id", "r1")]).unwrap();
        assert_eq!(
            edited,
            r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"lang":"fr","tenant_id":"t1","route_id":"r1"},"futureField":{"x":[1, 2]}},"streamSid":"MZ1"}"#
        );
        assert!(!edited.contains("secret.jwt"));
        // A start without customParameters gets them.
        let bare = start_for_agent(
            r#"{"event":"start","start":{"callSid":"CA1"}}"#,
            &[("to_number", "+1")],
        )
        .unwrap();
        assert_eq!(
            bare,
            r#"{"event":"start","start":{"callSid":"CA1","customParameters":{"to_number":"+1"}}}"#
        );
        assert!(start_for_agent("not json", &[]).is_err());
    }

    #[test]
    fn agents_are_parsed_leniently() {
        let media =
            |sid: &str| format!(r#"{{"event":"media","streamSid":{sid},"media":{{"payload":"AAA="}}}}"#);
        for sid in ["null", "\"MZwrong\"", "42", "{}"] {
            assert_eq!(
                parse_from_agent(&media(sid)),
                Ok(Outbound::Media {
                    stream_sid: String::new(),
                    media: OutboundMedia {
                        payload: "AAA=".into()
                    }
                }),
                "{sid}"
            );
        }
        assert!(matches!(
            parse_from_agent(r#"{"event":"media","media":{"payload":"AAA=","track":"outbound"}}"#),
            Ok(Outbound::Media { .. })
        ));
        assert!(matches!(
            parse_from_agent(r#"{"event":"mark","streamSid":null,"mark":{"name":"m1"}}"#),
            Ok(Outbound::Mark { mark: Mark { name }, .. }) if name == "m1"
        ));
        assert!(matches!(
            parse_from_agent(r#"{"event":"clear"}"#),
            Ok(Outbound::Clear { .. })
        ));
        for (frame, why) in [
            (r#"{"event":"mark","streamSid":"MZ1"}"#, Dropped::NamelessMark),
            (r#"{"event":"mark","mark":{}}"#, Dropped::NamelessMark),
            (r#"{"event":"mark","mark":{"name":""}}"#, Dropped::NamelessMark),
            (r#"{"event":"hello"}"#, Dropped::UnknownEvent),
            (r#"{"event":"media"}"#, Dropped::Malformed),
            (r#"{"event":"media","media":{"payload":7}}"#, Dropped::Malformed),
            (r#"{"streamSid":"MZ1"}"#, Dropped::Malformed),
            ("not json", Dropped::Malformed),
            ("", Dropped::Malformed),
        ] {
            assert_eq!(parse_from_agent(frame), Err(why), "{frame}");
        }
    }

    #[test]
    fn event_names_of_unknown_frames() {
        assert_eq!(
            event_name(r#"{"event":"future","x":1}"#).as_deref(),
            Some("future")
        );
        assert_eq!(event_name(r#"{"x":1}"#), None);
        assert_eq!(event_name("[]"), None);
    }

    #[test]
    fn outbound_shapes_match_twilio() {
        let media = Outbound::Media {
            stream_sid: String::new(),
            media: OutboundMedia {
                payload: "AAA=".into(),
            },
        }
        .for_stream("MZ1");
        assert_eq!(
            media.to_json(),
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AAA="}}"#
        );
        assert_eq!(
            Outbound::Clear {
                stream_sid: "MZ1".into()
            }
            .to_json(),
            r#"{"event":"clear","streamSid":"MZ1"}"#
        );
        let mark: Outbound = serde_json::from_str(r#"{"event":"mark","mark":{"name":"m"}}"#).unwrap();
        assert_eq!(
            mark.for_stream("MZ2").to_json(),
            r#"{"event":"mark","streamSid":"MZ2","mark":{"name":"m"}}"#
        );
    }
}
