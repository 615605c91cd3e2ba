//! Sails-style virtual requests: `get` / `post` / `put` / `patch` / `delete` events with
//! `{method, url, data, headers}`, answered by the ack `{body, statusCode, headers}`.
//! They run through the very router HTTP uses (`http::app`), with the socket's identity
//! attached as a request extension, so there is one implementation of every endpoint.
//!
//! A successful `get` of one row subscribes the socket to that row; a `get` of a list
//! makes it watch the object: created, updated and destroyed events of every row its
//! user may read (one room per socket and object, however many rows come and go). A
//! `post` subscribes it to the row it created, if it may read it. The events themselves
//! are sent by `relay`.

use std::sync::Arc;

use super::cluster::SocketRef;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use serde_json::{Map, Value, json};
use socketioxide::extract::{Event, State, TryData};
use tower::ServiceExt;

use super::Shared;
use super::reply::Reply;
use super::rooms::{self, Feed};
use super::session::{self, NOT_AUTHENTICATED};
use crate::auth::{Access, Identity, access};
use crate::schema::{Operation, Schema};

/// Largest response body relayed back in an ack: a socket's queue counts messages, not
/// bytes, so each one must stay modest. Larger answers are refused; page them.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Virtual requests one socket may have running at once; more are answered 429.
pub const MAX_IN_FLIGHT: usize = 8;

/// Rows one socket may subscribe to one by one over its life (lists are watched, not
/// counted); beyond it, reads still answer but subscribe nothing more.
pub const MAX_ROW_SUBSCRIPTIONS: usize = 10_000;

/// Per-socket request accounting, kept in the socket's extensions.
#[derive(Clone)]
pub struct Budget {
    in_flight: Arc<tokio::sync::Semaphore>,
    rows: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Budget {
    pub fn new() -> Self {
        Budget {
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            rows: Arc::default(),
        }
    }
}

/// First path segments that are livebase routes, never Sails blueprint aliases.
const ROUTE_PREFIXES: [&str; 5] = ["1", "api", "token", "healthz", "metrics"];

/// Headers a virtual request may not set: identity comes from the socket, framing from us.
const DROPPED_HEADERS: [&str; 6] = [
    "authorization",
    "anonymoustoken",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
];

/// Put on a virtual request: the socket's identity, which stands in for credential
/// headers (the HTTP extractors honour it). Only livebase can set an extension; no
/// client header can.
#[derive(Clone)]
pub struct SocketCaller(pub Identity);

/// `router` is what virtual requests run through (`http::app`).
pub fn register(s: &SocketRef, router: &Router) {
    s.extensions.insert(Budget::new());
    for verb in ["get", "post", "put", "patch", "delete"] {
        let router = router.clone();
        s.on(
            verb,
            move |s: SocketRef,
                  State(shared): State<Arc<Shared>>,
                  Event(event): Event,
                  TryData(data): TryData<Value>,
                  reply: Reply| {
                let router = router.clone();
                async move { request(s, &shared, &router, event, data.ok(), reply).await }
            },
        );
    }
}

async fn request(
    s: SocketRef,
    shared: &Shared,
    router: &Router,
    event: String,
    data: Option<Value>,
    reply: Reply,
) {
    if !session::settled(&s).await {
        return;
    }
    let budget = s.extensions.get::<Budget>().unwrap_or_default();
    let permit = budget.in_flight.clone().try_acquire_owned();
    let mut resumed = None;
    let (status, body, headers) = match (session::identity(&s), permit) {
        (None, _) => refusal(StatusCode::UNAUTHORIZED, NOT_AUTHENTICATED),
        (Some(_), Err(_)) => refusal(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("at most {MAX_IN_FLIGHT} requests may run at once on one socket"),
        ),
        (Some(who), Ok(_permit)) => {
            match VirtualRequest::parse(&event, data, &shared.schema) {
                Err(message) => refusal(StatusCode::BAD_REQUEST, &message),
                Ok(request) => {
                    let method = request.method.clone();
                    let path = request.path.clone();
                    // The socket's peer address, as its handshake request had it, so a
                    // virtual request meets the same per-address limits as HTTP.
                    let peer = s
                        .req_parts()
                        .extensions
                        .get::<ConnectInfo<std::net::SocketAddr>>()
                        .copied();
                    let answer = call(router, request.into_http(&who, peer)).await;
                    if answer.0 == StatusCode::OK {
                        let rooms =
                            subscription(&shared.schema, &who, &budget, &method, &path, &answer.1);
                        resumed = join(&s, shared, &who, rooms).await;
                    }
                    answer
                }
            }
        }
    };
    if !s.connected() {
        return;
    }
    if reply.wants_ack() {
        let mut ack = json!({ "body": body, "statusCode": status.as_u16(), "headers": headers });
        // Within its resume window, what the subscription missed came first (`resume`).
        if let Some(outcome) = resumed {
            ack["recovered"] = json!(outcome.recovered);
            ack["seq"] = json!(outcome.seq);
        }
        reply.ok(&ack, None);
    } else if status.as_u16() >= 400 {
        let message = body
            .get("Message")
            .and_then(Value::as_str)
            .unwrap_or("request failed")
            .to_string();
        reply.error(&event, &format!("{}: {message}", status.as_u16()));
    }
}

fn refusal(status: StatusCode, message: &str) -> (StatusCode, Value, Value) {
    (status, json!({ "Message": message }), json!({}))
}

struct VirtualRequest {
    method: Method,
    /// The canonical path (Sails aliases resolved).
    path: String,
    query: Option<String>,
    body: Option<Vec<u8>>,
    headers: HeaderMap,
}

impl VirtualRequest {
    fn parse(event: &str, data: Option<Value>, schema: &Schema) -> Result<Self, String> {
        let Some(Value::Object(mut ctx)) = data else {
            return Err(format!(
                "a `{event}` request is {{method, url, data, headers}} with `url` required"
            ));
        };
        let url = match ctx.remove("url") {
            Some(Value::String(url)) if url.starts_with('/') => url,
            _ => return Err("`url` must be a string starting with /".into()),
        };
        // A fragment never reaches an HTTP server, so drop it as a client would: left
        // in, `Uri` would drop it together with the query built from `data`, and the
        // subscription would look at a path the router never saw.
        let url = match url.split_once('#') {
            Some((before, _)) => before.to_string(),
            None => url,
        };
        match ctx.remove("method") {
            None | Some(Value::Null) => {}
            Some(Value::String(m)) if m.eq_ignore_ascii_case(event) => {}
            Some(other) => {
                return Err(format!(
                    "`method` {other} does not match the `{event}` event"
                ));
            }
        }
        let (path, query) = match url.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (url.as_str(), None),
        };
        let path = resolve_alias(path, schema);
        let mut method = match event {
            "get" => Method::GET,
            "post" => Method::POST,
            "put" => Method::PUT,
            "patch" => Method::PATCH,
            _ => Method::DELETE,
        };
        // Backand updates with PUT, Sails blueprints with PATCH: both update a row.
        if method == Method::PATCH && object_path(&path).is_some_and(|(_, id)| id.is_some()) {
            method = Method::PUT;
        }
        let data = ctx.remove("data");
        let mut query = query;
        let mut body = None;
        if method == Method::GET || method == Method::DELETE {
            match data {
                None | Some(Value::Null) => {}
                Some(Value::Object(params)) => {
                    let extra = encode_params(&params)?;
                    query = Some(match query {
                        Some(q) if !q.is_empty() => format!("{q}&{extra}"),
                        _ => extra,
                    });
                }
                Some(_) => {
                    return Err(format!(
                        "`data` of a `{event}` must be an object of query parameters"
                    ));
                }
            }
        } else {
            let data = data.unwrap_or_else(|| json!({}));
            body = Some(serde_json::to_vec(&data).map_err(|e| e.to_string())?);
        }
        let headers = match ctx.remove("headers") {
            None | Some(Value::Null) => HeaderMap::new(),
            Some(Value::Object(h)) => parse_headers(&h)?,
            Some(_) => return Err("`headers` must be an object of strings".into()),
        };
        Ok(VirtualRequest {
            method,
            path,
            query,
            body,
            headers,
        })
    }

    fn into_http(
        self,
        who: &Identity,
        peer: Option<ConnectInfo<std::net::SocketAddr>>,
    ) -> Result<Request<Body>, String> {
        let uri = match &self.query {
            Some(q) if !q.is_empty() => format!("{}?{q}", self.path),
            _ => self.path.clone(),
        };
        let uri: Uri = uri.parse().map_err(|_| format!("malformed url `{uri}`"))?;
        let mut request = Request::builder()
            .method(self.method)
            .uri(uri)
            .extension(SocketCaller(who.clone()));
        if let Some(peer) = peer {
            request = request.extension(peer);
        }
        if let Some(headers) = request.headers_mut() {
            headers.extend(self.headers);
            if self.body.is_some() {
                headers.insert("content-type", HeaderValue::from_static("application/json"));
            }
        }
        request
            .body(Body::from(self.body.unwrap_or_default()))
            .map_err(|e| e.to_string())
    }
}

/// The HTTP request a virtual request event (`get`, `post`, …) with payload `data`
/// becomes, as the router receives it on behalf of `who`; or the 400 message. Public for
/// the fuzz targets in `fuzz/`; the event handler runs the same two steps.
pub fn virtual_request(
    event: &str,
    data: Option<Value>,
    schema: &Schema,
    who: &Identity,
) -> Result<Request<Body>, String> {
    VirtualRequest::parse(event, data, schema)?.into_http(who, None)
}

/// Sails blueprint paths `/<object>` and `/<object>/<id>` name `/1/objects/…`.
fn resolve_alias(path: &str, schema: &Schema) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let first = segments[0];
    if segments.len() <= 2 && !ROUTE_PREFIXES.contains(&first) && schema.object(first).is_some() {
        return format!("/1/objects{path}");
    }
    path.to_string()
}

/// `(object, id)` of a canonical `/1/objects/<object>[/<id>]` path (not actions).
fn object_path(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/1/objects/")?;
    let mut parts = rest.split('/');
    let object = parts.next().filter(|o| !o.is_empty() && *o != "action")?;
    let id = parts.next();
    if parts.next().is_some() {
        return None;
    }
    Some((object, id))
}

fn encode_params(params: &Map<String, Value>) -> Result<String, String> {
    let pairs: Vec<(&str, String)> = params
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.as_str(), text)
        })
        .collect();
    serde_urlencoded::to_string(pairs).map_err(|e| e.to_string())
}

fn parse_headers(given: &Map<String, Value>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in given {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{}` is not a header name", name.escape_default()))?;
        if DROPPED_HEADERS.contains(&header.as_str()) {
            continue;
        }
        let Value::String(text) = value else {
            return Err(format!("header `{name}` must be a string"));
        };
        let value = HeaderValue::from_str(text)
            .map_err(|_| format!("header `{name}` has characters a header cannot carry"))?;
        headers.insert(header, value);
    }
    Ok(headers)
}

/// Runs a virtual request through the HTTP router.
async fn call(
    router: &Router,
    request: Result<Request<Body>, String>,
) -> (StatusCode, Value, Value) {
    let request = match request {
        Ok(r) => r,
        Err(message) => return refusal(StatusCode::BAD_REQUEST, &message),
    };
    let response = match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status();
    let headers: Map<String, Value> = response
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), Value::String(v.to_str().ok()?.into()))))
        .collect();
    let bytes = match axum::body::to_bytes(response.into_body(), MAX_RESPONSE_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the answer is over {MAX_RESPONSE_BYTES} bytes, too large for a socket; ask for a smaller page"
                ),
            );
        }
    };
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, body, Value::Object(headers))
}

/// Joins a subscription's rooms; within the socket's resume window, replaying first
/// what it missed in them (`resume`), whose outcome it answers.
async fn join(
    s: &SocketRef,
    shared: &Shared,
    who: &Arc<Identity>,
    rooms: Vec<String>,
) -> Option<super::resume::Outcome> {
    if rooms.is_empty() {
        return None;
    }
    match super::resume::pending(s) {
        Some(resume) => super::resume::join(shared, s, who, rooms, resume.after, None).await,
        None => {
            session::join_as(s, who, rooms);
            None
        }
    }
}

/// Sails: reading one row subscribes to it; listing watches the object; creating
/// subscribes to the new row if the creator may read it. Rows read were already
/// filtered by the handler; the watch room is chosen by the permission function.
/// Answers the rooms to join (none, or one).
fn subscription(
    schema: &Schema,
    who: &Arc<Identity>,
    budget: &Budget,
    method: &Method,
    path: &str,
    body: &Value,
) -> Vec<String> {
    let Some((name, id)) = object_path(path) else {
        return Vec::new();
    };
    let Some(object) = schema.object(name) else {
        return Vec::new();
    };
    let readable = access(who, object, Operation::Read);
    let as_id = |v: &Value| v.as_i64().or_else(|| v.as_str()?.parse().ok());
    let row = match (method, id) {
        (&Method::GET, None) => {
            return rooms::reader(Feed::SailsWatch, object, readable)
                .into_iter()
                .collect();
        }
        (&Method::GET, Some(_)) => body.get("id").and_then(as_id),
        // Creating is not reading: a role may create rows it may not read back.
        (&Method::POST, None) if readable != Access::Denied => {
            body.pointer("/__metadata/id").and_then(as_id)
        }
        _ => None,
    };
    let Some(row) = row else {
        return Vec::new();
    };
    let counted = budget
        .rows
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if counted >= MAX_ROW_SUBSCRIPTIONS {
        budget
            .rows
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        return Vec::new();
    }
    vec![rooms::row(name, row)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::load_files;
    use std::path::Path;

    /// A fragment in the url must not make `Uri` drop the query built from `data` (a
    /// `get` would run unfiltered) nor leave the alias unresolved.
    #[test]
    fn a_fragment_in_the_url_is_dropped_like_a_client_would() {
        let dir = Path::new("schema");
        let text = r#"{"name":"items","permissions":{"read":["User"]}}"#;
        let schema = load_files(dir, [(dir.join("items.json"), text.to_string())]).unwrap();
        let who = Identity::guest();
        for (url, want) in [
            ("/items#top", "/1/objects/items?pageSize=5"),
            (
                "/items?pageNumber=2#top",
                "/1/objects/items?pageNumber=2&pageSize=5",
            ),
            ("/1/objects/items#x?y", "/1/objects/items?pageSize=5"),
        ] {
            let data = json!({ "url": url, "data": { "pageSize": 5 } });
            let request = virtual_request("get", Some(data), &schema, &who).unwrap();
            assert_eq!(request.uri().to_string(), want, "{url}");
        }
    }
}
