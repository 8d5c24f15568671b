//! A TCP proxy in front of the test database that can be cut: every open connection dropped
//! and new ones closed at once (what a failover or a network blip looks like to the service),
//! or stalled: bytes held, nothing closed (a network dropping packets); then healed. No root
//! needed.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

/// A cuttable TCP proxy to one upstream address.
pub struct DbProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stalled: tokio::sync::watch::Sender<bool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl DbProxy {
    /// A proxy on a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let (stalled, _) = tokio::sync::watch::channel(false);
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, connections, stalled) = (cut.clone(), connections.clone(), stalled.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(pipe(client, upstream, stalled.subscribe()));
                    let mut open = connections.lock().unwrap_or_else(PoisonError::into_inner);
                    open.retain(|c| !c.is_finished());
                    open.push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            cut,
            stalled,
            connections,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and closes new ones until [`DbProxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let open = std::mem::take(&mut *self.connections.lock().unwrap_or_else(PoisonError::into_inner));
        for connection in open {
            connection.abort();
        }
    }

    /// Holds every byte in both directions, closing nothing, until [`DbProxy::heal`]; then
    /// the held bytes go through.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Lets connections (and held bytes) through again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.stalled.send_replace(false);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pipe(client: TcpStream, upstream: SocketAddr, stalled: tokio::sync::watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        forward(client_read, server_write, stalled.clone()),
        forward(server_read, client_write, stalled),
    );
}

/// Copies `from` to `to`, holding what it read while stalled.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stalled.wait_for(|stalled| !stalled).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
