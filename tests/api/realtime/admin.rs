//! Live introspection for the dashboard, against real sockets: the socket list, ending a
//! socket, the event stream (`text/event-stream` read as the dashboard reads it, with
//! an `Authorization` header) and the per-event delivery trace — each trace line
//! checked against what that socket really received.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::support::{rest_create, unauthenticated};
use crate::common::{ANON, Backend, Cred, Spawn, TestApp, backends, master, metric, with_cred};
use crate::sio::{PATIENCE, Polling, Sio, next_frame, raw_ws, send};

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

// ---------------------------------------------------------------------------------------
// The event stream, as the dashboard reads it
// ---------------------------------------------------------------------------------------

enum Item {
    Message(Option<u64>, Value),
    Comment,
    Closed,
}

/// `GET /1/admin/events` read with `fetch()`-like streaming.
struct EventStream {
    rx: mpsc::UnboundedReceiver<Item>,
    task: tokio::task::AbortHandle,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a stream; `Err` is the refusal's status and body.
async fn open_stream(
    app: &TestApp,
    cred: &Cred,
    query: &str,
    last_event_id: Option<&str>,
) -> Result<EventStream, (u16, Value)> {
    let mut request = with_cred(
        app.client.get(app.url(&format!("/1/admin/events{query}"))),
        cred,
    );
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let mut response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.text().await.unwrap();
        return Err((status, serde_json::from_str(&text).unwrap_or(json!(text))));
    }
    let kind = response.headers()["content-type"].to_str().unwrap();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            for item in take_blocks(&mut text) {
                let _ = tx.send(item);
            }
        }
        let _ = tx.send(Item::Closed);
    });
    Ok(EventStream {
        rx,
        task: task.abort_handle(),
    })
}

/// The complete SSE blocks at the front of `text`, taken out of it.
fn take_blocks(text: &mut String) -> Vec<Item> {
    let mut items = Vec::new();
    while let Some(end) = text.find("\n\n") {
        let block: String = text.drain(..end + 2).collect();
        let (mut id, mut data) = (None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().expect("numeric id"));
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("JSON data"));
            } else if line.starts_with(':') {
                items.push(Item::Comment);
            }
        }
        if let Some(data) = data {
            items.push(Item::Message(id, data));
        }
    }
    items
}

impl EventStream {
    /// The next message within `wait`: `(id, data)`; `None` on timeout or close.
    async fn next(&mut self, wait: Duration) -> Option<(Option<u64>, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await.ok()?? {
                Item::Message(id, data) => return Some((id, data)),
                Item::Comment => continue,
                Item::Closed => return None,
            }
        }
    }

    /// The first message `wanted` accepts (others are skipped).
    async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (id, data) = self
                .next(PATIENCE)
                .await
                .unwrap_or_else(|| panic!("the stream never showed {what}"));
            if wanted(&data) {
                assert_eq!(
                    id,
                    data["id"].as_u64(),
                    "the SSE id is the event id: {data}"
                );
                return data;
            }
        }
    }

    /// Every message until none arrives for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut all = Vec::new();
        while let Some((_, data)) = self.next(quiet).await {
            all.push(data);
        }
        all
    }
}

fn named(event: &str) -> impl Fn(&Value) -> bool + '_ {
    move |m: &Value| m["event"] == json!(event)
}

// ---------------------------------------------------------------------------------------
// Socket list and trace helpers
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Who may call
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_endpoint_refuses_users_anonymous_callers_and_no_credentials() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let s = app.socket(&alice.token).await;
        let target = socket_id(&sockets(&app).await, "alice@x.test");
        let mut stream = open_stream(&app, &master(), "", None).await.unwrap();
        app.state.realtime.emit_all("recorded", &json!(1)).await;
        let event = stream.until("recorded", named("recorded")).await["id"]
            .as_u64()
            .unwrap();
        let endpoints = [
            ("GET", "/1/admin/sockets".to_string()),
            ("DELETE", format!("/1/admin/sockets/{target}")),
            ("GET", "/1/admin/events".to_string()),
            ("GET", format!("/1/admin/events/{event}/trace")),
        ];
        let refusals = [
            (Cred::None, 401),
            (alice.cred(), 403),
            (Cred::Anonymous(ANON.into()), 403),
            (Cred::Bearer("not-a-token".into()), 401),
        ];
        for (method, path) in &endpoints {
            for (cred, want) in &refusals {
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let (status, body) = app.req(method.clone(), path, cred, None).await;
                assert_eq!(status, *want, "{be}: {method} {path} as {cred:?}: {body}");
                assert!(
                    body["Message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{be}: {method} {path}: {{Message}}: {body}"
                );
            }
        }
        // Refused for real: the socket a User tried to end is still there and working.
        assert_eq!(s.call("echo", json!("alive")).await, json!("alive"), "{be}");
        assert_eq!(socket_id(&sockets(&app).await, "alice@x.test"), target);
        // The Admin role passes, not only the master token.
        let admin = app.admin().await;
        let (status, body) = app.get("/1/admin/sockets", &admin.cred()).await;
        assert_eq!(status, 200, "{be}: {body}");
        let (status, body) = app
            .get(&format!("/1/admin/events/{event}/trace"), &admin.cred())
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        assert!(open_stream(&app, &admin.cred(), "", None).await.is_ok());
    }
}

// ---------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_stream_shows_a_committed_change_and_an_action_emit() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let mut sadmin = app.socket(&admin.token).await;
        let mut salice = app.socket(&alice.token).await;
        assert_eq!(
            salice.call("join", json!("db-posts")).await["ok"],
            json!(true)
        );
        let mut stream = open_stream(&app, &admin.cred(), "", None).await.unwrap();

        let id = rest_create(&app, "posts", &alice.cred(), "hello").await;
        let change = stream.until("db_created", named("db_created")).await;
        assert!(
            change["id"].as_u64().is_some_and(|n| n > 0),
            "{be}: {change}"
        );
        assert!(
            chrono::DateTime::parse_from_rfc3339(change["at"].as_str().unwrap()).is_ok(),
            "{be}: {change}"
        );
        assert!(
            change["seq"].as_u64().is_some_and(|n| n > 0),
            "{be}: {change}"
        );
        let row = &change["data"]["data"];
        assert_eq!(row["id"], json!(id), "{be}: {change}");
        assert_eq!(row["title"], json!("hello"), "{be}: {change}");
        let mut fixed = change.clone();
        for varying in ["id", "at", "seq", "data"] {
            fixed.as_object_mut().unwrap().remove(varying);
        }
        assert_eq!(
            fixed,
            json!({ "kind": "change", "object": "posts", "verb": "created", "rowId": id,
                    "event": "db_created", "target": "db-posts", "rooms": ["db:posts"],
                    "by": { "username": "alice@x.test", "role": "User" },
                    "dataTruncated": false, "recipients": 1, "leftOut": 0, "failed": 0,
                    "truncated": false }),
            "{be}"
        );
        assert_eq!(change["data"]["channel"], json!("db-posts"), "{be}");
        // What the stream said is what happened: alice got it, the admin (not joined) not.
        assert_eq!(salice.expect("db_created").await["data"]["id"], json!(id));
        // The same change's LoopBack name went to both (readers of posts join it).
        let loopback = stream.until("/posts/POST", named("/posts/POST")).await;
        assert_eq!(loopback["kind"], json!("change"), "{be}: {loopback}");
        assert_eq!(loopback["target"], json!("loopback posts"), "{be}");
        assert_eq!(loopback["recipients"], json!(2), "{be}: {loopback}");
        assert_eq!(sadmin.expect("/posts/POST").await["id"], json!(id));
        assert_eq!(salice.expect("/posts/POST").await["id"], json!(id));
        sadmin.assert_none(&app, "db_created").await;

        let (status, body) = app
            .get("/1/objects/action/posts?name=announce", &alice.cred())
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        let emit = stream.until("itemAdded", named("itemAdded")).await;
        let mut fixed = emit.clone();
        for varying in ["id", "at"] {
            fixed.as_object_mut().unwrap().remove(varying);
        }
        assert_eq!(
            fixed,
            json!({ "kind": "emit", "object": null, "verb": null, "rowId": null, "seq": null,
                    "event": "itemAdded", "target": "emitRole Admin", "rooms": ["role:Admin"],
                    "by": { "username": "alice@x.test", "role": "User", "action": "announce" },
                    "data": { "n": 1, "from": "alice@x.test" }, "dataTruncated": false,
                    "recipients": 1, "leftOut": 0, "failed": 0, "truncated": false }),
            "{be}"
        );
        assert_eq!(sadmin.expect("itemAdded").await["n"], json!(1));
        salice.assert_none(&app, "itemAdded").await;

        // The trace of that emit agrees with what each socket got.
        let list = sockets(&app).await;
        let t = trace(&app, emit["id"].as_u64().unwrap(), "").await;
        assert_eq!(
            t["event"], emit,
            "{be}: the trace carries the event as streamed"
        );
        assert!(chrono::DateTime::parse_from_rfc3339(t["computedAt"].as_str().unwrap()).is_ok());
        let l = lines(&t);
        says(
            &l,
            &socket_id(&list, "admin@test.local"),
            "admin",
            true,
            "in room `role:Admin`",
        );
        says(
            &l,
            &socket_id(&list, "alice@x.test"),
            "alice",
            false,
            "role `User`; the event was for role `Admin`",
        );

        // emitUsers: named users only.
        let to = serde_json::to_string(&json!({ "to": ["alice@x.test"] })).unwrap();
        let (status, body) = app
            .get(
                &format!(
                    "/1/objects/action/posts?name=announce&parameters={}",
                    crate::common::enc(&to)
                ),
                &admin.cred(),
            )
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        let ping = stream.until("ping", named("ping")).await;
        assert_eq!(
            ping["target"],
            json!("emitUsers alice@x.test"),
            "{be}: {ping}"
        );
        assert_eq!(ping["by"]["role"], json!("Admin"), "{be}: {ping}");
        salice.expect("ping").await;
        sadmin.assert_none(&app, "ping").await;
        let l = lines(&trace(&app, ping["id"].as_u64().unwrap(), "").await);
        says(
            &l,
            &socket_id(&list, "alice@x.test"),
            "alice",
            true,
            "in room `user:alice@x.test`",
        );
        says(
            &l,
            &socket_id(&list, "admin@test.local"),
            "admin",
            false,
            "not one of the users the event named",
        );
    }
}

#[tokio::test]
async fn the_trace_of_an_owner_secured_row_says_why_each_socket_did_or_did_not_get_it() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let carol = app.user("carol@x.test", "User").await;
        let mut salice = app.socket(&alice.token).await;
        // Alice again, on a socket that never joins `db-notes`.
        let mut salice2 = app.socket(&alice.token).await;
        let mut sbob = app.socket(&bob.token).await;
        // Never joins either, and may not read alice's row anyway.
        let mut scarol = app.socket(&carol.token).await;
        let mut sadmin = app.socket(&admin.token).await;
        let mut sguest = Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON })))
            .await
            .unwrap();
        let mut snobody = unauthenticated(&app).await;
        for s in [&salice, &sbob, &sadmin] {
            assert_eq!(s.call("join", json!("db-notes")).await["ok"], json!(true));
        }
        let refused = sguest.call("join", json!("db-notes")).await;
        assert!(refused["error"].is_string(), "{be}: {refused}");
        let mut stream = open_stream(&app, &master(), "?object=notes", None)
            .await
            .unwrap();

        let id = rest_create(&app, "notes", &alice.cred(), "mine").await;
        let event = stream.until("db_created", named("db_created")).await;
        assert_eq!(event["rowId"], json!(id), "{be}: {event}");
        assert_eq!(event["recipients"], json!(2), "{be}: {event}");
        // Connected after the event: no line may claim it got it.
        let slate = app.socket(&carol.token).await;

        let list = sockets(&app).await;
        let t = trace(&app, event["id"].as_u64().unwrap(), "").await;
        assert_eq!(t["totalRows"], json!(8), "{be}: {t}");
        assert_eq!(t["recipientsDisconnected"], json!(0), "{be}: {t}");
        let l = lines(&t);
        assert_eq!(l.len(), 8, "{be}: {t}");
        let id_of = |username: &str| socket_id(&list, username);
        assert_eq!(
            reasons(&l, &list, "alice@x.test"),
            [
                "false not joined `db-notes`".to_string(),
                format!("true in room `db:notes:{}`", alice.id)
            ],
            "{be}: alice's joined socket got it, her other one had not joined"
        );
        says(
            &l,
            &id_of("admin@test.local"),
            "admin",
            true,
            "in room `db:notes`",
        );
        says(
            &l,
            &id_of("bob@x.test"),
            "bob",
            false,
            "row security: the row belongs to another user",
        );
        says(
            &l,
            &id_of("Guest"),
            "guest",
            false,
            "role `Public` may not read `notes`",
        );
        let anonymous = one(&list, "unauthenticated", |s| s["username"].is_null());
        says(
            &l,
            anonymous["id"].as_str().unwrap(),
            "unauthenticated",
            false,
            "not authenticated",
        );
        assert_eq!(
            reasons(&l, &list, "carol@x.test"),
            [
                "false connected after the event",
                "false row security: the row belongs to another user"
            ],
            "{be}: carol's sockets (one never joined, one came later)"
        );

        // Each line against what the socket really received.
        assert_eq!(salice.expect("db_created").await["data"]["id"], json!(id));
        assert_eq!(sadmin.expect("db_created").await["data"]["id"], json!(id));
        let mut slate = slate;
        for (name, s) in [
            ("alice's other socket", &mut salice2),
            ("bob", &mut sbob),
            ("carol", &mut scarol),
            ("carol's later socket", &mut slate),
            ("guest", &mut sguest),
        ] {
            let marker = app.barrier().await;
            let got = s.until_barrier(&marker).await;
            assert!(
                got.iter().all(|(event, _)| event != "db_created"),
                "{be}: {name} was traced as not receiving it, and got {got:?}"
            );
        }
        let got = snobody.drain(Duration::from_millis(300)).await;
        assert!(
            got.iter()
                .all(|i| !matches!(i, crate::sio::Incoming::Event(..))),
            "{be}: the unauthenticated socket got {got:?}"
        );

        // Paged: at most pageSize lines, every socket once over the pages.
        let mut seen = Vec::new();
        for page in 1..=4 {
            let t = trace(
                &app,
                event["id"].as_u64().unwrap(),
                &format!("?pageSize=2&pageNumber={page}"),
            )
            .await;
            assert_eq!(t["totalRows"], json!(8));
            let page_lines = t["sockets"].as_array().unwrap();
            assert_eq!(page_lines.len(), 2, "{be}: {t}");
            seen.extend(page_lines.iter().map(|l| l["id"].clone()));
        }
        seen.sort_by_key(|v| v.to_string());
        seen.dedup();
        assert_eq!(seen.len(), 8, "{be}");
        let t = trace(
            &app,
            event["id"].as_u64().unwrap(),
            "?pageSize=2&pageNumber=5",
        )
        .await;
        assert_eq!(t["sockets"], json!([]), "{be}: past the last page");

        // A channel publication: members get it, the rest are told why not.
        assert_eq!(scarol.call("join", json!("room1")).await["ok"], json!(true));
        assert_eq!(sbob.call("join", json!("room1")).await["ok"], json!(true));
        let mut stream = open_stream(&app, &master(), "?event=chan_out", None)
            .await
            .unwrap();
        sbob.call("chan_in", json!({ "channel": "room1", "data": "hi" }))
            .await;
        let published = stream.until("chan_out", named("chan_out")).await;
        assert_eq!(published["kind"], json!("channel"), "{be}: {published}");
        assert_eq!(published["target"], json!("channel room1"), "{be}");
        assert_eq!(
            published["by"],
            json!({ "username": "bob@x.test", "role": "User" })
        );
        assert_eq!(published["recipients"], json!(2), "{be}: {published}");
        let t = trace(&app, published["id"].as_u64().unwrap(), "").await;
        let l = lines(&t);
        says(
            &l,
            &id_of("bob@x.test"),
            "bob",
            true,
            "in room `chan:room1`",
        );
        let alices: Vec<String> = reasons(&l, &list, "alice@x.test");
        assert_eq!(alices, ["false not in room `chan:room1`"; 2], "{be}");
        assert_eq!(scarol.expect("chan_out").await["data"], json!("hi"));
        salice.assert_none(&app, "chan_out").await;
        // No engine.io session id in any of it.
        for s in [
            &salice, &salice2, &sbob, &scarol, &sadmin, &sguest, &snobody, &slate,
        ] {
            assert!(!t.to_string().contains(&s.sid), "{be}: a sid in the trace");
            assert!(
                !published.to_string().contains(&s.sid),
                "{be}: a sid in the stream"
            );
        }
    }
}

#[tokio::test]
async fn the_stream_filters_and_the_trace_refuses_bad_input() {
    let app = start(&backends()[0]).await;
    let alice = app.user("alice@x.test", "User").await;
    let mut by_event = open_stream(&app, &master(), "?event=db_updated", None)
        .await
        .unwrap();
    let mut by_user = open_stream(&app, &master(), "?user=Alice@X.test", None)
        .await
        .unwrap();
    let mut by_object = open_stream(&app, &master(), "?object=memos", None)
        .await
        .unwrap();
    let post = rest_create(&app, "posts", &alice.cred(), "a").await;
    let memo = rest_create(&app, "memos", &master(), "b").await;
    super::support::rest_update(&app, "posts", post, &master(), "c").await;
    app.state.realtime.emit_all("quiet", &json!(null)).await;
    let drained = |all: Vec<Value>| {
        all.iter()
            .map(|m| format!("{} {} {}", m["event"], m["object"], m["by"]["username"]))
            .collect::<Vec<_>>()
    };
    let updates = by_event.drain(Duration::from_millis(500)).await;
    assert_eq!(
        updates.len(),
        1,
        "only db_updated: {:?}",
        drained(updates.clone())
    );
    assert_eq!(
        (
            &updates[0]["event"],
            &updates[0]["object"],
            &updates[0]["rowId"]
        ),
        (&json!("db_updated"), &json!("posts"), &json!(post))
    );
    let users = by_user.drain(Duration::from_millis(100)).await;
    assert!(!users.is_empty());
    assert!(
        users
            .iter()
            .all(|m| m["by"]["username"] == json!("alice@x.test")),
        "{users:#?}"
    );
    assert!(
        users.iter().any(|m| m["rowId"] == json!(post)),
        "{users:#?}"
    );
    let objects = by_object.drain(Duration::from_millis(100)).await;
    assert!(!objects.is_empty());
    assert!(
        objects
            .iter()
            .all(|m| m["object"] == json!("memos") && m["rowId"] == json!(memo))
    );

    let long = "x".repeat(201);
    for (path, what) in [
        ("/1/admin/events?nosuch=1".to_string(), "unknown parameter"),
        (format!("/1/admin/events?object={long}"), "longer than 200"),
        ("/1/admin/events/abc/trace".into(), "positive whole number"),
        ("/1/admin/events/0/trace".into(), "positive whole number"),
        ("/1/admin/events/-1/trace".into(), "positive whole number"),
        (
            "/1/admin/events/99999999999999999999999/trace".into(),
            "positive whole number",
        ),
        ("/1/admin/events/1/trace?pageSize=1001".into(), "pageSize"),
        ("/1/admin/events/1/trace?pageSize=x".into(), "pageSize"),
        ("/1/admin/events/1/trace?pageNumber=0".into(), "pageNumber"),
        ("/1/admin/events/1/trace?sort=1".into(), "unknown parameter"),
        ("/1/admin/sockets?pageSize=501".into(), "pageSize"),
        ("/1/admin/sockets?pageSize=-1".into(), "pageSize"),
        ("/1/admin/sockets?pageNumber=1.5".into(), "pageNumber"),
        ("/1/admin/sockets?filter=[]".into(), "unknown parameter"),
        ("/1/admin/sockets?pageSize=%ZZ".into(), "pageSize"),
    ] {
        let (status, body) = app.get(&path, &master()).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["Message"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{path}: {message}");
    }
    // A well-formed id the ring does not have.
    let (status, body) = app.get("/1/admin/events/999999/trace", &master()).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["Message"].as_str().unwrap().contains("not recorded"),
        "{body}"
    );
    let (status, body) = app
        .req(
            reqwest::Method::POST,
            "/1/admin/events",
            &master(),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 405, "{body}");
    assert!(body["Message"].is_string(), "{body}");
    // Last-Event-ID that is not an id.
    let refused = open_stream(&app, &master(), "", Some("soon")).await.err();
    let (status, body) = refused.expect("refused");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["Message"].as_str().unwrap().contains("Last-Event-ID"),
        "{body}"
    );
}

/// Messages until the stream closes (`None` if it stays open past `PATIENCE`).
async fn until_closed(stream: &mut EventStream) -> Option<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.rx.recv()).await {
            Err(_) => return None,
            Ok(None | Some(Item::Closed)) => return Some(seen),
            Ok(Some(Item::Message(_, data))) => seen.push(data),
            Ok(Some(Item::Comment)) => {}
        }
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_admin_is_demoted_or_signs_out_and_others_go_on() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let admin = app.admin().await;
        let demoted = app.user("demoted@x.test", "Admin").await;
        let leaving = app.user("leaving@x.test", "Admin").await;
        let mut by_master = open_stream(&app, &master(), "?event=tick", None)
            .await
            .unwrap();
        let mut by_admin = open_stream(&app, &admin.cred(), "?event=tick", None)
            .await
            .unwrap();
        let mut of_demoted = open_stream(&app, &demoted.cred(), "?event=tick", None)
            .await
            .unwrap();
        let mut of_leaving = open_stream(&app, &leaving.cred(), "?event=tick", None)
            .await
            .unwrap();

        let (status, body) = app
            .put(
                &format!("/1/objects/users/{}", demoted.id),
                &master(),
                json!({ "role": "User" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        let (status, body) = app
            .post("/1/user/signout", &leaving.cred(), json!({}))
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        app.state.realtime.emit_all("tick", &json!(1)).await;

        for (who, stream) in [
            ("demoted", &mut of_demoted),
            ("signed out", &mut of_leaving),
        ] {
            let seen = until_closed(stream)
                .await
                .unwrap_or_else(|| panic!("{be}: the {who} admin's stream stayed open"));
            assert_eq!(
                seen,
                [json!({ "kind": "ended",
                         "reason": "the credentials this stream was opened with were revoked" })],
                "{be}: the {who} admin is told why, and sees nothing after"
            );
        }
        // The others were checked again and go on.
        for stream in [&mut by_master, &mut by_admin] {
            assert_eq!(
                stream.until("tick", named("tick")).await["data"],
                json!(1),
                "{be}"
            );
        }
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_access_token_expires() {
    let app = super::objects(Spawn::new(&backends()[0]))
        .config(|c| c.access_token_ttl = 1)
        .start()
        .await;
    let admin = app.admin().await;
    let issued = std::time::Instant::now();
    let mut stream = open_stream(&app, &admin.cred(), "?event=tick", None)
        .await
        .unwrap();
    let mut by_master = open_stream(&app, &master(), "?event=tick", None)
        .await
        .unwrap();
    // exp is 1 s after issue (whole seconds), plus the 5 s leeway tokens get over HTTP.
    let seen = tokio::time::timeout(Duration::from_secs(15), until_closed_forever(&mut stream))
        .await
        .expect("the stream ended once its token expired");
    assert!(
        issued.elapsed() >= Duration::from_secs(4),
        "ended before the token's leeway ended: {:?}",
        issued.elapsed()
    );
    assert_eq!(
        seen,
        [json!({ "kind": "ended",
                 "reason": "the access token this stream was opened with expired" })]
    );
    let (status, _) = app.get("/1/admin/sockets", &admin.cred()).await;
    assert_eq!(status, 401, "the token is refused over HTTP too by now");
    // The master token does not expire: its stream goes on.
    app.state.realtime.emit_all("tick", &json!(2)).await;
    assert_eq!(
        by_master.until("tick", named("tick")).await["data"],
        json!(2)
    );
}

async fn until_closed_forever(stream: &mut EventStream) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        match stream.rx.recv().await {
            None | Some(Item::Closed) => return seen,
            Some(Item::Message(_, data)) => seen.push(data),
            Some(Item::Comment) => {}
        }
    }
}

#[tokio::test]
async fn the_stream_is_not_served_as_a_socket_io_request() {
    let app = start(&backends()[0]).await;
    let admin = app.admin().await;
    let s = app.socket(&admin.token).await;
    let ack = super::support::req(&s, "get", "/1/admin/events", Value::Null).await;
    let message = super::support::failure(&ack, 400, "events over a socket");
    assert!(message.contains("HTTP only"), "{message}");
    // The other admin endpoints answer there as over HTTP.
    let ack = super::support::req(&s, "get", "/1/admin/sockets", Value::Null).await;
    let body = super::support::ok_body(&ack, "sockets over a socket");
    assert_eq!(body["totalRows"], json!(1), "{body}");
    // No stream slot was taken.
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(
            open_stream(&app, &master(), "", None)
                .await
                .expect("all 8 slots free"),
        );
    }
}

#[tokio::test]
async fn open_streams_end_when_the_server_shuts_down_without_holding_it_up() {
    let app = super::objects(Spawn::new(&backends()[0]))
        .config(|c| c.shutdown_grace_ms = 30_000)
        .start()
        .await;
    let mut stream = open_stream(&app, &master(), "", None).await.unwrap();
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(app.stop());
    assert!(
        until_closed(&mut stream).await.is_some(),
        "the stream ended at shutdown"
    );
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown did not wait out its grace for the stream")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn at_most_eight_streams_are_open_at_once() {
    let app = start(&backends()[0]).await;
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(
            open_stream(&app, &master(), "", None)
                .await
                .expect("under the limit"),
        );
    }
    let (status, body) = open_stream(&app, &master(), "", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 429, "{body}");
    assert!(
        body["Message"].as_str().unwrap().contains("at most 8"),
        "{body}"
    );
    // The open ones still work.
    app.state.realtime.emit_all("tick", &json!(1)).await;
    for s in &mut open {
        s.until("tick", named("tick")).await;
    }
    // A reader that goes away gives its slot back.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match open_stream(&app, &master(), "", None).await {
            Ok(_) => break,
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("the freed slot was not given back: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_backlog_is_bounded_and_payloads_are_cut_with_a_marker() {
    let app = start(&backends()[0]).await;
    let realtime = &app.state.realtime;
    // Serving (the namespace exists once the server task has run), with nobody
    // watching: nothing is recorded.
    let (status, _) = app.get("/healthz", &Cred::None).await;
    assert_eq!(status, 200);
    realtime.emit_all("unwatched", &json!(1)).await;
    let mut first = open_stream(&app, &master(), "", None).await.unwrap();
    let big = "z".repeat(100_000);
    realtime.emit_all("big", &json!({ "text": big })).await;
    // The first message the first reader gets: nothing was recorded before it opened.
    let (_, shown) = first.next(PATIENCE).await.expect("a message");
    assert_eq!(
        (&shown["event"], &shown["id"]),
        (&json!("big"), &json!(1)),
        "{shown}"
    );
    assert_eq!(
        shown["dataTruncated"],
        json!(true),
        "{}",
        shown["dataTruncated"]
    );
    assert_eq!(shown["data"]["truncated"], json!(true));
    assert_eq!(
        shown["data"]["bytes"],
        json!(json!({ "text": big }).to_string().len())
    );
    let preview = shown["data"]["preview"].as_str().unwrap();
    assert!(
        preview.len() <= 4096 && preview.starts_with(r#"{"text":"zzz"#),
        "{preview}"
    );
    for n in 0..600 {
        realtime.emit_all("many", &json!(n)).await;
    }
    let last = loop {
        let m = first.until("many", named("many")).await;
        if m["data"] == json!(599) {
            break m["id"].as_u64().unwrap();
        }
    };
    // A new reader gets the last 500, in order, and nothing from before it watched.
    let mut second = open_stream(&app, &master(), "", None).await.unwrap();
    let backlog = second.drain(Duration::from_millis(500)).await;
    let ids: Vec<u64> = backlog.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, ((last - 499)..=last).collect::<Vec<_>>());
    // A reader that says where it got to gets only what came after.
    let mut resumed = open_stream(&app, &master(), "", Some(&(last - 3).to_string()))
        .await
        .unwrap();
    let rest: Vec<Value> = resumed.drain(Duration::from_millis(300)).await;
    let data: Vec<&Value> = rest.iter().map(|m| &m["data"]).collect();
    assert_eq!(data, [&json!(597), &json!(598), &json!(599)]);
    // An event that fell out of the ring has no trace.
    let (status, body) = app
        .get(&format!("/1/admin/events/{}/trace", last - 500), &master())
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = app
        .get(&format!("/1/admin/events/{}/trace", last - 499), &master())
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_told_what_it_lost() {
    let app = start(&backends()[0]).await;
    let mut stalled = stalled_stream(&app).await;
    // Far more than the kernel's buffers and the stream's queue hold together.
    let data = "w".repeat(3500);
    for n in 0..8000 {
        app.state
            .realtime
            .emit_all("flood", &json!({ "n": n, "d": data }))
            .await;
    }
    let mut text = stalled.read_all(Duration::from_secs(2)).await;
    let items = take_blocks(&mut text);
    let messages: Vec<(Option<u64>, Value)> = items
        .into_iter()
        .filter_map(|i| match i {
            Item::Message(id, data) => Some((id, data)),
            _ => None,
        })
        .collect();
    let at = messages
        .iter()
        .position(|(_, m)| m["kind"] == json!("lagged"))
        .unwrap_or_else(|| panic!("no lagged message among {} messages", messages.len()));
    let (id, lagged) = &messages[at];
    assert_eq!(*id, None, "a lagged notice is no event: {lagged}");
    let dropped = lagged["dropped"].as_u64().expect("dropped count");
    assert!(dropped > 0, "{lagged}");
    // Exactly that many events are missing between the ones around it.
    // Ids start at 1 on a fresh server, so a notice at the very front lost 1…n.
    let before = match at {
        0 => 0,
        _ => messages[at - 1].0.expect("an event before"),
    };
    let after = messages[at + 1].0.expect("an event after");
    assert_eq!(after - before - 1, dropped, "{lagged}");
    // The events after it are the newest, in order, up to the last.
    let last = messages.last().unwrap();
    assert_eq!(last.1["data"]["n"], json!(7999));
    let ids: Vec<u64> = messages[at + 1..]
        .iter()
        .map(|(id, _)| id.unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "in order");
}

/// An event stream on a bare TCP connection that is not read until `read_all`.
struct Stalled {
    tcp: tokio::net::TcpStream,
}

async fn stalled_stream(app: &TestApp) -> Stalled {
    use tokio::io::AsyncWriteExt;
    let addr = app.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = crate::common::basic_header(crate::common::MASTER, crate::common::ADMIN_USER_TOKEN);
    let request =
        format!("GET /1/admin/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    // Until the stream is open (and so counted), emits are not recorded.
    let mut stalled = Stalled { tcp };
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(PATIENCE, stalled.tcp.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert_eq!(n, 1, "connection closed before the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stalled
}

impl Stalled {
    /// The body the server sent (chunk framing removed), until it is quiet for `quiet`.
    async fn read_all(&mut self, quiet: Duration) -> String {
        use tokio::io::AsyncReadExt;
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, self.tcp.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        dechunk(&all)
    }
}

/// An HTTP/1.1 chunked body as its text.
fn dechunk(mut raw: &[u8]) -> String {
    let mut body = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { break };
        let start = line_end + 2;
        if size == 0 || raw.len() < start + size {
            break;
        }
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    String::from_utf8_lossy(&body).into_owned()
}

// ---------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_socket_list_shows_identity_transport_and_channels_and_never_the_sid() {
    let app = start(&backends()[0]).await;
    let admin = app.admin().await;
    let alice = app.user("alice@x.test", "User").await;
    let salice = app.socket(&alice.token).await;
    for channel in ["room1", "db-posts", "db-notes"] {
        assert_eq!(salice.call("join", json!(channel)).await["ok"], json!(true));
    }
    let sadmin = app.socket(&admin.token).await;
    let polling = Polling::connect(&app.base, json!({ "anonymousToken": ANON })).await;
    // A socket.io 2.x client (engine.io 3), connected to `/` by the server itself.
    let mut v4 = raw_ws(&app.base, 3).await;
    let open = next_frame(&mut v4, PATIENCE).await.expect("open packet");
    let v4_sid: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    let v4_sid = v4_sid["sid"].as_str().unwrap().to_string();
    assert_eq!(next_frame(&mut v4, PATIENCE).await.as_deref(), Some("40"));
    send(&mut v4, "2").await;
    // StaticBackend connections, each bridged through a socket of its own.
    let mut sse = app
        .client
        .get(app.url("/sse/connect?sbpk=any"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let init = sse.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&init).contains("init"), "{init:?}");
    let url = format!("{}/ws", app.base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    {
        use futures_util::StreamExt;
        let init = ws.next().await.unwrap().unwrap().into_text().unwrap();
        assert!(init.contains("init"), "{init}");
    }

    let list = sockets(&app).await;
    assert_eq!(list.len(), 6, "{list:#?}");
    let a = of_user(&list, "alice@x.test");
    assert_eq!(a["role"], json!("User"));
    assert_eq!(a["userId"], json!(alice.id));
    assert_eq!(a["transport"], json!("websocket"));
    assert_eq!(a["protocol"], json!("v5"));
    assert_eq!(a["bridge"], json!(null));
    assert_eq!(a["channels"], json!(["db-notes", "db-posts", "room1"]));
    let rooms: Vec<&str> = a["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for room in [
        "chan:room1".to_string(),
        "db:posts".to_string(),
        format!("db:notes:{}", alice.id),
        "role:User".to_string(),
        "user:alice@x.test".to_string(),
        "all".to_string(),
        format!("sock:{}", a["id"].as_str().unwrap()),
    ] {
        assert!(rooms.contains(&room.as_str()), "{room} in {rooms:?}");
    }
    assert!(chrono::DateTime::parse_from_rfc3339(a["connectedAt"].as_str().unwrap()).is_ok());
    assert!(a["ageSeconds"].is_u64() && a["queuedBytes"].is_u64(), "{a}");
    let ad = of_user(&list, "admin@test.local");
    assert_eq!(
        (ad["role"].clone(), ad["channels"].clone()),
        (json!("Admin"), json!([]))
    );
    let p = one(&list, "on polling", |s| s["transport"] == json!("polling"));
    assert_eq!(
        (p["username"].clone(), p["role"].clone()),
        (json!("Guest"), json!("Public"))
    );
    assert_eq!(p["userId"], json!(null));
    let old = one(&list, "on socket.io 2.x", |s| s["protocol"] == json!("v4"));
    assert_eq!(old["username"], json!(null));
    assert_eq!(
        old["rooms"].as_array().unwrap().len(),
        1,
        "only its own room: {old}"
    );
    one(&list, "bridged from SSE", |s| s["bridge"] == json!("sse"));
    one(&list, "bridged from /ws", |s| s["bridge"] == json!("ws"));
    // The engine.io session ids the clients hold appear nowhere.
    let text = serde_json::to_string(&list).unwrap();
    for sid in [&salice.sid, &sadmin.sid, &polling.sid, &v4_sid] {
        assert!(!text.contains(sid.as_str()), "sid {sid} listed");
    }
    for s in &list {
        let id = s["id"].as_str().unwrap();
        assert!(id.len() >= 16, "{s}");
        for sid in [&salice.sid, &sadmin.sid, &polling.sid, &v4_sid] {
            assert_ne!(id, sid.as_str());
        }
    }
    // Paged.
    let (status, page) = app
        .get("/1/admin/sockets?pageSize=4&pageNumber=2", &master())
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["totalRows"], json!(6));
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["data"][0]["id"], list[4]["id"]);
    assert_eq!(page["data"][1]["id"], list[5]["id"]);
}

#[tokio::test]
async fn deleting_a_socket_disconnects_that_client_and_no_other() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut salice = app.socket(&alice.token).await;
        let sbob = app.socket(&bob.token).await;
        let list = sockets(&app).await;
        let target = socket_id(&list, "alice@x.test");
        let (status, body) = app
            .delete(&format!("/1/admin/sockets/{target}"), &master())
            .await;
        assert_eq!((status, &body), (200, &json!({})), "{be}");
        let told = salice.expect("error").await;
        assert_eq!(
            told["message"],
            json!("disconnected by an administrator"),
            "{be}"
        );
        assert!(
            salice.closed_within(PATIENCE).await,
            "{be}: the client was disconnected"
        );
        let list = sockets(&app).await;
        assert!(
            list.iter().all(|s| s["id"] != json!(target)),
            "{be}: {list:#?}"
        );
        assert_eq!(
            sbob.call("echo", json!("still")).await,
            json!("still"),
            "{be}"
        );
        let (status, body) = app
            .delete(&format!("/1/admin/sockets/{target}"), &master())
            .await;
        assert_eq!(status, 404, "{be}: {body}");
        assert!(body["Message"].is_string(), "{be}: {body}");
        // The engine.io sid is not a name the endpoint knows.
        let (status, _) = app
            .delete(&format!("/1/admin/sockets/{}", sbob.sid), &master())
            .await;
        assert_eq!(status, 404, "{be}: a sid names no socket here");
        for bad in ["a%20b", "x.y", &"a".repeat(65), "%C3%A9"] {
            let (status, body) = app
                .delete(&format!("/1/admin/sockets/{bad}"), &master())
                .await;
            assert_eq!(status, 400, "{be}: {bad}: {body}");
            assert!(
                body["Message"]
                    .as_str()
                    .unwrap()
                    .contains("not a socket id"),
                "{body}"
            );
        }
        assert_eq!(
            sbob.call("echo", json!("still")).await,
            json!("still"),
            "{be}"
        );
    }
}

#[tokio::test]
async fn a_socket_over_its_send_budget_is_traced_as_left_out() {
    let app = super::objects(Spawn::new(&backends()[0]))
        .config(|c| {
            c.socket_buffer_bytes = 1024 * 1024;
            c.socket_buffer = 100_000;
            c.write_stall_timeout_ms = 0;
            c.socket_ping_interval_ms = 120_000;
            // Over its budget for this long before it is disconnected: time for the trace.
            c.socket_ping_timeout_ms = 60_000;
        })
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let bob = app.user("bob@x.test", "User").await;
    let publisher = app.socket(&bob.token).await;
    let mut healthy = app.socket(&alice.token).await;
    assert_eq!(
        healthy.call("join", json!("flood")).await["ok"],
        json!(true)
    );
    // A Guest member that never reads again.
    let mut stalled = crate::sio::raw_v5(&app.base, json!({ "anonymousToken": ANON }))
        .await
        .unwrap();
    send(&mut stalled, r#"421["join","flood"]"#).await;
    while let Some(frame) = next_frame(&mut stalled, PATIENCE).await {
        if frame.starts_with("431") {
            break;
        }
    }
    let data = "y".repeat(200 * 1024);
    for _ in 0..200 {
        publisher
            .call("chan_in", json!({ "channel": "flood", "data": data }))
            .await;
        healthy.expect("chan_out").await;
    }
    let mut stream = open_stream(&app, &master(), "?event=chan_out", None)
        .await
        .unwrap();
    let drops = metric(
        &app.metrics_text().await,
        "livebase_socket_drops_total",
        &[r#"reason="bytes""#],
    );
    assert!(drops > 0.0, "the stalled socket fell behind");
    publisher
        .call("chan_in", json!({ "channel": "flood", "data": "tagged" }))
        .await;
    let event = stream
        .until("the tagged message", |m| {
            m["data"]["data"] == json!("tagged")
        })
        .await;
    assert_eq!(event["leftOut"], json!(1), "{event}");
    assert_eq!(event["recipients"], json!(1), "{event}");
    let list = sockets(&app).await;
    let guest = one(&list, "stalled", |s| s["username"] == json!("Guest"));
    assert!(guest["queuedBytes"].as_u64().unwrap() > 0, "{guest}");
    let l = lines(&trace(&app, event["id"].as_u64().unwrap(), "").await);
    says(
        &l,
        guest["id"].as_str().unwrap(),
        "stalled",
        false,
        "left out: over its send budget",
    );
    says(
        &l,
        &socket_id(&list, "alice@x.test"),
        "healthy",
        true,
        "in room `chan:flood`",
    );
    says(
        &l,
        &socket_id(&list, "bob@x.test"),
        "publisher",
        false,
        "not in room `chan:flood`",
    );
    assert_eq!(healthy.expect("chan_out").await["data"], json!("tagged"));
}

#[tokio::test]
async fn the_health_metrics_the_dashboard_charts_exist() {
    let app = start(&backends()[0]).await;
    let alice = app.user("alice@x.test", "User").await;
    let s = app.socket(&alice.token).await;
    s.call("join", json!("c")).await;
    s.call("chan_in", json!({ "channel": "c", "data": 1 }))
        .await;
    let text = app.metrics_text().await;
    for name in [
        "livebase_socket_connections",
        "livebase_socket_emits_total",
        "livebase_http_request_duration_seconds_bucket",
        "livebase_http_requests_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} in /metrics"
        );
    }
    assert!(metric(&text, "livebase_socket_connections", &[]) >= 1.0);
}
