//! The write path's extension points: before hooks change or refuse a write, after
//! hooks see what committed, and every committed change becomes one event on the bus;
//! a refused write leaves nothing behind and publishes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use livebase::error::ApiError;
use livebase::records::{BoxFuture, Change, RecordEvent, Records, Staged, Verb, WriteHook};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::TryRecvError;

use crate::common::*;

/// Upper-cases `name`, stamps who wrote it, refuses `name: "forbidden"` with 422 and
/// deleting rows named `keep`; records what it saw.
/// (verb, id, row after, row before) as an after hook saw them.
type AfterSeen = (Verb, i64, Option<Value>, Option<Value>);

#[derive(Default)]
struct Recorder {
    before: Mutex<Vec<(Verb, Option<Value>)>>,
    after: Mutex<Vec<AfterSeen>>,
}

impl WriteHook for Recorder {
    fn before<'a>(
        &'a self,
        write: &'a Change<'a>,
        input: &'a mut Map<String, Value>,
        _staged: &'a mut Staged,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if write.object.name != "items" {
                return Ok(());
            }
            self.before
                .lock()
                .unwrap()
                .push((write.verb, write.previous.map(|r| r.to_json())));
            if input.get("name") == Some(&json!("forbidden")) {
                return Err(ApiError::Status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "names like that are refused".into(),
                ));
            }
            if write.verb == Verb::Deleted
                && write.previous.is_some_and(|p| p.fields["name"] == "KEEP")
            {
                return Err(ApiError::bad("this row is kept"));
            }
            if input.get("name") == Some(&json!("sabotage")) {
                input.insert("name".into(), json!(5));
                return Ok(());
            }
            if let Some(Value::String(name)) = input.get("name") {
                let upper = name.to_uppercase();
                input.insert("name".into(), Value::String(upper));
            }
            if write.verb == Verb::Created {
                input.insert("writer".into(), Value::String(write.who.username.clone()));
            }
            Ok(())
        })
    }

    fn after<'a>(
        &'a self,
        _records: &'a Records,
        event: &'a RecordEvent,
    ) -> BoxFuture<'a, Vec<Value>> {
        Box::pin(async move {
            if event.object != "items" {
                return Vec::new();
            }
            self.after.lock().unwrap().push((
                event.verb,
                event.id,
                event.record.as_ref().map(|r| r.to_json()),
                event.previous.as_ref().map(|r| r.to_json()),
            ));
            Vec::new()
        })
    }
}

#[tokio::test]
async fn hooks_change_refuse_and_observe_writes() {
    for backend in backends() {
        let name = backend.name();
        let recorder = Arc::new(Recorder::default());
        let app = Spawn::new(&backend)
            .schema(
                "items.json",
                json!({
                    "name": "items",
                    "fields": { "name": { "type": "string", "required": true }, "writer": { "type": "string" } },
                    "permissions": { "read": ["User"], "create": ["User"], "update": ["User"], "delete": ["User"] }
                }),
            )
            .hook(recorder.clone())
            .start()
            .await;
        let user = app.user("w@t.io", "User").await;
        recorder.before.lock().unwrap().clear();
        recorder.after.lock().unwrap().clear();
        let mut bus = app.state.records.subscribe();

        // Create: the hook's changes are what is written.
        let (s, row) = app
            .post(
                "/1/objects/items?returnObject=true",
                &user.cred(),
                json!({ "name": "milk" }),
            )
            .await;
        assert_eq!(s, 200, "{name}: {row}");
        assert_eq!(row["name"], "MILK", "{name}");
        assert_eq!(row["writer"], "w@t.io", "{name}");
        let id = row["id"].as_i64().unwrap();
        let event = bus.recv().await.unwrap();
        assert_eq!(
            (event.verb, event.id, event.object.as_str()),
            (Verb::Created, id, "items")
        );
        assert_eq!(event.record.as_ref().unwrap().fields["name"], "MILK");
        assert!(event.previous.is_none());
        assert_eq!(event.actor.user_id, Some(user.id));

        // Refused create: the hook's status and message, nothing written, no event.
        let (s, body) = app
            .post(
                "/1/objects/items",
                &user.cred(),
                json!({ "name": "forbidden" }),
            )
            .await;
        assert_eq!(s, 422, "{name}: {body}");
        assert_eq!(body["Message"], "names like that are refused");
        assert_eq!(
            app.all_rows("items").await.len(),
            1,
            "{name}: nothing written"
        );

        // A hook that leaves an invalid value is caught by validation after it.
        let (s, body) = app
            .post(
                "/1/objects/items",
                &user.cred(),
                json!({ "name": "sabotage" }),
            )
            .await;
        assert_eq!(s, 400, "{name}: {body}");
        assert!(
            body["Message"].as_str().unwrap().contains("`name`"),
            "{name}: {body}"
        );
        assert_eq!(
            app.all_rows("items").await.len(),
            1,
            "{name}: nothing written"
        );

        // Update: the hook sees the stored row; the event carries before and after.
        let (s, row) = app
            .put(
                &format!("/1/objects/items/{id}?returnObject=true"),
                &user.cred(),
                json!({ "name": "keep" }),
            )
            .await;
        assert_eq!(s, 200, "{name}: {row}");
        assert_eq!(row["name"], "KEEP");
        let event = bus.recv().await.unwrap();
        assert_eq!(event.verb, Verb::Updated);
        assert_eq!(event.previous.as_ref().unwrap().fields["name"], "MILK");
        assert_eq!(event.record.as_ref().unwrap().fields["name"], "KEEP");

        // Refused delete: row still there, no event.
        let (s, body) = app
            .delete(&format!("/1/objects/items/{id}"), &user.cred())
            .await;
        assert_eq!(s, 400, "{name}: {body}");
        assert_eq!(body["Message"], "this row is kept");
        assert_eq!(app.all_rows("items").await.len(), 1, "{name}: row kept");

        // A deletable row: delete publishes the removed row as `previous`.
        let (_, other) = app
            .post("/1/objects/items", &user.cred(), json!({ "name": "bread" }))
            .await;
        let other_id: i64 = other["__metadata"]["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(bus.recv().await.unwrap().verb, Verb::Created);
        let (s, _) = app
            .delete(&format!("/1/objects/items/{other_id}"), &user.cred())
            .await;
        assert_eq!(s, 200, "{name}");
        let event = bus.recv().await.unwrap();
        assert_eq!((event.verb, event.id), (Verb::Deleted, other_id));
        assert!(event.record.is_none());
        assert_eq!(event.previous.as_ref().unwrap().fields["name"], "BREAD");

        // Nothing else was published: refusals left no trace on the bus.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            matches!(bus.try_recv(), Err(TryRecvError::Empty)),
            "{name}: no stray events"
        );

        let before: Vec<Verb> = recorder
            .before
            .lock()
            .unwrap()
            .iter()
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(
            before,
            vec![
                Verb::Created,
                Verb::Created,
                Verb::Created,
                Verb::Updated,
                Verb::Deleted,
                Verb::Created,
                Verb::Deleted
            ],
            "{name}: before hooks ran for every attempt"
        );
        let recorded_prev = recorder.before.lock().unwrap()[3].1.clone().unwrap();
        assert_eq!(
            recorded_prev["name"], "MILK",
            "{name}: before-update hook saw the stored row"
        );
        let after: Vec<(Verb, i64)> = recorder
            .after
            .lock()
            .unwrap()
            .iter()
            .map(|(v, id, _, _)| (*v, *id))
            .collect();
        assert_eq!(
            after,
            vec![
                (Verb::Created, id),
                (Verb::Updated, id),
                (Verb::Created, other_id),
                (Verb::Deleted, other_id)
            ],
            "{name}: after hooks ran only for committed writes"
        );
    }
}
