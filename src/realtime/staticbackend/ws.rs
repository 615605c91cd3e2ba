//! StaticBackend over a raw WebSocket at `/ws`: the same envelope both ways, `init`
//! first. The connection is its own credential, so the envelope's `sid` is not needed;
//! its `token` is checked exactly as `POST /sse/msg` checks it, so both transports obey
//! one rule. Errors come back as `error` messages, and a WebSocket ping goes out at
//! every heartbeat.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::envelope::{self, Inbound};
use super::{StaticBackend, peer};
use crate::error::ApiError;

pub async fn upgrade(State(sb): State<StaticBackend>, mut request: Request) -> Response {
    let headers = request.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade"))
        .filter(|_| has(header::SEC_WEBSOCKET_VERSION, "13"));
    let Some(key) = key else {
        return ApiError::Status(
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket: connect with a WebSocket client (version 13)".into(),
        )
        .into_response();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let addr = peer(&request);
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let max = sb.limits().max_payload;
                let config = WebSocketConfig::default()
                    .max_message_size(Some(max))
                    .max_frame_size(Some(max));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(sb, ws, addr).await;
            }
            Err(e) => tracing::debug!(%addr, "a /ws upgrade failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_default()
}

async fn serve<S>(sb: StaticBackend, ws: WebSocketStream<S>, addr: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let opened = match sb.open(addr, "ws", None).await {
        Ok(opened) => opened,
        Err(refusal) => {
            let _ = sink
                .send(Message::text(envelope::error(&refusal, "")))
                .await;
            let close = CloseFrame {
                code: CloseCode::Again,
                reason: "refused".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
            return;
        }
    };
    let (bridge, mut messages) = (opened.bridge, opened.messages);
    if sink
        .send(Message::text(envelope::init(&bridge.sid)))
        .await
        .is_err()
    {
        return;
    }
    let mut heartbeat = tokio::time::interval(sb.limits().heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { break };
                if sink.send(Message::text(message)).await.is_err() {
                    break;
                }
            }
            incoming = stream.next() => {
                let answer = match incoming {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Inbound>(&text) {
                        Ok(envelope) => match bridge.command(sb.auth(), &envelope).await {
                            Ok(()) => None,
                            Err(refused) => Some(envelope::error(
                                &refused.error.to_string(),
                                envelope.channel.as_deref().unwrap_or(""),
                            )),
                        },
                        Err(e) => Some(envelope::error(
                            &format!("a message must be an envelope {{sid, type, data, channel, token}}: {e}"),
                            "",
                        )),
                    },
                    Some(Ok(Message::Binary(_))) => Some(envelope::error(
                        "messages are JSON text, not binary",
                        "",
                    )),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => None,
                };
                if let Some(answer) = answer
                    && sink.send(Message::text(answer)).await.is_err()
                {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    // Dropping `messages` closes the bridge and with it the socket.
}
