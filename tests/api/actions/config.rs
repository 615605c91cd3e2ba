//! `/1/action/config`: upload (compiled first), list with filter, replace (next
//! version), delete, logs; Admin or master only.

use serde_json::{Value, json};

use crate::common::{Cred, Spawn, backends, master};

fn code(returns: &str) -> String {
    format!(
        "function backandCallback(userInput, dbRow, parameters, userProfile) {{\n  console.log('called', parameters.n);\n  return {returns};\n}}\n"
    )
}

async fn upload(app: &crate::common::TestApp, cred: &Cred, body: Value) -> (u16, Value) {
    app.post("/1/action/config", cred, body).await
}

#[tokio::test]
async fn upload_list_replace_delete_and_logs() {
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema(
                "items.json",
                json!({ "name": "items", "fields": { "name": { "type": "string" } },
                        "permissions": { "read": ["User"], "create": ["User"] } }),
            )
            .start()
            .await;
        let user = app.user("u@x.test", "User").await;
        let good = json!({ "name": "hello", "object": "general", "trigger": "onDemand", "code": code("'v1'") });

        let (status, body) = upload(&app, &user.cred(), good.clone()).await;
        assert_eq!(status, 403, "a User may not upload: {body}");
        // Refused before its body is looked at: a broken upload tells it nothing more.
        let response =
            crate::common::with_cred(app.client.post(app.url("/1/action/config")), &user.cred())
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await
                .unwrap();
        assert_eq!(response.status().as_u16(), 403, "a User's malformed upload");
        let (status, body) = app.get("/1/action/config/1/logs", &user.cred()).await;
        assert_eq!(status, 403, "a User may not read logs: {body}");

        let (status, created) = upload(&app, &master(), good.clone()).await;
        assert_eq!(status, 200, "{created}");
        assert_eq!(created["version"], 1);
        assert_eq!(created["actionType"], "Function");
        let id = created["id"].as_i64().unwrap();
        let (status, body) = app.get("/1/function/general/hello", &user.cred()).await;
        assert_eq!((status, body), (200, json!("v1")));

        let (status, body) = upload(&app, &master(), good.clone()).await;
        assert_eq!(status, 409, "same object/trigger/name: {body}");

        // Syntax errors name line and column; nothing is stored.
        let broken = "function backandCallback() {\n  return {;\n}\n";
        let (status, body) = upload(
            &app,
            &master(),
            json!({ "name": "broken", "object": "items", "trigger": "beforeCreate", "code": broken }),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let message = body["Message"].as_str().unwrap();
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("column"), "{message}");
        let (status, body) = upload(
            &app,
            &master(),
            json!({ "name": "nocb", "object": "items", "trigger": "beforeCreate", "code": "function other() {}" }),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("backandCallback"),
            "{body}"
        );
        for bad in [
            json!({ "name": "x", "object": "nope", "trigger": "onDemand", "code": code("1") }),
            json!({ "name": "x", "object": "items", "trigger": "sometimes", "code": code("1") }),
            json!({ "name": "x", "object": "general", "trigger": "afterCreate", "code": code("1") }),
            json!({ "name": "bad name", "object": "items", "trigger": "onDemand", "code": code("1") }),
            json!({ "name": "x", "object": "items", "trigger": "onDemand", "code": 5 }),
            json!({ "name": "x", "object": "items", "trigger": "onDemand", "code": code("1"), "extra": 1 }),
            json!(["not", "an", "object"]),
        ] {
            let (status, body) = upload(&app, &master(), bad.clone()).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(body["Message"].is_string(), "{body}");
        }

        let (status, item_action) = upload(
            &app,
            &master(),
            json!({ "name": "stamp", "object": "items", "trigger": "onDemand", "code": code("'item'") }),
        )
        .await;
        assert_eq!(status, 200, "{item_action}");
        assert_eq!(item_action["actionType"], "Action");

        // List with the REST filter language.
        let (status, all) = app.get("/1/action/config", &master()).await;
        assert_eq!(status, 200);
        assert_eq!(
            all["totalRows"], 2,
            "the refused uploads stored nothing: {all}"
        );
        let filter =
            crate::common::enc(r#"[{"fieldName":"object","operator":"equals","value":"items"}]"#);
        let (status, listed) = app
            .get(&format!("/1/action/config?filter={filter}"), &master())
            .await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed["totalRows"], 1);
        assert_eq!(listed["data"][0]["name"], "stamp");
        let filter =
            crate::common::enc(r#"[{"fieldName":"code","operator":"equals","value":"x"}]"#);
        let (status, _) = app
            .get(&format!("/1/action/config?filter={filter}"), &master())
            .await;
        assert_eq!(status, 400);

        // Replace: the next version runs.
        let (status, replaced) = app
            .put(
                &format!("/1/action/config/{id}"),
                &master(),
                json!({ "code": code("'v2'") }),
            )
            .await;
        assert_eq!(status, 200, "{replaced}");
        assert_eq!(replaced["version"], 2);
        let (_, body) = app
            .get(
                "/1/function/general/hello?parameters=%7B%22n%22%3A7%7D",
                &user.cred(),
            )
            .await;
        assert_eq!(body, json!("v2"));
        let (status, body) = app
            .put(
                &format!("/1/action/config/{id}"),
                &master(),
                json!({ "code": "function (" }),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let (_, body) = app.get("/1/function/general/hello", &user.cred()).await;
        assert_eq!(
            body,
            json!("v2"),
            "a refused replacement keeps the running version"
        );

        // Logs: console lines with invocation id and time.
        let (status, logs) = app
            .get(&format!("/1/action/config/{id}/logs"), &master())
            .await;
        assert_eq!(status, 200, "{logs}");
        let lines = logs["data"].as_array().unwrap();
        assert!(lines.iter().any(|l| l["message"] == "called 7"), "{logs}");
        for line in lines {
            assert!(
                line["invocation"].as_u64().is_some() && line["time"].is_string(),
                "{line}"
            );
        }
        let (status, _) = app
            .get(&format!("/1/action/config/{id}/logs"), &user.cred())
            .await;
        assert_eq!(status, 403);

        // Delete: it no longer runs.
        let (status, _) = app
            .delete(&format!("/1/action/config/{id}"), &master())
            .await;
        assert_eq!(status, 200);
        let (status, body) = app.get("/1/function/general/hello", &user.cred()).await;
        assert_eq!(status, 404, "{body}");
        let (status, _) = app
            .delete(&format!("/1/action/config/{id}"), &master())
            .await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn replacing_an_action_while_it_runs_never_shows_a_half_loaded_one() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .action("general/onDemand/which.js", &code("'v1'"))
        .start()
        .await;
    let (_, all) = app.get("/1/action/config", &master()).await;
    let id = all["data"][0]["id"].as_i64().unwrap();
    let app = std::sync::Arc::new(app);
    let mut calls = Vec::new();
    for _ in 0..40 {
        let app = app.clone();
        calls.push(tokio::spawn(async move {
            app.get("/1/function/general/which", &master()).await
        }));
    }
    for n in 2..=6 {
        let (status, body) = app
            .put(
                &format!("/1/action/config/{id}"),
                &master(),
                json!({ "code": code(&format!("'v{n}'")) }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let text = body.as_str().unwrap();
        assert!(
            ["v1", "v2", "v3", "v4", "v5", "v6"].contains(&text),
            "{body}"
        );
    }
    let (_, body) = app.get("/1/function/general/which", &master()).await;
    assert_eq!(body, json!("v6"));
}

#[tokio::test]
async fn changed_files_are_picked_up_while_running() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .action("general/onDemand/which.js", &code("'v1'"))
        .start()
        .await;
    let dir = app.data_dir.path().join("actions/general/onDemand");
    let answer = |name: &'static str| {
        let app = &app;
        async move {
            app.get(&format!("/1/function/general/{name}"), &master())
                .await
        }
    };
    assert_eq!(answer("which").await.1, json!("v1"));

    // Editor droppings beside the file must not stop the reload.
    std::fs::write(dir.join(".which.js.swp"), "binary").unwrap();
    std::fs::write(dir.join("which.js~"), "backup").unwrap();
    std::fs::write(dir.join("which.js"), code("'v2'")).unwrap();
    wait_for(|| answer("which"), json!("v2")).await;
    let (_, all) = app.get("/1/action/config", &master()).await;
    assert_eq!(all["data"][0]["version"], 2, "{all}");

    // A broken edit is reported and the running version kept; a new file after it is
    // picked up, which shows the watcher looked at the broken one too.
    std::fs::write(dir.join("which.js"), "function backandCallback( {").unwrap();
    std::fs::write(dir.join("fresh.js"), code("'fresh'")).unwrap();
    wait_for(|| answer("fresh"), json!("fresh")).await;
    assert_eq!(answer("which").await.1, json!("v2"));
}

async fn wait_for<F, Fut>(call: F, want: Value)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, got) = call().await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {got}, waiting for {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
