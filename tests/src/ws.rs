//! A WebSocket test client with the assertions tests need: next event, no event, close code.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::PATIENCE;

/// Why a handshake failed.
pub type WsError = tokio_tungstenite::tungstenite::Error;

/// One client connection to the feed.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects to `url`, optionally sending an `Origin` header.
    pub async fn connect(url: &str, origin: Option<&str>) -> Result<WsClient, WsError> {
        match origin {
            Some(origin) => Self::connect_with(url, &[("Origin", origin)]).await,
            None => Self::connect_with(url, &[]).await,
        }
    }

    /// Connects to `url` with extra handshake headers (`X-Forwarded-For`, say).
    pub async fn connect_with(
        url: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<WsClient, WsError> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request
                .headers_mut()
                .append(*name, HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")));
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient { stream })
    }

    /// The next text message as JSON, answering nothing itself; panics on close or timeout.
    pub async fn next_json(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The next text message exactly as sent (to check key order, say).
    pub async fn next_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {PATIENCE:?}"))
                .unwrap_or_else(|| panic!("the server closed the stream"))
                .unwrap_or_else(|e| panic!("WebSocket error: {e}"));
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Close(frame) => panic!("closed by the server: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next message that is not a presence update.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let value = self.next_json().await;
            if value["event"] != "presence" {
                return value;
            }
        }
    }

    /// The next presence update.
    pub async fn next_presence(&mut self) -> u64 {
        loop {
            let value = self.next_json().await;
            if value["event"] == "presence" {
                return value["count"].as_u64().unwrap_or_else(|| panic!("bad presence: {value}"));
            }
        }
    }

    /// Waits until a presence update reports `count`.
    pub async fn wait_for_presence(&mut self, count: u64) {
        while self.next_presence().await != count {}
    }

    /// Asserts that nothing but presence updates arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    assert_eq!(value["event"], "presence", "unexpected message: {text}");
                }
                Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("stream ended: {other:?}"),
            }
        }
    }

    /// Sends a JSON text message.
    pub async fn send_json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    /// Sends a raw message.
    pub async fn send(&mut self, message: Message) {
        self.stream.send(message).await.unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// Reads until the server closes; returns the close code and reason (panics if the stream
    /// ends without a close frame or nothing happens in time).
    pub async fn close_code(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("no close frame within {PATIENCE:?}"),
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("error before a close frame: {e}"),
                Ok(None) => panic!("stream ended without a close frame"),
            }
        }
    }

    /// Post events received (skipping presence) until one has `seq`, in order.
    pub async fn events_until(&mut self, seq: i64) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event().await;
            let done = event["seq"].as_i64() == Some(seq);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// A client that completed the handshake with a tiny receive buffer and then stops reading:
/// the server's writes back up quickly, as with a stuck browser tab on a bad network.
pub struct StalledClient {
    stream: WebSocketStream<TcpStream>,
}

/// Connects a [`StalledClient`] to the feed on `port`.
pub async fn stalled_client(port: u16) -> StalledClient {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .unwrap_or_else(|e| panic!("{e}"));
    socket.set_recv_buffer_size(4096).unwrap_or_else(|e| panic!("{e}"));
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&address.into()).unwrap_or_else(|e| panic!("{e}"));
    socket.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
    let tcp = TcpStream::from_std(socket.into()).unwrap_or_else(|e| panic!("{e}"));
    let (stream, _) =
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/ws/blog/"), tcp)
            .await
            .unwrap_or_else(|e| panic!("handshake: {e}"));
    StalledClient { stream }
}

impl StalledClient {
    /// Starts reading at last: everything queued, then the close frame's code and reason
    /// (`None` if the connection ended without one).
    pub async fn drain_until_close(mut self) -> (Option<u16>, String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("neither closed nor finished within 30s"),
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return (Some(u16::from(frame.code)), frame.reason.to_string());
                }
                Ok(Some(Ok(Message::Close(None)))) => return (None, "close without a code".into()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return (None, format!("error: {e}")),
                Ok(None) => return (None, "ended without a close frame".into()),
            }
        }
    }
}
