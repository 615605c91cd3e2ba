//! Bad input on every socket event: wrong types, missing arguments, unknown events,
//! malformed frames, oversized messages. The server stays up and other sockets are
//! unaffected.

use std::time::Duration;

use serde_json::{Value, json};

use super::start;
use super::support::*;
use crate::common::{Cred, backends};
use crate::sio::Incoming;

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_event_answers_bad_arguments_and_the_socket_keeps_working() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;

        // Wrong types.
        for (event, arg) in [
            ("join", json!(42)),
            ("join", json!({ "room": "room-1" })),
            ("leave", json!(4.5)),
            ("chan_in", json!("a string")),
            ("chan_in", json!(null)),
            ("chan_in", json!({ "channel": ["room-1"], "data": 1 })),
        ] {
            let e = ack_error(
                &sa.call(event, arg.clone()).await,
                &format!("{event} {arg}"),
            );
            assert!(e.contains("expect"), "{event} {arg}: {e}");
            sa.emit(event, std::slice::from_ref(&arg));
            error_event(&mut sa, event, &format!("{event} {arg} without ack")).await;
        }
        // Login / authentication with nonsense: refused, and the socket keeps its identity.
        for args in [
            vec![json!({ "a": 1 })],
            vec![json!(1), json!(2), json!(3)],
            vec![json!([])],
            vec![json!("Bearer not-a-token")],
            vec![],
        ] {
            sa.emit("login", &args);
            let got = sa.expect("notAuthorized").await;
            assert!(
                got["message"].as_str().is_some_and(|m| !m.is_empty()),
                "login {args:?}: {got}"
            );
        }
        for args in [
            vec![json!({ "a": 1 })],
            vec![json!("token")],
            vec![json!({ "id": 5 })],
            vec![],
        ] {
            sa.emit("authentication", &args);
            let got = sa.expect("unauthorized").await;
            assert!(
                got["message"].as_str().is_some_and(|m| !m.is_empty()),
                "authentication {args:?}: {got}"
            );
        }
        sa.assert_none(&app, "authorized").await;
        still_works(&app, &sa, "after refused logins").await;

        // Missing arguments.
        for event in ["join", "leave", "chan_in"] {
            sa.emit(event, &[]);
            error_event(&mut sa, event, &format!("{event} without arguments")).await;
        }
        for verb in ["get", "post", "put", "patch", "delete"] {
            sa.emit(verb, &[]);
            let m = error_event(&mut sa, verb, &format!("{verb} without arguments")).await;
            assert!(m.starts_with("400"), "{verb}: {m}");
        }
        sa.emit("echo", &[]);
        assert_eq!(
            sa.expect("echo").await,
            Value::Null,
            "echo of nothing is null"
        );

        // Unknown events, with and without an ack.
        for name in [
            "bogus",
            "__proto__",
            "chan_out",
            "joined",
            "<script>",
            "disconnect",
            "connect",
            "error",
            "get_x",
            "",
        ] {
            sa.emit(name, &[json!(1)]);
            let m = error_event(&mut sa, name, &format!("unknown `{name}`")).await;
            assert!(m.contains("unknown event"), "{m}");
            assert!(m.contains(name), "the message names the event: {m}");
            let e = ack_error(&sa.call(name, json!({ "x": 1 })).await, name);
            assert!(e.contains("unknown event"), "{e}");
        }
        sa.emit("bogus", &[]);
        error_event(&mut sa, "bogus", "unknown event without arguments").await;

        // An unauthenticated socket is told to authenticate, for every command.
        let mut anon = unauthenticated(&app).await;
        for (event, arg) in [
            ("echo", json!("x")),
            ("join", json!("room-1")),
            ("leave", json!("room-1")),
            ("chan_in", json!({ "channel": "room-1", "data": 1 })),
        ] {
            let e = ack_error(&anon.call(event, arg.clone()).await, event);
            assert!(e.contains("authenticate"), "{event}: {e}");
            anon.emit(event, &[arg]);
            error_event(&mut anon, event, &format!("unauthenticated {event}")).await;
        }
        // It joined nothing: a publish into room-1 does not reach it.
        sa.call("join", json!("room-1")).await;
        sa.call(
            "chan_in",
            json!({ "channel": "room-1", "data": "members only" }),
        )
        .await;
        assert_eq!(sa.expect("chan_out").await["data"], "members only");
        let leaked: Vec<_> = anon
            .drain(Duration::from_millis(300))
            .await
            .into_iter()
            .filter(|i| matches!(i, Incoming::Event(name, _) if name == "chan_out"))
            .collect();
        assert!(leaked.is_empty(), "unauthenticated socket got {leaked:?}");

        still_works(&app, &sa, "after all bad input").await;
        let mut fresh = app.socket(&alice.token).await;
        ok_body(
            &req(&fresh, "get", "/posts", Value::Null).await,
            "fresh lists",
        );
        let id = rest_create(&app, "posts", &alice.cred(), "after").await;
        let got = fresh.expect("posts").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("created"), json!(id))
        );
    }
}

#[tokio::test]
async fn malformed_frames_do_not_hurt_other_sockets() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut bystander = app.socket(&alice.token).await;
        bystander.call("join", json!("room-1")).await;
        ok_body(
            &req(&bystander, "get", "/posts", Value::Null).await,
            "bystander lists",
        );

        // Frames that are not valid Socket.IO packets: the server drops that connection
        // (socketioxide closes on a packet parsing error), and only that one.
        for frame in [
            "42[not json",
            "42{\"a\":1}",
            "4z",
            "42[]",
            "42[1,2]",
            "49[\"x\"]",
            "4",
            "x",
        ] {
            let mut victim = app.socket(&alice.token).await;
            victim.send_raw(frame);
            assert!(
                victim.closed_within(Duration::from_secs(3)).await,
                "frame {frame:?} closes that connection"
            );
            bystander
                .call("chan_in", json!({ "channel": "room-1", "data": frame }))
                .await;
            assert_eq!(bystander.expect("chan_out").await["data"], json!(frame));
        }
        // A member of room-1 sending invalid JSON is closed too, and leaves the room.
        let mut victim = app.socket(&alice.token).await;
        victim.call("join", json!("room-1")).await;
        victim.send_raw("42[not json");
        assert!(
            victim.closed_within(Duration::from_secs(3)).await,
            "a frame that is not a Socket.IO packet ends that connection"
        );

        still_works(&app, &bystander, "bystander after malformed frames").await;
        // The bystander still gets change events; the closed victim is gone from room-1.
        let id = rest_create(&app, "posts", &alice.cred(), "after").await;
        assert_eq!(bystander.expect("posts").await["id"], json!(id));
        bystander
            .call("chan_in", json!({ "channel": "room-1", "data": "last" }))
            .await;
        assert_eq!(bystander.expect("chan_out").await["data"], "last");

        let mut fresh = app.socket(&alice.token).await;
        ok_body(
            &req(&fresh, "get", "/posts", Value::Null).await,
            "fresh lists",
        );
        let id = rest_create(&app, "posts", &alice.cred(), "fresh").await;
        assert_eq!(fresh.expect("posts").await["id"], json!(id));
    }
}

#[tokio::test]
async fn oversized_messages_close_only_that_socket() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut bystander = app.socket(&alice.token).await;
        bystander.call("join", json!("big")).await;
        ok_body(
            &req(&bystander, "get", "/posts", Value::Null).await,
            "bystander lists",
        );

        // Under the 1 MiB limit: delivered.
        let under = "u".repeat(512 * 1024);
        let sender = app.socket(&alice.token).await;
        assert_eq!(
            sender
                .call("chan_in", json!({ "channel": "big", "data": under }))
                .await["ok"],
            json!(true)
        );
        assert_eq!(
            bystander.expect("chan_out").await["data"]
                .as_str()
                .map(str::len),
            Some(under.len())
        );

        // 2 MiB in chan_in: that socket is disconnected and nothing is delivered.
        let huge = "h".repeat(2 * 1024 * 1024);
        let mut victim = app.socket(&alice.token).await;
        victim.emit("chan_in", &[json!({ "channel": "big", "data": huge })]);
        let chan_in_closed = victim.closed_within(Duration::from_secs(5)).await;

        // 2 MiB in a Sails post: disconnected, nothing written.
        let mut victim2 = app.socket(&alice.token).await;
        victim2.emit(
            "post",
            &[json!({ "url": "/posts", "data": { "title": huge } })],
        );
        let post_closed = victim2.closed_within(Duration::from_secs(5)).await;

        // The server stays up: REST answers, other sockets work, events still flow.
        let (status, _) = app.get("/healthz", &Cred::None).await;
        assert_eq!(status, 200);
        still_works(&app, &bystander, "bystander after oversized messages").await;
        let id = rest_create(&app, "posts", &alice.cred(), "small").await;
        let got = bystander.expect("posts").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("created"), json!(id))
        );
        let mut fresh = app.socket(&alice.token).await;
        fresh.call("join", json!("big")).await;
        fresh
            .call("chan_in", json!({ "channel": "big", "data": "fine" }))
            .await;
        assert_eq!(fresh.expect("chan_out").await["data"], "fine");
        assert_eq!(
            titles(&app, "posts").await,
            ["small"],
            "the oversized post wrote nothing"
        );

        assert!(
            chan_in_closed,
            "a 2 MiB chan_in (limit 1 MiB) must close that socket"
        );
        assert!(
            post_closed,
            "a 2 MiB post (limit 1 MiB) must close that socket"
        );
        // The bystander got "fine" and never the oversized message.
        let marker = app.barrier().await;
        let sizes: Vec<usize> = bystander
            .until_barrier(&marker)
            .await
            .into_iter()
            .filter(|(name, _)| name == "chan_out")
            .map(|(_, args)| args[0]["data"].as_str().map_or(0, str::len))
            .collect();
        assert_eq!(
            sizes,
            ["fine".len()],
            "chan_out sizes the bystander received"
        );
    }
}
