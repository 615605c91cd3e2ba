//! `db.query(name, params)` in actions: the seed's `emitUsers` case ("call the Query to
//! obtain the users, then convert the JSON into an array"), with real sockets.

use serde_json::json;

use super::spawn;
use crate::common::{backends, q};

/// Sends `hello` to every user of the role given in `parameters`.
const NOTIFY_ROLE: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const users = db.query('users_by_role', { role: parameters.role });
  socket.emitUsers('hello', { from: userProfile.username }, users.map(u => u.email));
  return { sent: users.length };
}"#;

/// What a refused `db.query` throws, caught.
const CATCH: &str = r#"
function backandCallback(userInput, dbRow, parameters) {
  try {
    return { rows: db.query(parameters.name, parameters.params) };
  } catch (e) {
    return { status: e.status, message: e.message };
  }
}"#;

#[tokio::test]
async fn an_action_emits_to_the_users_a_query_returns() {
    for backend in &backends() {
        let b = backend.name();
        let app = spawn(backend)
            .action("general/onDemand/notifyRole.js", NOTIFY_ROLE)
            .start()
            .await;
        let alice = app.user("alice@q.test", "User").await;
        let bob = app.user("bob@q.test", "User").await;
        let carol = app.user("carol@q.test", "ReadOnly").await;
        let mut alice_socket = app.socket(&alice.token).await;
        let mut bob_socket = app.socket(&bob.token).await;
        let mut carol_socket = app.socket(&carol.token).await;

        let (status, body) = app
            .get(
                &format!(
                    "/1/function/general/notifyRole?parameters={}",
                    q(&json!({ "role": "User" }))
                ),
                &alice.cred(),
            )
            .await;
        assert_eq!(status, 200, "{b}: {body}");
        assert_eq!(body, json!({ "sent": 2 }), "{b}");
        for socket in [&mut alice_socket, &mut bob_socket] {
            let hello = socket.expect("hello").await;
            assert_eq!(hello, json!({ "from": alice.email }), "{b}");
        }
        carol_socket.assert_none(&app, "hello").await;

        // As a ReadOnly caller the query is refused, so the action fails and nothing
        // is emitted.
        let (status, body) = app
            .get(
                &format!(
                    "/1/function/general/notifyRole?parameters={}",
                    q(&json!({ "role": "ReadOnly" }))
                ),
                &carol.cred(),
            )
            .await;
        assert_eq!(status, 403, "{b}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("may not run query"),
            "{b}: {body}"
        );
        carol_socket.assert_none(&app, "hello").await;
        alice_socket.assert_none(&app, "hello").await;
    }
}

#[tokio::test]
async fn db_query_refusals_throw_with_the_rest_status() {
    for backend in &backends() {
        let b = backend.name();
        let app = spawn(backend)
            .action("general/onDemand/catch.js", CATCH)
            .start()
            .await;
        let alice = app.user("alice@q.test", "User").await;
        let cases = [
            (
                json!({ "name": "users_by_role", "params": { "role": "User" } }),
                json!({ "rows": [{ "id": alice.id, "email": alice.email, "role": "User" }] }),
            ),
            (
                json!({ "name": "users_by_role", "params": {} }),
                json!({ "status": 400, "message": "query `users_by_role` needs the parameter `role` (it takes: role)" }),
            ),
            (
                json!({ "name": "users_by_role", "params": { "role": "User", "x": 1 } }),
                json!({ "status": 400, "message": "query `users_by_role` has no parameter `x` (it takes: role)" }),
            ),
            (
                json!({ "name": "nope" }),
                json!({ "status": 404, "message": "no query `nope`" }),
            ),
        ];
        for (parameters, want) in cases {
            let (status, body) = app
                .get(
                    &format!("/1/function/general/catch?parameters={}", q(&parameters)),
                    &alice.cred(),
                )
                .await;
            assert_eq!(status, 200, "{b} {parameters}: {body}");
            assert_eq!(body, want, "{b} {parameters}");
        }
    }
}
