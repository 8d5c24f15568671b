//! `stateset-voice serve` runs its background workers and closes idle connections.
use std::time::{Duration, Instant};

use stateset_voice::{backend_test, db, testkit::*};
use tokio::{io::AsyncReadExt, net::TcpStream};

use crate::support::{self, Server, Webhook};

/// Bound of each wait.
const DEADLINE: Duration = Duration::from_secs(15);

backend_test!(serve_flushes_diagnostics_and_closes_idle_connections);
async fn serve_flushes_diagnostics_and_closes_idle_connections(fresh: FreshDatabase) {
    let url = fresh.process_url();
    support::seed(&url, None).await;
    let server = Server::start(
        &url,
        &[
            ("VOICE_DIAGNOSTICS_FLUSH_INTERVAL", "100ms"),
            ("VOICE_IDLE_TIMEOUT", "1"),
        ],
    )
    .await;

    // A forged webhook is counted in memory; the flush worker writes it.
    let mut forged = Webhook::incoming(&call_sid());
    forged.signature = "forged".to_owned();
    let (status, _) = forged
        .send(&support::client(), &server.base)
        .await
        .expect("answered");
    assert_eq!(status, 403);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let failures = db::diagnostics::list(
            &fresh.db,
            &db::Scope::Platform,
            Some(entity::states::DiagnosticKind::SignatureFailure),
            None,
            10,
        )
        .await
        .expect("diagnostics")
        .items;
        if failures.first().is_some_and(|d| d.count == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the signature failure was not written within {DEADLINE:?}: {failures:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A connection that never sends a byte is closed by the idle timeout.
    let mut tcp = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
        .await
        .expect("the server closes the idle connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
