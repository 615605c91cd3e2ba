//! The five scenarios of the harness. Each starts every target fresh for each step,
//! drives it with the same client code, and adds rows to its table. Sizes come from
//! `Plan`: the full run, or a smoke run small enough for CI.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures_util::StreamExt;
use serde_json::json;

use crate::clients::{self, Window, pct};
use crate::http;
use crate::sio;
use crate::stalled;
use crate::stats::{self, Receipts, SendTimes, Table, mib, ms};
use crate::target::{Kind, Paths, Target};

/// Sizes of every scenario.
#[derive(Clone, Debug)]
pub struct Plan {
    pub smoke: bool,
    pub emit_clients: Vec<usize>,
    pub emit_rates: Vec<u64>,
    pub fanout_sockets: usize,
    pub fanout_rates: Vec<u64>,
    pub http_connections: usize,
    pub idle_sockets: Vec<usize>,
    pub write_subscribers: Vec<usize>,
    pub write_users: usize,
    pub step: Duration,
    pub settle: Duration,
    /// Normal requests/s offered while hostile actions run, and each phase's length.
    pub hostile_rate: u64,
    pub hostile_phase: Duration,
    pub hostile_connections: usize,
    /// Soak: sockets held, for how long, writes/s (each reaches every socket), sockets
    /// that stop reading, RSS sampling interval, and warm-up excluded from the slope.
    pub soak_sockets: usize,
    pub soak_duration: Duration,
    pub soak_rate: u64,
    pub soak_slow: usize,
    /// Stopped readers in a channel carrying large messages, answering heartbeats blindly.
    pub soak_slow_large: usize,
    pub soak_sample: Duration,
    pub soak_warmup: Duration,
    /// Where the soak writes its memory curve (CSV and SVG).
    pub plot_dir: std::path::PathBuf,
    /// Cluster: node counts, write → receive sockets and writes/s, fan-out sockets and
    /// the messages/s it steps through.
    pub cluster_nodes: Vec<usize>,
    pub cluster_sockets: usize,
    pub cluster_rates: Vec<u64>,
    pub cluster_fanout_sockets: usize,
    pub cluster_fanout_rates: Vec<u64>,
    /// Replay: events a reconnecting socket missed (one fresh server each), and how many
    /// sockets reconnect in turn to each.
    pub replay_events: Vec<u64>,
    pub replay_rounds: usize,
    /// livebase's `--socket-buffer` in the replay scenario (`None`: room for the largest
    /// replay, see `replay`).
    pub replay_socket_buffer: Option<usize>,
    /// Reads: rows seeded in each of `open` and `owned`, and the users `owned` is
    /// spread over (each reads its own).
    pub reads_rows: usize,
    pub reads_users: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            emit_clients: vec![100, 1_000, 10_000],
            emit_rates: vec![10, 100, 1_000, 5_000],
            fanout_sockets: 10_000,
            fanout_rates: vec![
                1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500,
            ],
            http_connections: 32,
            // No 50k size: the benchmark machine's hard descriptor limit is 20,000 per
            // process (no CAP_SYS_RESOURCE to raise it), for the servers too.
            idle_sockets: vec![10_000, 18_000],
            write_subscribers: vec![0, 1_000],
            write_users: 100,
            step: Duration::from_secs(5),
            settle: Duration::from_secs(5),
            hostile_rate: 200,
            hostile_phase: Duration::from_secs(30),
            hostile_connections: 4,
            soak_sockets: 10_000,
            soak_duration: Duration::from_secs(600),
            soak_rate: 2,
            soak_slow: 20,
            soak_slow_large: 10,
            soak_sample: Duration::from_secs(5),
            soak_warmup: Duration::from_secs(60),
            plot_dir: "target/lbbench".into(),
            cluster_nodes: vec![1, 2, 3],
            cluster_sockets: 1_000,
            cluster_rates: vec![10, 50],
            cluster_fanout_sockets: 10_000,
            cluster_fanout_rates: vec![1, 2, 3, 5, 7, 10, 15, 20, 30],
            // Within the relay's memory of 4,096 events, and beyond it (read from the log,
            // at most 10,000 per replay).
            replay_events: vec![1_000, 4_000, 5_000, 10_000],
            replay_rounds: 5,
            replay_socket_buffer: None,
            reads_rows: 10_000,
            reads_users: 100,
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            emit_clients: vec![20],
            emit_rates: vec![50],
            fanout_sockets: 50,
            fanout_rates: vec![5, 20],
            http_connections: 4,
            idle_sockets: vec![100],
            write_subscribers: vec![0, 20],
            write_users: 4,
            step: Duration::from_millis(1000),
            settle: Duration::from_millis(500),
            hostile_rate: 20,
            hostile_phase: Duration::from_secs(3),
            hostile_connections: 2,
            soak_sockets: 100,
            soak_duration: Duration::from_secs(6),
            soak_rate: 5,
            soak_slow: 3,
            soak_slow_large: 2,
            soak_sample: Duration::from_millis(250),
            soak_warmup: Duration::from_secs(2),
            plot_dir: "target/lbbench".into(),
            cluster_nodes: vec![1, 2, 3],
            cluster_sockets: 30,
            cluster_rates: vec![20],
            cluster_fanout_sockets: 30,
            cluster_fanout_rates: vec![5, 20],
            replay_events: vec![100, 4_200],
            replay_rounds: 2,
            replay_socket_buffer: None,
            reads_rows: 500,
            reads_users: 5,
        }
    }
}

/// Attempted deliveries per second beyond which a step is not run: one load
/// generator core cannot read more, so the number would measure the harness.
pub(crate) const LOADER_CAP: u64 = 2_000_000;

/// A headline figure per target, for the ratio summary.
#[derive(Default)]
pub struct Headlines(pub Vec<(String, Kind, f64)>);

impl Headlines {
    pub(crate) fn add(&mut self, metric: &str, kind: Kind, value: f64) {
        self.0.push((metric.to_string(), kind, value));
    }
}

/// `n` sockets whose `created` events (the `events` object's `afterCreate` action
/// emits one per row to everyone) are recorded against the rows' send times.
async fn created_listeners(
    target: &Target,
    tokens: &[String],
    n: usize,
    sent: &Arc<SendTimes>,
    received: &Arc<Receipts>,
) -> Result<clients::Listeners> {
    let (s, r) = (sent.clone(), received.clone());
    clients::connect_many(
        target.addr,
        tokens,
        n,
        None,
        Arc::new(move |i, frame: &str| {
            if frame.starts_with("42[\"created\"")
                && let Some(seq) = sio::seq_of(frame)
            {
                r.record(i, &s, seq);
            }
        }),
    )
    .await
}

/// Open-loop REST creates of `events` rows numbered 1, 2, …, each row's due time
/// recorded in `sent` (its `created` emit's latency is counted from it).
pub(crate) async fn create_events(
    target: &Target,
    token: &str,
    rate: u64,
    duration: Duration,
    connections: usize,
    sent: &Arc<SendTimes>,
) -> Result<clients::Open> {
    let (token, s) = (token.to_string(), sent.clone());
    clients::open_loop(
        target.addr,
        rate,
        duration,
        connections,
        Arc::new(move |seq| {
            let body = json!({ "seq": seq, "body": "bench" }).to_string();
            http::request("POST", "/1/objects/events", Some(&token), Some(&body))
        }),
        Arc::new(move |seq, due| s.set(seq, due)),
    )
    .await
}

/// Scenario 1: REST create → `afterCreate` action `emitAll` → every client receives it.
pub async fn write_emit(paths: &Paths, plan: &Plan, kinds: &[Kind]) -> Result<Table> {
    let mut table = Table::new(
        "Write → action → emit → receive",
        &[
            "target",
            "clients",
            "writes/s offered",
            "writes ok",
            "delivered",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "server CPU",
            "peak RSS MiB",
            "loader CPU",
        ],
    );
    for &clients in &plan.emit_clients {
        for &kind in kinds {
            for &rate in &plan.emit_rates {
                let mut row = vec![kind.name().into(), clients.to_string(), rate.to_string()];
                if rate * clients as u64 > LOADER_CAP {
                    row.push(format!(
                        "not run: {} deliveries/s is past the load generator",
                        rate * clients as u64
                    ));
                    table.push(row);
                    continue;
                }
                let target = Target::start(kind, paths).await?;
                let tokens = clients::tokens(&target, clients.min(10)).await?;
                let total = rate * plan.step.as_secs_f64() as u64;
                let sent = Arc::new(SendTimes::new(total as usize + 2));
                let received = Arc::new(Receipts::default());
                let _listeners =
                    created_listeners(&target, &tokens, clients, &sent, &received).await?;
                let window = Window::open(&target);
                let run = create_events(&target, &tokens[0], rate, plan.step, 64, &sent).await?;
                let ok = run.ok;
                let expected = ok * clients as u64;
                clients::drain(Duration::from_secs(5), || received.count() >= expected).await;
                let usage = window.close(&target);
                let got = received.count();
                let h = received.latencies();
                row.extend([
                    format!("{ok}/{total}"),
                    format!("{:.2} %", 100.0 * got as f64 / expected.max(1) as f64),
                    format!("{:.0}", got as f64 / usage.wall.as_secs_f64()),
                    ms(&h, 0.5),
                    ms(&h, 0.99),
                    ms(&h, 0.999),
                    pct(usage.server),
                    mib(target.rss().1),
                    pct(usage.loader),
                ]);
                table.push(row);
                target.stop().await?;
                let sustained =
                    ok == total && got >= expected && h.value_at_quantile(0.99) < 1_000_000;
                if !sustained {
                    break;
                }
            }
        }
    }
    Ok(table)
}

/// One rate step of the fan-out: the first message number it sent, what arrived.
struct FanStep {
    first: AtomicU64,
    received: Receipts,
}

/// Scenario 2: 100-byte `chan_in` messages to one channel of many sockets, the rate
/// raised step by step until p99 passes 100 ms or a delivery is missing.
pub async fn fanout(
    paths: &Paths,
    plan: &Plan,
    kinds: &[Kind],
    heads: &mut Headlines,
) -> Result<Table> {
    let n = plan.fanout_sockets;
    let mut table = Table::new(
        &format!("Fan-out to one channel of {n} sockets (100-byte messages)"),
        &[
            "target",
            "messages/s",
            "delivered",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "server CPU",
            "peak RSS MiB",
            "loader CPU",
            "verdict",
        ],
    );
    for &kind in kinds {
        let target = Target::start(kind, paths).await?;
        let tokens = clients::tokens(&target, 10).await?;
        let steps: Arc<Vec<FanStep>> = Arc::new(
            plan.fanout_rates
                .iter()
                .map(|_| FanStep {
                    first: AtomicU64::new(u64::MAX),
                    received: Receipts::default(),
                })
                .collect(),
        );
        let capacity: u64 = plan
            .fanout_rates
            .iter()
            .map(|r| r * plan.step.as_secs_f64().ceil() as u64 + 1)
            .sum();
        let sent = Arc::new(SendTimes::new(capacity as usize + 2));
        let (st, s) = (steps.clone(), sent.clone());
        let _listeners = clients::connect_many(
            target.addr,
            &tokens,
            n,
            Some("fan"),
            Arc::new(move |i, frame: &str| {
                if !frame.starts_with("42[\"chan_out\"") {
                    return;
                }
                let Some(seq) = sio::seq_of(frame) else {
                    return;
                };
                let Some(step) = st
                    .iter()
                    .rev()
                    .find(|k| k.first.load(Ordering::Relaxed) <= seq)
                else {
                    return;
                };
                step.received.record(i, &s, seq);
            }),
        )
        .await?;
        let mut publisher =
            sio::connect(target.addr, crate::target::localhost(), &tokens[0]).await?;
        let mut seq = 0u64;
        // Two verdicts per step: the strict one (p99 ≤ 100 ms, nothing missing) and a
        // looser "sustained" (nothing missing, p99 under 1 s: no queue building up). A
        // broadcast to 10k sockets can take 100 ms to reach the last one on any server,
        // the floor included, so the strict verdict can fail at any rate.
        let mut best = 0.0f64;
        let mut best_sustained = 0.0f64;
        for (k, &rate) in plan.fanout_rates.iter().enumerate() {
            if rate * n as u64 > LOADER_CAP {
                table.push(vec![
                    kind.name().into(),
                    rate.to_string(),
                    format!(
                        "not run: past the load generator ({} deliveries/s)",
                        rate * n as u64
                    ),
                ]);
                break;
            }
            let step = &steps[k];
            step.first.store(seq + 1, Ordering::Relaxed);
            let window = Window::open(&target);
            let count = publish_fan(&mut publisher, &sent, &mut seq, rate, plan.step).await?;
            let expected = count * n as u64;
            clients::drain(Duration::from_secs(3), || step.received.count() >= expected).await;
            let usage = window.close(&target);
            let got = step.received.count();
            let h = step.received.latencies();
            let rate_delivered = got as f64 / usage.wall.as_secs_f64();
            let complete = got >= expected;
            let p99 = h.value_at_quantile(0.99);
            let passed = complete && p99 <= 100_000;
            let sustained = complete && p99 < 1_000_000;
            if passed {
                best = best.max(rate as f64 * n as f64);
            }
            if sustained {
                best_sustained = best_sustained.max(rate as f64 * n as f64);
            }
            table.push(vec![
                kind.name().into(),
                rate.to_string(),
                format!("{:.2} %", 100.0 * got as f64 / expected.max(1) as f64),
                format!("{rate_delivered:.0}"),
                ms(&h, 0.5),
                ms(&h, 0.99),
                ms(&h, 0.999),
                pct(usage.server),
                mib(target.rss().1),
                pct(usage.loader),
                if passed {
                    "ok".into()
                } else if sustained {
                    "sustained, p99 > 100 ms".into()
                } else {
                    "past the limit".into()
                },
            ]);
            if !sustained {
                break;
            }
        }
        heads.add(
            "fan-out deliveries/s (highest rate with p99 ≤ 100 ms, none missing)",
            kind,
            best,
        );
        heads.add(
            "fan-out deliveries/s (highest rate with none missing, p99 < 1 s)",
            kind,
            best_sustained,
        );
        target.stop().await?;
    }
    Ok(table)
}

/// Open loop: `rate × duration` 100-byte `chan_in` messages to channel `fan`, message
/// `i` due at `start + i / rate`, numbered on from `*seq` (their `data` starts with
/// `seq:N`); each due time is recorded in `sent`. Returns how many were sent.
pub(crate) async fn publish_fan(
    publisher: &mut sio::Ws,
    sent: &SendTimes,
    seq: &mut u64,
    rate: u64,
    duration: Duration,
) -> Result<u64> {
    let start = Instant::now();
    let count = rate * duration.as_secs_f64() as u64;
    for i in 1..=count {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        sio::wait_until(publisher, due).await?;
        *seq += 1;
        sent.set(*seq, due);
        let mut data = format!("seq:{} ", *seq);
        while data.len() < 100 {
            data.push('x');
        }
        sio::emit(
            publisher,
            "chan_in",
            &json!({ "channel": "fan", "data": data }),
        )
        .await?;
    }
    Ok(count)
}

/// Scenario 3: on-demand actions over HTTP against a plain route, and a CPU-bound action.
pub async fn actions(
    paths: &Paths,
    plan: &Plan,
    kinds: &[Kind],
    heads: &mut Headlines,
) -> Result<Table> {
    let mut table = Table::new(
        "Actions over HTTP (closed loop)",
        &[
            "target",
            "route",
            "connections",
            "requests/s",
            "errors",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "server CPU",
            "peak RSS MiB",
            "loader CPU",
        ],
    );
    let fib_n = if plan.smoke { 15 } else { 25 };
    for &kind in kinds {
        let target = Target::start(kind, paths).await?;
        let token = clients::tokens(&target, 1).await?.remove(0);
        let fib_path = format!("/1/function/general/fib?parameters=%7B%22n%22%3A{fib_n}%7D");
        let mut cases: Vec<(&str, String, &str, usize)> = vec![
            (
                "plain route GET /healthz",
                "/healthz".into(),
                "ok",
                plan.http_connections,
            ),
            (
                "on-demand no-op action",
                "/1/function/general/noop".into(),
                "null",
                plan.http_connections,
            ),
        ];
        if kind != Kind::Floor {
            cases.push(("fib(25) action", fib_path, "\"fib\"", 4));
        } else {
            cases[1].0 = "bare axum route (same path)";
        }
        if plan.smoke {
            cases.iter_mut().for_each(|c| {
                if c.0.starts_with("fib") {
                    c.0 = "fib(15) action"
                }
            });
        }
        for (label, path, must_contain, connections) in cases {
            let req = http::request("GET", &path, Some(&token), None);
            // One checked answer first: a broken route must not post a fast number.
            let mut probe = http::Conn::open(target.addr, crate::target::localhost()).await?;
            let answer = probe.send(&req).await?;
            let text = String::from_utf8_lossy(&answer.body).to_string();
            ensure!(
                answer.status == 200 && text.contains(must_contain),
                "{} {label}: {} {text}",
                kind.name(),
                answer.status
            );
            let warm = if plan.smoke {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(1)
            };
            let r = req.clone();
            clients::closed_loop(
                target.addr,
                connections,
                warm,
                Arc::new(move |_, _| r.clone()),
            )
            .await?;
            let window = Window::open(&target);
            let r = req.clone();
            let run = clients::closed_loop(
                target.addr,
                connections,
                plan.step,
                Arc::new(move |_, _| r.clone()),
            )
            .await?;
            let usage = window.close(&target);
            let rps = run.ok as f64 / run.elapsed.as_secs_f64();
            if label.contains("no-op") || label.contains("bare axum") {
                heads.add(
                    "on-demand no-op requests/s (floor: bare axum route)",
                    kind,
                    rps,
                );
            }
            table.push(vec![
                kind.name().into(),
                label.into(),
                connections.to_string(),
                format!("{rps:.0}"),
                match &run.first_error {
                    Some(e) => format!(
                        "{} (first: {})",
                        run.errors,
                        e.chars().take(80).collect::<String>()
                    ),
                    None => run.errors.to_string(),
                },
                ms(&run.latencies, 0.5),
                ms(&run.latencies, 0.99),
                ms(&run.latencies, 0.999),
                pct(usage.server),
                mib(target.rss().1),
                pct(usage.loader),
            ]);
        }
        target.stop().await?;
    }
    Ok(table)
}

/// Scenario 4: resident memory per idle authenticated socket.
pub async fn idle(
    paths: &Paths,
    plan: &Plan,
    kinds: &[Kind],
    heads: &mut Headlines,
) -> Result<Table> {
    let mut table = Table::new(
        "Idle authenticated sockets",
        &[
            "target",
            "sockets",
            "connected in s",
            "RSS before MiB",
            "RSS after MiB",
            "KiB per socket",
        ],
    );
    for &n in &plan.idle_sockets {
        for &kind in kinds {
            let target = Target::start(kind, paths).await?;
            let tokens = clients::tokens(&target, 10).await?;
            // One socket first so lazily built machinery is in the baseline.
            let warm =
                clients::connect_many(target.addr, &tokens, 1, None, Arc::new(|_, _| {})).await?;
            drop(warm);
            tokio::time::sleep(plan.settle).await;
            let before = target.rss().0;
            let started = Instant::now();
            let _listeners =
                clients::connect_many(target.addr, &tokens, n, None, Arc::new(|_, _| {})).await?;
            let took = started.elapsed();
            tokio::time::sleep(plan.settle).await;
            let after = target.rss().0;
            let per = after.saturating_sub(before) as f64 / n as f64 / 1024.0;
            heads.add(
                &format!("KiB per idle socket at {n} (lower is better)"),
                kind,
                per,
            );
            table.push(vec![
                kind.name().into(),
                n.to_string(),
                format!("{:.1}", took.as_secs_f64()),
                mib(before),
                mib(after),
                format!("{per:.1}"),
            ]);
            target.stop().await?;
        }
    }
    Ok(table)
}

/// Scenario 5: sustained creates on an owner-secured object, with and without sockets
/// subscribed to its `db-` channel; every delivered row is checked against its owner.
pub async fn writes(
    paths: &Paths,
    plan: &Plan,
    kinds: &[Kind],
    heads: &mut Headlines,
) -> Result<Table> {
    let users = plan.write_users;
    let mut table = Table::new(
        &format!("Writes with realtime on (owner row security, {users} users)"),
        &[
            "target",
            "subscribers",
            "writes/s",
            "write p50 ms",
            "write p99 ms",
            "errors",
            "delivered",
            "leaked",
            "delivery p99 ms",
            "server CPU",
            "peak RSS MiB",
        ],
    );
    for &subs in &plan.write_subscribers {
        for &kind in kinds.iter().filter(|k| **k != Kind::Floor) {
            let target = Target::start(kind, paths).await?;
            let tokens = clients::tokens(&target, users).await?;
            // Socket i belongs to user i % users, exactly as connect_many assigns tokens.
            let mut per_user = vec![0u64; users];
            (0..subs).for_each(|i| per_user[i % users] += 1);
            let capacity = 2_000_000;
            let sent = Arc::new(SendTimes::new(capacity));
            let received = Arc::new(Receipts::default());
            let leaked = Arc::new(AtomicU64::new(0));
            let marks: Vec<String> = (0..users).map(|u| format!("\"body\":\"u{u}\"")).collect();
            let (s, r, lk) = (sent.clone(), received.clone(), leaked.clone());
            let _listeners = clients::connect_many(
                target.addr,
                &tokens,
                subs,
                Some("db-owned"),
                Arc::new(move |i, frame: &str| {
                    if !frame.starts_with("42[\"db_created\"") {
                        return;
                    }
                    if !frame.contains(&marks[i % marks.len()]) {
                        lk.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(seq) = sio::seq_of(frame) {
                        r.record(i, &s, seq);
                    }
                }),
            )
            .await?;
            let next = Arc::new(AtomicU64::new(0));
            let by_user: Arc<Vec<AtomicU64>> =
                Arc::new((0..users).map(|_| AtomicU64::new(0)).collect());
            let (s, tk, bu, nx) = (
                sent.clone(),
                Arc::new(tokens.clone()),
                by_user.clone(),
                next.clone(),
            );
            let window = Window::open(&target);
            let run = clients::closed_loop(
                target.addr,
                16,
                plan.step,
                Arc::new(move |_, _| {
                    let seq = nx.fetch_add(1, Ordering::Relaxed) + 1;
                    let user = (seq as usize) % tk.len();
                    s.set(seq, Instant::now());
                    bu[user].fetch_add(1, Ordering::Relaxed);
                    let body = json!({ "seq": seq, "body": format!("u{user}") }).to_string();
                    http::request("POST", "/1/objects/owned", Some(&tk[user]), Some(&body))
                }),
            )
            .await?;
            // Deliveries owed: each user's writes times that user's subscribed sockets.
            // A write that failed is owed nothing but still counted here; failures show
            // in the errors column, and such a row cannot read as complete.
            let expected: u64 = (0..users)
                .map(|u| by_user[u].load(Ordering::Relaxed) * per_user[u])
                .sum();
            clients::drain(Duration::from_secs(5), || received.count() >= expected).await;
            let usage = window.close(&target);
            let wps = run.ok as f64 / run.elapsed.as_secs_f64();
            heads.add(&format!("creates/s with {subs} subscribers"), kind, wps);
            let h = received.latencies();
            let got = received.count();
            table.push(vec![
                kind.name().into(),
                subs.to_string(),
                format!("{wps:.0}"),
                ms(&run.latencies, 0.5),
                ms(&run.latencies, 0.99),
                run.errors.to_string(),
                if subs == 0 {
                    "–".into()
                } else {
                    format!("{got}/{expected}")
                },
                leaked.load(Ordering::Relaxed).to_string(),
                ms(&h, 0.99),
                pct(usage.server),
                mib(target.rss().1),
            ]);
            target.stop().await?;
        }
    }
    Ok(table)
}

/// The hostile actions (`bench/app/actions/general/onDemand/hostile_*.js`), each with
/// the words a clear refusal from livebase contains.
const HOSTILE: [(&str, &[&str]); 4] = [
    ("hostile_loop", &["time limit", "recently hit its limits"]),
    ("hostile_bomb", &["memory", "recently hit its limits"]),
    ("hostile_recurse", &["stack", "recently hit its limits"]),
    ("hostile_huge", &["result", "recently hit its limits"]),
];

/// Hostile load runs this long before normal traffic is measured.
const HOSTILE_WARMUP: Duration = Duration::from_secs(2);

/// How hostile invocations ended.
#[derive(Default)]
struct HostileTally {
    /// Non-2xx with a message naming the limit.
    clear: AtomicU64,
    /// Non-2xx without one (what it said is kept).
    unclear: AtomicU64,
    /// A 2xx: the hostile action was allowed to finish.
    answered: AtomicU64,
    /// The connection broke or no answer came.
    broken: AtomicU64,
    example: std::sync::Mutex<Option<String>>,
}

/// Scenario 6: normal traffic (on-demand no-op action and a record list, open loop)
/// measured calm, then again while other clients call actions that loop forever,
/// allocate without end, recurse without end and return 20 MiB, in closed loops.
pub async fn hostile(
    paths: &Paths,
    plan: &Plan,
    kinds: &[Kind],
    heads: &mut Headlines,
) -> Result<Table> {
    let rate = plan.hostile_rate;
    let mut table = Table::new(
        &format!(
            "Normal traffic ({rate} req/s: no-op action and list, alternating) calm vs. with hostile actions"
        ),
        &[
            "target",
            "phase",
            "normal ok",
            "normal errors",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "hostile calls",
            "clear errors",
            "other answers",
            "server CPU",
            "peak RSS MiB",
        ],
    );
    for &kind in kinds.iter().filter(|k| **k != Kind::Floor) {
        let target = Target::start(kind, paths).await?;
        let token = clients::tokens(&target, 1).await?.remove(0);
        for (name, _) in HOSTILE {
            let path = format!("/1/function/general/{name}");
            let mut probe = http::Conn::open(target.addr, crate::target::localhost()).await?;
            let answer = probe
                .send(&http::request("GET", &path, Some(&token), None))
                .await?;
            ensure!(
                answer.status != 404,
                "{}: {name} is not installed",
                kind.name()
            );
        }
        let normal = {
            let token = token.clone();
            let noop = http::request("GET", "/1/function/general/noop", Some(&token), None);
            let list = http::request("GET", "/1/objects/events?pageSize=10", Some(&token), None);
            Arc::new(move |seq: u64| {
                if seq.is_multiple_of(2) {
                    noop.clone()
                } else {
                    list.clone()
                }
            })
        };
        let mut p99 = Vec::new();
        for phase in ["calm", "hostile"] {
            let tally = Arc::new(HostileTally::default());
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut attackers = Vec::new();
            if phase == "hostile" {
                for c in 0..plan.hostile_connections {
                    let (tally, stop, token) = (tally.clone(), stop.clone(), token.clone());
                    let addr = target.addr;
                    attackers.push(tokio::spawn(async move {
                        attack(addr, c, &token, &tally, &stop).await
                    }));
                }
                // Measure from after each action's first offence: in livebase those
                // run on a main thread, at most the time limit (1 s), before the
                // action is moved to the penalty lane.
                tokio::time::sleep(HOSTILE_WARMUP).await;
            }
            let window = Window::open(&target);
            let run = clients::open_loop(
                target.addr,
                rate,
                plan.hostile_phase,
                16,
                normal.clone(),
                Arc::new(|_, _| {}),
            )
            .await?;
            stop.store(true, Ordering::Relaxed);
            for a in attackers {
                a.await??;
            }
            let usage = window.close(&target);
            let h = &run.latencies;
            p99.push(h.value_at_quantile(0.99) as f64 / 1000.0);
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let calls = load(&tally.clear)
                + load(&tally.unclear)
                + load(&tally.answered)
                + load(&tally.broken);
            let other = match tally.example.lock().unwrap().as_ref() {
                Some(e) => format!(
                    "{} unclear, {} 2xx, {} broken (e.g. {e})",
                    load(&tally.unclear),
                    load(&tally.answered),
                    load(&tally.broken)
                ),
                None => "0".into(),
            };
            table.push(vec![
                kind.name().into(),
                phase.into(),
                run.ok.to_string(),
                run.errors.to_string(),
                ms(h, 0.5),
                ms(h, 0.99),
                ms(h, 0.999),
                if phase == "calm" {
                    "–".into()
                } else {
                    calls.to_string()
                },
                if phase == "calm" {
                    "–".into()
                } else {
                    load(&tally.clear).to_string()
                },
                if phase == "calm" { "–".into() } else { other },
                pct(usage.server),
                mib(target.rss().1),
            ]);
        }
        heads.add(
            "normal p99, hostile ÷ calm (lower is better; target ≤ 2)",
            kind,
            p99[1] / p99[0].max(0.001),
        );
        target.stop().await?;
    }
    Ok(table)
}

/// One hostile client: calls the hostile actions in turn until `stop`, classifying
/// each answer. A broken connection is replaced.
async fn attack(
    addr: std::net::SocketAddr,
    c: usize,
    token: &str,
    tally: &HostileTally,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let mut conn = http::Conn::open(addr, crate::target::source(1000 + c)).await?;
    let mut n = c;
    while !stop.load(Ordering::Relaxed) {
        let (name, words) = HOSTILE[n % HOSTILE.len()];
        n += 1;
        let req = http::request(
            "GET",
            &format!("/1/function/general/{name}"),
            Some(token),
            None,
        );
        let answer = tokio::time::timeout(Duration::from_secs(30), conn.send(&req)).await;
        let note = |tally: &HostileTally, what: String| {
            let mut example = tally.example.lock().unwrap();
            if example.is_none() {
                *example = Some(what);
            }
        };
        match answer {
            Ok(Ok(resp)) if (200..300).contains(&resp.status) => {
                tally.answered.fetch_add(1, Ordering::Relaxed);
                note(
                    tally,
                    format!("{name}: {} with {} bytes", resp.status, resp.body.len()),
                );
            }
            Ok(Ok(resp)) => {
                let text = String::from_utf8_lossy(&resp.body).to_lowercase();
                if words.iter().any(|w| text.contains(w)) {
                    tally.clear.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.unclear.fetch_add(1, Ordering::Relaxed);
                    let text: String = text.chars().take(100).collect();
                    note(tally, format!("{name}: {} {text}", resp.status));
                }
            }
            Ok(Err(_)) | Err(_) => {
                tally.broken.fetch_add(1, Ordering::Relaxed);
                note(tally, format!("{name}: no answer"));
                conn = http::Conn::open(addr, crate::target::source(1000 + c)).await?;
            }
        }
    }
    Ok(())
}

/// Scenario 7: many authenticated sockets held for a long time under steady traffic
/// (REST creates whose `afterCreate` action emits to every socket). Reports the RSS
/// curve (CSV and SVG in `plot_dir`) and its slope after warm-up, deliveries missing at
/// healthy sockets, whether sockets that stopped reading were disconnected, and whether
/// the connection limit (livebase: sockets + the stopped readers, their publisher and 10
/// spare) holds and says so.
pub async fn soak(
    paths: &Paths,
    plan: &Plan,
    kinds: &[Kind],
    heads: &mut Headlines,
) -> Result<Table> {
    let n = plan.soak_sockets;
    let mut table = Table::new(
        &format!(
            "Soak: {n} sockets for {} s, {} writes/s each emitted to every socket, {} sockets that stop reading, {} more that stop reading a channel of 256 KiB and 960 KiB messages (one a second) but pong blindly",
            plan.soak_duration.as_secs(),
            plan.soak_rate,
            plan.soak_slow,
            plan.soak_slow_large
        ),
        &[
            "target",
            "writes ok",
            "delivered to healthy",
            "delivery p99 ms",
            "RSS after warm-up MiB",
            "RSS end MiB",
            "RSS max MiB",
            "slope after warm-up MiB/min",
            "stopped readers disconnected",
            "let go by the server (small / large)",
            "connection limit",
        ],
    );
    std::fs::create_dir_all(&plan.plot_dir)?;
    const SPARE: usize = 10;
    for &kind in kinds.iter().filter(|k| **k != Kind::Floor) {
        // The stopped readers, the large-message ones and their publisher, and the spare.
        let limit = n + plan.soak_slow + plan.soak_slow_large + 1 + SPARE;
        let target = Target::start_limited(kind, paths, Some(limit)).await?;
        let tokens = clients::tokens(&target, 10).await?;
        let total = plan.soak_rate * plan.soak_duration.as_secs_f64() as u64;
        let sent = Arc::new(SendTimes::new(total as usize + 2));
        let received = Arc::new(Receipts::default());
        let _listeners = created_listeners(&target, &tokens, n, &sent, &received).await?;
        // Sockets that connect and then never read again: no heartbeat answers, and
        // their buffers fill.
        let mut stopped = Vec::new();
        for i in 0..plan.soak_slow {
            stopped
                .push(sio::connect(target.addr, crate::target::source(n + i), &tokens[0]).await?);
        }
        let large = stalled::readers(
            &target,
            &tokens[0],
            plan.soak_slow_large,
            n + plan.soak_slow,
        )
        .await?;
        let mut watched = Vec::new();
        for ws in &stopped {
            watched.push(ws.get_ref().local_addr()?);
        }
        watched.extend(large.iter().map(|r| r.local));
        let watch = stalled::GoneWatch::start(target.addr, watched);
        let publisher = stalled::publish(
            &target,
            &tokens[1],
            n + plan.soak_slow + plan.soak_slow_large,
            &[256 * 1024, 960 * 1024],
            Duration::from_secs(1),
            plan.soak_duration,
        )
        .await?;
        // RSS sampler.
        let samples = Arc::new(std::sync::Mutex::new(Vec::<(f64, f64)>::new()));
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (samples, sampling, every) = (samples.clone(), sampling.clone(), plan.soak_sample);
            let pid = target.pid();
            tokio::spawn(async move {
                let t0 = Instant::now();
                while sampling.load(Ordering::Relaxed) {
                    let (rss, _) = crate::target::rss_of(pid);
                    if rss > 0 {
                        let mib = rss as f64 / (1024.0 * 1024.0);
                        samples
                            .lock()
                            .unwrap()
                            .push((t0.elapsed().as_secs_f64(), mib));
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        let run = create_events(
            &target,
            &tokens[0],
            plan.soak_rate,
            plan.soak_duration,
            8,
            &sent,
        )
        .await?;
        let expected = run.ok * n as u64;
        clients::drain(Duration::from_secs(10), || received.count() >= expected).await;
        sampling.store(false, Ordering::Relaxed);
        sampler.await?;
        publisher.await?;
        let gone = watch.stop().await;
        let let_go = format!(
            "{} / {}",
            stalled::summary(&gone[..plan.soak_slow]),
            stalled::summary(&gone[plan.soak_slow..])
        );
        drop(large);
        // Stopped readers: reading now must reach the server's close (or a reset)
        // through whatever it had buffered, not hang on a live connection. Only a run
        // longer than a heartbeat (25 s interval + 20 s timeout) can expect it.
        let stopped_readers = if plan.soak_duration < Duration::from_secs(50) {
            "not checked (run shorter than a heartbeat)".to_string()
        } else {
            let mut closed = 0;
            for ws in &mut stopped {
                let ended = tokio::time::timeout(Duration::from_secs(10), async {
                    while let Some(Ok(message)) = ws.next().await {
                        if matches!(message, tokio_tungstenite::tungstenite::Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
                if ended.is_ok() {
                    closed += 1;
                }
            }
            format!("{closed}/{}", plan.soak_slow)
        };
        drop(stopped);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let limit_check = if kind == Kind::Livebase {
            check_connection_limit(&target, &tokens[0], limit - n, n).await
        } else {
            "n/a (no limit setting)".into()
        };
        let points = samples.lock().unwrap().clone();
        let warm: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(t, _)| *t >= plan.soak_warmup.as_secs_f64())
            .collect();
        let per_min = stats::slope(&warm) * 60.0;
        let at = |p: Option<&(f64, f64)>| p.map_or("–".into(), |p| format!("{:.1}", p.1));
        let max = warm.iter().map(|p| p.1).fold(0.0, f64::max);
        let name = kind
            .name()
            .split(' ')
            .next()
            .unwrap_or("target")
            .to_string();
        let csv: String = std::iter::once("seconds,rss_mib\n".to_string())
            .chain(points.iter().map(|(t, m)| format!("{t:.1},{m:.1}\n")))
            .collect();
        std::fs::write(plan.plot_dir.join(format!("soak-{name}.csv")), csv)?;
        std::fs::write(
            plan.plot_dir.join(format!("soak-{name}.svg")),
            stats::svg_plot(
                &format!(
                    "{}: RSS with {n} sockets, {} writes/s to all",
                    kind.name(),
                    plan.soak_rate
                ),
                "seconds",
                "RSS MiB",
                &points,
            ),
        )?;
        heads.add(
            &format!("soak RSS slope after warm-up, MiB/min ({n} sockets)"),
            kind,
            per_min,
        );
        let got = received.count();
        table.push(vec![
            kind.name().into(),
            format!("{}/{total}", run.ok),
            format!("{got}/{expected}"),
            ms(&received.latencies(), 0.99),
            at(warm.first()),
            at(warm.last()),
            format!("{max:.1}"),
            format!("{per_min:+.2}"),
            stopped_readers,
            let_go,
            limit_check,
        ]);
        target.stop().await?;
    }
    Ok(table)
}

/// With `held` sockets connected, `room` more fit under the limit: tries `room + 20`
/// and reports how many got in and what the refused ones were told.
async fn check_connection_limit(target: &Target, token: &str, room: usize, held: usize) -> String {
    let mut admitted = Vec::new();
    let mut refused = 0;
    let mut said = String::new();
    for i in 0..room + 20 {
        match sio::connect(target.addr, crate::target::source(held + 100 + i), token).await {
            Ok(ws) => admitted.push(ws),
            Err(e) => {
                refused += 1;
                if said.is_empty() {
                    said = format!("{e:#}").chars().take(120).collect();
                }
            }
        }
    }
    let verdict = if admitted.len() == room && refused == 20 {
        "holds"
    } else {
        "DOES NOT HOLD"
    };
    format!(
        "{verdict}: {} of {} admitted (room for {room}); refused: {said}",
        admitted.len(),
        room + 20
    )
}
