//! The `db` binding: reads and writes as the action's caller, through the write path
//! (triggers and events fire), with a nesting limit.

use serde_json::json;

use crate::common::{Spawn, backends};

fn schema(spawn: Spawn<'_>) -> Spawn<'_> {
    let perms =
        json!({ "read": ["User"], "create": ["User"], "update": ["User"], "delete": ["User"] });
    spawn
        .schema(
            "items.json",
            json!({ "name": "items", "fields": { "name": { "type": "string" }, "n": { "type": "int" } },
                    "permissions": perms }),
        )
        .schema(
            "notes.json",
            json!({ "name": "notes", "fields": { "title": { "type": "string" } },
                    "permissions": perms, "rowSecurity": "owner" }),
        )
}

const CRUD: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const made = db.create('items', { name: 'made', n: 1 });
  db.update('items', made.id, { n: 2 });
  const got = db.get('items', made.id);
  const listed = db.list('items', {
    filter: [{ fieldName: 'n', operator: 'equals', value: 100 }],
    sort: [{ fieldName: 'id', order: 'desc' }],
  });
  db.remove('items', made.id);
  let gone;
  try { db.get('items', made.id); } catch (e) { gone = e.status; }
  return { got, total: listed.totalRows, first: listed.data[0].name, gone };
}"#;

const PEEK: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  try { return { row: db.get('notes', parameters.id) }; }
  catch (e) { return { status: e.status, message: e.message }; }
}"#;

const STAMP: &str = r#"
function backandCallback(userInput) { userInput.n = 100; return {}; }"#;

const RECURSE: &str = r#"
function backandCallback(userInput) {
  db.create('notes', { title: 'again' });
  return {};
}"#;

#[tokio::test]
async fn actions_read_and_write_through_the_write_path_as_their_caller() {
    for backend in backends() {
        let app = schema(Spawn::new(&backend))
            .action("general/onDemand/crud.js", CRUD)
            .action("general/onDemand/peek.js", PEEK)
            .action("items/beforeUpdate/stamp.js", STAMP)
            .action("notes/beforeCreate/recurse.js", RECURSE)
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut watcher = app.socket(&bob.token).await;
        assert_eq!(
            watcher.call("join", json!("db-items")).await["ok"],
            json!(true)
        );

        let (status, body) = app
            .post("/1/function/general/crud", &alice.cred(), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        // The update went through the write path: the beforeUpdate action set n.
        assert_eq!(body["got"]["n"], 100, "{body}");
        assert_eq!(body["got"]["name"], "made");
        assert_eq!(body["total"], 1, "{body}");
        assert_eq!(body["first"], "made", "{body}");
        assert_eq!(body["gone"], 404, "{body}");
        assert_eq!(watcher.expect("db_created").await["data"]["name"], "made");
        assert_eq!(watcher.expect("db_updated").await["data"]["n"], 100);
        assert!(watcher.expect("db_deleted").await["data"].is_number());
        assert!(app.all_rows("items").await.is_empty());

        // As the caller: bob's action cannot read alice's owner-secured note.
        let (status, note) = app
            .post("/1/objects/notes", &alice.cred(), json!({ "title": "x" }))
            .await;
        // (the recursing beforeCreate refuses every note create; see below)
        assert_eq!(status, 422, "{note}");
        assert!(note["Message"].as_str().unwrap().contains("nest"), "{note}");
        assert!(
            app.all_rows("notes").await.is_empty(),
            "nothing written by the chain"
        );
        let (status, body) = app
            .get(
                "/1/function/general/peek?parameters=%7B%22id%22%3A1%7D",
                &bob.cred(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], 404, "{body}");
    }
}

const SIGNUP_PEEK: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  let seen;
  try { seen = db.list('notes').totalRows; } catch (e) { seen = 'refused ' + e.status; }
  socket.emitAll('signup_saw', { seen, role: userProfile.role, username: userProfile.username });
  return {};
}"#;

#[tokio::test]
async fn actions_triggered_by_a_public_signup_do_not_get_master_rights() {
    let backend = &backends()[0];
    let app = schema(Spawn::new(backend))
        .action("users/afterCreate/peek.js", SIGNUP_PEEK)
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let mut s = app.socket(&alice.token).await;
    let (status, _) = app
        .post(
            "/1/objects/notes",
            &alice.cred(),
            json!({ "title": "private" }),
        )
        .await;
    assert_eq!(
        status, 200,
        "alice has a note a master-level reader would see"
    );
    let resp = app
        .client
        .post(app.url("/1/user/signup"))
        .header("SignUpToken", crate::common::SIGNUP)
        .json(&json!({ "email": "new@x.test", "password": "new-pass", "firstName": "N" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let saw = s.expect("signup_saw").await;
    assert_eq!(
        saw["seen"], "refused 403",
        "a signup's action reads as an anonymous caller: {saw}"
    );
    // And it is told so: an action checking `userProfile.role === 'Admin'` must not
    // grant anything to whoever holds the sign-up token.
    assert_eq!(saw["role"], "Public", "{saw}");
    assert_eq!(saw["username"], "Guest", "{saw}");
}
