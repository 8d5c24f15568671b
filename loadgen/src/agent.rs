//! A remote voice agent for the stream benchmark, written against the Twilio Media Streams
//! protocol as agents see it: it waits for `start`, takes its `streamSid`, and plays every
//! inbound `media` payload back. Other events (including a private hello some bridges send
//! first) are ignored. One task per connection.
use std::borrow::Cow;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

/// The fields of a Twilio message the agent reads.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "streamSid", borrow, default)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    media: Option<Media<'a>>,
}

#[derive(Deserialize)]
struct Media<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

/// Accepts connections on `bind` until the process ends.
pub async fn serve(bind: &str) {
    let listener = TcpListener::bind(bind).await.expect("bind the agent");
    eprintln!(
        "agent listening on {}",
        listener.local_addr().expect("agent address")
    );
    accept(listener).await;
}

/// Runs one call task per accepted connection, forever.
async fn accept(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                tokio::spawn(call(socket));
            }
            // Out of file descriptors or similar: back off instead of spinning.
            Err(e) => {
                eprintln!("agent accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One call: echo media until `stop` or the bridge closes the socket.
async fn call(socket: TcpStream) {
    let _ = socket.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
        return;
    };
    let mut stream_sid: Option<String> = None;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            if message.is_close() {
                return;
            }
            continue;
        };
        let Ok(event) = serde_json::from_str::<Event>(&text) else {
            continue;
        };
        match event.event.as_ref() {
            "start" => stream_sid = event.stream_sid.map(Cow::into_owned),
            "media" => {
                let Some(media) = event.media else { continue };
                // A bridge that does not forward `start` still names the stream on each frame.
                let sid = stream_sid
                    .as_deref()
                    .or(event.stream_sid.as_deref())
                    .unwrap_or_default();
                let reply = serde_json::json!({
                    "event": "media",
                    "streamSid": sid,
                    "media": {"payload": media.payload},
                });
                if ws.send(Message::text(reply.to_string())).await.is_err() {
                    return;
                }
            }
            "stop" => {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "stream stopped".into(),
                    }))
                    .await;
                // Read on until the bridge acknowledges the close or goes away.
                let drain = async { while let Some(Ok(_)) = ws.next().await {} };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connect(
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(accept(listener));
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }

    async fn next_text(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ) -> serde_json::Value {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("an answer in time")
            .expect("open socket")
            .expect("a frame");
        serde_json::from_str(message.to_text().expect("a text frame")).unwrap()
    }

    #[tokio::test]
    async fn echoes_media_with_the_stream_sid_of_start_and_ends_on_stop() {
        let mut ws = connect().await;
        for frame in [
            r#"{"event":"call","call":{"call_sid":"CA1"}}"#,
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
            r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"callSid":"CA1"}}"#,
            "not json",
            r#"{"event":"media","streamSid":null,"media":{"track":"inbound","payload":"AAEC"}}"#,
        ] {
            ws.send(Message::text(frame)).await.unwrap();
        }
        let echo = next_text(&mut ws).await;
        assert_eq!(
            echo,
            serde_json::json!({"event": "media", "streamSid": "MZ1", "media": {"payload": "AAEC"}})
        );
        ws.send(Message::text(r#"{"event":"stop","streamSid":"MZ1"}"#))
            .await
            .unwrap();
        let close = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a close in time");
        match close {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected a normal close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn without_start_echoes_with_the_frame_stream_sid() {
        let mut ws = connect().await;
        ws.send(Message::text(
            r#"{"event":"media","streamSid":"MZ2","media":{"payload":"/w=="}}"#,
        ))
        .await
        .unwrap();
        let echo = next_text(&mut ws).await;
        assert_eq!(echo["streamSid"], "MZ2");
        assert_eq!(echo["media"]["payload"], "/w==");
    }
}
