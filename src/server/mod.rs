//! The transport: accepting connections (Nagle off, request head deadline, idle timeout) and
//! serving [`crate::app`] on them.
pub mod head_deadline;
pub mod no_delay;

use poem::{
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    Server,
};

use crate::{domain, state::AppState, worker};
pub use head_deadline::HeadDeadline;
pub use no_delay::NoDelay;

/// Serves `state` on its configured address, with the background workers (event delivery,
/// diagnostics flush, agent health checks), until `shutdown` completes.
pub async fn serve(
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TcpListener::bind(state.config.bind.clone())
        .into_acceptor()
        .await?;
    for addr in acceptor.local_addr() {
        tracing::info!(address = %addr, public_url = %state.config.public_url, "listening");
    }
    let workers = worker::spawn_all(state.clone());
    let served = serve_on(
        acceptor,
        state.clone(),
        shutdown,
        Some(std::time::Duration::from_secs(10)),
    )
    .await;
    drop(workers);
    // Diagnostics still buffered would otherwise be lost with the process.
    if let Err(e) = domain::alerts::flush(&state).await {
        tracing::warn!(error = %e, "writing diagnostics at shutdown failed");
    }
    served
}

/// Serves [`crate::app`] on `acceptor` with the connection limits of the configuration (Nagle off,
/// request head deadline, idle timeout) until `shutdown` completes, then gives open connections
/// `grace` to finish.
pub async fn serve_on(
    acceptor: TcpAcceptor,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let acceptor = HeadDeadline::new(NoDelay(acceptor), state.config.header_read_timeout);
    let endpoint = acceptor.watch(crate::app(state.clone()));
    Server::new_with_acceptor(acceptor)
        .idle_timeout(state.config.idle_timeout)
        .run_with_graceful_shutdown(endpoint, shutdown, grace)
        .await
}
