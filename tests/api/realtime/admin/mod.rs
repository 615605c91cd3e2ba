//! Live introspection for the dashboard, against real sockets: the socket list, ending a
//! socket, the event stream (`text/event-stream` read as the dashboard reads it, with
//! an `Authorization` header) and the per-event delivery trace — each trace line
//! checked against what that socket really received.
//!
//! - `sse`     — the event stream client.
//! - `access`  — who may call, and how long a stream's credentials last.
//! - `stream`  — what the stream shows, its filters, limits and bounds.
//! - `trace`   — each trace line against what the socket received.
//! - `sockets` — the socket list, ending a socket, the health metrics.

mod access;
mod sockets;
mod sse;
mod stream;
mod trace;

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::common::{Backend, Spawn, TestApp, master};

/// An on-demand action of `posts`: `emitUsers` to `parameters.to` when given, else
/// `emitRole` Admin.
const ANNOUNCE: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  if (parameters.to) socket.emitUsers("ping", { from: userProfile.username }, parameters.to);
  else socket.emitRole("itemAdded", { n: 1, from: userProfile.username }, "Admin");
  return { ok: true };
}"#;

async fn start(backend: &Backend) -> TestApp {
    super::objects(Spawn::new(backend))
        .action("posts/onDemand/announce.js", ANNOUNCE)
        .start()
        .await
}

async fn sockets(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get("/1/admin/sockets?pageSize=500", &master()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["totalRows"].as_u64().map(|n| n as usize),
        body["data"].as_array().map(Vec::len),
        "{body}"
    );
    body["data"].as_array().unwrap().clone()
}

/// The one listed socket `pick` accepts.
fn one<'a>(list: &'a [Value], what: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = list.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "exactly one socket {what} in {list:#?}");
    found[0]
}

fn of_user<'a>(list: &'a [Value], username: &str) -> &'a Value {
    one(list, username, |s| s["username"] == json!(username))
}

async fn trace(app: &TestApp, id: u64, query: &str) -> Value {
    let (status, body) = app
        .get(&format!("/1/admin/events/{id}/trace{query}"), &master())
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A trace's lines by socket id.
fn lines(trace: &Value) -> HashMap<String, Value> {
    trace["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["id"].as_str().unwrap().to_string(), l.clone()))
        .collect()
}

/// Asserts socket `id`'s line in `trace` says `received` for `reason`.
fn says(lines: &HashMap<String, Value>, id: &str, who: &str, received: bool, reason: &str) {
    let line = lines
        .get(id)
        .unwrap_or_else(|| panic!("{who} ({id}) has a line: {lines:#?}"));
    assert_eq!(line["received"], json!(received), "{who}: {line}");
    assert_eq!(line["reason"], json!(reason), "{who}: {line}");
}

/// `"<received> <reason>"` of every socket of `username`, sorted.
fn reasons(lines: &HashMap<String, Value>, list: &[Value], username: &str) -> Vec<String> {
    let mut reasons: Vec<String> = list
        .iter()
        .filter(|s| s["username"] == json!(username))
        .map(|s| {
            let line = &lines[s["id"].as_str().unwrap()];
            format!("{} {}", line["received"], line["reason"].as_str().unwrap())
        })
        .collect();
    reasons.sort();
    reasons
}

fn socket_id(list: &[Value], username: &str) -> String {
    of_user(list, username)["id"].as_str().unwrap().to_string()
}
