//! StaticBackend channels: echo, join, chan_in → chan_out, leave, name checks, and the
//! refusal to publish into `db-` channels.

use serde_json::{Value, json};

use super::start;
use super::support::*;
use crate::common::backends;

// ---------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn channels_echo_join_publish_leave() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;
        let mut sb = app.socket(&bob.token).await;
        let mut sc = app.socket(&bob.token).await; // same user, not a member

        // echo: with an ack the data comes back as the ack, without one as an event.
        let data = json!({ "n": 1, "list": [1, "two", null], "nested": { "ok": true } });
        assert_eq!(sa.call("echo", data.clone()).await, data);
        assert_eq!(sa.call("echo", json!("text")).await, json!("text"));
        sa.emit("echo", &[json!("hi")]);
        assert_eq!(sa.expect("echo").await, json!("hi"));
        sa.assert_none(&app, "echo").await; // the acked echoes sent no event

        // join: `joined` event without an ack, `{ok: true}` ack with one.
        sa.emit("join", &[json!("room-1")]);
        assert_eq!(sa.expect("joined").await, json!("room-1"));
        let ack = sb.call("join", json!({ "channel": "room-1" })).await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        assert_eq!(ack["channel"], json!("room-1"), "{ack}");
        let b_public = ack["sid"]
            .as_str()
            .expect("the join ack carries the public id")
            .to_string();
        assert_ne!(b_public, sb.sid, "the public id is not the session id");
        sb.assert_none(&app, "joined").await;
        sc.emit("join", &[json!("room-2")]);
        assert_eq!(sc.expect("joined").await, json!("room-2"));

        // chan_in from a member: every member gets it, the sender included.
        let ack = sa
            .call(
                "chan_in",
                json!({ "channel": "room-1", "data": { "m": 1 } }),
            )
            .await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        // The sender's public id (as its own join ack tells it), never its session id.
        let sender = sa.call("join", json!("room-1")).await["sid"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!sender.is_empty());
        assert_ne!(sender, sa.sid);
        for s in [&mut sa, &mut sb] {
            let got = s.expect("chan_out").await;
            assert_eq!(
                got,
                json!({ "channel": "room-1", "data": { "m": 1 }, "sid": sender })
            );
        }
        sa.assert_none(&app, "chan_out").await; // exactly once
        sc.assert_none(&app, "chan_out").await; // not a member of room-1

        // chan_in from a non-member (no ack): members get it with its sid, it does not.
        let c_public = sc.call("join", json!("room-2")).await["sid"].clone();
        assert!(c_public.is_string() && c_public != json!(sc.sid));
        sc.emit(
            "chan_in",
            &[json!({ "channel": "room-1", "data": "from c" })],
        );
        for s in [&mut sa, &mut sb] {
            let got = s.expect("chan_out").await;
            assert_eq!(got["channel"], "room-1");
            assert_eq!(got["data"], "from c");
            assert_eq!(got["sid"], c_public);
        }
        sc.assert_none(&app, "chan_out").await;
        // The sid is the sender's.
        sb.call("chan_in", json!({ "channel": "room-1", "data": 2 }))
            .await;
        assert_eq!(sa.expect("chan_out").await["sid"], json!(b_public));
        assert_eq!(sb.expect("chan_out").await["sid"], json!(b_public));

        // A channel's messages stay in that channel.
        sc.call("chan_in", json!({ "channel": "room-2", "data": "two" }))
            .await;
        let got = sc.expect("chan_out").await;
        assert_eq!(
            (got["channel"].clone(), got["sid"].clone()),
            (json!("room-2"), c_public.clone())
        );
        sa.assert_none(&app, "chan_out").await;
        sb.assert_none(&app, "chan_out").await;

        // leave without an ack: an `ok` event; then nothing more from room-1.
        sa.emit("leave", &[json!("room-1")]);
        let ok = sa.expect("ok").await;
        assert_eq!(ok, json!({ "event": "leave", "channel": "room-1" }));
        sb.call("chan_in", json!({ "channel": "room-1", "data": 3 }))
            .await;
        assert_eq!(sb.expect("chan_out").await["data"], json!(3));
        sa.assert_none(&app, "chan_out").await;

        // leave with an ack; leaving twice is harmless.
        let ack = sb.call("leave", json!({ "channel": "room-1" })).await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        assert_eq!(sb.call("leave", json!("room-1")).await["ok"], json!(true));
        sc.call("chan_in", json!({ "channel": "room-1", "data": 4 }))
            .await;
        sc.call("chan_in", json!({ "channel": "room-2", "data": "witness" }))
            .await;
        assert_eq!(sc.expect("chan_out").await["data"], "witness");
        sa.assert_none(&app, "chan_out").await;
        sb.assert_none(&app, "chan_out").await;

        // Joining again works, and `data` may be absent (null).
        sa.call("join", json!("room-1")).await;
        sb.call("chan_in", json!({ "channel": "room-1" })).await;
        let got = sa.expect("chan_out").await;
        assert_eq!(got["data"], Value::Null, "{got}");
        assert_eq!(got["sid"], json!(b_public));

        // Boundary names are accepted.
        let longest = "x".repeat(100);
        for name in [longest.as_str(), "a-b_c.d:e@f", "1"] {
            let ack = sa.call("join", json!(name)).await;
            assert_eq!(ack["ok"], json!(true), "{name}: {ack}");
        }
    }
}

#[tokio::test]
async fn channels_refuse_invalid_names() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;
        let mut member = app.socket(&alice.token).await;
        let long = "y".repeat(101);

        // (name, a word the message must contain)
        let bad_names: Vec<(Value, &str)> = vec![
            (json!(""), "1 to 100"),
            (json!(long), "1 to 100"),
            (json!("room 1"), "` `"),
            (json!("<script>"), "`<`"),
            (json!("a/b"), "`/`"),
            (json!("é"), "letters"),
            (json!("tab\there"), "letters"),
            (json!(5), "channel name"),
            (json!(true), "channel name"),
            (json!(["room-1"]), "channel name"),
            (json!({}), "channel name"),
            (json!({ "channel": 5 }), "channel name"),
            (json!({ "name": "room-1" }), "channel name"),
            (json!({ "channel": "" }), "1 to 100"),
            (json!({ "channel": "<script>" }), "`<`"),
            (json!(null), "channel name"),
        ];
        for (name, word) in &bad_names {
            for event in ["join", "leave"] {
                let ack = sa.call(event, name.clone()).await;
                let e = ack_error(&ack, &format!("{event} {name}"));
                assert!(e.contains(word), "{event} {name}: `{word}` in {e}");
                sa.emit(event, std::slice::from_ref(name));
                let m = error_event(&mut sa, event, &format!("{event} {name} without ack")).await;
                assert_eq!(m, e, "ack and event say the same");
            }
            // chan_in with the name as its channel.
            let message = match name {
                Value::Object(_) => name.clone(),
                other => json!({ "channel": other, "data": 1 }),
            };
            let e = ack_error(
                &sa.call("chan_in", message.clone()).await,
                &format!("chan_in {message}"),
            );
            if name.is_string() || name.get("channel").is_some_and(Value::is_string) {
                assert!(e.contains(word), "chan_in {message}: `{word}` in {e}");
            }
        }
        // Missing argument entirely.
        for event in ["join", "leave", "chan_in"] {
            sa.emit(event, &[]);
            error_event(&mut sa, event, &format!("{event} with no argument")).await;
        }
        // chan_in without a channel, or with a non-object.
        for message in [
            json!({ "data": 1 }),
            json!("room-1"),
            json!(["room-1", 1]),
            json!(7),
        ] {
            let e = ack_error(
                &sa.call("chan_in", message.clone()).await,
                &format!("chan_in {message}"),
            );
            assert!(e.contains("{channel, data}"), "{e}");
        }

        // None of those joined anything: a member of a valid channel hears only valid
        // traffic, and the refused socket receives nothing from a channel it never joined.
        member.call("join", json!("room-1")).await;
        member
            .call("chan_in", json!({ "channel": "room-1", "data": "only" }))
            .await;
        assert_eq!(member.expect("chan_out").await["data"], "only");
        member.assert_none(&app, "chan_out").await;
        sa.assert_none(&app, "chan_out").await;
        sa.assert_none(&app, "joined").await;
    }
}

#[tokio::test]
async fn channels_refuse_publishing_into_db_channels() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut member = app.socket(&alice.token).await;
        let mut sb = app.socket(&bob.token).await;
        assert_eq!(
            member.call("join", json!("db-posts")).await["ok"],
            json!(true)
        );
        assert_eq!(sb.call("join", json!("db-posts")).await["ok"], json!(true));

        // From a member and from a non-member, with and without an ack.
        let fake = json!({ "channel": "db-posts", "data": { "id": 1, "title": "forged" } });
        for s in [&sb, &member] {
            let e = ack_error(&s.call("chan_in", fake.clone()).await, "chan_in db-posts");
            assert!(e.contains("cannot publish into database channel"), "{e}");
            assert!(e.contains("db-posts"), "{e}");
        }
        sb.emit("chan_in", std::slice::from_ref(&fake));
        let m = error_event(&mut sb, "chan_in", "chan_in db-posts without ack").await;
        assert!(m.contains("cannot publish into database channel"), "{m}");
        // Also a db channel of no object, and the db_ event names as plain events.
        let e = ack_error(
            &sb.call("chan_in", json!({ "channel": "db-nothing", "data": 1 }))
                .await,
            "chan_in db-nothing",
        );
        assert!(e.contains("cannot publish"), "{e}");
        sb.emit(
            "db_created",
            &[json!({ "channel": "db-posts", "data": { "id": 1 } })],
        );
        let m = error_event(&mut sb, "db_created", "db_created from a client").await;
        assert!(m.contains("unknown event"), "{m}");

        for s in [&mut member, &mut sb] {
            s.assert_none(&app, "chan_out").await;
            s.assert_none(&app, "db_created").await;
        }

        // The channel itself still works for real changes.
        let id = rest_create(&app, "posts", &alice.cred(), "real").await;
        for s in [&mut member, &mut sb] {
            let got = s.expect("db_created").await;
            assert_eq!(got["channel"], "db-posts");
            assert_eq!(got["data"]["id"], json!(id));
            assert_eq!(got["data"]["title"], "real");
        }
        assert_eq!(
            titles(&app, "posts").await,
            ["real"],
            "nothing forged was written"
        );

        // Joining the db channel of a missing object is refused with a reason.
        let e = ack_error(
            &sb.call("join", json!("db-nothing")).await,
            "join db-nothing",
        );
        assert!(e.contains("nothing"), "{e}");
    }
}

/// A client that emits the moment it is connected (socket.io clients flush their
/// buffered emits on `connect`) must be answered: socketioxide runs an async connect
/// handler as a task spawned after the CONNECT answer, so the handlers are put in place
/// by the connect middleware, before it. Many sockets at once, each sending `join` in
/// the same task that read the CONNECT answer, on a multi-threaded runtime, keep the
/// server busy enough to expose the race, sometimes: it is timing-bound, so a run can
/// pass without that ordering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_sent_the_instant_the_socket_connects_is_answered() {
    let backend = crate::common::Backend::Sqlite;
    let app = start(&backend).await;
    let alice = app.user("alice@x.test", "User").await;
    let base = app.base.clone();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (base, token) = (base.clone(), alice.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = crate::sio::raw_v5(&base, json!({ "token": token }))
                .await
                .expect("connects");
            crate::sio::send(&mut ws, &format!(r#"42["join","fast-{i}"]"#)).await;
            let mut seen = Vec::new();
            // One deadline for the answer: heartbeats must not extend it.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match crate::sio::next_frame(&mut ws, left).await {
                    Some(f) if f.starts_with(r#"42["joined""#) => return None,
                    Some(f) if f == "2" => crate::sio::send(&mut ws, "3").await,
                    Some(f) => seen.push(f),
                    None => return Some(seen),
                }
            }
        }));
    }
    let mut unanswered = Vec::new();
    for task in tasks {
        if let Some(seen) = task.await.unwrap() {
            unanswered.push(seen);
        }
    }
    assert!(
        unanswered.is_empty(),
        "{} joins sent right after connecting got no `joined`; frames they got instead: {:?}",
        unanswered.len(),
        unanswered.iter().take(3).collect::<Vec<_>>()
    );
}
