//! One StaticBackend connection's Socket.IO socket, connected in process: a
//! `tokio::io::duplex` pair whose one end the listener's own service serves
//! (`conn::serve_one`) and whose other end speaks Socket.IO v5 over WebSocket, exactly
//! as a remote client would. Nothing here reaches into the namespace: what the socket
//! may do and receive is what the server decides for any socket.
//!
//! Commands go out with an ack and the ack comes back as StaticBackend's answer; the
//! socket's events come back through `envelope::from_event`. The client's queue is
//! bounded in messages and bytes; when it is full the bridge stops reading its socket,
//! which then falls behind on its byte budget and is dealt with like any slow socket.
//! Either end closing closes the other: a dropped client ends its socket, and a socket
//! the server ended (revocation, limits, shutdown) ends the client's stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::Limits;
use super::envelope::{self, Inbound, Pending};
use crate::auth::{Auth, Identity};
use crate::error::ApiError;

/// The in-process socket's handshake: namespace `/` over WebSocket, engine.io v4.
const SOCKET_URL: &str = "ws://livebase.internal/socket.io/?EIO=4&transport=websocket";
/// Bytes in flight inside the in-process pipe, each way.
const PIPE_BYTES: usize = 64 * 1024;
/// Longest wait for the namespace to accept or refuse the socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands sent and not yet answered, per connection.
const MAX_PENDING: usize = 64;
/// Frames waiting to be written to the socket.
const TO_SOCKET: usize = MAX_PENDING + 8;
/// Messages waiting for the client (its bytes are bounded separately).
const TO_CLIENT: usize = 256;

pub const NOT_AUTHENTICATED: &str =
    "authenticate first: send `auth` with a livebase access token in `data`";

/// A command that did not act, and whether the connection's own stream is told
/// (`false` when the caller is not known to be the sid's owner: its stream is not
/// the caller's to write to).
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub tell_stream: bool,
}

impl Refused {
    fn told(error: ApiError) -> Self {
        Refused {
            error,
            tell_stream: true,
        }
    }

    fn untold(error: ApiError) -> Self {
        Refused {
            error,
            tell_stream: false,
        }
    }
}

pub struct Bridge {
    /// The client's own id, from `init`: random, never the engine.io id.
    pub sid: Arc<str>,
    /// engine.io frames for the socket.
    to_socket: mpsc::Sender<String>,
    state: Mutex<State>,
    /// The client's queue; taken when the bridge closes, which ends the client's stream.
    to_client: Mutex<Option<Queue>>,
    closing: watch::Sender<bool>,
    max_payload: usize,
}

#[derive(Default)]
struct State {
    next_ack: u64,
    pending: HashMap<u64, Pending>,
    /// An `auth` sent and not yet answered: its token and whose it is.
    authing: Option<(String, Arc<Identity>)>,
    /// Whom the socket authenticated as.
    who: Option<Arc<Identity>>,
}

/// A newly opened bridge and the messages for its client.
pub struct Opened {
    pub bridge: Arc<Bridge>,
    pub messages: Messages,
}

/// The messages for one client, in order. Dropping it (the client went away) closes
/// the bridge and so the socket.
pub struct Messages {
    rx: mpsc::Receiver<(String, OwnedSemaphorePermit)>,
    bridge: Arc<Bridge>,
}

impl Messages {
    /// The next message; `None` once the socket ended.
    pub async fn next(&mut self) -> Option<String> {
        // The permit goes when the message is handed on, freeing its bytes.
        self.rx.recv().await.map(|(text, _permit)| text)
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        self.bridge.close();
    }
}

/// The client's queue: at most `TO_CLIENT` messages and `bytes` permits' worth of text.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<(String, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
    budget: usize,
}

impl Queue {
    /// Waits for room; `false` if the client is gone. A message larger than the whole
    /// budget takes all of it, so it still goes once the queue is empty.
    async fn send(&self, text: String) -> bool {
        let n = text.len().clamp(1, self.budget) as u32;
        let Ok(permit) = self.bytes.clone().acquire_many_owned(n).await else {
            return false;
        };
        self.tx.send((text, permit)).await.is_ok()
    }

    /// As `send`, without waiting: `false` if there is no room.
    fn try_send(&self, text: String) -> bool {
        let n = text.len().clamp(1, self.budget) as u32;
        let Ok(permit) = self.bytes.clone().try_acquire_many_owned(n) else {
            return false;
        };
        self.tx.try_send((text, permit)).is_ok()
    }
}

impl Bridge {
    /// Connects a socket for a client at `addr` through `service`; `Err` is the
    /// namespace's refusal (the connection limit) or why it could not be reached.
    pub async fn open(
        service: &Router,
        addr: SocketAddr,
        limits: Limits,
        last_seq: Option<u64>,
    ) -> Result<Opened, String> {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        tokio::spawn(crate::conn::serve_one(
            server,
            service.clone(),
            addr,
            limits.write_stall,
        ));
        let connecting = async {
            let (ws, _) = tokio_tungstenite::client_async(SOCKET_URL, client)
                .await
                .map_err(|e| format!("opening the realtime socket: {e}"))?;
            let (mut sink, mut stream) = ws.split();
            let closed = || "the realtime socket closed while connecting".to_string();
            loop {
                match packet(&next_text(&mut stream).await.ok_or_else(closed)?) {
                    Packet::Open => break,
                    _ => continue,
                }
            }
            // A resuming client's socket connects with `lastSeq`; it authenticates later,
            // with `authentication`, and is resumed then (`session`, `resume`).
            let connect = match last_seq {
                Some(seq) => format!("40{}", json!({ "lastSeq": seq })),
                None => "40".to_string(),
            };
            sink.send(Message::text(connect))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                match packet(&next_text(&mut stream).await.ok_or_else(closed)?) {
                    Packet::Ping => {
                        sink.send(Message::text("3"))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Packet::Connected => return Ok((sink, stream)),
                    Packet::Refused(message) => return Err(message),
                    Packet::Disconnect => return Err(closed()),
                    _ => continue,
                }
            }
        };
        let (sink, stream) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| "the realtime layer did not answer in time; try again".to_string())??;

        let (to_socket, frames) = mpsc::channel(TO_SOCKET);
        let (tx, rx) = mpsc::channel(TO_CLIENT);
        let budget = limits.queue_bytes;
        let queue = Queue {
            tx,
            bytes: Arc::new(Semaphore::new(budget)),
            budget,
        };
        let bridge = Arc::new(Bridge {
            sid: new_sid(),
            to_socket,
            state: Mutex::default(),
            to_client: Mutex::new(Some(queue)),
            closing: watch::channel(false).0,
            max_payload: limits.max_payload,
        });
        tokio::spawn(write(sink, frames, bridge.closing.subscribe()));
        tokio::spawn(read(bridge.clone(), stream));
        let messages = Messages {
            rx,
            bridge: bridge.clone(),
        };
        Ok(Opened { bridge, messages })
    }

    /// Ends the socket and the client's stream (idempotent).
    pub fn close(&self) {
        self.closing.send_replace(true);
        if let Some(queue) = self.to_client.lock().ok().and_then(|mut q| q.take()) {
            queue.bytes.close();
        }
    }

    /// Resolves once the bridge closed.
    pub async fn closed(&self) {
        until_closed(&mut self.closing.subscribe()).await;
    }

    /// Queues a message for the client, waiting for room; `false` if it is gone.
    pub async fn deliver(&self, text: String) -> bool {
        let queue = self.to_client.lock().ok().and_then(|q| q.clone());
        match queue {
            Some(queue) => queue.send(text).await,
            None => false,
        }
    }

    /// As `deliver`, dropping the message if the client's queue is full (for answers
    /// that the caller also gets directly).
    pub fn try_deliver(&self, text: String) -> bool {
        let queue = self.to_client.lock().ok().and_then(|q| q.clone());
        queue.is_some_and(|queue| queue.try_send(text))
    }

    fn who(&self) -> Option<Arc<Identity>> {
        self.state.lock().ok()?.who.clone()
    }

    /// Runs one envelope from the client. Everything but `auth` needs the connection
    /// authenticated and the envelope's `token` to be that same identity's.
    pub async fn command(&self, auth: &Auth, envelope: &Inbound) -> Result<(), Refused> {
        if envelope.kind == "auth" {
            return self.authenticate(auth, envelope).await;
        }
        let Some(who) = self.who() else {
            return Err(Refused::untold(ApiError::Unauthorized(
                NOT_AUTHENTICATED.into(),
            )));
        };
        let Some(token) = envelope.token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(Refused::untold(ApiError::Unauthorized(
                "the envelope has no `token`: send the access token this connection authenticated with".into(),
            )));
        };
        let claimed = auth.identify_bearer(token).await.map_err(Refused::untold)?;
        if !same(&claimed, &who) {
            return Err(Refused::untold(not_the_owner()));
        }
        let channel = || {
            envelope.channel_named().ok_or_else(|| {
                Refused::told(ApiError::bad(format!(
                    "`{}` names its channel in `data`",
                    envelope.kind
                )))
            })
        };
        let (event, data, pending) = match envelope.kind.as_str() {
            "echo" => ("echo", envelope.data.clone(), Pending::Echo),
            "join" => {
                let name = channel()?;
                ("join", json!(name), Pending::Join(name))
            }
            "leave" => {
                let name = channel()?;
                ("leave", json!(name), Pending::Leave(name))
            }
            "presence" => {
                let name = channel()?;
                ("presence", json!(name), Pending::Presence(name))
            }
            "chan_in" => {
                let name = envelope.channel.clone().unwrap_or_default();
                let data = json!({ "channel": name, "data": envelope.data });
                ("chan_in", data, Pending::ChanIn(name))
            }
            other => {
                return Err(Refused::told(ApiError::bad(format!(
                    "{} command not found",
                    other.escape_default()
                ))));
            }
        };
        self.emit(event, data, pending)
    }

    /// `auth` → the socket's LoopBack `authentication`, answered by `token` or `error`.
    /// A connection authenticated once may authenticate again only as the same identity
    /// (a refreshed token); a token of anyone else acts on nothing.
    async fn authenticate(&self, auth: &Auth, envelope: &Inbound) -> Result<(), Refused> {
        let token = envelope
            .text()
            .or(envelope.token.as_deref().filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                Refused::told(ApiError::bad("`auth` carries the access token in `data`"))
            })?;
        let before = self.who();
        let claimed = match auth.identify_bearer(token).await {
            Ok(claimed) => Arc::new(claimed),
            // Before it authenticated, the connection has nothing to protect and its
            // client needs the `error`; after, only the caller hears of it.
            Err(error) => {
                return Err(Refused {
                    error,
                    tell_stream: before.is_none(),
                });
            }
        };
        if let Some(before) = &before
            && !same(before, &claimed)
        {
            return Err(Refused::untold(not_the_owner()));
        }
        {
            let Ok(mut state) = self.state.lock() else {
                return Err(Refused::untold(ApiError::Internal(anyhow::anyhow!(
                    "bridge state poisoned"
                ))));
            };
            if state.authing.is_some() {
                return Err(Refused::untold(ApiError::Conflict(
                    "an `auth` is already waiting for its answer".into(),
                )));
            }
            state.authing = Some((token.to_string(), claimed));
        }
        let frame = format!("42{}", json!(["authentication", { "id": token }]));
        if self.to_socket.try_send(frame).is_err() {
            if let Ok(mut state) = self.state.lock() {
                state.authing = None;
            }
            return Err(Refused::untold(busy()));
        }
        Ok(())
    }

    /// Sends `event` with an ack, remembered as `pending` until it is answered.
    fn emit(&self, event: &str, data: Value, pending: Pending) -> Result<(), Refused> {
        let id = {
            let Ok(mut state) = self.state.lock() else {
                return Err(Refused::untold(busy()));
            };
            if state.pending.len() >= MAX_PENDING {
                return Err(Refused::untold(busy()));
            }
            state.next_ack += 1;
            let id = state.next_ack;
            state.pending.insert(id, pending);
            id
        };
        let frame = format!("42{id}{}", json!([event, data]));
        let refused = if frame.len() > self.max_payload {
            Some(Refused::told(ApiError::PayloadTooLarge(format!(
                "the message is larger than the limit of {} bytes",
                self.max_payload
            ))))
        } else if self.to_socket.try_send(frame).is_err() {
            Some(Refused::untold(busy()))
        } else {
            None
        };
        match refused {
            Some(refused) => {
                if let Ok(mut state) = self.state.lock() {
                    state.pending.remove(&id);
                }
                Err(refused)
            }
            None => Ok(()),
        }
    }

    /// A socket event as the client's message, if it is one it gets.
    fn on_event(&self, name: &str, arg: &Value) -> Option<String> {
        match name {
            "authenticated" => {
                let mut state = self.state.lock().ok()?;
                let (token, who) = state.authing.take()?;
                state.who = Some(who);
                Some(envelope::token(&token))
            }
            "unauthorized" => {
                self.state.lock().ok()?.authing = None;
                let message = arg.get("message").and_then(Value::as_str).unwrap_or("");
                Some(envelope::error(message, ""))
            }
            _ => envelope::from_event(name, arg),
        }
    }

    fn on_ack(&self, id: u64, arg: &Value) -> Option<String> {
        let pending = self.state.lock().ok()?.pending.remove(&id)?;
        Some(envelope::from_ack(&pending, arg))
    }
}

fn same(a: &Identity, b: &Identity) -> bool {
    a.user_id == b.user_id && a.username == b.username
}

fn not_the_owner() -> ApiError {
    ApiError::Forbidden(
        "this token is not the identity this connection authenticated as; nothing was done".into(),
    )
}

fn busy() -> ApiError {
    ApiError::Status(
        StatusCode::TOO_MANY_REQUESTS,
        format!("at most {MAX_PENDING} commands may wait for their answer; wait for some"),
    )
}

fn new_sid() -> Arc<str> {
    use base64::Engine;
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(bytes)
        .into()
}

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>,
    Message,
>;
type Stream =
    futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>>;

/// Writes frames to the socket until the bridge closes; then closes the WebSocket,
/// which the server takes as the client going away.
async fn write(
    mut sink: Sink,
    mut frames: mpsc::Receiver<String>,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => {
                    if sink.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            () = until_closed(&mut closing) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// Reads the socket until it ends (or the bridge closes), answering heartbeats and
/// handing the client its messages; then closes the bridge.
async fn read(bridge: Arc<Bridge>, mut stream: Stream) {
    let mut closing = bridge.closing.subscribe();
    loop {
        let frame = tokio::select! {
            frame = next_text(&mut stream) => frame,
            () = until_closed(&mut closing) => None,
        };
        let Some(frame) = frame else { break };
        let message = match packet(&frame) {
            Packet::Ping => {
                let _ = bridge.to_socket.try_send("3".into());
                None
            }
            Packet::Event(name, arg) => bridge.on_event(&name, &arg),
            Packet::Ack(id, arg) => bridge.on_ack(id, &arg),
            Packet::Disconnect => break,
            _ => None,
        };
        if let Some(message) = message
            && !bridge.deliver(message).await
        {
            break;
        }
    }
    bridge.close();
}

/// Resolves once the bridge closes (the guard `wait_for` returns is not `Send`).
async fn until_closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closed| *closed).await;
}

async fn next_text(stream: &mut Stream) -> Option<String> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The engine.io / Socket.IO packets the bridge acts on.
#[derive(Debug, PartialEq)]
enum Packet {
    Open,
    Ping,
    Connected,
    Refused(String),
    /// An event's name and first argument.
    Event(String, Value),
    Ack(u64, Value),
    Disconnect,
    Other,
}

fn packet(frame: &str) -> Packet {
    match frame.as_bytes().first() {
        Some(b'0') => Packet::Open,
        Some(b'1') => Packet::Disconnect,
        Some(b'2') => Packet::Ping,
        Some(b'4') => socket_packet(&frame[1..]),
        _ => Packet::Other,
    }
}

fn socket_packet(body: &str) -> Packet {
    let Some(kind) = body.chars().next() else {
        return Packet::Other;
    };
    let rest = &body[1..];
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let (id, args) = (rest[..digits].parse::<u64>().ok(), &rest[digits..]);
    let first = |args: Vec<Value>, skip: usize| args.into_iter().nth(skip).unwrap_or(Value::Null);
    match kind {
        '0' => Packet::Connected,
        '1' => Packet::Disconnect,
        '4' => {
            let message = serde_json::from_str::<Value>(rest)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                .unwrap_or_else(|| "the realtime layer refused the connection".into());
            Packet::Refused(message)
        }
        '2' => match serde_json::from_str::<Vec<Value>>(args) {
            Ok(args) => match args.first().and_then(Value::as_str).map(str::to_string) {
                Some(name) => Packet::Event(name, first(args, 1)),
                None => Packet::Other,
            },
            Err(_) => Packet::Other,
        },
        '3' => match (id, serde_json::from_str::<Vec<Value>>(args)) {
            (Some(id), Ok(args)) => Packet::Ack(id, first(args, 0)),
            _ => Packet::Other,
        },
        _ => Packet::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_read_as_socketioxide_writes_them() {
        let cases = [
            (r#"0{"sid":"x","pingInterval":1}"#, Packet::Open),
            ("2", Packet::Ping),
            (r#"40{"sid":"y"}"#, Packet::Connected),
            (
                r#"44{"message":"connection limit reached"}"#,
                Packet::Refused("connection limit reached".into()),
            ),
            (
                r#"42["db_created",{"channel":"db-x","data":{"id":1}}]"#,
                Packet::Event(
                    "db_created".into(),
                    json!({ "channel": "db-x", "data": { "id": 1 } }),
                ),
            ),
            (
                r#"4312[{"ok":true}]"#,
                Packet::Ack(12, json!({ "ok": true })),
            ),
            ("41", Packet::Disconnect),
            ("1", Packet::Disconnect),
            ("42not json", Packet::Other),
            ("43[1]", Packet::Other),
            ("4", Packet::Other),
        ];
        for (frame, expected) in cases {
            assert_eq!(packet(frame), expected, "{frame}");
        }
    }
}
