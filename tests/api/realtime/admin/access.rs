//! Who may call the admin endpoints, and how long an event stream's credentials last.

use std::time::Duration;

use serde_json::{Value, json};

use super::sse::{named, open_stream, until_closed, until_closed_forever};
use super::{socket_id, sockets, start};
use crate::common::{ANON, Cred, Spawn, backends, master};

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
            ("GET", "/1/admin/nodes".to_string()),
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
        let node = app.state.node.id.clone();
        assert_eq!(body["node"], json!(node), "{be}: {body}");
        // One node: it lists itself, live.
        let (status, body) = app.get("/1/admin/nodes", &admin.cred()).await;
        assert_eq!(status, 200, "{be}: {body}");
        assert_eq!(body["node"], json!(node), "{be}: {body}");
        let listed = body["data"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{be}: {body}");
        assert_eq!(
            (&listed[0]["node"], &listed[0]["live"], &listed[0]["self"]),
            (&json!(node), &json!(true), &json!(true)),
            "{be}: {body}"
        );
        let (status, body) = app
            .get(&format!("/1/admin/events/{event}/trace"), &admin.cred())
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        assert!(open_stream(&app, &admin.cred(), "", None).await.is_ok());
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
    let app = crate::realtime::objects(Spawn::new(&backends()[0]))
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

#[tokio::test]
async fn the_stream_is_not_served_as_a_socket_io_request() {
    let app = start(&backends()[0]).await;
    let admin = app.admin().await;
    let s = app.socket(&admin.token).await;
    let ack = crate::realtime::support::req(&s, "get", "/1/admin/events", Value::Null).await;
    let message = crate::realtime::support::failure(&ack, 400, "events over a socket");
    assert!(message.contains("HTTP only"), "{message}");
    // The other admin endpoints answer there as over HTTP.
    let ack = crate::realtime::support::req(&s, "get", "/1/admin/sockets", Value::Null).await;
    let body = crate::realtime::support::ok_body(&ack, "sockets over a socket");
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
