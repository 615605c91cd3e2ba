//! A small Socket.IO v5 (engine.io v4) client over a real WebSocket, enough to drive
//! livebase the way socket.io-client does: handshake auth, events, acks, pings.
//!
//! Negative assertions do not rely on sleeping: `TestApp::barrier` emits a marker to
//! every authenticated socket after the event under test was delivered to someone, and
//! since one socket's events arrive in order, whatever a socket got before the marker is
//! everything it will ever get of that event.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::common::TestApp;

/// How long a test waits for something that must happen.
pub const PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub enum Incoming {
    /// An event with all its arguments.
    Event(String, Vec<Value>),
    /// The server ended the namespace (`41`) or the connection closed.
    Closed,
}

pub struct Sio {
    pub sid: String,
    out: mpsc::UnboundedSender<Message>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    buffered: VecDeque<Incoming>,
    acks: Arc<Mutex<HashMap<i64, oneshot::Sender<Vec<Value>>>>>,
    next_ack: AtomicI64,
}

/// The WebSocket URL of a test server.
pub fn ws_url(base: &str, eio: u8) -> String {
    format!(
        "{}/socket.io/?EIO={eio}&transport=websocket",
        base.replacen("http://", "ws://", 1)
    )
}

impl Sio {
    /// Connects to namespace `/` with an optional handshake `auth`; `Err` carries the
    /// `connect_error` message.
    pub async fn connect(base: &str, auth: Option<Value>) -> Result<Sio, String> {
        Sio::connect_request(base, "", &[], auth).await
    }

    /// As `connect`, with `query` appended to the handshake URL (`&token=…`) and
    /// `headers` on the handshake request, as sails.io.js-era clients authenticate.
    pub async fn connect_request(
        base: &str,
        query: &str,
        headers: &[(&str, &str)],
        auth: Option<Value>,
    ) -> Result<Sio, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{}{query}", ws_url(base, 4))
            .into_client_request()
            .map_err(|e| format!("request: {e}"))?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                value.parse().unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("websocket: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let open = next_text(&mut stream)
            .await
            .ok_or("no engine.io open packet")?;
        assert!(open.starts_with('0'), "engine.io open packet: {open}");
        let connect = match &auth {
            Some(a) => format!("40{a}"),
            None => "40".to_string(),
        };
        sink.send(Message::Text(connect.into())).await.unwrap();
        let answer = loop {
            let text = next_text(&mut stream).await.ok_or("no connect answer")?;
            if text == "2" {
                sink.send(Message::Text("3".into())).await.unwrap();
            } else {
                break text;
            }
        };
        let sid = if let Some(body) = answer.strip_prefix("40") {
            let body: Value = serde_json::from_str(body).unwrap();
            body["sid"].as_str().unwrap().to_string()
        } else if let Some(body) = answer.strip_prefix("44") {
            let body: Value = serde_json::from_str(body).unwrap();
            return Err(body["message"].as_str().unwrap_or("").to_string());
        } else {
            panic!("unexpected connect answer {answer}");
        };

        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let acks: Arc<Mutex<HashMap<i64, oneshot::Sender<Vec<Value>>>>> = Arc::default();
        let (pong, reader_acks) = (out.clone(), acks.clone());
        tokio::spawn(async move {
            while let Some(text) = next_text(&mut stream).await {
                if text == "2" {
                    let _ = pong.send(Message::Text("3".into()));
                } else if text.starts_with("41") {
                    break;
                } else if let Some(rest) = text.strip_prefix("42") {
                    let (_, args) = split_ack_id(rest);
                    let mut args: Vec<Value> = serde_json::from_str(args).unwrap();
                    let name = args.remove(0).as_str().unwrap().to_string();
                    let _ = in_tx.send(Incoming::Event(name, args));
                } else if let Some(rest) = text.strip_prefix("43") {
                    let (id, args) = split_ack_id(rest);
                    let args: Vec<Value> = serde_json::from_str(args).unwrap();
                    if let Some(tx) = reader_acks.lock().await.remove(&id.unwrap()) {
                        let _ = tx.send(args);
                    }
                }
            }
            let _ = in_tx.send(Incoming::Closed);
        });
        Ok(Sio {
            sid,
            out,
            incoming,
            buffered: VecDeque::new(),
            acks,
            next_ack: AtomicI64::new(1),
        })
    }

    /// Connects with the handshake `auth: {token}`.
    pub async fn with_token(base: &str, token: &str) -> Sio {
        Sio::connect(base, Some(json!({ "token": token })))
            .await
            .expect("socket connects with a good token")
    }

    /// Sends a raw engine.io text frame.
    pub fn send_raw(&self, text: impl Into<String>) {
        let _ = self.out.send(Message::Text(text.into().into()));
    }

    /// `socket.emit(event, ...args)` without an ack.
    pub fn emit(&self, event: &str, args: &[Value]) {
        let mut packet = vec![json!(event)];
        packet.extend(args.iter().cloned());
        self.send_raw(format!("42{}", Value::Array(packet)));
    }

    /// `socket.emit(event, data, ack)`: the ack's first argument.
    pub async fn call(&self, event: &str, data: Value) -> Value {
        let id = self.next_ack.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.acks.lock().await.insert(id, tx);
        self.send_raw(format!("42{id}{}", json!([event, data])));
        let mut args = tokio::time::timeout(PATIENCE, rx)
            .await
            .unwrap_or_else(|_| panic!("no ack for `{event}`"))
            .expect("ack sender kept");
        args.remove(0)
    }

    pub async fn next(&mut self, wait: Duration) -> Option<Incoming> {
        if let Some(i) = self.buffered.pop_front() {
            return Some(i);
        }
        tokio::time::timeout(wait, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// The first argument of the next `event`; other events stay queued, in order.
    pub async fn expect(&mut self, event: &str) -> Value {
        self.try_expect(event, PATIENCE)
            .await
            .unwrap_or_else(|| panic!("socket {} never received `{event}`", self.sid))
    }

    pub async fn try_expect(&mut self, event: &str, wait: Duration) -> Option<Value> {
        let args = self.try_expect_args(event, wait).await?;
        Some(args.into_iter().next().unwrap_or(Value::Null))
    }

    /// Every argument of the next `event`; other events stay queued, in order.
    pub async fn expect_args(&mut self, event: &str) -> Vec<Value> {
        self.try_expect_args(event, PATIENCE)
            .await
            .unwrap_or_else(|| panic!("socket {} never received `{event}`", self.sid))
    }

    pub async fn try_expect_args(&mut self, event: &str, wait: Duration) -> Option<Vec<Value>> {
        let mut skipped = VecDeque::new();
        let deadline = tokio::time::Instant::now() + wait;
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Incoming::Event(name, args)) if name == event => break Some(args),
                Some(Incoming::Closed) => {
                    skipped.push_back(Incoming::Closed);
                    break None;
                }
                Some(other) => skipped.push_back(other),
                None => break None,
            }
        };
        skipped.extend(self.buffered.drain(..));
        self.buffered = skipped;
        found
    }

    /// Every event received up to the barrier `marker` (consumed), in order.
    pub async fn until_barrier(&mut self, marker: &str) -> Vec<(String, Vec<Value>)> {
        let mut seen = Vec::new();
        loop {
            match self.next(PATIENCE).await {
                Some(Incoming::Event(name, args)) => {
                    if name == "__barrier" && args.first() == Some(&json!(marker)) {
                        return seen;
                    }
                    seen.push((name, args));
                }
                Some(Incoming::Closed) => panic!("socket {} closed before the barrier", self.sid),
                None => panic!("socket {} never received barrier {marker}", self.sid),
            }
        }
    }

    /// Asserts no `event` reaches this (authenticated) socket before the next barrier.
    pub async fn assert_none(&mut self, app: &TestApp, event: &str) {
        let marker = app.barrier().await;
        let seen = self.until_barrier(&marker).await;
        let hits: Vec<_> = seen.iter().filter(|(name, _)| name == event).collect();
        assert!(
            hits.is_empty(),
            "socket {} must not receive `{event}`, got {hits:?}",
            self.sid
        );
    }

    /// Whether the server closes this socket within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Incoming::Closed) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    }

    /// Everything that arrives within `wait` (for unauthenticated sockets, which no
    /// barrier reaches).
    pub async fn drain(&mut self, wait: Duration) -> Vec<Incoming> {
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(i) => all.push(i),
                None => return all,
            }
        }
    }
}

/// Dropping a client closes its connection (the reader task alone would keep it open,
/// answering pings).
impl Drop for Sio {
    fn drop(&mut self) {
        let _ = self.out.send(Message::Close(None));
    }
}

impl TestApp {
    /// Sends a unique marker to every authenticated socket through the realtime layer
    /// and returns it (see `Sio::until_barrier`).
    pub async fn barrier(&self) -> String {
        static N: AtomicI64 = AtomicI64::new(0);
        let marker = format!("b{}", N.fetch_add(1, Ordering::SeqCst));
        self.state
            .realtime
            .emit_all("__barrier", &json!(marker))
            .await;
        marker
    }

    /// A socket authenticated with the handshake token of `user`.
    pub async fn socket(&self, token: &str) -> Sio {
        Sio::with_token(&self.base, token).await
    }
}

// Bare WebSocket connections, for tests that must control every frame (a client that
// stops reading, engine.io v3, connection slots freed by closing TCP).

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn raw_ws(base: &str, eio: u8) -> Ws {
    tokio_tungstenite::connect_async(ws_url(base, eio))
        .await
        .expect("websocket connects")
        .0
}

/// The next text frame, `None` if the connection closed or nothing came in time.
pub async fn next_frame(ws: &mut Ws, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string().into()))
        .await
        .expect("frame sent");
}

/// A Socket.IO v5 connection on a bare WebSocket, which closes its TCP connection when
/// dropped (unlike `Sio`, whose reader keeps answering pings).
pub async fn raw_v5(base: &str, auth: Value) -> Result<Ws, String> {
    let mut ws = raw_ws(base, 4).await;
    let open = next_frame(&mut ws, PATIENCE).await.expect("open packet");
    assert!(open.starts_with('0'), "engine.io open packet: {open}");
    send(&mut ws, &format!("40{auth}")).await;
    // engineioxide pings as soon as the connection opens; answer it like a client.
    let answer = loop {
        let frame = next_frame(&mut ws, PATIENCE).await.expect("connect answer");
        if frame == "2" {
            send(&mut ws, "3").await;
        } else {
            break frame;
        }
    };
    if answer.starts_with("40{") {
        Ok(ws)
    } else if let Some(body) = answer.strip_prefix("44") {
        let body: Value = serde_json::from_str(body).unwrap();
        Err(body["message"].as_str().unwrap_or("").to_string())
    } else {
        panic!("unexpected connect answer {answer}");
    }
}

/// `<digits>[...]` → (ack id, JSON array text).
fn split_ack_id(rest: &str) -> (Option<i64>, &str) {
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        (None, rest)
    } else {
        (rest[..digits].parse().ok(), &rest[digits..])
    }
}

async fn next_text<S>(stream: &mut S) -> Option<String>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// A Socket.IO v5 client on HTTP long-polling only (engine.io v4 polling, by hand), as
/// polling-only clients and clients behind WebSocket-blocking proxies connect.
pub struct Polling {
    client: reqwest::Client,
    url: String,
    /// The engine.io session id: this client's own credential for its session.
    pub sid: String,
}

/// The polling URL of a test server, for session `sid` if given.
pub fn polling_url(base: &str, sid: Option<&str>) -> String {
    match sid {
        Some(sid) => format!("{base}/socket.io/?EIO=4&transport=polling&sid={sid}"),
        None => format!("{base}/socket.io/?EIO=4&transport=polling"),
    }
}

impl Polling {
    /// Opens a session and connects namespace `/` with handshake `auth`.
    pub async fn connect(base: &str, auth: Value) -> Polling {
        let client = reqwest::Client::new();
        let open = get_text(&client, &polling_url(base, None)).await;
        let open: Value = serde_json::from_str(open.strip_prefix('0').expect("open packet"))
            .expect("open packet JSON");
        let sid = open["sid"].as_str().unwrap().to_string();
        let polling = Polling {
            client,
            url: polling_url(base, Some(&sid)),
            sid,
        };
        assert_eq!(polling.post(&format!("40{auth}")).await.0, 200);
        let answer = polling
            .next_packet(|p| p.starts_with("40") || p.starts_with("44"))
            .await;
        assert!(answer.starts_with("40"), "connect refused: {answer}");
        polling
    }

    /// POSTs one packet; the status and body.
    pub async fn post(&self, packet: &str) -> (u16, String) {
        post_polling(&self.client, &self.url, packet).await
    }

    /// Polls until a packet that `wanted` accepts arrives (answering pings meanwhile).
    pub async fn next_packet(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such packet in time"
            );
            let body = get_text(&self.client, &self.url).await;
            for packet in body.split('\u{1e}') {
                if packet == "2" {
                    self.post("3").await;
                } else if wanted(packet) {
                    return packet.to_string();
                }
            }
        }
    }
}

/// The body of a GET (a poll answers with its packets).
async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// POSTs `packet` to a polling URL as a client would; status and body.
pub async fn post_polling(client: &reqwest::Client, url: &str, packet: &str) -> (u16, String) {
    let response = client
        .post(url)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(packet.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Whether the server takes `sid` for a live session on either transport: a poll of an
/// unknown id answers engine.io's "Session ID unknown", anything else means the id names
/// a session (a WebSocket one answers "Bad request" for the transport mismatch); an
/// upgrade onto it answers the probe only for a live polling session.
pub async fn names_a_session(base: &str, sid: &str) -> bool {
    let client = reqwest::Client::new();
    let url = polling_url(base, Some(sid));
    let unknown = |body: &str| body.contains("Session ID unknown");
    // A post first: a poll of a live polling session would wait for its next packet.
    if !unknown(&post_polling(&client, &url, "3").await.1) {
        return true;
    }
    if !unknown(&get_text(&client, &url).await) {
        return true;
    }
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        base.replacen("http://", "ws://", 1)
    );
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return false;
    };
    if ws.send(Message::Text("2probe".into())).await.is_err() {
        return false;
    }
    next_frame(&mut ws, Duration::from_secs(1)).await.as_deref() == Some("3probe")
}
