//! Per-socket send buffer and heartbeat: a client that stops reading is cut off and
//! counted, while a healthy client on the same channel gets every event.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Spawn, backends};
use crate::sio::{PATIENCE, ws_url};

/// The value of a counter line (`name{labels} value`) in `/metrics`, 0 when absent.
fn counter(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

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
            c.socket_ping_interval_ms = 1500;
            c.socket_ping_timeout_ms = 1000;
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
    let (ws, _) = tokio_tungstenite::connect_async(ws_url(&app.base, 4))
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let auth = json!({ "token": reader.token });
    sink.send(Message::Text(format!("40{auth}").into()))
        .await
        .unwrap();
    loop {
        let frame = stream.next().await.unwrap().unwrap();
        let text = frame.to_text().unwrap().to_string();
        if text == "2" {
            sink.send(Message::Text("3".into())).await.unwrap();
        }
        if text.starts_with("40") {
            break;
        }
        assert!(!text.starts_with("44"), "slow client refused: {text}");
    }
    sink.send(Message::Text(r#"421["join","db-blobs"]"#.into()))
        .await
        .unwrap();
    loop {
        let text = stream
            .next()
            .await
            .unwrap()
            .unwrap()
            .to_text()
            .unwrap()
            .to_string();
        if text.starts_with("431") {
            break;
        }
    }

    let before = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let full_before = counter(
        &before,
        r#"livebase_socket_drops_total{reason="buffer_full"}"#,
    );

    // ~16 MiB of events: more than the kernel's socket buffers and the 8-packet queue.
    let body = "x".repeat(256 * 1024);
    let rows = 64;
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

    let after = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let full_after = counter(
        &after,
        r#"livebase_socket_drops_total{reason="buffer_full"}"#,
    );
    assert!(
        full_after > full_before,
        "events for the stalled socket must be dropped, not queued without bound"
    );

    // Reading again shows the server ended the connection (no pong was ever sent).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = stream.next().await {
            if frame.is_close() {
                break;
            }
        }
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
    let last = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        counter(
            &last,
            r#"livebase_socket_disconnects_total{reason="heartbeat_timeout"}"#
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
