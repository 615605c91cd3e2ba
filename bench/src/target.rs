//! The servers under test: livebase, the Node.js peer (`bench/peer-node`) and the
//! bare socketioxide/axum floor (`floor`). Each is started fresh for every step, in a
//! temporary folder, pinned to core 0 with `taskset`, and stopped with SIGTERM.
//! CPU time and resident memory are read from `/proc/<pid>`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::http;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Livebase,
    Peer,
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Livebase => "livebase",
            Kind::Peer => "peer (node)",
            Kind::Floor => "floor",
        }
    }
}

pub const SIGNUP_TOKEN: &str = "bench-signup";

pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    pid: u32,
    _dir: tempfile::TempDir,
}

/// Where the harness finds binaries and the shared app.
#[derive(Clone, Debug)]
pub struct Paths {
    pub repo: PathBuf,
    pub bin_dir: PathBuf,
    pub server_core: String,
}

impl Paths {
    pub fn app(&self) -> PathBuf {
        self.repo.join("bench/app")
    }
}

impl Target {
    pub async fn start(kind: Kind, paths: &Paths) -> Result<Target> {
        Target::start_limited(kind, paths, None).await
    }

    /// As `start`, with livebase's `--max-connections` set (the others have no such
    /// setting and ignore it).
    pub async fn start_limited(
        kind: Kind,
        paths: &Paths,
        max_connections: Option<usize>,
    ) -> Result<Target> {
        Target::start_with(kind, paths, max_connections, &[]).await
    }

    /// As `start_limited`, with more livebase flags after the harness's own (the
    /// `cluster` scenario's `--database-url`, `--redis-url`, `--redis-prefix`).
    pub async fn start_with(
        kind: Kind,
        paths: &Paths,
        max_connections: Option<usize>,
        extra: &[String],
    ) -> Result<Target> {
        let max_connections = max_connections.unwrap_or(200_000).to_string();
        let dir = tempfile::Builder::new().prefix("lbbench-").tempdir()?;
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let app = paths.app();
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(&paths.server_core);
        match kind {
            Kind::Livebase => {
                cmd.arg(paths.bin_dir.join("livebase"))
                    .args(["--listen", &listen])
                    .arg("--data-dir")
                    .arg(dir.path().join("data"))
                    .arg("--schema-dir")
                    .arg(app.join("schema"))
                    .arg("--actions-dir")
                    .arg(app.join("actions"))
                    .args(["--signup-token", SIGNUP_TOKEN])
                    .args(["--watch", "false"])
                    .args(["--max-connections", &max_connections])
                    // The harness signs up 100 users from one address in a second; the
                    // peer has no such limit either.
                    .args(["--auth-rate-per-minute", "0"])
                    // Every simulated client comes from loopback; the peer has no
                    // per-address cap either.
                    .args(["--max-connections-per-address", "0"])
                    .args(extra)
                    // The peer logs nothing per request; neither should livebase here.
                    .env("RUST_LOG", "warn");
            }
            Kind::Peer => {
                // The flag isolated-vm needs on Node 20; given here, the peer runs as
                // one process whose pid is the one measured.
                cmd.arg("node")
                    .arg("--no-node-snapshot")
                    .arg(paths.repo.join("bench/peer-node/server.js"))
                    .args(["--port", &port.to_string()])
                    .arg("--db")
                    .arg(dir.path().join("peer.db"))
                    .arg("--app")
                    .arg(&app)
                    .args(["--signup-token", SIGNUP_TOKEN]);
            }
            Kind::Floor => {
                cmd.arg(paths.bin_dir.join("floor"))
                    .args(["--listen", &listen])
                    .arg("--sqlite")
                    .arg(dir.path().join("floor.db"));
            }
        }
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        let pid = child.id().context("child pid")?;
        let addr: SocketAddr = listen.parse()?;
        let mut target = Target {
            kind,
            addr,
            child,
            pid,
            _dir: dir,
        };
        target.wait_ready().await?;
        Ok(target)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let probe = http::request("GET", "/healthz", None, None);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start: {status}", self.kind.name());
            }
            if let Ok(mut conn) = http::Conn::open(self.addr, localhost()).await
                && let Ok(resp) = conn.send(&probe).await
                && resp.status == 200
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{} did not answer /healthz within 60 s", self.kind.name());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Process CPU time so far (user + system, all threads).
    pub fn cpu(&self) -> Duration {
        cpu_of(self.pid).unwrap_or_default()
    }

    /// (current RSS, peak RSS) in bytes.
    pub fn rss(&self) -> (u64, u64) {
        rss_of(self.pid)
    }

    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await.ok();
        }
        Ok(())
    }
}

/// (current RSS, peak RSS) of process `pid` in bytes; zeros once it is gone.
pub fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(
        (utime + stime) * 1_000_000_000 / ticks,
    ))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

pub fn localhost() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// Source address number `i` of 127.0.0.2 … 127.0.0.33: spreading sockets over
/// addresses gives each 28k ephemeral ports, enough for 50k+ connections.
pub fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 32) as u8))
}
