//! Per-instance runtime state: drain mode, open streams, agent health, supervised tasks that
//! are down; and the snapshot of it a decision reads.
use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, PoisonError, RwLock,
    },
};

/// Per-instance runtime state: drain mode, stream count, agent health.
#[derive(Default)]
pub struct Runtime {
    draining: AtomicBool,
    active_streams: AtomicUsize,
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

    /// Media streams open on this instance.
    pub fn active_streams(&self) -> usize {
        self.active_streams.load(Ordering::Relaxed)
    }

    /// Counts a stream as open until the guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.active_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
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

    /// Why the agent at `agent_url` is failing its health check, if it is.
    pub fn agent_failure(&self, agent_url: &str) -> Option<String> {
        self.unhealthy_agents
            .read()
            .expect("agent health lock")
            .get(agent_url)
            .cloned()
    }
}

/// Keeps a stream counted as open while alive.
pub struct StreamGuard(Arc<Runtime>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::Relaxed);
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
