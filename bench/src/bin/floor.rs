//! The benchmark floor: the smallest honest server on livebase's own stack (axum +
//! socketioxide, configured like livebase) that speaks livebase's wire contract for the
//! benchmarked paths, so the load generator can measure how close livebase gets to the
//! limit of the stack it is built on.
//!
//! What it does:
//! - `GET /healthz` → `{"status":"ok"}`.
//! - `GET|POST /1/function/general/{name}` → `null` when an `Authorization` header is
//!   present, else 401 `{"Message":"missing credentials"}` (a bare axum route, against
//!   livebase's on-demand action route).
//! - `POST /1/objects/{object}` → `{"__metadata":{"id":"<n>"}}` from an atomic counter,
//!   then `created` `{seq, id}` to every socket (room `all`); no database.
//! - `GET /1/objects/{object}/{id}` and `GET /1/objects/{object}` (`pageSize`,
//!   `pageNumber`, `filter` with `equals`) on the `open` and `owned` objects, and
//!   `POST /1/bulk` to create their rows: SQLite (`--sqlite`, recreated at start) through
//!   sqlx running the statements livebase runs for the same requests, with its table
//!   shapes, indexes, connection options and pool sizes (see `floor/records.rs`), and
//!   livebase's JSON (`{totalRows, data}`, rows with `__metadata`). The caller of these
//!   is the `n` of `Authorization: Bearer floor-<n>` (the tokens the harness hands the
//!   floor); `owned` answers only the caller's rows.
//! - Socket.IO on `/`: a handshake needs `auth.token` (a non-empty string) and joins
//!   room `all`; `join`, `chan_in` → `chan_out` and `echo` answer by ack when asked,
//!   else by event, as livebase does.
//!
//! What it deliberately leaves out: storage for anything but those two objects' rows,
//! token verification (a token is taken at its word), users, roles and permissions,
//! field validation beyond types, filter operators other than `equals`, sort and search,
//! events and realtime for writes to the database, channel-name validation, JavaScript
//! actions, metrics, logging and connection limits. Whatever livebase costs beyond this
//! floor is the price of those.

#[path = "floor/records.rs"]
mod records;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State as HttpState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, Value as WireValue};
use socketioxide::socket::Socket;

/// Livebase's Socket.IO defaults.
const MAX_PAYLOAD: u64 = 1024 * 1024;
const MAX_BUFFER: usize = 1024;

#[derive(Parser)]
#[command(about = "Bare axum + socketioxide floor speaking livebase's benchmarked wire contract")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8070")]
    listen: SocketAddr,
    /// SQLite database for the read routes (deleted and recreated at start).
    #[arg(long, default_value = "floor.db")]
    sqlite: PathBuf,
}

struct App {
    io: SocketIo,
    next_id: AtomicU64,
    db: records::Db,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (layer, io) = SocketIo::builder()
        // engine.io's max_payload covers long-polling only; WebSocket has its own caps.
        .max_payload(MAX_PAYLOAD)
        .ws_max_message_size(MAX_PAYLOAD as usize)
        .ws_max_frame_size(MAX_PAYLOAD as usize)
        .max_buffer_size(MAX_BUFFER)
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(20))
        .build_layer();
    io.ns("/", on_connect.with(admit));

    let app = Arc::new(App {
        io: io.clone(),
        next_id: AtomicU64::new(0),
        db: records::open(&args.sqlite).await?,
    });
    let router = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/1/function/general/{name}", get(action).post(action))
        .route("/1/objects/{object}", post(create).get(records::list))
        .route("/1/objects/{object}/{id}", get(records::get_one))
        .route("/1/bulk", post(records::bulk))
        .with_state(app)
        .layer(layer);

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            io.close().await;
        })
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn action(headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if headers.contains_key(header::AUTHORIZATION) {
        (StatusCode::OK, Json(Value::Null))
    } else {
        let body = json!({ "Message": "missing credentials" });
        (StatusCode::UNAUTHORIZED, Json(body))
    }
}

async fn create(HttpState(app): HttpState<Arc<App>>, Json(body): Json<Value>) -> Json<Value> {
    let id = app.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let event = json!({ "seq": body.get("seq").cloned().unwrap_or(Value::Null), "id": id });
    app.io.to("all").emit("created", &event).await.ok();
    Json(json!({ "__metadata": { "id": id.to_string() } }))
}

/// Connect middleware: refuse a handshake without a non-empty string `auth.token`,
/// and set the socket up. That happens here, before the CONNECT answer, because
/// socketioxide runs the (async) connect handler as a task spawned after it: a client
/// emitting on `connect` could otherwise be read before its handlers existed.
async fn admit(s: SocketRef, TryData(auth): TryData<Value>) -> Result<(), &'static str> {
    match auth.ok().as_ref().and_then(|a| a.get("token")?.as_str()) {
        Some(token) if !token.is_empty() => {}
        _ => return Err("missing credentials: auth must be {token}"),
    }
    s.join("all");
    s.on("join", join);
    s.on("chan_in", chan_in);
    s.on("echo", echo);
    Ok(())
}

async fn on_connect() {}

/// The ack when the client asked for one, else an event on the socket.
struct Reply {
    ack: AckSender,
    wants_ack: bool,
    socket: Arc<Socket<LocalAdapter>>,
}

impl FromMessageParts<LocalAdapter> for Reply {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut WireValue,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let ack = AckSender::from_message_parts(s, v, ack_id)?;
        let (wants_ack, socket) = (ack_id.is_some(), s.clone());
        Ok(Reply {
            ack,
            wants_ack,
            socket,
        })
    }
}

impl Reply {
    fn send(self, ack: &Value, event: Option<(&str, &Value)>) {
        if self.wants_ack {
            self.ack.send(ack).ok();
        } else if let Some((name, data)) = event {
            self.socket.emit(name, data).ok();
        }
    }
}

/// `join(name)` (or `join({channel: name})`, as livebase also accepts).
async fn join(s: SocketRef, TryData(data): TryData<Value>, reply: Reply) {
    let name = match data {
        Ok(Value::String(name)) => name,
        Ok(Value::Object(mut m)) => match m.remove("channel") {
            Some(Value::String(name)) => name,
            _ => return,
        },
        _ => return,
    };
    s.join(name.clone());
    reply.send(
        &json!({ "ok": true, "channel": name }),
        Some(("joined", &json!(name))),
    );
}

async fn chan_in(s: SocketRef, io: SocketIo, TryData(data): TryData<Value>, reply: Reply) {
    let Ok(Value::Object(mut message)) = data else {
        return;
    };
    let Some(Value::String(channel)) = message.remove("channel") else {
        return;
    };
    let data = message.remove("data").unwrap_or(Value::Null);
    let out = json!({ "channel": channel, "data": data, "sid": s.id.to_string() });
    io.to(channel).emit("chan_out", &out).await.ok();
    reply.send(&json!({ "ok": true }), None);
}

async fn echo(TryData(data): TryData<Value>, reply: Reply) {
    let data = data.unwrap_or(Value::Null);
    reply.send(&data, Some(("echo", &data)));
}
