//! Log output: the filter (`VOICE_LOG`) and the format (`VOICE_LOG_FORMAT`), installed once at
//! start.
//!
//! In JSON every line is one object: the event's fields at the top level beside `timestamp`,
//! `level`, `target` and `message`, the innermost span as `span` and every open span as
//! `spans`. The request span (see `api::request_span`) and the media stream span carry
//! `call_sid`, `tenant_id` and `route_id` once they are known, so each line about a call can be
//! found by them.
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when `VOICE_LOG` is unset or unreadable.
const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber writing to standard error in `format`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("VOICE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_ansi(false)
            .init(),
    }
}
