//! StaticBackend's transports over real HTTP and WebSocket: `GET /sse/connect` with
//! `POST /sse/msg`, and the raw `/ws`, carrying `{sid, type, data, channel, token}`.
//! Both are bridged through sockets of the one namespace, so they share channels and
//! permission filtering with Socket.IO clients.
//!
//! Negative assertions use StaticBackend's own `echo` as the barrier: one connection's
//! messages arrive in order, so what it got before its echo answer is everything it
//! will get of an event that already reached another connection.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::start;
use super::support::rest_create;
use crate::common::{Spawn, TestApp, backends};
use crate::sio::{PATIENCE, Sio};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Transport {
    Sse,
    Ws,
}

pub(crate) const BOTH: [Transport; 2] = [Transport::Sse, Transport::Ws];

#[derive(Debug)]
enum Item {
    Message(Value),
    /// An SSE comment line (a heartbeat).
    Comment,
    Closed,
}

/// A StaticBackend client on either transport, as `@staticbackend/js` drives it.
pub(crate) struct Sb {
    transport: Transport,
    /// From `init`.
    sid: String,
    /// The token `token` answered, sent in every later envelope.
    token: Option<String>,
    incoming: mpsc::UnboundedReceiver<Item>,
    buffered: VecDeque<Item>,
    base: String,
    client: reqwest::Client,
    ws_out: Option<mpsc::UnboundedSender<Message>>,
    markers: u64,
    /// The reader tasks, which hold the connection: dropping the client ends them.
    tasks: Vec<tokio::task::AbortHandle>,
    /// The last SSE `id:` received, as EventSource keeps it.
    last_event_id: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Drop for Sb {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Sb {
    /// Connects and reads `init`.
    async fn connect(app: &TestApp, transport: Transport) -> Sb {
        Sb::connect_to(&app.base, transport).await
    }

    /// Connects to the server at `base` and reads `init`.
    pub(crate) async fn connect_to(base: &str, transport: Transport) -> Sb {
        Sb::connect_resuming(base, transport, None).await
    }

    /// Connects as an EventSource that reconnects does, sending `Last-Event-ID`.
    async fn connect_resuming(base: &str, transport: Transport, last_event_id: Option<&str>) -> Sb {
        let mut sb = Sb::open_with(base, &reqwest::Client::new(), transport, last_event_id).await;
        let init = sb.next_message().await.expect("init arrives");
        assert_eq!(init["type"], json!("init"), "{init}");
        for field in ["sid", "type", "data", "channel", "token"] {
            assert!(init.get(field).is_some(), "init has `{field}`: {init}");
        }
        sb.sid = init["data"].as_str().expect("init carries the sid").into();
        assert!(sb.sid.len() >= 16, "a sid of enough randomness: {init}");
        sb
    }

    /// Opens the connection and reads nothing.
    async fn open(app: &TestApp, transport: Transport) -> Sb {
        Sb::open_at(&app.base, &app.client, transport).await
    }

    async fn open_at(base: &str, client: &reqwest::Client, transport: Transport) -> Sb {
        Sb::open_with(base, client, transport, None).await
    }

    async fn open_with(
        base: &str,
        client: &reqwest::Client,
        transport: Transport,
        last_event_id: Option<&str>,
    ) -> Sb {
        let (tx, incoming) = mpsc::unbounded_channel();
        let mut ws_out = None;
        let mut tasks = Vec::new();
        let seen_id = std::sync::Arc::new(std::sync::Mutex::new(None));
        match transport {
            Transport::Sse => {
                let mut request = client.get(format!("{base}/sse/connect?sbpk=any"));
                if let Some(id) = last_event_id {
                    request = request.header("Last-Event-ID", id);
                }
                let mut response = request.send().await.expect("SSE connects");
                assert_eq!(response.status().as_u16(), 200);
                let kind = response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .to_string();
                assert!(kind.starts_with("text/event-stream"), "{kind}");
                let seen = seen_id.clone();
                let task = tokio::spawn(async move {
                    let mut text = String::new();
                    while let Ok(Some(chunk)) = response.chunk().await {
                        text.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(end) = text.find("\n\n") {
                            let block: String = text.drain(..end + 2).collect();
                            for line in block.lines() {
                                if let Some(id) = line.strip_prefix("id: ") {
                                    *seen.lock().unwrap() = Some(id.to_string());
                                    continue;
                                }
                                let item = if let Some(data) = line.strip_prefix("data: ") {
                                    Item::Message(serde_json::from_str(data).unwrap())
                                } else if line.starts_with(':') {
                                    Item::Comment
                                } else {
                                    continue;
                                };
                                let _ = tx.send(item);
                            }
                        }
                    }
                    let _ = tx.send(Item::Closed);
                });
                tasks.push(task.abort_handle());
            }
            Transport::Ws => {
                let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
                let (ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("/ws connects");
                let (mut sink, mut stream) = ws.split();
                let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
                let writer = tokio::spawn(async move {
                    while let Some(m) = out_rx.recv().await {
                        if sink.send(m).await.is_err() {
                            break;
                        }
                    }
                });
                let reader = tokio::spawn(async move {
                    while let Some(Ok(m)) = stream.next().await {
                        match m {
                            Message::Text(t) => {
                                let _ = tx.send(Item::Message(serde_json::from_str(&t).unwrap()));
                            }
                            Message::Close(_) => break,
                            _ => {}
                        }
                    }
                    let _ = tx.send(Item::Closed);
                });
                ws_out = Some(out);
                tasks.push(writer.abort_handle());
                tasks.push(reader.abort_handle());
            }
        }
        Sb {
            transport,
            sid: String::new(),
            token: None,
            incoming,
            buffered: VecDeque::new(),
            base: base.to_string(),
            client: client.clone(),
            ws_out,
            markers: 0,
            tasks,
            last_event_id: seen_id,
        }
    }

    /// Sends an envelope as the client library does (sid and token included); for SSE
    /// the `POST /sse/msg` answer, for WS `(0, null)`.
    async fn send(&self, kind: &str, data: Value, channel: &str) -> (u16, Value) {
        let envelope = json!({ "sid": self.sid, "token": self.token, "type": kind,
                               "data": data, "channel": channel });
        self.send_raw(&envelope.to_string()).await
    }

    async fn send_raw(&self, body: &str) -> (u16, Value) {
        match self.transport {
            Transport::Sse => post(&self.client, &self.base, body).await,
            Transport::Ws => {
                let out = self.ws_out.as_ref().unwrap();
                let _ = out.send(Message::Text(body.to_string().into()));
                (0, Value::Null)
            }
        }
    }

    /// A command that must be accepted (`true` over SSE).
    pub(crate) async fn command(&self, kind: &str, data: Value, channel: &str) {
        let (status, body) = self.send(kind, data, channel).await;
        if self.transport == Transport::Sse {
            assert_eq!((status, &body), (200, &json!(true)), "{kind}");
        }
    }

    /// `auth` with `token` → `token` carrying it; afterwards envelopes carry it.
    pub(crate) async fn auth(&mut self, token: &str) {
        self.token = match self.transport {
            // connect() sets the token before it sends `auth`; connectWS after.
            Transport::Sse => Some(token.to_string()),
            Transport::Ws => None,
        };
        self.command("auth", json!(token), "").await;
        let got = self.expect("token").await;
        assert_eq!(got["data"], json!(token), "{got}");
        self.token = Some(token.to_string());
    }

    async fn next_item(&mut self, wait: Duration) -> Option<Item> {
        if let Some(item) = self.buffered.pop_front() {
            return Some(item);
        }
        tokio::time::timeout(wait, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message (heartbeats skipped); `None` if the stream closed.
    async fn next_message(&mut self) -> Option<Value> {
        loop {
            match self.next_item(PATIENCE).await {
                Some(Item::Message(m)) => return Some(m),
                Some(Item::Comment) => continue,
                Some(Item::Closed) | None => return None,
            }
        }
    }

    /// The next message of `kind`; others stay queued in order.
    pub(crate) async fn expect(&mut self, kind: &str) -> Value {
        let mut skipped = VecDeque::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_item(left).await {
                Some(Item::Message(m)) if m["type"] == json!(kind) => break Some(m),
                Some(Item::Closed) => {
                    skipped.push_back(Item::Closed);
                    break None;
                }
                Some(other) => skipped.push_back(other),
                None => break None,
            }
        };
        skipped.extend(self.buffered.drain(..));
        self.buffered = skipped;
        found.unwrap_or_else(|| panic!("{:?} client never received `{kind}`", self.transport))
    }

    /// Every message before the answer to a fresh `echo` (see the module doc).
    async fn until_echo(&mut self) -> Vec<Value> {
        self.markers += 1;
        let marker = format!("marker-{}", self.markers);
        self.command("echo", json!(marker), "").await;
        let mut seen = Vec::new();
        loop {
            match self.next_item(PATIENCE).await {
                Some(Item::Message(m)) => {
                    if m["type"] == json!("echo") && m["data"] == json!(format!("echo: {marker}")) {
                        return seen;
                    }
                    seen.push(m);
                }
                Some(Item::Comment) => continue,
                other => panic!("{:?} client: no echo, got {other:?}", self.transport),
            }
        }
    }

    async fn assert_none(&mut self, kind: &str, what: &str) {
        let seen = self.until_echo().await;
        let hits: Vec<_> = seen.iter().filter(|m| m["type"] == json!(kind)).collect();
        assert!(
            hits.is_empty(),
            "{what}: no `{kind}` expected, got {hits:?}"
        );
    }

    async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_item(left).await {
                Some(Item::Closed) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    }
}

async fn post(client: &reqwest::Client, base: &str, body: &str) -> (u16, Value) {
    let response = client
        .post(format!("{base}/sse/msg"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /sse/msg");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn message_of(body: &Value) -> &str {
    body["Message"]
        .as_str()
        .unwrap_or_else(|| panic!("a refusal is {{\"Message\": …}}: {body}"))
}

#[tokio::test]
async fn both_transports_speak_staticbackend_and_share_channels_with_socketio() {
    let backend = &backends()[0];
    let app = start(backend).await;
    let alice = app.user("alice@x.test", "User").await;
    let bob = app.user("bob@x.test", "User").await;
    for transport in BOTH {
        let what = format!("{transport:?}");
        let mut sb = Sb::connect(&app, transport).await;
        sb.auth(&alice.token).await;

        sb.command("echo", json!("hi"), "").await;
        assert_eq!(sb.expect("echo").await["data"], json!("echo: hi"), "{what}");

        sb.command("join", json!("room-1"), "").await;
        let joined = sb.expect("joined").await;
        assert_eq!(
            (&joined["data"], &joined["channel"]),
            (&json!("room-1"), &json!("room-1"))
        );

        // A Socket.IO member of the same channel sees the StaticBackend client's
        // message, and the other way round.
        let mut sio = app.socket(&bob.token).await;
        let sio_public = sio.call("join", json!("room-1")).await["sid"]
            .as_str()
            .unwrap()
            .to_string();
        sb.command("chan_in", json!("from sb"), "room-1").await;
        let ok = sb.expect("ok").await;
        assert_eq!(ok["channel"], json!("room-1"), "{ok}");
        let got = sio.expect("chan_out").await;
        assert_eq!(
            (&got["channel"], &got["data"]),
            (&json!("room-1"), &json!("from sb"))
        );
        let sender = got["sid"].as_str().unwrap().to_string();
        assert!(!sender.is_empty());
        assert_ne!(
            sender, sb.sid,
            "{what}: the init sid is never shown to others"
        );
        let own = sb.expect("chan_out").await;
        assert_eq!(own["data"], json!("from sb"));
        assert_eq!(
            own["sid"],
            json!(sender),
            "{what}: the sender sees its public id"
        );
        assert_eq!(
            own["token"],
            json!(""),
            "{what}: no token travels in chan_out"
        );

        sio.emit(
            "chan_in",
            &[json!({ "channel": "room-1", "data": { "n": 2 } })],
        );
        let got = sb.expect("chan_out").await;
        assert_eq!(
            (&got["channel"], &got["data"], &got["sid"]),
            (&json!("room-1"), &json!({ "n": 2 }), &json!(sio_public))
        );

        assert_eq!(sio.expect("chan_out").await["data"], json!({ "n": 2 }));
        // Not a member: nothing of room-2.
        sio.call("join", json!("room-2")).await;
        sio.emit("chan_in", &[json!({ "channel": "room-2", "data": "x" })]);
        assert_eq!(sio.expect("chan_out").await["channel"], json!("room-2"));
        sb.assert_none("chan_out", &what).await;

        // Publishing into a database channel is refused, and nobody receives it.
        sb.send("chan_in", json!("fake"), "db-posts").await;
        let refused = sb.expect("error").await;
        assert!(
            refused["data"].as_str().unwrap().contains("db-posts"),
            "{what}: {refused}"
        );
        sb.command("join", json!("db-posts"), "").await;
        sb.expect("joined").await;
        sb.send("chan_in", json!("fake"), "db-posts").await;
        sb.expect("error").await;
        sb.assert_none("chan_out", &what).await;
        sb.assert_none("db_created", &what).await;

        // An unknown type and a malformed envelope are answered with `error`.
        let (status, body) = sb.send("presence-ish", json!(""), "").await;
        assert!(
            sb.expect("error").await["data"]
                .as_str()
                .unwrap()
                .contains("presence-ish")
        );
        match transport {
            Transport::Sse => {
                assert_eq!(status, 400, "{body}");
                message_of(&body);
                let (status, body) = sb.send_raw("{not json").await;
                assert_eq!(status, 400, "{body}");
                assert!(message_of(&body).contains("envelope"), "{body}");
                let (status, body) = sb.send_raw(r#"{"sid": 5, "type": "echo"}"#).await;
                assert_eq!(status, 400, "{body}");
                message_of(&body);
            }
            Transport::Ws => {
                sb.send_raw("{not json").await;
                let got = sb.expect("error").await;
                assert!(got["data"].as_str().unwrap().contains("envelope"), "{got}");
            }
        }
        // Still working after all of it.
        sb.command("echo", json!("still"), "").await;
        assert_eq!(sb.expect("echo").await["data"], json!("echo: still"));
    }
}

#[tokio::test]
async fn db_events_reach_exactly_the_readers_socketio_would_reach() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        for transport in BOTH {
            let what = format!("{transport:?} on {}", backend.name());
            let mut sa = Sb::connect(&app, transport).await;
            let mut sb = Sb::connect(&app, transport).await;
            sa.auth(&alice.token).await;
            sb.auth(&bob.token).await;
            for s in [&mut sa, &mut sb] {
                for channel in ["db-notes", "db-posts"] {
                    s.command("join", json!(channel), "").await;
                    assert_eq!(s.expect("joined").await["channel"], json!(channel));
                }
            }
            // `notes` is owner-secured: alice's note reaches alice, never bob.
            let id = rest_create(&app, "notes", &alice.cred(), "alice's").await;
            let got = sa.expect("db_created").await;
            assert_eq!(got["channel"], json!("db-notes"), "{what}");
            let row: Value = serde_json::from_str(got["data"].as_str().expect("JSON text"))
                .expect("db rows travel as JSON text");
            assert_eq!(
                (row["id"].clone(), row["title"].clone()),
                (json!(id), json!("alice's"))
            );
            sb.assert_none("db_created", &what).await;

            let (status, _) = app
                .put(
                    &format!("/1/objects/notes/{id}"),
                    &alice.cred(),
                    json!({ "title": "v2" }),
                )
                .await;
            assert_eq!(status, 200);
            assert_eq!(sa.expect("db_updated").await["channel"], json!("db-notes"));
            let (status, _) = app
                .delete(&format!("/1/objects/notes/{id}"), &alice.cred())
                .await;
            assert_eq!(status, 200);
            let deleted = sa.expect("db_deleted").await;
            assert_eq!(deleted["data"], json!(id.to_string()), "{what}: {deleted}");
            let seen = sb.until_echo().await;
            assert!(
                !seen.iter().any(|m| m["channel"] == json!("db-notes")),
                "{what}: bob got nothing of alice's notes: {seen:?}"
            );

            // `posts` anyone may read: both get it.
            let id = rest_create(&app, "posts", &bob.cred(), "public").await;
            for s in [&mut sa, &mut sb] {
                let got = s.expect("db_created").await;
                assert_eq!(got["channel"], json!("db-posts"));
                assert!(
                    got["data"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("\"id\":{id}"))
                );
            }
        }
    }
}

#[tokio::test]
async fn a_sid_alone_acts_on_nothing() {
    let backend = &backends()[0];
    let app = start(backend).await;
    let alice = app.user("alice@x.test", "User").await;
    let mallory = app.user("mallory@x.test", "User").await;
    let mut victim = Sb::connect(&app, Transport::Sse).await;
    // Before `auth`, nothing but `auth` acts.
    let (status, body) = victim.send("join", json!("room"), "").await;
    assert_eq!(status, 401, "{body}");
    message_of(&body);
    victim.auth(&alice.token).await;
    victim.command("join", json!("room"), "").await;
    victim.expect("joined").await;
    let mut member = app.socket(&alice.token).await;
    member.call("join", json!("room")).await;

    let sid = victim.sid.clone();
    let forged = |kind: &str, token: Value, data: Value, channel: &str| {
        json!({ "sid": sid, "type": kind, "token": token, "data": data, "channel": channel })
            .to_string()
    };
    let cases = [
        ("another user's token", json!(mallory.token), 403),
        ("no token", Value::Null, 401),
        ("an empty token", json!(""), 401),
        ("a bad token", json!("not-a-token"), 401),
    ];
    for (what, token, expected) in cases {
        for (kind, data, channel) in [
            ("chan_in", json!("forged"), "room"),
            ("join", json!("db-notes"), ""),
            ("echo", json!("forged"), ""),
            ("leave", json!("room"), ""),
        ] {
            let (status, body) = post(
                &app.client,
                &app.base,
                &forged(kind, token.clone(), data, channel),
            )
            .await;
            assert_eq!(status, expected, "{what} {kind}: {body}");
            message_of(&body);
        }
        // Re-authenticating the sid as someone else is refused too.
        let (status, body) = post(
            &app.client,
            &app.base,
            &forged("auth", token.clone(), json!(mallory.token), ""),
        )
        .await;
        assert_eq!(status, 403, "{what} auth as mallory: {body}");
    }
    member.assert_none(&app, "chan_out").await;
    let seen = victim.until_echo().await;
    assert!(seen.is_empty(), "the victim's stream got nothing: {seen:?}");
    // Still alice's: her own messages work.
    victim.command("chan_in", json!("real"), "room").await;
    assert_eq!(member.expect("chan_out").await["data"], json!("real"));

    // Unknown and missing sids.
    let (status, body) = post(
        &app.client,
        &app.base,
        &json!({ "type": "echo", "sid": "nope",
        "token": alice.token })
        .to_string(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(
        &app.client,
        &app.base,
        &json!({ "type": "echo",
        "token": alice.token })
        .to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(message_of(&body).contains("sid"));
    // Too large a body.
    let huge = json!({ "sid": victim.sid, "type": "echo", "token": alice.token,
                       "data": "x".repeat(2 * 1024 * 1024) });
    let (status, body) = post(&app.client, &app.base, &huge.to_string()).await;
    assert_eq!(status, 413, "{body}");
    message_of(&body);
}

#[tokio::test]
async fn the_connection_limit_is_an_error_message_and_slots_come_back() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .config(|c| c.max_connections = 1)
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    for transport in BOTH {
        let first = app.socket(&alice.token).await;
        let mut refused = Sb::open(&app, transport).await;
        let got = refused.next_message().await.expect("an error message");
        assert_eq!(got["type"], json!("error"), "{transport:?}: {got}");
        assert!(
            got["data"].as_str().unwrap().contains("connection limit"),
            "{got}"
        );
        assert!(
            refused.closed_within(PATIENCE).await,
            "{transport:?}: the refusal ends"
        );
        drop(first);

        // The SSE/WS connection holds the slot while open and gives it back when its
        // client goes away.
        let mut sb = loop {
            let mut sb = Sb::open(&app, transport).await;
            let first = sb.next_message().await.expect("a message");
            if first["type"] == json!("init") {
                sb.sid = first["data"].as_str().unwrap().to_string();
                break sb;
            }
            // The Socket.IO socket's slot is given back a moment after it closed.
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        sb.auth(&alice.token).await;
        assert!(
            Sio::connect(&app.base, Some(json!({ "token": alice.token })))
                .await
                .is_err()
        );
        drop(sb);
        let mut admitted = false;
        for _ in 0..100 {
            if Sio::connect(&app.base, Some(json!({ "token": alice.token })))
                .await
                .is_ok()
            {
                admitted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            admitted,
            "{transport:?}: a dropped client's socket ends and frees its slot"
        );
        // That socket is dropped here; the next round waits for its slot the same way.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn sse_sends_heartbeats_and_ends_when_the_server_ends_the_socket() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .config(|c| c.socket_ping_interval_ms = 1000)
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let mut sb = Sb::connect(&app, Transport::Sse).await;
    sb.auth(&alice.token).await;
    let mut heartbeat = false;
    for _ in 0..3 {
        if let Some(Item::Comment) = sb.next_item(Duration::from_secs(3)).await {
            heartbeat = true;
            break;
        }
    }
    assert!(heartbeat, "an idle stream gets heartbeats");
    let mut ws = Sb::connect(&app, Transport::Ws).await;
    ws.auth(&alice.token).await;

    // Revoking alice (as a sign-out does) ends her bridged sockets, and so the streams.
    app.state.realtime.disconnect_user(&alice.email, None).await;
    assert!(
        sb.closed_within(PATIENCE).await,
        "the SSE stream ends with its socket"
    );
    assert!(
        ws.closed_within(PATIENCE).await,
        "the WebSocket ends with its socket"
    );
    // And the sid is gone.
    let (status, body) = sb.send("echo", json!("x"), "").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_bad_token_is_answered_with_error_and_unauthenticated_connections_time_out() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .config(|c| c.socket_auth_timeout_ms = 1500)
        .start()
        .await;
    for transport in BOTH {
        let mut sb = Sb::connect(&app, transport).await;
        sb.send("auth", json!("not-a-token"), "").await;
        let got = sb.expect("error").await;
        assert!(got["data"].as_str().unwrap().contains("token"), "{got}");
        // Never authenticated: the socket's timeout ends it, and the client is told.
        let got = sb.expect("error").await;
        assert!(
            got["data"].as_str().unwrap().contains("not authenticated"),
            "{got}"
        );
        assert!(sb.closed_within(PATIENCE).await, "{transport:?}");
    }
}

/// EventSource's reconnect: every database event has an SSE `id:` (its `seq`, also in
/// the envelope), and a connection opened with `Last-Event-ID` gets, once it
/// authenticated, a `recovered` message, and on joining a channel again what it missed
/// there that it may read, before `joined`; nothing twice, nothing it may not read.
#[tokio::test]
async fn an_sse_client_resumes_with_last_event_id() {
    for backend in backends() {
        let what = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut first = Sb::connect(&app, Transport::Sse).await;
        first.auth(&alice.token).await;
        first.command("join", json!("db-notes"), "").await;
        first.expect("joined").await;
        rest_create(&app, "notes", &alice.cred(), "seen").await;
        let seen = first.expect("db_created").await;
        let seq = seen["seq"].as_u64().expect("database events carry seq");
        let id = first.last_event_id.lock().unwrap().clone();
        assert_eq!(id, Some(seq.to_string()), "{what}: the SSE id is the seq");
        drop(first);

        let bobs = rest_create(&app, "notes", &bob.cred(), "bob's").await;
        let hers = rest_create(&app, "notes", &alice.cred(), "hers").await;

        let mut back =
            Sb::connect_resuming(&app.base, Transport::Sse, Some(&seq.to_string())).await;
        back.auth(&alice.token).await;
        let recovered = back.expect("recovered").await;
        assert_eq!(
            recovered["data"]["recovered"],
            json!(true),
            "{what}: {recovered}"
        );
        back.command("join", json!("db-notes"), "").await;
        let missed = back.expect("db_created").await;
        let row: Value = serde_json::from_str(missed["data"].as_str().unwrap()).unwrap();
        assert_eq!(row["id"], json!(hers), "{what}: {missed}");
        assert!(missed["seq"].as_u64().unwrap() > seq);
        back.expect("joined").await;
        let rest = back.until_echo().await;
        assert!(
            rest.iter().all(|m| m["type"] != json!("db_created")
                || !m["data"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("\"id\":{bobs}"))),
            "{what}: bob's note leaked: {rest:?}"
        );
        assert!(
            rest.iter().all(|m| m["type"] != json!("db_created")),
            "{what}: nothing twice: {rest:?}"
        );

        // A Last-Event-ID this server did not send: said, and not resumed.
        let mut bad = Sb::open_with(&app.base, &app.client, Transport::Sse, Some("soon")).await;
        let first_message = bad.next_message().await.unwrap();
        assert_eq!(first_message["type"], json!("error"), "{first_message}");
        assert!(
            first_message["data"]
                .as_str()
                .unwrap()
                .contains("Last-Event-ID"),
            "{first_message}"
        );
        assert_eq!(bad.next_message().await.unwrap()["type"], json!("init"));
        app.stop().await;
    }
}

/// StaticBackend's `presence` message type: a member asks who is in its channel and
/// gets `presence` with the list as JSON text; members hear others join and leave.
#[tokio::test]
async fn staticbackend_clients_have_channel_presence() {
    let backend = &backends()[0];
    let app = start(backend).await;
    let alice = app.user("alice@x.test", "User").await;
    let bob = app.user("bob@x.test", "User").await;
    for transport in BOTH {
        let what = format!("{transport:?}");
        let mut sa = Sb::connect(&app, transport).await;
        sa.auth(&alice.token).await;
        sa.command("join", json!("presence-lobby"), "").await;
        sa.expect("joined").await;
        let mut sb = Sb::connect(&app, transport).await;
        sb.auth(&bob.token).await;
        sb.command("join", json!("presence-lobby"), "").await;
        sb.expect("joined").await;
        // Alice hears her own entry, then bob's.
        let mut entries = Vec::new();
        while entries.len() < 2 {
            let got = sa.expect("presence").await;
            let body: Value = serde_json::from_str(got["data"].as_str().unwrap()).unwrap();
            entries.push(body["member"]["userId"].clone());
        }
        assert_eq!(entries, [json!(alice.id), json!(bob.id)], "{what}");
        sb.command("presence", json!("presence-lobby"), "").await;
        // Bob's own entry was announced to him first.
        let (list, body) = loop {
            let got = sb.expect("presence").await;
            let body: Value = serde_json::from_str(got["data"].as_str().unwrap()).unwrap();
            if body.get("members").is_some() {
                break (got, body);
            }
            assert_eq!(body["member"]["userId"], json!(bob.id), "{what}: {body}");
        };
        assert_eq!(list["channel"], json!("presence-lobby"), "{what}: {list}");
        assert_eq!(
            body["members"].as_array().unwrap().len(),
            2,
            "{what}: {body}"
        );
        drop(sb);
        let left = sa.expect("presence").await;
        let body: Value = serde_json::from_str(left["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            (body["event"].clone(), body["member"]["userId"].clone()),
            (json!("leave"), json!(bob.id)),
            "{what}"
        );
        drop(sa);
        // Alice's departure settles before the next transport's round.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}
