//! The states stored in string columns. Each enum is the one definition the database
//! (sea-orm `ActiveEnum`), the service and the published API (poem-openapi `Enum`) share, so a
//! value cannot be misspelt anywhere and the spec lists every value. The stored name of each
//! value is also its name on the wire and in metrics labels.
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Declares a state enum: each variant with the one name it is stored, published and logged as.
macro_rules! state {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $value:literal, )+
        }
    ) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum,
            poem_openapi::Enum, Serialize, Deserialize,
        )]
        $(#[$meta])*
        #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
        pub enum $name {
            $(
                $(#[doc = $doc])*
                #[sea_orm(string_value = $value)]
                #[oai(rename = $value)]
                #[serde(rename = $value)]
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored (and published) name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }

            /// The value with this stored name.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state! {
    /// What the service answered a new call with.
    pub enum Outcome {
        /// `<Connect><Stream>` to the route's agent.
        Streamed = "streamed",
        /// The route's fallback (see the call's `fallback_reason`).
        Fallback = "fallback",
    }
}

state! {
    /// Why a call was answered with the fallback.
    pub enum FallbackReason {
        /// The route is disabled.
        RouteDisabled = "route_disabled",
        /// The instance is draining.
        Draining = "draining",
        /// The instance has as many open streams as it accepts.
        Capacity = "capacity",
        /// The route's agent fails its health checks.
        AgentUnhealthy = "agent_unhealthy",
        /// Twilio called the Fallback URL because the voice URL failed.
        ProviderFallback = "provider_fallback",
        /// The media stream ended abnormally.
        StreamFailed = "stream_failed",
        /// The database could not be reached: answered from the last known configuration and
        /// spooled on the instance's disk until it is back.
        DatabaseUnavailable = "database_unavailable",
    }
}

state! {
    /// Twilio's `CallStatus`, named as Twilio sends it.
    pub enum CallStatus {
        Queued = "queued",
        Initiated = "initiated",
        Ringing = "ringing",
        InProgress = "in-progress",
        Completed = "completed",
        Busy = "busy",
        Failed = "failed",
        NoAnswer = "no-answer",
        Canceled = "canceled",
    }
}

impl CallStatus {
    /// Whether the call is over: no status follows a final one.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::Failed | Self::NoAnswer | Self::Canceled
        )
    }
}

state! {
    /// `production` alerts on repeated signature failures; `sandbox` does not.
    pub enum TenantEnvironment {
        Production = "production",
        Sandbox = "sandbox",
    }
}

state! {
    /// `production` routes alert on repeated signature failures; `test` routes do not.
    pub enum RouteEnvironment {
        Production = "production",
        Test = "test",
    }
}

state! {
    /// Where an outbox event is in its delivery.
    pub enum OutboxStatus {
        /// Waiting for its next delivery attempt.
        Pending = "pending",
        /// Delivered: the tenant's endpoint answered 2xx.
        Delivered = "delivered",
        /// Given up: attempts exhausted or the endpoint is refused.
        Dead = "dead",
        /// Not delivered because the tenant has no webhook URL.
        Skipped = "skipped",
    }
}

state! {
    /// An event delivered to the tenant's webhook URL.
    pub enum EventType {
        /// A new call was answered with a stream.
        CallReceived = "call.received",
        /// A call was answered with the fallback.
        CallFallback = "call.fallback",
        /// A call reached a final status.
        CallCompleted = "call.completed",
        /// A media stream of a call started.
        StreamStarted = "stream.started",
        /// A media stream of a call ended.
        StreamEnded = "stream.ended",
        /// An alert was raised (repeated signature failures on a production route).
        AlertRaised = "alert.raised",
    }
}

state! {
    /// Whether a media session is still open.
    pub enum MediaSessionStatus {
        Open = "open",
        Ended = "ended",
    }
}

state! {
    /// Why a media stream ended.
    #[oai(rename = "StreamEndReason")]
    pub enum EndReason {
        /// Twilio sent `stop` (the caller hung up): the call ends.
        Stop = "stop",
        /// The agent closed its connection with 1000 or 1001: the call ends.
        AgentHangup = "agent_hangup",
        /// The agent failed or could not be reached: the caller gets the fallback.
        AgentFailed = "agent_failed",
        /// Twilio's socket closed without `stop`: the caller gets the fallback.
        SocketClosed = "socket_closed",
        /// The instance was shutting down and closed the stream when its drain timeout
        /// (`VOICE_STREAM_DRAIN_TIMEOUT`) passed: the caller gets the fallback.
        Shutdown = "shutdown",
    }
}

impl EndReason {
    /// Whether the call is over once the stream ended this way (`<Connect action>` answers
    /// `<Hangup/>`); otherwise the caller gets the fallback.
    pub const fn ends_the_call(self) -> bool {
        matches!(self, Self::Stop | Self::AgentHangup)
    }
}

state! {
    /// What an operator diagnostic (or alert) counts.
    pub enum DiagnosticKind {
        /// A missing or invalid `X-Twilio-Signature` on a known route.
        SignatureFailure = "signature_failure",
        /// A signed request whose `AccountSid` is not the route's tenant's.
        AccountMismatch = "account_mismatch",
        /// A call to a number (or route id) with no route.
        UnknownRoute = "unknown_route",
        /// A CallSid already answered on another route.
        CallRouteConflict = "call_route_conflict",
        /// A media stream refused (bad token, replay, no `start`).
        StreamRefused = "stream_refused",
        /// The database could not be reached (an outage of the instance's database).
        DatabaseUnavailable = "database_unavailable",
    }
}

/// Which webhook of a call a stored answer belongs to: with the call, the idempotency key.
/// Status callbacks are keyed by the status they report, so each is processed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    /// The number's voice URL.
    Incoming,
    /// The number's Fallback URL, called when the voice URL failed.
    Fallback,
    /// The `<Connect action>` URL, called when a stream ends.
    StreamEnded,
    /// The call status callback reporting this status.
    Status(CallStatus),
}

impl WebhookKind {
    /// The stored name: `incoming`, `fallback`, `stream-ended` or `status:<CallStatus>`.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Incoming => "incoming".into(),
            Self::Fallback => "fallback".into(),
            Self::StreamEnded => "stream-ended".into(),
            Self::Status(status) => format!("status:{status}").into(),
        }
    }

    /// The kind with this stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "incoming" => Some(Self::Incoming),
            "fallback" => Some(Self::Fallback),
            "stream-ended" => Some(Self::StreamEnded),
            _ => name
                .strip_prefix("status:")
                .and_then(CallStatus::parse)
                .map(Self::Status),
        }
    }
}

/// Serialized as its stored name.
impl Serialize for WebhookKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for WebhookKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown webhook kind {name:?}")))
    }
}

impl std::fmt::Display for WebhookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl From<WebhookKind> for sea_orm::Value {
    fn from(kind: WebhookKind) -> Self {
        Self::String(Some(Box::new(kind.name().into_owned())))
    }
}

impl sea_orm::TryGetable for WebhookKind {
    fn try_get_by<I: sea_orm::ColIdx>(res: &QueryResult, index: I) -> Result<Self, sea_orm::TryGetError> {
        let name = String::try_get_by(res, index)?;
        Self::parse(&name)
            .ok_or_else(|| sea_orm::TryGetError::DbErr(DbErr::Type(format!("unknown webhook kind {name:?}"))))
    }
}

impl sea_orm::sea_query::ValueType for WebhookKind {
    fn try_from(value: sea_orm::Value) -> Result<Self, sea_orm::sea_query::ValueTypeErr> {
        match value {
            sea_orm::Value::String(Some(name)) => Self::parse(&name).ok_or(sea_orm::sea_query::ValueTypeErr),
            _ => Err(sea_orm::sea_query::ValueTypeErr),
        }
    }

    fn type_name() -> String {
        "WebhookKind".to_owned()
    }

    fn array_type() -> sea_orm::sea_query::ArrayType {
        sea_orm::sea_query::ArrayType::String
    }

    fn column_type() -> sea_orm::sea_query::ColumnType {
        sea_orm::sea_query::ColumnType::String(sea_orm::sea_query::StringLen::None)
    }
}

impl sea_orm::sea_query::Nullable for WebhookKind {
    fn null() -> sea_orm::Value {
        sea_orm::Value::String(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for reason in EndReason::ALL {
            assert_eq!(EndReason::parse(reason.as_str()), Some(*reason));
        }
        for status in CallStatus::ALL {
            let kind = WebhookKind::Status(*status);
            assert_eq!(WebhookKind::parse(&kind.name()), Some(kind));
        }
        for kind in [
            WebhookKind::Incoming,
            WebhookKind::Fallback,
            WebhookKind::StreamEnded,
        ] {
            assert_eq!(WebhookKind::parse(&kind.name()), Some(kind));
        }
        assert_eq!(WebhookKind::parse("status:unknown"), None);
        assert_eq!(EndReason::parse("other"), None);
        assert_eq!(CallStatus::InProgress.as_str(), "in-progress");
    }

    #[test]
    fn stored_names_are_the_active_enum_values() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.to_value(), outcome.as_str());
        }
        for reason in FallbackReason::ALL {
            assert_eq!(
                FallbackReason::try_from_value(&reason.as_str().to_owned()).ok(),
                Some(*reason)
            );
        }
    }

    #[test]
    fn only_stop_and_hangup_end_the_call_and_final_statuses_are_final() {
        let ending: Vec<_> = EndReason::ALL.iter().filter(|r| r.ends_the_call()).collect();
        assert_eq!(ending, [&EndReason::Stop, &EndReason::AgentHangup]);
        let finals: Vec<_> = CallStatus::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(finals, ["completed", "busy", "failed", "no-answer", "canceled"]);
    }
}
