//! What an action emits leaves for `Realtime` only once the action has succeeded: when
//! an on-demand action returns; for a before action with its write's event, once the
//! write commits (never, if the write is refused or fails); for after actions, once the
//! write's after actions ran, as an entry of the event log of its own. Emits of before
//! and after actions are logged, so they carry their number and are replayed; an
//! on-demand action's are not.

use serde_json::{Value, json};

use super::Actions;
use super::sandbox::Emit;
use crate::auth::Identity;
use crate::realtime::Realtime;
use crate::realtime::watch::Cause;

impl Actions {
    /// Sends what a successful action `action`, run as `who`, emitted.
    pub(super) async fn deliver(&self, emits: &[Emit], who: &Identity, action: &str) {
        send(&self.inner.realtime, emits, who, action).await;
    }
}

/// Sends what an action emitted, now that it may leave; the admin event stream shows
/// `who` and `action` as its cause.
async fn send(realtime: &Realtime, emits: &[Emit], who: &Identity, action: &str) {
    let realtime = realtime.on_behalf(Cause::Action { who, action });
    for emit in emits {
        match emit {
            Emit::Users { event, data, users } => realtime.emit_users(event, data, users).await,
            Emit::Role { event, data, role } => realtime.emit_role(event, data, role).await,
            Emit::All { event, data } => realtime.emit_all(event, data).await,
            Emit::Room { room, event, data } => realtime.broadcast(room, event, data).await,
        }
    }
}

impl Emit {
    /// `{kind, event, target, data}`: the binding it came from, and whom it addresses
    /// (`null` for everyone, a role, a list of usernames, or a room).
    pub fn to_json(&self) -> Value {
        let (kind, event, target, data) = match self {
            Emit::Users { event, data, users } => ("emitUsers", event, json!(users), data),
            Emit::Role { event, data, role } => ("emitRole", event, json!(role), data),
            Emit::All { event, data } => ("emitAll", event, Value::Null, data),
            Emit::Room { room, event, data } => ("broadcast", event, json!(room), data),
        };
        json!({ "kind": kind, "event": event, "target": target, "data": data })
    }

    /// The form a before or after action's emit is logged in: `to_json` and the
    /// action's name (see `realtime::relay::logged_emits`).
    pub fn logged(&self, action: &str) -> Value {
        let mut value = self.to_json();
        value["action"] = Value::from(action);
        value
    }
}
