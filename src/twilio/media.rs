//! Twilio Media Streams messages (JSON text frames over the `<Connect><Stream>` WebSocket).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A message Twilio sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

/// A media chunk from Twilio.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Dtmf {
    #[serde(default)]
    pub track: Option<String>,
    pub digit: String,
}

/// A named mark.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Mark {
    pub name: String,
}

/// The `stop` payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub call_sid: Option<String>,
}

/// A message to Twilio. Agents may omit `streamSid`; the session fills it in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
