//! The event log (outbox): every committed change's event is written in the same
//! transaction as the change, numbered in commit order; events on the wire carry that
//! number; a refused or failed write leaves no event and takes no number; a before
//! action's emits are logged with their write and leave with its number; after actions
//! see the number; the log is pruned past its retention.

use serde_json::{Value, json};

use super::{id_of, objects};
use crate::common::{Spawn, backends};
use crate::sio::Incoming;

/// `(name, args)` of the next event named one of `names` (others are skipped).
async fn next_of(s: &mut crate::sio::Sio, names: &[&str]) -> (String, Vec<Value>) {
    loop {
        match s.next(std::time::Duration::from_secs(10)).await {
            Some(Incoming::Event(name, args)) if names.contains(&name.as_str()) => {
                return (name, args);
            }
            Some(Incoming::Event(..)) => continue,
            other => panic!("socket ended or went quiet waiting for {names:?}: {other:?}"),
        }
    }
}

const BEFORE: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  if (userInput.title === 'refuse') { throw { status: 400, message: 'refused' }; }
  socket.emitAll('before_said', { title: userInput.title });
  return {};
}"#;

const AFTER: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  db.create('audits', { seq: parameters.seq, post: dbRow.id });
  return {};
}"#;

fn with_audits(spawn: Spawn<'_>) -> Spawn<'_> {
    objects(spawn)
        .schema(
            "audits.json",
            json!({ "name": "audits",
                    "fields": { "seq": { "type": "int" }, "post": { "type": "int" } },
                    "permissions": { "read": ["User"], "create": ["User"] } }),
        )
        .action("posts/beforeCreate/say.js", BEFORE)
        .action("posts/afterCreate/audit.js", AFTER)
}

#[tokio::test]
async fn every_event_carries_its_log_number_and_refused_writes_take_none() {
    for backend in backends() {
        let app = with_audits(Spawn::new(&backend)).start().await;
        let alice = app.user("alice@x.test", "User").await;
        let mut s = app.socket(&alice.token).await;
        assert_eq!(s.call("join", json!("db-posts")).await["ok"], json!(true));
        // A Sails `get` watches the object's new rows.
        let watched = super::support::req(&s, "get", "/posts", Value::Null).await;
        assert_eq!(watched["statusCode"], 200, "{watched}");

        let (status, first) = app
            .post("/1/objects/posts", &alice.cred(), json!({ "title": "one" }))
            .await;
        assert_eq!(status, 200, "{first}");
        // The before action's emit leaves with its write's number, before the write's
        // own events.
        let (_, said) = next_of(&mut s, &["before_said"]).await;
        assert_eq!(said[0], json!({ "title": "one" }));
        let seq = said[1]["seq"]
            .as_u64()
            .expect("the emit carries {seq} as a second argument");
        let (_, db) = next_of(&mut s, &["db_created"]).await;
        assert_eq!(db[0]["seq"], json!(seq), "{db:?}");
        assert_eq!(db[0]["data"]["id"], json!(id_of(&first)));
        let (_, sails) = next_of(&mut s, &["posts"]).await;
        assert_eq!(sails[0]["verb"], "created");
        assert_eq!(sails[0]["seq"], json!(seq), "{sails:?}");
        let (_, lb) = next_of(&mut s, &["/posts/POST"]).await;
        assert_eq!(lb[0]["id"], json!(id_of(&first)));
        assert_eq!(
            lb[1],
            json!({ "seq": seq }),
            "LoopBack names get {{seq}} second"
        );

        // Refused by a before action, and refused by validation: no event, no number,
        // and the refused action's emit never leaves.
        let (status, _) = app
            .post(
                "/1/objects/posts",
                &alice.cred(),
                json!({ "title": "refuse" }),
            )
            .await;
        assert_eq!(status, 400);
        let (status, _) = app
            .post(
                "/1/objects/posts",
                &alice.cred(),
                json!({ "title": 12, "nope": 1 }),
            )
            .await;
        assert_eq!(status, 400);

        let (status, second) = app
            .put(
                &format!("/1/objects/posts/{}", id_of(&first)),
                &alice.cred(),
                json!({ "title": "two" }),
            )
            .await;
        assert_eq!(status, 200, "{second}");
        let (_, db) = next_of(&mut s, &["db_updated", "before_said"]).await;
        // Numbered after the create (seq) and the after action's audit row (seq + 1).
        assert_eq!(
            db[0]["seq"],
            json!(seq + 2),
            "the next committed change is numbered next: {db:?}"
        );
        let (status, _) = app
            .delete(
                &format!("/1/objects/posts/{}", id_of(&first)),
                &alice.cred(),
            )
            .await;
        assert_eq!(status, 200);
        let (_, db) = next_of(&mut s, &["db_deleted"]).await;
        assert_eq!(db[0]["seq"], json!(seq + 3), "{db:?}");
        assert_eq!(db[0]["data"], json!(id_of(&first)));
        let (_, lb) = next_of(&mut s, &[&format!("/posts/{}/DELETE", id_of(&first))]).await;
        assert_eq!(lb[1], json!({ "seq": seq + 3 }));
        s.assert_none(&app, "before_said").await;

        // The log holds exactly the committed changes, each with its row, and the after
        // action saw the create's number (its own write is the audit, numbered after).
        let logged = app.state.store.events_after(seq - 1, 100).await.unwrap();
        let kinds: Vec<_> = logged
            .iter()
            .map(|e| (e.seq, e.object.as_str(), e.verb.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (seq, "posts", "created"),
                (seq + 1, "audits", "created"),
                (seq + 2, "posts", "updated"),
                (seq + 3, "posts", "deleted"),
            ],
            "{kinds:?}"
        );
        assert!(
            logged.iter().all(|e| !e.after_pending),
            "after hooks ran and were marked done"
        );
        let body: Value = serde_json::from_str(&logged[0].body).unwrap();
        assert_eq!(body["record"]["fields"]["title"], "one", "{body}");
        assert_eq!(body["emits"][0]["event"], "before_said", "{body}");
        let audits = app.all_rows("audits").await;
        assert_eq!(audits.len(), 1, "{audits:?}");
        assert_eq!(
            audits[0]["seq"],
            json!(seq),
            "the after action saw the event's number"
        );
        assert_eq!(audits[0]["post"], json!(id_of(&first)));
        app.stop().await;
    }
}

#[tokio::test]
async fn a_bulk_write_numbers_its_events_consecutively_or_not_at_all() {
    for backend in backends() {
        let app = objects(Spawn::new(&backend)).start().await;
        let alice = app.user("alice@x.test", "User").await;
        let mut s = app.socket(&alice.token).await;
        assert_eq!(s.call("join", json!("db-posts")).await["ok"], json!(true));
        let (_, head) = app.state.store.event_bounds().await.unwrap();
        let ops = |titles: &[Value]| {
            Value::Array(
                titles
                    .iter()
                    .map(|t| json!({ "method": "POST", "url": "/1/objects/posts", "data": { "title": t } }))
                    .collect(),
            )
        };
        // The third step fails validation (an unknown field): nothing is written, nothing numbered.
        let (status, _) = app
            .post(
                "/1/bulk",
                &alice.cred(),
                ops(&[json!("a"), json!("b"), json!({ "x": 1 })]),
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(app.state.store.event_bounds().await.unwrap().1, head);
        let (status, answer) = app
            .post(
                "/1/bulk",
                &alice.cred(),
                ops(&[json!("a"), json!("b"), json!("c")]),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        for (i, title) in ["a", "b", "c"].iter().enumerate() {
            let got = s.expect("db_created").await;
            assert_eq!(got["data"]["title"], *title);
            assert_eq!(got["seq"], json!(head + 1 + i as u64), "{got}");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn pruning_keeps_the_newest_events_and_never_reuses_a_number() {
    for backend in backends() {
        let app = objects(Spawn::new(&backend)).start().await;
        let alice = app.user("alice@x.test", "User").await;
        for i in 0..12 {
            let (status, _) = app
                .post(
                    "/1/objects/posts",
                    &alice.cred(),
                    json!({ "title": format!("p{i}") }),
                )
                .await;
            assert_eq!(status, 200);
        }
        let store = &app.state.store;
        let (_, head) = store.event_bounds().await.unwrap();
        // Keep 5 by count (and a day by age).
        let pruned = store.prune_events(5, 86_400_000).await.unwrap();
        assert!(pruned >= 7, "pruned {pruned}");
        assert_eq!(store.event_bounds().await.unwrap(), (head - 4, head));
        // By age: everything goes, and the head stays where it was.
        store.prune_events(1_000_000, 0).await.unwrap();
        assert_eq!(store.event_bounds().await.unwrap(), (head + 1, head));
        let mut s = app.socket(&alice.token).await;
        assert_eq!(s.call("join", json!("db-posts")).await["ok"], json!(true));
        let (status, _) = app
            .post(
                "/1/objects/posts",
                &alice.cred(),
                json!({ "title": "after" }),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(s.expect("db_created").await["seq"], json!(head + 1));
        app.stop().await;
    }
}
