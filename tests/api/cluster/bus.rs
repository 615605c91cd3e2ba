//! The cluster bus (PostgreSQL `LISTEN/NOTIFY`), without Redis: what one node, or the
//! offline `livebase admin reset-password`, revokes ends the user's sockets on every
//! node, so revocation never depends on Redis being there.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::Cluster;
use crate::common::Cred;
use crate::sio::Sio;

/// Two nodes on one database, no Redis: their sockets are their own, the bus is shared.
async fn pair() -> Option<(Cluster, String, String)> {
    let c = Cluster::start(2, &[], &[]).await?;
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let password = "alice-password-0123";
    let (status, body) = c
        .req(
            0,
            Method::POST,
            "/1/objects/users",
            &Cred::Bearer(admin.clone()),
            Some(json!({ "email": "alice@cluster.test", "password": password, "role": "User", "firstName": "A" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let alice = c.sign_in(1, "alice@cluster.test", password).await;
    Some((c, admin, alice))
}

#[tokio::test]
async fn a_sign_out_on_one_node_ends_the_sockets_on_another_without_redis() {
    let Some((c, admin, alice)) = pair().await else {
        return;
    };
    let mut alice_b = Sio::with_token(&c.nodes[1].base, &alice).await;
    let admin_b = Sio::with_token(&c.nodes[1].base, &admin).await;
    let (status, _) = c
        .req(
            0,
            Method::GET,
            "/1/user/signout",
            &Cred::Bearer(alice),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status}");
    assert!(
        alice_b.closed_within(Duration::from_secs(1)).await,
        "Alice's socket on node B outlived her sign-out on node A by 1 s"
    );
    // Only hers: the Admin's socket on B still answers.
    assert_eq!(
        admin_b.call("join", json!("room1")).await["ok"],
        json!(true)
    );
}

#[tokio::test]
async fn the_offline_reset_password_ends_the_users_sockets_on_every_node() {
    let Some((c, admin, alice)) = pair().await else {
        return;
    };
    let mut on_a = Sio::with_token(&c.nodes[0].base, &alice).await;
    let mut on_b = Sio::with_token(&c.nodes[1].base, &alice).await;
    let admin_a = Sio::with_token(&c.nodes[0].base, &admin).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_livebase"))
        .args(["--database-url", c.flag("--database-url").unwrap()])
        .args(["admin", "reset-password", "alice@cluster.test"])
        .args(["--password", "a-new-password-0123"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for (node, s) in [("A", &mut on_a), ("B", &mut on_b)] {
        assert!(
            s.closed_within(Duration::from_secs(1)).await,
            "Alice's socket on node {node} outlived the offline reset by 1 s"
        );
    }
    // Her old token is refused at once on both nodes, the new password signs in.
    for i in 0..2 {
        let (status, _) = c
            .get(i, "/1/objects/users", &Cred::Bearer(alice.clone()))
            .await;
        assert_eq!(status, 401, "node {i} still takes the old token");
    }
    c.sign_in(1, "alice@cluster.test", "a-new-password-0123")
        .await;
    assert_eq!(
        admin_a.call("join", json!("room1")).await["ok"],
        json!(true)
    );
}

#[tokio::test]
async fn a_user_deleted_or_demoted_on_one_node_loses_their_sockets_on_another_without_redis() {
    let Some((c, admin, alice)) = pair().await else {
        return;
    };
    let (status, body) = c
        .get(1, "/1/objects/users?filter=[{\"fieldName\":\"email\",\"operator\":\"equals\",\"value\":\"alice@cluster.test\"}]", &Cred::Bearer(admin.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"][0]["id"].as_i64().expect("alice's id");

    // Demoted on A: her socket on B was let in as a User, so it ends.
    let mut on_b = Sio::with_token(&c.nodes[1].base, &alice).await;
    let (status, body) = c
        .req(
            0,
            Method::PUT,
            &format!("/1/objects/users/{id}"),
            &Cred::Bearer(admin.clone()),
            Some(json!({ "role": "ReadOnly" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        on_b.closed_within(Duration::from_secs(1)).await,
        "Alice's socket on node B outlived her role change on node A by 1 s"
    );

    // Deleted on A: a new socket of hers on B ends too, and her token is refused there.
    let fresh = c
        .sign_in(1, "alice@cluster.test", "alice-password-0123")
        .await;
    let mut on_b = Sio::with_token(&c.nodes[1].base, &fresh).await;
    let (status, body) = c
        .req(
            0,
            Method::DELETE,
            &format!("/1/objects/users/{id}"),
            &Cred::Bearer(admin.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        on_b.closed_within(Duration::from_secs(1)).await,
        "a deleted user's socket on node B outlived the deletion on node A by 1 s"
    );
    let (status, _) = c.get(1, "/1/objects/users", &Cred::Bearer(fresh)).await;
    assert_eq!(status, 401, "node B still takes a deleted user's token");
}
