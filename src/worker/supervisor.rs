//! Supervision of the service's long-running tasks (server, batch writer lanes, background
//! workers). Each task runs under a name; when it exits or panics, that is logged with the name,
//! the task is marked down (so `/readyz` answers 503 naming it) and, after a backoff, started
//! again and counted in `voice_worker_restarts_total{worker}`. Shutdown cancels the tasks stage
//! by stage, in [`Stage`] order, waiting for each stage to stop before the next.
use std::{any::Any, future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::FutureExt as _;
use prometheus_client::metrics::counter::Counter;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

pub use crate::domain::runtime::TaskHealth;
use crate::{metrics::Metrics, state::AppState};

/// How long a stage may take to stop before its tasks are aborted. Longer than the server's
/// grace period, so open requests get theirs.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// When a task stops at shutdown: stages stop in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The HTTP server: stops accepting and lets open requests finish.
    Server,
    /// The batch writer: writes what is queued, then stops.
    Writer,
    /// Background workers: stop between rounds.
    Workers,
}

impl Stage {
    /// Every stage, in shutdown order.
    pub const ALL: [Stage; 3] = [Stage::Server, Stage::Writer, Stage::Workers];

    fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Writer => "writer",
            Self::Workers => "workers",
        }
    }
}

/// Restart delays: `initial` after the first failure, doubled after each further one up to
/// `max`; a run that lasted at least `healthy_after` starts the sequence again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after `current`.
    fn after(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.max)
    }
}

/// The tasks of one stage and the token that stops them.
#[derive(Default)]
struct StageTasks {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Runs named tasks, restarts them when they end, stops them in order.
pub struct Supervisor {
    health: Arc<TaskHealth>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    stages: [StageTasks; 3],
}

impl Supervisor {
    /// A supervisor reporting to `health` and counting restarts in `metrics`.
    pub fn new(health: Arc<TaskHealth>, metrics: Arc<Metrics>) -> Self {
        Self {
            health,
            metrics,
            backoff: Backoff::default(),
            stages: Default::default(),
        }
    }

    /// A supervisor reporting to the application's task health and metrics.
    pub fn for_state(state: &AppState) -> Self {
        Self::new(state.tasks.clone(), state.metrics.clone())
    }

    /// The same supervisor with other restart delays.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Starts `task` under `name` (unique among the tasks) in `stage`. `task` builds one run;
    /// a run should end soon after its token is cancelled (shutdown), and is started again
    /// whenever it ends otherwise.
    pub fn spawn<F, Fut>(&mut self, name: impl Into<String>, stage: Stage, task: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        // The series exists from the start, at zero.
        let restarts = self.metrics.worker_restarts(&name);
        let slot = &mut self.stages[stage as usize];
        let handle = tokio::spawn(supervise(
            name,
            task,
            slot.stop.clone(),
            self.health.clone(),
            restarts,
            self.backoff,
        ));
        slot.tasks.push(handle);
    }

    /// Stops every task, stage by stage: each stage's token is cancelled and its tasks awaited
    /// (aborted after [`STOP_TIMEOUT`]) before the next stage is told to stop.
    pub async fn shutdown(self) {
        for (stage, slot) in Stage::ALL.into_iter().zip(self.stages) {
            let StageTasks { stop, mut tasks } = slot;
            stop.cancel();
            let stopped = futures::future::join_all(tasks.iter_mut());
            if tokio::time::timeout(STOP_TIMEOUT, stopped).await.is_err() {
                tracing::warn!(
                    stage = stage.as_str(),
                    "tasks did not stop in time; aborting them"
                );
                for task in &tasks {
                    task.abort();
                }
            }
        }
    }
}

/// Runs `task` until `stop` is cancelled, restarting it with backoff whenever it ends.
async fn supervise<F, Fut>(
    name: String,
    mut task: F,
    stop: CancellationToken,
    health: Arc<TaskHealth>,
    restarts: Counter,
    backoff: Backoff,
) where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut delay = backoff.initial;
    loop {
        health.set_up(&name, true);
        let started = Instant::now();
        let ended = AssertUnwindSafe(task(stop.clone())).catch_unwind().await;
        if stop.is_cancelled() {
            if let Err(panic) = ended {
                tracing::error!(worker = %name, panic = panic_message(&*panic), "task panicked while stopping");
            }
            return;
        }
        health.set_up(&name, false);
        if started.elapsed() >= backoff.healthy_after {
            delay = backoff.initial;
        }
        let restart_in = delay.as_millis() as u64;
        match ended {
            Ok(()) => tracing::error!(worker = %name, restart_in_ms = restart_in, "task exited; restarting"),
            Err(panic) => tracing::error!(
                worker = %name,
                panic = panic_message(&*panic),
                restart_in_ms = restart_in,
                "task panicked; restarting"
            ),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = backoff.after(delay);
        restarts.inc();
    }
}

/// The message of a panic payload, when it has one.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> Backoff {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(400),
            healthy_after: Duration::from_secs(60),
        }
    }

    /// Waits up to five seconds for `check`.
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_marked_down_counted_and_restarted() {
        let health = Arc::new(TaskHealth::default());
        let metrics = Arc::new(Metrics::default());
        let mut supervisor = Supervisor::new(health.clone(), metrics.clone()).with_backoff(quick());
        let runs = Arc::new(AtomicU32::new(0));
        let (panic_now, panic_signal) = tokio::sync::watch::channel(false);
        supervisor.spawn("flaky", Stage::Workers, {
            let runs = runs.clone();
            move |stop: CancellationToken| {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                let mut panic_signal = panic_signal.clone();
                async move {
                    if run == 1 {
                        let _ = panic_signal.wait_for(|now| *now).await;
                        panic!("injected failure");
                    }
                    stop.cancelled().await;
                }
            }
        });
        assert!(
            metrics
                .encode()
                .contains("voice_worker_restarts_total{worker=\"flaky\"} 0"),
            "the series exists at zero"
        );
        eventually("first run", || runs.load(Ordering::SeqCst) == 1).await;
        assert!(health.down().is_empty());

        panic_now.send_replace(true);
        eventually("marked down", || health.down() == ["flaky"]).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not restarted before the backoff");
        eventually("restarted", || runs.load(Ordering::SeqCst) == 2).await;
        eventually("marked up", || health.down().is_empty()).await;
        let text = metrics.encode();
        assert!(
            text.contains("voice_worker_restarts_total{worker=\"flaky\"} 1"),
            "{text}"
        );

        tokio::time::timeout(Duration::from_secs(5), supervisor.shutdown())
            .await
            .expect("a task that honours its token stops");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "not restarted after shutdown");
        assert!(health.down().is_empty(), "a stopped task is not reported down");
    }

    #[tokio::test]
    async fn an_exiting_task_is_restarted_with_growing_delays() {
        let health = Arc::new(TaskHealth::default());
        let metrics = Arc::new(Metrics::default());
        let backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(80),
            healthy_after: Duration::from_secs(60),
        };
        let mut supervisor = Supervisor::new(health, metrics.clone()).with_backoff(backoff);
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        supervisor.spawn("short", Stage::Workers, {
            let starts = starts.clone();
            move |_stop| {
                starts.lock().unwrap().push(Instant::now());
                async {}
            }
        });
        eventually("five runs", || starts.lock().unwrap().len() >= 5).await;
        supervisor.shutdown().await;
        let starts = starts.lock().unwrap().clone();
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, at_least) in gaps.iter().zip([20u64, 40, 80, 80]) {
            assert!(*gap >= Duration::from_millis(at_least), "{gaps:?}");
        }
        assert!(metrics.encode().contains(&format!(
            "voice_worker_restarts_total{{worker=\"short\"}} {}",
            starts.len() - 1
        )));
    }

    #[tokio::test]
    async fn shutdown_stops_stages_in_order() {
        let mut supervisor = Supervisor::new(Arc::default(), Arc::new(Metrics::default()));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        // Registered in reverse, stopped in stage order; each stage takes a moment to stop.
        for stage in Stage::ALL.into_iter().rev() {
            let order = order.clone();
            supervisor.spawn(stage.as_str(), stage, move |stop: CancellationToken| {
                let order = order.clone();
                async move {
                    stop.cancelled().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    order.lock().unwrap().push(stage);
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        supervisor.shutdown().await;
        assert_eq!(*order.lock().unwrap(), Stage::ALL);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = quick();
        assert_eq!(b.after(b.initial), Duration::from_millis(400));
        assert_eq!(b.after(Duration::from_millis(400)), Duration::from_millis(400));
    }
}
