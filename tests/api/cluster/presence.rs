//! Channel presence across nodes: members on one node hear a user entering on another
//! and list the same members; a node that dies takes its sockets' presence with it, and
//! the members on the other nodes hear them leave within its heartbeat and one sweep.

use std::time::Duration;

use serde_json::{Value, json};

use crate::sio::{Incoming, Sio};

/// The next `presence` announcement `s` gets within `wait`.
async fn next_announcement(s: &mut Sio, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match s.next(left).await {
            Some(Incoming::Event(name, mut args))
                if name == "presence" && args[0].get("event").is_some() =>
            {
                return Some(args.remove(0));
            }
            Some(Incoming::Event(..)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn presence_spans_nodes_and_a_dead_nodes_members_leave() {
    let Some(mut c) = super::on_redis(2, &[("schema/items.json", super::OWNED_ITEMS)], &[]).await
    else {
        return;
    };
    let admin = c
        .sign_in(0, super::ADMIN_EMAIL, super::ADMIN_PASSWORD)
        .await;
    let bob = c.user(0, &admin, "bob@x.test").await;
    let alice = c.user(0, &admin, "alice@x.test").await;
    let mut on_a = Sio::with_token(&c.nodes[0].base, &bob).await;
    assert_eq!(
        on_a.call("join", json!("presence-room")).await["ok"],
        json!(true)
    );
    let me = next_announcement(&mut on_a, Duration::from_secs(5))
        .await
        .unwrap();
    let bob_id = me["member"]["userId"].clone();

    let on_b = Sio::with_token(&c.nodes[1].base, &alice).await;
    assert_eq!(
        on_b.call("join", json!("presence-room")).await["ok"],
        json!(true)
    );
    let heard = next_announcement(&mut on_a, Duration::from_secs(5))
        .await
        .expect("bob on node A hears alice enter on node B");
    assert_eq!(heard["event"], "join");
    let alice_id = heard["member"]["userId"].clone();
    assert_ne!(alice_id, bob_id);
    // Both nodes list both members.
    for s in [&on_a, &on_b] {
        let list = s.call("presence", json!("presence-room")).await;
        let members = list["members"].as_array().unwrap();
        assert_eq!(members.len(), 2, "{list}");
    }

    // Node B dies without a word: within its heartbeat (5 s) and a sweep (2 s), node A
    // takes its sockets away and bob hears alice leave.
    c.nodes[1].stop();
    let left = next_announcement(&mut on_a, Duration::from_secs(15))
        .await
        .expect("alice's departure is announced after her node died");
    assert_eq!(
        left,
        json!({ "channel": "presence-room", "event": "leave", "member": { "userId": alice_id } })
    );
    let list = on_a.call("presence", json!("presence-room")).await;
    assert_eq!(list["members"], json!([{ "userId": bob_id }]), "{list}");
    drop(on_b);
}
