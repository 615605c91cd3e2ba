//! Live realtime introspection for the dashboard, Admin only (`AdminCaller`):
//!
//! - `GET /1/admin/nodes` — the nodes sharing the database (`store::nodes`), and which
//!   one answers.
//! - `GET /1/admin/sockets` — this node's sockets (`realtime::roster`), paged.
//! - `DELETE /1/admin/sockets/{id}` — ends one, by its public id.
//! - `GET /1/admin/events` — `text/event-stream` of recorded emits (`realtime::watch`):
//!   the backlog, then live; read with `fetch()` and an `Authorization` header.
//! - `GET /1/admin/events/{id}/trace` — who received one and why each other socket did
//!   not (`realtime::trace`), paged.
//!
//! This module only reads parameters and shapes answers; what a socket is, what was
//! recorded and why a socket was reached are the realtime layer's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::extract::{AdminCaller, Params};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::realtime::sails::SocketCaller;
use crate::realtime::watch::{self, Refused, Subscription, Summary};

/// Largest page of `GET /1/admin/sockets`.
const MAX_SOCKETS_PAGE: usize = 500;
/// Largest page of a trace.
const MAX_TRACE_PAGE: usize = 1000;
/// How often an idle event stream gets a comment line, so proxies keep it open.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Longest value of an event-stream filter.
const MAX_FILTER_CHARS: usize = 200;
/// Longest public socket id (they are 20 characters).
const MAX_SOCKET_ID: usize = 64;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/1/admin/nodes", get(list_nodes))
        .route("/1/admin/sockets", get(list_sockets))
        .route(
            "/1/admin/sockets/{id}",
            axum::routing::delete(disconnect_socket),
        )
        .route("/1/admin/events", get(stream_events))
        .route("/1/admin/events/{id}/trace", get(trace_event))
}

async fn list_nodes(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Params(params): Params,
) -> Result<Response, ApiError> {
    only(&params, &[])?;
    let nodes = crate::store::nodes::list(&state.store, &state.node).await?;
    Ok(axum::Json(json!({ "node": state.node.id, "data": nodes })).into_response())
}

async fn list_sockets(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Params(params): Params,
) -> Result<Response, ApiError> {
    only(&params, &["pageSize", "pageNumber"])?;
    let (size, number) = page(&params, MAX_SOCKETS_PAGE, 100)?;
    let page = state.realtime.sockets(size, number);
    Ok(axum::Json(json!({
        "node": state.node.id,
        "totalRows": page.total,
        "data": page.sockets,
    }))
    .into_response())
}

async fn disconnect_socket(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
    Params(params): Params,
) -> Result<Response, ApiError> {
    only(&params, &[])?;
    let well_formed = !id.is_empty()
        && id.len() <= MAX_SOCKET_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !well_formed {
        return Err(ApiError::bad(format!(
            "`{}` is not a socket id (they are up to {MAX_SOCKET_ID} letters, digits, - and _)",
            id.chars()
                .take(MAX_SOCKET_ID)
                .collect::<String>()
                .escape_default()
        )));
    }
    if state.realtime.disconnect_socket(&id) {
        Ok(axum::Json(json!({})).into_response())
    } else {
        Err(ApiError::NotFound(format!(
            "no socket `{id}` is connected to this node ({})",
            state.node.id
        )))
    }
}

async fn stream_events(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Params(params): Params,
    headers: HeaderMap,
    socket: Option<Extension<SocketCaller>>,
) -> Result<Response, ApiError> {
    // A virtual request is answered once its whole body is read, which a stream never is.
    if socket.is_some() {
        return Err(ApiError::bad(
            "the event stream is served over HTTP only, not as a Socket.IO request",
        ));
    }
    only(&params, &["object", "event", "user"])?;
    let filter = Filter {
        object: filter_value(&params, "object")?,
        event: filter_value(&params, "event")?,
        user: filter_value(&params, "user")?.map(|u| u.to_lowercase()),
    };
    // A reconnecting reader says where it got to, and gets only what came after.
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad("Last-Event-ID must be an event id (a whole number)"))?,
    };
    // Checked again whenever identities are revoked, and the stream ends when they
    // expire: an Admin signed out or demoted stops seeing events, as their sockets do.
    let mut credentials = HeaderMap::new();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        credentials.insert(header::AUTHORIZATION, value.clone());
    }
    let (_, until) = state.auth.identify_expiring(&credentials).await?;
    let holder = Holder {
        auth: state.auth.clone(),
        credentials,
        until: until.map(expiry_instant),
    };
    let subscription = state.realtime.watch_events(after).map_err(|e| match e {
        Refused::TooMany => ApiError::Status(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "at most {} event streams may be open at once; close one first",
                watch::MAX_STREAMS
            ),
        ),
        Refused::Closed => ApiError::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ),
    })?;
    let events = events(subscription, filter, holder);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response())
}

/// The stream's optional filters: each must equal the event's value when given.
struct Filter {
    object: Option<String>,
    event: Option<String>,
    /// Lower case: usernames are.
    user: Option<String>,
}

impl Filter {
    fn admits(&self, summary: &Summary) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|want| have == Some(want))
        };
        same(&self.object, summary.object.as_deref())
            && same(&self.event, Some(&summary.event))
            && self.user.as_deref().is_none_or(|want| {
                summary.by.as_deref().map(str::to_lowercase).as_deref() == Some(want)
            })
    }
}

/// The credentials a stream was opened with, and when they expire.
struct Holder {
    auth: Auth,
    /// Only the `Authorization` header (no other credential makes an Admin).
    credentials: HeaderMap,
    until: Option<tokio::time::Instant>,
}

impl Holder {
    /// Whether the credentials still make an Admin (after a revocation).
    async fn still_admin(&self) -> bool {
        self.auth
            .identify(&self.credentials)
            .await
            .is_ok_and(|who| who.is_admin())
    }

    async fn expired(&self) {
        match self.until {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// The moment a unix second (an access token's refusal time) arrives.
fn expiry_instant(unix_secs: u64) -> tokio::time::Instant {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(unix_secs);
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::Instant::now() + left
}

/// A stream's state: running, or told why it ends (then it ends).
struct Running {
    subscription: Subscription,
    filter: Filter,
    holder: Holder,
    ended: bool,
}

/// The backlog, then live events; a stream that fell behind is told how many it lost,
/// and one whose credentials were revoked or expired is told so and ends. Dropping the
/// stream (the reader left) drops the subscription, which frees its slot.
fn events(
    mut subscription: Subscription,
    filter: Filter,
    holder: Holder,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let backlog: Vec<Event> = std::mem::take(&mut subscription.backlog)
        .iter()
        .filter(|s| filter.admits(s))
        .map(|s| message(s))
        .collect();
    let running = Running {
        subscription,
        filter,
        holder,
        ended: false,
    };
    let live = stream::unfold(running, |mut run| async move {
        if run.ended {
            return None;
        }
        let notice = loop {
            tokio::select! {
                got = run.subscription.live.recv() => match got {
                    Ok(summary) if run.filter.admits(&summary) => {
                        return Some((Ok(message(&summary)), run));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(dropped)) => {
                        break json!({ "kind": "lagged", "dropped": dropped });
                    }
                    Err(RecvError::Closed) => return None,
                },
                changed = run.subscription.revocations.changed() => {
                    if changed.is_ok() && run.holder.still_admin().await {
                        continue;
                    }
                    run.ended = true;
                    break ended("the credentials this stream was opened with were revoked");
                }
                () = run.holder.expired() => {
                    run.ended = true;
                    break ended("the access token this stream was opened with expired");
                }
            }
        };
        Some((Ok(Event::default().data(notice.to_string())), run))
    });
    stream::iter(backlog.into_iter().map(Ok)).chain(live)
}

fn ended(reason: &str) -> Value {
    json!({ "kind": "ended", "reason": reason })
}

fn message(summary: &Summary) -> Event {
    Event::default()
        .id(summary.id.to_string())
        .data(&summary.json)
}

async fn trace_event(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
    Params(params): Params,
) -> Result<Response, ApiError> {
    only(&params, &["pageSize", "pageNumber"])?;
    let id = match id.parse::<u64>() {
        Ok(id) if id > 0 => id,
        _ => {
            return Err(ApiError::bad(format!(
                "event id must be a positive whole number, got `{}`",
                id.chars().take(40).collect::<String>().escape_default()
            )));
        }
    };
    let (size, number) = page(&params, MAX_TRACE_PAGE, MAX_TRACE_PAGE)?;
    let trace = state.realtime.trace(id, size, number).ok_or_else(|| {
        ApiError::NotFound(format!(
            "event {id} is not recorded: events are recorded only while an event stream is \
             open, and the last {} are kept",
            watch::MAX_EVENTS
        ))
    })?;
    let event: Value = serde_json::from_str(&trace.event.summary.json)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(axum::Json(json!({
        "event": event,
        "computedAt": watch::rfc3339(chrono::Utc::now()),
        "totalRows": trace.total,
        "recipientsTruncated": trace.event.truncated,
        "recipientsDisconnected": trace.recipients_gone,
        "sockets": trace.sockets,
    }))
    .into_response())
}

/// Refuses a query parameter the endpoint does not know, naming it.
fn only(params: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(ApiError::bad(format!(
            "unknown parameter `{}`{}",
            unknown
                .chars()
                .take(40)
                .collect::<String>()
                .escape_default(),
            if known.is_empty() {
                String::from(": this takes none")
            } else {
                format!("; known: {}", known.join(", "))
            }
        ))),
    }
}

/// `pageSize` (1 to `max`, default `default`) and `pageNumber` (1-based).
fn page(
    params: &HashMap<String, String>,
    max: usize,
    default: usize,
) -> Result<(usize, usize), ApiError> {
    let number = |name: &str, max: usize, default: usize| match params.get(name) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(format!(
                "{name} must be a whole number from 1 to {max}, got `{}`",
                text.chars().take(40).collect::<String>().escape_default()
            ))),
        },
    };
    Ok((
        number("pageSize", max, default)?,
        number("pageNumber", 1_000_000, 1)?,
    ))
}

fn filter_value(params: &HashMap<String, String>, name: &str) -> Result<Option<String>, ApiError> {
    match params.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > MAX_FILTER_CHARS => Err(ApiError::bad(format!(
            "`{name}` is longer than {MAX_FILTER_CHARS} characters"
        ))),
        Some(v) => Ok(Some(v.to_string())),
    }
}
