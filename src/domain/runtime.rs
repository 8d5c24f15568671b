//! Per-instance runtime state: drain mode, shutdown, open streams, agent health, supervised
//! tasks that are down; and the snapshot of it a decision reads.
use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, PoisonError, RwLock,
    },
};

use tokio::sync::{futures::Notified, Notify};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Per-instance runtime state: drain mode, shutdown, stream count, agent health.
#[derive(Default)]
pub struct Runtime {
    draining: AtomicBool,
    stopping: AtomicBool,
    active_streams: AtomicUsize,
    /// Streams ended since the start, for the shutdown drain's summary.
    ended_streams: AtomicU64,
    /// Woken whenever a stream opens or ends.
    streams_changed: Notify,
    /// Cancelled to tell every open stream to close (the shutdown drain's deadline).
    close_streams: CancellationToken,
    unhealthy_agents: RwLock<HashMap<String, String>>,
    probe_failures: RwLock<HashMap<String, u32>>,
}

/// Consecutive failed health checks that open an agent's circuit.
pub const AGENT_FAILURES_TO_OPEN: u32 = 2;

impl Runtime {
    /// Whether new calls are answered with the fallback instead of a stream.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Turns drain mode on or off.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Whether the instance is shutting down: `/readyz` answers 503 while open streams drain.
    /// New calls are still answered normally (another instance can take their stream).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Marks the instance as shutting down.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Media streams open on this instance.
    pub fn active_streams(&self) -> usize {
        self.active_streams.load(Ordering::Relaxed)
    }

    /// Streams open now and ended so far.
    pub fn streams(&self) -> StreamCounts {
        // `ended` is counted before `open` drops, so a stream that is no longer open is
        // already counted as ended.
        let open = self.active_streams.load(Ordering::SeqCst);
        let ended = self.ended_streams.load(Ordering::SeqCst);
        StreamCounts { open, ended }
    }

    /// Completes at the next time a stream opens or ends after it was enabled (or first
    /// polled): enable it before reading [`Runtime::streams`] so no change is missed.
    pub fn streams_changed(&self) -> Notified<'_> {
        self.streams_changed.notified()
    }

    /// Tells every open stream, and every stream opened from now on, to close.
    pub fn close_streams(&self) {
        self.close_streams.cancel();
    }

    /// Counts a stream as open until the guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.active_streams.fetch_add(1, Ordering::SeqCst);
        self.streams_changed.notify_waiters();
        StreamGuard {
            // A child token per stream: each stream polls its own, not one shared lock.
            close: self.close_streams.child_token(),
            runtime: self.clone(),
        }
    }

    /// Records the health of the agent at `agent_url`: `None` healthy, `Some(reason)` failing.
    pub fn set_agent_health(&self, agent_url: &str, failure: Option<String>) {
        let mut map = self.unhealthy_agents.write().expect("agent health lock");
        match failure {
            Some(reason) => map.insert(agent_url.to_owned(), reason),
            None => map.remove(agent_url),
        };
    }

    /// Records a health check of an agent: its circuit opens (calls get the fallback) after
    /// [`AGENT_FAILURES_TO_OPEN`] consecutive failures and closes at the first success.
    pub fn record_agent_probe(&self, agent_url: &str, result: Result<(), String>) {
        let mut failures = self.probe_failures.write().expect("probe lock");
        match result {
            Ok(()) => {
                failures.remove(agent_url);
                self.set_agent_health(agent_url, None);
            }
            Err(reason) => {
                let count = failures.entry(agent_url.to_owned()).or_insert(0);
                *count += 1;
                if *count >= AGENT_FAILURES_TO_OPEN {
                    self.set_agent_health(agent_url, Some(reason));
                }
            }
        }
    }

    /// What a decision for a call to `agent_url` needs to know of this instance now.
    pub fn snapshot(&self, agent_url: Option<&str>, max_streams: usize) -> RuntimeSnapshot {
        RuntimeSnapshot {
            draining: self.is_draining(),
            streams_full: self.active_streams() >= max_streams,
            agent_unhealthy: agent_url.is_some_and(|url| self.agent_failure(url).is_some()),
        }
    }

    /// How many agents' circuits are open (their calls get the fallback).
    pub fn open_agent_circuits(&self) -> usize {
        self.unhealthy_agents.read().expect("agent health lock").len()
    }

    /// Why the agent at `agent_url` is failing its health check, if it is.
    pub fn agent_failure(&self, agent_url: &str) -> Option<String> {
        self.unhealthy_agents
            .read()
            .expect("agent health lock")
            .get(agent_url)
            .cloned()
    }
}

/// How many streams are open and how many ended since the instance started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Open now.
    pub open: usize,
    /// Ended since the start.
    pub ended: u64,
}

/// Keeps a stream counted as open while alive, and tells it when to close.
pub struct StreamGuard {
    runtime: Arc<Runtime>,
    close: CancellationToken,
}

impl StreamGuard {
    /// Completes once the instance tells its streams to close ([`Runtime::close_streams`]).
    pub fn close_requested(&self) -> WaitForCancellationFuture<'_> {
        self.close.cancelled()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.runtime.ended_streams.fetch_add(1, Ordering::SeqCst);
        self.runtime.active_streams.fetch_sub(1, Ordering::SeqCst);
        self.runtime.streams_changed.notify_waiters();
    }
}

/// The runtime facts a call decision depends on, read once per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    /// Drain mode is on.
    pub draining: bool,
    /// The instance has as many open streams as it accepts.
    pub streams_full: bool,
    /// The route's agent fails its health checks.
    pub agent_unhealthy: bool,
}

/// Which supervised tasks are down (exited or panicked, waiting to restart); read by `/readyz`.
#[derive(Debug, Default)]
pub struct TaskHealth {
    down: RwLock<BTreeSet<String>>,
}

impl TaskHealth {
    /// The names of the tasks that are down, sorted.
    pub fn down(&self) -> Vec<String> {
        let down = self.down.read().unwrap_or_else(PoisonError::into_inner);
        down.iter().cloned().collect()
    }

    /// Marks the task `name` up or down.
    pub fn set_up(&self, name: &str, up: bool) {
        let mut down = self.down.write().unwrap_or_else(PoisonError::into_inner);
        if up {
            down.remove(name);
        } else {
            down.insert(name.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    #[test]
    fn streams_are_counted_open_then_ended() {
        let runtime = Arc::new(Runtime::default());
        let first = runtime.stream_opened();
        let second = runtime.stream_opened();
        assert_eq!(runtime.streams(), StreamCounts { open: 2, ended: 0 });
        drop(first);
        assert_eq!(runtime.streams(), StreamCounts { open: 1, ended: 1 });
        assert_eq!(runtime.active_streams(), 1);
        drop(second);
        assert_eq!(runtime.streams(), StreamCounts { open: 0, ended: 2 });
    }

    #[test]
    fn a_stream_ending_wakes_an_enabled_waiter() {
        let runtime = Arc::new(Runtime::default());
        let stream = runtime.stream_opened();
        let changed = runtime.streams_changed();
        tokio::pin!(changed);
        assert!(!changed.as_mut().enable(), "not notified before the change");
        drop(stream);
        assert!(changed.now_or_never().is_some(), "the change is seen");
    }

    #[test]
    fn closing_reaches_open_streams_and_later_ones() {
        let runtime = Arc::new(Runtime::default());
        let open = runtime.stream_opened();
        assert!(open.close_requested().now_or_never().is_none());
        assert!(!runtime.is_stopping());
        runtime.begin_stopping();
        assert!(runtime.is_stopping());
        assert!(
            open.close_requested().now_or_never().is_none(),
            "stopping alone does not close streams"
        );
        runtime.close_streams();
        assert!(open.close_requested().now_or_never().is_some());
        let later = runtime.stream_opened();
        assert!(later.close_requested().now_or_never().is_some());
        assert!(!runtime.is_draining(), "shutdown is not the admin drain mode");
    }
}
