//! On-demand actions and functions, and what hostile code gets.

use serde_json::json;

use crate::common::{Spawn, backends, master};

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
