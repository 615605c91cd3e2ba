//! Who receives what: `db-<object>` channels, LoopBack names, writes from any source,
//! identity-room emits (`emitUsers` / `emitRole` / `emitAll` / `broadcast`) and `leave`.
//!
//! Every positive expectation is paired with a negative one: a socket that must not get
//! an event is checked with a barrier (`Sio::assert_none`) after a socket that must get
//! it did, so "nothing arrived" means "nothing will arrive".

use std::time::Duration;

use serde_json::{Value, json};

use super::{id_of, start};
use crate::common::{ANON, TestApp, backends, master};
use crate::sio::{Incoming, Sio};

/// A socket with a name for failure messages.
struct Actor {
    name: &'static str,
    s: Sio,
}

impl Actor {
    async fn new(app: &TestApp, name: &'static str, token: &str) -> Actor {
        Actor {
            name,
            s: app.socket(token).await,
        }
    }

    /// The anonymous `Guest` socket (role `Public`).
    async fn guest(app: &TestApp, name: &'static str) -> Actor {
        let s = Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON })))
            .await
            .expect("anonymous socket connects");
        Actor { name, s }
    }
}

/// What a `join` must answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Join {
    /// `{ok: true, channel}`.
    Ok,
    /// `{error}` saying the role may not read the object.
    Refused,
    /// The socket does not join at all.
    Skip,
}

async fn join(actor: &Actor, channel: &str, want: Join, ctx: &str) {
    if want == Join::Skip {
        return;
    }
    let ack = actor.s.call("join", json!(channel)).await;
    match want {
        Join::Ok => {
            assert_eq!(
                crate::common::without_sid(&ack),
                json!({ "ok": true, "channel": channel }),
                "{ctx}: {} joining {channel}",
                actor.name
            );
        }
        Join::Refused => {
            let message = ack["error"].as_str().unwrap_or_else(|| {
                panic!(
                    "{ctx}: {} joining {channel} must be refused with {{error}}, got {ack}",
                    actor.name
                )
            });
            assert!(
                message.contains("may not read"),
                "{ctx}: {} joining {channel}: refusal must say it may not read: {message}",
                actor.name
            );
            assert!(ack.get("ok").is_none(), "{ctx}: {ack}");
        }
        Join::Skip => unreachable!(),
    }
}

/// Every actor marked in `receives` gets `event` exactly once, checked by `check`; every
/// other actor gets none.
async fn delivered(
    app: &TestApp,
    actors: &mut [Actor],
    receives: &[bool],
    event: &str,
    ctx: &str,
    check: impl Fn(&str, &Value),
) {
    assert_eq!(actors.len(), receives.len(), "{ctx}: table width");
    for (actor, &wanted) in actors.iter_mut().zip(receives) {
        if wanted {
            let got = actor.s.expect(event).await;
            check(&format!("{ctx}: {} `{event}`", actor.name), &got);
        }
    }
    // For a receiver this means "no second copy"; for the others "none at all".
    for actor in actors.iter_mut() {
        assert_none(app, actor, event, ctx).await;
    }
}

async fn assert_none(app: &TestApp, actor: &mut Actor, event: &str, ctx: &str) {
    let marker = app.barrier().await;
    let seen = actor.s.until_barrier(&marker).await;
    let hits: Vec<_> = seen.iter().filter(|(name, _)| name == event).collect();
    assert!(
        hits.is_empty(),
        "{ctx}: {} must not receive (another) `{event}`, got {hits:?}",
        actor.name
    );
}

/// Names of every event a socket got up to a fresh barrier.
async fn events_until_barrier(app: &TestApp, actor: &mut Actor) -> Vec<(String, Vec<Value>)> {
    let marker = app.barrier().await;
    actor.s.until_barrier(&marker).await
}

/// The usual cast of one server: Admin, two Users, a ReadOnly user and the Guest.
struct Cast {
    alice: crate::common::User,
    admin: Actor,
    alice_s: Actor,
    bob_s: Actor,
    ro_s: Actor,
    guest_s: Actor,
}

async fn cast(app: &TestApp) -> Cast {
    let admin = app.admin().await;
    let alice = app.user("alice@x.test", "User").await;
    let bob = app.user("bob@x.test", "User").await;
    let ro = app.user("ro@x.test", "ReadOnly").await;
    Cast {
        admin: Actor::new(app, "admin", &admin.token).await,
        alice_s: Actor::new(app, "alice", &alice.token).await,
        bob_s: Actor::new(app, "bob", &bob.token).await,
        ro_s: Actor::new(app, "readonly", &ro.token).await,
        guest_s: Actor::guest(app, "guest").await,
        alice,
    }
}

// ---------------------------------------------------------------------------------
// 1. The db-channel delivery matrix.
// ---------------------------------------------------------------------------------

/// One row of the matrix: how each actor's join is answered and who gets the events of
/// a row alice writes. Actor order: admin, alice, bob, readonly, guest, alice's second
/// socket (which never joins).
struct Case {
    object: &'static str,
    joins: [Join; 6],
    receives: [bool; 6],
}

#[tokio::test]
async fn db_channel_delivery_matrix() {
    use Join::{Ok as J, Refused as R, Skip as S};
    let cases = [
        // rowSecurity none: every reader, Guest included (Public may read posts).
        Case {
            object: "posts",
            joins: [J, J, J, J, J, S],
            receives: [true, true, true, true, true, false],
        },
        // owner: alice and Admin only; bob and the ReadOnly user may join (they read
        // their own rows) but get none of alice's; Public may not read at all.
        Case {
            object: "notes",
            joins: [J, J, J, J, R, S],
            receives: [true, true, false, false, false, false],
        },
        // ownerWrite: every reader reads every row; Public may not read.
        Case {
            object: "memos",
            joins: [J, J, J, J, R, S],
            receives: [true, true, true, true, false, false],
        },
    ];
    for backend in backends() {
        let app = start(&backend).await;
        let c = cast(&app).await;
        let alice_idle = Actor::new(&app, "alice (not joined)", &c.alice.token).await;
        let mut actors = [c.admin, c.alice_s, c.bob_s, c.ro_s, c.guest_s, alice_idle];
        let alice = c.alice.cred();
        for case in &cases {
            let object = case.object;
            let channel = format!("db-{object}");
            let ctx = format!("{} {object}", backend.name());
            for (actor, &want) in actors.iter().zip(&case.joins) {
                join(actor, &channel, want, &ctx).await;
            }

            // create
            let (status, created) = app
                .post(
                    &format!("/1/objects/{object}"),
                    &alice,
                    json!({ "title": "first" }),
                )
                .await;
            assert_eq!(status, 200, "{ctx}: create: {created}");
            let id = id_of(&created);
            let stored = app.row(object, id).await;
            assert_eq!(stored["title"], "first", "{ctx}: {stored}");
            delivered(
                &app,
                &mut actors,
                &case.receives,
                "db_created",
                &ctx,
                |who, got| {
                    assert_eq!(got["channel"], json!(channel), "{who}: {got}");
                    assert_eq!(got["data"], stored, "{who}: the full row");
                    assert_eq!(got["data"]["id"], json!(id), "{who}: {got}");
                },
            )
            .await;

            // update
            let (status, body) = app
                .put(
                    &format!("/1/objects/{object}/{id}"),
                    &alice,
                    json!({ "title": "second" }),
                )
                .await;
            assert_eq!(status, 200, "{ctx}: update: {body}");
            let stored = app.row(object, id).await;
            assert_eq!(stored["title"], "second", "{ctx}: {stored}");
            delivered(
                &app,
                &mut actors,
                &case.receives,
                "db_updated",
                &ctx,
                |who, got| {
                    assert_eq!(got["channel"], json!(channel), "{who}: {got}");
                    assert_eq!(got["data"], stored, "{who}: the new row");
                    assert_eq!(got["data"]["title"], "second", "{who}: {got}");
                },
            )
            .await;

            // An update by someone else (the master token, acting as Admin) keeps the
            // row's owner: the same readers, no more.
            let (status, body) = app
                .put(
                    &format!("/1/objects/{object}/{id}"),
                    &master(),
                    json!({ "title": "third" }),
                )
                .await;
            assert_eq!(status, 200, "{ctx}: admin update: {body}");
            let stored = app.row(object, id).await;
            assert_eq!(stored["title"], "third", "{ctx}: {stored}");
            delivered(
                &app,
                &mut actors,
                &case.receives,
                "db_updated",
                &ctx,
                |who, got| {
                    assert_eq!(got["channel"], json!(channel), "{who}: {got}");
                    assert_eq!(
                        got["data"], stored,
                        "{who}: the row after the admin's update"
                    );
                },
            )
            .await;

            // delete
            let (status, body) = app
                .delete(&format!("/1/objects/{object}/{id}"), &alice)
                .await;
            assert_eq!(status, 200, "{ctx}: delete: {body}");
            delivered(
                &app,
                &mut actors,
                &case.receives,
                "db_deleted",
                &ctx,
                |who, got| {
                    assert!(
                        got["seq"].as_u64().is_some(),
                        "{who}: db_deleted is numbered: {got}"
                    );
                    assert_eq!(
                        got,
                        &json!({ "channel": channel, "data": id, "seq": got["seq"] }),
                        "{who}: db_deleted carries the id"
                    );
                },
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------
// 2. LoopBack event names, without joining anything.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn loopback_names_reach_readers_without_joining() {
    for backend in backends() {
        let app = start(&backend).await;
        let c = cast(&app).await;
        let alice = c.alice.cred();
        // Order: admin, alice, bob, readonly, guest.
        let mut actors = [c.admin, c.alice_s, c.bob_s, c.ro_s, c.guest_s];
        let cases: [(&str, [bool; 5]); 2] = [
            ("posts", [true, true, true, true, true]),
            ("notes", [true, true, false, false, false]),
        ];
        for (object, receives) in cases {
            let ctx = format!("{} {object}", backend.name());
            let (status, created) = app
                .post(
                    &format!("/1/objects/{object}"),
                    &alice,
                    json!({ "title": "lb" }),
                )
                .await;
            assert_eq!(status, 200, "{ctx}: {created}");
            let id = id_of(&created);
            let stored = app.row(object, id).await;
            delivered(
                &app,
                &mut actors,
                &receives,
                &format!("/{object}/POST"),
                &ctx,
                |who, got| assert_eq!(got, &stored, "{who}: the created row"),
            )
            .await;

            let (status, body) = app
                .put(
                    &format!("/1/objects/{object}/{id}"),
                    &alice,
                    json!({ "title": "lb2" }),
                )
                .await;
            assert_eq!(status, 200, "{ctx}: {body}");
            let stored = app.row(object, id).await;
            delivered(
                &app,
                &mut actors,
                &receives,
                &format!("/{object}/{id}/PUT"),
                &ctx,
                |who, got| {
                    assert_eq!(got, &stored, "{who}: the updated row");
                    assert_eq!(got["title"], "lb2", "{who}");
                },
            )
            .await;

            let (status, body) = app
                .delete(&format!("/1/objects/{object}/{id}"), &alice)
                .await;
            assert_eq!(status, 200, "{ctx}: {body}");
            delivered(
                &app,
                &mut actors,
                &receives,
                &format!("/{object}/{id}/DELETE"),
                &ctx,
                |who, got| assert_eq!(got["id"], json!(id), "{who}: {got}"),
            )
            .await;
        }

        // memos has no `events: ["loopback"]`: no LoopBack name for it, for anyone. A
        // db-memos member tells us when the change has been relayed.
        let ctx = format!("{} memos", backend.name());
        let watcher = Actor::new(&app, "alice (db-memos)", &c.alice.token).await;
        join(&watcher, "db-memos", Join::Ok, &ctx).await;
        let mut watcher = watcher;
        let (status, created) = app
            .post("/1/objects/memos", &alice, json!({ "title": "quiet" }))
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let id = id_of(&created);
        let (status, body) = app
            .put(
                &format!("/1/objects/memos/{id}"),
                &alice,
                json!({ "title": "still quiet" }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {body}");
        let (status, body) = app.delete(&format!("/1/objects/memos/{id}"), &alice).await;
        assert_eq!(status, 200, "{ctx}: {body}");
        assert_eq!(
            watcher.s.expect("db_created").await["data"]["id"],
            json!(id)
        );
        assert_eq!(
            watcher.s.expect("db_updated").await["data"]["id"],
            json!(id)
        );
        assert_eq!(watcher.s.expect("db_deleted").await["data"], json!(id));
        for actor in actors.iter_mut().chain(std::iter::once(&mut watcher)) {
            let seen = events_until_barrier(&app, actor).await;
            let loopback: Vec<_> = seen
                .iter()
                .filter(|(name, _)| name.starts_with("/memos"))
                .collect();
            assert!(
                loopback.is_empty(),
                "{ctx}: {} must get no LoopBack names for memos, got {loopback:?}",
                actor.name
            );
        }
        // And sockets that never joined a db channel got no db events for memos.
        for actor in actors.iter_mut() {
            for event in ["db_created", "db_updated", "db_deleted"] {
                assert_none(&app, actor, event, &ctx).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// 3. Events from any source: Sails virtual requests over the socket.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn socket_writes_reach_db_channels_like_rest_writes() {
    for backend in backends() {
        let app = start(&backend).await;
        let c = cast(&app).await;
        let ctx = backend.name();
        // Order: admin, alice, bob, readonly (not joined), guest.
        let mut actors = [c.admin, c.alice_s, c.bob_s, c.ro_s, c.guest_s];
        for (i, actor) in actors.iter().enumerate() {
            let want = if i == 3 { Join::Skip } else { Join::Ok };
            join(actor, "db-posts", want, ctx).await;
        }
        for (i, actor) in actors.iter().enumerate() {
            let want = match i {
                3 => Join::Skip,
                4 => Join::Refused,
                _ => Join::Ok,
            };
            join(actor, "db-notes", want, ctx).await;
        }

        // A refused socket write (ReadOnly may not create) produces no event: the next
        // event every member sees is alice's row.
        let refused = actors[3]
            .s
            .call(
                "post",
                json!({ "url": "/1/objects/posts", "data": { "title": "nope" } }),
            )
            .await;
        assert!(
            refused["statusCode"].as_u64().is_some_and(|s| s >= 400),
            "{ctx}: ReadOnly may not create posts: {refused}"
        );

        let ack = actors[1]
            .s
            .call(
                "post",
                json!({ "url": "/1/objects/posts", "data": { "title": "via socket" } }),
            )
            .await;
        assert_eq!(ack["statusCode"], 200, "{ctx}: {ack}");
        let id = id_of(&ack["body"]);
        let stored = app.row("posts", id).await;
        assert_eq!(stored["title"], "via socket");
        let members = [true, true, true, false, true];
        delivered(
            &app,
            &mut actors,
            &members,
            "db_created",
            ctx,
            |who, got| {
                assert_eq!(got["channel"], "db-posts", "{who}");
                assert_eq!(got["data"], stored, "{who}: the socket-created row, first");
            },
        )
        .await;

        let ack = actors[1]
            .s
            .call(
                "put",
                json!({ "url": format!("/1/objects/posts/{id}"), "data": { "title": "edited" } }),
            )
            .await;
        assert_eq!(ack["statusCode"], 200, "{ctx}: {ack}");
        let stored = app.row("posts", id).await;
        delivered(
            &app,
            &mut actors,
            &members,
            "db_updated",
            ctx,
            |who, got| {
                assert_eq!(got["data"], stored, "{who}");
                assert_eq!(got["data"]["title"], "edited", "{who}");
            },
        )
        .await;

        let ack = actors[1]
            .s
            .call("delete", json!({ "url": format!("/1/objects/posts/{id}") }))
            .await;
        assert_eq!(ack["statusCode"], 200, "{ctx}: {ack}");
        delivered(
            &app,
            &mut actors,
            &members,
            "db_deleted",
            ctx,
            |who, got| {
                assert!(got["seq"].as_u64().is_some(), "{who}: {got}");
                assert_eq!(
                    got,
                    &json!({ "channel": "db-posts", "data": id, "seq": got["seq"] }),
                    "{who}"
                );
            },
        )
        .await;

        // Owner rows written over the socket still go only to their readers.
        let ack = actors[1]
            .s
            .call(
                "post",
                json!({ "url": "/1/objects/notes", "data": { "title": "secret" } }),
            )
            .await;
        assert_eq!(ack["statusCode"], 200, "{ctx}: {ack}");
        let id = id_of(&ack["body"]);
        let stored = app.row("notes", id).await;
        delivered(
            &app,
            &mut actors,
            &[true, true, false, false, false],
            "db_created",
            ctx,
            |who, got| {
                assert_eq!(got["channel"], "db-notes", "{who}");
                assert_eq!(got["data"], stored, "{who}");
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------
// 4. Identity rooms through the Rust API.
// ---------------------------------------------------------------------------------

/// Every `event` payload an unauthenticated socket got within 300 ms.
async fn unauth_got(s: &mut Sio, event: &str) -> Vec<Incoming> {
    s.drain(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|i| matches!(i, Incoming::Event(name, _) if name == event))
        .collect()
}

#[tokio::test]
async fn identity_room_emits_reach_exactly_their_targets() {
    for backend in backends() {
        let app = start(&backend).await;
        let c = cast(&app).await;
        let ro2 = app.user("ro2@x.test", "ReadOnly").await;
        let ctx = backend.name();
        let rt = &app.state.realtime;
        let alice2 = Actor::new(&app, "alice (2nd socket)", &c.alice.token).await;
        let ro2_s = Actor::new(&app, "readonly 2", &ro2.token).await;
        // Order: admin, alice, alice2, bob, readonly, readonly2, guest.
        let mut actors = [
            c.admin, c.alice_s, alice2, c.bob_s, c.ro_s, ro2_s, c.guest_s,
        ];
        let mut anon = Sio::connect(&app.base, None)
            .await
            .expect("an unauthenticated socket may connect");
        let refused = anon.call("join", json!("room1")).await;
        assert!(
            refused["error"].is_string(),
            "{ctx}: an unauthenticated socket may not join: {refused}"
        );

        // emit_users: both of alice's sockets, nobody else.
        let data = json!({ "to": "alice" });
        rt.emit_users("evt_users", &data, std::slice::from_ref(&c.alice.email))
            .await;
        delivered(
            &app,
            &mut actors,
            &[false, true, true, false, false, false, false],
            "evt_users",
            ctx,
            |who, got| assert_eq!(got, &data, "{who}"),
        )
        .await;
        assert!(unauth_got(&mut anon, "evt_users").await.is_empty(), "{ctx}");

        // emit_users with several users (and one with no socket).
        let data = json!({ "to": "alice+bob" });
        rt.emit_users(
            "evt_users2",
            &data,
            &[
                c.alice.email.clone(),
                "bob@x.test".to_string(),
                "nobody@x.test".to_string(),
            ],
        )
        .await;
        delivered(
            &app,
            &mut actors,
            &[false, true, true, true, false, false, false],
            "evt_users2",
            ctx,
            |who, got| assert_eq!(got, &data, "{who}"),
        )
        .await;

        // emit_role: every ReadOnly socket, nobody else.
        let data = json!({ "to": "ReadOnly" });
        rt.emit_role("evt_role", &data, "ReadOnly").await;
        delivered(
            &app,
            &mut actors,
            &[false, false, false, false, true, true, false],
            "evt_role",
            ctx,
            |who, got| assert_eq!(got, &data, "{who}"),
        )
        .await;
        assert!(unauth_got(&mut anon, "evt_role").await.is_empty(), "{ctx}");

        // emit_all: every authenticated socket, Guest included; not the unauthenticated one.
        let data = json!({ "to": "all" });
        rt.emit_all("evt_all", &data).await;
        delivered(&app, &mut actors, &[true; 7], "evt_all", ctx, |who, got| {
            assert_eq!(got, &data, "{who}")
        })
        .await;
        assert!(unauth_got(&mut anon, "evt_all").await.is_empty(), "{ctx}");

        // broadcast: only members of room1 (bob and the guest); room2's member gets none.
        join(&actors[3], "room1", Join::Ok, ctx).await;
        join(&actors[6], "room1", Join::Ok, ctx).await;
        join(&actors[1], "room2", Join::Ok, ctx).await;
        let data = json!({ "to": "room1" });
        rt.broadcast("room1", "evt_room", &data).await;
        delivered(
            &app,
            &mut actors,
            &[false, false, false, true, false, false, true],
            "evt_room",
            ctx,
            |who, got| assert_eq!(got, &data, "{who}"),
        )
        .await;
        assert!(unauth_got(&mut anon, "evt_room").await.is_empty(), "{ctx}");
    }
}

// ---------------------------------------------------------------------------------
// 5. Leave.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn leave_stops_db_events_for_that_socket_only() {
    for backend in backends() {
        let app = start(&backend).await;
        let c = cast(&app).await;
        let ctx = backend.name();
        let alice = c.alice.cred();
        // Order: alice, bob.
        let mut actors = [c.alice_s, c.bob_s];
        for actor in &actors {
            join(actor, "db-posts", Join::Ok, ctx).await;
            join(actor, "db-notes", Join::Ok, ctx).await;
            join(actor, "room1", Join::Ok, ctx).await;
        }
        let create = |object: &'static str, title: &'static str| {
            let app = &app;
            let alice = &alice;
            async move {
                let (status, body) = app
                    .post(
                        &format!("/1/objects/{object}"),
                        alice,
                        json!({ "title": title }),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                id_of(&body)
            }
        };

        let id = create("posts", "before").await;
        delivered(
            &app,
            &mut actors,
            &[true, true],
            "db_created",
            ctx,
            |who, got| assert_eq!(got["data"]["id"], json!(id), "{who}"),
        )
        .await;

        // bob leaves db-posts and room1.
        let ack = actors[1].s.call("leave", json!("db-posts")).await;
        assert_eq!(ack, json!({ "ok": true, "channel": "db-posts" }), "{ctx}");
        let ack = actors[1]
            .s
            .call("leave", json!({ "channel": "room1" }))
            .await;
        assert_eq!(ack, json!({ "ok": true, "channel": "room1" }), "{ctx}");

        let id = create("posts", "after").await;
        // Leaving the channel is not leaving the LoopBack names: bob still reads posts.
        // (Checked first: the barrier below consumes everything before it.)
        for actor in actors.iter_mut() {
            let got = actor.s.expect("/posts/POST").await;
            assert_eq!(got["id"], json!(id), "{ctx}: {}", actor.name);
        }
        delivered(
            &app,
            &mut actors,
            &[true, false],
            "db_created",
            ctx,
            |who, got| assert_eq!(got["data"]["id"], json!(id), "{who}"),
        )
        .await;
        let (status, body) = app
            .put(
                &format!("/1/objects/posts/{id}"),
                &alice,
                json!({ "title": "x" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        delivered(
            &app,
            &mut actors,
            &[true, false],
            "db_updated",
            ctx,
            |who, got| assert_eq!(got["data"]["id"], json!(id), "{who}"),
        )
        .await;
        let (status, body) = app.delete(&format!("/1/objects/posts/{id}"), &alice).await;
        assert_eq!(status, 200, "{body}");
        delivered(
            &app,
            &mut actors,
            &[true, false],
            "db_deleted",
            ctx,
            |who, got| assert_eq!(got["data"], json!(id), "{who}"),
        )
        .await;

        // Plain channel: bob left room1.
        app.state
            .realtime
            .broadcast("room1", "evt_room", &json!(1))
            .await;
        delivered(
            &app,
            &mut actors,
            &[true, false],
            "evt_room",
            ctx,
            |who, got| assert_eq!(got, &json!(1), "{who}"),
        )
        .await;

        // Leaving an owner-secured channel leaves the socket's own reader room: alice
        // leaves db-notes and no longer gets her own notes; bob, still in it, gets his.
        let ack = actors[0].s.call("leave", json!("db-notes")).await;
        assert_eq!(ack, json!({ "ok": true, "channel": "db-notes" }), "{ctx}");
        let id = create("notes", "hers").await;
        // A marker for "alice's note was relayed": bob's own note, created after it.
        let bob_token = app.login("bob@x.test", "pw-bob@x.test").await.1["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, body) = app
            .post(
                "/1/objects/notes",
                &crate::common::Cred::Bearer(bob_token),
                json!({ "title": "his" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let bob_note = id_of(&body);
        let got = actors[1].s.expect("db_created").await;
        assert_eq!(
            got["data"]["id"],
            json!(bob_note),
            "{ctx}: bob gets his own note and never alice's ({id})"
        );
        for actor in actors.iter_mut() {
            assert_none(&app, actor, "db_created", ctx).await;
        }

        // Joining again restores delivery.
        join(&actors[1], "db-posts", Join::Ok, ctx).await;
        let id = create("posts", "again").await;
        delivered(
            &app,
            &mut actors,
            &[true, true],
            "db_created",
            ctx,
            |who, got| assert_eq!(got["data"]["id"], json!(id), "{who}"),
        )
        .await;
    }
}
