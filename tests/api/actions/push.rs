//! `livebase actions push`: a folder uploaded to a running server.

use serde_json::json;

use crate::common::{ADMIN_USER_TOKEN, MASTER, Spawn, backends, master};
use livebase::config::{PushArgs, ServerArgs};

fn write(dir: &std::path::Path, path: &str, code: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, code).unwrap();
}

fn returning(value: &str) -> String {
    format!("function backandCallback() {{ return {value}; }}")
}

#[tokio::test]
async fn push_creates_updates_and_reports_refusals() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .schema(
            "items.json",
            json!({ "name": "items", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["User"], "create": ["User"] } }),
        )
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "general/onDemand/hello.js", &returning("'v1'"));
    write(dir.path(), "items/beforeCreate/noop.js", &returning("{}"));
    let args = PushArgs {
        dir: dir.path().to_path_buf(),
        server: ServerArgs {
            url: app.base.clone(),
            master_token: MASTER.into(),
            user_token: ADMIN_USER_TOKEN.into(),
        },
    };
    livebase::actions::push::push(&args)
        .await
        .expect("first push");
    let (_, listed) = app.get("/1/action/config", &master()).await;
    assert_eq!(listed["totalRows"], 2, "{listed}");
    assert_eq!(
        app.get("/1/function/general/hello", &master()).await.1,
        json!("v1")
    );

    // Again, unchanged: nothing new; then one change and one broken file.
    livebase::actions::push::push(&args)
        .await
        .expect("second push");
    write(dir.path(), "general/onDemand/hello.js", &returning("'v2'"));
    write(
        dir.path(),
        "general/onDemand/broken.js",
        "function backandCallback( {",
    );
    let refused = livebase::actions::push::push(&args).await.unwrap_err();
    assert!(
        refused.to_string().contains("1 action(s) refused"),
        "{refused}"
    );
    assert_eq!(
        app.get("/1/function/general/hello", &master()).await.1,
        json!("v2")
    );
    let (_, listed) = app.get("/1/action/config", &master()).await;
    assert_eq!(
        listed["totalRows"], 2,
        "the broken one was not stored: {listed}"
    );
    let hello = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "hello")
        .unwrap()
        .clone();
    assert_eq!(hello["version"], 2, "{hello}");
    // Both versions are kept as pushed.
    let (_, versions) = app
        .get(
            &format!("/1/action/config/{}/versions", hello["id"]),
            &master(),
        )
        .await;
    let sources: Vec<(i64, &str)> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(sources, [(2, "push"), (1, "push")], "{versions}");

    // A wrong master token is refused before anything is sent.
    let mut wrong = args.clone();
    wrong.server.master_token = "wrong".into();
    let error = livebase::actions::push::push(&wrong).await.unwrap_err();
    assert!(error.to_string().contains("401"), "{error}");
}
