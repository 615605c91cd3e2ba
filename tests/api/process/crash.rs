//! A process killed between a write's commit and its after action: the write is in the
//! database, its event in the log marked as owing its after action, and the next start
//! runs that action (at least once), seeing the event's number. A client that was away
//! reconnects to the new process with the last number it saw and gets the event, read
//! back from the log (the new process never held it in memory).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Server, client, livebase, printed};
use crate::common::basic_header;
use crate::sio::Sio;

/// Busy for three seconds (for the row named `cut off`), then records which event it
/// ran for.
const SLOW_AFTER: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const end = Date.now() + (dbRow.name === 'cut off' ? 3000 : 0);
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

    // A client sees one change, then goes away.
    let mut away = Sio::connect_request(&first.base, "", &[("Authorization", &auth)], None)
        .await
        .expect("socket connects");
    assert_eq!(
        away.call("join", json!("db-items")).await["ok"],
        json!(true)
    );
    let answer = http
        .post(format!("{}/1/objects/items", first.base))
        .header("Authorization", &auth)
        .json(&json!({ "name": "seen" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let seen = away.expect("db_created").await;
    assert_eq!(seen["data"]["name"], "seen");
    let last_seen = seen["seq"].as_u64().expect("numbered");
    drop(away);

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
        committed.retain(|row| row["name"] == "cut off");
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
        marks.retain(|m| m["item"] == json!(item));
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

    // The client that was away resumes on the new process from the last number it saw:
    // the change it missed is replayed from the log, then it is told it recovered.
    let mut back = Sio::connect_request(
        &second.base,
        "",
        &[("Authorization", &auth)],
        Some(json!({ "lastSeq": last_seen })),
    )
    .await
    .expect("socket connects");
    assert_eq!(back.expect("recovered").await["recovered"], json!(true));
    let ack = back.call("join", json!("db-items")).await;
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let missed = back.expect("db_created").await;
    assert_eq!(missed["data"]["id"], json!(item), "{missed}");
    assert!(missed["seq"].as_u64().unwrap() > last_seen);
    drop(second);
}
