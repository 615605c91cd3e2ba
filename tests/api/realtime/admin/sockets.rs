//! The socket list (identity, transport, channels; never the engine.io sid), ending a
//! socket by its public id, and the metrics the dashboard charts.

use serde_json::{Value, json};

use super::{of_user, one, socket_id, sockets, start};
use crate::common::{ANON, backends, master, metric};
use crate::sio::{PATIENCE, Polling, next_frame, raw_ws, send};

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
    // Nor does the session id their access tokens carry (a `sess:` room).
    let text = serde_json::to_string(&list).unwrap();
    for token in [&alice.token, &admin.token] {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: Value = serde_json::from_slice(&payload).unwrap();
        let session = claims["sid"].as_str().expect("the token names its session");
        assert!(!text.contains(session), "session {session} listed: {text}");
    }
    for s in &list {
        let rooms = s["rooms"].as_array().unwrap();
        assert!(
            rooms
                .iter()
                .all(|r| !r.as_str().unwrap().starts_with("sess:")),
            "a session's room listed: {s}"
        );
    }
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
        "livebase_socket_drops_total",
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
