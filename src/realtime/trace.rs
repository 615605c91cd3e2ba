//! Why each of this node's sockets did or did not receive one recorded emit
//! (`GET /1/admin/events/{id}/trace`).
//!
//! What was computed when: whether a socket received the emit is what `watch` recorded
//! at emit time (the sockets in its rooms, less those left out for their byte budget).
//! The reason is computed now, from the socket's current identity and rooms and the
//! emit's recorded facts, by asking `access` and the `rooms` functions exactly as
//! delivery does: this module holds no second copy of the policy, and it changes
//! nothing.

use super::cluster::SocketRef;
use serde::Serialize;

use super::rooms::{self, Feed};
use super::watch::{Addressed, Recorded};
use super::{Realtime, roster, session};
use crate::auth::{Identity, access};
use crate::schema::Operation;

/// One socket's line in a trace.
#[derive(Debug, Serialize)]
pub struct Line {
    pub id: String,
    pub username: Option<String>,
    pub role: Option<String>,
    pub received: bool,
    pub reason: String,
}

/// A page of a trace.
pub struct Trace {
    pub event: std::sync::Arc<Recorded>,
    /// Connected sockets on this node.
    pub total: usize,
    /// Recipients that are no longer connected (they have no line).
    pub recipients_gone: usize,
    pub sockets: Vec<Line>,
}

impl Realtime {
    /// The trace of recorded event `id`, page `number` (1-based) of `size` sockets;
    /// `None` if the ring no longer (or never) had it.
    pub fn trace(&self, id: u64, size: usize, number: usize) -> Option<Trace> {
        let event = self.shared.watch.find(id)?;
        let all = roster::local(self);
        let connected = all
            .iter()
            .filter(|s| event.received(&session::public_id(s)))
            .count();
        let sockets = all
            .iter()
            .skip(size.saturating_mul(number.saturating_sub(1)))
            .take(size)
            .map(|s| self.line(&event, s))
            .collect();
        Some(Trace {
            recipients_gone: event.recipients.len().saturating_sub(connected),
            total: all.len(),
            event,
            sockets,
        })
    }

    fn line(&self, event: &Recorded, s: &SocketRef) -> Line {
        let id = session::public_id(s);
        let who = session::identity(s);
        let received = event.received(&id);
        let joined: Vec<String> = s.rooms().iter().map(|r| r.to_string()).collect();
        let in_target = event.rooms.iter().find(|r| joined.contains(r));
        let reason = if received {
            match in_target {
                Some(room) => format!("in room `{room}`"),
                None => {
                    "was in one of the event's rooms when it was sent (has left it since)".into()
                }
            }
        } else if roster::admitted(s).is_some_and(|a| a.instant > event.at) {
            "connected after the event".into()
        } else if event.was_left_out(&id) {
            "left out: over its send budget".into()
        } else if let Some(room) = in_target {
            if event.truncated {
                "not among the recipients recorded (the list was truncated)".into()
            } else {
                format!("joined `{room}` after the event")
            }
        } else {
            match who.as_deref() {
                None => "not authenticated".into(),
                Some(who) => self.not_addressed(event, who),
            }
        };
        Line {
            id: id.to_string(),
            username: who.as_ref().map(|w| w.username.clone()),
            role: who.as_ref().map(|w| w.role.clone()),
            received,
            reason,
        }
    }

    /// Why an authenticated socket in none of the event's rooms was not addressed: the
    /// room its identity would be in, by the same functions that placed it.
    fn not_addressed(&self, event: &Recorded, who: &Identity) -> String {
        match &event.addressed {
            Addressed::Users(_) => {
                if event.rooms.contains(&rooms::user(&who.username)) {
                    "authenticated as a named user after the event".into()
                } else {
                    "not one of the users the event named".into()
                }
            }
            Addressed::Role(role) => {
                format!("role `{}`; the event was for role `{role}`", who.role)
            }
            Addressed::Authenticated => "authenticated after the event".into(),
            Addressed::Channel(name) => format!("not in room `{}`", rooms::channel(name)),
            Addressed::Readers {
                feed,
                object,
                owner,
                id,
            } => {
                let Some(object) = self.schema().object(object) else {
                    return format!("not in any of the event's rooms ({object} is unknown)");
                };
                let scope = access(who, object, Operation::Read);
                match rooms::reader(*feed, object, scope) {
                    None => format!("role `{}` may not read `{}`", who.role, object.name),
                    Some(room) if !event.rooms.contains(&room) => match owner {
                        Some(_) => "row security: the row belongs to another user".into(),
                        None => "row security: the row has no owner".into(),
                    },
                    Some(room) => match feed {
                        Feed::DbChannel => {
                            format!("not joined `{}`", rooms::db_channel(&object.name))
                        }
                        Feed::SailsWatch => format!(
                            "not subscribed: no Sails `get` of `{}` or of row {id}",
                            object.name
                        ),
                        Feed::LoopBack => format!("not in room `{room}`"),
                    },
                }
            }
        }
    }
}
