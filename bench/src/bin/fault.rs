//! `lbfault`: crash-safety driver. Serves `bench/fault-app` with the livebase binary,
//! drives sustained concurrent writes, kills the server with SIGKILL at a random moment,
//! restarts it on the same data, waits until the after actions the killed process owed
//! have run, and checks through the REST API that every acknowledged write is there,
//! nothing refused or never sent is, in-doubt writes are whole or absent, and every
//! committed write's after action ran, with one effect however often it ran (see
//! `fault/model.rs` for the rules). Socket.IO observers joined to the rows' db channel
//! (one dropped by the kill, one that left shortly before it) resume after each kill with
//! `lastSeq` and must have received exactly one event per acknowledged write, none
//! twice, none for a refused write (`fault/events.rs`, `fault/observer.rs`). Repeats
//! `--kills` times per backend (SQLite, PostgreSQL), then ends with a SIGTERM cycle under writes, the graceful-shutdown check
//! and a SIGTERM with a stalled client (`fault/sigterm.rs`).
//! A panic in the server log counts too. Exits non-zero on any violation.
//!
//! ```sh
//! cargo build --bin livebase && cargo build -p livebase-bench --bin lbfault
//! LIVEBASE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   target/debug/lbfault --backend all --kills 20
//! ```

#[path = "fault/events.rs"]
mod events;
#[allow(dead_code)]
#[path = "../http.rs"]
mod http;
#[path = "fault/livebase.rs"]
mod livebase;
#[path = "fault/model.rs"]
mod model;
#[path = "fault/observer.rs"]
mod observer;
#[path = "fault/sigterm.rs"]
mod sigterm;
#[allow(dead_code)]
#[path = "../sio.rs"]
mod sio;
#[path = "fault/writers.rs"]
mod writers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use livebase::{Api, PgDatabase, Server, Setup};
use model::{CycleReport, Model, Sent};
use observer::{Observer, Realtime};
use serde_json::json;
use writers::{Rng, Writer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    /// SQLite, then PostgreSQL.
    All,
}

#[derive(Debug, Parser)]
#[command(
    name = "lbfault",
    about = "Kill livebase under writes; check nothing acknowledged is lost"
)]
struct Args {
    #[arg(long, value_enum, default_value = "all")]
    backend: Backend,
    /// SIGKILL cycles per backend.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Writes run for a random time between these before each kill.
    #[arg(long, default_value_t = 100)]
    min_write_ms: u64,
    #[arg(long, default_value_t = 2000)]
    max_write_ms: u64,
    /// The livebase binary (default: the newer of target/debug/livebase and
    /// target/release/livebase).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The app served (schema/ and actions/).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fault-app"))]
    app: PathBuf,
    /// A PostgreSQL URL with rights to create databases; the run uses a fresh
    /// database `livebase_fault_<pid>` beside it and drops it at the end. Default:
    /// `$LIVEBASE_TEST_POSTGRES_URL`.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Random seed (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Skip the final SIGTERM cycle and graceful-shutdown check.
    #[arg(long)]
    no_sigterm: bool,
    /// Skip the SIGTERM check with a client that stalls mid request head.
    #[arg(long)]
    no_slow_client: bool,
    /// Keep the temporary data directories (and print where they are).
    #[arg(long)]
    keep: bool,
    /// Nodes of one app (PostgreSQL and Redis): writers spread over them, each kill
    /// takes one node at random, and the writes are checked through a survivor. 1: the
    /// single-server cycles of `--backend`.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Redis for `--nodes` above 1. Default: `$LIVEBASE_TEST_REDIS_URL`.
    #[arg(long)]
    redis_url: Option<String>,
}

#[derive(Default)]
struct Summary {
    backend: &'static str,
    kills: usize,
    acked: [usize; 3],
    rows_checked: usize,
    refused_ok: usize,
    unexpected_refusals: Vec<String>,
    doubts: model::Doubts,
    /// Ledger rows written after a kill: owed after actions run by a later start or node.
    recovered: usize,
    /// The owed events the server logs say it ran, by what became of them.
    owed: model::OwedRuns,
    /// The longest wait for owed after actions before a check.
    settle_max: Duration,
    term_doubts: Option<model::Doubts>,
    /// What the realtime observers received and how their resumes went.
    realtime: Realtime,
    violations: Vec<String>,
    sigterm: Option<sigterm::SigtermReport>,
    slow_client: Option<String>,
    seconds: f64,
}

impl Summary {
    fn add(&mut self, r: &CycleReport) {
        self.acked[0] += r.acked_creates;
        self.acked[1] += r.acked_updates;
        self.acked[2] += r.acked_deletes;
        self.rows_checked += r.rows_checked + r.ledger_checked;
        self.refused_ok += r.refused_as_expected;
        self.recovered += r.recovered;
        self.unexpected_refusals
            .extend(r.unexpected_refusals.iter().cloned());
        self.violations.extend(r.violations.iter().cloned());
    }

    fn add_realtime(&mut self, rt: &Realtime) {
        self.realtime.add(rt);
        self.violations.extend(rt.violations.iter().cloned());
    }

    fn violation_count(&self) -> usize {
        self.violations.len() + self.sigterm.as_ref().map_or(0, |s| s.violations.len())
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("lbfault: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => default_binary()?,
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "lbfault: binary {}, app {}, seed {seed}",
        binary.display(),
        args.app.display()
    );
    let backends: Vec<&'static str> = match args.backend {
        Backend::Sqlite => vec!["sqlite"],
        Backend::Postgres => vec!["postgres"],
        Backend::All => vec!["sqlite", "postgres"],
    };
    let mut summaries = Vec::new();
    if args.nodes > 1 {
        let summary = run_cluster(&args, &binary, seed)
            .await
            .context("cluster run")?;
        summaries.push(summary);
        print_summary(&summaries);
        return Ok(summaries.iter().all(|s| s.violation_count() == 0));
    }
    for backend in backends {
        let summary = run_backend(&args, backend, &binary, seed)
            .await
            .with_context(|| format!("{backend} run"))?;
        summaries.push(summary);
    }
    print_summary(&summaries);
    Ok(summaries.iter().all(|s| s.violation_count() == 0))
}

fn default_binary() -> Result<PathBuf> {
    let target = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"));
    let newest = ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("livebase"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    match newest {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no livebase binary under {}: run `cargo build --bin livebase` or pass --binary",
            target.display()
        ),
    }
}

async fn run_backend(
    args: &Args,
    backend: &'static str,
    binary: &std::path::Path,
    seed: u64,
) -> Result<Summary> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("lbfault-").tempdir()?;
    let pg = match backend {
        "postgres" => {
            let from_env = std::env::var("LIVEBASE_TEST_POSTGRES_URL").ok();
            let url = args
                .postgres_url
                .as_deref()
                .or(from_env.as_deref())
                .context(
                    "PostgreSQL needs --postgres-url or LIVEBASE_TEST_POSTGRES_URL \
                 (e.g. postgres://postgres@127.0.0.1:5432/postgres)",
                )?;
            Some(PgDatabase::create(url)?)
        }
        _ => None,
    };
    let setup = Setup {
        binary: binary.to_path_buf(),
        app_dir: args.app.clone(),
        data_dir: dir.path().join("data"),
        database_url: pg.as_ref().map(|p| p.url.clone()),
        log: dir.path().join("livebase.log"),
        extra: Vec::new(),
    };
    println!(
        "\n== {backend}: {} kill cycles, {} writers (log: {})",
        args.kills,
        args.writers,
        setup.log.display()
    );
    let mut summary = Summary {
        backend,
        ..Summary::default()
    };
    if let Err(e) = cycles(args, &setup, seed, &mut summary).await {
        let kept = dir.keep();
        return Err(e.context(format!(
            "data kept in {}; server log tail:\n{}",
            kept.display(),
            livebase::log_tail(&setup.log)
        )));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    // A panic is a bug even when its request was answered 500 and nothing was lost.
    let panics = livebase::log_panics(&setup.log);
    summary
        .violations
        .extend(panics.iter().map(|p| format!("the server panicked: {p}")));
    for v in summary.violations.iter().take(20) {
        println!("  VIOLATION: {v}");
    }
    if let Some(term) = &summary.sigterm {
        for v in &term.violations {
            println!("  VIOLATION (SIGTERM): {v}");
        }
    }
    if summary.violation_count() > 0 {
        println!("  server log tail:\n{}", livebase::log_tail(&setup.log));
    }
    // The logs of a run with violations are kept for the diagnosis.
    if args.keep || summary.violation_count() > 0 {
        let kept = dir.keep();
        println!("  kept {}", kept.display());
    }
    drop(pg);
    Ok(summary)
}

/// `--nodes N`: N nodes on one fresh PostgreSQL database and Redis; each cycle runs the
/// writers spread over every node, SIGKILLs one node at random, checks every write
/// through a surviving node, then restarts the killed one.
async fn run_cluster(args: &Args, binary: &std::path::Path, seed: u64) -> Result<Summary> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("lbfault-cluster-")
        .tempdir()?;
    let from_env = std::env::var("LIVEBASE_TEST_POSTGRES_URL").ok();
    let pg_url = args
        .postgres_url
        .as_deref()
        .or(from_env.as_deref())
        .context("--nodes needs --postgres-url or LIVEBASE_TEST_POSTGRES_URL")?;
    let redis_env = std::env::var("LIVEBASE_TEST_REDIS_URL").ok();
    let redis = args
        .redis_url
        .as_deref()
        .or(redis_env.as_deref())
        .context("--nodes needs --redis-url or LIVEBASE_TEST_REDIS_URL")?;
    let pg = PgDatabase::create(pg_url)?;
    let prefix = format!("lbfault_{}", std::process::id());
    let setups: Vec<Setup> = (0..args.nodes)
        .map(|i| Setup {
            binary: binary.to_path_buf(),
            app_dir: args.app.clone(),
            data_dir: dir.path().join(format!("data{i}")),
            database_url: Some(pg.url.clone()),
            log: dir.path().join(format!("node{i}.log")),
            extra: vec![
                "--redis-url".into(),
                redis.into(),
                "--redis-prefix".into(),
                prefix.clone(),
            ],
        })
        .collect();
    println!(
        "\n== cluster: {} nodes, {} kill cycles, {} writers (logs: {})",
        args.nodes,
        args.kills,
        args.writers,
        dir.path().display()
    );
    let mut summary = Summary {
        backend: "cluster",
        ..Summary::default()
    };
    let mut rng = Rng::new(seed ^ 0xc1);
    let mut model = Model::default();
    let mut servers = Vec::new();
    for setup in &setups {
        servers.push(Server::start(setup).await?);
    }
    // One observer per node: when its node is killed it resumes on a survivor, and goes
    // home (resuming again) once its node is back. One more, the last, sits on each
    // cycle's victim and leaves shortly before the kill (its network dropped), so its
    // resume on a survivor replays what it missed from the log.
    let token = sigterm::access_token(&servers[0].api()).await?;
    let mut observers: Vec<Observer> = (0..=args.nodes)
        .map(|i| Observer::new(i, i % args.nodes, token.clone()))
        .collect();
    let homes: Vec<_> = observers
        .iter_mut()
        .map(|o| {
            let home = o.home;
            (o, servers[home].addr, home, false)
        })
        .collect();
    connect_all(homes, &mut summary.realtime).await?;
    for cycle in 1..=args.kills {
        let write_ms =
            args.min_write_ms + rng.below(args.max_write_ms.saturating_sub(args.min_write_ms) + 1);
        let victim = rng.below(args.nodes as u64) as usize;
        let leave = leave_after(&mut rng, write_ms);
        let mut rt = Realtime::default();
        observers[args.nodes].home = victim;
        let mut moving = Vec::new();
        for o in observers.iter_mut().filter(|o| o.at != Some(o.home)) {
            o.close().await;
            let home = o.home;
            moving.push((o, servers[home].addr, home, false));
        }
        connect_all(moving, &mut rt).await?;
        let targets: Vec<&Server> = servers.iter().collect();
        let (written, ()) = tokio::join!(
            write_then_signal_on(
                &targets,
                &servers[victim],
                &model,
                cycle,
                args.writers,
                &mut rng,
                write_ms,
                libc::SIGKILL,
            ),
            leave_early(&mut observers[args.nodes], leave)
        );
        let (sent, _) = written?;
        if servers[victim]
            .wait_exit(Duration::from_secs(10))
            .await?
            .is_none()
        {
            bail!("node {victim} outlived SIGKILL");
        }
        let since = now_ms();
        // Read back through a node that was never down this cycle, once the surviving
        // nodes have run what the killed one owed (the killed one stays down meanwhile).
        let survivor = (victim + 1) % args.nodes;
        let mut moving = Vec::new();
        for o in observers
            .iter_mut()
            .filter(|o| o.at.is_none_or(|at| at == victim))
        {
            let after_kill = o.last == Some(victim);
            if o.at.is_some() {
                dropped(o, &mut rt).await;
            }
            moving.push((o, servers[survivor].addr, survivor, after_kill));
        }
        connect_all(moving, &mut rt).await?;
        let (report, waited) =
            check(&servers[survivor], &mut model, &sent, since, SETTLE_CLUSTER).await?;
        observe(
            &mut observers,
            &servers[survivor].api(),
            &format!("mark-{cycle}"),
            &sent,
            &report,
            &mut rt,
        )
        .await?;
        servers[victim] = Server::start(&setups[victim])
            .await
            .with_context(|| format!("restarting node {victim} after SIGKILL"))?;
        summary.kills += 1;
        summary.settle_max = summary.settle_max.max(waited);
        print_cycle(
            &format!("kill {cycle:>2} (node {victim}, read on {survivor})"),
            write_ms,
            &report,
            waited,
            &model,
            &rt,
        );
        add_doubts(&mut summary.doubts, &report.doubts);
        summary.add(&report);
        summary.add_realtime(&rt);
    }
    for o in &mut observers {
        o.close().await;
    }
    for server in &servers {
        server.signal(libc::SIGKILL)?;
    }
    for server in &mut servers {
        server.wait_exit(Duration::from_secs(10)).await?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let owed: Vec<i64> = setups
        .iter()
        .flat_map(|s| livebase::log_owed_seqs(&s.log))
        .collect();
    summary.owed = model.classify_owed(&owed);
    for setup in &setups {
        let panics = livebase::log_panics(&setup.log);
        summary
            .violations
            .extend(panics.iter().map(|p| format!("a node panicked: {p}")));
    }
    for v in summary.violations.iter().take(20) {
        println!("  VIOLATION: {v}");
    }
    // The logs of a run with violations are kept for the diagnosis.
    if args.keep || summary.violation_count() > 0 {
        let kept = dir.keep();
        println!("  kept {}", kept.display());
    }
    drop(pg);
    Ok(summary)
}

/// The kill cycles, then the SIGTERM cycle and the graceful-shutdown check.
async fn cycles(args: &Args, setup: &Setup, seed: u64, summary: &mut Summary) -> Result<()> {
    let mut rng = Rng::new(seed ^ summary.backend.len() as u64);
    let mut model = Model::default();
    let mut server = Server::start(setup).await?;
    // Observer 0 stays until the kill drops its socket; observer 1 leaves shortly before
    // (its network dropped), so its resume replays what it missed from the log.
    let token = sigterm::access_token(&server.api()).await?;
    let mut observers = vec![
        Observer::new(0, 0, token.clone()),
        Observer::new(1, 0, token),
    ];
    let all = observers
        .iter_mut()
        .map(|o| (o, server.addr, 0, false))
        .collect();
    connect_all(all, &mut summary.realtime).await?;
    for cycle in 1..=args.kills {
        let write_ms =
            args.min_write_ms + rng.below(args.max_write_ms.saturating_sub(args.min_write_ms) + 1);
        let leave = leave_after(&mut rng, write_ms);
        let (written, ()) = tokio::join!(
            write_then_signal(
                &server,
                &model,
                cycle,
                args.writers,
                &mut rng,
                write_ms,
                libc::SIGKILL,
            ),
            leave_early(&mut observers[1], leave)
        );
        let (sent, _) = written?;
        if server.wait_exit(Duration::from_secs(10)).await?.is_none() {
            bail!("the server outlived SIGKILL");
        }
        let since = now_ms();
        let mut rt = Realtime::default();
        dropped(&mut observers[0], &mut rt).await;
        server = Server::start(setup)
            .await
            .context("restart after SIGKILL")?;
        let all = observers
            .iter_mut()
            .map(|o| (o, server.addr, 0, true))
            .collect();
        connect_all(all, &mut rt).await?;
        let (report, waited) = check(&server, &mut model, &sent, since, SETTLE_ALONE).await?;
        observe(
            &mut observers,
            &server.api(),
            &format!("mark-{cycle}"),
            &sent,
            &report,
            &mut rt,
        )
        .await?;
        summary.kills += 1;
        summary.settle_max = summary.settle_max.max(waited);
        print_cycle(
            &format!("kill {cycle:>2}"),
            write_ms,
            &report,
            waited,
            &model,
            &rt,
        );
        add_doubts(&mut summary.doubts, &report.doubts);
        summary.add(&report);
        summary.add_realtime(&rt);
    }
    if !args.no_sigterm {
        // The same cycle with SIGTERM: in-flight writes should all be answered.
        let cycle = args.kills + 1;
        let write_ms = 500;
        let (sent, unanswered) = write_then_signal(
            &server,
            &model,
            cycle,
            args.writers,
            &mut rng,
            write_ms,
            libc::SIGTERM,
        )
        .await?;
        let exited = server.wait_exit(sigterm::EXIT_WITHIN).await?;
        let since = now_ms();
        // Both observers stay: graceful shutdown closes their sockets.
        let mut rt = Realtime::default();
        for o in &mut observers {
            dropped(o, &mut rt).await;
        }
        match exited {
            Some(s) if s.success() => {}
            other => summary.violations.push(format!(
                "SIGTERM under writes: the server ended with {other:?} (want exit 0 within {:?})",
                sigterm::EXIT_WITHIN
            )),
        }
        server = Server::start(setup)
            .await
            .context("restart after SIGTERM")?;
        let all = observers
            .iter_mut()
            .map(|o| (o, server.addr, 0, true))
            .collect();
        connect_all(all, &mut rt).await?;
        let (report, waited) = check(&server, &mut model, &sent, since, SETTLE_ALONE).await?;
        observe(
            &mut observers,
            &server.api(),
            &format!("mark-{cycle}"),
            &sent,
            &report,
            &mut rt,
        )
        .await?;
        // The shutdown checks below count their own sockets.
        for o in &mut observers {
            o.close().await;
        }
        summary.settle_max = summary.settle_max.max(waited);
        print_cycle("sigterm ", write_ms, &report, waited, &model, &rt);
        summary.add_realtime(&rt);
        for (u, surely_read) in &unanswered {
            println!("    unanswered at SIGTERM: {u}");
            if *surely_read {
                summary.violations.push(format!(
                    "SIGTERM under writes: a request in flight for over {SURELY_READ:?} got no answer: {u}"
                ));
            }
        }
        if report.doubts.applied > 0 {
            summary.violations.push(format!(
                "SIGTERM under writes: {} write(s) applied but never answered",
                report.doubts.applied
            ));
        }
        summary.term_doubts = Some(report.doubts);
        summary.add(&report);
        let term = sigterm::check(server).await?;
        println!("  graceful shutdown: requests {:?}", term.requests);
        println!("  graceful shutdown: sockets {:?}", term.sockets);
        println!(
            "  graceful shutdown: new connections {:?}; {}",
            term.probes, term.exit
        );
        summary.sigterm = Some(term);
        if !args.no_slow_client {
            let server = Server::start(setup)
                .await
                .context("start for the stalled-client check")?;
            let (text, violation) = sigterm::slow_client(server).await?;
            println!("  graceful shutdown with a stalled client: {text}");
            summary.slow_client = Some(text);
            summary
                .violations
                .extend(violation.map(|v| format!("SIGTERM: {v}")));
        }
    } else {
        for o in &mut observers {
            o.close().await;
        }
        server.signal(libc::SIGKILL)?;
        server.wait_exit(Duration::from_secs(10)).await?;
    }
    summary.owed = model.classify_owed(&livebase::log_owed_seqs(&setup.log));
    Ok(())
}

/// A request sent this long before SIGTERM has surely been read by the server, so
/// graceful shutdown must answer it. (One sent just before may still sit unread in the
/// socket when the server closes the connection as idle: HTTP/1.1's keep-alive race.
/// The client cannot tell, so such a write must then not have been applied.)
const SURELY_READ: Duration = Duration::from_millis(100);

/// Runs the writers for `write_ms`, then stops them and sends `signal` to the server
/// at once: writers still waiting on an answer then see what that signal does to them.
/// Returns every request sent.
async fn write_then_signal(
    server: &Server,
    model: &Model,
    cycle: usize,
    writers: usize,
    rng: &mut Rng,
    write_ms: u64,
    signal: i32,
) -> Result<(Vec<Sent>, Vec<(String, bool)>)> {
    write_then_signal_on(
        &[server],
        server,
        model,
        cycle,
        writers,
        rng,
        write_ms,
        signal,
    )
    .await
}

/// `write_then_signal` with the writers spread over `targets` (writer `i` on
/// `targets[i % len]`) and the signal sent to `victim` alone.
#[allow(clippy::too_many_arguments)]
async fn write_then_signal_on(
    targets: &[&Server],
    victim: &Server,
    model: &Model,
    cycle: usize,
    writers: usize,
    rng: &mut Rng,
    write_ms: u64,
    signal: i32,
) -> Result<(Vec<Sent>, Vec<(String, bool)>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for index in 0..writers {
        let writer = Writer {
            index,
            cycle,
            live: model.live_rows(index),
            rng: Rng::new(rng.next()),
        };
        let api = targets[index % targets.len()].api();
        tasks.push(tokio::spawn(writer.run(api, stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(write_ms)).await;
    stop.store(true, Ordering::SeqCst);
    let signalled = Instant::now();
    victim.signal(signal)?;
    let mut sent = Vec::new();
    let mut unanswered = Vec::new();
    for task in tasks {
        let (s, u) = task.await?;
        sent.extend(s);
        unanswered.extend(u.map(|u| {
            let early = signalled.saturating_duration_since(u.sent_at);
            let late = u.sent_at.saturating_duration_since(signalled);
            let text = if late > Duration::ZERO {
                format!(
                    "`{}` sent {} µs after the signal: {}",
                    u.key,
                    late.as_micros(),
                    u.error
                )
            } else {
                format!(
                    "`{}` sent {} µs before the signal: {}",
                    u.key,
                    early.as_micros(),
                    u.error
                )
            };
            (text, early >= SURELY_READ)
        }));
    }
    Ok((sent, unanswered))
}

/// How long a check waits for owed after actions on one server: its start runs those
/// the killed process left at once. Only a check that finds rows and ledger unpaired
/// (a violation, unless it is waiting for them) waits this long.
const SETTLE_ALONE: Duration = Duration::from_secs(10);
/// With several nodes: a survivor takes the killed node's owed after actions once its
/// heartbeat is over 5 s old, at its next sweep (every 10 s).
const SETTLE_CLUSTER: Duration = Duration::from_secs(30);
const SETTLE_POLL: Duration = Duration::from_millis(200);

/// Reads every row and ledger row until they pair up (`model::paired`: the owed after
/// actions have run) or `within` has passed, then checks the last read against the
/// model. Ledger rows written after `since` (ms) count as recovered. Answers how long it
/// waited.
async fn check(
    server: &Server,
    model: &mut Model,
    sent: &[Sent],
    since: i64,
    within: Duration,
) -> Result<(CycleReport, Duration)> {
    let api = server.api();
    let started = Instant::now();
    loop {
        // Rows first: nothing writes rows now, while the owed after actions may still
        // write or remove ledger rows, so the ledger read is never older than the rows.
        let read = async {
            let rows = api.list_all("fault_rows").await?;
            let ledger = api.list_all("fault_ledger").await?;
            anyhow::Ok((rows, ledger))
        };
        let read = read.await;
        let waited = started.elapsed();
        match read {
            Ok((rows, ledger)) if model::paired(&rows, &ledger) || waited >= within => {
                return Ok((model.check_since(sent, &rows, &ledger, Some(since)), waited));
            }
            Ok(_) => {}
            // A list answers its count and its page from two reads, so an owed after
            // action writing meanwhile can make them disagree (`list_all` refuses that):
            // read again.
            Err(e) if waited < within => {
                println!("    reading again: {e:#}");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// How long an observer's socket may stay open after its server was killed or stopped.
const DROP_WITHIN: Duration = Duration::from_secs(5);
/// How long the observers wait for the cycle's marker event.
const MARK_WITHIN: Duration = Duration::from_secs(10);

/// An observer leaving this long into a write phase of `write_ms`: within its last 500 ms,
/// so what its resume replays stays well under a socket's queue (`--socket-buffer`).
fn leave_after(rng: &mut Rng, write_ms: u64) -> Duration {
    Duration::from_millis(write_ms - rng.below(write_ms.min(500)))
}

/// Closes `observer`'s socket after `after`, as a client whose network dropped.
async fn leave_early(observer: &mut Observer, after: Duration) {
    tokio::time::sleep(after).await;
    observer.close().await;
}

/// Connects each observer to its (address, node) at once (a resume's join ack can wait
/// ~40 ms for a delayed ACK), the last flag saying whether the node it was on was
/// killed; adds what the resumes showed to `rt`.
async fn connect_all(
    to: Vec<(&mut Observer, std::net::SocketAddr, usize, bool)>,
    rt: &mut Realtime,
) -> Result<()> {
    let connecting = to
        .into_iter()
        .map(|(o, addr, node, after_kill)| o.connect(addr, node, after_kill));
    for done in futures_util::future::try_join_all(connecting).await? {
        rt.add(&done);
    }
    Ok(())
}

/// Waits for an observer's socket to end after its server died.
async fn dropped(observer: &mut Observer, rt: &mut Realtime) {
    if observer.wait_dropped(DROP_WITHIN).await.is_none() {
        rt.violations.push(format!(
            "observer {}: its socket was still open {DROP_WITHIN:?} after its server died",
            observer.index
        ));
    }
}

/// Creates the cycle's marker (a `fault_marks` row) once every write of the cycle was
/// answered or cut off, waits until each observer has its event (delivery follows the
/// log's order, so every earlier event came before it), then checks what each received.
async fn observe(
    observers: &mut [Observer],
    api: &Api,
    mark: &str,
    sent: &[Sent],
    report: &CycleReport,
    rt: &mut Realtime,
) -> Result<()> {
    api.create("fault_marks", &json!({ "key": mark }))
        .await
        .context("creating the cycle's marker")?;
    for o in observers.iter() {
        if !o.wait_mark(mark, MARK_WITHIN).await {
            rt.violations.push(format!(
                "observer {}: the event of marker `{mark}` did not come within {MARK_WITHIN:?}",
                o.index
            ));
        }
    }
    for o in observers.iter_mut() {
        o.check(sent, report, rt);
    }
    Ok(())
}

/// Wall-clock milliseconds since the Unix epoch, as the actions' `Date.now()` gives.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn add_doubts(total: &mut model::Doubts, d: &model::Doubts) {
    total.total += d.total;
    total.applied += d.applied;
    total.not_applied += d.not_applied;
}

fn print_cycle(
    label: &str,
    write_ms: u64,
    r: &CycleReport,
    waited: Duration,
    model: &Model,
    rt: &Realtime,
) {
    println!(
        "  {label}: wrote {write_ms:>4} ms; acked {:>4} (c {} u {} d {}), refused-as-expected {:>3}, \
         in doubt {} (applied {}, not {}); after actions recovered {} (settled after {} ms); \
         checked {} rows + {} ledger, {} live; events {} checked of {} received, resumed {} \
         (recovered: joins {} true {} false, at connection {} true {} false; replayed {}); \
         violations {}",
        r.acked(),
        r.acked_creates,
        r.acked_updates,
        r.acked_deletes,
        r.refused_as_expected,
        r.doubts.total,
        r.doubts.applied,
        r.doubts.not_applied,
        r.recovered,
        waited.as_millis(),
        r.rows_checked,
        r.ledger_checked,
        model.live_count(),
        rt.matched,
        rt.received,
        rt.resumes,
        rt.join_recovered,
        rt.join_not_recovered,
        rt.connect_recovered,
        rt.connect_not_recovered,
        rt.replayed,
        r.violations.len() + rt.violations.len(),
    );
    for v in rt.violations.iter().take(5) {
        println!("    realtime violation: {v}");
    }
    for u in r.unexpected_refusals.iter().take(5) {
        println!("    unexpected refusal: {u}");
    }
}

fn print_summary(summaries: &[Summary]) {
    println!(
        "\nbackend  | kills | acked writes checked (create/update/delete) | rows read back | refused as expected | in doubt: applied / not | after actions recovered (owed events the server ran: recovered / re-run / delete; longest settle) | SIGTERM cycle in doubt | events checked / received | resumes (after a kill) | recovered true / false: joins; at connection | replayed | unexpected refusals | violations | time"
    );
    println!(
        "---------|-------|---------------------------------------------|----------------|---------------------|-------------------------|---------------------------------------------------------------------------------------------------|------------------------|---------------------------|------------------------|----------------------------------------------|----------|---------------------|------------|-----"
    );
    for s in summaries {
        let term = s.term_doubts.map_or("-".to_string(), |d| {
            format!("{} ({} applied)", d.total, d.applied)
        });
        println!(
            "{:<8} | {:>5} | {:>6} ({}/{}/{}) | {:>14} | {:>19} | {:>4}: {} / {} | {:>4} ({}: {} / {} / {}; {:.1} s) | {:>22} | {:>11} / {:>11} | {:>13} ({:>6}) | {:>19} / {}; {} / {} | {:>8} | {:>19} | {:>10} | {:.0} s",
            s.backend,
            s.kills,
            s.acked.iter().sum::<usize>(),
            s.acked[0],
            s.acked[1],
            s.acked[2],
            s.rows_checked,
            s.refused_ok,
            s.doubts.total,
            s.doubts.applied,
            s.doubts.not_applied,
            s.recovered,
            s.owed.recovered + s.owed.rerun + s.owed.other,
            s.owed.recovered,
            s.owed.rerun,
            s.owed.other,
            s.settle_max.as_secs_f64(),
            term,
            s.realtime.matched,
            s.realtime.received,
            s.realtime.resumes,
            s.realtime.after_kill,
            s.realtime.join_recovered,
            s.realtime.join_not_recovered,
            s.realtime.connect_recovered,
            s.realtime.connect_not_recovered,
            s.realtime.replayed,
            s.unexpected_refusals.len(),
            s.violation_count(),
            s.seconds,
        );
    }
    for s in summaries {
        if let Some(t) = &s.sigterm {
            println!(
                "{} graceful shutdown: in-flight requests {:?}; sockets {:?}; {}; violations {}",
                s.backend,
                t.requests,
                t.sockets,
                t.exit,
                t.violations.len()
            );
        }
        if let Some(text) = &s.slow_client {
            println!(
                "{} graceful shutdown with a stalled client: {text}",
                s.backend
            );
        }
    }
}
