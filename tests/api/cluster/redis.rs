//! Nodes sharing one PostgreSQL database and one Redis (`--redis-url`): a socket on one
//! node receives what a write, an action or a revocation on another node means for it,
//! and nothing else.
//!
//! Negative checks use one socket's order: events reach a socket in the order its node
//! received them, and each origin publishes in the order it emitted. So once the socket
//! that must not see event X has received an event emitted after X by the same origin
//! (a marker it may see), X will never come.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::Cluster;
use crate::common::Cred;
use crate::sio::Sio;

/// An on-demand action that emits as its input asks.
const EMIT: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  if (userInput.kind === "users") socket.emitUsers(userInput.event, userInput.data, userInput.users);
  if (userInput.kind === "all") socket.emitAll(userInput.event, userInput.data);
  if (userInput.kind === "room") socket.broadcast(userInput.room, userInput.event, userInput.data);
  return { emitted: userInput.kind };
}"#;

/// A cluster of `n` nodes on one Redis with the items and the emitting action.
async fn redis_cluster(n: usize) -> Option<Cluster> {
    super::on_redis(
        n,
        &[
            ("schema/items.json", super::OWNED_ITEMS),
            ("actions/general/onDemand/emit.js", EMIT),
        ],
        &[],
    )
    .await
}

async fn emit(c: &Cluster, i: usize, token: &str, input: Value) {
    c.ok(
        i,
        Method::POST,
        "/1/function/general/emit",
        token,
        Some(input),
    )
    .await;
}

/// Every event `s` received up to the first `event` (which must come), in order.
async fn until(s: &mut Sio, event: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match s.next(left).await {
            Some(crate::sio::Incoming::Event(name, _)) if name == event => return seen,
            Some(crate::sio::Incoming::Event(name, _)) => seen.push(name),
            other => panic!("waiting for `{event}` after {seen:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_write_on_one_node_reaches_the_readers_on_another_and_no_one_else() {
    let Some(c) = redis_cluster(2).await else {
        return;
    };
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let alice = c.user(0, &admin, "alice@cluster.test").await;
    let bob = c.user(0, &admin, "bob@cluster.test").await;
    // Both listen on node B (1) to every row of items; only the owner may read a row.
    let mut alice_b = Sio::with_token(&c.nodes[1].base, &alice).await;
    let mut bob_b = Sio::with_token(&c.nodes[1].base, &bob).await;
    for s in [&mut alice_b, &mut bob_b] {
        assert_eq!(s.call("join", json!("db-items")).await["ok"], json!(true));
    }
    // Alice writes on node A (0).
    c.ok(
        0,
        Method::POST,
        "/1/objects/items",
        &alice,
        Some(json!({ "name": "alice's secret" })),
    )
    .await;
    let created = alice_b.expect("db_created").await;
    assert_eq!(
        created["data"]["name"],
        json!("alice's secret"),
        "{created}"
    );
    // Then Bob writes on A: his own row reaches him on B after Alice's would have.
    c.ok(
        0,
        Method::POST,
        "/1/objects/items",
        &bob,
        Some(json!({ "name": "bob's" })),
    )
    .await;
    let before = until(&mut bob_b, "db_created").await;
    assert!(
        !before.iter().any(|e| e == "db_created"),
        "Bob received Alice's row on node B: {before:?}"
    );
    // And Alice, on B, never gets Bob's row: a later emit to her alone comes first.
    emit(
        &c,
        0,
        &admin,
        json!({ "kind": "users", "event": "mark", "data": 1, "users": ["alice@cluster.test"] }),
    )
    .await;
    let before = until(&mut alice_b, "mark").await;
    assert!(
        !before.iter().any(|e| e == "db_created"),
        "Alice received Bob's row on node B: {before:?}"
    );
}

#[tokio::test]
async fn an_action_on_one_node_emits_to_the_named_users_on_every_node_only() {
    let Some(c) = redis_cluster(2).await else {
        return;
    };
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let (alice_name, alice) = (
        "alice@cluster.test",
        c.user(0, &admin, "alice@cluster.test").await,
    );
    let bob = c.user(1, &admin, "bob@cluster.test").await;
    let mut alice_a = Sio::with_token(&c.nodes[0].base, &alice).await;
    let mut alice_b = Sio::with_token(&c.nodes[1].base, &alice).await;
    let mut bob_b = Sio::with_token(&c.nodes[1].base, &bob).await;
    // A channel member on B, joined there; the broadcast is made on A.
    assert_eq!(bob_b.call("join", json!("room1")).await["ok"], json!(true));

    emit(
        &c,
        0,
        &admin,
        json!({ "kind": "users", "event": "for_alice", "data": { "n": 1 }, "users": [alice_name] }),
    )
    .await;
    assert_eq!(alice_a.expect("for_alice").await, json!({ "n": 1 }));
    assert_eq!(alice_b.expect("for_alice").await, json!({ "n": 1 }));
    emit(
        &c,
        0,
        &admin,
        json!({ "kind": "room", "room": "room1", "event": "in_room", "data": 2 }),
    )
    .await;
    let before = until(&mut bob_b, "in_room").await;
    assert!(
        !before.iter().any(|e| e == "for_alice"),
        "Bob got Alice's emit on node B: {before:?}"
    );
    // Alice is in no channel: a later emit to her alone arrives, `in_room` never did.
    emit(
        &c,
        1,
        &admin,
        json!({ "kind": "users", "event": "mark", "data": 3, "users": [alice_name] }),
    )
    .await;
    for s in [&mut alice_a, &mut alice_b] {
        let before = until(s, "mark").await;
        assert!(
            !before.iter().any(|e| e == "in_room"),
            "Alice got the channel emit: {before:?}"
        );
    }
}

#[tokio::test]
async fn a_sign_out_on_one_node_ends_the_users_sockets_and_tokens_on_the_others() {
    let Some(c) = redis_cluster(2).await else {
        return;
    };
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let alice = c.user(0, &admin, "alice@cluster.test").await;
    let (bob_name, bob) = (
        "bob@cluster.test",
        c.user(0, &admin, "bob@cluster.test").await,
    );
    // Node B has Alice's token in its auth cache before she signs out.
    let (status, _) = c
        .get(1, "/1/objects/items", &Cred::Bearer(alice.clone()))
        .await;
    assert_eq!(status, 200);
    let mut alice_b = Sio::with_token(&c.nodes[1].base, &alice).await;
    let mut bob_b = Sio::with_token(&c.nodes[1].base, &bob).await;

    let (status, body) = c
        .req(
            0,
            Method::GET,
            "/1/user/signout",
            &Cred::Bearer(alice.clone()),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "sign-out: {status} {body}");
    assert!(
        alice_b.closed_within(Duration::from_secs(1)).await,
        "Alice's socket on node B outlived her sign-out on node A by 1 s"
    );
    // Refused on B at once, not when its 5 s cache expires.
    let (status, _) = c
        .get(1, "/1/objects/items", &Cred::Bearer(alice.clone()))
        .await;
    assert_eq!(status, 401, "Alice's old token still works on node B");
    // Bob's socket on B is untouched.
    emit(
        &c,
        0,
        &admin,
        json!({ "kind": "users", "event": "still_here", "data": 1, "users": [bob_name] }),
    )
    .await;
    assert_eq!(bob_b.expect("still_here").await, json!(1));
}

#[tokio::test]
async fn an_action_uploaded_on_one_node_runs_on_the_others_within_a_second() {
    let Some(c) = redis_cluster(2).await else {
        return;
    };
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let code = |v: &str| {
        format!("function backandCallback(userInput) {{ return {{ version: \"{v}\" }}; }}")
    };
    let (status, created) = c
        .req(
            0,
            Method::POST,
            "/1/action/config",
            &Cred::Bearer(admin.clone()),
            Some(json!({ "name": "which", "object": "general", "trigger": "onDemand", "code": code("v1") })),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    let within_a_second = |want: Value| {
        let (c, admin) = (&c, admin.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                let got = which(c, 1, &admin).await;
                if got == (200, want.clone()) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node B still answers {got:?}, not {want}, 1 s after node A's change"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    within_a_second(json!({ "version": "v1" })).await;
    // Replaced on A: B answers with the new version.
    let (status, body) = c
        .req(
            0,
            Method::PUT,
            &format!("/1/action/config/{id}"),
            &Cred::Bearer(admin.clone()),
            Some(json!({ "code": code("v2") })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    within_a_second(json!({ "version": "v2" })).await;
    // Rolled back on A to version 1: B answers with v1's code again.
    let (status, body) = c
        .req(
            0,
            Method::POST,
            &format!("/1/action/config/{id}/rollback"),
            &Cred::Bearer(admin.clone()),
            Some(json!({ "version": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    within_a_second(json!({ "version": "v1" })).await;
    // Deleted on A: B no longer has it.
    let (status, body) = c
        .req(
            0,
            Method::DELETE,
            &format!("/1/action/config/{id}"),
            &Cred::Bearer(admin.clone()),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (status, _) = which(&c, 1, &admin).await;
        if status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B still runs the deleted action ({status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the on-demand action `which` answers on node `i`.
async fn which(c: &Cluster, i: usize, admin: &str) -> (u16, Value) {
    c.req(
        i,
        Method::POST,
        "/1/function/general/which",
        &Cred::Bearer(admin.into()),
        Some(json!({})),
    )
    .await
}
