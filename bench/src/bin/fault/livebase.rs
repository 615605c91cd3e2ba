//! The livebase under test: a child process on a free port with its own data dir and
//! database (SQLite in the data dir, or a fresh PostgreSQL database made with `psql`),
//! and a small client acting as the first Admin through the master token.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::http::{self, Conn};

pub const MASTER_TOKEN: &str = "fault-master-token-0123456789";
pub const ADMIN_USER_TOKEN: &str = "fault-admin-user-token-0123456789";
pub const ADMIN_EMAIL: &str = "admin@fault.local";
pub const ADMIN_PASSWORD: &str = "fault-Admin-pass-8642";
const JWT_SECRET: &str = "fault-jwt-secret-0123456789abcdef0123456789abcdef";
/// Longer than any action here runs, so a slow debug build under load never turns an
/// after action into a logged failure (which would look like a lost companion row).
const ACTION_TIME_LIMIT_MS: &str = "5000";
/// First start creates the Admin (an argon2 hash) and the tables.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How to start the server; the same for every restart, so each reopens the same data.
pub struct Setup {
    pub binary: PathBuf,
    pub app_dir: PathBuf,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub log: PathBuf,
    /// More flags (a cluster node's `--redis-url`, `--redis-prefix`).
    pub extra: Vec<String>,
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pid: i32,
}

impl Server {
    /// Starts the server on a free port and waits until `/healthz` answers 200.
    pub async fn start(setup: &Setup) -> Result<Server> {
        let addr = free_port()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&setup.log)
            .with_context(|| format!("opening {}", setup.log.display()))?;
        let mut command = Command::new(&setup.binary);
        command
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&setup.data_dir)
            .arg("--schema-dir")
            .arg(setup.app_dir.join("schema"))
            .arg("--actions-dir")
            .arg(setup.app_dir.join("actions"))
            .args(["--master-token", MASTER_TOKEN])
            .args(["--admin-email", ADMIN_EMAIL])
            .args(["--admin-password", ADMIN_PASSWORD])
            .args(["--admin-user-token", ADMIN_USER_TOKEN])
            .args(["--jwt-secret", JWT_SECRET])
            .args(["--watch", "false"])
            .args(["--auth-rate-per-minute", "0"])
            .args(["--action-time-limit-ms", ACTION_TIME_LIMIT_MS])
            // Warnings, and the line naming each owed event a start or node runs.
            .env("RUST_LOG", "warn,livebase::records=info")
            // A panic's message and place, without a page of frames per panic.
            .env("RUST_BACKTRACE", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(url) = &setup.database_url {
            command.arg("--database-url").arg(url);
        }
        command.args(&setup.extra);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", setup.binary.display()))?;
        let pid = child.id().context("child pid")? as i32;
        let due = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "livebase exited during start-up ({status}); log:\n{}",
                    log_tail(&setup.log)
                );
            }
            if health(addr).await {
                return Ok(Server { child, addr, pid });
            }
            if Instant::now() > due {
                bail!("livebase did not answer /healthz within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends `sig` (SIGKILL, SIGTERM); `wait_exit` reaps the process.
    pub fn signal(&self, sig: i32) -> Result<()> {
        // SAFETY: kill(2) on our own child, not yet reaped (so the pid is still ours).
        if unsafe { libc::kill(self.pid, sig) } != 0 {
            bail!(
                "kill({}, {sig}): {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Waits up to `within` for the process to exit (and reaps it).
    pub async fn wait_exit(&mut self, within: Duration) -> Result<Option<ExitStatus>> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => Ok(None),
        }
    }

    pub fn api(&self) -> Api {
        Api::new(self.addr)
    }
}

/// A port the kernel just handed out (and took back): free for the next start.
fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

async fn health(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut conn = Conn::open(addr, Ipv4Addr::LOCALHOST.into()).await?;
        conn.send(&http::request("GET", "/healthz", None, None))
            .await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(r)) if r.status == 200
    )
}

/// Every distinct panic in the server log (the line naming where, and the message),
/// with how often it happened.
pub fn log_panics(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find("panicked at ") else {
            continue;
        };
        let message = lines.get(i + 1).copied().unwrap_or("");
        let panic = format!("{} {message}", &line[at..]);
        match seen.iter_mut().find(|(p, _)| *p == panic) {
            Some((_, n)) => *n += 1,
            None => seen.push((panic, 1)),
        }
    }
    seen.into_iter()
        .map(|(panic, n)| format!("{n} × {panic}"))
        .collect()
}

/// The log number of every event whose owed after hooks the server ran (its INFO line
/// "running after hooks a stopped node owed seq=…", one per event, logged before they
/// run): after actions a killed process left, and re-runs of ones that ran but were not
/// yet marked done.
pub fn log_owed_seqs(path: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("running after hooks a stopped node owed"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("seq="))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The before action's intended refusals are logged as action failures: noise here.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("refused by the fault app"))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Requests as the first Admin: `Authorization: Basic base64(master:userToken)`.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    basic: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        let basic = format!(
            "Basic {}",
            base64(format!("{MASTER_TOKEN}:{ADMIN_USER_TOKEN}").as_bytes())
        );
        Api { addr, basic }
    }

    pub async fn connect(&self) -> Result<Conn> {
        Conn::open(self.addr, Ipv4Addr::LOCALHOST.into()).await
    }

    /// Request bytes with the Admin credentials and an optional JSON body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
        http::request_with(
            method,
            path,
            &[("Authorization", self.basic.as_str())],
            body,
            "application/json",
        )
    }

    /// Creates a row of `object`; fails unless answered 2xx.
    pub async fn create(&self, object: &str, row: &Value) -> Result<Value> {
        let path = format!("/1/objects/{object}");
        let response = self
            .connect()
            .await?
            .send(&self.request("POST", &path, Some(&row.to_string())))
            .await?;
        if !(200..300).contains(&response.status) {
            bail!(
                "POST {path}: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        Ok(serde_json::from_slice(&response.body)?)
    }

    /// Every row of `object`, a thousand per page in id order.
    pub async fn list_all(&self, object: &str) -> Result<Vec<Value>> {
        let mut conn = self.connect().await?;
        let sort = percent_encode(r#"[{"fieldName":"id","order":"asc"}]"#);
        let mut rows = Vec::new();
        for page in 1.. {
            let path = format!("/1/objects/{object}?pageSize=1000&pageNumber={page}&sort={sort}");
            let response = conn.send(&self.request("GET", &path, None)).await?;
            if response.status != 200 {
                bail!(
                    "GET {path}: {} {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                );
            }
            let body: Value = serde_json::from_slice(&response.body)?;
            let total = body["totalRows"].as_u64().context("totalRows")? as usize;
            let data = body["data"].as_array().context("data")?;
            rows.extend(data.iter().cloned());
            if data.is_empty() || rows.len() >= total {
                if rows.len() != total {
                    bail!("{object}: totalRows {total} but {} rows listed", rows.len());
                }
                break;
            }
        }
        Ok(rows)
    }
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A PostgreSQL database of its own for one run, dropped at the end.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(admin_url: &str) -> Result<PgDatabase> {
        let name = format!("livebase_fault_{}", std::process::id());
        let url = with_database(admin_url, &name)?;
        psql(
            admin_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(PgDatabase {
            admin_url: admin_url.to_string(),
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin_url, &sql) {
            eprintln!("lbfault: could not drop database {}: {e:#}", self.name);
        }
    }
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let output = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !output.status.success() {
        bail!(
            "psql `{sql}`: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `url` with its database name replaced (query parameters kept).
fn with_database(url: &str, name: &str) -> Result<String> {
    let start = url.find("://").context("a postgres:// URL")? + 3;
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = base[start..].find('/').map_or(base.len(), |i| start + i);
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_everyone_else() {
        assert_eq!(base64(b"master:user"), "bWFzdGVyOnVzZXI=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(percent_encode(r#"[{"a":1}]"#), "%5B%7B%22a%22%3A1%7D%5D");
    }

    #[test]
    fn finds_the_owed_events_the_log_reports() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("livebase.log");
        std::fs::write(
            &log,
            "2026-12-07T17:02:33.1Z  INFO livebase::records: running after hooks a stopped \
             node owed seq=12 object=fault_rows\nlivebase listening on http://127.0.0.1:1\n\
             2026-12-07T17:02:33.2Z  INFO livebase::records: running after hooks a stopped \
             node owed seq=40 object=fault_rows\n\
             2026-12-07T17:02:33.3Z  WARN livebase::server: ran the after actions of changes \
             a stopped node committed n=2\n",
        )
        .unwrap();
        assert_eq!(log_owed_seqs(&log), [12, 40]);
        assert_eq!(
            log_owed_seqs(&dir.path().join("missing.log")),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn swaps_the_database_name() {
        let swap = |u| with_database(u, "x").unwrap();
        assert_eq!(
            swap("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            swap("postgres://u:p@h/db?sslmode=disable"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(swap("postgresql://h:5432"), "postgresql://h:5432/x");
    }
}
