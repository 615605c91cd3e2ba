//! Redis going away under running nodes, on a Redis of the test's own: each node keeps
//! serving its own sockets and says `degraded` (committed changes still reach every
//! node, through the event log; channel publications do not), then reconnects and
//! resubscribes by itself when Redis is back.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::Cluster;
use crate::common::Cred;
use crate::process::client;
use crate::sio::Sio;

const ITEMS: &str = r#"{
  "name": "items",
  "fields": { "name": { "type": "string", "required": true } },
  "permissions": {
    "read": ["Admin", "User"], "create": ["Admin", "User"],
    "update": ["Admin", "User"], "delete": ["Admin", "User"]
  }
}"#;

/// A `redis-server` on `port`, keeping nothing on disk; killed on drop.
struct Redis {
    child: Child,
}

impl Redis {
    fn start(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis { child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {port}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn health(base: &str) -> serde_json::Value {
    client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls every node's `/healthz` until each says `status` (within `wait`).
async fn all_say(c: &Cluster, status: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    for node in &c.nodes {
        loop {
            let h = health(&node.base).await;
            if h["status"] == json!(status) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} says {h}, not {status}, after {wait:?}",
                node.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn nodes_serve_their_own_sockets_while_redis_is_away_and_rejoin_when_it_is_back() {
    // Only where the cluster tests run at all: they need the same PostgreSQL.
    if std::env::var("LIVEBASE_TEST_REDIS_URL").is_err() {
        eprintln!("note: Redis outage test skipped (set LIVEBASE_TEST_REDIS_URL to run it)");
        return;
    }
    let port = free_port();
    let Some(redis) = Redis::start(port) else {
        eprintln!("note: Redis outage test skipped (no redis-server on PATH)");
        return;
    };
    let url = format!("redis://127.0.0.1:{port}");
    let Some(c) =
        Cluster::start(2, &[("schema/items.json", ITEMS)], &[("--redis-url", &url)]).await
    else {
        return;
    };
    all_say(&c, "ok", Duration::from_secs(5)).await;
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let mut on_a = Sio::with_token(&c.nodes[0].base, &admin).await;
    let mut on_b = Sio::with_token(&c.nodes[1].base, &admin).await;
    for s in [&mut on_a, &mut on_b] {
        assert_eq!(s.call("join", json!("db-items")).await["ok"], json!(true));
        assert_eq!(s.call("join", json!("room")).await["ok"], json!(true));
    }
    async fn publish(from: &Sio, text: &str) {
        let ack = from
            .call("chan_in", json!({ "channel": "room", "data": text }))
            .await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
    }
    let create = |name: &'static str| {
        let (c, admin) = (&c, admin.clone());
        async move {
            let (status, body) = c
                .req(
                    0,
                    Method::POST,
                    "/1/objects/items",
                    &Cred::Bearer(admin),
                    Some(json!({ "name": name })),
                )
                .await;
            assert_eq!(status, 200, "writing {name} on node A: {body}");
        }
    };
    create("before").await;
    assert_eq!(
        on_b.expect("db_created").await["data"]["name"],
        json!("before")
    );
    assert_eq!(
        on_a.expect("db_created").await["data"]["name"],
        json!("before")
    );

    drop(redis);
    all_say(&c, "degraded", Duration::from_secs(5)).await;
    // Writes go on, and every node's sockets still hear of them: changes cross nodes
    // through the event log on PostgreSQL, not through Redis.
    create("during").await;
    for s in [&mut on_a, &mut on_b] {
        assert_eq!(
            s.expect("db_created").await["data"]["name"],
            json!("during")
        );
    }
    // A channel publication does ride on Redis: node A's sockets get it, B's do not.
    publish(&on_a, "during").await;
    assert_eq!(on_a.expect("chan_out").await["data"], json!("during"));
    assert!(!on_a.closed_within(Duration::from_millis(10)).await);

    let _redis = Redis::start(port).expect("redis-server starts again");
    all_say(&c, "ok", Duration::from_secs(10)).await;
    // Resubscribed: node B hears node A's publications again. What B missed meanwhile
    // is lost to it (README, "Several nodes"): the next one it gets is `after`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        publish(&on_a, "after").await;
        if let Some(got) = on_b
            .try_expect("chan_out", Duration::from_millis(500))
            .await
        {
            assert_eq!(got["data"], json!("after"), "{got}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B never heard from node A again after Redis came back"
        );
    }
    create("after").await;
    assert_eq!(
        on_b.expect("db_created").await["data"]["name"],
        json!("after")
    );
    let logs = c.nodes[0].output();
    assert_eq!(
        logs.matches("Redis does not answer").count(),
        1,
        "the outage is logged once: {logs}"
    );
    assert_eq!(logs.matches("Redis answers again").count(), 1, "{logs}");
}
