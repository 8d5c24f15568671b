//! How a media stream ended, and what that means for the caller.

/// Why a media session ended, as stored in `media_sessions.end_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Twilio sent `stop`: the caller hung up or the `<Stream>` was stopped.
    Stop,
    /// The agent closed its connection normally (1000/1001): it ended the call.
    AgentHangup,
    /// The agent failed: it could not be reached, broke the protocol, closed abnormally or
    /// stalled. The caller gets the route's fallback.
    AgentFailed,
    /// Twilio's socket went away without `stop`.
    SocketClosed,
}

impl EndReason {
    /// Every end reason.
    pub const ALL: [Self; 4] = [
        Self::Stop,
        Self::AgentHangup,
        Self::AgentFailed,
        Self::SocketClosed,
    ];

    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::AgentHangup => "agent_hangup",
            Self::AgentFailed => "agent_failed",
            Self::SocketClosed => "socket_closed",
        }
    }

    /// The reason with this stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Stop,
            Self::AgentHangup,
            Self::AgentFailed,
            Self::SocketClosed,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }

    /// Whether the call is over once the stream ended this way (`<Connect action>` answers
    /// `<Hangup/>`); otherwise the caller gets the fallback.
    pub fn ends_the_call(self) -> bool {
        matches!(self, Self::Stop | Self::AgentHangup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_stop_and_hangup_end_the_call() {
        for reason in EndReason::ALL {
            assert_eq!(EndReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(EndReason::parse("other"), None);
        assert!(EndReason::Stop.ends_the_call());
        assert!(EndReason::AgentHangup.ends_the_call());
        assert!(!EndReason::AgentFailed.ends_the_call());
        assert!(!EndReason::SocketClosed.ends_the_call());
    }
}
