//! Integration tests: each drives a real livebase over HTTP on a random port, against
//! SQLite and, when `LIVEBASE_TEST_POSTGRES_URL` is set, PostgreSQL.

mod common;

mod actions;
mod auth;
mod bad_input;
mod bulk;
mod cluster;
mod concurrency;
mod connections;
mod dashboard;
mod files;
mod filters;
mod permissions;
mod process;
mod queries;
mod realtime;
mod schema_evolution;
mod sio;
mod system;
mod tls;
mod write_path;
