//! The outbound events: every event type the outbox emits, with the data it carries. The
//! delivered body (`{"type", "timestamp", "data"}`, the Standard Webhooks shape) is serialised
//! by the same poem-openapi types the published spec documents as `webhooks`, so the two
//! cannot differ.
use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use entity::states::{CallStatus, DiagnosticKind, EndReason, EventType, FallbackReason, Outcome};
use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
    Enum, Object,
};
use serde_json::Value;

/// What a call event says about the call.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct CallData {
    /// The call's id in this service.
    pub call_id: String,
    /// Twilio's `CallSid`.
    pub call_sid: String,
    pub tenant_id: String,
    pub route_id: String,
    /// The caller's number as Twilio sent it (`From`), empty when withheld.
    pub from: String,
    /// The called number (`To`).
    pub to: String,
    /// Twilio's latest `CallStatus`.
    pub status: CallStatus,
    pub outcome: Outcome,
    /// Why the call got the fallback; null when it was streamed.
    #[oai(nullable)]
    pub fallback_reason: Option<FallbackReason>,
    /// Twilio's `ErrorCode` when Twilio called the Fallback URL; else null.
    #[oai(nullable)]
    pub error_code: Option<String>,
}

impl From<&entity::call::Model> for CallData {
    fn from(call: &entity::call::Model) -> Self {
        Self {
            call_id: call.id.clone(),
            call_sid: call.call_sid.clone(),
            tenant_id: call.tenant_id.clone(),
            route_id: call.route_id.clone(),
            from: call.from_number.clone(),
            to: call.to_number.clone(),
            status: call.status,
            outcome: call.outcome,
            fallback_reason: call.fallback_reason,
            error_code: call.error_code.clone(),
        }
    }
}

/// A call that reached a final status.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct CallCompletedData {
    #[oai(flatten)]
    pub call: CallData,
    /// Twilio's `CallDuration` in seconds; null when Twilio sent none.
    #[oai(nullable)]
    pub duration_secs: Option<i32>,
}

impl From<&entity::call::Model> for CallCompletedData {
    fn from(call: &entity::call::Model) -> Self {
        Self {
            call: call.into(),
            duration_secs: call.duration_secs,
        }
    }
}

/// A media stream that started: its token was valid and its session is open.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct StreamStartedData {
    pub call_sid: String,
    /// Twilio's `streamSid`.
    pub stream_sid: String,
    pub media_session_id: String,
    pub route_id: String,
    /// The agent the stream is bridged to: the route's `agent_url`, or `echo`.
    pub agent: String,
}

/// A media stream that ended, with why and its frame counts.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct StreamEndedData {
    pub call_sid: String,
    /// Twilio's `streamSid` (null only for a session recorded without one).
    #[oai(nullable)]
    pub stream_sid: Option<String>,
    pub media_session_id: String,
    pub route_id: String,
    /// The route's `agent_url`, or `echo`.
    pub agent: String,
    pub end_reason: EndReason,
    /// Whether Twilio sent `stop`.
    pub received_stop: bool,
    /// `media` frames from Twilio.
    pub inbound_frames: i64,
    /// `media` frames to Twilio.
    pub outbound_frames: i64,
    /// Frames that were not valid messages (dropped and counted).
    pub malformed_frames: i64,
}

/// An alert raised for the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct AlertRaisedData {
    pub alert_id: String,
    pub kind: DiagnosticKind,
    pub route_id: String,
    /// Failures counted within the window.
    pub failure_count: i64,
    pub window_seconds: i64,
    /// One line saying what happened.
    pub message: String,
}

/// An event's `timestamp`: when it was recorded, RFC 3339 in UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl Type for Timestamp {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_date-time".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "date-time")))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.to_rfc3339_opts(SecondsFormat::Millis, true)))
    }
}

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Ok(Self(DateTime::parse_from_rfc3339(&s)?.with_timezone(&Utc))),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

/// Declares [`Event`] and, per event type, the delivered body (`type`, `timestamp`, `data`)
/// with a `type` of exactly one value.
macro_rules! events {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident($data:ty) => $body:ident, $tag:ident = $name:tt;
    )+) => {
        /// One outbound event: its type (the variant) and its data.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event {
            $( $(#[doc = $doc])* $variant($data), )+
        }

        impl Event {
            /// The event's type.
            pub const fn event_type(&self) -> EventType {
                match self {
                    $( Self::$variant(_) => EventType::$variant, )+
                }
            }

            /// The body delivered to the tenant, recorded at `at`.
            pub fn body(&self, at: DateTime<Utc>) -> Value {
                let timestamp = Timestamp(at);
                let body = match self {
                    $( Self::$variant(data) => $body {
                        r#type: $tag::$variant,
                        timestamp,
                        data: data.clone(),
                    }
                    .to_json(), )+
                };
                body.expect("event bodies serialise")
            }
        }

        $(
            #[doc = concat!("The `type` of a `", $name, "` event.")]
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
            pub enum $tag {
                #[oai(rename = $name)]
                $variant,
            }

            $(#[doc = $doc])*
            #[derive(Debug, Clone, PartialEq, Eq, Object)]
            pub struct $body {
                /// The event type.
                #[oai(rename = "type")]
                pub r#type: $tag,
                /// When the event was recorded (RFC 3339, UTC, milliseconds).
                pub timestamp: Timestamp,
                pub data: $data,
            }
        )+
    };
}

events! {
    /// A new call was answered with a stream to the route's agent.
    CallReceived(CallData) => CallReceivedEvent, CallReceivedType = "call.received";
    /// A call was answered with the fallback (see `fallback_reason`).
    CallFallback(CallData) => CallFallbackEvent, CallFallbackType = "call.fallback";
    /// A call reached a final status (`completed`, `busy`, `failed`, `no-answer`, `canceled`).
    CallCompleted(CallCompletedData) => CallCompletedEvent, CallCompletedType = "call.completed";
    /// A media stream of a call started.
    StreamStarted(StreamStartedData) => StreamStartedEvent, StreamStartedType = "stream.started";
    /// A media stream of a call ended.
    StreamEnded(StreamEndedData) => StreamEndedEvent, StreamEndedType = "stream.ended";
    /// An alert was raised: repeated signature failures on a production route.
    AlertRaised(AlertRaisedData) => AlertRaisedEvent, AlertRaisedType = "alert.raised";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallData {
        CallData {
            call_id: "c1".to_owned(),
            call_sid: "CA1".to_owned(),
            tenant_id: "t1".to_owned(),
            route_id: "r1".to_owned(),
            from: "+15550001111".to_owned(),
            to: "+15550002222".to_owned(),
            status: CallStatus::Ringing,
            outcome: Outcome::Streamed,
            fallback_reason: None,
            error_code: None,
        }
    }

    #[test]
    fn a_body_names_its_type_and_keeps_nulls() {
        let at = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678901Z")
            .unwrap()
            .with_timezone(&Utc);
        let body = Event::CallReceived(call()).body(at);
        assert_eq!(body["type"], "call.received");
        assert_eq!(body["timestamp"], "2025-01-02T03:04:05.678Z");
        assert_eq!(body["data"]["call_sid"], "CA1");
        assert!(body["data"]["fallback_reason"].is_null());
        assert!(body["data"].as_object().unwrap().contains_key("fallback_reason"));
    }

    #[test]
    fn a_completed_call_is_the_call_and_its_duration_in_one_object() {
        let data = CallCompletedData {
            call: call(),
            duration_secs: Some(42),
        };
        let body = Event::CallCompleted(data).body(Utc::now());
        assert_eq!(body["type"], EventType::CallCompleted.as_str());
        assert_eq!(body["data"]["duration_secs"], 42);
        assert_eq!(body["data"]["call_id"], "c1");
    }
}
