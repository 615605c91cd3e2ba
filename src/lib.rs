//! livebase: a self-hosted realtime backend in one binary.
//!
//! Layers, top to bottom. A module imports only from layers below it (or from the
//! leaves), never from one above; `layers::imports_only_go_down` checks it.
//!
//! 1. `server`   — start-up (secrets, schema, database, first Admin) and serving.
//! 2. `http`     — the REST surface, per resource, with its extractors.
//! 3. `files`    — Backand's `files` action: files on this node's disk, metadata in
//!    `lb_files`, each operation checked by the object's permissions.
//! 4. `actions`  — user JavaScript in QuickJS on its own threads: triggers (a write hook)
//!    and on-demand calls, with emits held until the write commits.
//! 5. `realtime` — Socket.IO on the same port: socket auth, rooms, channels, db events,
//!    Sails requests and LoopBack names, all filtered by the one permission function.
//! 6. `users`    — what a `users` row means to auth: password, credentials, cache, and
//!    the one revocation event (realtime listens to it).
//! 7. `records`  — the one write pipeline (`Write` → hooks → transaction → commit →
//!    `RecordEvent` with its sequence number) and record reads; the wire form of rows.
//! 8. `queries`  — named read-only SQL (`queries/<name>.sql`): checked at start, run
//!    with bound parameters as the caller, for REST and for actions' `db.query`.
//! 9. `auth`     — credentials → `Identity`; tokens, passwords; the one permission decision.
//! 10. `store`   — SQLite | PostgreSQL behind one handle; all dynamic SQL is built here.
//! 11. `schema`  — `schema/*.json` loaded and validated into objects and fields, and
//!     the typed values fields accept.
//!
//! Leaves, usable from every layer and importing none: `config` (flags and environment),
//! `error` (the one client-facing error type), `conn` (the accept loop: header-read
//! timeout, per-address cap, write-stall guard, the write tap) and `tls`.

pub mod actions;
pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod files;
pub mod http;
pub mod queries;
pub mod realtime;
pub mod records;
pub mod schema;
pub mod server;
pub mod store;
pub mod tls;
pub mod users;

#[cfg(test)]
mod layers {
    use std::path::Path;

    /// Top to bottom, as in the map above.
    const LAYERS: [&str; 11] = [
        "server", "http", "files", "actions", "realtime", "users", "records", "queries", "auth",
        "store", "schema",
    ];
    const LEAVES: [&str; 4] = ["config", "error", "conn", "tls"];

    fn rank(module: &str) -> Option<usize> {
        LAYERS.iter().position(|l| *l == module)
    }

    /// `crate::<module>` named anywhere outside a comment in `source`.
    fn imports(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in source.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        }
        found
    }

    fn walk(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("src is readable") {
            let path = entry.expect("src entry").path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let module = top.map_or(name.clone(), str::to_string);
            if path.is_dir() {
                walk(&path, Some(&module), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).expect("source is readable");
                for import in imports(&source) {
                    out.push((module.clone(), import));
                }
            }
        }
    }

    #[test]
    fn imports_only_go_down() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut edges = Vec::new();
        walk(&src, None, &mut edges);
        assert!(edges.len() > 50, "the walk found the sources");
        let mut wrong = Vec::new();
        for (from, to) in &edges {
            if from == to || from == "lib" || from == "main" {
                continue;
            }
            let fine = match (rank(from), rank(to)) {
                (_, None) if LEAVES.contains(&to.as_str()) => {
                    // A leaf imports no layer; leaves may use each other (conn → tls).
                    true
                }
                (None, Some(_)) => false,
                (Some(a), Some(b)) => a < b,
                (_, None) => false,
            };
            if !fine {
                wrong.push(format!("{from} → {to}"));
            }
        }
        wrong.sort();
        wrong.dedup();
        assert!(
            wrong.is_empty(),
            "imports against the layer order: {wrong:?}"
        );
    }
}
