//! What the event stream shows for committed changes and emits, its filters, its
//! limits (streams, backlog, payload, a reader that falls behind) and its end at shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use super::sse::{Item, named, open_stream, take_blocks, until_closed};
use super::{lines, says, socket_id, sockets, start, trace};
use crate::common::{Cred, Spawn, TestApp, backends, master};
use crate::realtime::support::rest_create;
use crate::sio::PATIENCE;

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
    crate::realtime::support::rest_update(&app, "posts", post, &master(), "c").await;
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

#[tokio::test]
async fn open_streams_end_when_the_server_shuts_down_without_holding_it_up() {
    let app = crate::realtime::objects(Spawn::new(&backends()[0]))
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
