//! The graceful-shutdown check: with slow requests in flight and Socket.IO clients
//! connected, SIGTERM must let the requests finish with success, close the sockets
//! cleanly (a Socket.IO disconnect, an engine.io close or a WebSocket close frame, not
//! a dropped TCP connection), refuse new connections, and exit 0 within a bound.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::http::{self, Conn};
use crate::livebase::{ADMIN_EMAIL, ADMIN_PASSWORD, Api, Server, percent_encode};
use crate::sio;

const SLOW_REQUESTS: usize = 3;
const SLOW_MS: u64 = 400;
const SOCKETS: usize = 2;
pub const EXIT_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct SigtermReport {
    /// Per slow request: status and milliseconds after SIGTERM it was answered.
    pub requests: Vec<String>,
    /// Per socket: what it saw from SIGTERM to its end.
    pub sockets: Vec<String>,
    /// Per probe: what a new connection got after SIGTERM.
    pub probes: Vec<String>,
    pub exit: String,
    pub exit_ms: u128,
    pub violations: Vec<String>,
}

pub async fn check(mut server: Server) -> Result<SigtermReport> {
    let api = server.api();
    let addr = server.addr;
    let token = access_token(&api).await?;
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let ws = sio::connect(addr, Ipv4Addr::LOCALHOST.into(), &token).await?;
        sockets.push(tokio::spawn(watch_socket(ws)));
    }
    let parameters = percent_encode(&format!(r#"{{"ms":{SLOW_MS}}}"#));
    let path = format!("/1/function/general/slow?parameters={parameters}");
    let mut requests = Vec::new();
    for _ in 0..SLOW_REQUESTS {
        let mut conn = api.connect().await?;
        let request = api.request("POST", &path, Some("{}"));
        requests.push(tokio::spawn(async move {
            let response = conn.send(&request).await;
            (response, Instant::now())
        }));
    }
    // Long enough for every request to be read and waiting on, or running, its action.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let term = Instant::now();
    server.signal(libc::SIGTERM)?;
    let mut report = SigtermReport::default();

    for after in [20, 100, 300] {
        tokio::time::sleep_until((term + Duration::from_millis(after)).into()).await;
        let (text, served) = probe(&api).await;
        if served {
            report.violations.push(format!(
                "a new connection {after} ms after SIGTERM was served: {text}"
            ));
        }
        report.probes.push(format!("+{after} ms: {text}"));
    }

    for (i, request) in requests.into_iter().enumerate() {
        let (response, at) = request.await?;
        let ms = at.duration_since(term).as_millis();
        match response {
            Ok(r) => {
                let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                let ok = r.status == 200 && body["done"] == Value::Bool(true);
                report.requests.push(format!("{} after {ms} ms", r.status));
                if !ok {
                    report.violations.push(format!(
                        "in-flight request {i} answered {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                }
            }
            Err(e) => {
                report
                    .requests
                    .push(format!("no answer ({e}) after {ms} ms"));
                report.violations.push(format!(
                    "in-flight request {i} got no answer after SIGTERM: {e}"
                ));
            }
        }
    }

    for (i, socket) in sockets.into_iter().enumerate() {
        let end = tokio::time::timeout(EXIT_WITHIN, socket).await;
        let (seen, clean) = match end {
            Ok(Ok(end)) => end.describe(term),
            Ok(Err(e)) => (format!("watcher failed: {e}"), false),
            Err(_) => ("still open 10 s after SIGTERM".to_string(), false),
        };
        if !clean {
            report
                .violations
                .push(format!("socket {i} was not closed cleanly: {seen}"));
        }
        report.sockets.push(seen);
    }

    let status = server.wait_exit(EXIT_WITHIN).await?;
    report.exit_ms = term.elapsed().as_millis();
    match status {
        Some(s) if s.success() => report.exit = format!("exit 0 after {} ms", report.exit_ms),
        Some(s) => {
            report.exit = format!("{s} after {} ms", report.exit_ms);
            report
                .violations
                .push(format!("the server exited with {s} after SIGTERM"));
        }
        None => {
            report.exit = format!("still running after {EXIT_WITHIN:?}");
            report.violations.push(format!(
                "the server did not exit within {EXIT_WITHIN:?} of SIGTERM"
            ));
        }
    }
    Ok(report)
}

/// The first Admin's access token, for the Socket.IO handshake.
pub async fn access_token(api: &Api) -> Result<String> {
    let body = format!(
        "grant_type=password&username={}&password={}",
        percent_encode(ADMIN_EMAIL),
        percent_encode(ADMIN_PASSWORD)
    );
    let request = http::request_with(
        "POST",
        "/token",
        &[],
        Some(&body),
        "application/x-www-form-urlencoded",
    );
    let response = api.connect().await?.send(&request).await?;
    if response.status != 200 {
        bail!(
            "POST /token: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    let body: Value = serde_json::from_slice(&response.body)?;
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .context("access_token in the /token answer")
}

/// A new connection and a `GET /healthz` on it: what happened, and whether it was served.
async fn probe(api: &Api) -> (String, bool) {
    let attempt = async {
        let mut conn = match Conn::open(api.addr, Ipv4Addr::LOCALHOST.into()).await {
            Ok(c) => c,
            Err(e) => return (format!("connect refused ({})", root(&e)), false),
        };
        match conn
            .send(&http::request("GET", "/healthz", None, None))
            .await
        {
            Ok(r) => (format!("connected and served: {}", r.status), true),
            Err(e) => (
                format!("connected, then closed unserved ({})", root(&e)),
                false,
            ),
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(result) => result,
        Err(_) => ("connected, no answer within 2 s".to_string(), false),
    }
}

fn root(e: &anyhow::Error) -> String {
    e.root_cause().to_string()
}

/// What one socket saw after connecting, in order, with when.
struct SocketEnd {
    events: Vec<(Instant, String)>,
    clean: bool,
}

impl SocketEnd {
    fn describe(&self, term: Instant) -> (String, bool) {
        let parts: Vec<String> = self
            .events
            .iter()
            .map(|(at, what)| {
                let ms = at.saturating_duration_since(term).as_millis();
                format!("{what} (+{ms} ms)")
            })
            .collect();
        (parts.join(", "), self.clean)
    }
}

/// Reads until the connection ends, answering pings; clean if the server said goodbye
/// (Socket.IO `41`, engine.io `1` or a WebSocket close frame) and no error followed.
async fn watch_socket(mut ws: sio::Ws) -> SocketEnd {
    let mut events = Vec::new();
    let mut goodbye = false;
    let mut error = false;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let t = t.as_str();
                if t == "2" {
                    let _ = ws.send(Message::text("3")).await;
                } else if t.starts_with("41") {
                    goodbye = true;
                    events.push((Instant::now(), "Socket.IO disconnect `41`".to_string()));
                } else if t.starts_with('1') {
                    goodbye = true;
                    events.push((Instant::now(), "engine.io close `1`".to_string()));
                } else {
                    events.push((Instant::now(), format!("text {t:.60}")));
                }
            }
            Some(Ok(Message::Close(frame))) => {
                goodbye = true;
                let code = frame.map(|f| u16::from(f.code).to_string());
                events.push((
                    Instant::now(),
                    format!(
                        "WebSocket close frame ({})",
                        code.unwrap_or("no code".into())
                    ),
                ));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                error = true;
                events.push((Instant::now(), format!("error: {e}")));
                break;
            }
            None => {
                events.push((Instant::now(), "end of stream".to_string()));
                break;
            }
        }
    }
    SocketEnd {
        events,
        clean: goodbye && !error,
    }
}

/// SIGTERM while one client holds a connection with a half-sent request head (a slow
/// or stalled client): the server must still exit within `EXIT_WITHIN`. Returns what
/// happened and, if it did not, the violation.
pub async fn slow_client(mut server: Server) -> Result<(String, Option<String>)> {
    use tokio::io::AsyncWriteExt;
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await?;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let term = Instant::now();
    server.signal(libc::SIGTERM)?;
    if let Some(status) = server.wait_exit(EXIT_WITHIN).await? {
        let text = format!("{status} after {} ms", term.elapsed().as_millis());
        let bad = (!status.success()).then(|| format!("with a stalled client: {text}"));
        return Ok((text, bad));
    }
    drop(stalled);
    let closed = Instant::now();
    let after = match server.wait_exit(EXIT_WITHIN).await? {
        Some(status) => format!(
            "{status} {} ms after the client closed",
            closed.elapsed().as_millis()
        ),
        None => {
            server.signal(libc::SIGKILL)?;
            server.wait_exit(EXIT_WITHIN).await?;
            "still running; killed".to_string()
        }
    };
    let text = format!(
        "still running {EXIT_WITHIN:?} after SIGTERM while a client held a half-sent \
         request head; {after}"
    );
    Ok((text.clone(), Some(text)))
}
