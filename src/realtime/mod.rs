//! Socket.IO on the REST port (namespace `/`, protocol v4 and v5): socket
//! authentication, identity rooms, StaticBackend channels, `db-<object>` channels,
//! Sails virtual requests and subscriptions, LoopBack event names, and the limits that
//! keep one client from hurting the others.
//!
//! Who receives what is decided only by rooms (`rooms`), and which room a socket joins
//! is decided only by `auth::access`, the same function REST asks. This module never
//! writes data and never loops over sockets to filter an event.
//!
//! - `session`  — authentication, identity rooms, connection limit, auth timeout.
//! - `channels` — `echo`, `join`, `leave`, `chan_in`, and how commands answer.
//! - `sails`    — virtual requests through the HTTP router, and subscriptions.
//! - `relay`    — committed changes (`RecordEvent`) → db, Sails and LoopBack events.
//! - `outbox`   — what is queued for each socket, in bytes, and its budget.
//! - `rooms`    — every room name.

pub mod channels;
pub mod outbox;
pub mod relay;
pub mod rooms;
pub mod sails;
pub mod session;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::Router;
use serde::Serialize;
use socketioxide::extract::SocketRef;
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{BroadcastError, SocketError, SocketIo};

use crate::auth::Auth;
use crate::config::Config;
use crate::schema::Schema;

/// The realtime layer's handle for the rest of livebase (actions, account handlers):
/// emits to identity rooms and channels. Cloning is shallow.
#[derive(Clone)]
pub struct Realtime {
    io: SocketIo,
    shared: Arc<Shared>,
}

/// What the socket handlers share (socketioxide state).
pub(crate) struct Shared {
    auth: Auth,
    schema: Arc<Schema>,
    limits: Limits,
    /// Sockets admitted and not yet disconnected, for the connection limit.
    connections: AtomicUsize,
    /// The HTTP router virtual requests run through. Set once serving starts and taken
    /// away when it stops, so the router (which holds this) is not kept alive forever.
    router: RwLock<Option<Router>>,
    io: OnceLock<SocketIo>,
    /// Bytes emitted per room and who is behind (see `outbox`).
    ledger: outbox::Ledger,
    /// Bumped whenever identities are revoked (sign-out, role or email change, user
    /// deleted, events lost). An authentication that began in an older epoch may have
    /// checked credentials that no longer hold, so it is not let in (see `session::enter`).
    epoch: AtomicU64,
}

struct Limits {
    max_connections: usize,
    auth_timeout: Duration,
    /// Channels (`join`) one socket may be in at once.
    max_channels: usize,
    /// Bytes a socket may be behind (queued, not yet written; see `outbox`).
    buffer_bytes: u64,
    /// How long a socket may stay over `buffer_bytes` before it is disconnected.
    over_budget_patience: Duration,
}

impl Shared {
    fn router(&self) -> Option<Router> {
        self.router.read().ok()?.clone()
    }

    fn io(&self) -> SocketIo {
        self.io.get().expect("set in Realtime::new").clone()
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

impl Realtime {
    /// The Socket.IO layer to put around the HTTP router, and its handle.
    pub fn new(config: &Config, auth: Auth, schema: Arc<Schema>) -> (Realtime, SocketIoLayer) {
        let shared = Arc::new(Shared {
            auth,
            schema,
            limits: Limits {
                max_connections: config.max_connections,
                auth_timeout: Duration::from_millis(config.socket_auth_timeout_ms),
                max_channels: config.socket_max_channels,
                buffer_bytes: config.socket_buffer_bytes,
                over_budget_patience: Duration::from_millis(config.socket_ping_timeout_ms),
            },
            connections: AtomicUsize::new(0),
            router: RwLock::new(None),
            io: OnceLock::new(),
            epoch: AtomicU64::new(0),
            ledger: outbox::Ledger::default(),
        });
        let (layer, io) = SocketIo::builder()
            .with_state(shared.clone())
            // engine.io applies `max_payload` to long-polling only; WebSocket messages
            // and frames have their own caps, which default to 64 and 16 MiB.
            .max_payload(config.socket_max_payload)
            .ws_max_message_size(config.socket_max_payload as usize)
            .ws_max_frame_size(config.socket_max_payload as usize)
            .max_buffer_size(config.socket_buffer)
            .ping_interval(Duration::from_millis(config.socket_ping_interval_ms))
            .ping_timeout(Duration::from_millis(config.socket_ping_timeout_ms))
            .build_layer();
        io.ns("/", session::on_connect.with(session::admit));
        shared.io.set(io.clone()).ok();
        tokio::spawn(outbox::keep_accounts(shared.clone()));
        (Realtime { io, shared }, layer)
    }

    /// Lets virtual requests reach `router` (`None` when serving stops).
    pub fn set_router(&self, router: Option<Router>) {
        if let Ok(mut slot) = self.shared.router.write() {
            *slot = router;
        }
    }

    /// Backand `socket.emitUsers`: to every socket of these users (by username).
    pub async fn emit_users<T: Serialize + ?Sized>(&self, event: &str, data: &T, users: &[String]) {
        let rooms = users.iter().map(|u| rooms::user(u)).collect();
        emit_to(&self.shared, rooms, event, data, "users").await;
    }

    /// Backand `socket.emitRole`: to every socket whose user has `role`.
    pub async fn emit_role<T: Serialize + ?Sized>(&self, event: &str, data: &T, role: &str) {
        emit_to(&self.shared, vec![rooms::role(role)], event, data, "role").await;
    }

    /// Backand `socket.emitAll`: to every authenticated socket.
    pub async fn emit_all<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        let rooms = vec![rooms::AUTHENTICATED.to_string()];
        emit_to(&self.shared, rooms, event, data, "all").await;
    }

    /// `socket.broadcast(room, …)`: to the members of a channel joined with `join`.
    pub async fn broadcast<T: Serialize + ?Sized>(&self, channel: &str, event: &str, data: &T) {
        emit_to(
            &self.shared,
            vec![rooms::channel(channel)],
            event,
            data,
            "channel",
        )
        .await;
    }

    /// Ends every socket of a user whose credentials or role changed: their rooms were
    /// chosen for the old identity.
    pub async fn disconnect_user(&self, username: &str) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        let Some(root) = self.io.of("/") else { return };
        if let Err(e) = root.to(rooms::user(username)).disconnect().await {
            tracing::debug!(error = %e, "disconnecting a user's sockets");
        }
    }

    /// Ends every authenticated socket: after lost events, no socket's rooms or view of
    /// the data can be trusted; clients reconnect and read afresh.
    pub async fn disconnect_all(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        let Some(root) = self.io.of("/") else { return };
        if let Err(e) = root.to(rooms::AUTHENTICATED).disconnect().await {
            tracing::debug!(error = %e, "disconnecting every socket");
        }
    }

    /// Disconnects every socket (shutdown).
    pub async fn close(&self) {
        self.io.close().await;
    }

    pub(crate) fn schema(&self) -> &Arc<Schema> {
        &self.shared.schema
    }

    pub(crate) fn io(&self) -> &SocketIo {
        &self.io
    }
}

/// One room emit, counted. Sockets behind on their byte budget (`outbox`) are left out;
/// sockets whose message queue is full miss it too and are counted (they are
/// disconnected at their next heartbeat, which cannot be queued either).
pub(crate) async fn emit_to<T: Serialize + ?Sized>(
    shared: &Shared,
    rooms: Vec<String>,
    event: &str,
    data: &T,
    kind: &'static str,
) {
    if rooms.is_empty() {
        return;
    }
    // After `close` (shutdown) the namespace is gone and `io.to` would panic: requests
    // still draining then commit with nobody left to tell.
    let Some(root) = shared.io().of("/") else {
        return;
    };
    metrics::counter!("livebase_socket_emits_total", "kind" => kind).increment(1);
    let size = outbox::size_of(event, data);
    shared
        .ledger
        .record(&rooms, size, shared.limits.buffer_bytes);
    let targets = root.to(rooms);
    let targets = match shared.ledger.behind() {
        Some(behind) => targets.except(behind.as_ref().clone()),
        None => targets,
    };
    match targets.emit(event, data).await {
        Ok(()) => {}
        Err(BroadcastError::Socket(errors)) => {
            for error in errors {
                let reason = match error {
                    SocketError::InternalChannelFull => "buffer_full",
                    SocketError::Closed => "closed",
                };
                metrics::counter!("livebase_socket_drops_total", "reason" => reason).increment(1);
            }
        }
        Err(e) => tracing::warn!(error = %e, event, "socket emit failed"),
    }
}

impl Shared {
    /// Whether one more message of `size` bytes may be queued for `s` (see `outbox`);
    /// a socket that stayed over its budget too long is disconnected here.
    pub(crate) fn admit(&self, s: &SocketRef, size: u64) -> bool {
        let Some(outbox) = outbox::of(s) else {
            return true;
        };
        let verdict = outbox.admit(
            size,
            self.limits.buffer_bytes,
            self.limits.over_budget_patience,
        );
        match verdict {
            outbox::Verdict::Send => return true,
            outbox::Verdict::Drop => {}
            outbox::Verdict::Disconnect => {
                metrics::counter!("livebase_socket_over_budget_disconnects_total").increment(1);
                s.clone().disconnect().ok();
            }
        }
        metrics::counter!("livebase_socket_drops_total", "reason" => "bytes").increment(1);
        false
    }
}
