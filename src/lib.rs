//! livebase: a self-hosted realtime backend in one binary.
//!
//! Layout (each module's own `//!` says what it owns and what it must not do):
//! - `config`  — flags and environment variables.
//! - `server`  — start-up (secrets, schema, database, first Admin) and serving.
//! - `schema`  — `schema/*.json` loaded and validated into objects and fields.
//! - `store`   — SQLite | PostgreSQL behind one handle; all dynamic SQL is built here.
//! - `auth`    — credentials → `Identity`; tokens, passwords; the one permission decision.
//! - `records` — the write path (validate → before hooks → transaction → commit → after
//!   hooks → `RecordEvent`) and record reads.
//! - `actions` — user JavaScript in QuickJS on its own threads: triggers (a write hook)
//!   and on-demand calls, with emits held until the write commits.
//! - `http`    — the REST surface, per resource, with its extractors.
//! - `realtime` — Socket.IO on the same port: socket auth, rooms, channels, db events,
//!   Sails requests and LoopBack names, all filtered by the one permission function.
//! - `error`   — the one error type every client-facing failure becomes.
//! - `conn`    — the accept loop: header-read timeout, per-address cap, write-stall
//!   guard, and the write tap that measures each socket's queue.
//! - `tls`     — HTTPS/WSS on the listener (`--tls-cert`/`--tls-key`), with rustls.

pub mod actions;
pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod http;
pub mod realtime;
pub mod records;
pub mod schema;
pub mod server;
pub mod store;
pub mod tls;
pub mod users;
