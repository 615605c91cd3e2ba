//! `POST /1/bulk`: steps through the same checks as single requests, in one
//! transaction; events, after actions and held emits only once everything committed;
//! a failing step rolls all back and is named in the answer.

use std::sync::{Arc, Mutex};

use livebase::auth::Identity;
use livebase::records::{BoxFuture, RecordEvent, Records, WriteHook};
use serde_json::{Value, json};

use crate::common::*;
use crate::sio::Sio;

/// Emits what it saw, held until the write commits; refuses `name: "boom"`.
const BEFORE_CREATE: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  if (userInput.name === "boom") throw new Error("no booms here");
  socket.emitAll("before_seen", { name: userInput.name });
  return {};
}"#;

const AFTER_UPDATE: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  socket.emitAll("after_seen", { id: dbRow.id });
  return {};
}"#;

/// Writes through `db` from a before action: on SQLite's single writer this deadlocks if
/// the bulk's transaction is already open when before actions run.
const BEFORE_DELETE: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  db.create('audit', { what: 'delete ' + dbRow.id });
  return {};
}"#;

/// For every committed `items` event: whether each of the named rows existed when its
/// after hook ran (the bulk's rows must all be committed by the first step's).
#[derive(Default)]
struct Witness {
    watch: Mutex<Vec<i64>>,
    seen: Mutex<Vec<(u64, i64, Vec<bool>)>>,
}

impl WriteHook for Witness {
    fn after<'a>(
        &'a self,
        records: &'a Records,
        event: &'a RecordEvent,
    ) -> BoxFuture<'a, Vec<Value>> {
        Box::pin(async move {
            if event.object != "items" {
                return Vec::new();
            }
            let watch = self.watch.lock().unwrap().clone();
            let mut present = Vec::new();
            for id in watch {
                present.push(records.get(&Identity::system(), "items", id).await.is_ok());
            }
            self.seen
                .lock()
                .unwrap()
                .push((event.seq, event.id, present));
            Vec::new()
        })
    }
}

struct Fixture {
    app: TestApp,
    alice: User,
    bob: User,
    witness: Arc<Witness>,
}

async fn start(backend: &Backend) -> Fixture {
    let perms =
        json!({ "read": ["User"], "create": ["User"], "update": ["User"], "delete": ["User"] });
    let witness = Arc::new(Witness::default());
    let app = Spawn::new(backend)
        .schema(
            "items.json",
            json!({ "name": "items",
                    "fields": { "name": { "type": "string", "required": true },
                                "code": { "type": "string", "unique": true } },
                    "permissions": perms, "rowSecurity": "ownerWrite" }),
        )
        .schema(
            "locked.json",
            json!({ "name": "locked", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["User"], "create": ["Admin"], "update": ["Admin"], "delete": ["Admin"] } }),
        )
        .action("items/beforeCreate/guard.js", BEFORE_CREATE)
        .schema(
            "audit.json",
            json!({ "name": "audit", "fields": { "what": { "type": "string" } },
                    "permissions": perms }),
        )
        .action("items/afterUpdate/tell.js", AFTER_UPDATE)
        .action("items/beforeDelete/audit.js", BEFORE_DELETE)
        .hook(witness.clone())
        .start()
        .await;
    let alice = app.user("alice@bulk.test", "User").await;
    let bob = app.user("bob@bulk.test", "User").await;
    Fixture {
        app,
        alice,
        bob,
        witness,
    }
}

async fn create(app: &TestApp, who: &User, name: &str, code: &str) -> i64 {
    let (status, body) = app
        .post(
            "/1/objects/items",
            &who.cred(),
            json!({ "name": name, "code": code }),
        )
        .await;
    assert_eq!(status, 200, "create {name}: {body}");
    id_of(&body)
}

/// A socket of `who` on the `db-items` channel, with nothing pending.
async fn watcher(app: &TestApp, who: &User) -> Sio {
    let mut s = app.socket(&who.token).await;
    assert_eq!(s.call("join", json!("db-items")).await["ok"], json!(true));
    let marker = app.barrier().await;
    s.until_barrier(&marker).await;
    s
}

/// Names of the events that reached `s` up to a fresh barrier, with their first argument.
async fn received(app: &TestApp, s: &mut Sio) -> Vec<(String, Value)> {
    let marker = app.barrier().await;
    s.until_barrier(&marker)
        .await
        .into_iter()
        .map(|(name, mut args)| {
            let first = if args.is_empty() {
                Value::Null
            } else {
                args.remove(0)
            };
            (name, first)
        })
        .collect()
}

async fn bulk(app: &TestApp, who: &Cred, steps: Value) -> (u16, Value) {
    app.post("/1/bulk", who, steps).await
}

#[tokio::test]
async fn bulk_steps_commit_together_then_events_follow_in_order() {
    for backend in backends() {
        let name = backend.name();
        let Fixture {
            app,
            alice,
            witness,
            ..
        } = start(&backend).await;
        let a = create(&app, &alice, "a", "ca").await;
        let b = create(&app, &alice, "b", "cb").await;
        let mut s = watcher(&app, &alice).await;
        witness.seen.lock().unwrap().clear();
        *witness.watch.lock().unwrap() = vec![b];
        let mut bus = app.state.records.subscribe();

        let (status, answer) = bulk(
            &app,
            &alice.cred(),
            json!([
                { "method": "POST", "url": "/1/objects/items", "data": { "name": "c", "code": "cc" } },
                { "method": "PUT", "url": format!("{}/1/objects/items/{a}?returnObject=true", app.base),
                  "data": { "name": "a2" }, "headers": { "Authorization": format!("Bearer {}", alice.token) } },
                { "method": "delete", "url": format!("1/objects/items/{b}") },
            ]),
        )
        .await;
        assert_eq!(status, 200, "{name}: {answer}");
        let answers = answer.as_array().expect("an array answer");
        assert_eq!(answers.len(), 3, "{name}: one answer per step: {answer}");
        let c = id_of(&answers[0]);
        assert_eq!(
            answers[1]["id"],
            json!(a),
            "{name}: returnObject answers the row"
        );
        assert_eq!(answers[1]["name"], "a2", "{name}");
        assert_eq!(id_of(&answers[2]), b, "{name}: a delete answers its id");

        assert_eq!(app.row("items", c).await["name"], "c", "{name}");
        assert_eq!(app.row("items", a).await["name"], "a2", "{name}");
        let (status, _) = app.get(&format!("/1/objects/items/{b}"), &master()).await;
        assert_eq!(status, 404, "{name}: deleted");

        // Bus: three `items` events, consecutive numbers, in step order.
        let mut events = Vec::new();
        while events.len() < 3 {
            let event = bus.recv().await.unwrap();
            // The audit row the delete's before action writes, before the bulk commits.
            if event.object == "items" {
                events.push(event);
            }
        }
        let kinds: Vec<(&str, i64)> = events.iter().map(|e| (verb_name(e), e.id)).collect();
        assert_eq!(
            kinds,
            vec![("created", c), ("updated", a), ("deleted", b)],
            "{name}"
        );
        assert_eq!(events[1].seq, events[0].seq + 1, "{name}: consecutive");
        assert_eq!(events[2].seq, events[1].seq + 1, "{name}: consecutive");
        assert_eq!(
            events[1].previous.as_ref().unwrap().fields["name"],
            "a",
            "{name}: the update's previous row"
        );

        // The first step's after hook already saw the third step's delete: no event
        // leaves before the whole bulk committed.
        let seen = witness.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{name}: {seen:?}");
        assert_eq!(seen[0].1, c, "{name}");
        assert!(
            seen.iter().all(|(_, _, present)| present == &vec![false]),
            "{name}: row {b} was gone for every after hook: {seen:?}"
        );

        // The socket: the held before-action emit, the after action's, and exactly the
        // three db events, in order.
        let got = received(&app, &mut s).await;
        let db: Vec<(String, Value)> = got
            .iter()
            .filter(|(n, _)| n.starts_with("db_"))
            .cloned()
            .collect();
        assert_eq!(db.len(), 3, "{name}: {got:?}");
        assert_eq!(db[0].0, "db_created", "{name}");
        assert_eq!(db[0].1["data"]["id"], json!(c), "{name}");
        assert_eq!(db[1].0, "db_updated", "{name}");
        assert_eq!(db[1].1["data"]["name"], "a2", "{name}");
        assert_eq!(db[2].0, "db_deleted", "{name}");
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"before_seen"), "{name}: {names:?}");
        assert!(names.contains(&"after_seen"), "{name}: {names:?}");
    }
}

fn verb_name(event: &RecordEvent) -> &'static str {
    match event.verb {
        livebase::records::Verb::Created => "created",
        livebase::records::Verb::Updated => "updated",
        livebase::records::Verb::Deleted => "deleted",
    }
}

#[tokio::test]
async fn a_failing_step_rolls_back_every_step_and_is_named() {
    for backend in backends() {
        let name = backend.name();
        let Fixture {
            app, alice, bob, ..
        } = start(&backend).await;
        let a = create(&app, &alice, "a", "ca").await;
        let theirs = create(&app, &bob, "bobs", "cbob").await;
        let mut s = watcher(&app, &alice).await;
        let before = app.all_rows("items").await;
        let first_two = |third: Value| {
            json!([
                { "method": "POST", "url": "/1/objects/items", "data": { "name": "x1", "code": "cx1" } },
                { "method": "PUT", "url": format!("/1/objects/items/{a}"), "data": { "name": "changed" } },
                third,
            ])
        };
        // (what, steps, status, the failing step, text in the message)
        let cases: Vec<(&str, Value, u16, u64, String)> = vec![
            (
                "unknown id",
                first_two(
                    json!({ "method": "PUT", "url": "/1/objects/items/999999", "data": { "name": "n" } }),
                ),
                404,
                3,
                "step 3 (PUT /1/objects/items/999999): no `items` row with id 999999".into(),
            ),
            (
                "validation",
                first_two(
                    json!({ "method": "POST", "url": "/1/objects/items", "data": { "name": 5 } }),
                ),
                400,
                3,
                "step 3 (POST /1/objects/items): ".into(),
            ),
            (
                "permission",
                first_two(
                    json!({ "method": "POST", "url": "/1/objects/locked", "data": { "name": "n" } }),
                ),
                403,
                3,
                "step 3 (POST /1/objects/locked): role `User` may not".into(),
            ),
            (
                "another user's row",
                first_two(
                    json!({ "method": "DELETE", "url": format!("/1/objects/items/{theirs}") }),
                ),
                403,
                3,
                format!("step 3 (DELETE /1/objects/items/{theirs}): only the user who created"),
            ),
            (
                "unique against a stored row",
                first_two(
                    json!({ "method": "POST", "url": "/1/objects/items", "data": { "name": "d", "code": "ca" } }),
                ),
                409,
                3,
                "step 3 (POST /1/objects/items): field `code` must be unique".into(),
            ),
            (
                "unique against an earlier step",
                first_two(
                    json!({ "method": "POST", "url": "/1/objects/items", "data": { "name": "d", "code": "cx1" } }),
                ),
                409,
                3,
                "field `code` must be unique".into(),
            ),
            (
                "a before action refuses step 2",
                json!([
                    { "method": "POST", "url": "/1/objects/items", "data": { "name": "x1" } },
                    { "method": "POST", "url": "/1/objects/items", "data": { "name": "boom" } },
                    { "method": "PUT", "url": format!("/1/objects/items/{a}"), "data": { "name": "changed" } },
                ]),
                400,
                2,
                "step 2 (POST /1/objects/items): ".into(),
            ),
        ];
        for (what, steps, status, step, text) in cases {
            let (got, body) = bulk(&app, &alice.cred(), steps).await;
            assert_eq!(got, status, "{name}, {what}: {body}");
            let message = body["Message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&text),
                "{name}, {what}: `{message}` names `{text}`"
            );
            assert!(
                message.starts_with(&format!("step {step} (")),
                "{name}, {what}: {message}"
            );
            assert_eq!(body["step"], json!(step), "{name}, {what}: {body}");
            if what.starts_with("a before action") {
                assert!(message.contains("no booms here"), "{name}: {message}");
            }
            assert_eq!(
                app.all_rows("items").await,
                before,
                "{name}, {what}: every row as it was"
            );
            let got = received(&app, &mut s).await;
            assert!(
                got.is_empty(),
                "{name}, {what}: no event, no held emit, no after action: {got:?}"
            );
        }
    }
}

#[tokio::test]
async fn malformed_bulks_are_refused_by_name_and_write_nothing() {
    for backend in backends() {
        let name = backend.name();
        let Fixture {
            app, alice, bob, ..
        } = start(&backend).await;
        let good = json!({ "method": "POST", "url": "/1/objects/items", "data": { "name": "ok" } });
        let too_many: Vec<Value> = (0..1001).map(|_| good.clone()).collect();
        // (what, body, status, text in the message)
        let cases: Vec<(&str, Value, u16, &str)> = vec![
            (
                "not an array",
                json!({ "method": "POST" }),
                400,
                "JSON array",
            ),
            (
                "a step not an object",
                json!([good, 5]),
                400,
                "step 2: a step is an object",
            ),
            (
                "unknown key",
                json!([good, { "method": "POST", "url": "/1/objects/items", "body": {} }]),
                400,
                "step 2: unknown key `body`",
            ),
            (
                "a read",
                json!([good, { "method": "GET", "url": "/1/objects/items" }]),
                400,
                "step 2: bulk steps create, update or delete rows",
            ),
            (
                "PUT without an id",
                json!([{ "method": "PUT", "url": "/1/objects/items", "data": {} }, good]),
                400,
                "step 1: bulk steps create, update or delete rows",
            ),
            (
                "another route",
                json!([good, { "method": "POST", "url": "/1/query/data/q" }]),
                400,
                "step 2: bulk steps create, update or delete rows",
            ),
            (
                "an action",
                json!([good, { "method": "POST", "url": "/1/objects/action/items" }]),
                400,
                "bulk steps create, update or delete rows",
            ),
            (
                "a bad id",
                json!([good, { "method": "DELETE", "url": "/1/objects/items/abc" }]),
                400,
                "step 2: row id must be a positive integer",
            ),
            (
                "no url",
                json!([{ "method": "POST" }]),
                400,
                "step 1: `url` is required",
            ),
            (
                "another user's token",
                json!([good, { "method": "POST", "url": "/1/objects/items", "data": { "name": "x" },
                               "headers": { "authorization": format!("Bearer {}", bob.token) } }]),
                403,
                "step 2 (POST /1/objects/items): a step runs as the bulk's caller",
            ),
            (
                "the anonymous token",
                json!([good, { "method": "POST", "url": "/1/objects/items", "data": { "name": "x" },
                               "headers": { "AnonymousToken": ANON } }]),
                403,
                "step 2 (POST /1/objects/items): a step runs as the bulk's caller",
            ),
            (
                "too many steps",
                Value::Array(too_many),
                413,
                "at most 1000 steps",
            ),
        ];
        for (what, body, status, text) in cases {
            let (got, answer) = bulk(&app, &alice.cred(), body).await;
            assert_eq!(got, status, "{name}, {what}: {answer}");
            let message = answer["Message"].as_str().unwrap_or_default();
            assert!(
                message.contains(text),
                "{name}, {what}: `{message}` has `{text}`"
            );
            assert!(
                app.all_rows("items").await.is_empty(),
                "{name}, {what}: nothing written"
            );
        }

        let resp = app
            .client
            .post(app.url("/1/bulk"))
            .header("Authorization", format!("Bearer {}", alice.token))
            .header("Content-Type", "application/json")
            .body("[{\"method\": \"POST\",")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{name}: malformed JSON");
        let answer: Value = resp.json().await.unwrap();
        assert!(
            answer["Message"]
                .as_str()
                .unwrap()
                .contains("malformed JSON"),
            "{name}: {answer}"
        );

        let huge = "x".repeat(1024 * 1024);
        let (status, answer) = bulk(
            &app,
            &alice.cred(),
            json!([{ "method": "POST", "url": "/1/objects/items", "data": { "name": huge } }]),
        )
        .await;
        assert_eq!(status, 413, "{name}: over the body limit: {answer}");

        let (status, answer) = bulk(&app, &Cred::None, json!([good])).await;
        assert_eq!(status, 401, "{name}: a bulk needs credentials: {answer}");
        let (status, answer) = bulk(&app, &alice.cred(), json!([])).await;
        assert_eq!((status, answer), (200, json!([])), "{name}: nothing to do");
        assert!(app.all_rows("items").await.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn bulk_over_a_sails_socket_request_runs_as_the_socket() {
    for backend in backends() {
        let name = backend.name();
        let Fixture { app, alice, .. } = start(&backend).await;
        let a = create(&app, &alice, "a", "ca").await;
        let s = app.socket(&alice.token).await;
        let ack = s
            .call(
                "post",
                json!({ "method": "post", "url": "/1/bulk", "data": [
                    { "method": "POST", "url": "/1/objects/items", "data": { "name": "s1" } },
                    { "method": "PUT", "url": format!("/1/objects/items/{a}"), "data": { "name": "a3" } },
                ] }),
            )
            .await;
        assert_eq!(ack["statusCode"], json!(200), "{name}: {ack}");
        let created = id_of(&ack["body"][0]);
        assert_eq!(id_of(&ack["body"][1]), a, "{name}: {ack}");
        let row = app.row("items", created).await;
        assert_eq!(row["name"], "s1", "{name}");
        assert_eq!(app.row("items", a).await["name"], "a3", "{name}");
        // Owned by the socket's user: only the owner may change an `ownerWrite` row.
        let (status, mine) = app
            .put(
                &format!("/1/objects/items/{created}"),
                &alice.cred(),
                json!({ "name": "s2" }),
            )
            .await;
        assert_eq!(status, 200, "{name}: {mine}");
    }
}

#[tokio::test]
async fn before_actions_may_write_through_db_during_a_bulk() {
    for backend in backends() {
        let name = backend.name();
        let Fixture { app, alice, .. } = start(&backend).await;
        let a = create(&app, &alice, "a", "ca").await;
        let b = create(&app, &alice, "b", "cb").await;
        let (status, answer) = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            bulk(
                &app,
                &alice.cred(),
                json!([{ "method": "DELETE", "url": format!("/1/objects/items/{a}") }]),
            ),
        )
        .await
        .expect("the bulk answers: staging runs before its transaction opens");
        assert_eq!(status, 200, "{name}: {answer}");
        let audit: Vec<Value> = app.all_rows("audit").await;
        assert_eq!(audit.len(), 1, "{name}: {audit:?}");
        assert_eq!(audit[0]["what"], format!("delete {a}"), "{name}");

        // A before action's own writes are its own: they stay when a later step fails
        // (as they do when a single write fails after its before actions).
        let (status, answer) = bulk(
            &app,
            &alice.cred(),
            json!([
                { "method": "DELETE", "url": format!("/1/objects/items/{b}") },
                { "method": "PUT", "url": "/1/objects/items/999999", "data": { "name": "n" } },
            ]),
        )
        .await;
        assert_eq!(status, 404, "{name}: {answer}");
        assert_eq!(app.row("items", b).await["name"], "b", "{name}: b kept");
        assert_eq!(app.all_rows("audit").await.len(), 2, "{name}");
    }
}

#[tokio::test]
async fn later_steps_write_over_earlier_ones_in_the_transaction() {
    for backend in backends() {
        let name = backend.name();
        let Fixture { app, alice, .. } = start(&backend).await;
        let a = create(&app, &alice, "a", "ca").await;
        let b = create(&app, &alice, "b", "cb").await;
        let mut bus = app.state.records.subscribe();
        let url = format!("/1/objects/items/{a}");
        let (status, answer) = bulk(
            &app,
            &alice.cred(),
            json!([
                { "method": "PUT", "url": url, "data": { "name": "a2" } },
                { "method": "DELETE", "url": url },
            ]),
        )
        .await;
        assert_eq!(status, 200, "{name}: {answer}");
        let (status, _) = app.get(&url, &master()).await;
        assert_eq!(status, 404, "{name}: deleted");
        let mut items = Vec::new();
        while items.len() < 2 {
            let event = bus.recv().await.unwrap();
            if event.object == "items" {
                items.push(event);
            }
        }
        assert_eq!(
            items[1].previous.as_ref().unwrap().fields["name"],
            "a2",
            "{name}: the delete removed the row as the update left it"
        );

        let url = format!("/1/objects/items/{b}");
        let (status, answer) = bulk(
            &app,
            &alice.cred(),
            json!([
                { "method": "DELETE", "url": url },
                { "method": "PUT", "url": url, "data": { "name": "b2" } },
            ]),
        )
        .await;
        assert_eq!(status, 404, "{name}: {answer}");
        assert_eq!(answer["step"], json!(2), "{name}: {answer}");
        assert_eq!(app.row("items", b).await["name"], "b", "{name}: kept");
    }
}
