//! `lbbench`: runs benchmark scenarios against livebase, the Node.js peer and the bare
//! socketioxide/axum floor in one session and prints one table per scenario plus the
//! ratios that are the headline. See `bench/README.md`.
//!
//! Layout: `target` starts and measures servers; `http` and `sio` are lean clients;
//! `clients` holds load patterns shared by scenarios; `scenarios` the single-server
//! scenarios, with `reads` and `replay` in files of their own; `cluster` the
//! several-node one; `stats` histograms and tables.

mod clients;
mod cluster;
mod http;
mod reads;
mod replay;
mod scenarios;
mod sio;
mod stalled;
mod stats;
mod target;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use scenarios::{Headlines, Plan};
use target::{Kind, Paths};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// REST create → afterCreate action emitAll → every client.
    WriteEmit,
    /// chan_in to one channel of many sockets, rate raised until it breaks.
    Fanout,
    /// On-demand no-op and CPU-bound actions against a plain route.
    Actions,
    /// RSS per idle authenticated socket.
    Idle,
    /// Sustained creates with db-channel subscribers under owner row security.
    Writes,
    /// REST reads: one row by id, pages of 20 with and without row security, a
    /// filtered page; every answer checked.
    Reads,
    /// Normal traffic's latency, calm and while hostile actions run.
    Hostile,
    /// Many sockets for a long time: memory curve, deliveries, slow readers, limit.
    Soak,
    /// One reconnecting socket's replay of the events it missed, from the relay's memory
    /// and from the event log (livebase only).
    Replay,
    /// livebase as 1, 2 and 3 nodes over Redis and PostgreSQL: latency across nodes,
    /// cost per node and per emit, projected capacity (livebase only).
    Cluster,
    All,
}

#[derive(Parser, Debug)]
#[command(about = "livebase benchmark harness")]
struct Args {
    /// Scenarios to run, in order.
    #[arg(value_enum, required = true)]
    scenarios: Vec<Scenario>,
    /// Seconds-long runs with small numbers (CI keeps the harness from rotting).
    #[arg(long)]
    smoke: bool,
    /// Targets to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "livebase,peer,floor"
    )]
    targets: Vec<Kind>,
    /// Folder holding the `livebase` and `floor` binaries (default: next to lbbench).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// CPU list for the server under test (taskset).
    #[arg(long, default_value = "0")]
    server_core: String,
    /// CPU the load generator pins itself to.
    #[arg(long, default_value_t = 1)]
    loader_core: usize,
    /// Connections for the closed-loop HTTP scenarios (default: 32, smoke 4).
    #[arg(long)]
    http_connections: Option<usize>,
    /// Sockets in the fan-out channel (default: 10000, smoke 50).
    #[arg(long)]
    fanout_sockets: Option<usize>,
    /// Soak length in seconds (default: 600, smoke 6).
    #[arg(long)]
    soak_seconds: Option<u64>,
    /// Sockets held by the soak (default: 10000, smoke 100).
    #[arg(long)]
    soak_sockets: Option<usize>,
    /// livebase's `--socket-buffer` (messages queued per socket) in the replay scenario.
    /// Default: four thirds of the largest replay plus 1024. A replay may take three
    /// quarters of the queue: at livebase's own default, 1024, one of more than 768
    /// events stops there and its join answers `recovered: false`.
    #[arg(long)]
    replay_socket_buffer: Option<usize>,
    /// Folder for the soak's memory curve (CSV and SVG).
    #[arg(long, default_value = "target/lbbench")]
    plot_dir: PathBuf,
    /// PostgreSQL for the cluster scenario, as a role that may create and drop
    /// databases (one per cluster, dropped after it).
    #[arg(
        long,
        env = "LIVEBASE_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Redis (7+) for the cluster scenario; each cluster uses a channel prefix of its own.
    #[arg(
        long,
        env = "LIVEBASE_TEST_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Append the tables (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    pin_to(args.loader_core);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("bench/ has a parent")?
        .to_path_buf();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary folder")?
            .to_path_buf(),
    };
    let paths = Paths {
        repo,
        bin_dir,
        server_core: args.server_core.clone(),
    };
    // The loader has one core; one worker thread avoids paying for cross-thread wakeups.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(args, paths))
}

async fn run(args: Args, paths: Paths) -> Result<()> {
    let mut plan = if args.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    if let Some(n) = args.http_connections {
        plan.http_connections = n;
    }
    if let Some(n) = args.fanout_sockets {
        plan.fanout_sockets = n;
    }
    if let Some(s) = args.soak_seconds {
        plan.soak_duration = std::time::Duration::from_secs(s);
    }
    if let Some(n) = args.soak_sockets {
        plan.soak_sockets = n;
    }
    plan.replay_socket_buffer = args.replay_socket_buffer;
    plan.plot_dir = args.plot_dir.clone();
    let services = cluster::Services {
        postgres: args.postgres_url.clone(),
        redis: args.redis_url.clone(),
    };
    let mut list = args.scenarios.clone();
    if list.contains(&Scenario::All) {
        list = vec![
            Scenario::WriteEmit,
            Scenario::Fanout,
            Scenario::Actions,
            Scenario::Idle,
            Scenario::Writes,
            Scenario::Reads,
            Scenario::Hostile,
            Scenario::Soak,
            Scenario::Replay,
            Scenario::Cluster,
        ];
    }
    let kinds = &args.targets;
    let mut heads = Headlines::default();
    let mut failed: Vec<String> = Vec::new();
    let mut rendered = format!(
        "## lbbench {} ({}), {}\n\nTargets: {}. Server on CPU {}, load generator on CPU {}.\n\n",
        list.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        if plan.smoke { "smoke" } else { "full" },
        now_utc(),
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.server_core,
        args.loader_core,
    );
    for scenario in list {
        println!("== {scenario:?}");
        let one = |r: Result<stats::Table>| r.map(|t| vec![t]);
        let result = match scenario {
            Scenario::WriteEmit => one(scenarios::write_emit(&paths, &plan, kinds).await),
            Scenario::Fanout => one(scenarios::fanout(&paths, &plan, kinds, &mut heads).await),
            Scenario::Actions => one(scenarios::actions(&paths, &plan, kinds, &mut heads).await),
            Scenario::Idle => one(scenarios::idle(&paths, &plan, kinds, &mut heads).await),
            Scenario::Writes => one(scenarios::writes(&paths, &plan, kinds, &mut heads).await),
            Scenario::Reads => one(reads::run(&paths, &plan, kinds, &mut heads).await),
            Scenario::Hostile => one(scenarios::hostile(&paths, &plan, kinds, &mut heads).await),
            Scenario::Soak => one(scenarios::soak(&paths, &plan, kinds, &mut heads).await),
            Scenario::Replay => one(replay::run(&paths, &plan, kinds).await),
            Scenario::Cluster => cluster::run(&paths, &plan, kinds, &services).await,
            Scenario::All => unreachable!(),
        };
        // A scenario that fails is reported and the run goes on; the exit status says so.
        let tables = match result {
            Ok(tables) => tables,
            Err(e) => {
                eprintln!("lbbench: {scenario:?} failed: {e:#}");
                failed.push(format!("{scenario:?}"));
                let mut table = stats::Table::new(&format!("{scenario:?}"), &["failed"]);
                table.push(vec![format!("{e:#}")]);
                vec![table]
            }
        };
        for table in tables {
            rendered.push_str(&table.render());
            rendered.push('\n');
        }
    }
    rendered.push_str(&ratios(&heads));
    println!("\n{rendered}");
    if let Some(out) = &args.out {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        file.write_all(rendered.as_bytes())?;
    }
    if !failed.is_empty() {
        anyhow::bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

/// livebase's headline figures divided by the peer's and the floor's.
fn ratios(heads: &Headlines) -> String {
    let mut metrics: Vec<&str> = Vec::new();
    for (m, _, _) in &heads.0 {
        if !metrics.contains(&m.as_str()) {
            metrics.push(m);
        }
    }
    if metrics.is_empty() {
        return String::new();
    }
    let value = |m: &str, k: Kind| {
        heads
            .0
            .iter()
            .find(|(mm, kk, _)| mm == m && *kk == k)
            .map(|(_, _, v)| *v)
    };
    let show = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    };
    let mut out = String::from(
        "### Headline ratios\n\n| metric | livebase | peer | floor | livebase / peer | livebase / floor |\n|---|---|---|---|---|---|\n",
    );
    for m in metrics {
        let (l, p, f) = (
            value(m, Kind::Livebase),
            value(m, Kind::Peer),
            value(m, Kind::Floor),
        );
        out.push_str(&format!(
            "| {m} | {} | {} | {} | {} | {} |\n",
            show(l),
            show(p),
            show(f),
            ratio(l, p),
            ratio(l, f)
        ));
    }
    out.push('\n');
    out
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Tens of thousands of sockets need as many descriptors, here and in the servers,
/// which inherit the limit.
fn raise_fd_limit() {
    let wanted = 1 << 20;
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Pins this process (and the threads it starts later) to one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: sched_setaffinity on the calling thread with a zeroed, then filled set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("lbbench: could not pin to CPU {cpu}; running unpinned");
        }
    }
}
