//! How a socket command answers: the ack when the client asked for one, otherwise an
//! event (`ok`, `error`, or the command's own), counted against the socket's byte budget.

use std::convert::Infallible;
use std::sync::Arc;

use super::cluster::NodeAdapter;
use super::cluster::SocketRef;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Event, State};
use socketioxide::handler::{FromMessageParts, Value as WireValue};
use socketioxide::socket::Socket;

use super::{Shared, outbox, session};

/// Events livebase answers (the label set of `livebase_socket_rejected_total`).
const KNOWN_EVENTS: [&str; 11] = [
    "echo",
    "join",
    "leave",
    "chan_in",
    "login",
    "authentication",
    "get",
    "post",
    "put",
    "patch",
    "delete",
];

/// How a command answers: the ack if the client asked for one, else an event.
pub struct Reply {
    ack: AckSender<NodeAdapter>,
    wants_ack: bool,
    socket: Arc<Socket<NodeAdapter>>,
    shared: Option<Arc<Shared>>,
}

impl FromMessageParts<NodeAdapter> for Reply {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket<NodeAdapter>>,
        v: &mut WireValue,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Reply {
            ack: AckSender::from_message_parts(s, v, ack_id)?,
            wants_ack: ack_id.is_some(),
            socket: s.clone(),
            shared: State::<Arc<Shared>>::from_message_parts(s, v, ack_id)
                .ok()
                .map(|State(shared)| shared),
        })
    }
}

impl Reply {
    pub fn wants_ack(&self) -> bool {
        self.wants_ack
    }

    /// Answers count against the socket's byte budget like events do: a client that
    /// floods requests and reads no answers is not let to pile them up.
    fn admit(&self, size: u64) -> bool {
        let s = SocketRef::from(self.socket.clone());
        self.shared
            .as_ref()
            .is_none_or(|shared| shared.admit(&s, size))
    }

    /// Success: `ack_data` as the ack, or `event` with `event_data` when there is no ack
    /// (no event at all if `event` is `None`).
    pub fn ok(self, ack_data: &Value, event: Option<(&str, &Value)>) {
        let size = match (self.wants_ack, event) {
            (true, _) => outbox::size_of("", ack_data),
            (false, Some((name, data))) => outbox::size_of(name, data),
            (false, None) => return,
        };
        if !self.admit(size) {
            return;
        }
        if self.wants_ack {
            self.ack.send(ack_data).ok();
        } else if let Some((name, data)) = event {
            self.socket.emit(name, data).ok();
        }
    }

    /// Failure of `command`: `{error}` as the ack, or an `error` event naming the command.
    pub fn error(self, command: &str, message: &str) {
        // Client-chosen event names must not become metric labels (unbounded cardinality).
        let label = KNOWN_EVENTS
            .iter()
            .find(|known| **known == command)
            .copied()
            .unwrap_or("unknown");
        metrics::counter!("livebase_socket_rejected_total", "event" => label).increment(1);
        if !self.admit(outbox::size_of(command, message)) {
            return;
        }
        if self.wants_ack {
            self.ack.send(&json!({ "error": message })).ok();
        } else {
            self.socket
                .emit("error", &json!({ "event": command, "message": message }))
                .ok();
        }
    }
}

/// Any event livebase does not know.
pub async fn unknown_event(s: SocketRef, Event(event): Event, reply: Reply) {
    if !session::settled(&s).await {
        return;
    }
    reply.error(
        &event,
        &format!("unknown event `{}`", event.escape_default()),
    );
}
