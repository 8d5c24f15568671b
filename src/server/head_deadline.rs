//! The request head deadline: a connection whose request head has not fully arrived within the
//! configured time of its first byte is closed (slow-loris on headers). hyper's own header
//! timeout is out of reach through poem, so the connection's IO enforces it.
//!
//! Per connection: the deadline starts at the first byte of a request; it ends when hyper hands
//! the parsed request to the endpoint ([`Watched`] tells the IO), so bodies keep their own
//! deadline (408); the first byte written after that starts the response, and the next byte
//! read starts the next request's deadline (once more, from a later byte, if it passes: those
//! first bytes may be the rest of an unread body that hyper discards). A `101 Switching
//! Protocols` (WebSocket) or an HTTP/2 preface turns the deadline off for the connection.
//! Silence before a request is the idle timeout's.
use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use poem::{
    http::uri::Scheme,
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
    Endpoint, Request,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

/// Accepts connections whose request heads must arrive within `timeout` of their first byte.
/// Requests must reach the endpoint through [`HeadDeadline::watch`].
pub struct HeadDeadline<A> {
    inner: A,
    timeout: Duration,
    open: Registry,
}

impl<A> HeadDeadline<A> {
    /// Connections of `inner`, each request head limited to `timeout`.
    pub fn new(inner: A, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            open: Registry::default(),
        }
    }

    /// `endpoint`, telling each request's connection that its head was received.
    pub fn watch<E: Endpoint>(&self, endpoint: E) -> Watched<E> {
        Watched {
            inner: endpoint,
            open: self.open.clone(),
        }
    }
}

impl<A: Acceptor<Io = TcpStream>> Acceptor for HeadDeadline<A> {
    type Io = DeadlineIo<TcpStream>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        // The connection's own address (not the listener's, which may be a wildcard) makes
        // (local, remote) unique among open connections.
        let local = io.local_addr().map_or(local, |a| LocalAddr(a.into()));
        let io = match (local.as_socket_addr(), remote.as_socket_addr()) {
            (Some(l), Some(r)) => DeadlineIo::new(io, self.timeout, Some(self.open.register((*l, *r)))),
            _ => DeadlineIo::off(io),
        };
        Ok((io, local, remote, scheme))
    }
}

/// An endpoint that reports each request it receives to its connection's [`DeadlineIo`].
pub struct Watched<E> {
    inner: E,
    open: Registry,
}

impl<E: Endpoint> Endpoint for Watched<E> {
    type Output = E::Output;

    fn call(&self, req: Request) -> impl Future<Output = poem::Result<Self::Output>> + Send {
        if let (Some(l), Some(r)) = (
            req.local_addr().as_socket_addr(),
            req.remote_addr().as_socket_addr(),
        ) {
            self.open.head_received((*l, *r));
        }
        self.inner.call(req)
    }
}

type Key = (SocketAddr, SocketAddr);

/// Open connections by (local, remote) address, each with its "a head was received" flag.
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<HashMap<Key, Arc<AtomicBool>>>>);

impl Registry {
    fn register(&self, key: Key) -> Registration {
        let flag = Arc::new(AtomicBool::new(false));
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, flag.clone());
        Registration {
            open: self.clone(),
            key,
            flag,
        }
    }

    fn head_received(&self, key: Key) {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flag) = open.get(&key) {
            flag.store(true, Ordering::Release);
        }
    }
}

/// A connection's entry in the [`Registry`], removed when the connection is dropped.
struct Registration {
    open: Registry,
    key: Key,
    flag: Arc<AtomicBool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.open.0.lock().unwrap_or_else(PoisonError::into_inner);
        if open.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flag)) {
            open.remove(&self.key);
        }
    }
}

/// Where a connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No byte of the next request read yet. After a response, the first bytes read may still be
    /// the unread rest of the previous request's body that hyper discards.
    Waiting { after_response: bool },
    /// Reading a request head since its first byte. A lenient head (the first after a response)
    /// that runs out of time starts over once, with the next byte, instead of being cut off.
    Head { lenient: bool },
    /// hyper handed the request to the endpoint: no deadline until the response starts.
    Handling,
    /// Switched protocols or HTTP/2: no deadline for good.
    Off,
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's IO, enforcing the request head deadline on reads.
pub struct DeadlineIo<T> {
    inner: T,
    timeout: Duration,
    phase: Phase,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Set (through the registry) when hyper handed a request to the endpoint.
    head_received: Arc<AtomicBool>,
    _registration: Option<Registration>,
    /// Bytes of the HTTP/2 preface matched at the start of the connection, until it is decided.
    preface: Option<usize>,
    /// Bytes of interim (1xx) response heads classified but not yet written.
    interim_left: usize,
}

impl<T> DeadlineIo<T> {
    fn new(inner: T, timeout: Duration, registration: Option<Registration>) -> Self {
        let head_received = registration
            .as_ref()
            .map_or_else(|| Arc::new(AtomicBool::new(false)), |r| r.flag.clone());
        Self {
            inner,
            timeout,
            phase: Phase::Waiting {
                after_response: false,
            },
            deadline: None,
            head_received,
            _registration: registration,
            preface: Some(0),
            interim_left: 0,
        }
    }

    /// A connection requests cannot be reported for: no deadline.
    fn off(inner: T) -> Self {
        let mut io = Self::new(inner, Duration::ZERO, None);
        io.phase = Phase::Off;
        io
    }

    /// Takes a pending "head received" report.
    fn sync(&mut self) {
        if self.phase != Phase::Off
            && self.head_received.load(Ordering::Relaxed)
            && self.head_received.swap(false, Ordering::Acquire)
        {
            self.phase = Phase::Handling;
            self.preface = None;
            self.interim_left = 0;
        }
    }

    /// Whether the running head deadline has passed; registers the waker when it has not.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    fn on_read(&mut self, bytes: &[u8]) {
        if let Some(matched) = self.preface {
            let n = bytes.len().min(H2_PREFACE.len() - matched);
            self.preface = if bytes[..n] != H2_PREFACE[matched..matched + n] {
                None
            } else if matched + n == H2_PREFACE.len() {
                self.phase = Phase::Off;
                None
            } else {
                Some(matched + n)
            };
        }
        if let Phase::Waiting { after_response } = self.phase {
            self.phase = Phase::Head {
                lenient: after_response,
            };
            let at = Instant::now() + self.timeout;
            match &mut self.deadline {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
    }

    /// Called before bytes are offered to the socket, where a response may start. Returns the
    /// bytes of interim heads at the start of `bufs` when only those were seen.
    fn before_write(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<usize> {
        self.sync();
        if self.phase != Phase::Handling {
            return None;
        }
        let mut start = [0u8; 128];
        let len = gather(bufs, self.interim_left, &mut start);
        match classify(&start[..len]) {
            Written::Interim(n) => return Some(self.interim_left + n),
            Written::Switching => self.phase = Phase::Off,
            Written::Response => self.phase = Phase::Waiting { after_response: true },
        }
        self.interim_left = 0;
        None
    }

    fn after_write(&mut self, interim: Option<usize>, written: usize) {
        if let Some(interim) = interim {
            self.interim_left = interim.saturating_sub(written);
        }
    }
}

/// Copies up to `out.len()` bytes of `bufs`, skipping the first `skip`; returns the count.
fn gather(bufs: &[io::IoSlice<'_>], mut skip: usize, out: &mut [u8]) -> usize {
    let mut len = 0;
    for buf in bufs {
        let buf: &[u8] = buf;
        let rest = &buf[skip.min(buf.len())..];
        skip -= buf.len() - rest.len();
        let n = rest.len().min(out.len() - len);
        out[len..len + n].copy_from_slice(&rest[..n]);
        len += n;
        if len == out.len() {
            break;
        }
    }
    len
}

/// What the first bytes written for a request begin.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Only interim (1xx) response heads, such as `100 Continue`, of this many bytes.
    Interim(usize),
    /// A `101 Switching Protocols` response.
    Switching,
    /// A final response (or anything unrecognised).
    Response,
}

fn classify(mut bytes: &[u8]) -> Written {
    let mut interim = 0;
    loop {
        if bytes.is_empty() {
            return Written::Interim(interim);
        }
        if bytes.starts_with(b"HTTP/1.1 101 ") {
            return Written::Switching;
        }
        if !bytes.starts_with(b"HTTP/1.1 1") {
            return Written::Response;
        }
        match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => {
                interim += end + 4;
                bytes = &bytes[end + 4..];
            }
            None => return Written::Response,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sync();
        if let Phase::Head { lenient } = this.phase {
            if this.expired(cx) {
                if !lenient {
                    tracing::debug!(
                        timeout_ms = this.timeout.as_millis() as u64,
                        "closing a connection whose request head did not arrive in time"
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received in time",
                    )));
                }
                this.phase = Phase::Waiting {
                    after_response: false,
                };
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.phase != Phase::Off && buf.filled().len() > before {
            this.on_read(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let interim = this.before_write(&[io::IoSlice::new(buf)]);
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.after_write(interim, written);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let interim = this.before_write(bufs);
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.after_write(interim, written);
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const LIMIT: Duration = Duration::from_millis(100);

    /// A server-side IO with the deadline and the client end of its connection.
    fn connection() -> (DeadlineIo<DuplexStream>, DuplexStream, Arc<AtomicBool>) {
        let (server, client) = duplex(4096);
        let io = DeadlineIo::new(server, LIMIT, None);
        let flag = io.head_received.clone();
        (io, client, flag)
    }

    async fn read(io: &mut DeadlineIo<DuplexStream>) -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 256];
        let n = io.read(&mut buf).await?;
        Ok(buf[..n].to_vec())
    }

    /// Reads once, expecting the deadline to cut the connection; returns how long it took.
    async fn cut_off(io: &mut DeadlineIo<DuplexStream>) -> Duration {
        let started = StdInstant::now();
        let e = tokio::time::timeout(Duration::from_secs(5), read(io))
            .await
            .expect("the deadline fires while the client is silent")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        started.elapsed()
    }

    /// Expects a read to still be waiting well after the limit.
    async fn not_cut_off(io: &mut DeadlineIo<DuplexStream>) {
        assert!(
            tokio::time::timeout(LIMIT * 3, read(io)).await.is_err(),
            "no deadline applies"
        );
    }

    #[tokio::test]
    async fn a_head_that_stops_is_cut_off_from_its_first_byte() {
        let (mut io, mut client, _) = connection();
        not_cut_off(&mut io).await;
        client.write_all(b"POST / HTTP/1.1\r\nHo").await.unwrap();
        assert_eq!(read(&mut io).await.unwrap(), b"POST / HTTP/1.1\r\nHo");
        let deadline = io.deadline.as_ref().unwrap().deadline();
        // More bytes do not restart the deadline.
        tokio::time::sleep(LIMIT / 2).await;
        client.write_all(b"s").await.unwrap();
        assert_eq!(read(&mut io).await.unwrap(), b"s");
        assert_eq!(io.deadline.as_ref().unwrap().deadline(), deadline);
        cut_off(&mut io).await;
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn a_received_head_ends_the_deadline_until_the_response() {
        let (mut io, mut client, head_received) = connection();
        client.write_all(b"POST / HTTP/1.1\r\n\r\nab").await.unwrap();
        read(&mut io).await.unwrap();
        head_received.store(true, Ordering::Release);
        // A slow body is the endpoint's to time out.
        not_cut_off(&mut io).await;
        client.write_all(b"cd").await.unwrap();
        assert_eq!(read(&mut io).await.unwrap(), b"cd");
        not_cut_off(&mut io).await;
        // The response, then the next request's head is timed again.
        io.write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(io.phase, Phase::Waiting { after_response: true });
        client.write_all(b"GET").await.unwrap();
        read(&mut io).await.unwrap();
        // The first head after a response may have begun with the rest of an unread body:
        // it gets one more period, from its next byte.
        not_cut_off(&mut io).await;
        client.write_all(b" /").await.unwrap();
        read(&mut io).await.unwrap();
        let elapsed = cut_off(&mut io).await;
        assert!(elapsed >= LIMIT / 2, "{elapsed:?}");
    }

    #[tokio::test]
    async fn switching_protocols_ends_the_deadline_for_good() {
        let (mut io, mut client, head_received) = connection();
        client
            .write_all(b"GET /media-stream HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        read(&mut io).await.unwrap();
        head_received.store(true, Ordering::Release);
        io.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(io.phase, Phase::Off);
        for _ in 0..3 {
            client.write_all(b"\x81\x02hi").await.unwrap();
            read(&mut io).await.unwrap();
            not_cut_off(&mut io).await;
        }
    }

    #[tokio::test]
    async fn an_http2_preface_ends_the_deadline_across_reads() {
        let (mut io, mut client, _) = connection();
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        read(&mut io).await.unwrap();
        assert_eq!(io.phase, Phase::Head { lenient: false });
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        client.write_all(b"\0\0\0\x04\0\0\0\0\0").await.unwrap();
        read(&mut io).await.unwrap();
        assert_eq!(io.phase, Phase::Off);
        not_cut_off(&mut io).await;

        // An HTTP/1 head that starts like the preface is timed.
        let (mut io, mut client, _) = connection();
        client.write_all(b"PR").await.unwrap();
        read(&mut io).await.unwrap();
        client.write_all(b"I * HTTP/1.1\r\n").await.unwrap();
        read(&mut io).await.unwrap();
        assert_eq!(io.preface, None);
        cut_off(&mut io).await;
    }

    #[tokio::test]
    async fn interim_responses_are_followed_across_partial_writes() {
        // Writes of at most 7 bytes split `100 Continue` and the status line that follows.
        let (server, mut client) = duplex(7);
        let mut io = DeadlineIo::new(server, LIMIT, None);
        io.head_received.store(true, Ordering::Release);
        let drain = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        assert_eq!(io.phase, Phase::Handling);
        let answer = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let mut written = 0;
        while written < answer.len() {
            written += io.write(&answer[written..]).await.unwrap();
            assert_eq!(io.phase, Phase::Off);
        }
        io.shutdown().await.unwrap();
        drop(io);
        assert!(drain.await.unwrap().ends_with(answer));
    }

    #[test]
    fn classifies_how_a_response_starts() {
        assert_eq!(classify(b"HTTP/1.1 200 OK\r\n"), Written::Response);
        assert_eq!(classify(b"HTTP/1.0 101 x\r\n"), Written::Response);
        assert_eq!(
            classify(b"HTTP/1.1 101 Switching Protocols\r\n"),
            Written::Switching
        );
        assert_eq!(classify(b"HTTP/1.1 100 Continue\r\n\r\n"), Written::Interim(25));
        assert_eq!(classify(b""), Written::Interim(0));
        assert_eq!(
            classify(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\n"),
            Written::Response
        );
        assert_eq!(
            classify(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n"),
            Written::Switching
        );
        // An interim head cut short is not trusted to be one.
        assert_eq!(classify(b"HTTP/1.1 100 Cont"), Written::Response);
    }

    #[test]
    fn gathers_the_start_of_vectored_writes() {
        let bufs = [
            io::IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n"),
            io::IoSlice::new(b""),
            io::IoSlice::new(b"HTTP/1.1 101 "),
            io::IoSlice::new(b"Switching Protocols\r\n\r\n"),
        ];
        let mut out = [0u8; 17];
        let n = gather(&bufs, 21, &mut out);
        assert_eq!(&out[..n], b"\r\n\r\nHTTP/1.1 101 ");
        let mut out = [0u8; 128];
        let n = gather(&bufs, 25, &mut out);
        assert_eq!(classify(&out[..n]), Written::Switching);
        assert_eq!(gather(&bufs, 1000, &mut out), 0);
    }
}
