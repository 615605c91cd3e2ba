//! On-demand actions and functions, and what hostile code gets.

use serde_json::{Value, json};

use crate::common::{Spawn, backends, enc, master};

const ECHO: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  return { userInput, dbRow, parameters, userProfile };
}"#;

#[tokio::test]
async fn a_function_returns_what_the_action_returns() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .action("general/onDemand/echo.js", ECHO)
        .action(
            "general/onDemand/spin.js",
            "function backandCallback() { for (;;) {} }",
        )
        .start()
        .await;
    let (status, body) = app
        .post(
            "/1/function/general/echo?parameters=%7B%22a%22%3A1%7D",
            &master(),
            json!({ "x": 2 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["parameters"], json!({ "a": 1 }));
    assert_eq!(body["userInput"], json!({ "x": 2 }));
    assert_eq!(body["userProfile"]["role"], "Admin");
    let (status, body) = app.get("/1/function/general/spin", &master()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["Message"].as_str().unwrap().contains("time limit"),
        "{body}"
    );
    let (status, body) = app.get("/1/function/general/echo", &master()).await;
    assert_eq!(status, 200, "{body}");
}

/// What the Backand SDK's `fn.get(name, parameters)` puts on the wire: a string value
/// that contains `+` is `encodeURIComponent`-ed before the object is serialised, and the
/// whole is encoded again. The action must see each value exactly as the caller wrote it.
fn sdk_query(parameters: &Value) -> String {
    let mut escaped = parameters.clone();
    for value in escaped.as_object_mut().unwrap().values_mut() {
        if let Value::String(text) = value
            && text.contains('+')
        {
            *text = enc(text);
        }
    }
    format!("parameters={}", enc(&escaped.to_string()))
}

#[tokio::test]
async fn parameters_arrive_exactly_as_the_sdk_caller_wrote_them() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .action("general/onDemand/echo.js", ECHO)
        .start()
        .await;
    let written = json!({
        "all": "a+b % & @ # ~ ^ ( ) c",
        "plus": "1+1=2",
        "percent": "50%",
        "looks_escaped": "x%41%2b",
        "unicode": "€+ü",
        "n": 3,
    });
    let (status, body) = app
        .get(
            &format!("/1/function/general/echo?{}", sdk_query(&written)),
            &master(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["parameters"], written);
    // The SDK's `invoke` joins `apiUrl/` and a path starting with `/`.
    let (status, body) = app
        .get(
            "//1/function/general/echo?parameters=%7B%22a%22%3A1%7D",
            &master(),
        )
        .await;
    assert_eq!(
        (status, &body["parameters"]),
        (200, &json!({ "a": 1 })),
        "{body}"
    );
    let (status, body) = app.get("//1/action/config?filter=%5B%5D", &master()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["totalRows"].as_u64().unwrap() >= 1, "{body}");
}

#[tokio::test]
async fn on_demand_routes_refuse_bad_input_clearly() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .schema(
            "items.json",
            json!({ "name": "items", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["User"], "create": ["User"] } }),
        )
        .schema(
            "secrets.json",
            json!({ "name": "secrets", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["Admin"] } }),
        )
        .action("items/onDemand/echo.js", ECHO)
        .action("secrets/onDemand/echo.js", ECHO)
        .action("general/onDemand/echo.js", ECHO)
        .start()
        .await;
    let user = app.user("u@x.test", "User").await;
    let cred = user.cred();
    let cases: Vec<(reqwest::Method, String, Option<&str>, u16, &str)> = vec![
        (
            reqwest::Method::GET,
            "/1/objects/action/items".into(),
            None,
            400,
            "`name`",
        ),
        (
            reqwest::Method::GET,
            "/1/objects/action/items?name=".into(),
            None,
            400,
            "`name`",
        ),
        (
            reqwest::Method::GET,
            "/1/objects/action/items?name=echo&parameters=%7Bnope".into(),
            None,
            400,
            "`parameters` is not JSON",
        ),
        (
            reqwest::Method::POST,
            "/1/objects/action/items?name=echo".into(),
            Some("{\"x\":"),
            400,
            "malformed JSON body",
        ),
        (
            reqwest::Method::GET,
            "/1/objects/action/items?name=missing".into(),
            None,
            404,
            "no on-demand action",
        ),
        (
            reqwest::Method::GET,
            "/1/objects/action/nothing?name=echo".into(),
            None,
            404,
            "no object named",
        ),
        (
            reqwest::Method::GET,
            "/1/objects/action/secrets?name=echo".into(),
            None,
            403,
            "may not read",
        ),
        (
            reqwest::Method::GET,
            "/1/objects/action/items/abc?name=echo".into(),
            None,
            400,
            "",
        ),
        (
            reqwest::Method::GET,
            "/1/objects/action/items/999?name=echo".into(),
            None,
            404,
            "",
        ),
        (
            reqwest::Method::GET,
            "/1/function/general/missing".into(),
            None,
            404,
            "no on-demand action",
        ),
        (
            reqwest::Method::POST,
            "/1/function/general/echo".into(),
            Some("not json"),
            400,
            "malformed JSON body",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let mut rb =
            crate::common::with_cred(app.client.request(method.clone(), app.url(&path)), &cred);
        if let Some(body) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let resp = rb.send().await.unwrap();
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(
            text.contains("Message") && text.contains(needle),
            "{method} {path}: {text}"
        );
    }
    // Nothing was written by any of them; a good call still works.
    assert!(app.all_rows("items").await.is_empty());
    let (status, body) = app.get("/1/objects/action/items?name=echo", &cred).await;
    assert_eq!(status, 200, "{body}");
    // The management routes refuse bad paging and ids too.
    for path in [
        "/1/action/config?pageSize=abc",
        "/1/action/config?pageNumber=-1",
        "/1/action/config?filter=nope",
        "/1/action/config/abc",
        "/1/action/config/1/logs?last=x",
    ] {
        let (status, body) = app.get(path, &master()).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, _) = app.get("/1/action/config/999", &master()).await;
    assert_eq!(status, 404);
}
