//! Fallback actions: what a caller hears when the media stream cannot serve the call.
use serde::{Deserialize, Serialize};

use super::phone::E164;
use crate::twilio::twiml::Verb;

/// A configured fallback, stored as JSON on tenants and routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FallbackAction {
    /// Say `message` (if any), then transfer to `number`.
    Dial {
        number: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Say `message`, then hang up.
    Say { message: String },
    /// Continue with the TwiML served at `url` (a callback workflow).
    Redirect { url: String },
}

/// Longest message accepted for `<Say>`.
pub const MAX_MESSAGE_LEN: usize = 1000;

impl FallbackAction {
    /// Checks and normalises the action (the dial number to E.164).
    pub fn validated(self) -> Result<Self, String> {
        let check_message = |m: &str| {
            if m.trim().is_empty() || m.chars().count() > MAX_MESSAGE_LEN {
                Err(format!("message must be 1 to {MAX_MESSAGE_LEN} characters"))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Dial { number, message } => {
                if let Some(m) = &message {
                    check_message(m)?;
                }
                let number = E164::parse(&number)?.as_str().to_owned();
                Ok(Self::Dial { number, message })
            }
            Self::Say { message } => {
                check_message(&message)?;
                Ok(Self::Say { message })
            }
            Self::Redirect { url } => {
                if url.chars().any(char::is_control) {
                    return Err("redirect url must not contain control characters".to_owned());
                }
                if !super::input::HTTP_URL.accepts(&url) {
                    return Err(
                        "redirect url must be an absolute http(s) URL with a host name or IPv4 \
                                address, an optional port and no user info"
                            .to_owned(),
                    );
                }
                let parsed = url::Url::parse(&url).map_err(|e| format!("redirect url: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err("redirect url must be an absolute http(s) URL".to_owned());
                }
                Ok(Self::Redirect { url })
            }
        }
    }

    /// The TwiML verbs that carry out the action.
    pub fn verbs(&self) -> Vec<Verb> {
        match self {
            Self::Dial { number, message } => {
                let mut verbs: Vec<Verb> = message.iter().map(|m| Verb::Say(m.clone())).collect();
                verbs.push(Verb::Dial(number.clone()));
                verbs
            }
            Self::Say { message } => vec![Verb::Say(message.clone()), Verb::Hangup],
            Self::Redirect { url } => vec![Verb::Redirect(url.clone())],
        }
    }

    /// Parses the stored JSON form.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The stored JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a fallback action serialises")
    }
}

/// The fallback chain: the route's action, else the tenant's default, else the platform
/// message followed by a hang-up. Never empty, so a caller is never left in silence.
pub fn resolve(
    route: Option<&FallbackAction>,
    tenant: Option<&FallbackAction>,
    platform_message: &str,
) -> Vec<Verb> {
    match route.or(tenant) {
        Some(action) => action.verbs(),
        None => vec![Verb::Say(platform_message.to_owned()), Verb::Hangup],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes_match_the_contract() {
        let dial =
            FallbackAction::from_json(r#"{"type":"dial","number":"+15550001111","message":"hi"}"#).unwrap();
        assert_eq!(
            dial.verbs(),
            vec![Verb::Say("hi".into()), Verb::Dial("+15550001111".into())]
        );
        let say = FallbackAction::from_json(r#"{"type":"say","message":"bye"}"#).unwrap();
        assert_eq!(say.verbs(), vec![Verb::Say("bye".into()), Verb::Hangup]);
        let redirect =
            FallbackAction::from_json(r#"{"type":"redirect","url":"https://x.example/cb"}"#).unwrap();
        assert_eq!(
            redirect.to_json(),
            r#"{"type":"redirect","url":"https://x.example/cb"}"#
        );
        assert!(FallbackAction::from_json(r#"{"type":"sms"}"#).is_err());
    }

    #[test]
    fn validation_normalises_and_rejects() {
        let dial = FallbackAction::Dial {
            number: "+1 (555) 000-1111".into(),
            message: None,
        };
        assert_eq!(
            dial.validated().unwrap(),
            FallbackAction::Dial {
                number: "+15550001111".into(),
                message: None
            }
        );
        assert!(FallbackAction::Say { message: " ".into() }.validated().is_err());
        assert!(FallbackAction::Redirect {
            url: "javascript:alert(1)".into()
        }
        .validated()
        .is_err());
        assert!(FallbackAction::Redirect {
            url: "/relative".into()
        }
        .validated()
        .is_err());
    }

    #[test]
    fn chain_prefers_route_then_tenant_then_platform() {
        let route = FallbackAction::Say {
            message: "route".into(),
        };
        let tenant = FallbackAction::Say {
            message: "tenant".into(),
        };
        assert_eq!(
            resolve(Some(&route), Some(&tenant), "p")[0],
            Verb::Say("route".into())
        );
        assert_eq!(resolve(None, Some(&tenant), "p")[0], Verb::Say("tenant".into()));
        assert_eq!(
            resolve(None, None, "p"),
            vec![Verb::Say("p".into()), Verb::Hangup]
        );
    }
}
