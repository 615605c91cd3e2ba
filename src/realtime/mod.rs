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
//! - `channels` — `echo`, `join`, `leave`, `chan_in`.
//! - `reply`    — how every command answers (ack or event), within the byte budget.
//! - `sails`    — virtual requests through the HTTP router, and subscriptions.
//! - `relay`    — committed changes (`RecordEvent`) → db, Sails and LoopBack events.
//! - `outbox`   — what is queued for each socket, in bytes, and its budget.
//! - `rooms`    — every room name, and the rooms of each kind of audience.
//! - `watch`    — the admin event stream: emits recorded while an admin watches.
//! - `trace`    — why each socket did or did not receive a recorded emit.
//! - `roster`   — this node's sockets as an admin lists them; ending one.
//! - `staticbackend` — StaticBackend's SSE and raw WebSocket transports, each
//!   connection bridged through a socket of this namespace (no rooms of its own).

pub mod channels;
pub mod cluster;
pub mod outbox;
pub mod presence;
pub mod relay;
pub mod reply;
pub mod resume;
pub mod rooms;
pub mod roster;
pub mod sails;
pub mod session;
pub mod staticbackend;
pub mod trace;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use serde::Serialize;
use socketioxide::extract::{State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{BroadcastError, SocketError};

use crate::auth::Auth;
use crate::config::Config;
use crate::schema::Schema;
use cluster::{BroadcastOperators, NodeDriver, SocketIo, SocketIoLayer, SocketRef};
use rooms::Audience;
use watch::{Cause, Watch};

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
    /// Bytes emitted per room and who is behind (see `outbox`).
    ledger: outbox::Ledger,
    /// Bumped whenever identities are revoked (sign-out, role or email change, user
    /// deleted, events lost). An authentication that began in an older epoch may have
    /// checked credentials that no longer hold, so it is not let in (see `session::enter`).
    epoch: AtomicU64,
    /// The admin event stream's recorder; idle (one atomic load per emit) unwatched.
    watch: Arc<Watch>,
    /// How this node reaches the others (`cluster`).
    driver: NodeDriver,
    /// The relay, for replays (`resume`); set once it runs.
    log: std::sync::OnceLock<resume::Log>,
    /// Channel presence; set once the store is known (`start_presence`).
    presence: std::sync::OnceLock<presence::Presence>,
}

/// Bytes each WebSocket reads at a time, and keeps allocated (`ws_read_buffer_size`).
const WS_READ_BUFFER: usize = 1024;

struct Limits {
    max_connections: usize,
    auth_timeout: Duration,
    /// Channels (`join`) one socket may be in at once.
    max_channels: usize,
    /// Bytes a socket may be behind (queued, not yet written; see `outbox`).
    buffer_bytes: u64,
    /// How long a socket may stay over `buffer_bytes` before it is disconnected.
    over_budget_patience: Duration,
    /// Messages one socket's queue holds (`--socket-buffer`).
    buffer_messages: usize,
}

impl Shared {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

impl Realtime {
    /// The Socket.IO layer to put around the HTTP router, and its handle. Sockets are
    /// admitted once `serve` has given the layer the router virtual requests run through.
    /// `driver` carries room operations to the other nodes (`cluster`).
    pub fn new(
        config: &Config,
        auth: Auth,
        schema: Arc<Schema>,
        driver: NodeDriver,
    ) -> (Realtime, SocketIoLayer) {
        let shared = Arc::new(Shared {
            auth,
            schema,
            limits: Limits {
                max_connections: config.max_connections,
                auth_timeout: Duration::from_millis(config.socket_auth_timeout_ms),
                max_channels: config.socket_max_channels,
                buffer_bytes: config.socket_buffer_bytes,
                over_budget_patience: Duration::from_millis(config.socket_ping_timeout_ms),
                buffer_messages: config.socket_buffer,
            },
            connections: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            ledger: outbox::Ledger::default(),
            watch: Arc::default(),
            driver: driver.clone(),
            log: std::sync::OnceLock::new(),
            presence: std::sync::OnceLock::new(),
        });
        // Other nodes' room emits count against this node's sockets' byte budgets, as
        // its own do (`emit_to`).
        let weak = Arc::downgrade(&shared);
        driver.on_remote_emit(Box::new(move |rooms, size| {
            let shared = weak.upgrade()?;
            shared
                .ledger
                .record(rooms, size, shared.limits.buffer_bytes);
            shared.ledger.behind()
        }));
        let (layer, io) = socketioxide::SocketIo::builder()
            .with_adapter::<cluster::NodeAdapter>(driver.adapter_state(&config.redis_prefix))
            .with_state(shared.clone())
            // engine.io applies `max_payload` to long-polling only; WebSocket messages
            // and frames have their own caps, which default to 64 and 16 MiB.
            .max_payload(config.socket_max_payload)
            .ws_max_message_size(config.socket_max_payload as usize)
            .ws_max_frame_size(config.socket_max_payload as usize)
            .max_buffer_size(config.socket_buffer)
            // Each WebSocket keeps a read buffer this size for its whole life (engine.io's
            // default is 4 KiB); clients mostly send small messages, and a larger one is
            // still read whole, in more reads.
            .ws_read_buffer_size(WS_READ_BUFFER)
            .ping_interval(Duration::from_millis(config.socket_ping_interval_ms))
            .ping_timeout(Duration::from_millis(config.socket_ping_timeout_ms))
            .build_layer();
        (Realtime { io, shared }, layer)
    }

    /// Opens the namespace: from now on sockets are admitted, and their virtual requests
    /// run through `router`. `close` undoes it (the router holds this handle). With
    /// several nodes this waits until the namespace listens on Redis, so no emit of
    /// another node is missed once sockets are admitted.
    pub async fn serve(&self, router: Router) -> anyhow::Result<()> {
        let admit = move |s: SocketRef,
                          io: SocketIo,
                          State(shared): State<Arc<Shared>>,
                          TryData(auth): TryData<serde_json::Value>| {
            let router = router.clone();
            async move {
                let register = |s: &SocketRef| register(s, &router);
                session::admit(s, io, shared, auth.ok(), register).await
            }
        };
        self.io
            .ns("/", session::on_connect.with(admit))
            .await
            .map_err(|e| {
                anyhow::anyhow!("--redis-url: cannot subscribe to the nodes' channels: {e}")
            })?;
        // Every drop reason is a series from the start (the metrics recorder is in place
        // by now), so a chart of its rate reads 0 rather than "no data" until a drop.
        for reason in ["bytes", "buffer_full", "closed"] {
            metrics::counter!("livebase_socket_drops_total", "reason" => reason).increment(0);
        }
        tokio::spawn(outbox::keep_accounts(self.shared.clone(), self.io.clone()));
        Ok(())
    }

    /// Operators over the namespace's sockets: on every node when nodes share Redis,
    /// else marked local, so one node never encodes a request meant for no one. `None`
    /// after `close`.
    pub(crate) fn root(&self) -> Option<BroadcastOperators> {
        root_of(&self.io, &self.shared)
    }

    /// Starts channel presence on `store`, as node `node` (`presence`); `several`: other
    /// nodes share the store.
    pub async fn start_presence(&self, store: crate::store::Store, node: &str, several: bool) {
        presence::start(&self.shared, self.io.clone(), store, node, several).await;
    }

    /// Connects the relay to the sockets' handlers, for replays (`resume`): called once,
    /// by `relay::run`.
    pub(crate) fn follow_log(&self, records: crate::records::Records) -> resume::RelayEnd {
        let (log, end) = resume::log(records);
        self.shared.attach_log(log);
        end
    }

    /// Operators over this node's sockets only: for what every node delivers itself,
    /// from the event log (`relay`). `None` after `close`.
    pub(crate) fn here(&self) -> Option<BroadcastOperators> {
        self.io.of("/").map(BroadcastOperators::local)
    }

    /// Whether Redis answers: `None` on one node (see `cluster`).
    pub fn redis_up(&self) -> Option<bool> {
        self.shared.driver.redis_up()
    }

    /// Emits on behalf of `cause`, which the admin event stream shows as `by`.
    pub fn on_behalf<'a>(&'a self, cause: Cause<'a>) -> Emitter<'a> {
        Emitter {
            realtime: self,
            cause,
        }
    }

    /// Backand `socket.emitUsers`, caused by livebase itself (see `on_behalf`).
    pub async fn emit_users<T: Serialize + ?Sized>(&self, event: &str, data: &T, users: &[String]) {
        self.on_behalf(Cause::Server)
            .emit_users(event, data, users)
            .await;
    }

    /// Backand `socket.emitRole`, caused by livebase itself.
    pub async fn emit_role<T: Serialize + ?Sized>(&self, event: &str, data: &T, role: &str) {
        self.on_behalf(Cause::Server)
            .emit_role(event, data, role)
            .await;
    }

    /// Backand `socket.emitAll`, caused by livebase itself.
    pub async fn emit_all<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        self.on_behalf(Cause::Server).emit_all(event, data).await;
    }

    /// `socket.broadcast(room, …)`, caused by livebase itself.
    pub async fn broadcast<T: Serialize + ?Sized>(&self, channel: &str, event: &str, data: &T) {
        self.on_behalf(Cause::Server)
            .broadcast(channel, event, data)
            .await;
    }

    /// Ends every socket of a user whose credentials or role changed: their rooms were
    /// chosen for the old identity. The sockets of `kept_session` (the sign-in that
    /// changed its own password) stay: their identity did not change.
    pub async fn disconnect_user(&self, username: &str, kept_session: Option<&str>) {
        self.end_user(username, kept_session, self.root()).await;
    }

    /// `disconnect_user` for this node's sockets only: another node revoked the user
    /// and told this one through the cluster bus (`store::bus`), which works whether or
    /// not Redis does.
    pub async fn disconnect_user_here(&self, username: &str, kept_session: Option<&str>) {
        self.end_user(username, kept_session, self.here()).await;
    }

    async fn end_user(
        &self,
        username: &str,
        kept_session: Option<&str>,
        root: Option<BroadcastOperators>,
    ) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.watch.revoked();
        let Some(root) = root else { return };
        let targets = root.to(rooms::user(username));
        let targets = match kept_session {
            Some(session) => targets.except(rooms::session(session)),
            None => targets,
        };
        if let Err(e) = targets.disconnect().await {
            tracing::debug!(error = %e, "disconnecting a user's sockets");
        }
    }

    /// Ends every authenticated socket: after lost events, no socket's rooms or view of
    /// the data can be trusted; clients reconnect and read afresh.
    pub async fn disconnect_all(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.watch.revoked();
        let Some(root) = self.root() else { return };
        if let Err(e) = root.to(rooms::AUTHENTICATED).disconnect().await {
            tracing::debug!(error = %e, "disconnecting every socket");
        }
    }

    /// Disconnects every socket and closes the namespace (shutdown).
    pub async fn close(&self) {
        self.shared.watch.close();
        // Takes the namespace away, and with it the handler that holds the router.
        self.io.close().await;
    }

    pub(crate) fn schema(&self) -> &Arc<Schema> {
        &self.shared.schema
    }

    pub(crate) fn io(&self) -> &SocketIo {
        &self.io
    }

    /// Opens an admin event stream: the recorded events after `after`, then every new
    /// one (see `watch`).
    pub fn watch_events(&self, after: u64) -> Result<watch::Subscription, watch::Refused> {
        self.shared.watch.subscribe(after)
    }
}

/// Identity-room and channel emits made on behalf of a `Cause`.
pub struct Emitter<'a> {
    realtime: &'a Realtime,
    cause: Cause<'a>,
}

impl Emitter<'_> {
    /// Backand `socket.emitUsers`: to every socket of these users (by username).
    pub async fn emit_users<T: Serialize + ?Sized>(&self, event: &str, data: &T, users: &[String]) {
        self.emit(Audience::Users(users), event, data).await;
    }

    /// Backand `socket.emitRole`: to every socket whose user has `role`.
    pub async fn emit_role<T: Serialize + ?Sized>(&self, event: &str, data: &T, role: &str) {
        self.emit(Audience::Role(role), event, data).await;
    }

    /// Backand `socket.emitAll`: to every authenticated socket.
    pub async fn emit_all<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        self.emit(Audience::Authenticated, event, data).await;
    }

    /// `socket.broadcast(room, …)`: to the members of a channel joined with `join`.
    pub async fn broadcast<T: Serialize + ?Sized>(&self, channel: &str, event: &str, data: &T) {
        self.emit(Audience::Channel(channel), event, data).await;
    }

    async fn emit<T: Serialize + ?Sized>(&self, audience: Audience<'_>, event: &str, data: &T) {
        let realtime = self.realtime;
        emit_to(
            realtime.root(),
            &realtime.shared,
            audience,
            self.cause,
            event,
            data,
        )
        .await;
    }
}

/// A revoked identity's sockets end: their rooms were chosen for it.
impl crate::users::OnRevoked for Realtime {
    fn revoked<'a>(
        &'a self,
        revoked: &'a crate::users::Revoked,
    ) -> crate::records::BoxFuture<'a, ()> {
        Box::pin(self.disconnect_user(&revoked.username, revoked.kept_session.as_deref()))
    }
}

/// Every event handler of an admitted socket.
fn register(s: &SocketRef, router: &Router) {
    session::register(s);
    channels::register(s);
    sails::register(s, router);
    s.on_fallback(reply::unknown_event);
}

/// One room emit to `audience`'s rooms, counted. Sockets behind on their byte budget
/// (`outbox`) are left out; sockets whose message queue is full miss it too and are
/// counted (they are disconnected at their next heartbeat, which cannot be queued
/// either). While an admin watches, the emit is recorded with `cause` (`watch`).
pub(crate) async fn emit_to<T: Serialize + ?Sized>(
    reach: Option<BroadcastOperators>,
    shared: &Shared,
    audience: Audience<'_>,
    cause: Cause<'_>,
    event: &str,
    data: &T,
) {
    let rooms = audience.rooms();
    if rooms.is_empty() {
        return;
    }
    // After `close` (shutdown) the namespace is gone (`reach` is `None`): requests
    // still draining then commit with nobody left to tell.
    let Some(root) = reach else {
        return;
    };
    metrics::counter!("livebase_socket_emits_total", "kind" => audience.label()).increment(1);
    let size = outbox::size_of(event, data);
    shared
        .ledger
        .record(&rooms, size, shared.limits.buffer_bytes);
    let behind = shared.ledger.behind();
    // Only while an admin watches: the local sockets the adapter will select, listed
    // beside the one emit (never instead of it).
    let watched = shared.watch.watched().then(|| {
        let at = std::time::Instant::now();
        (
            at,
            rooms.clone(),
            root.clone().local().to(rooms.clone()).sockets(),
        )
    });
    let targets = root.to(rooms);
    let targets = match &behind {
        Some(behind) => targets.except(behind.as_ref().clone()),
        None => targets,
    };
    let mut failed = 0;
    match targets.emit(event, data).await {
        Ok(()) => {}
        Err(BroadcastError::Socket(errors)) => {
            failed = errors.len();
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
    if let Some((at, rooms, in_rooms)) = watched {
        shared.watch.record(watch::Sent {
            audience: &audience,
            cause: &cause,
            rooms,
            event,
            data,
            at,
            in_rooms,
            behind,
            failed,
        });
    }
}

/// See `Realtime::root`.
pub(crate) fn root_of(io: &SocketIo, shared: &Shared) -> Option<BroadcastOperators> {
    let root = io.of("/")?;
    Some(if shared.driver.spans_nodes() {
        root
    } else {
        root.local()
    })
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
