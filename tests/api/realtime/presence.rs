//! Channel presence: a user's first socket entering a `presence-` channel is announced
//! to its members (`presence` `{channel, event: "join", member}`), its last one leaving too;
//! members (only) can ask who is there; members are user ids, never emails or socket
//! session ids; `db-` channels have none; a flapping member is refused before it floods.

use std::time::Duration;

use serde_json::{Value, json};

use super::start;
use crate::common::{ANON, backends};
use crate::sio::Sio;

/// The `presence` announcements `s` received before the next barrier.
async fn announcements(app: &crate::common::TestApp, s: &mut Sio) -> Vec<Value> {
    let marker = app.barrier().await;
    s.until_barrier(&marker)
        .await
        .into_iter()
        .filter(|(name, args)| name == "presence" && args[0].get("event").is_some())
        .map(|(_, mut args)| args.remove(0))
        .collect()
}

#[tokio::test]
async fn members_see_who_joins_and_leaves_by_user_id_and_only_once_per_user() {
    for backend in backends() {
        let name = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let carol = app.user("carol@x.test", "User").await;
        let mut b1 = app.socket(&bob.token).await;
        assert_eq!(
            b1.call("join", json!("presence-room")).await["ok"],
            json!(true)
        );
        let got = announcements(&app, &mut b1).await;
        assert_eq!(
            got,
            [
                json!({ "channel": "presence-room", "event": "join", "member": { "userId": bob.id } })
            ],
            "{name}: a member hears itself enter"
        );

        let a1 = app.socket(&alice.token).await;
        let a2 = app.socket(&alice.token).await;
        assert_eq!(
            a1.call("join", json!("presence-room")).await["ok"],
            json!(true)
        );
        assert_eq!(
            a2.call("join", json!("presence-room")).await["ok"],
            json!(true)
        );
        let got = announcements(&app, &mut b1).await;
        assert_eq!(
            got,
            [
                json!({ "channel": "presence-room", "event": "join", "member": { "userId": alice.id } })
            ],
            "{name}: alice's second socket is not announced again"
        );

        // The list: members only, user ids only.
        let list = b1.call("presence", json!("presence-room")).await;
        let mut ids: Vec<i64> = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["userId"].as_i64().unwrap())
            .collect();
        ids.sort();
        let mut want = vec![alice.id, bob.id];
        want.sort();
        assert_eq!(ids, want, "{name}: {list}");
        assert_eq!(list["truncated"], json!(false));
        assert!(!list.to_string().contains('@'), "{name}: no email: {list}");
        let mut c = app.socket(&carol.token).await;
        let refused = c.call("presence", json!("presence-room")).await;
        assert!(
            refused["error"].as_str().unwrap().contains("join"),
            "{name}: a non-member may not list: {refused}"
        );
        let refused = b1.call("presence", json!("db-posts")).await;
        assert!(refused["error"].is_string(), "{name}: {refused}");
        // Other channels have none: no announcements, no list.
        assert_eq!(c.call("join", json!("plain")).await["ok"], json!(true));
        assert_eq!(b1.call("join", json!("plain")).await["ok"], json!(true));
        let refused = b1.call("presence", json!("plain")).await;
        assert!(
            refused["error"].as_str().unwrap().contains("presence-"),
            "{name}: {refused}"
        );
        // Not a member of room: carol hears nothing of it.
        assert!(announcements(&app, &mut c).await.is_empty());

        // One of alice's sockets leaves: she is still there. The other disconnects: she
        // left.
        let left = a1.call("leave", json!("presence-room")).await;
        assert_eq!(left["ok"], json!(true), "{left}");
        assert!(
            announcements(&app, &mut b1).await.is_empty(),
            "{name}: alice still has a socket in room"
        );
        drop(a2);
        let mut heard = Vec::new();
        for _ in 0..50 {
            heard.extend(announcements(&app, &mut b1).await);
            if !heard.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            heard,
            [
                json!({ "channel": "presence-room", "event": "leave", "member": { "userId": alice.id } })
            ],
            "{name}"
        );
        let list = b1.call("presence", json!("presence-room")).await;
        assert_eq!(
            list["members"],
            json!([{ "userId": bob.id }]),
            "{name}: {list}"
        );
        drop(a1);
        app.stop().await;
    }
}

#[tokio::test]
async fn anonymous_members_are_their_socket_and_identity_changes_leave() {
    let backend = &backends()[0];
    let app = start(backend).await;
    let bob = app.user("bob@x.test", "User").await;
    let alice = app.user("alice@x.test", "User").await;
    let mut b = app.socket(&bob.token).await;
    assert_eq!(
        b.call("join", json!("presence-lobby")).await["ok"],
        json!(true)
    );
    announcements(&app, &mut b).await;

    let anon = Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON })))
        .await
        .unwrap();
    let ack = anon.call("join", json!("presence-lobby")).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    let got = announcements(&app, &mut b).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["member"]["userId"], json!(null));
    assert_eq!(
        got[0]["member"]["sid"], ack["sid"],
        "the public id, as chan_out shows it"
    );

    // Alice's socket in lobby authenticates as bob: alice left the lobby (and bob's
    // rooms start empty: it must join again).
    let mut a = app.socket(&alice.token).await;
    assert_eq!(
        a.call("join", json!("presence-lobby")).await["ok"],
        json!(true)
    );
    let got = announcements(&app, &mut b).await;
    assert_eq!(got[0]["member"]["userId"], json!(alice.id), "{got:?}");
    a.emit(
        "login",
        &[json!(format!("Bearer {}", bob.token)), json!(""), json!("")],
    );
    a.expect("authorized").await;
    let mut heard = Vec::new();
    for _ in 0..50 {
        heard.extend(announcements(&app, &mut b).await);
        if !heard.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        heard,
        [
            json!({ "channel": "presence-lobby", "event": "leave", "member": { "userId": alice.id } })
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_flapping_member_is_refused_before_it_floods_a_channel() {
    let backend = &backends()[0];
    let app = start(backend).await;
    let alice = app.user("alice@x.test", "User").await;
    let bob = app.user("bob@x.test", "User").await;
    let mut b = app.socket(&bob.token).await;
    assert_eq!(
        b.call("join", json!("presence-room")).await["ok"],
        json!(true)
    );
    announcements(&app, &mut b).await;
    let a = app.socket(&alice.token).await;
    let mut refused = None;
    for i in 0..30 {
        let ack = a.call("join", json!("presence-room")).await;
        if ack["ok"] != json!(true) {
            refused = Some((i, ack));
            break;
        }
        assert_eq!(
            a.call("leave", json!("presence-room")).await["ok"],
            json!(true)
        );
    }
    let (at, ack) = refused.expect("flapping is refused");
    assert_eq!(at, 20, "after 20 entries in the window: {ack}");
    assert!(
        ack["error"].as_str().unwrap().contains("too often"),
        "{ack}"
    );
    // Reconnecting does not reset it: the limit is the member's, not the socket's.
    let again = app.socket(&alice.token).await;
    let ack = again.call("join", json!("presence-room")).await;
    assert!(
        ack["error"]
            .as_str()
            .is_some_and(|e| e.contains("too often")),
        "{ack}"
    );
    let heard = announcements(&app, &mut b).await;
    assert_eq!(
        heard.len(),
        40,
        "20 joins and 20 leaves, no more: {}",
        heard.len()
    );
    drop((a, again));
    app.stop().await;
}
