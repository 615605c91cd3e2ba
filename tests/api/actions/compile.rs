//! `POST /1/action/config/compile`: a compile check that saves nothing, and the line and
//! column a refused upload or replace carries beside its message.

use serde_json::{Value, json};

use crate::common::{Cred, Spawn, backends, master, with_cred};

const GOOD: &str = "function backandCallback(userInput) {\n  return 1;\n}\n";
/// A syntax error on line 3, at the `;` after `=` (column 11, counting from 1).
const BROKEN: &str =
    "function backandCallback(userInput) {\n  var a = 1;\n  var b = ;\n  return a;\n}\n";

fn at_line_3(body: &Value) {
    let column = BROKEN.lines().nth(2).unwrap().find(';').unwrap() + 1;
    assert_eq!(body["line"], 3, "{body}");
    assert_eq!(body["column"], column, "{body}");
    let message = body["Message"].as_str().unwrap();
    assert!(
        message.contains(&format!("(line 3, column {column})")),
        "{message}"
    );
    assert!(message.contains("SyntaxError: "), "{message}");
}

#[tokio::test]
async fn compile_checks_without_saving_and_refusals_say_where() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let ctx = backend.name();
        let (status, body) = app
            .post(
                "/1/action/config/compile",
                &master(),
                json!({ "code": GOOD }),
            )
            .await;
        assert_eq!((status, &body), (200, &json!({ "ok": true })), "{ctx}");

        let (status, body) = app
            .post(
                "/1/action/config/compile",
                &master(),
                json!({ "code": BROKEN }),
            )
            .await;
        assert_eq!(status, 400, "{ctx}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .starts_with("SyntaxError: "),
            "{ctx}: exactly the error and where: {body}"
        );
        at_line_3(&body);

        // No `backandCallback`: refused, with no place to point at.
        let (status, body) = app
            .post(
                "/1/action/config/compile",
                &master(),
                json!({ "code": "function other() {}" }),
            )
            .await;
        assert_eq!(status, 400, "{ctx}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("backandCallback"),
            "{body}"
        );
        assert_eq!(
            (&body["line"], &body["column"]),
            (&Value::Null, &Value::Null)
        );

        // Checks saved nothing.
        let (_, listed) = app.get("/1/action/config", &master()).await;
        assert_eq!(listed["totalRows"], 0, "{ctx}: {listed}");

        // Upload and replace refusals carry the same place.
        let (status, body) = app
            .post(
                "/1/action/config",
                &master(),
                json!({ "name": "b", "object": "general", "trigger": "onDemand", "code": BROKEN }),
            )
            .await;
        assert_eq!(status, 400, "{ctx}: {body}");
        at_line_3(&body);
        let (_, listed) = app.get("/1/action/config", &master()).await;
        assert_eq!(
            listed["totalRows"], 0,
            "{ctx}: refused upload stored: {listed}"
        );
        let (status, created) = app
            .post(
                "/1/action/config",
                &master(),
                json!({ "name": "g", "object": "general", "trigger": "onDemand", "code": GOOD }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let id = created["id"].as_i64().unwrap();
        let (status, body) = app
            .put(
                &format!("/1/action/config/{id}"),
                &master(),
                json!({ "code": BROKEN }),
            )
            .await;
        assert_eq!(status, 400, "{ctx}: {body}");
        at_line_3(&body);
        let (_, kept) = app.get(&format!("/1/action/config/{id}"), &master()).await;
        assert_eq!(
            (kept["version"].as_i64(), kept["code"].as_str()),
            (Some(1), Some(GOOD))
        );
        let (_, versions) = app
            .get(&format!("/1/action/config/{id}/versions"), &master())
            .await;
        assert_eq!(versions["totalRows"], 1, "{ctx}: {versions}");
    }
}

#[tokio::test]
async fn compile_refuses_bad_input_and_non_admins() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .config(|c| c.max_body_bytes = 64 * 1024)
        .start()
        .await;
    let user = app.user("u@x.test", "User").await;
    let (status, body) = app
        .post(
            "/1/action/config/compile",
            &user.cred(),
            json!({ "code": GOOD }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["Message"].is_string(), "{body}");
    let (status, body) = app
        .post(
            "/1/action/config/compile",
            &Cred::None,
            json!({ "code": GOOD }),
        )
        .await;
    assert_eq!(status, 401, "{body}");

    for bad in [
        json!({}),
        json!({ "code": 5 }),
        json!({ "code": null }),
        json!({ "code": ["x"] }),
        json!({ "code": GOOD, "name": "x" }),
        json!("function backandCallback() {}"),
        json!([GOOD]),
    ] {
        let (status, body) = app
            .post("/1/action/config/compile", &master(), bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["Message"].is_string(), "{bad}: {body}");
    }
    let raw = |body: String| {
        with_cred(
            app.client.post(app.url("/1/action/config/compile")),
            &master(),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
    };
    let response = raw("{\"code\": ".into()).await.unwrap();
    assert_eq!(response.status().as_u16(), 400, "malformed JSON");
    let body: Value = response.json().await.unwrap();
    assert!(body["Message"].as_str().unwrap().contains("JSON"), "{body}");
    let huge = json!({ "code": format!("function backandCallback() {{ return '{}'; }}", "x".repeat(100 * 1024)) });
    let response = raw(huge.to_string()).await.unwrap();
    assert_eq!(response.status().as_u16(), 413, "over --max-body-bytes");
    let body: Value = response.json().await.unwrap();
    assert!(body["Message"].is_string(), "{body}");
}
