//! Clients that stop reading, and clients that ask for too much: a stalled reader is cut
//! within the heartbeat timeout whatever the message sizes, what is queued for one
//! socket is bounded in bytes, and one socket may be in only so many channels.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{ANON, Spawn, TestApp, backends, metric};
use crate::sio::{PATIENCE, Sio, next_frame, raw_v5, send};

/// A member of channel `flood` on a bare WebSocket that never reads again; with
/// `pong`, it still answers heartbeats blindly (a pong every 300 ms, unread pings).
async fn stalled_member(app: &TestApp, pong: bool) -> tokio::task::JoinHandle<()> {
    let mut ws = raw_v5(&app.base, json!({ "anonymousToken": ANON }))
        .await
        .expect("connects");
    send(&mut ws, r#"421["join","flood"]"#).await;
    while let Some(frame) = next_frame(&mut ws, PATIENCE).await {
        if frame.starts_with("431") {
            break;
        }
    }
    let (mut sink, stream) = ws.split();
    tokio::spawn(async move {
        let _unread = stream;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if pong && sink.send(Message::Text("3".into())).await.is_err() {
                return;
            }
        }
    })
}

async fn counter(app: &TestApp, name: &str, labels: &[&str]) -> f64 {
    metric(&app.metrics_text().await, name, labels)
}

/// Waits (bounded) until `name{labels}` exceeds `above`.
async fn eventually_above(
    app: &TestApp,
    name: &str,
    labels: &[&str],
    above: f64,
    wait: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if counter(app, name, labels).await > above {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_reader_that_stalls_is_cut_within_the_heartbeat_timeout_whatever_the_sizes() {
    let app = Spawn::new(&backends()[0])
        .config(|c| {
            c.socket_ping_interval_ms = 2000;
            c.socket_ping_timeout_ms = 2000;
            c.write_stall_timeout_ms = 2000;
            // Only the stall is under test here, not the byte budget.
            c.socket_buffer_bytes = 1 << 30;
        })
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let publisher = Sio::with_token(&app.base, &alice.token).await;
    for size in [256 * 1024, 900 * 1024] {
        let before = counter(&app, "livebase_socket_disconnects_total", &[]).await;
        let cut_before = counter(
            &app,
            "livebase_connections_cut_total",
            &[r#"reason="write_stall""#],
        )
        .await;
        let member = stalled_member(&app, true).await;
        let data = "x".repeat(size);
        // Far more than the kernel's buffers on both ends hold.
        for _ in 0..(48 * 1024 * 1024 / size) {
            let ack = publisher
                .call("chan_in", json!({ "channel": "flood", "data": data }))
                .await;
            assert_eq!(ack["ok"], json!(true), "{ack}");
        }
        // Heartbeat timeout: interval + timeout = 4 s; the stall guard takes 2 s.
        assert!(
            eventually_above(
                &app,
                "livebase_socket_disconnects_total",
                &[],
                before,
                Duration::from_secs(8)
            )
            .await,
            "{size}-byte messages: the stalled socket is still connected"
        );
        assert!(
            counter(
                &app,
                "livebase_connections_cut_total",
                &[r#"reason="write_stall""#]
            )
            .await
                > cut_before,
            "{size}-byte messages: cut by the write-stall guard"
        );
        member.abort();
    }
    // The publisher was never disturbed.
    assert_eq!(
        publisher.call("echo", json!("still here")).await,
        json!("still here")
    );
}

#[tokio::test]
async fn what_is_queued_for_a_socket_is_bounded_in_bytes() {
    let app = Spawn::new(&backends()[0])
        .config(|c| {
            c.socket_buffer_bytes = 1024 * 1024;
            c.socket_buffer = 100_000;
            // Neither the stall guard nor the heartbeat: only the byte budget acts.
            c.write_stall_timeout_ms = 0;
            c.socket_ping_interval_ms = 120_000;
            c.socket_ping_timeout_ms = 3000;
        })
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let publisher = Sio::with_token(&app.base, &alice.token).await;
    let mut healthy = Sio::with_token(&app.base, &alice.token).await;
    assert_eq!(
        healthy.call("join", json!("flood")).await["ok"],
        json!(true)
    );
    let member = stalled_member(&app, false).await;
    let dropped = counter(&app, "livebase_socket_drops_total", &[r#"reason="bytes""#]).await;
    let ended = counter(&app, "livebase_socket_over_budget_disconnects_total", &[]).await;
    let data = "y".repeat(200 * 1024);
    let messages = 200; // 40 MiB: past any kernel buffer
    for n in 0..messages {
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
    assert!(
        counter(&app, "livebase_socket_drops_total", &[r#"reason="bytes""#]).await > dropped,
        "messages past the stalled socket's byte budget are dropped for it"
    );
    // Staying over the budget for the ping timeout (3 s) ends it.
    for _ in 0..20 {
        publisher
            .call("chan_in", json!({ "channel": "flood", "data": "tick" }))
            .await;
        healthy.expect("chan_out").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        counter(&app, "livebase_socket_over_budget_disconnects_total", &[]).await > ended,
        "a socket that stays over its budget is disconnected"
    );
    member.abort();
}

#[tokio::test]
async fn one_socket_may_join_only_so_many_channels() {
    let app = super::objects(Spawn::new(&backends()[0]))
        .config(|c| c.socket_max_channels = 5)
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let s = Sio::with_token(&app.base, &alice.token).await;
    for name in ["c1", "c2", "c3", "c4", "db-posts"] {
        assert_eq!(
            s.call("join", json!(name)).await["ok"],
            json!(true),
            "{name}"
        );
    }
    let refused = s.call("join", json!("c5")).await;
    let message = refused["error"].as_str().unwrap_or_default();
    assert!(message.contains("at most 5 channels"), "{refused}");
    let refused = s.call("join", json!("db-notes")).await;
    assert!(
        refused["error"].is_string(),
        "db channels count too: {refused}"
    );
    // Joining one it is already in is no new channel.
    assert_eq!(s.call("join", json!("c1")).await["ok"], json!(true));
    // It was refused for real: a message in c5 does not reach it.
    let mut other = Sio::with_token(&app.base, &alice.token).await;
    assert_eq!(other.call("join", json!("c5")).await["ok"], json!(true));
    other
        .call("chan_in", json!({ "channel": "c5", "data": 1 }))
        .await;
    other.expect("chan_out").await;
    // Leaving one makes room.
    s.call("leave", json!("c2")).await;
    assert_eq!(s.call("join", json!("c5")).await["ok"], json!(true));
    let mut s = s;
    s.assert_none(&app, "chan_out").await;
}
