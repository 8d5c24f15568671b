//! The outbound events as the spec's `webhooks`: one POST per event type to the tenant's
//! `webhook_url`, its body the [`crate::events`] type the outbox serialises, signed per
//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
use poem_openapi::{
    param::Header,
    payload::Json,
    registry::{MetaWebhook, Registry},
    ApiResponse, Webhook,
};

use crate::events::{
    AlertRaisedEvent, CallCompletedEvent, CallFallbackEvent, CallReceivedEvent, StreamEndedEvent,
    StreamStartedEvent,
};

/// How a receiver answers a delivery.
#[derive(ApiResponse)]
pub enum Receipt {
    /// Delivered: any 2xx answer counts, the event is not sent again. Any other status, a
    /// timeout (`VOICE_WEBHOOK_TIMEOUT`) or a connection error is retried with exponential
    /// backoff, up to `VOICE_WEBHOOK_MAX_ATTEMPTS` deliveries.
    #[oai(status = 200)]
    Received,
}

/// Declares one `#[Webhook]` trait per event (a trait holds one operation per HTTP method)
/// and [`Events`], the spec's `webhooks`, joining them.
macro_rules! webhooks {
    ($( $(#[doc = $doc:literal])* $hook:ident::$method:ident($body:ty) = $name:tt; )+) => {
        $(
            #[Webhook]
            #[allow(clippy::too_many_arguments)]
            pub trait $hook {
                $(#[doc = $doc])*
                #[oai(name = $name, method = "post", operation_id = $name)]
                fn $method(
                    &self,
                    /// The event's id (a UUID): the same on every retry, so a receiver drops
                    /// an event it already processed by it.
                    #[oai(name = "webhook-id")]
                    id: Header<String>,
                    /// Unix time in seconds of this delivery attempt. Refuse deliveries more
                    /// than 5 minutes away from your clock (replays).
                    #[oai(name = "webhook-timestamp")]
                    timestamp: Header<i64>,
                    /// `v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`
                    /// (the raw body bytes), keyed with the base64-decoded part of the tenant's
                    /// `whsec_` secret after the prefix. Compute it and compare in constant time;
                    /// any Standard Webhooks library does both.
                    #[oai(name = "webhook-signature")]
                    signature: Header<String>,
                    body: Json<$body>,
                ) -> Receipt;
            }
        )+

        /// Every outbound event type, as the spec's `webhooks`.
        pub struct Events;

        impl Webhook for Events {
            fn meta() -> Vec<MetaWebhook> {
                let mut hooks = Vec::new();
                $( hooks.extend(<&dyn $hook as Webhook>::meta()); )+
                hooks
            }

            fn register(registry: &mut Registry) {
                $( <&dyn $hook as Webhook>::register(registry); )+
            }
        }
    };
}

webhooks! {
    /// A new call was answered with a stream
    ///
    /// Sent once per call, after the call and its answer are stored.
    CallReceived::call_received(CallReceivedEvent) = "call.received";
    /// A call was answered with the fallback
    ///
    /// `data.fallback_reason` says why: the route disabled, drain mode, capacity, the agent
    /// unhealthy, Twilio calling the Fallback URL, the stream failing, the database unreachable.
    CallFallback::call_fallback(CallFallbackEvent) = "call.fallback";
    /// A call reached a final status
    ///
    /// From Twilio's status callback: `completed`, `busy`, `failed`, `no-answer` or `canceled`.
    CallCompleted::call_completed(CallCompletedEvent) = "call.completed";
    /// A media stream started
    ///
    /// Its token was valid and single use; the stream is bridged to `data.agent`.
    StreamStarted::stream_started(StreamStartedEvent) = "stream.started";
    /// A media stream ended
    ///
    /// `data.end_reason` says how; `stop` and `agent_hangup` end the call, the others play
    /// the fallback.
    StreamEnded::stream_ended(StreamEndedEvent) = "stream.ended";
    /// An alert was raised
    ///
    /// Repeated signature failures on a production route within `VOICE_ALERT_WINDOW`.
    AlertRaised::alert_raised(AlertRaisedEvent) = "alert.raised";
}
