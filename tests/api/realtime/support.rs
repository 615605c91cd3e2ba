//! Helpers shared by the Sails, channel and bad-input socket tests.

use serde_json::{Value, json};

use super::id_of;
use crate::common::{Cred, TestApp};
use crate::sio::Sio;

/// A Sails virtual request `{method, url, data}` on the `verb` event; the whole ack.
pub(crate) async fn req(s: &Sio, verb: &str, url: &str, data: Value) -> Value {
    let mut request = json!({ "method": verb, "url": url });
    if !data.is_null() {
        request["data"] = data;
    }
    s.call(verb, request).await
}

/// Same, with `headers`.
pub(super) async fn req_with_headers(
    s: &Sio,
    verb: &str,
    url: &str,
    data: Value,
    headers: Value,
) -> Value {
    s.call(
        verb,
        json!({ "method": verb, "url": url, "data": data, "headers": headers }),
    )
    .await
}

pub(super) fn status(ack: &Value) -> u64 {
    ack["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("ack without a numeric statusCode: {ack}"))
}

/// The body of an ack that must be a success, after checking the ack's shape.
pub(super) fn ok_body(ack: &Value, what: &str) -> Value {
    assert_eq!(status(ack), 200, "{what}: {ack}");
    assert!(ack["headers"].is_object(), "{what}: headers object: {ack}");
    assert!(ack.get("body").is_some(), "{what}: body: {ack}");
    ack["body"].clone()
}

/// The `Message` of a failed virtual request, after checking its status.
pub(super) fn failure(ack: &Value, expected: u64, what: &str) -> String {
    assert_eq!(status(ack), expected, "{what}: {ack}");
    assert!(ack["headers"].is_object(), "{what}: headers object: {ack}");
    let message = ack["body"]["Message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a failure carries body.Message: {ack}"));
    assert!(!message.is_empty(), "{what}: empty Message");
    message.to_string()
}

/// The text of an `{error}` ack.
pub(super) fn ack_error(ack: &Value, what: &str) -> String {
    let text = ack["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected an {{error}} ack, got {ack}"));
    assert!(!text.is_empty(), "{what}: empty error");
    text.to_string()
}

/// The next `error` event, checked to name `event`; its message.
pub(super) async fn error_event(s: &mut Sio, event: &str, what: &str) -> String {
    let got = s.expect("error").await;
    assert_eq!(got["event"], json!(event), "{what}: {got}");
    let message = got["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: error event without message: {got}"));
    assert!(!message.is_empty(), "{what}: empty message");
    message.to_string()
}

/// The row `id` of `object` as the master token sees it, if it exists.
pub(super) async fn row(app: &TestApp, object: &str, id: i64) -> Option<Value> {
    app.all_rows(object)
        .await
        .into_iter()
        .find(|r| r["id"] == json!(id))
}

pub(super) async fn titles(app: &TestApp, object: &str) -> Vec<String> {
    let mut all: Vec<String> = app
        .all_rows(object)
        .await
        .iter()
        .map(|r| r["title"].as_str().unwrap_or("").to_string())
        .collect();
    all.sort();
    all
}

pub(super) async fn rest_create(app: &TestApp, object: &str, cred: &Cred, title: &str) -> i64 {
    let (status, body) = app
        .post(
            &format!("/1/objects/{object}"),
            cred,
            json!({ "title": title }),
        )
        .await;
    assert_eq!(status, 200, "create {object}: {body}");
    id_of(&body)
}

pub(super) async fn rest_update(app: &TestApp, object: &str, id: i64, cred: &Cred, title: &str) {
    let (status, body) = app
        .put(
            &format!("/1/objects/{object}/{id}"),
            cred,
            json!({ "title": title }),
        )
        .await;
    assert_eq!(status, 200, "update {object}/{id}: {body}");
}

/// A socket with no credentials (it would be disconnected after the auth timeout).
pub(super) async fn unauthenticated(app: &TestApp) -> Sio {
    Sio::connect(&app.base, None)
        .await
        .expect("a socket without credentials may connect")
}

/// The socket still answers and still has its identity.
pub(super) async fn still_works(app: &TestApp, s: &Sio, what: &str) {
    assert_eq!(
        s.call("echo", json!({ "alive": what })).await,
        json!({ "alive": what }),
        "{what}: echo"
    );
    ok_body(&req(s, "get", "/1/objects/posts", Value::Null).await, what);
    let (status, _) = app.get("/healthz", &Cred::None).await;
    assert_eq!(status, 200, "{what}: REST answers");
}
