//! Several real `livebase` binaries as the nodes of one app: one freshly created
//! PostgreSQL database (dropped afterwards), each node with its own directory and data
//! directory, all with the same schema, actions and queries files. Nodes start together
//! (`start`, `add`) or one at a time (`add_with`); each is killed when the cluster drops,
//! and every start or exit is bounded in time (`process::PATIENCE`).
//!
//! Runs only when `LIVEBASE_TEST_POSTGRES_URL` is set (else `Cluster::start` says so
//! and answers `None`): SQLite is one node's file.

mod budget;
mod bus;
mod manifest;
mod outage;
mod presence;
mod redis;
mod secrets;
mod transports;

use std::path::PathBuf;
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Cred, DropDatabase, exec_pg, rand_suffix, send, with_database};
use crate::process::{Exited, Server, client, livebase, run_to_exit};

/// The first Admin every node is told about, so any test can sign in as it anywhere.
pub const ADMIN_EMAIL: &str = "admin@cluster.test";
pub const ADMIN_PASSWORD: &str = "cluster-admin-password";
pub const ADMIN_USER_TOKEN: &str = "cluster-admin-user-token";

pub struct Cluster {
    /// In start order; killed before the database is dropped (fields drop in order).
    pub nodes: Vec<Server>,
    _db: DropDatabase,
    root: tempfile::TempDir,
    /// `(path under a node's directory, content)`: `schema/items.json`, `actions/…`.
    app: Vec<(String, String)>,
    /// Every node's flags (beside `process::livebase`'s own), before its overrides.
    flags: Vec<(String, String)>,
    /// Node directories made so far: the next node is `node<made>`.
    made: usize,
}

/// A cluster of `n` nodes on one Redis (`LIVEBASE_TEST_REDIS_URL`), under a prefix of
/// its own, with `flags` besides; `None` (with a note) unless both PostgreSQL and Redis
/// are configured.
pub async fn on_redis(n: usize, app: &[(&str, &str)], flags: &[(&str, &str)]) -> Option<Cluster> {
    let Some(redis) = std::env::var("LIVEBASE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        use std::io::Write;
        let _ = std::io::stderr().write_all(
            b"note: Redis cluster test skipped (set LIVEBASE_TEST_REDIS_URL to run it)\n",
        );
        return None;
    };
    let prefix = format!("lbt_{}", rand_suffix());
    let mut all = vec![("--redis-url", redis.as_str()), ("--redis-prefix", &prefix)];
    all.extend_from_slice(flags);
    Cluster::start(n, app, &all).await
}

/// `items` whose rows only their owner (and Admins) may read: the schema the delivery
/// tests' negative checks need.
pub const OWNED_ITEMS: &str = r#"{
  "name": "items",
  "fields": { "name": { "type": "string", "required": true } },
  "permissions": {
    "read": ["Admin", "User"], "create": ["Admin", "User"],
    "update": ["Admin", "User"], "delete": ["Admin", "User"]
  },
  "rowSecurity": "owner"
}"#;

impl Cluster {
    /// A cluster of `n` nodes started at the same moment, on a new database; `None`
    /// (with a note) when no PostgreSQL is configured.
    pub async fn start(n: usize, app: &[(&str, &str)], flags: &[(&str, &str)]) -> Option<Cluster> {
        let mut cluster = Cluster::empty(app, flags).await?;
        cluster.add(n);
        Some(cluster)
    }

    /// The database and the app files, no node yet.
    pub async fn empty(app: &[(&str, &str)], flags: &[(&str, &str)]) -> Option<Cluster> {
        let admin_url = match std::env::var("LIVEBASE_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                // Once per run, past libtest's capture, as `common::backends` does.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(
                        b"note: cluster tests skipped (set LIVEBASE_TEST_POSTGRES_URL to run them)\n",
                    );
                });
                return None;
            }
        };
        let name = format!("lbc_{}", rand_suffix());
        exec_pg(&admin_url, &format!("CREATE DATABASE {name}")).await;
        let database_url = with_database(&admin_url, &name);
        let mut all: Vec<(String, String)> = [
            ("--database-url", database_url.as_str()),
            ("--admin-email", ADMIN_EMAIL),
            ("--admin-password", ADMIN_PASSWORD),
            ("--admin-user-token", ADMIN_USER_TOKEN),
            // Every test client signs in from loopback.
            ("--auth-rate-per-minute", "0"),
        ]
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
        for (flag, value) in flags {
            all.retain(|(f, _)| f != flag);
            all.push((flag.to_string(), value.to_string()));
        }
        Some(Cluster {
            nodes: Vec::new(),
            _db: DropDatabase(Some((admin_url, name))),
            root: tempfile::tempdir().unwrap(),
            app: app
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
            flags: all,
            made: 0,
        })
    }

    /// The value every node is given for `flag` (e.g. `--database-url`).
    pub fn flag(&self, flag: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }

    /// The directory of node `i` (its data directory is `data/` inside), made with the
    /// app files: a test may put files in it before the node starts.
    pub fn dir(&self, i: usize) -> PathBuf {
        let dir = self.root.path().join(format!("node{i}"));
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            for (path, content) in &self.app {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, content).unwrap();
            }
        }
        dir
    }

    /// The command for the next node, with `overrides` in place of the cluster's flags.
    fn next(&mut self, overrides: &[(&str, &str)]) -> Command {
        let dir = self.dir(self.made);
        self.made += 1;
        let mut flags: Vec<(&str, &str)> = self
            .flags
            .iter()
            .filter(|(f, _)| !overrides.iter().any(|(o, _)| o == f))
            .map(|(f, v)| (f.as_str(), v.as_str()))
            .collect();
        flags.extend_from_slice(overrides);
        livebase(&dir, &flags)
    }

    /// `n` more nodes, all spawned before any is waited for (their starts race).
    pub fn add(&mut self, n: usize) -> &[Server] {
        let from = self.nodes.len();
        for _ in 0..n {
            let command = self.next(&[]);
            self.nodes.push(Server::spawn(command));
        }
        for server in &mut self.nodes[from..] {
            server.wait_listening();
        }
        &self.nodes[from..]
    }

    /// One more node, with `overrides`, once it listens.
    pub fn add_with(&mut self, overrides: &[(&str, &str)]) -> &Server {
        let command = self.next(overrides);
        self.nodes.push(Server::start(command));
        self.nodes.last().unwrap()
    }

    /// A node that must not start: how it exited.
    pub fn refused(&mut self, overrides: &[(&str, &str)]) -> Exited {
        run_to_exit(self.next(overrides))
    }

    /// A request to node `i`: (status, JSON body or the text as a JSON string).
    pub async fn req(
        &self,
        i: usize,
        method: Method,
        path: &str,
        cred: &Cred,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.nodes[i].base);
        send(&client(), method, &url, cred, body).await
    }

    pub async fn get(&self, i: usize, path: &str, cred: &Cred) -> (u16, Value) {
        self.req(i, Method::GET, path, cred, None).await
    }

    /// A request to node `i` as `token` that must answer 200: its body.
    pub async fn ok(
        &self,
        i: usize,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, answer) = self
            .req(i, method.clone(), path, &Cred::Bearer(token.into()), body)
            .await;
        assert_eq!(status, 200, "{method} {path} on node {i}: {answer}");
        answer
    }

    /// A User `email` created by `admin` on node `i` and signed in there: its token
    /// (its password is `password_of(email)`).
    pub async fn user(&self, i: usize, admin: &str, email: &str) -> String {
        let body = json!({ "email": email, "password": password_of(email), "role": "User",
                           "firstName": email });
        self.ok(i, Method::POST, "/1/objects/users", admin, Some(body))
            .await;
        self.sign_in(i, email, &password_of(email)).await
    }

    /// `POST /token` with the password grant on node `i`: the access token.
    pub async fn sign_in(&self, i: usize, email: &str, password: &str) -> String {
        let resp = client()
            .post(format!("{}/token", self.nodes[i].base))
            .form(&[
                ("grant_type", "password"),
                ("username", email),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "sign-in of {email} on node {i}: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }
}

/// The password `Cluster::user` gives `email`.
pub fn password_of(email: &str) -> String {
    format!("pw-{email}-0123")
}
