//! StaticBackend's client unchanged: Server-Sent Events (`GET /sse/connect` with
//! `POST /sse/msg`) and a raw WebSocket (`/ws`), carrying its envelope
//! `{sid, type, data, channel, token}`.
//!
//! Every such connection is backed by a real Socket.IO socket of livebase's own
//! namespace, connected in process (`bridge`): so authentication, rooms, permission
//! filtering, limits, revocation, the connection limit and the byte budget are exactly
//! those of every other socket, and an SSE client and a Socket.IO socket in one channel
//! see each other. This module only translates (`envelope`); it keeps no rooms and
//! decides no permission.
//!
//! - `bridge`   — one connection's in-process socket, its commands and its queue.
//! - `envelope` — the wire form in and out, and which Socket.IO event becomes which.
//! - `sse`      — `GET /sse/connect` and `POST /sse/msg`.
//! - `ws`       — the raw WebSocket at `/ws`.
//!
//! The `sid` a client gets in `init` is a fresh random value known only to it and
//! mapped here to its bridge (never the engine.io id); still, a sid alone acts on
//! nothing: `POST /sse/msg` needs the envelope's `token` to be valid and to be the
//! identity that sid authenticated as.

mod bridge;
mod envelope;
mod sse;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use crate::auth::Auth;
use crate::config::Config;
use crate::realtime::roster::Bridged;
use bridge::Bridge;

/// The StaticBackend routes' state: the open bridges by sid, and what a bridge needs
/// to open its socket. Cloning is shallow.
#[derive(Clone)]
pub struct StaticBackend {
    hub: Arc<Hub>,
}

struct Hub {
    auth: Auth,
    /// The service the listener serves beneath these routes (router and Socket.IO
    /// layer): bridged sockets connect through it, exactly as a client would.
    service: Router,
    /// Open bridges by their client's sid. Only connected sockets are here, so its size
    /// is bounded by the connection limit.
    bridges: Mutex<HashMap<Arc<str>, Arc<Bridge>>>,
    limits: Limits,
}

#[derive(Clone, Copy)]
struct Limits {
    /// Largest envelope accepted (`POST /sse/msg` body, `/ws` message), the socket's own
    /// payload limit.
    max_payload: usize,
    /// Bytes queued for one client before its bridge stops reading its socket (which
    /// then falls behind on its byte budget like any slow socket).
    queue_bytes: usize,
    /// How often an idle SSE stream or WebSocket gets a heartbeat.
    heartbeat: Duration,
    write_stall: Duration,
}

impl StaticBackend {
    pub fn new(config: &Config, auth: Auth, service: Router) -> Self {
        let limits = Limits {
            max_payload: config.socket_max_payload as usize,
            queue_bytes: (config.socket_buffer_bytes as usize).clamp(64 * 1024, 64 << 20),
            heartbeat: Duration::from_millis(config.socket_ping_interval_ms.max(1000)),
            write_stall: Duration::from_millis(config.write_stall_timeout_ms),
        };
        StaticBackend {
            hub: Arc::new(Hub {
                auth,
                service,
                bridges: Mutex::default(),
                limits,
            }),
        }
    }

    /// The three StaticBackend routes; everything else is left to the caller's fallback.
    pub fn router(self) -> Router {
        Router::new()
            .route("/sse/connect", get(sse::connect))
            .route("/sse/msg", post(sse::message))
            .route("/ws", get(ws::upgrade))
            .with_state(self)
    }

    /// Opens a bridge for a client at `addr` on `transport` (`sse` or `ws`, which the
    /// admin's socket list shows), resuming after `last_seq` if given (`resume`): `Err`
    /// carries why its socket was refused (the connection limit, or the server closing).
    async fn open(
        &self,
        addr: SocketAddr,
        transport: &'static str,
        last_seq: Option<u64>,
    ) -> Result<bridge::Opened, String> {
        let service = self
            .hub
            .service
            .clone()
            .layer(axum::Extension(Bridged(transport)));
        let opened = Bridge::open(&service, addr, self.hub.limits, last_seq).await?;
        if let Ok(mut bridges) = self.hub.bridges.lock() {
            bridges.insert(opened.bridge.sid.clone(), opened.bridge.clone());
        }
        metrics::gauge!("livebase_staticbackend_connections").increment(1.0);
        let hub = self.hub.clone();
        let bridge = opened.bridge.clone();
        tokio::spawn(async move {
            bridge.closed().await;
            if let Ok(mut bridges) = hub.bridges.lock() {
                bridges.remove(&bridge.sid);
            }
            metrics::gauge!("livebase_staticbackend_connections").decrement(1.0);
        });
        Ok(opened)
    }

    fn bridge(&self, sid: &str) -> Option<Arc<Bridge>> {
        self.hub.bridges.lock().ok()?.get(sid).cloned()
    }

    fn auth(&self) -> &Auth {
        &self.hub.auth
    }

    fn limits(&self) -> Limits {
        self.hub.limits
    }
}

/// The peer address a request came from (the accept loop puts it on every request).
fn peer(request: &axum::extract::Request) -> SocketAddr {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}
