//! Header floods and slow headers: clear errors or a closed connection, nothing stored, and the
//! service keeps answering; slow but timely heads, kept-alive connections and slow bodies are
//! unaffected by the head deadline.
use std::time::{Duration, Instant};

use entity::call;
use stateset_voice::{
    backend_test,
    testkit::*,
    twilio::signature::{self, Algorithm},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Bound of every exchange.
const DEADLINE: Duration = Duration::from_secs(10);

/// A complete, validly signed inbound-call request for `sid`, with `extra` header lines.
fn signed_request(app: &TestApp, sid: &str, extra: &str) -> Vec<u8> {
    let form = incoming_form(sid);
    let sig = signature::compute(
        Algorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        &app.public("/api/v1/incoming-call"),
        &form,
    );
    let body = form.encode();
    format!(
        "POST /api/v1/incoming-call HTTP/1.1\r\nHost: voice\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         X-Twilio-Signature: {sig}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` while reading, and returns everything received until the server closed
/// the connection. Write errors are expected: the server may stop reading early.
async fn exchange(app: &TestApp, request: Vec<u8>) -> String {
    let tcp = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connects");
    let (mut reader, mut writer) = tcp.into_split();
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read_all)
        .await
        .expect("the server answers and closes the connection");
    sending.abort();
    String::from_utf8_lossy(&received).into_owned()
}

backend_test!(header_floods_get_431_and_store_nothing);
async fn header_floods_get_431_and_store_nothing(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    // 10,000 small headers: over the limit of 100 header fields.
    let many: String = (0..10_000).map(|i| format!("X-Flood-{i}: v\r\n")).collect();
    let answer = exchange(&app, signed_request(&app, &sid, &many)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    // One 1 MB header: over the ~400 KB read buffer for a request head.
    let huge = format!("X-Huge: {}\r\n", "a".repeat(1024 * 1024));
    let answer = exchange(&app, signed_request(&app, &sid, &huge)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    assert_nothing_stored(&app).await;

    // The same call, without the flood, is answered and stored once.
    let res = app.incoming(&sid).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<Stream url="));
    assert_eq!(app.count(call::Entity).await, 1);
}

/// Reads until the server closes the connection; panics after [`DEADLINE`].
async fn closed_within_deadline(tcp: &mut (impl AsyncRead + Unpin)) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    (received, started.elapsed())
}

backend_test!(idle_connections_are_closed, |a| {
    a.idle_timeout = Duration::from_secs(1);
});
async fn idle_connections_are_closed(app: TestApp) {
    app.seed().await;
    let addr = app.base.trim_start_matches("http://");
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (received, elapsed) = closed_within_deadline(&mut silent).await;
    assert!(received.is_empty(), "{received:?}");
    assert!(
        elapsed >= Duration::from_millis(500),
        "closed at once: {elapsed:?}"
    );
    // A kept-alive connection after its answer, and one that then starts another request
    // head and goes silent: both are idle between requests.
    let sid = call_sid();
    for then in ["", "POST /api/v1/incoming-call HTTP/1.1\r\nHost: voice\r\nX-Slow"] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut request = signed_request(&app, &sid, "");
        request.extend_from_slice(then.as_bytes());
        tcp.write_all(&request).await.unwrap();
        let (received, _) = closed_within_deadline(&mut tcp).await;
        let answer = String::from_utf8_lossy(&received);
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    }
    assert_eq!(app.call(&sid).await.unwrap().attempts, 2);
    assert_eq!(app.count(call::Entity).await, 1);
}

/// The request head deadline of the tests below.
const HEAD_LIMIT: Duration = Duration::from_millis(500);

/// Sends `bytes` one at a time, `gap` apart, until the server stops taking them.
fn trickle(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    gap: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
        // Keep the connection open: only the server may close it.
        std::future::pending::<()>().await;
    })
}

/// Reads one response (head and `Content-Length` body) from a kept-alive connection.
async fn read_response(reader: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .expect("a content-length");
                if body.len() >= length {
                    return text;
                }
            }
            let n = reader.read(&mut buf).await.expect("reads");
            assert!(n > 0, "closed mid-response: {text:?}");
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("answered")
}

/// Splits `request` after its head, the head into `parts` pieces.
fn head_pieces(request: &[u8], parts: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let size = end.div_ceil(parts);
    (
        request[..end].chunks(size).map(<[u8]>::to_vec).collect(),
        request[end..].to_vec(),
    )
}

backend_test!(partial_first_request_head_is_cut_off, |a| {
    a.header_read_timeout = HEAD_LIMIT;
});
/// A client that sends part of the first request head on a connection and then goes silent or
/// trickles the rest (slow-loris on headers) is cut off once the head deadline passes, whatever
/// the idle timeout; nothing is answered or stored.
async fn partial_first_request_head_is_cut_off(app: TestApp) {
    app.seed().await;
    let addr = app.base.trim_start_matches("http://");
    let request = signed_request(&app, &call_sid(), "");
    let (head, _) = head_pieces(&request, 1);
    for trickled in [false, true] {
        let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
        writer.write_all(&head[0][..40]).await.unwrap();
        let rest = if trickled {
            head[0][40..].to_vec()
        } else {
            Vec::new()
        };
        let _sending = trickle(writer, rest, Duration::from_millis(50));
        let (received, elapsed) = closed_within_deadline(&mut reader).await;
        assert!(received.is_empty(), "{received:?}");
        assert!(
            elapsed >= HEAD_LIMIT - Duration::from_millis(100) && elapsed < HEAD_LIMIT * 6,
            "trickled={trickled}: {elapsed:?}"
        );
    }
    assert_nothing_stored(&app).await;
}

backend_test!(kept_alive_connections_time_each_head, |a| {
    a.header_read_timeout = HEAD_LIMIT;
});
/// A kept-alive connection's next request head is timed from its first byte: one that trickles
/// in is cut off (within twice the limit: its first bytes might have been the rest of an unread
/// body), one sent after a long pause is answered.
async fn kept_alive_connections_time_each_head(app: TestApp) {
    app.seed().await;
    let addr = app.base.trim_start_matches("http://");
    let sid = call_sid();
    let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
    writer.write_all(&signed_request(&app, &sid, "")).await.unwrap();
    assert!(read_response(&mut reader).await.starts_with("HTTP/1.1 200 "));
    // Idle between requests for longer than the head limit: the next request is answered.
    tokio::time::sleep(HEAD_LIMIT * 3).await;
    writer.write_all(&signed_request(&app, &sid, "")).await.unwrap();
    assert!(read_response(&mut reader).await.starts_with("HTTP/1.1 200 "));
    // A third request whose head trickles in is cut off.
    let (head, _) = head_pieces(&signed_request(&app, &sid, ""), 1);
    let _sending = trickle(writer, head[0].clone(), Duration::from_millis(50));
    let (received, elapsed) = closed_within_deadline(&mut reader).await;
    assert!(received.is_empty(), "{received:?}");
    assert!(elapsed >= HEAD_LIMIT && elapsed < HEAD_LIMIT * 6, "{elapsed:?}");
    assert_eq!(app.call(&sid).await.unwrap().attempts, 2);
    assert_eq!(app.count(call::Entity).await, 1);
}

backend_test!(slow_heads_within_the_limit_are_answered, |a| {
    a.header_read_timeout = Duration::from_secs(2);
});
/// Heads that arrive in slow pieces within the limit are answered, on a new connection and on a
/// kept-alive one.
async fn slow_heads_within_the_limit_are_answered(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    let (mut reader, mut writer) = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
        .into_split();
    for _ in 0..2 {
        let started = Instant::now();
        let (pieces, body) = head_pieces(&signed_request(&app, &sid, ""), 4);
        for piece in pieces {
            writer.write_all(&piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        writer.write_all(&body).await.unwrap();
        let answer = read_response(&mut reader).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(800));
    }
    assert_eq!(app.call(&sid).await.unwrap().attempts, 2);
}

backend_test!(slow_body_gets_408_despite_a_shorter_head_limit, |a| {
    a.header_read_timeout = Duration::from_millis(200);
    a.body_read_timeout = Duration::from_millis(1200);
});
/// The head deadline ends with the head: a body that stops arriving gets its 408 from the body
/// deadline, even when that is the longer one, also after a `100 Continue`.
async fn slow_body_gets_408_despite_a_shorter_head_limit(app: TestApp) {
    app.seed().await;
    for expect in ["", "Expect: 100-continue\r\n"] {
        let request = signed_request(&app, &call_sid(), expect);
        let (head, body) = head_pieces(&request, 1);
        let (mut reader, mut writer) = TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .unwrap()
            .into_split();
        writer.write_all(&head[0]).await.unwrap();
        let started = Instant::now();
        if !expect.is_empty() {
            let mut interim = [0u8; 25];
            reader.read_exact(&mut interim).await.unwrap();
            assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        // Half the body, then the rest a byte at a time, too slowly.
        writer.write_all(&body[..body.len() / 2]).await.unwrap();
        let _sending = trickle(
            writer,
            body[body.len() / 2..].to_vec(),
            Duration::from_millis(300),
        );
        let answer = read_response(&mut reader).await;
        assert!(answer.starts_with("HTTP/1.1 408 "), "{expect:?}: {answer}");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(1100), "{expect:?}: {elapsed:?}");
    }
    assert_nothing_stored(&app).await;
}
