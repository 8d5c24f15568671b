//! The transport: accepting connections (Nagle off, request head deadline, idle timeout),
//! serving [`crate::app`] on them, and running the service's tasks under one supervisor from
//! start to an orderly shutdown.
pub mod drain;
pub mod head_deadline;
pub mod no_delay;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use poem::{
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    Server,
};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::shutdown::LINGER,
    state::AppState,
    worker::{
        self,
        supervisor::{Stage, Supervisor},
    },
};
pub use head_deadline::HeadDeadline;
pub use no_delay::NoDelay;

/// How long open connections get to finish at shutdown.
pub const GRACE: Duration = Duration::from_secs(10);

/// Serves `state` on its configured address until `shutdown` completes, with every task under
/// one supervisor: the server, the batch writer's lanes and the background workers (event
/// delivery, diagnostics flush, agent health checks). At shutdown the instance first drains
/// ([`drain::drain`]: `/readyz` answers 503, requests are still served, open media streams get
/// up to `VOICE_STREAM_DRAIN_TIMEOUT` to end); then the server stops accepting and lets
/// requests finish, the writer writes what is queued, the workers stop, and buffered
/// diagnostics are written a last time.
pub async fn serve(state: AppState, shutdown: impl Future<Output = ()> + Send) -> std::io::Result<()> {
    let acceptor = TcpListener::bind(state.config.http.bind.clone())
        .into_acceptor()
        .await?;
    for addr in acceptor.local_addr() {
        tracing::info!(address = %addr, public_url = %state.config.urls.public, "listening");
    }
    let mut supervisor = Supervisor::for_state(&state);
    start(&mut supervisor, acceptor, &state, Some(GRACE));
    worker::start_all(&mut supervisor, &state);
    shutdown.await;
    drain::drain(&state.runtime, state.config.media.drain_timeout, LINGER).await;
    supervisor.shutdown().await;
    // Diagnostics still buffered would otherwise be lost with the process.
    if let Err(e) = state.diagnostics.flush().await {
        tracing::warn!(error = %e, "writing diagnostics at shutdown failed");
    }
    Ok(())
}

/// Starts what answering requests needs under `supervisor`: the server on `acceptor` (giving
/// open connections `grace` at shutdown) and the batch writer's lanes. A server that stops on
/// its own is started again on the same address.
pub fn start(supervisor: &mut Supervisor, acceptor: TcpAcceptor, state: &AppState, grace: Option<Duration>) {
    let address: Option<SocketAddr> = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied());
    let mut first = Some(acceptor);
    let server_state = state.clone();
    supervisor.spawn("server", Stage::Server, move |stop: CancellationToken| {
        let state = server_state.clone();
        let acceptor = first.take();
        async move {
            let acceptor = match acceptor {
                Some(acceptor) => acceptor,
                None => match rebind(address, &state).await {
                    Ok(acceptor) => acceptor,
                    Err(e) => {
                        tracing::error!(error = %e, "binding the listener again failed");
                        return;
                    }
                },
            };
            if let Err(e) = serve_on(acceptor, state, stop.cancelled_owned(), grace).await {
                tracing::error!(error = %e, "server failed");
            }
        }
    });
    let writer = Arc::clone(&state.writer);
    supervisor.spawn("writer", Stage::Writer, move |stop| {
        let writer = writer.clone();
        async move { writer.run_lane(stop).await }
    });
}

/// A listener on the address the first one had, else on the configured one.
async fn rebind(address: Option<SocketAddr>, state: &AppState) -> std::io::Result<TcpAcceptor> {
    match address {
        Some(address) => TcpListener::bind(address).into_acceptor().await,
        None => {
            TcpListener::bind(state.config.http.bind.clone())
                .into_acceptor()
                .await
        }
    }
}

/// Serves [`crate::app`] on `acceptor` with the connection limits of the configuration (Nagle
/// off, request head deadline, idle timeout) until `shutdown` completes, then gives open
/// connections `grace` to finish.
pub async fn serve_on(
    acceptor: TcpAcceptor,
    state: AppState,
    shutdown: impl Future<Output = ()>,
    grace: Option<Duration>,
) -> std::io::Result<()> {
    let acceptor = HeadDeadline::new(NoDelay(acceptor), state.config.http.header_read_timeout);
    let endpoint = acceptor.watch(crate::app(state.clone()));
    Server::new_with_acceptor(acceptor)
        .idle_timeout(state.config.http.idle_timeout)
        .run_with_graceful_shutdown(endpoint, shutdown, grace)
        .await
}
