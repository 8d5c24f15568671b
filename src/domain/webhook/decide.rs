//! Step 2: what to answer, as a pure function of the route, its tenant, the runtime and what
//! happened. No I/O: every row of the table is a unit test.
use entity::{route, states::FallbackReason, tenant};

use super::fallback_verbs;
use crate::{domain::runtime::RuntimeSnapshot, twilio::twiml::Verb};

/// What happened, as far as the answer depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Situation {
    /// A call arrived at the number's voice URL.
    NewCall,
    /// Twilio called the Fallback URL: the voice URL failed.
    ProviderFallback,
    /// The media stream ended; `ended_normally` when a session received `stop` or the agent
    /// hung up.
    StreamEnded { ended_normally: bool },
    /// A call arrived (at either URL) while the database cannot be reached: no stream token
    /// could be recorded, so the caller hears the fallback.
    DatabaseUnavailable,
}

/// The answer, before a token is minted or anything is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Connect the caller to the route's agent.
    Stream,
    /// Play the fallback.
    Fallback {
        reason: FallbackReason,
        verbs: Vec<Verb>,
    },
    /// The call is over.
    Hangup,
}

/// Decides the answer. `default_message` is what callers hear when neither the route nor the
/// tenant configures a fallback.
pub fn decide(
    route: &route::Model,
    tenant: &tenant::Model,
    runtime: &RuntimeSnapshot,
    situation: Situation,
    default_message: &str,
) -> Decision {
    let reason = match situation {
        Situation::StreamEnded { ended_normally: true } => return Decision::Hangup,
        Situation::StreamEnded {
            ended_normally: false,
        } => FallbackReason::StreamFailed,
        Situation::ProviderFallback => FallbackReason::ProviderFallback,
        Situation::DatabaseUnavailable => FallbackReason::DatabaseUnavailable,
        Situation::NewCall => match unavailable(route, runtime) {
            Some(reason) => reason,
            None => return Decision::Stream,
        },
    };
    Decision::Fallback {
        reason,
        verbs: fallback_verbs(route, tenant, default_message),
    }
}

/// Why the media stream cannot take a new call now, if it cannot; the first reason wins.
fn unavailable(route: &route::Model, runtime: &RuntimeSnapshot) -> Option<FallbackReason> {
    if !route.enabled {
        Some(FallbackReason::RouteDisabled)
    } else if runtime.draining {
        Some(FallbackReason::Draining)
    } else if runtime.streams_full {
        Some(FallbackReason::Capacity)
    } else if runtime.agent_unhealthy {
        Some(FallbackReason::AgentUnhealthy)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::webhook::fixtures::{route_with, tenant_with};

    const DEFAULT: &str = "default message";

    fn say(message: &str) -> Vec<Verb> {
        vec![Verb::Say(message.to_owned()), Verb::Hangup]
    }

    fn healthy() -> RuntimeSnapshot {
        RuntimeSnapshot::default()
    }

    #[test]
    fn a_new_call_on_a_healthy_route_streams() {
        let decision = decide(
            &route_with(true, None),
            &tenant_with(None),
            &healthy(),
            Situation::NewCall,
            DEFAULT,
        );
        assert_eq!(decision, Decision::Stream);
    }

    #[test]
    fn each_unavailability_gives_its_reason_and_the_first_wins() {
        let draining = RuntimeSnapshot {
            draining: true,
            ..healthy()
        };
        let full = RuntimeSnapshot {
            streams_full: true,
            ..healthy()
        };
        let unhealthy = RuntimeSnapshot {
            agent_unhealthy: true,
            ..healthy()
        };
        let everything = RuntimeSnapshot {
            draining: true,
            streams_full: true,
            agent_unhealthy: true,
        };
        let cases = [
            (false, healthy(), FallbackReason::RouteDisabled),
            (false, everything, FallbackReason::RouteDisabled),
            (true, draining, FallbackReason::Draining),
            (true, everything, FallbackReason::Draining),
            (true, full, FallbackReason::Capacity),
            (true, unhealthy, FallbackReason::AgentUnhealthy),
        ];
        for (enabled, runtime, reason) in cases {
            let decision = decide(
                &route_with(enabled, None),
                &tenant_with(None),
                &runtime,
                Situation::NewCall,
                DEFAULT,
            );
            assert_eq!(
                decision,
                Decision::Fallback {
                    reason,
                    verbs: say(DEFAULT)
                },
                "{enabled} {runtime:?}"
            );
        }
    }

    #[test]
    fn without_the_database_a_call_hears_the_route_then_tenant_then_default_fallback() {
        let route_say = r#"{"type":"say","message":"route says"}"#;
        let tenant_say = r#"{"type":"say","message":"tenant says"}"#;
        let cases = [
            (
                route_with(true, Some(route_say)),
                tenant_with(Some(tenant_say)),
                "route says",
            ),
            (
                route_with(true, None),
                tenant_with(Some(tenant_say)),
                "tenant says",
            ),
            (route_with(true, None), tenant_with(None), DEFAULT),
            // Disabled or not, the reason is the database: that is what the operator must fix.
            (route_with(false, None), tenant_with(None), DEFAULT),
        ];
        for (route, tenant, heard) in cases {
            let decision = decide(
                &route,
                &tenant,
                &healthy(),
                Situation::DatabaseUnavailable,
                DEFAULT,
            );
            assert_eq!(
                decision,
                Decision::Fallback {
                    reason: FallbackReason::DatabaseUnavailable,
                    verbs: say(heard)
                }
            );
        }
    }

    #[test]
    fn the_provider_fallback_never_streams_even_when_healthy() {
        let decision = decide(
            &route_with(true, None),
            &tenant_with(None),
            &healthy(),
            Situation::ProviderFallback,
            DEFAULT,
        );
        assert!(matches!(
            decision,
            Decision::Fallback {
                reason: FallbackReason::ProviderFallback,
                ..
            }
        ));
    }

    #[test]
    fn a_stream_that_ended_normally_hangs_up_otherwise_the_fallback_plays() {
        let ended = |ended_normally| {
            decide(
                &route_with(true, None),
                &tenant_with(None),
                &healthy(),
                Situation::StreamEnded { ended_normally },
                DEFAULT,
            )
        };
        assert_eq!(ended(true), Decision::Hangup);
        assert_eq!(
            ended(false),
            Decision::Fallback {
                reason: FallbackReason::StreamFailed,
                verbs: say(DEFAULT)
            }
        );
    }

    #[test]
    fn the_route_fallback_wins_over_the_tenant_default_which_wins_over_the_message() {
        let route_say = r#"{"type":"say","message":"route"}"#;
        let tenant_say = r#"{"type":"say","message":"tenant"}"#;
        let verbs = |route_fallback, tenant_fallback| match decide(
            &route_with(false, route_fallback),
            &tenant_with(tenant_fallback),
            &healthy(),
            Situation::NewCall,
            DEFAULT,
        ) {
            Decision::Fallback { verbs, .. } => verbs,
            other => panic!("expected a fallback, got {other:?}"),
        };
        assert_eq!(verbs(Some(route_say), Some(tenant_say)), say("route"));
        assert_eq!(verbs(None, Some(tenant_say)), say("tenant"));
        assert_eq!(verbs(None, None), say(DEFAULT));
        // An unreadable stored action is skipped, never silence.
        assert_eq!(verbs(Some("{not json"), None), say(DEFAULT));
    }
}
