//! Per-socket send buffer and heartbeat: a client that stops reading is cut off and
//! counted, while a healthy client on the same channel gets every event.

use std::time::Duration;

use serde_json::json;

use crate::common::{Spawn, backends, metric};
use crate::sio::{PATIENCE, next_frame, raw_v5, send};

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_others_get_everything() {
    // One backend is enough: this is about sockets, not storage.
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .schema(
            "blobs.json",
            json!({ "name": "blobs", "fields": { "body": { "type": "text" } },
                    "permissions": { "read": ["User"], "create": ["User"] } }),
        )
        .config(|c| {
            c.socket_buffer = 8;
            c.socket_ping_interval_ms = 4000;
            c.socket_ping_timeout_ms = 4000;
        })
        .start()
        .await;
    let writer = app.user("writer@x.test", "User").await;
    let reader = app.user("reader@x.test", "User").await;

    let mut healthy = app.socket(&reader.token).await;
    assert_eq!(
        healthy.call("join", json!("db-blobs")).await["ok"],
        json!(true)
    );

    // The slow client: a raw WebSocket that authenticates, joins, and then never reads.
    let mut slow = raw_v5(&app.base, json!({ "token": reader.token }))
        .await
        .expect("slow client connects");
    send(&mut slow, r#"421["join","db-blobs"]"#).await;
    loop {
        let frame = next_frame(&mut slow, PATIENCE).await.expect("join ack");
        if frame.starts_with("431") {
            break;
        }
    }

    let before = app.metrics_text().await;
    let full_before = metric(
        &before,
        "livebase_socket_drops_total",
        // Over the byte budget or over the message count, whichever it hits first.
        &[],
    );

    // ~24 MiB of events: more than the kernel's socket buffers and the 8-packet queue,
    // written well before the heartbeat (4 s + 4 s) gives up on the stalled client.
    let body = "x".repeat(512 * 1024);
    let rows = 48;
    for _ in 0..rows {
        let (status, answer) = app
            .post("/1/objects/blobs", &writer.cred(), json!({ "body": body }))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    for n in 0..rows {
        let event = healthy
            .try_expect("db_created", PATIENCE)
            .await
            .unwrap_or_else(|| panic!("healthy socket missed event {n} of {rows}"));
        assert_eq!(
            event["data"]["body"].as_str().map(str::len),
            Some(body.len())
        );
    }

    let after = app.metrics_text().await;
    let full_after = metric(
        &after,
        "livebase_socket_drops_total",
        // Over the byte budget or over the message count, whichever it hits first.
        &[],
    );
    assert!(
        full_after > full_before,
        "events for the stalled socket must be dropped, not queued without bound"
    );

    // Reading again shows the server ended the connection (no pong was ever sent).
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while next_frame(&mut slow, PATIENCE).await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stalled socket must be disconnected");

    // The healthy socket is still served.
    let (status, _) = app
        .post(
            "/1/objects/blobs",
            &writer.cred(),
            json!({ "body": "after" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(healthy.expect("db_created").await["data"]["body"], "after");
    let last = app.metrics_text().await;
    assert!(
        metric(
            &last,
            "livebase_socket_disconnects_total",
            &[r#"reason="heartbeat_timeout""#]
        ) >= 1.0,
        "the stalled socket is counted as a heartbeat timeout"
    );
    for name in [
        "livebase_socket_connections",
        "livebase_socket_emits_total{kind=\"db\"}",
    ] {
        assert!(last.contains(name), "{name} in /metrics");
    }
}
