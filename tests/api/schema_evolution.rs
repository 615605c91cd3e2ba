//! Schema changes between starts: additive ones are applied with data kept; destructive
//! or impossible ones stop the start with a message naming the file and field, and leave
//! the data untouched.

use std::collections::HashMap;
use std::path::Path;

use livebase::auth::Identity;
use livebase::server::{App, build};
use serde_json::{Value, json};

use crate::common::*;

fn items(fields: Value) -> Value {
    json!({
        "name": "items",
        "fields": fields,
        "permissions": { "read": ["User"], "create": ["User"] }
    })
}

fn write_schema(dir: &Path, body: &Value) {
    std::fs::write(dir.join("items.json"), body.to_string()).unwrap();
}

async fn start(
    data: &Path,
    schema: &Path,
    url: &str,
    allow_destructive: bool,
) -> anyhow::Result<App> {
    let mut config = test_config(data, schema, url);
    config.allow_destructive_schema = allow_destructive;
    build(config, Vec::new()).await
}

async fn rows(app: &App) -> Vec<Value> {
    let params = HashMap::from([("pageSize".to_string(), "1000".to_string())]);
    let (_, rows) = app
        .state
        .records
        .list(&Identity::system(), "items", &params)
        .await
        .unwrap();
    let out = rows.iter().map(|r| r.to_json()).collect();
    app.state.store.close().await;
    out
}

#[tokio::test]
async fn additive_changes_apply_and_destructive_ones_are_refused() {
    for backend in backends() {
        let name = backend.name();
        let app = Spawn::new(&backend)
            .schema(
                "items.json",
                items(json!({ "name": { "type": "string" }, "qty": { "type": "int" } })),
            )
            .start()
            .await;
        let admin = app.admin().await;
        for (n, q) in [("a", 1), ("b", 2)] {
            let (s, body) = app
                .post(
                    "/1/objects/items",
                    &admin.cred(),
                    json!({ "name": n, "qty": q }),
                )
                .await;
            assert_eq!(s, 200, "{name}: {body}");
        }
        let (data, schema, url, pg) = app.stop().await;
        let _drop = DropDatabase(pg);
        let original = vec![
            json!({ "id": 1, "name": "a", "qty": 1 }),
            json!({ "id": 2, "name": "b", "qty": 2 }),
        ];

        // Added field: column added, existing rows get the default, data kept.
        let added = items(json!({
            "name": { "type": "string" }, "qty": { "type": "int" },
            "price": { "type": "float", "default": 5 }, "note": { "type": "text" }
        }));
        write_schema(&schema, &added);
        let app = start(data.path(), &schema, &url, false)
            .await
            .expect("additive change starts");
        let got = rows(&app).await;
        assert_eq!(got.len(), 2, "{name}");
        for (row, want) in got.iter().zip(&original) {
            assert_eq!(row["name"], want["name"], "{name}");
            assert_eq!(row["qty"], want["qty"], "{name}");
            assert_eq!(row["price"], 5.0, "{name}: default filled into old rows");
            assert_eq!(row["note"], Value::Null, "{name}");
        }

        // Changed type: refused, naming file and field; nothing altered.
        let retyped = items(json!({
            "name": { "type": "int" }, "qty": { "type": "int" },
            "price": { "type": "float", "default": 5 }, "note": { "type": "text" }
        }));
        write_schema(&schema, &retyped);
        let err = start(data.path(), &schema, &url, false)
            .await
            .err()
            .expect("type change refused");
        let msg = err.to_string();
        assert!(
            msg.contains("items.json")
                && msg.contains("`name`")
                && msg.contains("type changed from string to int"),
            "{name}: {msg}"
        );

        // Removed field: refused the same way.
        let removed = items(json!({
            "name": { "type": "string" }, "price": { "type": "float", "default": 5 }, "note": { "type": "text" }
        }));
        write_schema(&schema, &removed);
        let err = start(data.path(), &schema, &url, false)
            .await
            .err()
            .expect("removal refused");
        let msg = err.to_string();
        assert!(
            msg.contains("items.json") && msg.contains("`qty`") && msg.contains("removed"),
            "{name}: {msg}"
        );

        // Making a field with duplicate values unique: refused, naming the field.
        let dup_data = items(json!({
            "name": { "type": "string" }, "qty": { "type": "int" },
            "price": { "type": "float", "default": 5, "unique": true }, "note": { "type": "text" }
        }));
        write_schema(&schema, &dup_data);
        let err = start(data.path(), &schema, &url, false)
            .await
            .err()
            .expect("unique on duplicates refused");
        let msg = err.to_string();
        assert!(
            msg.contains("items.json") && msg.contains("`price`") && msg.contains("duplicate"),
            "{name}: {msg}"
        );

        // After all the refusals, the data is exactly as it was.
        write_schema(&schema, &added);
        let app = start(data.path(), &schema, &url, false)
            .await
            .expect("restart with the good schema");
        let got = rows(&app).await;
        assert_eq!(got.len(), 2, "{name}");
        assert_eq!(got[0]["name"], "a");
        assert_eq!(got[1]["qty"], 2);

        // With the explicit flag, the removal goes through and the column is gone.
        write_schema(&schema, &removed);
        let app = start(data.path(), &schema, &url, true)
            .await
            .expect("destructive change allowed by flag");
        let got = rows(&app).await;
        assert_eq!(got.len(), 2, "{name}");
        assert!(got[0].get("qty").is_none(), "{name}: qty dropped");
        assert_eq!(got[1]["name"], "b", "{name}: other data kept");
    }
}

#[tokio::test]
async fn invalid_schema_stops_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema");
    std::fs::create_dir_all(&schema).unwrap();
    std::fs::write(
        schema.join("items.json"),
        r#"{"name":"items","fields":{"list":{"type":"ref","object":"lists"}}}"#,
    )
    .unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let err = start(dir.path(), &schema, &url, false)
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("items.json") && msg.contains("`list`") && msg.contains("lists"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_example_app_in_the_repository_loads() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let app = start(dir.path(), &repo.join("schema"), &url, false)
        .await
        .expect("example schema loads");
    let schema = app.state.records.schema();
    for object in ["items", "notes", "users"] {
        assert!(
            schema.object(object).is_some(),
            "example app has `{object}`"
        );
    }
    app.state.store.close().await;
}
