//! This node's connected sockets as an administrator sees them (`GET /1/admin/sockets`),
//! and ending one by its public id.
//!
//! A socket is named by its `PublicId`, never by the engine.io session id, which is a
//! credential for its session (see `session::PublicId`). Knowing a public id gives
//! nothing: only an Admin caller reaches these functions. This module reads sockets; it
//! changes no room and decides no permission.

use std::time::Instant;

use super::cluster::SocketRef;
use chrono::{DateTime, Utc};
use serde::Serialize;
use socketioxide::{ProtocolVersion, TransportType};

use super::{Realtime, outbox, rooms, session};

/// When a socket was admitted, kept in its extensions.
#[derive(Clone, Copy)]
pub struct Admitted {
    pub at: DateTime<Utc>,
    pub instant: Instant,
}

impl Admitted {
    pub(crate) fn now() -> Self {
        Admitted {
            at: Utc::now(),
            instant: Instant::now(),
        }
    }
}

/// Put on the requests of a StaticBackend connection's in-process socket by its bridge
/// (`sse` or `ws`): a request extension, which no client can set.
#[derive(Clone, Copy, Debug)]
pub struct Bridged(pub &'static str);

/// One socket, as `GET /1/admin/sockets` lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketView {
    pub id: String,
    pub username: Option<String>,
    pub role: Option<String>,
    pub user_id: Option<i64>,
    pub transport: &'static str,
    pub bridge: Option<&'static str>,
    pub protocol: &'static str,
    /// Channels by the names the client joined them with (`db-items`, `room1`).
    pub channels: Vec<String>,
    pub rooms: Vec<String>,
    pub connected_at: String,
    pub age_seconds: u64,
    pub queued_bytes: u64,
}

/// A page of this node's sockets, oldest first, and how many there are.
pub struct Page {
    pub total: usize,
    pub sockets: Vec<SocketView>,
}

/// This node's sockets, oldest first.
pub(crate) fn local(realtime: &Realtime) -> Vec<SocketRef> {
    let Some(root) = realtime.io().of("/") else {
        return Vec::new();
    };
    let mut all = root.sockets();
    all.sort_by_cached_key(|s| (admitted(s).map(|a| a.instant), session::public_id(s)));
    all
}

pub(crate) fn admitted(s: &SocketRef) -> Option<Admitted> {
    s.extensions.get::<Admitted>()
}

impl Realtime {
    /// Page `number` (1-based) of `size` sockets of this node.
    pub fn sockets(&self, size: usize, number: usize) -> Page {
        let all = local(self);
        let sockets = all
            .iter()
            .skip(size.saturating_mul(number.saturating_sub(1)))
            .take(size)
            .map(view)
            .collect();
        Page {
            total: all.len(),
            sockets,
        }
    }

    /// Ends the local socket whose public id is `id`, telling it why; `false` if there
    /// is none.
    pub fn disconnect_socket(&self, id: &str) -> bool {
        let Some(root) = self.io().of("/") else {
            return false;
        };
        // Its own room holds exactly it; the id is checked again against the socket.
        let found = root
            .to(rooms::socket(id))
            .sockets()
            .into_iter()
            .find(|s| &*session::public_id(s) == id);
        let Some(s) = found else {
            return false;
        };
        metrics::counter!("livebase_socket_admin_disconnects_total").increment(1);
        s.emit(
            "error",
            &serde_json::json!({ "message": "disconnected by an administrator" }),
        )
        .ok();
        s.disconnect().ok();
        true
    }
}

fn view(s: &SocketRef) -> SocketView {
    let who = session::identity(s);
    let mut rooms: Vec<String> = s
        .rooms()
        .iter()
        .filter(|r| rooms::is_listed(r))
        .map(|r| r.to_string())
        .collect();
    rooms.sort();
    let mut channels: Vec<String> = rooms
        .iter()
        .filter_map(|r| rooms::joined_channel_name(r))
        .collect();
    channels.sort();
    channels.dedup();
    let admitted = admitted(s);
    SocketView {
        id: session::public_id(s).to_string(),
        username: who.as_ref().map(|w| w.username.clone()),
        role: who.as_ref().map(|w| w.role.clone()),
        user_id: who.as_ref().and_then(|w| w.user_id),
        transport: match s.transport_type() {
            TransportType::Polling => "polling",
            TransportType::Websocket => "websocket",
        },
        bridge: s.req_parts().extensions.get::<Bridged>().map(|b| b.0),
        protocol: match s.protocol() {
            ProtocolVersion::V4 => "v4",
            ProtocolVersion::V5 => "v5",
        },
        channels,
        rooms,
        connected_at: admitted
            .map(|a| super::watch::rfc3339(a.at))
            .unwrap_or_default(),
        age_seconds: admitted.map_or(0, |a| a.instant.elapsed().as_secs()),
        queued_bytes: outbox::of(s).map_or(0, |o| o.queued_bytes()),
    }
}
