//! Runs the shutdown drain ([`crate::domain::shutdown::Drain`]) against this instance's
//! runtime: waits on the clock and on streams opening or ending, closes the streams still open
//! at the deadline, and logs the start and the end.
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{
    runtime::Runtime,
    shutdown::{Drain, Step, Summary},
};

/// Marks the instance as stopping (`/readyz` answers 503), lets open media streams end until
/// `timeout`, closes those still open, serves on for `linger` if it closed any, and returns
/// how it went. The server keeps accepting and answering meanwhile.
pub async fn drain(runtime: &Runtime, timeout: Duration, linger: Duration) -> Summary {
    runtime.begin_stopping();
    let started = Instant::now();
    let mut plan = Drain::new(started.into_std(), runtime.streams(), timeout, linger);
    let deadline = chrono::Utc::now() + chrono::Duration::from_std(timeout).unwrap_or_default();
    tracing::info!(
        open_streams = runtime.active_streams(),
        timeout = ?timeout,
        deadline = %deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "draining: /readyz answers 503; webhooks are still answered and open media streams go \
         on until the deadline"
    );
    loop {
        let changed = runtime.streams_changed();
        tokio::pin!(changed);
        // Registered before the counts are read, so a change in between is not missed.
        changed.as_mut().enable();
        match plan.next(Instant::now().into_std(), runtime.streams()) {
            Step::Wait { until } => {
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(Instant::from_std(until)) => {}
                }
            }
            Step::CloseStreams => {
                tracing::warn!(
                    open_streams = runtime.active_streams(),
                    "drain timeout passed: closing the open media streams (their callers get \
                     the fallback)"
                );
                runtime.close_streams();
            }
            Step::Done(summary) => {
                let Summary {
                    ended,
                    closed,
                    still_open,
                    elapsed,
                } = summary;
                tracing::info!(
                    ended_on_their_own = ended,
                    closed_at_deadline = closed,
                    still_open,
                    elapsed = ?elapsed,
                    "drain finished; stopping"
                );
                return summary;
            }
        }
    }
}
