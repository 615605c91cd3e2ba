//! Every transport on another node than the write: StaticBackend's SSE and WebSocket
//! connections and Sails subscriptions on node B hear of node A's writes exactly as
//! their user may read them (sockets of B's namespace, so the Redis adapter carries
//! them like any other).
//!
//! Each negative check is ordered: the other user's own write, made on A after the
//! first, reaches them first, or the first one leaked.

use reqwest::Method;
use serde_json::{Value, json};

use super::Cluster;
use crate::realtime::staticbackend::{BOTH, Sb};
use crate::realtime::support::req;
use crate::sio::Sio;

async fn write(c: &Cluster, token: &str, name: &str) {
    let body = Some(json!({ "name": name }));
    c.ok(0, Method::POST, "/1/objects/items", token, body).await;
}

/// The row a StaticBackend `db_created` carries (as JSON text).
fn sb_row(message: &Value) -> Value {
    serde_json::from_str(message["data"].as_str().expect("JSON text")).expect("a row")
}

#[tokio::test]
async fn staticbackend_and_sails_clients_on_another_node_get_exactly_their_rows() {
    let Some(c) = super::on_redis(2, &[("schema/items.json", super::OWNED_ITEMS)], &[]).await
    else {
        return;
    };
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let alice = c.user(0, &admin, "alice@cluster.test").await;
    let bob = c.user(0, &admin, "bob@cluster.test").await;
    let b = &c.nodes[1].base;

    for transport in BOTH {
        let what = format!("{transport:?} on node B");
        let mut sa = Sb::connect_to(b, transport).await;
        let mut sb = Sb::connect_to(b, transport).await;
        sa.auth(&alice).await;
        sb.auth(&bob).await;
        for s in [&mut sa, &mut sb] {
            s.command("join", json!("db-items"), "").await;
            assert_eq!(s.expect("joined").await["channel"], json!("db-items"));
        }
        let mine = format!("alice {transport:?}");
        write(&c, &alice, &mine).await;
        assert_eq!(
            sb_row(&sa.expect("db_created").await)["name"],
            json!(mine),
            "{what}"
        );
        let theirs = format!("bob {transport:?}");
        write(&c, &bob, &theirs).await;
        assert_eq!(
            sb_row(&sb.expect("db_created").await)["name"],
            json!(theirs),
            "{what}: Bob's first row event must be his own, not Alice's"
        );
    }

    // Sails list subscriptions on B.
    let mut sails_alice = Sio::with_token(b, &alice).await;
    let mut sails_bob = Sio::with_token(b, &bob).await;
    for s in [&sails_alice, &sails_bob] {
        let listed = req(s, "get", "/items", Value::Null).await;
        assert!(listed.to_string().contains("totalRows"), "{listed}");
    }
    write(&c, &alice, "alice sails").await;
    let got = sails_alice.expect("items").await;
    assert_eq!(
        (&got["verb"], &got["data"]["name"]),
        (&json!("created"), &json!("alice sails")),
        "{got}"
    );
    write(&c, &bob, "bob sails").await;
    let got = sails_bob.expect("items").await;
    assert_eq!(
        (&got["verb"], &got["data"]["name"]),
        (&json!("created"), &json!("bob sails")),
        "Bob's first Sails event must be his own row: {got}"
    );
}
