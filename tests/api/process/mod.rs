//! The real `livebase` binary, started as a newcomer would: what it prints on start,
//! how it fails to start, and what its log carries. Each process is bounded in time and
//! killed when its test ends; its stdout and stderr go to files, as a service manager
//! or `livebase > log 2>&1` would write them.

mod crash;
mod logs;
mod startup;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a start or an exit may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A command for the binary with a directory of its own (`--data-dir`, `--schema-dir`,
/// … inside `dir`, listening on a free port), the flags in `overrides` in place of
/// those defaults, and nothing taken from the environment the tests run in
/// (`LIVEBASE_*`, `RUST_LOG`).
pub fn livebase(dir: &Path, overrides: &[(&str, &str)]) -> Command {
    let schema = dir.join("schema");
    std::fs::create_dir_all(&schema).unwrap();
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut flags: Vec<(String, String)> = vec![
        ("--data-dir".into(), path(dir.join("data"))),
        ("--schema-dir".into(), path(schema)),
        ("--actions-dir".into(), path(dir.join("actions"))),
        ("--queries-dir".into(), path(dir.join("queries"))),
        ("--listen".into(), "127.0.0.1:0".into()),
        ("--watch".into(), "false".into()),
    ];
    for (flag, value) in overrides {
        flags.retain(|(f, _)| f != flag);
        flags.push((flag.to_string(), value.to_string()));
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_livebase"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LIVEBASE_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.current_dir(dir);
    for (flag, value) in flags {
        command.arg(flag).arg(value);
    }
    command
}

/// What a process that was expected to stop wrote, and how it ended.
#[derive(Debug)]
pub struct Exited {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end (killed after `PATIENCE`).
pub fn run_to_exit(mut command: Command) -> Exited {
    let out = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "livebase did not exit within {PATIENCE:?}: {}",
                read(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        code: status.code(),
        stdout: read(&stdout),
        stderr: read(&stderr),
    }
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    stdout: PathBuf,
    stderr: PathBuf,
    _out: tempfile::TempDir,
}

impl Server {
    /// Starts `command` and waits for its "listening on" line.
    pub fn start(command: Command) -> Server {
        let mut server = Server::spawn(command);
        server.wait_listening();
        server
    }

    /// Starts `command` without waiting: several can start at the same moment, then
    /// each `wait_listening`.
    pub fn spawn(mut command: Command) -> Server {
        let out = tempfile::tempdir().unwrap();
        let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Server {
            child,
            base: String::new(),
            stdout,
            stderr,
            _out: out,
        }
    }

    /// Waits for the "listening on" line and takes the base URL from it.
    pub fn wait_listening(&mut self) {
        let started = Instant::now();
        loop {
            let text = read(&self.stdout);
            if let Some(at) = text.find("livebase listening on ") {
                let rest = &text[at + "livebase listening on ".len()..];
                self.base = rest.lines().next().unwrap().trim().to_string();
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "livebase exited ({status}) before listening: {}{}",
                    text,
                    read(&self.stderr)
                );
            }
            assert!(
                started.elapsed() < PATIENCE,
                "livebase did not listen within {PATIENCE:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it wrote so far, stdout then stderr.
    pub fn output(&self) -> String {
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }

    /// Waits until its output holds `needle` (true), or for `within` (false).
    pub async fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.output().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks it to stop as an operator would (SIGTERM) and waits for it to exit, which
    /// must be cleanly; its graceful shutdown has run by then.
    pub fn terminate(&mut self) {
        // SAFETY: signals the process this test started, by its id.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > PATIENCE {
                self.stop();
                panic!("livebase did not exit within {PATIENCE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "exit after SIGTERM: {status}: {}",
            self.output()
        );
    }

    /// Stops it (SIGKILL: what it printed is in the files already).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value printed after `label` on a line of `text` (the secrets and the first Admin
/// a start announces).
pub fn printed(text: &str, label: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_string())
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// An HTTP client (reqwest's rustls needs the process-wide provider the harness installs).
/// A node closes a keep-alive connection idle for `--header-read-timeout-ms` (10 s), and
/// a request sent on one just as it closes fails (`IncompleteMessage`): the client lets
/// go of idle connections well before.
pub fn client() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .unwrap()
}
