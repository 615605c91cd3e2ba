//! Who a socket is: the three ways to authenticate (handshake `auth`, Backand `login`,
//! LoopBack `authentication`), the rooms an identity joins, the connection limit and the
//! authentication timeout.
//!
//! Every credential goes through `Auth`, exactly as a REST request's headers do, so a
//! socket's identity is the identity REST would give the same credentials. A socket
//! without an identity is in no room and therefore receives no event.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::cluster::SocketIo;
use super::cluster::SocketRef;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{State, TryData};
use socketioxide::socket::DisconnectReason;

use super::Shared;
use super::rooms::{self, Feed};
use crate::auth::{Identity, access};
use crate::error::ApiError;
use crate::schema::Operation;

/// A socket's identity, kept in its extensions. A new `Arc` per authentication, so a
/// handler that awaited can tell (`Arc::ptr_eq`) whether the socket re-authenticated.
#[derive(Clone)]
pub struct Session(pub Arc<Identity>);

/// The identity of an authenticated socket.
pub fn identity(s: &SocketRef) -> Option<Arc<Identity>> {
    s.extensions.get::<Session>().map(|session| session.0)
}

/// The id other clients may see for a socket (`chan_out.sid`). socketioxide uses the
/// engine.io session id as the socket id, and that id is a credential: whoever knows it
/// can poll or upgrade the session as its owner. So it never leaves the server except
/// to its own client; everyone else sees this random one, which unlocks nothing.
#[derive(Clone)]
pub struct PublicId(pub Arc<str>);

impl PublicId {
    fn new() -> Self {
        use base64::Engine;
        let bytes: [u8; 15] = rand::random();
        PublicId(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes)
                .into(),
        )
    }
}

/// A socket's public id (every admitted socket has one).
pub fn public_id(s: &SocketRef) -> Arc<str> {
    s.extensions
        .get::<PublicId>()
        .map(|id| id.0)
        .unwrap_or_else(|| Arc::from(""))
}

/// Longest wait for socketioxide to finish connecting a socket (see `settled`).
const SETTLE_STEPS: u32 = 1000;

/// socketioxide sends a socket's CONNECT answer and only then marks it connected, and it
/// already handles the client's next packets meanwhile (on a multi-threaded runtime, on
/// another thread): an event sent the moment the client sees CONNECT can run while
/// `connected()` is still false, when `emit` refuses to send and `join_as` / `enter`
/// take the socket for closed (a `join` refused as "re-authenticated meanwhile", a
/// `login` never answered). Every handler first waits that moment out. `false` if the
/// socket is closing instead: a connecting socket is already in its namespace, a closed
/// one has left it (or leaves it as soon as its disconnect handler ends).
pub async fn settled(s: &SocketRef) -> bool {
    for _ in 0..SETTLE_STEPS {
        if s.connected() {
            return true;
        }
        if s.local().get_socket(s.id).is_none() {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    s.connected()
}

/// Joins `rooms` on behalf of `who`, unless the socket meanwhile disconnected or
/// re-authenticated (a handler may have awaited since it read the identity): then the
/// rooms are left again and `false` returned. `enter` stores the new identity before it
/// clears the old rooms, so whichever order the two run in, no room of an old identity
/// and no room of a closed socket survives.
pub fn join_as(s: &SocketRef, who: &Arc<Identity>, rooms: Vec<String>) -> bool {
    s.join(rooms.clone());
    let current = s.connected() && identity(s).is_some_and(|now| Arc::ptr_eq(&now, who));
    if !current {
        s.leave(rooms);
    }
    current
}

/// One admitted connection. Kept in the socket's extensions, so the slot is given back
/// when the socket is dropped, however it ended (even before its connect handler ran).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("livebase_socket_connections").decrement(1.0);
    }
}

pub const NOT_AUTHENTICATED: &str =
    "authenticate first: handshake auth {token} or {anonymousToken}, `login` or `authentication`";

/// Why a connection was refused; the client receives the text in its `connect_error`.
#[derive(Debug)]
pub struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Connect middleware: the connection limit first (cheap, and a refused socket costs no
/// token check), then handshake credentials (a bad one refuses with the reason).
/// `register` puts the socket's event handlers in place.
pub(crate) async fn admit(
    s: SocketRef,
    io: SocketIo,
    shared: Arc<Shared>,
    auth: Option<Value>,
    register: impl FnOnce(&SocketRef),
) -> Result<(), Refusal> {
    let open = shared.connections.fetch_add(1, Ordering::SeqCst);
    if open >= shared.limits.max_connections {
        shared.connections.fetch_sub(1, Ordering::SeqCst);
        refused("limit");
        return Err(Refusal(format!(
            "connection limit reached: this server accepts {} sockets at once; try again later",
            shared.limits.max_connections
        )));
    }
    metrics::gauge!("livebase_socket_connections").increment(1.0);
    s.extensions.insert(Arc::new(Slot(shared.clone())));
    s.extensions.insert(super::roster::Admitted::now());
    let public = PublicId::new();
    s.join(rooms::socket(&public.0));
    s.extensions.insert(public);
    super::outbox::open(&s);
    let epoch = shared.epoch();
    let mut who = None;
    let mut until = None;
    // `auth: {lastSeq}`, or `?lastSeq=` on the handshake URL for clients that send no
    // `auth` (socket.io 2.x, sails.io.js).
    let resume_from = match auth.as_ref() {
        Some(auth) if auth.get("lastSeq").is_some() => super::resume::last_seq(auth),
        _ => super::resume::last_seq_in_query(s.req_parts().uri.query()),
    };
    let resume_from = match resume_from {
        Ok(after) => after,
        Err(e) => {
            refused("auth");
            return Err(Refusal(e.to_string()));
        }
    };
    let found = match auth.as_ref() {
        Some(auth) => handshake_identity(&shared, auth).await,
        None => Ok(None),
    };
    let found = match found {
        Ok(None) => handshake_request_identity(&shared, s.req_parts()).await,
        other => other,
    };
    match found {
        Ok(Some((found, expires))) => {
            who = Some(Arc::new(found));
            until = expires;
        }
        Ok(None) => {}
        Err(e) => {
            refused("auth");
            return Err(Refusal(e.to_string()));
        }
    }
    // Handlers and rooms are in place before the CONNECT answer leaves: socketioxide
    // sends it before it runs the (spawned) connect handler, and a client that emits on
    // `connect` may be read first. A socket that fails to connect leaves its rooms.
    register(&s);
    match who {
        Some(who) => {
            match resume_from {
                // The identity rooms are joined once connected, with the replay of what
                // the socket missed in them (`on_connect`, `resume`).
                Some(after) => {
                    s.extensions.insert(Session(who.clone()));
                    s.extensions.insert(super::resume::Resume::new(after));
                    s.extensions.insert(ResumeAtConnect { after, epoch });
                }
                None => join_identity_rooms(&s, &shared, &who),
            }
            if shared.epoch() != epoch {
                refused("revoked");
                return Err(Refusal(REVOKED.to_string()));
            }
            watch_expiry(&s, &io, &who, until);
        }
        None => {
            // Resumed once it authenticates with an event (`login`, `authentication`),
            // as StaticBackend's bridged connections do.
            if let Some(after) = resume_from {
                s.extensions.insert(super::resume::Resume::new(after));
                s.extensions.insert(ResumeAtConnect { after, epoch });
            }
            watch_auth_timeout(&s, &io, &shared)
        }
    }
    Ok(())
}

fn refused(reason: &'static str) {
    metrics::counter!("livebase_socket_refusals_total", "reason" => reason).increment(1);
}

/// Credentials on the handshake request itself, as sails.io.js and socket.io 2.x
/// clients send them (they have no `auth` payload): `?token=<access token>` on its URL,
/// or `Authorization` / `AnonymousToken` headers, read exactly as REST reads them.
async fn handshake_request_identity(
    shared: &Shared,
    request: &Parts,
) -> Result<Option<(Identity, Option<u64>)>, ApiError> {
    let token = request.uri.query().and_then(|query| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find_map(|(name, value)| (name == "token").then_some(value))
    });
    if let Some(token) = token {
        let (who, until) = shared.auth.identify_bearer_expiring(&token).await?;
        return Ok(Some((who, Some(until))));
    }
    let headers = &request.headers;
    if headers.contains_key("authorization") || headers.contains_key("anonymoustoken") {
        return shared.auth.identify_expiring(headers).await.map(Some);
    }
    Ok(None)
}

/// `auth: {token}` (with or without `Bearer `) or `auth: {anonymousToken}`; none of
/// them there means the handshake request itself is looked at, and no credentials at
/// all that the socket will authenticate with an event.
async fn handshake_identity(
    shared: &Shared,
    auth: &Value,
) -> Result<Option<(Identity, Option<u64>)>, ApiError> {
    let field = |name: &str| match auth.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::Unauthorized(format!(
            "handshake auth `{name}` must be a string"
        ))),
    };
    if let Some(token) = field("token")? {
        let (who, until) = shared.auth.identify_bearer_expiring(&token).await?;
        return Ok(Some((who, Some(until))));
    }
    if let Some(token) = field("anonymousToken")? {
        return shared
            .auth
            .identify_anonymous(&token)
            .map(|who| Some((who, None)));
    }
    Ok(None)
}

/// Counts the connection. Everything a socket needs was set up by `admit`, before the
/// CONNECT answer; this handler runs after it, as a spawned task.
pub(crate) async fn on_connect(s: SocketRef, State(shared): State<Arc<Shared>>) {
    metrics::counter!("livebase_socket_connects_total").increment(1);
    if let Some(who) = identity(&s) {
        resume_identity_rooms(&s, &shared, &who, None).await;
    }
}

/// For a socket that connected with `lastSeq`: joins `who`'s identity rooms with the
/// replay of what it missed in them (`resume`), then tells it `recovered`. `epoch`: when
/// an authentication event checked the credentials (else the handshake's).
async fn resume_identity_rooms(
    s: &SocketRef,
    shared: &Shared,
    who: &Arc<Identity>,
    epoch: Option<u64>,
) {
    let Some(at_connect) = s.extensions.remove::<ResumeAtConnect>() else {
        return;
    };
    if !settled(s).await {
        return;
    }
    let rooms = identity_rooms(s, shared, who);
    let epoch = epoch.unwrap_or(at_connect.epoch);
    if let Some(outcome) =
        super::resume::join(shared, s, who, rooms, at_connect.after, Some(epoch)).await
    {
        let _ = s.emit("recovered", &outcome.to_json());
    }
}

/// A socket that connected with `lastSeq` and has yet to join its identity rooms.
#[derive(Clone, Copy)]
struct ResumeAtConnect {
    after: u64,
    epoch: u64,
}

/// The session's own handlers: disconnect accounting and the two authentication events.
pub fn register(s: &SocketRef) {
    s.on_disconnect(on_disconnect);
    s.on("login", login);
    s.on("authentication", authentication);
}

/// A socket that connected without credentials has `--socket-auth-timeout-ms` to
/// authenticate with an event, or is told why and disconnected.
fn watch_auth_timeout(s: &SocketRef, io: &SocketIo, shared: &Shared) {
    let timeout = shared.limits.auth_timeout;
    // The id, not the socket: holding it would keep a closed socket (and its
    // connection slot) alive until the timeout.
    let (io, sid) = (io.clone(), s.id);
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let Some(s) = io.get_socket(sid) else {
            return;
        };
        if identity(&s).is_none() {
            refused("auth_timeout");
            s.emit(
                "error",
                &json!({ "message": format!(
                    "not authenticated within {} ms; disconnecting",
                    timeout.as_millis()
                )}),
            )
            .ok();
            s.disconnect().ok();
        }
    });
}

/// A socket authenticated with an access token lives as long as the token would be
/// accepted over HTTP (its `exp` plus the verification leeway): then it is told why and
/// disconnected, unless it authenticated again meanwhile (a new identity, whose own
/// expiry then applies). Clients reconnect with a fresh token, as after a sign-out.
fn watch_expiry(s: &SocketRef, io: &SocketIo, who: &Arc<Identity>, until: Option<u64>) {
    let Some(until) = until else {
        return;
    };
    let (io, sid, who) = (io.clone(), s.id, Arc::downgrade(who));
    tokio::spawn(async move {
        let refused_from = std::time::UNIX_EPOCH + std::time::Duration::from_secs(until);
        let left = refused_from
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(left).await;
        let Some(s) = io.get_socket(sid) else {
            return;
        };
        let current = identity(&s);
        let same = match (current, who.upgrade()) {
            (Some(current), Some(who)) => Arc::ptr_eq(&current, &who),
            _ => false,
        };
        if same {
            refused("token_expired");
            s.emit(
                "error",
                &json!({ "message": "the access token expired; reconnect with a new one" }),
            )
            .ok();
            s.disconnect().ok();
        }
    });
}

async fn on_disconnect(
    s: SocketRef,
    io: SocketIo,
    State(shared): State<Arc<Shared>>,
    reason: DisconnectReason,
) {
    // Its channels' members hear it left.
    super::presence::left(&shared, &io, &s, None).await;
    let reason = match reason {
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::ClientNSDisconnect | DisconnectReason::TransportClose => "client",
        DisconnectReason::ServerNSDisconnect => "server",
        DisconnectReason::ClosingServer => "shutdown",
        DisconnectReason::PacketParsingError => "bad_packet",
        _ => "transport_error",
    };
    metrics::counter!("livebase_socket_disconnects_total", "reason" => reason).increment(1);
}

const REVOKED: &str =
    "these credentials were revoked or changed while the socket authenticated; authenticate again";

/// Puts an authenticated socket in its identity rooms (user, role, everyone) and in the
/// LoopBack rooms of the objects it may read. Authenticating again replaces all of it.
/// `false` (and no identity) if the socket closed meanwhile, or if a sign-out or role
/// change happened since `epoch`, when the credentials were checked: the rooms might be
/// those of an identity that no longer holds.
fn enter(s: &SocketRef, shared: &Shared, who: &Arc<Identity>, epoch: u64) -> bool {
    if s.extensions.get::<ResumeAtConnect>().is_some() {
        // Resuming: the identity rooms are joined with their replay
        // (`resume_identity_rooms`, once the answer left).
        s.extensions.insert(Session(who.clone()));
        s.leave_all();
        s.join(rooms::socket(&public_id(s)));
    } else {
        join_identity_rooms(s, shared, who);
    }
    if !s.connected() || shared.epoch() != epoch {
        s.extensions.remove::<Session>();
        s.leave_all();
        s.join(rooms::socket(&public_id(s)));
        return false;
    }
    true
}

/// `who` becomes the socket's identity, in exactly its rooms.
fn join_identity_rooms(s: &SocketRef, shared: &Shared, who: &Arc<Identity>) {
    // The new identity first, then the rooms: see `join_as`.
    s.extensions.insert(Session(who.clone()));
    super::resume::leaving(s, s.rooms().iter().map(|r| r.to_string()));
    s.leave_all();
    s.join(identity_rooms(s, shared, who));
}

/// The rooms `who` is in: its own, its user, role and sign-in, everyone's, and the
/// LoopBack rooms of the objects it may read.
fn identity_rooms(s: &SocketRef, shared: &Shared, who: &Identity) -> Vec<String> {
    let mut joined = vec![
        rooms::socket(&public_id(s)),
        rooms::user(&who.username),
        rooms::role(&who.role),
        rooms::AUTHENTICATED.to_string(),
    ];
    if let Some(session) = &who.session {
        joined.push(rooms::session(session));
    }
    for object in shared.schema.objects.values() {
        if object.publishes_loopback()
            && let Some(room) =
                rooms::reader(Feed::LoopBack, object, access(who, object, Operation::Read))
        {
            joined.push(room);
        }
    }
    joined
}

fn welcome(who: &Identity) -> Value {
    Value::Object(who.profile())
}

/// Backand: `login(authorizationHeader, anonymousToken, appName)` → `authorized` or
/// `notAuthorized`.
async fn login(
    s: SocketRef,
    io: SocketIo,
    State(shared): State<Arc<Shared>>,
    TryData(args): TryData<Args>,
) {
    if !settled(&s).await {
        return;
    }
    let args = args.map(|a| a.0).unwrap_or_default();
    let text = |i: usize| args.get(i).and_then(Value::as_str).map(str::trim);
    let epoch = shared.epoch();
    let mut headers = HeaderMap::new();
    if let Some(value) = text(0).filter(|v| !v.is_empty()) {
        // A bare token is a bearer token, as in the handshake and `authentication`.
        let value = if value.contains(' ') {
            value.to_string()
        } else {
            format!("Bearer {value}")
        };
        match HeaderValue::from_str(&value) {
            Ok(v) => {
                headers.insert("authorization", v);
            }
            Err(_) => return deny(&s, "notAuthorized", "malformed authorization value"),
        }
    }
    if let Some(value) = text(1).filter(|v| !v.is_empty())
        && let Ok(v) = HeaderValue::from_str(value)
    {
        headers.insert("anonymoustoken", v);
    }
    if let Some(app) = text(2).filter(|a| !a.is_empty())
        && app != shared.auth.secrets().app_name
    {
        return deny(&s, "notAuthorized", &format!("unknown app `{app}`"));
    }
    match shared.auth.identify_expiring(&headers).await {
        Ok((who, until)) => {
            let who = Arc::new(who);
            let entered = enter(&s, &shared, &who, epoch);
            // Out of every channel as whoever it was before.
            super::presence::left(&shared, &io, &s, None).await;
            if entered {
                watch_expiry(&s, &io, &who, until);
                s.emit("authorized", &welcome(&who)).ok();
                resume_identity_rooms(&s, &shared, &who, Some(epoch)).await;
            } else {
                deny(&s, "notAuthorized", REVOKED);
            }
        }
        Err(e) => deny(&s, "notAuthorized", &e.to_string()),
    }
}

/// LoopBack: `authentication({id: token})` → `authenticated` or `unauthorized`.
async fn authentication(
    s: SocketRef,
    io: SocketIo,
    State(shared): State<Arc<Shared>>,
    TryData(data): TryData<Value>,
) {
    if !settled(&s).await {
        return;
    }
    let token = match data.as_ref().ok().and_then(|d| d.get("id")) {
        Some(Value::String(token)) => token.clone(),
        _ => {
            return deny(
                &s,
                "unauthorized",
                "authentication expects {id: <access token>}",
            );
        }
    };
    let epoch = shared.epoch();
    match shared.auth.identify_bearer_expiring(&token).await {
        Ok((who, until)) => {
            let who = Arc::new(who);
            let entered = enter(&s, &shared, &who, epoch);
            super::presence::left(&shared, &io, &s, None).await;
            if entered {
                watch_expiry(&s, &io, &who, Some(until));
                s.emit("authenticated", &welcome(&who)).ok();
                resume_identity_rooms(&s, &shared, &who, Some(epoch)).await;
            } else {
                deny(&s, "unauthorized", REVOKED);
            }
        }
        Err(e) => deny(&s, "unauthorized", &e.to_string()),
    }
}

/// A refused authentication keeps the socket's previous state (none, or its earlier
/// identity; none after a revocation race) and says why; the socket may try again
/// until the timeout.
fn deny(s: &SocketRef, event: &str, message: &str) {
    refused("auth");
    s.emit(event, &json!({ "message": message })).ok();
}

/// All the arguments of an event, for Backand's three-argument `login`.
#[derive(Default)]
struct Args(Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut args = Vec::new();
                while args.len() < 3 {
                    match seq.next_element::<Value>()? {
                        Some(v) => args.push(v),
                        None => break,
                    }
                }
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Args(args))
            }
        }
        // A tuple, so socketioxide hands over every argument rather than the first.
        d.deserialize_tuple(3, Visitor)
    }
}
