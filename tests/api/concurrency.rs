//! Concurrent writers: every acknowledged create lands, each with its own id.

use std::collections::BTreeSet;

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn two_hundred_concurrent_creates_all_land() {
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema(
                "items.json",
                json!({
                    "name": "items",
                    "fields": { "n": { "type": "int", "required": true, "unique": true } },
                    "permissions": { "read": ["User"], "create": ["User"] },
                    "rowSecurity": "owner"
                }),
            )
            .start()
            .await;
        let user = app.user("writer@t.io", "User").await;
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        for n in 0..200 {
            let app = app.clone();
            let cred = user.cred();
            tasks.push(tokio::spawn(async move {
                app.post("/1/objects/items", &cred, json!({ "n": n })).await
            }));
        }
        let mut ids = BTreeSet::new();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, 200, "{}: {body}", backend.name());
            ids.insert(body["__metadata"]["id"].as_str().unwrap().to_string());
        }
        assert_eq!(ids.len(), 200, "{}: distinct ids", backend.name());
        let (status, list) = app
            .get("/1/objects/items?pageSize=1000", &user.cred())
            .await;
        assert_eq!(status, 200);
        assert_eq!(list["totalRows"], 200, "{}", backend.name());
        let stored: BTreeSet<i64> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["n"].as_i64().unwrap())
            .collect();
        assert_eq!(
            stored,
            (0..200).collect(),
            "{}: every value stored once",
            backend.name()
        );
    }
}
