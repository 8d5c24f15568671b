//! The span of each HTTP request, and its one `response` line (target [`ACCESS_TARGET`]).
//!
//! The span names the method and the path, never the query string or a stream token in the
//! path (`/media-stream/{token}`): stream tokens are credentials. It declares `call_sid`,
//! `tenant_id` and `route_id` empty; the webhook pipeline records them once a webhook is
//! authenticated (`Authenticated::record_in_span`), so every later line of the request,
//! the `response` line included, carries them.
use std::time::Instant;

use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use tracing::{field::Empty, Instrument};

/// The path as logged: the stream token of `/media-stream/{token}` is left out.
pub fn logged_path(path: &str) -> &str {
    if path.starts_with("/media-stream/") {
        "/media-stream/{token}"
    } else {
        path
    }
}

/// The target of the per-request lines: an access log, filtered on its own
/// (`VOICE_LOG=info,access=warn` leaves it out), and not by `stateset_voice=...`.
pub const ACCESS_TARGET: &str = "access";

/// Opens a span per request and logs its status and duration at the end.
pub struct RequestSpan;

impl<E: Endpoint> Middleware<E> for RequestSpan {
    type Output = RequestSpanEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestSpanEndpoint { inner }
    }
}

/// The endpoint [`RequestSpan`] wraps.
pub struct RequestSpanEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for RequestSpanEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = logged_path(req.uri().path()),
            remote_addr = %req.remote_addr(),
            call_sid = Empty,
            tenant_id = Empty,
            route_id = Empty,
        );
        async move {
            let started = Instant::now();
            let result = self.inner.call(req).await;
            let duration = started.elapsed();
            match result {
                Ok(response) => {
                    let response = response.into_response();
                    tracing::info!(target: ACCESS_TARGET, status = response.status().as_u16(), ?duration, "response");
                    Ok(response)
                }
                Err(err) => {
                    tracing::info!(target: ACCESS_TARGET, status = err.status().as_u16(), error = %err, ?duration, "error");
                    Err(err)
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tokens_in_paths_are_not_logged() {
        assert_eq!(
            logged_path("/media-stream/eyJhbGciOi.abc.def"),
            "/media-stream/{token}"
        );
        assert_eq!(logged_path("/media-stream"), "/media-stream");
        assert_eq!(logged_path("/api/v1/incoming-call"), "/api/v1/incoming-call");
    }
}
