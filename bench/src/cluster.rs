//! Scenario `cluster` (issue 15): livebase as 1, 2 and 3 nodes of one app, sharing a
//! fresh PostgreSQL database and one Redis (`--redis-url`: socketioxide's Redis adapter
//! carries every room emit as one PUBLISH, and every node delivers it to its own
//! sockets).
//!
//! Every node is pinned to the server core, so the nodes *share one core*: on a 2-core
//! machine absolute capacity cannot grow with the number of nodes. What the scenario
//! measures instead is what each node costs — CPU (from `/proc`) per 1,000 deliveries it
//! made — and what Redis costs per emit (`INFO commandstats`, `INFO cpu`), and from those
//! it projects the deliveries/s of N nodes each on its own core (method in
//! `bench/README.md` and BENCHMARKS.md). Latency is measured as everywhere else: open
//! loop, from each message's due time, split by whether the receiving socket is on the
//! node that took the write (or the `chan_in`) or on another one.
//!
//! The Node.js peer and the floor have no cluster mode here: the scenario runs livebase
//! only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;

use crate::clients::{self, Listeners, pct};
use crate::scenarios::{LOADER_CAP, Plan, create_events, publish_fan};
use crate::sio;
use crate::stats::{Receipts, SendTimes, Table, ms};
use crate::target::{self, Kind, Paths, Target};

/// Where the shared services are.
#[derive(Clone, Debug)]
pub struct Services {
    /// PostgreSQL as a role that may create and drop databases; each cluster gets a
    /// database of its own, dropped when it stops.
    pub postgres: String,
    /// Redis 7 or newer; each cluster gets a channel prefix of its own.
    pub redis: String,
}

/// Both scenarios at every node count, then the cost per node and the projection.
pub async fn run(
    paths: &Paths,
    plan: &Plan,
    kinds: &[Kind],
    services: &Services,
) -> Result<Vec<Table>> {
    if !kinds.contains(&Kind::Livebase) {
        let mut table = Table::new("Several nodes (cluster)", &["note"]);
        table.push(vec![
            "not run: livebase is not among the targets (the peer and the floor have no cluster mode here)"
                .into(),
        ]);
        return Ok(vec![table]);
    }
    if kinds.iter().any(|k| *k != Kind::Livebase) {
        println!("  (livebase only: the peer and the floor have no cluster mode here)");
    }
    let mut redis = Redis::connect(&services.redis).await?;
    check_postgres(&services.postgres).await?;

    let mut writes = Table::new(
        &format!(
            "Cluster: write → action → emit → receive, {} sockets spread over the nodes, writes to node 0",
            plan.cluster_sockets
        ),
        &[
            "nodes",
            "sockets per node",
            "writes/s",
            "writes ok",
            "delivered",
            "missing",
            "deliveries/s",
            "p50 ms, socket on the writing node",
            "p99 ms, writing node",
            "p50 ms, socket on another node",
            "p99 ms, other nodes",
            "nodes' CPU (all on core 0)",
            "PUBLISH per write",
            "Redis µs per PUBLISH",
            "Redis CPU µs per write",
            "loader CPU",
        ],
    );
    writes.notes.push(format!(
        "livebase only: the Node.js peer and the floor have no cluster mode here. Every node runs pinned to the server core (CPU {}), so the nodes share one core; Redis and PostgreSQL are not pinned. Every cluster (each write → receive step, each node count's fan-out series) starts on a fresh database and Redis prefix; `created` reaches every socket through the `events` object's `afterCreate` action (`emitAll`), as in write-emit.",
        paths.server_core
    ));
    let mut fan = Table::new(
        &format!(
            "Cluster: fan-out to one channel of {} sockets spread over the nodes (100-byte chan_in messages sent to node 0)",
            plan.cluster_fanout_sockets
        ),
        &[
            "nodes",
            "sockets per node",
            "messages/s",
            "delivered",
            "missing",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "p99 ms, socket on the sending node",
            "p99 ms, other nodes",
            "nodes' CPU (all on core 0)",
            "PUBLISH per message",
            "Redis µs per PUBLISH",
            "Redis CPU µs per message",
            "loader CPU",
            "verdict",
        ],
    );
    let mut per_node = Table::new(
        "Cluster: cost per node (CPU from /proc over the measured window; deliveries are those to the node's own sockets)",
        &[
            "scenario",
            "nodes",
            "rate",
            "node",
            "sockets",
            "deliveries",
            "CPU (share of one core)",
            "CPU idle just before",
            "CPU ms per 1,000 deliveries",
            "PUBLISH (livebase_cluster_publishes_total)",
            "publish failures / receive drops",
        ],
    );
    let mut chosen: Vec<Measured> = Vec::new();

    for &n in &plan.cluster_nodes {
        let mut best: Option<Measured> = None;
        for &rate in &plan.cluster_rates {
            let (row, measured, sustained) =
                write_step(paths, plan, services, &mut redis, n, rate).await?;
            writes.push(row);
            measured.push_rows(&mut per_node);
            if sustained {
                best = Some(measured);
            } else {
                best.get_or_insert(measured);
                break;
            }
        }
        chosen.extend(best);
    }
    for &n in &plan.cluster_nodes {
        let measured = fan_steps(paths, plan, services, &mut redis, n, &mut fan).await?;
        for m in &measured.all {
            m.push_rows(&mut per_node);
        }
        chosen.extend(measured.best);
    }

    let mut projection = Table::new(
        "Cluster: projected deliveries/s with each node on its own core (method: bench/README.md)",
        &[
            "scenario",
            "nodes measured",
            "step used",
            "CPU ms per 1,000 deliveries: all nodes / most expensive node",
            "node-bound deliveries/s, load spread evenly (N × 1000 ÷ all nodes' cost)",
            "node-bound deliveries/s, load as measured (N × 1000 ÷ most expensive node's cost)",
            "Redis CPU µs per emit, above idle",
            "deliveries per emit",
            "Redis cap, deliveries/s (deliveries per emit ÷ Redis CPU s per emit)",
            "projected deliveries/s (load spread evenly, capped by Redis)",
            "bound by",
        ],
    );
    for m in &chosen {
        projection.push(m.projection_row());
    }
    projection.notes.push(
        "The nodes ran on one shared core here, so these are per-node costs and a projection, not a measured capacity. It assumes each node on a core of its own, Redis on a core of its own, CPU per delivery independent of the load, and one PUBLISH per emit whatever the node count. Each row uses the highest step of its node count that delivered everything with p99 under 1 s (or the first step when none did)."
            .into(),
    );
    Ok(vec![writes, fan, per_node, projection])
}

/// One write → receive step: a fresh cluster of `n` nodes, sockets spread over them,
/// REST creates to node 0 at `rate`/s. Returns the table row, the costs, and whether
/// the rate was sustained.
async fn write_step(
    paths: &Paths,
    plan: &Plan,
    services: &Services,
    redis: &mut Redis,
    n: usize,
    rate: u64,
) -> Result<(Vec<String>, Measured, bool)> {
    let sockets = plan.cluster_sockets;
    let cluster = Cluster::start(paths, services, n).await?;
    let tokens = clients::tokens(&cluster.nodes[0], sockets.clamp(1, 10)).await?;
    let total = rate * plan.step.as_secs_f64() as u64;
    let sent = Arc::new(SendTimes::new(total as usize + 2));
    let tally = Arc::new(Tally::new(n, sockets));
    let (s, t) = (sent.clone(), tally.clone());
    let _listeners = cluster
        .connect(
            &tokens,
            sockets,
            None,
            Arc::new(move |node, socket, frame: &str| {
                if frame.starts_with("42[\"created\"")
                    && let Some(seq) = sio::seq_of(frame)
                    && (1..=total).contains(&seq)
                {
                    t.record(node, socket, &s, seq);
                }
            }),
        )
        .await?;
    let idle = cluster.idle(redis, idle_window(plan)).await?;
    let before = cluster.snapshot(redis).await?;
    let run = create_events(&cluster.nodes[0], &tokens[0], rate, plan.step, 64, &sent).await?;
    let ok = run.ok;
    let expected = ok * sockets as u64;
    clients::drain(Duration::from_secs(5), || tally.count() >= expected).await;
    let after = cluster.snapshot(redis).await?;
    let cost = Cost::between(&before, &after);
    let (missing, extra) = tally.missing(ok);
    let got = tally.count();
    let (same, other) = tally.split();
    let measured = Measured {
        scenario: "write → receive",
        nodes: n,
        rate: format!("{rate} writes/s"),
        emits: ok,
        per_emit: sockets as u64,
        sockets: spread(sockets, n),
        deliveries: tally.per_node(),
        cost,
        idle,
    };
    let sustained = ok == total
        && missing == 0
        && !same.is_empty()
        && same.value_at_quantile(0.99) < 1_000_000
        && (other.is_empty() || other.value_at_quantile(0.99) < 1_000_000);
    let row = vec![
        n.to_string(),
        sockets_per_node(sockets, n),
        rate.to_string(),
        format!("{ok}/{total}"),
        format!("{got}/{expected}"),
        missing_text(missing, extra),
        format!("{:.0}", got as f64 / measured.cost.wall.max(1e-9)),
        ms(&same, 0.5),
        ms(&same, 0.99),
        ms(&other, 0.5),
        ms(&other, 0.99),
        pct(measured.cost.cpu.iter().sum::<f64>() / measured.cost.wall.max(1e-9)),
        measured.publishes_per_emit(),
        measured.usec_per_publish(),
        measured.redis_usec_per_emit(),
        pct(measured.cost.loader / measured.cost.wall.max(1e-9)),
    ];
    cluster.stop().await;
    Ok((row, measured, sustained))
}

/// What a fan-out series measured: every step, and the step the projection uses.
struct FanSeries {
    all: Vec<Measured>,
    best: Option<Measured>,
}

/// One fan-out series: a fresh cluster of `n` nodes, sockets spread over them and
/// joined to one channel, a publisher on node 0 stepping through the rates until one
/// is not sustained (a delivery missing, or p99 ≥ 1 s).
async fn fan_steps(
    paths: &Paths,
    plan: &Plan,
    services: &Services,
    redis: &mut Redis,
    n: usize,
    table: &mut Table,
) -> Result<FanSeries> {
    let sockets = plan.cluster_fanout_sockets;
    let rates = &plan.cluster_fanout_rates;
    let cluster = Cluster::start(paths, services, n).await?;
    let tokens = clients::tokens(&cluster.nodes[0], 10).await?;
    let steps: Arc<Vec<(AtomicU64, Tally)>> = Arc::new(
        rates
            .iter()
            .map(|_| (AtomicU64::new(u64::MAX), Tally::new(n, sockets)))
            .collect(),
    );
    let capacity: u64 = rates
        .iter()
        .map(|r| r * plan.step.as_secs_f64().ceil() as u64 + 1)
        .sum();
    let sent = Arc::new(SendTimes::new(capacity as usize + 2));
    let (st, s) = (steps.clone(), sent.clone());
    let _listeners = cluster
        .connect(
            &tokens,
            sockets,
            Some("fan"),
            Arc::new(move |node, socket, frame: &str| {
                if !frame.starts_with("42[\"chan_out\"") {
                    return;
                }
                let Some(seq) = sio::seq_of(frame) else {
                    return;
                };
                if let Some((_, tally)) = st
                    .iter()
                    .rev()
                    .find(|(first, _)| first.load(Ordering::Relaxed) <= seq)
                {
                    tally.record(node, socket, &s, seq);
                }
            }),
        )
        .await?;
    let mut publisher = sio::connect(cluster.nodes[0].addr, target::localhost(), &tokens[0])
        .await
        .context("the publisher's socket on node 0")?;
    let idle = cluster.idle(redis, idle_window(plan)).await?;
    let mut seq = 0u64;
    let mut series = FanSeries {
        all: Vec::new(),
        best: None,
    };
    for (k, &rate) in rates.iter().enumerate() {
        if rate * sockets as u64 > LOADER_CAP {
            table.push(vec![
                n.to_string(),
                sockets_per_node(sockets, n),
                rate.to_string(),
                format!(
                    "not run: past the load generator ({} deliveries/s)",
                    rate * sockets as u64
                ),
            ]);
            break;
        }
        let (first, tally) = &steps[k];
        first.store(seq + 1, Ordering::Relaxed);
        let before = cluster.snapshot(redis).await?;
        let count = publish_fan(&mut publisher, &sent, &mut seq, rate, plan.step).await?;
        let expected = count * sockets as u64;
        clients::drain(Duration::from_secs(3), || tally.count() >= expected).await;
        let after = cluster.snapshot(redis).await?;
        let cost = Cost::between(&before, &after);
        let (missing, extra) = tally.missing(count);
        let got = tally.count();
        let all = tally.latencies();
        let (same, other) = tally.split();
        let sustained = missing == 0 && !all.is_empty() && all.value_at_quantile(0.99) < 1_000_000;
        let measured = Measured {
            scenario: "fan-out",
            nodes: n,
            rate: format!("{rate} messages/s"),
            emits: count,
            per_emit: sockets as u64,
            sockets: spread(sockets, n),
            deliveries: tally.per_node(),
            cost,
            idle: idle.clone(),
        };
        let wall = measured.cost.wall.max(1e-9);
        table.push(vec![
            n.to_string(),
            sockets_per_node(sockets, n),
            rate.to_string(),
            format!("{got}/{expected}"),
            missing_text(missing, extra),
            format!("{:.0}", got as f64 / wall),
            ms(&all, 0.5),
            ms(&all, 0.99),
            ms(&same, 0.99),
            ms(&other, 0.99),
            pct(measured.cost.cpu.iter().sum::<f64>() / wall),
            measured.publishes_per_emit(),
            measured.usec_per_publish(),
            measured.redis_usec_per_emit(),
            pct(measured.cost.loader / wall),
            if sustained {
                if all.value_at_quantile(0.99) <= 100_000 {
                    "ok".into()
                } else {
                    "sustained, p99 > 100 ms".into()
                }
            } else {
                "past the limit".into()
            },
        ]);
        let copy = measured.clone();
        series.all.push(measured);
        if sustained {
            series.best = Some(copy);
        } else {
            series.best.get_or_insert(copy);
            break;
        }
    }
    drop(publisher);
    cluster.stop().await;
    Ok(series)
}

/// Deliveries counted per node and per socket, with their latencies per node.
struct Tally {
    per_node: Vec<Receipts>,
    per_socket: Vec<AtomicU64>,
}

impl Tally {
    fn new(nodes: usize, sockets: usize) -> Tally {
        Tally {
            per_node: (0..nodes).map(|_| Receipts::default()).collect(),
            per_socket: (0..sockets).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, node: usize, socket: usize, sent: &SendTimes, seq: u64) {
        self.per_node[node].record(socket, sent, seq);
        self.per_socket[socket].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.per_node.iter().map(Receipts::count).sum()
    }

    fn per_node(&self) -> Vec<u64> {
        self.per_node.iter().map(Receipts::count).collect()
    }

    /// Deliveries missing and deliveries beyond those owed, socket by socket, when each
    /// socket is owed `owed`.
    fn missing(&self, owed: u64) -> (u64, u64) {
        self.per_socket
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .fold((0, 0), |(missing, extra), got| {
                (
                    missing + owed.saturating_sub(got),
                    extra + got.saturating_sub(owed),
                )
            })
    }

    fn latencies(&self) -> Histogram<u64> {
        merge(self.per_node.iter())
    }

    /// Latencies at node 0's sockets (the node that took the write or the message), and
    /// at every other node's.
    fn split(&self) -> (Histogram<u64>, Histogram<u64>) {
        (
            self.per_node[0].latencies(),
            merge(self.per_node.iter().skip(1)),
        )
    }
}

fn merge<'a>(receipts: impl Iterator<Item = &'a Receipts>) -> Histogram<u64> {
    let mut all = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    for r in receipts {
        all.add(r.latencies()).ok();
    }
    all
}

fn missing_text(missing: u64, extra: u64) -> String {
    if extra == 0 {
        missing.to_string()
    } else {
        format!("{missing} ({extra} extra)")
    }
}

/// How long the idle cost of a cluster is measured before its load.
fn idle_window(plan: &Plan) -> Duration {
    plan.settle.min(Duration::from_secs(2))
}

/// How `total` sockets spread over `nodes`: socket `i` on node `i % nodes`.
fn spread(total: usize, nodes: usize) -> Vec<usize> {
    (0..nodes)
        .map(|k| total / nodes + usize::from(k < total % nodes))
        .collect()
}

fn sockets_per_node(total: usize, nodes: usize) -> String {
    spread(total, nodes)
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The nodes of one app, with their fresh database and Redis prefix.
struct Cluster {
    /// Stopped (or, on an error path, killed) before the database is dropped.
    nodes: Vec<Target>,
    _db: Database,
}

/// What a listener does with event frame `frame` of socket `socket` on node `node`.
type OnClusterEvent = Arc<dyn Fn(usize, usize, &str) + Send + Sync>;

impl Cluster {
    /// `n` livebase nodes, started one after the other, on a new database and a new
    /// Redis prefix, every one pinned to the server core.
    async fn start(paths: &Paths, services: &Services, n: usize) -> Result<Cluster> {
        let db = Database::create(&services.postgres).await?;
        let extra: Vec<String> = [
            "--database-url",
            &db.url,
            "--redis-url",
            &services.redis,
            "--redis-prefix",
            &unique("lbbench"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let node = Target::start_with(Kind::Livebase, paths, None, &extra)
                .await
                .with_context(|| format!("starting node {i} of {n}"))?;
            nodes.push(node);
        }
        Ok(Cluster { nodes, _db: db })
    }

    /// `total` sockets, socket `i` on node `i % nodes`, joined to `channel` if given.
    async fn connect(
        &self,
        tokens: &[String],
        total: usize,
        channel: Option<&str>,
        on_event: OnClusterEvent,
    ) -> Result<Vec<Listeners>> {
        let n = self.nodes.len();
        let mut all = Vec::with_capacity(n);
        for (k, count) in spread(total, n).into_iter().enumerate() {
            let on_event = on_event.clone();
            let listeners = clients::connect_many(
                self.nodes[k].addr,
                tokens,
                count,
                channel,
                Arc::new(move |i, frame: &str| on_event(k, k + i * n, frame)),
            )
            .await
            .with_context(|| format!("sockets on node {k}"))?;
            all.push(listeners);
        }
        Ok(all)
    }

    async fn snapshot(&self, redis: &mut Redis) -> Result<Snapshot> {
        let mut metrics = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            metrics.push(
                node_metrics(node)
                    .await
                    .with_context(|| format!("/metrics of node {i}"))?,
            );
        }
        Ok(Snapshot {
            at: Instant::now(),
            cpu: self.nodes.iter().map(Target::cpu).collect(),
            metrics,
            redis: redis.stats().await?,
            loader: target::cpu_of(std::process::id()).unwrap_or_default(),
        })
    }

    /// What the cluster and Redis spend with the sockets connected and nothing sent.
    async fn idle(&self, redis: &mut Redis, window: Duration) -> Result<Cost> {
        let before = self.snapshot(redis).await?;
        tokio::time::sleep(window).await;
        let after = self.snapshot(redis).await?;
        Ok(Cost::between(&before, &after))
    }

    async fn stop(self) {
        for node in self.nodes {
            node.stop().await.ok();
        }
        // The database is dropped with `_db`, now that no node uses it.
    }
}

/// A name no other run uses: `prefix_<pid>_<time>_<counter>`, lower case.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos:x}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database of its own for one cluster, dropped (`WITH (FORCE)`) when this is.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin: &str) -> Result<Database> {
        let name = unique("lbbench");
        exec_pg(admin, &format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name} at {}", redact(admin)))?;
        Ok(Database {
            admin: admin.to_string(),
            url: with_database(admin, &name),
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // On a thread with a runtime of its own: Drop cannot await.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(exec_pg(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("lbbench: could not drop database {}: {e:#}", self.name),
            Err(_) => eprintln!("lbbench: could not drop database {}", self.name),
        }
    }
}

async fn exec_pg(url: &str, statement: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| anyhow!("no answer within 10 s"))??;
    sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
        .execute(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(())
}

/// Fails, naming the flag, when PostgreSQL does not answer.
async fn check_postgres(url: &str) -> Result<()> {
    exec_pg(url, "SELECT 1").await.map_err(|e| {
        anyhow!(
            "the cluster scenario needs PostgreSQL: {} does not answer ({e:#}); start it, or pass --postgres-url (or set LIVEBASE_TEST_POSTGRES_URL)",
            redact(url)
        )
    })
}

/// `url` with its database replaced by `name` (query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    format!("{base}/{name}{query}")
}

/// `url` with any password replaced, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let host_start = rest.find('/').unwrap_or(rest.len());
    match rest[..host_start].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A Redis connection for reading its statistics (not the nodes' connection).
struct Redis {
    conn: redis::aio::MultiplexedConnection,
}

impl Redis {
    /// Connects and checks the version (the nodes need Redis 7 or newer).
    async fn connect(url: &str) -> Result<Redis> {
        let shown = redact(url);
        let hint = "start it, or pass --redis-url (or set LIVEBASE_TEST_REDIS_URL)";
        let client = redis::Client::open(url)
            .map_err(|e| anyhow!("the cluster scenario needs Redis: {shown}: {e}; {hint}"))?;
        let mut conn = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| {
            anyhow!("the cluster scenario needs Redis: {shown} does not answer within 10 s; {hint}")
        })?
        .map_err(|e| {
            anyhow!("the cluster scenario needs Redis: {shown} does not answer ({e}); {hint}")
        })?;
        let server: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .with_context(|| format!("INFO server at {shown}"))?;
        let version = info_field(&server, "redis_version").unwrap_or("unknown");
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            bail!(
                "the cluster scenario needs Redis 7 or newer: {shown} is Redis {version}; {hint}"
            );
        }
        Ok(Redis { conn })
    }

    async fn stats(&mut self) -> Result<RedisStats> {
        let commands: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await
            .context("Redis INFO commandstats")?;
        let cpu: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut self.conn)
            .await
            .context("Redis INFO cpu")?;
        Ok(RedisStats::parse(&commands, &cpu))
    }
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Redis's counters: PUBLISH calls and the microseconds spent in them, and the CPU
/// the server process used (user + system), all since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RedisStats {
    publish_calls: u64,
    publish_usec: u64,
    cpu: f64,
}

impl RedisStats {
    /// From `INFO commandstats` (`cmdstat_publish:calls=…,usec=…,usec_per_call=…`) and
    /// `INFO cpu` (`used_cpu_sys`, `used_cpu_user`).
    fn parse(commandstats: &str, cpu: &str) -> RedisStats {
        let mut stats = RedisStats::default();
        if let Some(publish) = info_field(commandstats, "cmdstat_publish") {
            for pair in publish.split(',') {
                match pair.split_once('=') {
                    Some(("calls", v)) => stats.publish_calls = v.parse().unwrap_or(0),
                    Some(("usec", v)) => stats.publish_usec = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let seconds = |name| {
            info_field(cpu, name)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        stats.cpu = seconds("used_cpu_sys") + seconds("used_cpu_user");
        stats
    }
}

/// The cluster counters one node exposes on `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct NodeMetrics {
    publishes: f64,
    publish_failures: f64,
    receive_drops: f64,
}

impl NodeMetrics {
    /// From Prometheus text: each counter summed over its labels; absent means 0.
    fn parse(text: &str) -> NodeMetrics {
        let mut m = NodeMetrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            match name {
                "livebase_cluster_publishes_total" => m.publishes += value,
                "livebase_cluster_publish_failures_total" => m.publish_failures += value,
                "livebase_cluster_receive_drops_total" => m.receive_drops += value,
                _ => {}
            }
        }
        m
    }
}

async fn node_metrics(node: &Target) -> Result<NodeMetrics> {
    let mut conn = crate::http::Conn::open(node.addr, target::localhost()).await?;
    let resp = conn
        .send(&crate::http::request("GET", "/metrics", None, None))
        .await?;
    if resp.status != 200 {
        bail!("/metrics answered {}", resp.status);
    }
    Ok(NodeMetrics::parse(&String::from_utf8_lossy(&resp.body)))
}

/// Everything read at one instant: each node's CPU and counters, Redis's, the loader's.
struct Snapshot {
    at: Instant,
    cpu: Vec<Duration>,
    metrics: Vec<NodeMetrics>,
    redis: RedisStats,
    loader: Duration,
}

/// What a measured window cost (seconds of CPU; counts).
#[derive(Clone, Debug)]
struct Cost {
    wall: f64,
    /// Per node.
    cpu: Vec<f64>,
    publishes: Vec<f64>,
    failures: Vec<f64>,
    drops: Vec<f64>,
    redis_calls: u64,
    redis_usec: u64,
    redis_cpu: f64,
    loader: f64,
}

impl Cost {
    fn between(a: &Snapshot, b: &Snapshot) -> Cost {
        let per_node = |f: fn(&NodeMetrics) -> f64| -> Vec<f64> {
            a.metrics
                .iter()
                .zip(&b.metrics)
                .map(|(x, y)| f(y) - f(x))
                .collect()
        };
        Cost {
            wall: (b.at - a.at).as_secs_f64(),
            cpu: a
                .cpu
                .iter()
                .zip(&b.cpu)
                .map(|(x, y)| y.saturating_sub(*x).as_secs_f64())
                .collect(),
            publishes: per_node(|m| m.publishes),
            failures: per_node(|m| m.publish_failures),
            drops: per_node(|m| m.receive_drops),
            redis_calls: b.redis.publish_calls.saturating_sub(a.redis.publish_calls),
            redis_usec: b.redis.publish_usec.saturating_sub(a.redis.publish_usec),
            redis_cpu: (b.redis.cpu - a.redis.cpu).max(0.0),
            loader: b.loader.saturating_sub(a.loader).as_secs_f64(),
        }
    }
}

/// One measured step of one node count.
#[derive(Clone, Debug)]
struct Measured {
    scenario: &'static str,
    nodes: usize,
    rate: String,
    /// Writes answered 200, or `chan_in` messages sent.
    emits: u64,
    /// Deliveries each emit owes (every socket).
    per_emit: u64,
    sockets: Vec<usize>,
    deliveries: Vec<u64>,
    cost: Cost,
    /// The same cluster idle, sockets connected, just before.
    idle: Cost,
}

impl Measured {
    /// CPU seconds node `k` spent per 1,000 deliveries to its sockets.
    fn cpu_per_1k(&self, k: usize) -> Option<f64> {
        let d = self.deliveries[k];
        (d > 0).then(|| self.cost.cpu[k] * 1000.0 / d as f64)
    }

    /// Redis CPU seconds per emit, everything it did in the window counted.
    fn redis_cpu_per_emit(&self) -> Option<f64> {
        (self.emits > 0).then(|| self.cost.redis_cpu / self.emits as f64)
    }

    /// Redis CPU seconds per emit above what it spends idle (its timers, the nodes'
    /// once-a-second PING, other clients at their idle-time pace), and never less than
    /// the time `INFO commandstats` says the PUBLISH commands themselves took: what
    /// one more emit costs Redis.
    fn redis_marginal_per_emit(&self) -> Option<f64> {
        if self.emits == 0 {
            return None;
        }
        let idle_rate = self.idle.redis_cpu / self.idle.wall.max(1e-9);
        let net = self.cost.redis_cpu - idle_rate * self.cost.wall;
        let in_publish = self.cost.redis_usec as f64 * 1e-6;
        Some(net.max(in_publish) / self.emits as f64)
    }

    fn publishes_per_emit(&self) -> String {
        let livebase: f64 = self.cost.publishes.iter().sum();
        let mut text = if self.emits == 0 {
            "–".to_string()
        } else {
            format!("{:.2}", livebase / self.emits as f64)
        };
        // Redis counts every client's PUBLISH: more than livebase's means another
        // client used this Redis during the window, and its costs are in the figures.
        let others = self.cost.redis_calls as f64 - livebase;
        if others >= 1.0 {
            text.push_str(&format!(" ({others:.0} PUBLISH by other clients)"));
        }
        text
    }

    fn usec_per_publish(&self) -> String {
        if self.cost.redis_calls == 0 {
            return "–".into();
        }
        format!(
            "{:.1}",
            self.cost.redis_usec as f64 / self.cost.redis_calls as f64
        )
    }

    /// Redis CPU µs per emit: all of it, and above idle.
    fn redis_usec_per_emit(&self) -> String {
        match (self.redis_cpu_per_emit(), self.redis_marginal_per_emit()) {
            (Some(all), Some(marginal)) => {
                format!("{:.1} ({:.1} above idle)", all * 1e6, marginal * 1e6)
            }
            _ => "–".into(),
        }
    }

    fn push_rows(&self, table: &mut Table) {
        let wall = self.cost.wall.max(1e-9);
        for k in 0..self.nodes {
            table.push(vec![
                self.scenario.into(),
                self.nodes.to_string(),
                self.rate.clone(),
                if k == 0 {
                    "0 (takes the writes / messages)".into()
                } else {
                    k.to_string()
                },
                self.sockets[k].to_string(),
                self.deliveries[k].to_string(),
                pct(self.cost.cpu[k] / wall),
                pct(self.idle.cpu[k] / self.idle.wall.max(1e-9)),
                self.cpu_per_1k(k)
                    .map_or("–".into(), |s| format!("{:.2}", s * 1000.0)),
                format!("{:.0}", self.cost.publishes[k]),
                format!("{:.0} / {:.0}", self.cost.failures[k], self.cost.drops[k]),
            ]);
        }
    }

    fn projection_row(&self) -> Vec<String> {
        let costs: Vec<f64> = (0..self.nodes).filter_map(|k| self.cpu_per_1k(k)).collect();
        let total: u64 = self.deliveries.iter().sum();
        let mean = (total > 0).then(|| self.cost.cpu.iter().sum::<f64>() * 1000.0 / total as f64);
        let p = project(
            self.nodes,
            mean,
            &costs,
            self.redis_marginal_per_emit(),
            self.per_emit,
        );
        let show = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("–".into(), f);
        let ms_per_1k = |s: f64| format!("{:.2}", s * 1000.0);
        let rate = |v: f64| format!("{v:.0}");
        vec![
            self.scenario.into(),
            self.nodes.to_string(),
            self.rate.clone(),
            format!(
                "{} / {}",
                show(p.mean_cpu_per_1k, &ms_per_1k),
                show(p.worst_cpu_per_1k, &ms_per_1k)
            ),
            show(p.spread_bound, &rate),
            show(p.worst_bound, &rate),
            show(self.redis_marginal_per_emit(), &|s| {
                format!("{:.1}", s * 1e6)
            }),
            self.per_emit.to_string(),
            show(p.redis_bound, &rate),
            show(p.projected(), &rate),
            p.bound_by().into(),
        ]
    }
}

/// The projection of one measurement to `nodes` nodes each on a core of its own.
#[derive(Debug, PartialEq)]
struct Projection {
    /// All nodes' CPU seconds per 1,000 deliveries (total CPU ÷ total deliveries).
    mean_cpu_per_1k: Option<f64>,
    /// The most expensive node's CPU seconds per 1,000 of its deliveries.
    worst_cpu_per_1k: Option<f64>,
    /// `nodes × 1000 ÷ mean`: the writes (or messages) and the sockets spread evenly,
    /// as behind a balancer, every node does the mean share of the work.
    spread_bound: Option<f64>,
    /// `nodes × 1000 ÷ worst`: the load as measured (every write to node 0), scaled up
    /// until its most expensive node fills its core.
    worst_bound: Option<f64>,
    /// Emits/s one Redis core takes (1 ÷ CPU seconds per emit) × deliveries per emit.
    redis_bound: Option<f64>,
}

impl Projection {
    /// The even-spread bound, capped by Redis.
    fn projected(&self) -> Option<f64> {
        match (self.spread_bound, self.redis_bound) {
            (Some(n), Some(r)) => Some(n.min(r)),
            (n, None) => n,
            (None, r) => r,
        }
    }

    fn bound_by(&self) -> &'static str {
        match (self.spread_bound, self.redis_bound) {
            (Some(n), Some(r)) if r < n => "Redis",
            (Some(_), _) => "node CPU",
            (None, Some(_)) => "Redis",
            (None, None) => "–",
        }
    }
}

fn project(
    nodes: usize,
    mean_cpu_per_1k: Option<f64>,
    cpu_per_1k: &[f64],
    redis_cpu_per_emit: Option<f64>,
    per_emit: u64,
) -> Projection {
    let worst = cpu_per_1k
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
    let bound = |cost: Option<f64>| cost.filter(|c| *c > 0.0).map(|c| nodes as f64 * 1000.0 / c);
    Projection {
        mean_cpu_per_1k,
        worst_cpu_per_1k: worst,
        spread_bound: bound(mean_cpu_per_1k),
        worst_bound: bound(worst),
        redis_bound: redis_cpu_per_emit
            .filter(|r| *r > 0.0)
            .map(|r| per_emit as f64 / r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_spread_evenly() {
        assert_eq!(spread(10, 3), vec![4, 3, 3]);
        assert_eq!(spread(9, 3), vec![3, 3, 3]);
        assert_eq!(spread(5, 1), vec![5]);
        assert_eq!(sockets_per_node(1000, 3), "334 / 333 / 333");
    }

    #[test]
    fn redis_counters_are_read() {
        let commands = "# Commandstats\r\ncmdstat_ping:calls=9,usec=3,usec_per_call=0.33,rejected_calls=0,failed_calls=0\r\ncmdstat_publish:calls=1200,usec=6000,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n";
        let cpu = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.0\r\n";
        let stats = RedisStats::parse(commands, cpu);
        assert_eq!(stats.publish_calls, 1200);
        assert_eq!(stats.publish_usec, 6000);
        assert!((stats.cpu - 3.75).abs() < 1e-9);
        // No PUBLISH yet: the line is absent.
        assert_eq!(RedisStats::parse("# Commandstats\r\n", "").publish_calls, 0);
    }

    #[test]
    fn cluster_counters_are_read_from_metrics() {
        let text = "# TYPE livebase_cluster_publishes_total counter\nlivebase_cluster_publishes_total 42\nlivebase_cluster_receive_drops_total{reason=\"full\"} 2\nlivebase_cluster_receive_drops_total{reason=\"unreadable\"} 1\nlivebase_cluster_publishes_total_other 7\n";
        let m = NodeMetrics::parse(text);
        assert_eq!(m.publishes, 42.0);
        assert_eq!(m.receive_drops, 3.0);
        assert_eq!(m.publish_failures, 0.0);
    }

    #[test]
    fn projection_is_bound_by_node_cpu_or_redis() {
        // 3 nodes; 9 ms per 1,000 deliveries over all of them, the costliest 10 ms.
        let p = project(3, Some(0.009), &[0.008, 0.010, 0.009], Some(20e-6), 10_000);
        assert_eq!(p.worst_cpu_per_1k, Some(0.010));
        assert!((p.spread_bound.unwrap() - 333_333.33).abs() < 0.01);
        assert!((p.worst_bound.unwrap() - 300_000.0).abs() < 1e-6);
        // 20 µs per emit: 50,000 emits/s × 10,000 deliveries each.
        assert!((p.redis_bound.unwrap() - 500_000_000.0).abs() < 1e-3);
        assert_eq!(p.bound_by(), "node CPU");
        assert!((p.projected().unwrap() - 333_333.33).abs() < 0.01);
        // A costly Redis binds instead.
        let p = project(3, Some(0.010), &[0.010], Some(0.5), 10_000);
        assert_eq!(p.bound_by(), "Redis");
        assert!((p.projected().unwrap() - 20_000.0).abs() < 1e-6);
        // Nothing measured: nothing projected.
        let p = project(2, None, &[], None, 10);
        assert_eq!((p.projected(), p.bound_by()), (None, "–"));
    }

    #[test]
    fn redis_cost_above_idle_is_at_least_the_publish_time() {
        let cost = |wall: f64, redis_cpu: f64, redis_usec: u64| Cost {
            wall,
            cpu: vec![0.0],
            publishes: vec![0.0],
            failures: vec![0.0],
            drops: vec![0.0],
            redis_calls: 0,
            redis_usec,
            redis_cpu,
            loader: 0.0,
        };
        let mut m = Measured {
            scenario: "fan-out",
            nodes: 1,
            rate: "10 messages/s".into(),
            emits: 100,
            per_emit: 10,
            sockets: vec![10],
            deliveries: vec![1000],
            // 10 s: 60 ms of Redis CPU, 40 ms of it the idle pace (4 ms/s × 10 s).
            cost: cost(10.0, 0.060, 500),
            idle: cost(2.0, 0.008, 0),
        };
        assert!((m.redis_cpu_per_emit().unwrap() - 600e-6).abs() < 1e-12);
        assert!((m.redis_marginal_per_emit().unwrap() - 200e-6).abs() < 1e-12);
        // Idle noise larger than the load: the PUBLISH time is the floor.
        m.idle = cost(2.0, 0.020, 0);
        assert!((m.redis_marginal_per_emit().unwrap() - 5e-6).abs() < 1e-12);
    }

    #[test]
    fn urls_get_their_database_and_lose_their_password() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "lb_x"),
            "postgres://postgres@127.0.0.1:5432/lb_x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "lb_x"),
            "postgres://u:p@h/lb_x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "d"), "postgres://h/d");
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("redis://:pw@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn unique_names_differ_and_suit_sql() {
        let (a, b) = (unique("lbbench"), unique("lbbench"));
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
