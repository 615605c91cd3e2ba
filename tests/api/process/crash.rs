//! A process killed between a write's commit and its after action: the write is in the
//! database, its event in the log marked as owing its after action, and the next start
//! runs that action (at least once), seeing the event's number.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Server, client, livebase, printed};
use crate::common::basic_header;

/// Busy for three seconds, then records which event it ran for.
const SLOW_AFTER: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const end = Date.now() + 3000;
  while (Date.now() < end) {}
  db.create('marks', { seq: parameters.seq, item: dbRow.id });
  return {};
}"#;

#[tokio::test]
async fn an_after_action_cut_off_by_sigkill_runs_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let perms =
        json!({ "read": ["Admin"], "create": ["Admin"], "update": ["Admin"], "delete": ["Admin"] });
    std::fs::create_dir_all(root.join("schema")).unwrap();
    std::fs::write(
        root.join("schema/items.json"),
        json!({ "name": "items", "fields": { "name": { "type": "string" } }, "permissions": perms })
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        root.join("schema/marks.json"),
        json!({ "name": "marks", "fields": { "seq": { "type": "int" }, "item": { "type": "int" } },
                "permissions": perms })
        .to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("actions/items/afterCreate")).unwrap();
    std::fs::write(root.join("actions/items/afterCreate/mark.js"), SLOW_AFTER).unwrap();
    let flags = [("--action-time-limit-ms", "10000")];

    let mut first = Server::start(livebase(root, &flags));
    let out = first.output();
    let master = printed(&out, "master token").expect("master token printed");
    let user_token = printed(&out, "user token:").expect("user token printed");
    let auth = basic_header(&master, &user_token);
    let http = client();

    // The write commits at once; its answer waits on the three-second after action.
    let write = {
        let (http, auth, base) = (http.clone(), auth.clone(), first.base.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/1/objects/items"))
                .header("Authorization", auth)
                .json(&json!({ "name": "cut off" }))
                .send()
                .await
        })
    };
    let list = |base: String, object: &'static str| {
        let (http, auth) = (http.clone(), auth.clone());
        async move {
            let answer = http
                .get(format!("{base}/1/objects/{object}"))
                .header("Authorization", auth)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<Value>().await.unwrap()["data"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let mut committed = Vec::new();
    for _ in 0..100 {
        committed = list(first.base.clone(), "items").await;
        if !committed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(committed.len(), 1, "the write committed");
    let item = committed[0]["id"].as_i64().unwrap();
    first.stop(); // SIGKILL, mid-action
    assert!(
        write.await.unwrap().is_err(),
        "the write was never answered"
    );

    let second = Server::start(livebase(root, &flags));
    let mut marks = Vec::new();
    for _ in 0..300 {
        marks = list(second.base.clone(), "marks").await;
        if !marks.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        marks.len(),
        1,
        "the owed after action ran once at the next start: {marks:?}"
    );
    assert_eq!(marks[0]["item"], json!(item));
    let seq = marks[0]["seq"].as_i64().expect("it saw the event's number");
    assert!(seq >= 1, "{seq}");
    assert!(
        second
            .wait_for("a stopped node committed", Duration::from_secs(5))
            .await,
        "the start says it ran what the killed process owed: {}",
        second.output()
    );
    drop(second);
}
