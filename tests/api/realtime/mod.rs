//! Realtime over real sockets: the Rust client in `sio.rs` against a real server.

mod admin;
mod auth;
mod bad_input;
mod channels;
mod db_channels;
mod delivery;
mod demotion;
mod event_log;
mod hardening;
mod hijack;
mod limits;
mod no_leaks;
mod presence;
mod resume;
mod sails;
mod slow_readers;
pub(crate) mod staticbackend;
pub(crate) mod support;

use serde_json::json;

pub use crate::common::id_of;
use crate::common::{Backend, Spawn};

/// Objects covering each row-security mode: `posts` (none, LoopBack names on),
/// `notes` (owner), `memos` (ownerWrite). Readers: User and ReadOnly; Public reads posts.
pub fn objects(spawn: Spawn<'_>) -> Spawn<'_> {
    let perms = |read: &[&str]| json!({ "read": read, "create": ["User"], "update": ["User"], "delete": ["User"] });
    spawn
        .schema(
            "posts.json",
            json!({ "name": "posts", "fields": { "title": { "type": "string" } },
                    "permissions": perms(&["User", "ReadOnly", "Public"]),
                    "events": ["loopback"] }),
        )
        .schema(
            "notes.json",
            json!({ "name": "notes", "fields": { "title": { "type": "string" } },
                    "permissions": perms(&["User", "ReadOnly"]), "rowSecurity": "owner",
                    "events": ["loopback"] }),
        )
        .schema(
            "memos.json",
            json!({ "name": "memos", "fields": { "title": { "type": "string" } },
                    "permissions": perms(&["User", "ReadOnly"]), "rowSecurity": "ownerWrite" }),
        )
}

pub async fn start(backend: &Backend) -> crate::common::TestApp {
    objects(Spawn::new(backend)).start().await
}
