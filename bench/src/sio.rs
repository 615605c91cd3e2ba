//! A raw Socket.IO v5 (engine.io 4) client over WebSocket: just the frames a load
//! generator needs — open, connect with `auth`, `42[...]` events, ping/pong. A Node
//! client saturates long before a server does; this one costs a few hundred
//! nanoseconds per received frame.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = WebSocketStream<TcpStream>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects and authenticates with `auth: {token}`; fails on `connect_error`.
pub async fn connect(addr: SocketAddr, src: IpAddr, token: &str) -> Result<Ws> {
    connect_with(addr, src, &json!({ "token": token })).await
}

/// Connects with any handshake `auth` (e.g. `{token, lastSeq}`); fails on `connect_error`.
pub async fn connect_with(addr: SocketAddr, src: IpAddr, auth: &Value) -> Result<Ws> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let stream = crate::http::dial(addr, src).await?;
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .context("websocket upgrade")?;
        let open = next_text(&mut ws).await?;
        if !open.starts_with('0') {
            bail!("expected an engine.io open packet, got {open:?}");
        }
        send(&mut ws, format!("40{auth}")).await?;
        loop {
            let frame = next_text(&mut ws).await?;
            if frame.starts_with("40") {
                return Ok(ws);
            }
            if let Some(reason) = frame.strip_prefix("44") {
                bail!("connect_error: {reason}");
            }
            if frame == "2" {
                send(&mut ws, "3".into()).await?;
            }
        }
    })
    .await
    .context("socket.io handshake timed out")?
}

/// `join(channel)` and wait for `joined`.
pub async fn join(ws: &mut Ws, channel: &str) -> Result<()> {
    emit(ws, "join", &json!(channel)).await?;
    let mut seen = Vec::new();
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            let frame = next_text(ws).await?;
            seen.push(frame.chars().take(80).collect::<String>());
            if frame.starts_with("42[\"joined\"") {
                return Ok(());
            }
            if frame.starts_with("42[\"error\"") {
                bail!("join {channel}: {frame}");
            }
            if frame == "2" {
                send(ws, "3".into()).await?;
            }
        }
    })
    .await;
    result.with_context(|| format!("no `joined` for {channel} (frames seen: {seen:?})"))?
}

pub async fn emit(ws: &mut Ws, event: &str, data: &Value) -> Result<()> {
    send(ws, format!("42{}", json!([event, data]))).await
}

pub async fn send(ws: &mut Ws, text: String) -> Result<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Reads until the socket closes, answering pings and handing every event frame
/// (`42[...]`, as text) to `on_event`.
pub async fn listen(mut ws: Ws, mut on_event: impl FnMut(&str)) {
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            if matches!(message, Message::Close(_)) {
                return;
            }
            continue;
        };
        let text = text.as_str();
        if text.starts_with("42") {
            on_event(text);
            continue;
        }
        let closed = if text == "2" {
            send(&mut ws, "3".into()).await.is_err()
        } else {
            // engine.io close, or Socket.IO disconnect from the namespace.
            text.starts_with('1') || text.starts_with("41")
        };
        if closed {
            return;
        }
    }
}

/// Waits until `due`, answering the server's heartbeats meanwhile (a sender that
/// never reads would be disconnected after ping interval + timeout).
pub async fn wait_until(ws: &mut Ws, due: std::time::Instant) -> Result<()> {
    loop {
        let message = tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => return Ok(()),
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => send(ws, "3".into()).await?,
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            None => bail!("closed by the server"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) => {}
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed"),
        }
    }
}

/// The number after the first `seq` in a frame: `"seq":42` in a row or emit, or
/// `seq:42` at the start of a fan-out message. Found by scanning, not parsing, so the
/// load generator keeps up with a fast server.
pub fn seq_of(frame: &str) -> Option<u64> {
    let at = frame.find("seq")? + 3;
    let rest = &frame.as_bytes()[at..];
    let start = rest.iter().take(3).position(|b| b.is_ascii_digit())?;
    let digits = &rest[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::seq_of;

    #[test]
    fn finds_seq_in_rows_and_messages() {
        assert_eq!(seq_of(r#"42["created",{"id":3,"seq":42}]"#), Some(42));
        assert_eq!(
            seq_of(r#"42["chan_out",{"channel":"fan","data":"seq:7 xxxx","sid":"a"}]"#),
            Some(7)
        );
        assert_eq!(seq_of(r#"42["x",{"a":1}]"#), None);
    }
}
