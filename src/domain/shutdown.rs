//! The drain at shutdown (SIGTERM), as a pure state machine over the clock and the stream
//! counts: open media streams get until a deadline to end on their own; those still open then
//! are told to close, and get a moment to record how they ended; the instance then serves on
//! for a short linger, so that the `<Connect action>` callbacks of the closed streams are
//! answered here too, and stops. The edge that runs it (`server::drain`) only waits and acts.
use std::time::{Duration, Instant};

use super::runtime::StreamCounts;

/// How long streams told to close get to record their end and close their sockets.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long the instance serves on after closing streams, for their `<Connect action>`
/// callbacks.
pub const LINGER: Duration = Duration::from_secs(2);

/// What the drain does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wait until `until`, or until a stream opens or ends, then ask again.
    Wait { until: Instant },
    /// Tell the open streams to close, then ask again.
    CloseStreams,
    /// The drain is over: stop the server and the tasks.
    Done(Summary),
}

/// How the drain went, for the log line that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Streams that ended on their own during the drain.
    pub ended: u64,
    /// Streams still open at the deadline, told to close.
    pub closed: usize,
    /// Streams open when the drain ended: closed streams that did not finish within
    /// [`CLOSE_WAIT`], or streams opened during the linger.
    pub still_open: usize,
    /// From the signal to the end of the drain.
    pub elapsed: Duration,
}

/// Where the drain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Streams may end on their own until the deadline.
    Waiting,
    /// The streams open at the deadline were told to close; they have until `until`.
    Closing { until: Instant },
    /// Serving on, until `until`, for the callbacks of the closed streams.
    Lingering { until: Instant },
    /// Over.
    Done,
}

/// The drain of one shutdown.
#[derive(Debug, Clone)]
pub struct Drain {
    started: Instant,
    deadline: Instant,
    linger: Duration,
    /// Streams ended before the drain started.
    ended_before: u64,
    /// Streams that ended on their own, fixed once the deadline passed.
    ended: Option<u64>,
    closed: usize,
    phase: Phase,
}

impl Drain {
    /// A drain starting at `now`, with streams ending on their own until `now + timeout`, and
    /// `linger` of serving after any were closed.
    pub fn new(now: Instant, streams: StreamCounts, timeout: Duration, linger: Duration) -> Self {
        Self {
            started: now,
            deadline: now + timeout,
            linger,
            ended_before: streams.ended,
            ended: None,
            closed: 0,
            phase: Phase::Waiting,
        }
    }

    /// When the streams still open are closed.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The next step at `now`, with these stream counts.
    pub fn next(&mut self, now: Instant, streams: StreamCounts) -> Step {
        loop {
            match self.phase {
                Phase::Waiting if streams.open == 0 => {
                    // Every stream ended on its own: nothing to linger for.
                    self.ended = Some(self.ended_since_start(streams));
                    self.phase = Phase::Done;
                }
                Phase::Waiting if now < self.deadline => return Step::Wait { until: self.deadline },
                Phase::Waiting => {
                    self.ended = Some(self.ended_since_start(streams));
                    self.closed = streams.open;
                    self.phase = Phase::Closing {
                        until: now + CLOSE_WAIT,
                    };
                    return Step::CloseStreams;
                }
                Phase::Closing { until } if streams.open > 0 && now < until => {
                    return Step::Wait { until };
                }
                Phase::Closing { .. } => {
                    self.phase = Phase::Lingering {
                        until: now + self.linger,
                    };
                }
                Phase::Lingering { until } if now < until => return Step::Wait { until },
                Phase::Lingering { .. } => self.phase = Phase::Done,
                Phase::Done => {
                    return Step::Done(Summary {
                        ended: self.ended.unwrap_or_else(|| self.ended_since_start(streams)),
                        closed: self.closed,
                        still_open: streams.open,
                        elapsed: now.saturating_duration_since(self.started),
                    });
                }
            }
        }
    }

    fn ended_since_start(&self, streams: StreamCounts) -> u64 {
        streams.ended.saturating_sub(self.ended_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(300);

    fn counts(open: usize, ended: u64) -> StreamCounts {
        StreamCounts { open, ended }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn with_no_open_stream_the_drain_is_over_at_once() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0, counts(0, 7), TIMEOUT, LINGER);
        assert_eq!(
            drain.next(t0, counts(0, 7)),
            Step::Done(Summary {
                ended: 0,
                closed: 0,
                still_open: 0,
                elapsed: Duration::ZERO
            })
        );
    }

    #[test]
    fn streams_that_end_on_their_own_end_the_drain_without_a_linger() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0, counts(5, 10), TIMEOUT, LINGER);
        assert_eq!(drain.deadline(), t0 + TIMEOUT);
        assert_eq!(drain.next(t0, counts(5, 10)), Step::Wait { until: t0 + TIMEOUT });
        // Two end, one new call's stream opens on this instance: still waiting.
        assert_eq!(
            drain.next(t0 + secs(10), counts(4, 12)),
            Step::Wait { until: t0 + TIMEOUT }
        );
        assert_eq!(
            drain.next(t0 + secs(20), counts(0, 16)),
            Step::Done(Summary {
                ended: 6,
                closed: 0,
                still_open: 0,
                elapsed: secs(20)
            })
        );
    }

    #[test]
    fn streams_open_at_the_deadline_are_closed_then_the_instance_lingers() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0, counts(3, 0), TIMEOUT, LINGER);
        assert_eq!(
            drain.next(t0 + secs(100), counts(2, 1)),
            Step::Wait { until: t0 + TIMEOUT }
        );
        let deadline = t0 + TIMEOUT;
        assert_eq!(drain.next(deadline, counts(2, 1)), Step::CloseStreams);
        // Closing: wait for the two to record their end.
        assert_eq!(
            drain.next(deadline, counts(2, 1)),
            Step::Wait {
                until: deadline + CLOSE_WAIT
            }
        );
        let closed_at = deadline + Duration::from_millis(30);
        assert_eq!(
            drain.next(closed_at, counts(0, 3)),
            Step::Wait {
                until: closed_at + LINGER
            }
        );
        // A stream opening during the linger does not extend it.
        assert_eq!(
            drain.next(closed_at + secs(1), counts(1, 3)),
            Step::Wait {
                until: closed_at + LINGER
            }
        );
        assert_eq!(
            drain.next(closed_at + LINGER, counts(0, 4)),
            Step::Done(Summary {
                ended: 1,
                closed: 2,
                still_open: 0,
                elapsed: TIMEOUT + Duration::from_millis(30) + LINGER
            })
        );
    }

    #[test]
    fn streams_that_do_not_close_in_time_are_left_after_the_close_wait() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0, counts(1, 0), secs(1), LINGER);
        assert_eq!(drain.next(t0 + secs(2), counts(1, 0)), Step::CloseStreams);
        let gave_up = t0 + secs(2) + CLOSE_WAIT;
        assert_eq!(
            drain.next(gave_up, counts(1, 0)),
            Step::Wait {
                until: gave_up + LINGER
            }
        );
        let Step::Done(summary) = drain.next(gave_up + LINGER, counts(1, 0)) else {
            panic!("the drain ends");
        };
        assert_eq!((summary.ended, summary.closed, summary.still_open), (0, 1, 1));
    }

    #[test]
    fn a_zero_timeout_closes_at_once() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0, counts(2, 0), Duration::ZERO, LINGER);
        assert_eq!(drain.next(t0, counts(2, 0)), Step::CloseStreams);
    }

    #[test]
    fn a_done_drain_stays_done() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0, counts(0, 0), TIMEOUT, LINGER);
        assert!(matches!(drain.next(t0, counts(0, 0)), Step::Done(_)));
        assert!(matches!(drain.next(t0 + secs(1), counts(3, 0)), Step::Done(_)));
    }
}
