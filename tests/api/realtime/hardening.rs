//! What an abrupt, hostile or unlucky client must not get past: connection slots are
//! given back however a socket ends, a socket that re-authenticates while a request is
//! running keeps no room of its old identity, and one socket's requests are capped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::{objects, start};
use crate::common::{ANON, Spawn, backends};
use crate::sio::{PATIENCE, Sio, raw_ws, send};
use livebase::error::ApiError;
use livebase::records::{BoxFuture, Change, Staged, WriteHook};

#[tokio::test]
async fn sockets_that_vanish_right_after_connecting_give_their_slot_back() {
    let backend = &backends()[0];
    let app = objects(Spawn::new(backend))
        .config(|c| c.max_connections = 5)
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    // Connect-and-drop churn, with and without credentials, faster than the server
    // finishes each connection.
    for round in 0..40 {
        let mut ws = raw_ws(&app.base, 4).await;
        let auth = if round % 2 == 0 {
            json!({ "token": alice.token })
        } else {
            json!({})
        };
        send(&mut ws, &format!("40{auth}")).await;
        drop(ws);
    }
    // Every slot comes back: five sockets fit at once again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut held = Vec::new();
    while held.len() < 5 {
        match Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON }))).await {
            Ok(s) => held.push(s),
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "slots leaked: only {} of 5 sockets fit after churn: {e}",
                    held.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let refused = Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON }))).await;
    assert!(
        refused.is_err_and(|e| e.contains("connection limit reached")),
        "the limit still holds"
    );
}

#[tokio::test]
async fn re_authenticating_during_a_request_keeps_no_room_of_the_old_identity() {
    for backend in backends() {
        let app = start(&backend).await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut alice_socket = app.socket(&alice.token).await;
        alice_socket.call("get", json!({ "url": "/notes" })).await;
        // An Admin socket lists owner-secured notes (admin scope: every note) and, while
        // the lists run, becomes Bob, who may read only his own notes.
        let mut s = app.socket(&admin.token).await;
        for _ in 0..20 {
            s.emit("get", &[json!({ "url": "/notes?pageSize=100" })]);
            s.emit("get", &[json!({ "url": "/1/objects/notes" })]);
            s.emit("join", &[json!("db-notes")]);
        }
        s.emit("login", &[json!(format!("Bearer {}", bob.token))]);
        let who = s.expect("authorized").await;
        assert_eq!(who["username"], "bob@x.test");
        // Let every queued request finish before the write under test.
        assert_eq!(s.call("echo", json!("done")).await, json!("done"));
        for _ in 0..20 {
            s.call("get", json!({ "url": "/posts" })).await;
        }
        let (status, _) = app
            .post(
                "/1/objects/notes",
                &alice.cred(),
                json!({ "title": "alice only" }),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(alice_socket.expect("notes").await["verb"], "created");
        s.assert_none(&app, "notes").await;
    }
}

/// Holds every `posts` create until released, so requests pile up in flight; counts
/// the creates it holds.
struct Gate(Arc<Semaphore>, Arc<AtomicUsize>);

impl WriteHook for Gate {
    fn before<'a>(
        &'a self,
        write: &'a Change<'a>,
        _input: &'a mut Map<String, Value>,
        _staged: &'a mut Staged,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if write.object.name == "posts" {
                self.1.fetch_add(1, Ordering::SeqCst);
                self.0.acquire().await.expect("gate open").forget();
                self.1.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn one_socket_runs_at_most_eight_requests_at_once() {
    let backend = &backends()[0];
    let gate = Arc::new(Semaphore::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let app = objects(Spawn::new(backend))
        .hook(Arc::new(Gate(gate.clone(), held.clone())))
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let s = Arc::new(app.socket(&alice.token).await);
    let mut running = Vec::new();
    for n in 0..8 {
        let s = s.clone();
        running.push(tokio::spawn(async move {
            s.call(
                "post",
                json!({ "url": "/posts", "data": { "title": format!("p{n}") } }),
            )
            .await
        }));
    }
    // Wait until all eight are held in the write path.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while held.load(Ordering::SeqCst) < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "eight creates in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ninth = s
        .call(
            "post",
            json!({ "url": "/posts", "data": { "title": "p8" } }),
        )
        .await;
    assert_eq!(ninth["statusCode"], 429, "{ninth}");
    assert!(
        ninth["body"]["Message"]
            .as_str()
            .unwrap()
            .contains("at most 8")
    );
    // Other sockets are not limited by this one.
    let other = app.socket(&alice.token).await;
    assert_eq!(other.call("echo", json!(1)).await, json!(1));
    gate.add_permits(8);
    for r in running {
        assert_eq!(r.await.unwrap()["statusCode"], 200);
    }
    let titles: Vec<Value> = app
        .all_rows("posts")
        .await
        .iter()
        .map(|r| r["title"].clone())
        .collect();
    assert_eq!(
        titles.len(),
        8,
        "the refused ninth wrote nothing: {titles:?}"
    );
    // With the gate open, the socket takes requests again.
    gate.add_permits(1);
    let again = s
        .call(
            "post",
            json!({ "url": "/posts", "data": { "title": "p9" } }),
        )
        .await;
    assert_eq!(again["statusCode"], 200, "{again}");
}

#[tokio::test]
async fn backand_login_accepts_a_bare_token_and_user_emits_ignore_case() {
    let backend = &backends()[0];
    let app = start(backend).await;
    let alice = app.user("alice@x.test", "User").await;
    let mut s = Sio::connect(&app.base, None).await.unwrap();
    s.emit(
        "login",
        &[json!(alice.token), Value::Null, json!("livebase")],
    );
    assert_eq!(s.expect("authorized").await["username"], "alice@x.test");
    // Usernames are emails, matched as stored (lower case) whatever case an emit uses.
    let users = ["ALICE@X.test".to_string()];
    app.state.realtime.emit_users("hi", &json!(1), &users).await;
    assert_eq!(s.expect("hi").await, json!(1));
}
