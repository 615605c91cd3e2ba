//! Action logs for live viewing: every line has `seq`, `at`, `level` and `message`;
//! `?after=<seq>` answers only newer lines, for one action or for all of them at once
//! (`/1/action/logs`, each line with its `actionId`).

use serde_json::{Value, json};

use crate::common::{Cred, Spawn, TestApp, backends, master};

fn logging(word: &str) -> String {
    format!(
        "function backandCallback(userInput, dbRow, parameters) {{\n  console.log('{word}', parameters.n);\n  if (parameters.fail) throw new Error('{word} failed');\n  return 1;\n}}\n"
    )
}

async fn call(app: &TestApp, name: &str, parameters: Value) {
    let path = format!(
        "/1/function/general/{name}?parameters={}",
        crate::common::q(&parameters)
    );
    app.get(&path, &master()).await;
}

async fn lines(app: &TestApp, path: &str) -> Vec<Value> {
    let (status, body) = app.get(path, &master()).await;
    assert_eq!(status, 200, "{path}: {body}");
    let data = body["data"].as_array().unwrap().clone();
    assert_eq!(body["totalRows"], data.len(), "{body}");
    data
}

fn seqs(lines: &[Value]) -> Vec<u64> {
    lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect()
}

fn messages(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn lines_carry_seq_and_after_polls_only_newer_ones() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .action("general/onDemand/alpha.js", &logging("alpha"))
        .action("general/onDemand/beta.js", &logging("beta"))
        .start()
        .await;
    let (_, all) = app.get("/1/action/config", &master()).await;
    let id = |name: &str| {
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (alpha, beta) = (id("alpha"), id("beta"));
    call(&app, "alpha", json!({ "n": 1 })).await;
    call(&app, "beta", json!({ "n": 2 })).await;
    call(&app, "alpha", json!({ "n": 3, "fail": true })).await;

    let a = lines(&app, &format!("/1/action/config/{alpha}/logs")).await;
    assert_eq!(
        messages(&a),
        ["alpha 1", "alpha 3", "threw: alpha failed"],
        "{a:?}"
    );
    let levels: Vec<&str> = a.iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["log", "log", "failure"]);
    for line in &a {
        assert_eq!(line["actionId"], alpha);
        let at = line["at"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
    }
    let s = seqs(&a);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "increasing: {s:?}");

    // Polling one action: only lines after the given seq.
    let newer = lines(
        &app,
        &format!("/1/action/config/{alpha}/logs?after={}", s[0]),
    )
    .await;
    assert_eq!(messages(&newer), ["alpha 3", "threw: alpha failed"]);
    let none = lines(
        &app,
        &format!("/1/action/config/{alpha}/logs?after={}", s[2]),
    )
    .await;
    assert!(none.is_empty(), "{none:?}");
    let last = lines(&app, &format!("/1/action/config/{alpha}/logs?last=1")).await;
    assert_eq!(messages(&last), ["threw: alpha failed"]);
    let first = lines(
        &app,
        &format!("/1/action/config/{alpha}/logs?after=0&last=1"),
    )
    .await;
    assert_eq!(
        messages(&first),
        ["alpha 1"],
        "after: the oldest newer lines first"
    );

    // Every action at once, in the order written, each line saying whose it is.
    let every = lines(&app, "/1/action/logs").await;
    assert_eq!(
        messages(&every),
        ["alpha 1", "beta 2", "alpha 3", "threw: alpha failed"]
    );
    let owners: Vec<i64> = every
        .iter()
        .map(|l| l["actionId"].as_i64().unwrap())
        .collect();
    assert_eq!(owners, [alpha, beta, alpha, alpha]);
    let s = seqs(&every);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "increasing: {s:?}");
    let newer = lines(&app, &format!("/1/action/logs?after={}", s[1])).await;
    assert_eq!(messages(&newer), ["alpha 3", "threw: alpha failed"]);
    call(&app, "beta", json!({ "n": 4 })).await;
    let newer = lines(&app, &format!("/1/action/logs?after={}", s[3])).await;
    assert_eq!(messages(&newer), ["beta 4"]);
    assert!(newer[0]["seq"].as_u64().unwrap() > s[3]);
    let last = lines(&app, "/1/action/logs?last=2").await;
    assert_eq!(messages(&last), ["threw: alpha failed", "beta 4"]);

    // Bad input, and Admin only.
    for bad in [
        "after=x",
        "after=-1",
        "after=1.5",
        "last=x",
        "last=-2",
        "after=99999999999999999999999",
    ] {
        for path in ["/1/action/logs", &format!("/1/action/config/{alpha}/logs")] {
            let (status, body) = app.get(&format!("{path}?{bad}"), &master()).await;
            assert_eq!(status, 400, "{path}?{bad}: {body}");
            assert!(body["Message"].is_string(), "{body}");
        }
    }
    let (status, _) = app.get("/1/action/config/999/logs", &master()).await;
    assert_eq!(status, 404);
    let user = app.user("u@x.test", "User").await;
    for (cred, want) in [(user.cred(), 403), (Cred::None, 401)] {
        for path in ["/1/action/logs", &format!("/1/action/config/{alpha}/logs")] {
            let (status, body) = app.get(path, &cred).await;
            assert_eq!(status, want, "{path}: {body}");
            assert!(body["Message"].is_string(), "{body}");
        }
    }

    // A deleted action's lines go with it, from the log of all too.
    let (status, _) = app
        .delete(&format!("/1/action/config/{alpha}"), &master())
        .await;
    assert_eq!(status, 200);
    let every = lines(&app, "/1/action/logs").await;
    assert_eq!(messages(&every), ["beta 2", "beta 4"]);
}

#[tokio::test]
async fn a_busy_action_keeps_its_last_lines_and_the_log_of_all_pages() {
    let backend = &backends()[0];
    let chatty = "function backandCallback() {\n  for (var i = 0; i < 150; i++) console.log('line', i);\n}\n";
    let app = Spawn::new(backend)
        .action("general/onDemand/chatty.js", chatty)
        .start()
        .await;
    for _ in 0..8 {
        call(&app, "chatty", json!({})).await;
    }
    let (_, all) = app.get("/1/action/config", &master()).await;
    let id = all["data"][0]["id"].as_i64().unwrap();
    let kept = lines(&app, &format!("/1/action/config/{id}/logs?last=100000")).await;
    assert_eq!(
        kept.len(),
        livebase::actions::LOG_LINES,
        "bounded per action"
    );
    let s = seqs(&kept);
    assert_eq!(
        s[s.len() - 1] - s[0],
        s.len() as u64 - 1,
        "the newest, contiguous"
    );
    assert_eq!(s[s.len() - 1], 8 * 150, "the very last line is kept");
    let page = lines(&app, "/1/action/logs?after=0&last=100000").await;
    assert!(page.len() <= livebase::actions::ALL_LOGS_PAGE);
    assert_eq!(page[0]["seq"], s[0], "the oldest kept line first");
}
