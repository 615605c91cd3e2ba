//! What every scenario needs from a running target: users with tokens, many
//! connected sockets with listeners, HTTP load (closed loop and open loop), and a
//! measurement window over the server's CPU and memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::http::{self, Conn};
use crate::sio;
use crate::stats::Latencies;
use crate::target::{self, Kind, SIGNUP_TOKEN, Target};

/// What a listener does with each event frame of socket `i`.
pub type OnEvent = Arc<dyn Fn(usize, &str) + Send + Sync>;

/// Signs up `n` users and returns their access tokens. The floor checks no token.
pub async fn tokens(target: &Target, n: usize) -> Result<Vec<String>> {
    if target.kind == Kind::Floor {
        return Ok((0..n).map(|i| format!("floor-{i}")).collect());
    }
    let mut conn = Conn::open(target.addr, target::localhost()).await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({
            "email": format!("bench{i}@example.com"),
            "password": "bench-password-1",
            "confirmPassword": "bench-password-1",
            "firstName": "Bench",
            "lastName": format!("User{i}"),
        })
        .to_string();
        let req = http::request_with(
            "POST",
            "/1/user/signup",
            &[("SignUpToken", SIGNUP_TOKEN)],
            Some(&body),
            "application/json",
        );
        let resp = conn.send(&req).await?;
        if resp.status != 200 {
            bail!(
                "signup on {} answered {}: {}",
                target.kind.name(),
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        let answer: Value = serde_json::from_slice(&resp.body)?;
        let token = answer["access_token"]
            .as_str()
            .context("signup answer without access_token")?;
        out.push(token.to_string());
    }
    Ok(out)
}

/// Connects `n` sockets (socket `i` with `tokens[i % len]`), joining `channel` if
/// given, 256 handshakes at a time. Each socket gets its listener as soon as it is in,
/// so it answers heartbeats while the others connect; `on_event(i, frame)` sees every
/// event frame of socket `i`.
pub async fn connect_many(
    addr: SocketAddr,
    tokens: &[String],
    n: usize,
    channel: Option<&str>,
    on_event: OnEvent,
) -> Result<Listeners> {
    let results: Vec<Result<JoinHandle<()>>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let token = tokens[i % tokens.len()].clone();
            let channel = channel.map(str::to_string);
            let on_event = on_event.clone();
            async move {
                let mut ws = sio::connect(addr, target::source(i), &token).await?;
                if let Some(channel) = channel {
                    sio::join(&mut ws, &channel).await?;
                }
                Ok(tokio::spawn(sio::listen(ws, move |frame| {
                    on_event(i, frame)
                })))
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    // Collect every task first, so the ones already running are aborted on error.
    let mut tasks = Vec::with_capacity(n);
    let mut first_error = None;
    for result in results {
        match result {
            Ok(task) => tasks.push(task),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let listeners = Listeners(tasks);
    match first_error {
        Some(e) => Err(e.context(format!("{} of {n} sockets connected", listeners.0.len()))),
        None => Ok(listeners),
    }
}

/// Listener tasks, aborted (sockets dropped) when this is dropped.
pub struct Listeners(pub Vec<JoinHandle<()>>);

impl Drop for Listeners {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Server CPU and wall time over a stretch of a run, and the load generator's own CPU.
pub struct Window {
    started: Instant,
    server_cpu: Duration,
    own_cpu: Duration,
}

pub struct Usage {
    pub wall: Duration,
    /// Cores' worth of CPU the server used (1.0 = one core busy).
    pub server: f64,
    pub loader: f64,
}

impl Window {
    pub fn open(target: &Target) -> Window {
        Window {
            started: Instant::now(),
            server_cpu: target.cpu(),
            own_cpu: own_cpu(),
        }
    }

    pub fn close(&self, target: &Target) -> Usage {
        let wall = self.started.elapsed();
        let secs = wall.as_secs_f64().max(1e-9);
        Usage {
            wall,
            server: (target.cpu() - self.server_cpu).as_secs_f64() / secs,
            loader: (own_cpu() - self.own_cpu).as_secs_f64() / secs,
        }
    }
}

fn own_cpu() -> Duration {
    target::cpu_of(std::process::id()).unwrap_or_default()
}

pub fn pct(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}

/// Result of a closed-loop HTTP run.
pub struct Closed {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latencies: hdrhistogram::Histogram<u64>,
    pub elapsed: Duration,
}

/// Request number `n` of connection `conn`.
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>;
/// Judges the answer to request `n` of connection `conn`: `Err` says what is wrong.
pub type CheckAnswer = Arc<dyn Fn(usize, u64, &http::Response) -> Result<(), String> + Send + Sync>;

/// `connections` loops, each sending the request `make(conn, n)` and waiting for its
/// answer, for `duration`. Status 200 counts as success.
pub async fn closed_loop(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    make: MakeRequest,
) -> Result<Closed> {
    let status_200: CheckAnswer = Arc::new(|_, _, resp: &http::Response| {
        if resp.status == 200 {
            Ok(())
        } else {
            Err(format!(
                "{} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ))
        }
    });
    closed_loop_checked(addr, connections, duration, make, status_200).await
}

/// As `closed_loop`, every answer judged by `check(conn, n, answer)`: only those it
/// accepts count as success; the others are errors, the first one's reason kept.
pub async fn closed_loop_checked(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    make: MakeRequest,
    check: CheckAnswer,
) -> Result<Closed> {
    let latencies = Arc::new(Latencies::default());
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (latencies, ok, errors, first_error, make, check) = (
            latencies.clone(),
            ok.clone(),
            errors.clone(),
            first_error.clone(),
            make.clone(),
            check.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, target::source(c)).await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let req = make(c, n);
                let t0 = Instant::now();
                let resp = conn.send(&req).await?;
                latencies.record(c, t0.elapsed());
                match check(c, n, &resp) {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(why) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_error.lock().unwrap();
                        if first.is_none() {
                            *first = Some(why);
                        }
                    }
                }
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let first_error = first_error.lock().unwrap().take();
    Ok(Closed {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        latencies: latencies.merged(),
        elapsed: started.elapsed(),
    })
}

/// Result of an open-loop HTTP run.
pub struct Open {
    pub ok: u64,
    pub errors: u64,
    /// From each request's due time to its answer (so queueing counts).
    pub latencies: hdrhistogram::Histogram<u64>,
}

/// Open loop: request number `seq` (1, 2, …) is due at `start + seq / rate`, whatever
/// happened to earlier ones; `on_due(seq, due)` is told before it is sent. At most
/// `connections` are in flight; the rest wait their turn, and their wait counts.
pub async fn open_loop(
    addr: SocketAddr,
    rate: u64,
    duration: Duration,
    connections: usize,
    make: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    on_due: Arc<dyn Fn(u64, Instant) + Send + Sync>,
) -> Result<Open> {
    let mut pool = Vec::with_capacity(connections);
    for c in 0..connections {
        pool.push(Conn::open(addr, target::source(c)).await?);
    }
    let pool = Arc::new(std::sync::Mutex::new(pool));
    let slots = Arc::new(tokio::sync::Semaphore::new(connections));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Latencies::default());
    let start = Instant::now();
    let total = rate * duration.as_secs_f64() as u64;
    let mut tasks = Vec::with_capacity(total as usize);
    for seq in 1..=total {
        let due = start + Duration::from_secs_f64(seq as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        on_due(seq, due);
        let (pool, slots, ok, errors, make, latencies) = (
            pool.clone(),
            slots.clone(),
            ok.clone(),
            errors.clone(),
            make.clone(),
            latencies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let slot = slots.acquire().await.unwrap();
            let mut conn = pool.lock().unwrap().pop().expect("a connection per slot");
            let answer = conn.send(&make(seq)).await;
            latencies.record(seq as usize, due.elapsed());
            match answer {
                Ok(resp) if resp.status == 200 => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    pool.lock().unwrap().push(conn);
                }
                Ok(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    pool.lock().unwrap().push(conn);
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    // A broken connection is replaced so the pool keeps its size.
                    match Conn::open(addr, target::localhost()).await {
                        Ok(fresh) => pool.lock().unwrap().push(fresh),
                        Err(_) => slot.forget(),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.ok();
    }
    Ok(Open {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        latencies: latencies.merged(),
    })
}

/// Waits until `done()` or `limit` passes; returns when the last check happened.
pub async fn drain(limit: Duration, done: impl Fn() -> bool) {
    let until = Instant::now() + limit;
    while !done() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `POST /1/bulk` of `steps` (livebase, or a target that speaks its bulk route); the
/// new rows' ids, in step order.
pub async fn bulk(conn: &mut Conn, token: &str, steps: &[Value]) -> Result<Vec<u64>> {
    let body = Value::Array(steps.to_vec()).to_string();
    let resp = conn
        .send(&http::request("POST", "/1/bulk", Some(token), Some(&body)))
        .await?;
    if resp.status != 200 {
        bail!(
            "bulk write answered {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
    }
    let created: Vec<Value> = serde_json::from_slice(&resp.body).context("bulk answer")?;
    ensure!(
        created.len() == steps.len(),
        "bulk of {} steps answered {} rows",
        steps.len(),
        created.len()
    );
    created
        .iter()
        .map(|c| {
            c["__metadata"]["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .context("bulk answer's id")
        })
        .collect()
}
