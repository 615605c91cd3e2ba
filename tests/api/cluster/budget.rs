//! A socket's byte budget holds for emits from other nodes too: a socket on node B
//! that stops reading misses node A's channel messages once it is behind by its budget,
//! and is disconnected when it stays behind, while a healthy member on B gets them all.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::common::metric;
use crate::process::client;
use crate::sio::{PATIENCE, Sio, next_frame, raw_v5, send};

async fn counter(base: &str, name: &str, labels: &[&str]) -> f64 {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(&text, name, labels)
}

#[tokio::test]
async fn another_nodes_emits_count_against_a_sockets_byte_budget() {
    let Some(c) = super::on_redis(
        2,
        &[],
        &[
            ("--socket-buffer-bytes", "1048576"),
            ("--socket-buffer", "100000"),
            // Neither the stall guard nor the heartbeat: only the byte budget acts.
            ("--write-stall-timeout-ms", "0"),
            ("--socket-ping-interval-ms", "120000"),
            ("--socket-ping-timeout-ms", "3000"),
        ],
    )
    .await
    else {
        return;
    };
    let token = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let (a, b) = (c.nodes[0].base.clone(), c.nodes[1].base.clone());
    let publisher = Sio::with_token(&a, &token).await;
    let mut healthy = Sio::with_token(&b, &token).await;
    assert_eq!(
        healthy.call("join", json!("flood")).await["ok"],
        json!(true)
    );
    // A member on B that never reads again.
    let mut ws = raw_v5(&b, json!({ "token": token }))
        .await
        .expect("connects");
    send(&mut ws, r#"421["join","flood"]"#).await;
    while let Some(frame) = next_frame(&mut ws, PATIENCE).await {
        if frame.starts_with("431") {
            break;
        }
    }
    let (_sink, _unread) = ws.split();

    let dropped = counter(&b, "livebase_socket_drops_total", &[r#"reason="bytes""#]).await;
    let ended = counter(&b, "livebase_socket_over_budget_disconnects_total", &[]).await;
    // 75 MB: past what the kernel holds for a connection nobody reads here (receive
    // buffers autotune up to 32 MiB, plus 4 MiB of send buffer).
    let data = "y".repeat(500 * 1024);
    for n in 0..150 {
        let ack = publisher
            .call("chan_in", json!({ "channel": "flood", "data": data }))
            .await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        let got = healthy.expect("chan_out").await;
        assert_eq!(
            got["data"].as_str().map(str::len),
            Some(data.len()),
            "message {n}"
        );
    }
    // Then small messages for a while: node B's sweeps see the socket behind, drop what
    // it misses, and end it once it has stayed behind for the ping timeout (3 s).
    let (mut missed, mut cut) = (false, false);
    for _ in 0..60 {
        publisher
            .call("chan_in", json!({ "channel": "flood", "data": "tick" }))
            .await;
        healthy.expect("chan_out").await;
        missed = missed
            || counter(&b, "livebase_socket_drops_total", &[r#"reason="bytes""#]).await > dropped;
        cut =
            cut || counter(&b, "livebase_socket_over_budget_disconnects_total", &[]).await > ended;
        if missed && cut {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        missed,
        "node A's messages past the stalled socket's byte budget are dropped for it on B"
    );
    assert!(
        cut,
        "a socket on B that stays over its budget with A's messages is disconnected"
    );
}
