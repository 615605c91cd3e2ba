//! CRUD triggers over the real server: each trigger's exact arguments, name order,
//! before actions changing `userInput` (validation still applies), refusals (nothing
//! written, no event leaves), failing after actions (the write is kept) and a before
//! action stopped by the time limit.
//!
//! Before actions show what they received by copying it into the row they write (the
//! `seen` json field); after actions (and `beforeDelete`, which writes nothing) emit it
//! to every socket, read with the real Socket.IO client.

use serde_json::{Value, json};

use crate::common::{Spawn, TestApp, User, backends, id_of};
use crate::sio::Sio;

/// The app name of a test server (the harness signs in with it).
const APP: &str = "livebase";

/// `items`, readable by Admin/User/ReadOnly, written by Admin/User, no row security.
fn items(spawn: Spawn<'_>) -> Spawn<'_> {
    spawn.schema(
        "items.json",
        json!({
            "name": "items",
            "fields": {
                "name": { "type": "string", "required": true, "unique": true },
                "price": { "type": "float", "default": 0 },
                "trail": { "type": "string" },
                "seen": { "type": "json" }
            },
            "permissions": {
                "read": ["Admin", "User", "ReadOnly"],
                "create": ["Admin", "User"],
                "update": ["Admin", "User"],
                "delete": ["Admin", "User"]
            }
        }),
    )
}

/// A before action that writes its four arguments (and how many it got) into `seen`.
const COPY_INTO_SEEN: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  var copy = JSON.parse(JSON.stringify(userInput));
  userInput.seen = {
    userInput: copy,
    dbRow: dbRow === undefined ? "undefined" : dbRow,
    parameters: parameters === undefined ? "undefined" : parameters,
    userProfile: userProfile === undefined ? "undefined" : userProfile,
    count: arguments.length
  };
}"#;

/// An action that emits its four arguments to every socket as `seen_<trigger>`.
fn emit_arguments(trigger: &str) -> String {
    format!(
        r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {{
  socket.emitAll("seen_{trigger}", {{
    userInput: userInput === undefined ? "undefined" : userInput,
    dbRow: dbRow === undefined ? "undefined" : dbRow,
    parameters: parameters === undefined ? "undefined" : parameters,
    userProfile: userProfile === undefined ? "undefined" : userProfile,
    count: arguments.length
  }});
}}"#
    )
}

/// Every number as f64, so `7` (from JavaScript) equals `7.0` (from a float column).
fn norm(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        other => other.clone(),
    }
}

#[track_caller]
fn assert_same(got: &Value, want: &Value, what: &str) {
    assert_eq!(norm(got), norm(want), "{what}");
}

/// `userProfile` as an action must see it for `user`.
fn profile(user: &User, role: &str) -> Value {
    json!({
        "username": user.email,
        "role": role,
        "userId": user.id.to_string(),
        "app": APP,
    })
}

async fn row(app: &TestApp, id: i64) -> Value {
    app.row("items", id).await
}

/// Every `db_*` event `s` got up to a fresh barrier, as `(event, row id)`.
///
/// Database events leave through the event bus's relay task, not within the request, so
/// a caller first waits (`expect`) for the event of the last write it made: the relay
/// handles events in order, so everything an earlier write could have sent is then
/// already queued before the barrier.
async fn db_events_until_barrier(app: &TestApp, s: &mut Sio) -> Vec<(String, Value)> {
    let marker = app.barrier().await;
    s.until_barrier(&marker)
        .await
        .into_iter()
        .filter(|(name, _)| name.starts_with("db_"))
        .map(|(name, args)| {
            let data = args.first().cloned().unwrap_or(Value::Null);
            // db_created / db_updated carry the row, db_deleted the id.
            let id = match &data["data"] {
                Value::Object(o) => o.get("id").cloned().unwrap_or(Value::Null),
                other => other.clone(),
            };
            (name, id)
        })
        .collect()
}

async fn joined_db_items(app: &TestApp, token: &str) -> Sio {
    let s = app.socket(token).await;
    let ack = s.call("join", json!("db-items")).await;
    assert_eq!(ack["ok"], json!(true), "join db-items: {ack}");
    s
}

#[tokio::test]
async fn before_triggers_receive_their_exact_arguments() {
    for backend in backends() {
        let ctx = backend.name();
        let app = items(Spawn::new(&backend))
            .action("items/beforeCreate/spy.js", COPY_INTO_SEEN)
            .action("items/beforeUpdate/spy.js", COPY_INTO_SEEN)
            .action("items/beforeDelete/spy.js", &emit_arguments("beforeDelete"))
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let admin = app.admin().await;
        let mut s = app.socket(&admin.token).await;

        // beforeCreate: userInput is the body, no stored row yet.
        let body = json!({ "name": "first", "price": 2.5 });
        let (status, created) = app
            .post(
                "/1/objects/items?returnObject=true",
                &alice.cred(),
                body.clone(),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: create: {created}");
        let seen = &created["seen"];
        assert_same(
            &seen["userInput"],
            &body,
            &format!("{ctx}: beforeCreate userInput"),
        );
        assert_eq!(
            seen["dbRow"],
            Value::Null,
            "{ctx}: beforeCreate dbRow: {seen}"
        );
        assert_eq!(
            seen["parameters"],
            json!({}),
            "{ctx}: beforeCreate parameters"
        );
        assert_eq!(
            seen["userProfile"],
            profile(&alice, "User"),
            "{ctx}: beforeCreate userProfile"
        );
        assert_eq!(
            seen["count"],
            json!(4),
            "{ctx}: beforeCreate argument count"
        );
        let id = id_of(&created);
        let stored = app.all_rows("items").await;
        assert_eq!(stored.len(), 1, "{ctx}: {stored:?}");
        assert_same(
            &stored[0]["seen"],
            seen,
            &format!("{ctx}: what the action left is stored"),
        );

        // beforeUpdate: userInput is the body, dbRow the stored row before the change.
        let before = row(&app, id).await;
        let body = json!({ "price": 7.5, "trail": "t" });
        let (status, updated) = app
            .put(
                &format!("/1/objects/items/{id}?returnObject=true"),
                &alice.cred(),
                body.clone(),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: update: {updated}");
        let seen = &updated["seen"];
        assert_same(
            &seen["userInput"],
            &body,
            &format!("{ctx}: beforeUpdate userInput"),
        );
        assert_same(
            &seen["dbRow"],
            &before,
            &format!("{ctx}: beforeUpdate dbRow"),
        );
        assert_eq!(
            seen["dbRow"]["price"],
            json!(2.5),
            "{ctx}: dbRow is the old row"
        );
        assert_eq!(
            seen["parameters"],
            json!({}),
            "{ctx}: beforeUpdate parameters"
        );
        assert_eq!(
            seen["userProfile"],
            profile(&alice, "User"),
            "{ctx}: beforeUpdate userProfile"
        );
        assert_eq!(
            seen["count"],
            json!(4),
            "{ctx}: beforeUpdate argument count"
        );

        // beforeDelete: no body, dbRow the row about to go.
        let before = row(&app, id).await;
        let (status, body) = app
            .delete(&format!("/1/objects/items/{id}"), &alice.cred())
            .await;
        assert_eq!(status, 200, "{ctx}: delete: {body}");
        let got = s.expect("seen_beforeDelete").await;
        assert_eq!(
            got["userInput"],
            json!({}),
            "{ctx}: beforeDelete userInput: {got}"
        );
        assert_same(
            &got["dbRow"],
            &before,
            &format!("{ctx}: beforeDelete dbRow"),
        );
        assert_eq!(
            got["parameters"],
            json!({}),
            "{ctx}: beforeDelete parameters"
        );
        assert_eq!(
            got["userProfile"],
            profile(&alice, "User"),
            "{ctx}: beforeDelete userProfile"
        );
        assert_eq!(got["count"], json!(4), "{ctx}: beforeDelete argument count");
        assert!(app.all_rows("items").await.is_empty(), "{ctx}: row deleted");
    }
}

#[tokio::test]
async fn after_triggers_receive_their_exact_arguments() {
    for backend in backends() {
        let ctx = backend.name();
        let app = items(Spawn::new(&backend))
            .action("items/afterCreate/spy.js", &emit_arguments("afterCreate"))
            .action("items/afterUpdate/spy.js", &emit_arguments("afterUpdate"))
            .action("items/afterDelete/spy.js", &emit_arguments("afterDelete"))
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let admin = app.admin().await;
        let mut s = app.socket(&admin.token).await;

        // afterCreate: dbRow is the new row; userInput the request body.
        let body = json!({ "name": "first", "price": 2.5 });
        let (status, created) = app
            .post(
                "/1/objects/items?returnObject=true",
                &alice.cred(),
                body.clone(),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: create: {created}");
        let id = id_of(&created);
        let stored = row(&app, id).await;
        let got = s.expect("seen_afterCreate").await;
        assert_same(
            &got["dbRow"],
            &stored,
            &format!("{ctx}: afterCreate dbRow is the new row"),
        );
        assert_eq!(
            got["dbRow"]["id"],
            json!(id),
            "{ctx}: afterCreate dbRow has the new id"
        );
        assert_eq!(got["userInput"], body, "{ctx}: afterCreate userInput");
        // The event's number in the log, for an action run again after a crash.
        let created_seq = got["parameters"]["seq"].as_u64().unwrap_or(0);
        assert!(created_seq > 0, "{ctx}: afterCreate parameters: {got}");
        assert_eq!(
            got["parameters"],
            json!({ "seq": created_seq }),
            "{ctx}: afterCreate parameters"
        );
        assert_eq!(
            got["userProfile"],
            profile(&alice, "User"),
            "{ctx}: afterCreate userProfile"
        );
        assert_eq!(got["count"], json!(4), "{ctx}: afterCreate argument count");

        // afterUpdate: dbRow is the row before the change; userInput the request body.
        let before = row(&app, id).await;
        let (status, updated) = app
            .put(
                &format!("/1/objects/items/{id}?returnObject=true"),
                &alice.cred(),
                json!({ "price": 9.5 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: update: {updated}");
        let after = row(&app, id).await;
        let got = s.expect("seen_afterUpdate").await;
        assert_same(
            &got["dbRow"],
            &before,
            &format!("{ctx}: afterUpdate dbRow is the old row"),
        );
        assert_eq!(got["dbRow"]["price"], json!(2.5), "{ctx}: {got}");
        assert_eq!(
            got["userInput"],
            json!({ "price": 9.5 }),
            "{ctx}: afterUpdate userInput"
        );
        assert_eq!(after["price"], json!(9.5), "{ctx}: {after}");
        let updated_seq = got["parameters"]["seq"].as_u64().unwrap_or(0);
        assert!(
            updated_seq > created_seq,
            "{ctx}: afterUpdate parameters: {got}"
        );
        assert_eq!(
            got["parameters"],
            json!({ "seq": updated_seq }),
            "{ctx}: afterUpdate parameters"
        );
        assert_eq!(
            got["userProfile"],
            profile(&alice, "User"),
            "{ctx}: afterUpdate userProfile"
        );
        assert_eq!(got["count"], json!(4), "{ctx}: afterUpdate argument count");

        // afterDelete: dbRow is the row that was deleted; no body.
        let before = row(&app, id).await;
        let (status, body) = app
            .delete(&format!("/1/objects/items/{id}"), &alice.cred())
            .await;
        assert_eq!(status, 200, "{ctx}: delete: {body}");
        let got = s.expect("seen_afterDelete").await;
        assert_same(
            &got["dbRow"],
            &before,
            &format!("{ctx}: afterDelete dbRow is the old row"),
        );
        assert_eq!(
            got["userInput"],
            json!({}),
            "{ctx}: afterDelete userInput: {got}"
        );
        let deleted_seq = got["parameters"]["seq"].as_u64().unwrap_or(0);
        assert!(
            deleted_seq > updated_seq,
            "{ctx}: afterDelete parameters: {got}"
        );
        assert_eq!(
            got["parameters"],
            json!({ "seq": deleted_seq }),
            "{ctx}: afterDelete parameters"
        );
        assert_eq!(
            got["userProfile"],
            profile(&alice, "User"),
            "{ctx}: afterDelete userProfile"
        );
        assert_eq!(got["count"], json!(4), "{ctx}: afterDelete argument count");

        // An Admin's profile is the Admin's.
        let (status, created) = app
            .post(
                "/1/objects/items",
                &admin.cred(),
                json!({ "name": "second", "price": 0.5 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let got = s.expect("seen_afterCreate").await;
        assert_eq!(
            got["userProfile"],
            profile(&admin, "Admin"),
            "{ctx}: afterCreate userProfile of an Admin"
        );
    }
}

/// Appends the action's own name to `trail`.
fn append(name: &str) -> String {
    format!(
        r#"function backandCallback(userInput) {{ userInput.trail = (userInput.trail || "") + "{name}"; }}"#
    )
}

/// Emits the action's own name as `order`.
fn announce(name: &str) -> String {
    format!(r#"function backandCallback() {{ socket.emitAll("order", "{name}"); }}"#)
}

#[tokio::test]
async fn actions_on_one_trigger_run_in_name_order() {
    for backend in backends() {
        let ctx = backend.name();
        // Declared out of order on purpose.
        let mut spawn = items(Spawn::new(&backend));
        for name in ["c", "a", "b"] {
            spawn = spawn
                .action(&format!("items/beforeCreate/{name}.js"), &append(name))
                .action(&format!("items/beforeUpdate/{name}.js"), &append(name))
                .action(&format!("items/afterCreate/{name}.js"), &announce(name));
        }
        let app = spawn.start().await;
        let admin = app.admin().await;
        let mut s = app.socket(&admin.token).await;

        let (status, created) = app
            .post(
                "/1/objects/items?returnObject=true",
                &admin.cred(),
                json!({ "name": "x", "trail": ">" }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        // Each before action saw what the earlier ones left.
        assert_eq!(
            created["trail"], ">abc",
            "{ctx}: beforeCreate order: {created}"
        );
        assert_eq!(app.all_rows("items").await[0]["trail"], ">abc", "{ctx}");
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(s.expect("order").await);
        }
        assert_eq!(
            order,
            [json!("a"), json!("b"), json!("c")],
            "{ctx}: afterCreate order"
        );

        let id = id_of(&created);
        let (status, updated) = app
            .put(
                &format!("/1/objects/items/{id}?returnObject=true"),
                &admin.cred(),
                json!({ "trail": "|" }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {updated}");
        assert_eq!(
            updated["trail"], "|abc",
            "{ctx}: beforeUpdate order: {updated}"
        );
        s.assert_none(&app, "order").await;
    }
}

const FILL: &str = r#"
function backandCallback(userInput, dbRow) {
  if (userInput.name === "unknown") { userInput.bogus = 1; return; }
  if (userInput.name === "wrongtype") { userInput.price = "cheap"; return; }
  if (userInput.name === "dropreq") { delete userInput.name; return; }
  if (userInput.name === "nullreq") { userInput.name = null; return; }
  userInput.name = userInput.name.toUpperCase();
  userInput.price = userInput.price * 2;
  userInput.trail = "filled";
}"#;

const FILL_UPDATE: &str = r#"
function backandCallback(userInput, dbRow) {
  if (userInput.trail === "unknown") { userInput.bogus = 1; return; }
  if (userInput.trail === "wrongtype") { userInput.price = { no: 1 }; return; }
  if (userInput.trail === "nullreq") { userInput.name = null; return; }
  userInput.trail = "was " + dbRow.trail;
  delete userInput.price;
}"#;

#[tokio::test]
async fn before_actions_change_what_is_written_and_validation_still_applies() {
    for backend in backends() {
        let ctx = backend.name();
        let app = items(Spawn::new(&backend))
            .action("items/beforeCreate/fill.js", FILL)
            .action("items/beforeUpdate/fill.js", FILL_UPDATE)
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let mut s = joined_db_items(&app, &alice.token).await;

        let (status, created) = app
            .post(
                "/1/objects/items?returnObject=true",
                &alice.cred(),
                json!({ "name": "widget", "price": 3.25 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        assert_eq!(created["name"], "WIDGET", "{ctx}: {created}");
        assert_eq!(created["price"], json!(6.5), "{ctx}: {created}");
        assert_eq!(created["trail"], "filled", "{ctx}: {created}");
        let id = id_of(&created);
        let stored = row(&app, id).await;
        assert_eq!(
            (&stored["name"], &stored["price"], &stored["trail"]),
            (&json!("WIDGET"), &json!(6.5), &json!("filled")),
            "{ctx}: what the action left is what is stored: {stored}"
        );
        let event = s.expect("db_created").await;
        assert_eq!(
            event["data"]["name"], "WIDGET",
            "{ctx}: the event carries the written row"
        );

        // What the action leaves is validated again: nothing is written when it fails.
        for (name, mentions) in [
            ("unknown", "bogus"),
            ("wrongtype", "price"),
            ("dropreq", "name"),
            ("nullreq", "name"),
        ] {
            let (status, body) = app
                .post(
                    "/1/objects/items",
                    &alice.cred(),
                    json!({ "name": name, "price": 1.5 }),
                )
                .await;
            assert_eq!(status, 400, "{ctx}: create {name}: {body}");
            let message = body["Message"].as_str().unwrap_or_default();
            assert!(
                message.contains(mentions),
                "{ctx}: create {name}: the error must name `{mentions}`: {body}"
            );
        }
        assert_eq!(
            app.all_rows("items").await,
            vec![stored.clone()],
            "{ctx}: nothing written"
        );

        // Update: the action rewrites the body; a field it removes is not written.
        let (status, updated) = app
            .put(
                &format!("/1/objects/items/{id}?returnObject=true"),
                &alice.cred(),
                json!({ "price": 100.5, "trail": "x" }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {updated}");
        assert_eq!(updated["trail"], "was filled", "{ctx}: {updated}");
        assert_eq!(
            updated["price"],
            json!(6.5),
            "{ctx}: price removed by the action: {updated}"
        );
        let stored = row(&app, id).await;
        assert_eq!(stored["trail"], "was filled", "{ctx}: {stored}");
        assert_eq!(stored["price"], json!(6.5), "{ctx}: {stored}");
        assert_eq!(
            s.expect("db_updated").await["data"]["trail"],
            "was filled",
            "{ctx}"
        );

        for (trail, mentions) in [
            ("unknown", "bogus"),
            ("wrongtype", "price"),
            ("nullreq", "name"),
        ] {
            let (status, body) = app
                .put(
                    &format!("/1/objects/items/{id}"),
                    &alice.cred(),
                    json!({ "trail": trail }),
                )
                .await;
            assert_eq!(status, 400, "{ctx}: update {trail}: {body}");
            let message = body["Message"].as_str().unwrap_or_default();
            assert!(
                message.contains(mentions),
                "{ctx}: update {trail}: the error must name `{mentions}`: {body}"
            );
        }
        assert_eq!(
            app.all_rows("items").await,
            vec![stored.clone()],
            "{ctx}: row unchanged"
        );

        // A later write that passes is the only event after the refused ones.
        let (status, created) = app
            .post(
                "/1/objects/items",
                &alice.cred(),
                json!({ "name": "gadget", "price": 0.5 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let event = s.expect("db_created").await;
        assert_eq!(
            event["data"]["name"], "GADGET",
            "{ctx}: a refused create sent {event}"
        );
        let events = db_events_until_barrier(&app, &mut s).await;
        assert!(events.is_empty(), "{ctx}: refused writes sent {events:?}");
        assert_eq!(app.all_rows("items").await.len(), 2, "{ctx}");
    }
}

const GUARD_CREATE: &str = r#"
function backandCallback(userInput) {
  if (userInput.name === "plain") throw new Error("nope");
  if (userInput.name === "taken") throw { status: 409, message: "taken" };
  if (userInput.name === "teapot") { var e = new Error("short and stout"); e.status = 418; throw e; }
  if (userInput.name === "text") throw "just text";
}"#;

const GUARD_UPDATE: &str = r#"
function backandCallback(userInput, dbRow) {
  if (userInput.name === "plain") throw new Error("nope");
  if (userInput.name === "taken") throw { status: 409, message: "taken" };
}"#;

const GUARD_DELETE: &str = r#"
function backandCallback(userInput, dbRow) {
  if (dbRow.name === "keep") throw { status: 403, message: "keep me" };
}"#;

#[tokio::test]
async fn a_refusing_before_action_writes_nothing_and_sends_no_event() {
    for backend in backends() {
        let ctx = backend.name();
        let app = items(Spawn::new(&backend))
            .action("items/beforeCreate/guard.js", GUARD_CREATE)
            .action("items/beforeUpdate/guard.js", GUARD_UPDATE)
            .action("items/beforeDelete/guard.js", GUARD_DELETE)
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let admin = app.admin().await;
        let mut s = joined_db_items(&app, &admin.token).await;

        let (status, created) = app
            .post(
                "/1/objects/items",
                &alice.cred(),
                json!({ "name": "keep", "price": 1.5 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let keep = id_of(&created);
        assert_eq!(
            s.expect("db_created").await["data"]["id"],
            json!(keep),
            "{ctx}"
        );
        let kept = row(&app, keep).await;

        let refusals = [
            ("plain", 400, "nope"),
            ("taken", 409, "taken"),
            ("teapot", 418, "short and stout"),
            ("text", 400, "just text"),
        ];
        for (name, code, message) in refusals {
            let (status, body) = app
                .post(
                    "/1/objects/items",
                    &alice.cred(),
                    json!({ "name": name, "price": 2.5 }),
                )
                .await;
            assert_eq!(
                (status, &body),
                (code, &json!({ "Message": message })),
                "{ctx}: create {name}"
            );
        }
        for (name, code, message) in [("plain", 400, "nope"), ("taken", 409, "taken")] {
            let (status, body) = app
                .put(
                    &format!("/1/objects/items/{keep}"),
                    &alice.cred(),
                    json!({ "name": name, "price": 99.5 }),
                )
                .await;
            assert_eq!(
                (status, &body),
                (code, &json!({ "Message": message })),
                "{ctx}: update to {name}"
            );
        }
        let (status, body) = app
            .delete(&format!("/1/objects/items/{keep}"), &alice.cred())
            .await;
        assert_eq!(
            (status, &body),
            (403, &json!({ "Message": "keep me" })),
            "{ctx}: delete"
        );
        assert_eq!(
            app.all_rows("items").await,
            vec![kept.clone()],
            "{ctx}: nothing created, the row unchanged and not deleted"
        );

        // A later write that is allowed goes through and is the only event delivered.
        let (status, created) = app
            .post(
                "/1/objects/items",
                &alice.cred(),
                json!({ "name": "fine", "price": 3.5 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let fine = id_of(&created);
        let event = s.expect("db_created").await;
        assert_eq!(
            event["data"]["id"],
            json!(fine),
            "{ctx}: a refused create sent {event}"
        );
        let events = db_events_until_barrier(&app, &mut s).await;
        assert!(
            events.is_empty(),
            "{ctx}: refused writes must send no db event, got {events:?}"
        );
        assert_eq!(app.all_rows("items").await.len(), 2, "{ctx}");
    }
}

#[tokio::test]
async fn a_failing_after_action_keeps_the_write() {
    const BOOM: &str =
        r#"function backandCallback(userInput, dbRow) { throw new Error("after boom"); }"#;
    const NEXT: &str =
        r#"function backandCallback(userInput, dbRow) { socket.emitAll("after_next", dbRow.id); }"#;
    for backend in backends() {
        let ctx = backend.name();
        let app = items(Spawn::new(&backend))
            .action("items/afterCreate/a_boom.js", BOOM)
            .action("items/afterCreate/b_next.js", NEXT)
            .action("items/afterUpdate/boom.js", BOOM)
            .action("items/afterDelete/boom.js", BOOM)
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let mut s = joined_db_items(&app, &alice.token).await;

        let (status, created) = app
            .post(
                "/1/objects/items",
                &alice.cred(),
                json!({ "name": "kept", "price": 1.5 }),
            )
            .await;
        assert_eq!(
            status, 200,
            "{ctx}: afterCreate failure must not fail the write: {created}"
        );
        let id = id_of(&created);
        let rows = app.all_rows("items").await;
        assert_eq!(rows.len(), 1, "{ctx}: {rows:?}");
        assert_eq!(rows[0]["name"], "kept", "{ctx}");
        assert_eq!(
            s.expect("db_created").await["data"]["id"],
            json!(id),
            "{ctx}"
        );
        // The next after action still runs.
        assert_eq!(s.expect("after_next").await, json!(id), "{ctx}");

        let (status, body) = app
            .put(
                &format!("/1/objects/items/{id}"),
                &alice.cred(),
                json!({ "price": 2.5 }),
            )
            .await;
        assert_eq!(
            status, 200,
            "{ctx}: afterUpdate failure must not fail the write: {body}"
        );
        assert_eq!(row(&app, id).await["price"], json!(2.5), "{ctx}");
        assert_eq!(
            s.expect("db_updated").await["data"]["price"],
            json!(2.5),
            "{ctx}"
        );

        let (status, body) = app
            .delete(&format!("/1/objects/items/{id}"), &alice.cred())
            .await;
        assert_eq!(
            status, 200,
            "{ctx}: afterDelete failure must not fail the write: {body}"
        );
        assert!(app.all_rows("items").await.is_empty(), "{ctx}: row deleted");
        let deleted = s.expect("db_deleted").await;
        assert_eq!(deleted["data"], json!(id), "{ctx}: {deleted}");
    }
}

const SPIN: &str = r#"
function backandCallback(userInput) {
  if (userInput.name === "spin") { for (;;) {} }
}"#;

#[tokio::test]
async fn a_before_action_over_its_time_limit_is_stopped_and_writes_nothing() {
    for backend in backends() {
        let ctx = backend.name();
        let app = items(Spawn::new(&backend))
            .action("items/beforeCreate/spin.js", SPIN)
            .action("items/beforeUpdate/spin.js", SPIN)
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let mut s = joined_db_items(&app, &alice.token).await;

        let (status, body) = app
            .post("/1/objects/items", &alice.cred(), json!({ "name": "spin" }))
            .await;
        assert_eq!(status, 422, "{ctx}: {body}");
        let message = body["Message"].as_str().unwrap_or_default();
        assert!(
            message.contains("time limit"),
            "{ctx}: a clear error: {body}"
        );
        assert!(
            app.all_rows("items").await.is_empty(),
            "{ctx}: nothing written"
        );

        // The next write works.
        let (status, created) = app
            .post(
                "/1/objects/items",
                &alice.cred(),
                json!({ "name": "ok", "price": 1.5 }),
            )
            .await;
        assert_eq!(
            status, 200,
            "{ctx}: the write after a stopped action: {created}"
        );
        let id = id_of(&created);
        let stored = row(&app, id).await;

        let (status, body) = app
            .put(
                &format!("/1/objects/items/{id}"),
                &alice.cred(),
                json!({ "name": "spin" }),
            )
            .await;
        assert_eq!(status, 422, "{ctx}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap_or_default()
                .contains("time limit"),
            "{ctx}: {body}"
        );
        assert_eq!(
            app.all_rows("items").await,
            vec![stored],
            "{ctx}: row unchanged"
        );

        let (status, body) = app
            .put(
                &format!("/1/objects/items/{id}"),
                &alice.cred(),
                json!({ "price": 2.5 }),
            )
            .await;
        assert_eq!(
            status, 200,
            "{ctx}: the update after a stopped action: {body}"
        );
        assert_eq!(row(&app, id).await["price"], json!(2.5), "{ctx}");

        let event = s.expect("db_created").await;
        assert_eq!(
            event["data"]["name"], "ok",
            "{ctx}: a refused create sent {event}"
        );
        let event = s.expect("db_updated").await;
        assert_eq!(
            (&event["data"]["name"], &event["data"]["price"]),
            (&json!("ok"), &json!(2.5)),
            "{ctx}: a refused update sent {event}"
        );
        let events = db_events_until_barrier(&app, &mut s).await;
        assert!(
            events.is_empty(),
            "{ctx}: only the writes that went through send events, got {events:?}"
        );
    }
}

/// The repository's example `announce.js`, run as the README tour runs it: every
/// signed-in reader of items hears `itemAdded` with the id and name only (no creator
/// email), and an anonymous socket hears nothing.
#[tokio::test]
async fn the_example_announce_action_tells_signed_in_readers_only_and_no_email() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = std::fs::read_to_string(repo.join("actions/items/afterCreate/announce.js"))
        .expect("example action is in the repository");
    for backend in backends() {
        let ctx = backend.name();
        let app = items(Spawn::new(&backend))
            .action("items/afterCreate/announce.js", &code)
            .start()
            .await;
        let ann = app.user("ann@x.test", "User").await;
        let ro = app.user("ro@x.test", "ReadOnly").await;
        let mut ann_socket = app.socket(&ann.token).await;
        let mut ro_socket = app.socket(&ro.token).await;
        let mut guest = Sio::connect(
            &app.base,
            Some(json!({ "anonymousToken": crate::common::ANON })),
        )
        .await
        .expect("anonymous socket connects");

        let (status, created) = app
            .post("/1/objects/items", &ann.cred(), json!({ "name": "eggs" }))
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let id = id_of(&created);
        for s in [&mut ann_socket, &mut ro_socket] {
            let note = s.expect("itemAdded").await;
            assert_eq!(note, json!({ "id": id, "name": "eggs" }), "{ctx}");
        }
        guest.assert_none(&app, "itemAdded").await;
        // Exactly one each: one emit per role, and a socket has one role.
        ann_socket.assert_none(&app, "itemAdded").await;
    }
}
