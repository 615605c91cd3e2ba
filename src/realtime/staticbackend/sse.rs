//! StaticBackend over Server-Sent Events: `GET /sse/connect` opens a bridge and streams
//! its messages (`init` with the sid first, heartbeats as SSE comments while idle), and
//! `POST /sse/msg` hands one envelope to the bridge its `sid` names.
//!
//! A refused connection (the connection limit) still answers a stream, of one `error`
//! message naming the limit, so the client is told why; EventSource then retries.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;

use super::bridge::Messages;
use super::envelope::{self, Inbound};
use super::{StaticBackend, peer};
use crate::error::ApiError;

/// How long a refused client waits before its EventSource tries again.
const RETRY_REFUSED: Duration = Duration::from_secs(10);

pub async fn connect(State(sb): State<StaticBackend>, request: Request) -> Response {
    let heartbeat = KeepAlive::new().interval(sb.limits().heartbeat);
    // EventSource sends the last `id:` it saw when it reconnects: resume after it.
    let (last_seq, unreadable) = match request.headers().get("last-event-id") {
        None => (None, None),
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(seq) => (Some(seq), None),
            None => (
                None,
                Some(envelope::error(
                    "Last-Event-ID must be a sequence number this server sent; not resumed",
                    "",
                )),
            ),
        },
    };
    match sb.open(peer(&request), "sse", last_seq).await {
        Ok(opened) => {
            let init = envelope::init(&opened.bridge.sid);
            let first = stream::iter(
                unreadable
                    .into_iter()
                    .chain(std::iter::once(init))
                    .map(|text| Ok(Event::default().data(text))),
            );
            Sse::new(first.chain(messages(opened.messages)))
                .keep_alive(heartbeat)
                .into_response()
        }
        Err(refusal) => {
            let event = Event::default()
                .retry(RETRY_REFUSED)
                .data(envelope::error(&refusal, ""));
            Sse::new(stream::once(async move { Ok::<_, Infallible>(event) })).into_response()
        }
    }
}

/// The bridge's messages as SSE events, each numbered (`id:`) with the sequence number
/// its envelope carries, so EventSource sends the last one back when it reconnects;
/// dropping the stream (the client left) drops `Messages`, which closes the bridge.
fn messages(messages: Messages) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(messages, |mut messages| async move {
        let text = messages.next().await?;
        let event = match envelope::seq_of(&text) {
            Some(seq) => Event::default().id(seq.to_string()).data(text),
            None => Event::default().data(text),
        };
        Some((Ok(event), messages))
    })
}

/// One envelope for the connection its `sid` names, answered `true` once handed to
/// its socket; the answer itself arrives on that connection's stream.
pub async fn message(State(sb): State<StaticBackend>, request: Request) -> Response {
    match handle(&sb, request).await {
        Ok(()) => Json(json!(true)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(sb: &StaticBackend, request: Request) -> Result<(), ApiError> {
    let limit = sb.limits().max_payload;
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "a message is at most {limit} bytes, or the body could not be read"
            ))
        })?;
    let envelope: Inbound = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body must be an envelope {{sid, type, data, channel, token}}: {e}"
        ))
    })?;
    let sid = envelope
        .sid
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad("the envelope has no `sid`: use the one `init` gave on /sse/connect")
        })?;
    let bridge = sb.bridge(sid).ok_or_else(|| {
        ApiError::NotFound("no open connection has this sid; connect to /sse/connect again".into())
    })?;
    match bridge.command(sb.auth(), &envelope).await {
        Ok(()) => Ok(()),
        Err(refused) => {
            if refused.tell_stream {
                let channel = envelope.channel.as_deref().unwrap_or("");
                bridge.try_deliver(envelope::error(&refused.error.to_string(), channel));
            }
            Err(refused.error)
        }
    }
}
