//! The delivery trace, each line checked against what that socket really received.

use std::time::Duration;

use serde_json::json;

use super::sse::{named, open_stream};
use super::{lines, one, reasons, says, socket_id, sockets, start, trace};
use crate::common::{ANON, Spawn, backends, master, metric};
use crate::realtime::support::{rest_create, unauthenticated};
use crate::sio::{PATIENCE, Sio, next_frame, send};

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
async fn a_socket_over_its_send_budget_is_traced_as_left_out() {
    let app = crate::realtime::objects(Spawn::new(&backends()[0]))
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
