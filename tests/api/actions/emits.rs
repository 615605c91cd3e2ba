//! `socket.emitAll/emitUsers/emitRole/broadcast` from actions, received by exactly the
//! intended sockets of a real Socket.IO client; and emits are transactional: held until
//! the write commits (or the on-demand action returns), dropped when it does not.
//!
//! Negative checks use a barrier (`TestApp::barrier`) after the sockets that must get an
//! event got it: one socket's events arrive in order, so what it had not received before
//! the marker it will never receive. Emits from actions leave within the request (on
//! demand: after the action returns; before actions: right after the commit), so by the
//! time the response is back every emit is queued ahead of the barrier.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{ANON, Spawn, TestApp, User, backends, master};
use crate::sio::{Incoming, Sio};

/// An on-demand action that emits as its body asks, then fails if asked to.
const EMIT: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  var data = userInput.withRow ? { row: dbRow } : userInput.data;
  if (userInput.kind === "all") socket.emitAll(userInput.event, data);
  if (userInput.kind === "users") socket.emitUsers(userInput.event, data, userInput.users);
  if (userInput.kind === "role") socket.emitRole(userInput.event, data, userInput.role);
  if (userInput.kind === "room") socket.broadcast(userInput.room, userInput.event, data);
  if (userInput.fail) throw new Error("failed after emitting");
  if (userInput.spin) { for (;;) {} }
  return { emitted: userInput.kind || null };
}"#;

/// A beforeCreate that emits (to everyone and to the caller), whatever follows.
const BEFORE_EMIT: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  socket.emitAll("before_all", { name: userInput.name });
  socket.emitUsers("before_user", { name: userInput.name }, [userProfile.username]);
  socket.emitRole("before_role", { name: userInput.name }, "ReadOnly");
  socket.broadcast("room1", "before_room", { name: userInput.name });
}"#;

/// Runs after `BEFORE_EMIT` (name order): refuses, or leaves an invalid value.
const BEFORE_CHECK: &str = r#"
function backandCallback(userInput) {
  if (userInput.name === "refuse") throw new Error("refused by the second action");
  if (userInput.name === "invalid") userInput.price = "not a number";
}"#;

const BEFORE_UPDATE_EMIT: &str = r#"
function backandCallback(userInput, dbRow) {
  socket.emitAll("before_update", { id: dbRow.id, input: userInput });
}"#;

const BEFORE_UPDATE_CHECK: &str = r#"
function backandCallback(userInput) {
  if (userInput.name === "refuse") throw { status: 409, message: "refused update" };
}"#;

const BEFORE_DELETE_EMIT: &str = r#"
function backandCallback(userInput, dbRow) {
  socket.emitAll("before_delete", dbRow.id);
  if (dbRow.name === "keep") throw { status: 403, message: "keep me" };
}"#;

fn app_spawn(backend: &crate::common::Backend) -> Spawn<'_> {
    Spawn::new(backend)
        .schema(
            "items.json",
            json!({
                "name": "items",
                "fields": {
                    "name": { "type": "string", "required": true, "unique": true },
                    "price": { "type": "float", "default": 0 }
                },
                "permissions": {
                    "read": ["Admin", "User", "ReadOnly"],
                    "create": ["Admin", "User"],
                    "update": ["Admin", "User"],
                    "delete": ["Admin", "User"]
                }
            }),
        )
        .action("general/onDemand/emit.js", EMIT)
        .action("items/onDemand/emit.js", EMIT)
        .action("items/beforeCreate/a_emit.js", BEFORE_EMIT)
        .action("items/beforeCreate/b_check.js", BEFORE_CHECK)
        .action("items/beforeUpdate/a_emit.js", BEFORE_UPDATE_EMIT)
        .action("items/beforeUpdate/b_check.js", BEFORE_UPDATE_CHECK)
        .action("items/beforeDelete/emit.js", BEFORE_DELETE_EMIT)
}

/// A socket with a name for failure messages.
struct Named {
    name: &'static str,
    s: Sio,
}

/// Users and their sockets. Socket order: admin, alice, alice (2nd), bob, readonly,
/// guest (anonymous, role Public).
struct Cast {
    alice: User,
    bob: User,
    socks: Vec<Named>,
    /// Connected without authenticating: must never receive an action's emit.
    unauth: Sio,
}

const ADMIN: usize = 0;
const ALICE: usize = 1;
const ALICE2: usize = 2;
const BOB: usize = 3;
const RO: usize = 4;
const GUEST: usize = 5;

async fn cast(app: &TestApp) -> Cast {
    let admin = app.admin().await;
    let alice = app.user("alice@x.test", "User").await;
    let bob = app.user("bob@x.test", "User").await;
    let ro = app.user("ro@x.test", "ReadOnly").await;
    let guest = Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON })))
        .await
        .expect("anonymous socket connects");
    let socks = vec![
        Named {
            name: "admin",
            s: app.socket(&admin.token).await,
        },
        Named {
            name: "alice",
            s: app.socket(&alice.token).await,
        },
        Named {
            name: "alice (2nd socket)",
            s: app.socket(&alice.token).await,
        },
        Named {
            name: "bob",
            s: app.socket(&bob.token).await,
        },
        Named {
            name: "readonly",
            s: app.socket(&ro.token).await,
        },
        Named {
            name: "guest",
            s: guest,
        },
    ];
    let unauth = Sio::connect(&app.base, None)
        .await
        .expect("an unauthenticated socket may connect");
    Cast {
        alice,
        bob,
        socks,
        unauth,
    }
}

/// Every event each socket received up to a fresh barrier, as (name, first argument).
/// Emits from actions are queued before the request that caused them answers, so a
/// barrier sent after that answer comes after them on every socket.
async fn received(app: &TestApp, socks: &mut [Named]) -> Vec<Vec<(String, Value)>> {
    let marker = app.barrier().await;
    let mut all = Vec::with_capacity(socks.len());
    for sock in socks.iter_mut() {
        let events = sock.s.until_barrier(&marker).await;
        all.push(
            events
                .into_iter()
                .map(|(name, mut args)| {
                    let first = if args.is_empty() {
                        Value::Null
                    } else {
                        args.remove(0)
                    };
                    (name, first)
                })
                .collect(),
        );
    }
    all
}

/// In `got` (from `received`), the sockets at `to` received `event` with exactly the
/// payloads `want`, in order; every other socket received no `event` at all.
fn check(
    got: &[Vec<(String, Value)>],
    socks: &[Named],
    to: &[usize],
    event: &str,
    want: &[Value],
    ctx: &str,
) {
    for (i, events) in got.iter().enumerate() {
        let payloads: Vec<&Value> = events
            .iter()
            .filter(|(name, _)| name == event)
            .map(|(_, data)| data)
            .collect();
        let expected: Vec<&Value> = if to.contains(&i) {
            want.iter().collect()
        } else {
            Vec::new()
        };
        assert_eq!(
            payloads, expected,
            "{ctx}: `{event}` at socket {}",
            socks[i].name
        );
    }
}

/// The sockets at `to` receive `event` with `data` exactly once; no other socket
/// receives it at all.
async fn exactly(
    app: &TestApp,
    socks: &mut [Named],
    to: &[usize],
    event: &str,
    data: &Value,
    ctx: &str,
) {
    let got = received(app, socks).await;
    check(&got, socks, to, event, std::slice::from_ref(data), ctx);
}

/// The `event`s an unauthenticated socket got within 300 ms (no barrier reaches it).
async fn unauth_got(s: &mut Sio, event: &str) -> Vec<Incoming> {
    s.drain(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|i| matches!(i, Incoming::Event(name, _) if name == event))
        .collect()
}

async fn call(app: &TestApp, user: &User, path: &str, body: Value, ctx: &str) -> Value {
    let (status, answer) = app.post(path, &user.cred(), body.clone()).await;
    assert_eq!(status, 200, "{ctx}: POST {path} {body}: {answer}");
    answer
}

#[tokio::test]
async fn each_emit_kind_reaches_exactly_its_sockets() {
    const F: &str = "/1/function/general/emit";
    for backend in backends() {
        let ctx = backend.name();
        let app = app_spawn(&backend).start().await;
        let mut c = cast(&app).await;
        let alice = c.alice.clone();

        // emitAll: every authenticated socket (the Guest too), not the unauthenticated one.
        let data = json!({ "to": "all", "n": [1, 2.5, "x", null, true] });
        let answer = call(
            &app,
            &alice,
            F,
            json!({ "kind": "all", "event": "evt_all", "data": data }),
            ctx,
        )
        .await;
        assert_eq!(answer, json!({ "emitted": "all" }), "{ctx}");
        let all = [ADMIN, ALICE, ALICE2, BOB, RO, GUEST];
        exactly(&app, &mut c.socks, &all, "evt_all", &data, ctx).await;
        assert!(
            unauth_got(&mut c.unauth, "evt_all").await.is_empty(),
            "{ctx}: unauthenticated socket"
        );

        // emitUsers: every socket of that user, nobody else.
        let data = json!({ "to": "alice" });
        call(
            &app,
            &alice,
            F,
            json!({ "kind": "users", "event": "evt_users", "data": data, "users": [alice.email] }),
            ctx,
        )
        .await;
        exactly(
            &app,
            &mut c.socks,
            &[ALICE, ALICE2],
            "evt_users",
            &data,
            ctx,
        )
        .await;
        assert!(
            unauth_got(&mut c.unauth, "evt_users").await.is_empty(),
            "{ctx}"
        );

        // emitUsers with several users, one of them with no socket.
        let data = json!({ "to": "alice+bob" });
        call(
            &app,
            &alice,
            F,
            json!({ "kind": "users", "event": "evt_users2", "data": data,
                    "users": [alice.email, c.bob.email, "nobody@x.test"] }),
            ctx,
        )
        .await;
        exactly(
            &app,
            &mut c.socks,
            &[ALICE, ALICE2, BOB],
            "evt_users2",
            &data,
            ctx,
        )
        .await;

        // emitRole: every socket of that role, nobody else.
        let data = json!({ "to": "ReadOnly" });
        call(
            &app,
            &alice,
            F,
            json!({ "kind": "role", "event": "evt_role", "data": data, "role": "ReadOnly" }),
            ctx,
        )
        .await;
        exactly(&app, &mut c.socks, &[RO], "evt_role", &data, ctx).await;
        assert!(
            unauth_got(&mut c.unauth, "evt_role").await.is_empty(),
            "{ctx}"
        );

        let data = json!({ "to": "User" });
        call(
            &app,
            &alice,
            F,
            json!({ "kind": "role", "event": "evt_role_user", "data": data, "role": "User" }),
            ctx,
        )
        .await;
        exactly(
            &app,
            &mut c.socks,
            &[ALICE, ALICE2, BOB],
            "evt_role_user",
            &data,
            ctx,
        )
        .await;

        // broadcast: only the sockets that joined that channel.
        for (i, room) in [(BOB, "room1"), (GUEST, "room1"), (ALICE, "room2")] {
            let ack = c.socks[i].s.call("join", json!(room)).await;
            assert_eq!(
                crate::common::without_sid(&ack),
                json!({ "ok": true, "channel": room }),
                "{ctx}: join {room}"
            );
        }
        let data = json!({ "to": "room1" });
        call(
            &app,
            &alice,
            F,
            json!({ "kind": "room", "event": "evt_room", "data": data, "room": "room1" }),
            ctx,
        )
        .await;
        exactly(&app, &mut c.socks, &[BOB, GUEST], "evt_room", &data, ctx).await;
        assert!(
            unauth_got(&mut c.unauth, "evt_room").await.is_empty(),
            "{ctx}"
        );
    }
}

#[tokio::test]
async fn emits_from_object_actions_arrive() {
    for backend in backends() {
        let ctx = backend.name();
        let app = app_spawn(&backend).start().await;
        let mut c = cast(&app).await;
        let alice = c.alice.clone();

        // `/1/objects/action/{object}?name=`.
        let data = json!({ "from": "object action" });
        let answer = call(
            &app,
            &alice,
            "/1/objects/action/items?name=emit",
            json!({ "kind": "all", "event": "evt_object", "data": data }),
            ctx,
        )
        .await;
        assert_eq!(answer, json!({ "emitted": "all" }), "{ctx}");
        let all = [ADMIN, ALICE, ALICE2, BOB, RO, GUEST];
        exactly(&app, &mut c.socks, &all, "evt_object", &data, ctx).await;

        // `/1/objects/action/{object}/{id}?name=`: the row is there to emit.
        let (status, created) = app
            .post(
                "/1/objects/items",
                &master(),
                json!({ "name": "thing", "price": 1.5 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        // The create's own beforeCreate emits are not under test here.
        let id: i64 = created["__metadata"]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let (_, row) = app.get(&format!("/1/objects/items/{id}"), &master()).await;
        call(
            &app,
            &alice,
            &format!("/1/objects/action/items/{id}?name=emit"),
            json!({ "kind": "role", "event": "evt_row", "withRow": true, "role": "ReadOnly" }),
            ctx,
        )
        .await;
        exactly(
            &app,
            &mut c.socks,
            &[RO],
            "evt_row",
            &json!({ "row": row }),
            ctx,
        )
        .await;

        // GET works the same (no body: userInput is `{}`, so nothing is emitted and the
        // action says so).
        let (status, answer) = app
            .get("/1/objects/action/items?name=emit", &alice.cred())
            .await;
        assert_eq!((status, answer), (200, json!({ "emitted": null })), "{ctx}");
    }
}

#[tokio::test]
async fn emits_from_an_on_demand_action_that_fails_never_arrive() {
    for backend in backends() {
        let ctx = backend.name();
        let app = app_spawn(&backend).start().await;
        let mut c = cast(&app).await;
        let alice = c.alice.clone();
        let ack = c.socks[BOB].s.call("join", json!("room1")).await;
        assert_eq!(ack["ok"], json!(true), "{ctx}: join room1");

        let failing = [
            json!({ "kind": "all", "event": "evt_fail", "data": 1, "fail": true }),
            json!({ "kind": "users", "event": "evt_fail", "data": 2, "users": [alice.email], "fail": true }),
            json!({ "kind": "role", "event": "evt_fail", "data": 3, "role": "ReadOnly", "fail": true }),
            json!({ "kind": "room", "event": "evt_fail", "data": 4, "room": "room1", "fail": true }),
        ];
        for path in [
            "/1/function/general/emit",
            "/1/objects/action/items?name=emit",
        ] {
            for body in &failing {
                let (status, answer) = app.post(path, &alice.cred(), body.clone()).await;
                assert_eq!(
                    (status, &answer),
                    (400, &json!({ "Message": "failed after emitting" })),
                    "{ctx}: {path} {body}"
                );
            }
        }
        // Stopped by the time limit after emitting.
        let (status, answer) = app
            .post(
                "/1/function/general/emit",
                &alice.cred(),
                json!({ "kind": "all", "event": "evt_fail", "data": 5, "spin": true }),
            )
            .await;
        assert_eq!(status, 422, "{ctx}: {answer}");

        // A later call that returns is delivered, and is all that is.
        let data = json!("ok");
        call(
            &app,
            &alice,
            "/1/function/general/emit",
            json!({ "kind": "all", "event": "evt_ok", "data": data }),
            ctx,
        )
        .await;
        let all = [ADMIN, ALICE, ALICE2, BOB, RO, GUEST];
        let got = received(&app, &mut c.socks).await;
        check(&got, &c.socks, &all, "evt_ok", &[data], ctx);
        check(&got, &c.socks, &[], "evt_fail", &[], ctx);
        assert!(
            unauth_got(&mut c.unauth, "evt_fail").await.is_empty(),
            "{ctx}"
        );
    }
}

#[tokio::test]
async fn emits_of_before_actions_leave_only_if_the_write_commits() {
    for backend in backends() {
        let ctx = backend.name();
        let app = app_spawn(&backend).start().await;
        let mut c = cast(&app).await;
        let alice = c.alice.clone();
        let ack = c.socks[BOB].s.call("join", json!("room1")).await;
        assert_eq!(ack["ok"], json!(true), "{ctx}: join room1");
        let create = |name: &'static str| {
            let (app, alice) = (&app, &alice);
            async move {
                app.post(
                    "/1/objects/items",
                    &alice.cred(),
                    json!({ "name": name, "price": 1.5 }),
                )
                .await
            }
        };

        // A write that commits: each emit kind reaches its sockets.
        let (status, body) = create("first").await;
        assert_eq!(status, 200, "{ctx}: {body}");
        let first = json!({ "name": "first" });
        let all = [ADMIN, ALICE, ALICE2, BOB, RO, GUEST];
        let got = received(&app, &mut c.socks).await;
        check(
            &got,
            &c.socks,
            &all,
            "before_all",
            std::slice::from_ref(&first),
            ctx,
        );
        check(
            &got,
            &c.socks,
            &[ALICE, ALICE2],
            "before_user",
            std::slice::from_ref(&first),
            ctx,
        );
        check(
            &got,
            &c.socks,
            &[RO],
            "before_role",
            std::slice::from_ref(&first),
            ctx,
        );
        check(&got, &c.socks, &[BOB], "before_room", &[first], ctx);

        // Refused after the emitting action ran: by the next action, by validation of
        // what it left, by the database (unique `name`).
        let (status, body) = create("refuse").await;
        assert_eq!(
            (status, &body),
            (400, &json!({ "Message": "refused by the second action" })),
            "{ctx}"
        );
        let (status, body) = create("invalid").await;
        assert_eq!(status, 400, "{ctx}: validation after the actions: {body}");
        let (status, body) = create("first").await;
        assert_eq!(status, 409, "{ctx}: duplicate name: {body}");
        assert_eq!(
            app.all_rows("items").await.len(),
            1,
            "{ctx}: nothing written"
        );

        // The next write that commits is delivered, and is all that is.
        let (status, body) = create("second").await;
        assert_eq!(status, 200, "{ctx}: {body}");
        let second = json!({ "name": "second" });
        let got = received(&app, &mut c.socks).await;
        check(
            &got,
            &c.socks,
            &all,
            "before_all",
            std::slice::from_ref(&second),
            ctx,
        );
        check(
            &got,
            &c.socks,
            &[ALICE, ALICE2],
            "before_user",
            std::slice::from_ref(&second),
            ctx,
        );
        check(
            &got,
            &c.socks,
            &[RO],
            "before_role",
            std::slice::from_ref(&second),
            ctx,
        );
        check(&got, &c.socks, &[BOB], "before_room", &[second], ctx);
        let id: i64 = body["__metadata"]["id"].as_str().unwrap().parse().unwrap();

        // Update: an emit of a refused update never arrives; a committed one does.
        let (status, body) = app
            .put(
                &format!("/1/objects/items/{id}"),
                &alice.cred(),
                json!({ "name": "refuse" }),
            )
            .await;
        assert_eq!(
            (status, &body),
            (409, &json!({ "Message": "refused update" })),
            "{ctx}"
        );
        let (status, body) = app
            .put(
                &format!("/1/objects/items/{id}"),
                &alice.cred(),
                json!({ "price": 2.5 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {body}");
        let want = json!({ "id": id, "input": { "price": 2.5 } });
        exactly(&app, &mut c.socks, &all, "before_update", &want, ctx).await;

        // Delete: an action that emits and then refuses sends nothing.
        let (status, keep) = app
            .post("/1/objects/items", &alice.cred(), json!({ "name": "keep" }))
            .await;
        assert_eq!(status, 200, "{ctx}: {keep}");
        let keep: i64 = keep["__metadata"]["id"].as_str().unwrap().parse().unwrap();
        let (status, body) = app
            .delete(&format!("/1/objects/items/{keep}"), &alice.cred())
            .await;
        assert_eq!(
            (status, &body),
            (403, &json!({ "Message": "keep me" })),
            "{ctx}"
        );
        let (status, body) = app
            .delete(&format!("/1/objects/items/{id}"), &alice.cred())
            .await;
        assert_eq!(status, 200, "{ctx}: {body}");
        // `keep`'s own create sent its before_* emits; only before_delete matters here.
        exactly(&app, &mut c.socks, &all, "before_delete", &json!(id), ctx).await;
        assert!(
            unauth_got(&mut c.unauth, "before_all").await.is_empty(),
            "{ctx}"
        );
    }
}
