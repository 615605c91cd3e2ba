//! `POST /1/action/run`: an Admin runs an on-demand action as a chosen identity and
//! sees its result, logs, emits (delivered for real, to a real Socket.IO client) and
//! duration; the chosen identity's permissions decide, and refusals come back in
//! `error`. Also the run counters in `/metrics`.

use serde_json::{Value, json};

use crate::common::{Cred, Spawn, TestApp, backends, id_of, master, metric, with_cred};
use crate::sio::Sio;

const REPORT: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  console.log("running as", userProfile.username);
  console.warn("careful", parameters.n);
  socket.emitAll("run_all", { n: parameters.n });
  socket.emitRole("run_role", { to: "Admin" }, "Admin");
  socket.emitUsers("run_users", { to: "ann" }, ["ann@x.test"]);
  socket.broadcast("room1", "run_room", 7);
  return { who: userProfile.username, role: userProfile.role, row: dbRow,
           parameters: parameters, input: userInput };
}"#;

const WHOAMI: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  return userProfile;
}"#;

const FAIL: &str = r#"
function backandCallback() {
  console.error("about to fail");
  socket.emitAll("fail_all", 1);
  throw { status: 409, message: "nope" };
}"#;

const SPIN: &str = "function backandCallback() { for (;;) {} }";

fn spawn(backend: &crate::common::Backend) -> Spawn<'_> {
    Spawn::new(backend)
        .schema(
            "items.json",
            json!({ "name": "items", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["Admin", "User"], "create": ["Admin", "User"] },
                    "rowSecurity": "owner" }),
        )
        .action("items/onDemand/report.js", REPORT)
        .action("general/onDemand/whoami.js", WHOAMI)
        .action("general/onDemand/fail.js", FAIL)
        .action("general/onDemand/spin.js", SPIN)
        .config(|c| c.action_time_limit_ms = 300)
}

async fn run(app: &TestApp, body: Value) -> Value {
    let (status, answer) = app.post("/1/action/run", &master(), body.clone()).await;
    assert_eq!(status, 200, "{body}: {answer}");
    assert!(
        answer["durationMs"].as_f64().is_some_and(|d| d >= 0.0),
        "{answer}"
    );
    answer
}

/// Each socket's `(event, first argument)`s up to a fresh barrier.
async fn received(app: &TestApp, socks: &mut [&mut Sio]) -> Vec<Vec<(String, Value)>> {
    let marker = app.barrier().await;
    let mut all = Vec::new();
    for s in socks.iter_mut() {
        let events = s.until_barrier(&marker).await;
        all.push(
            events
                .into_iter()
                .map(|(name, args)| (name, args.into_iter().next().unwrap_or(Value::Null)))
                .collect(),
        );
    }
    all
}

fn ev(name: &str, data: Value) -> (String, Value) {
    (name.to_string(), data)
}

#[tokio::test]
async fn runs_as_the_chosen_identity_and_reports_everything_it_did() {
    for backend in backends() {
        let ctx = backend.name();
        let app = spawn(&backend).start().await;
        let admin = app.admin().await;
        let ann = app.user("ann@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let ro = app.user("ro@x.test", "ReadOnly").await;
        let (status, row) = app
            .post("/1/objects/items", &ann.cred(), json!({ "name": "ann's" }))
            .await;
        assert_eq!(status, 200, "{row}");
        let row_id = id_of(&row);
        let mut admin_s = app.socket(&admin.token).await;
        let mut ann_s = app.socket(&ann.token).await;
        let mut bob_s = app.socket(&bob.token).await;
        let joined = admin_s.call("join", json!("room1")).await;
        assert_eq!(joined["ok"], true, "{joined}");

        // As Ann on her row: the result as she would get it, her lines, every emit
        // reported and delivered.
        let answer = run(
            &app,
            json!({ "object": "items", "name": "report", "id": row_id,
                    "parameters": { "n": 1 }, "userInput": { "x": true },
                    "as": { "email": "ann@x.test" } }),
        )
        .await;
        assert_eq!(answer["ok"], true, "{ctx}: {answer}");
        let result = &answer["result"];
        assert_eq!(
            (
                &result["who"],
                &result["role"],
                &result["parameters"],
                &result["input"]
            ),
            (
                &json!("ann@x.test"),
                &json!("User"),
                &json!({ "n": 1 }),
                &json!({ "x": true })
            ),
            "{ctx}: {answer}"
        );
        assert_eq!(result["row"]["id"], row_id, "{ctx}: {answer}");
        assert_eq!(result["row"]["name"], "ann's", "{ctx}: {answer}");
        let logs = answer["logs"].as_array().unwrap();
        let lines: Vec<(&str, &str)> = logs
            .iter()
            .map(|l| (l["level"].as_str().unwrap(), l["message"].as_str().unwrap()))
            .collect();
        assert_eq!(
            lines,
            [("log", "running as ann@x.test"), ("warn", "careful 1")],
            "{ctx}"
        );
        for line in logs {
            let at = line["at"].as_str().unwrap();
            chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
        }
        assert_eq!(
            answer["emits"],
            json!([
                { "kind": "emitAll", "event": "run_all", "target": null, "data": { "n": 1 } },
                { "kind": "emitRole", "event": "run_role", "target": "Admin", "data": { "to": "Admin" } },
                { "kind": "emitUsers", "event": "run_users", "target": ["ann@x.test"], "data": { "to": "ann" } },
                { "kind": "broadcast", "event": "run_room", "target": "room1", "data": 7 },
            ]),
            "{ctx}"
        );
        let got = received(&app, &mut [&mut admin_s, &mut ann_s, &mut bob_s]).await;
        assert_eq!(
            got[0],
            [
                ev("run_all", json!({ "n": 1 })),
                ev("run_role", json!({ "to": "Admin" })),
                ev("run_room", json!(7))
            ],
            "{ctx}: admin"
        );
        assert_eq!(
            got[1],
            [
                ev("run_all", json!({ "n": 1 })),
                ev("run_users", json!({ "to": "ann" }))
            ],
            "{ctx}: ann"
        );
        assert_eq!(got[2], [ev("run_all", json!({ "n": 1 }))], "{ctx}: bob");

        // Its lines went to the action's log as usual.
        let (_, all) = app.get("/1/action/config?pageSize=100", &master()).await;
        let report_id = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "report")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        let (_, log) = app
            .get(&format!("/1/action/config/{report_id}/logs"), &master())
            .await;
        assert!(
            log["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["message"] == "running as ann@x.test"),
            "{ctx}: {log}"
        );
        let log_lines = log["totalRows"].clone();

        // Identities that may not run it get the refusal in `error`; nothing runs,
        // nothing is sent.
        for (who, status) in [
            (json!({ "email": "bob@x.test" }), 404),
            (json!({ "userId": ro.id }), 403),
            (json!({ "anonymous": true }), 403),
        ] {
            let answer = run(
                &app,
                json!({ "object": "items", "name": "report", "id": row_id, "as": who }),
            )
            .await;
            assert_eq!(answer["ok"], false, "{ctx}: {who}: {answer}");
            assert_eq!(answer["error"]["status"], status, "{ctx}: {who}: {answer}");
            assert!(answer["error"]["Message"].is_string(), "{answer}");
            assert_eq!(
                (&answer["logs"], &answer["emits"]),
                (&json!([]), &json!([])),
                "{answer}"
            );
        }
        let answer = run(
            &app,
            json!({ "object": "items", "name": "report", "as": { "userId": ro.id } }),
        )
        .await;
        assert_eq!(
            answer["error"]["status"], 403,
            "{ctx}: no row, no read: {answer}"
        );
        let got = received(&app, &mut [&mut admin_s, &mut ann_s, &mut bob_s]).await;
        assert!(
            got.iter().all(Vec::is_empty),
            "{ctx}: refused runs sent {got:?}"
        );
        let (_, log) = app
            .get(&format!("/1/action/config/{report_id}/logs"), &master())
            .await;
        assert_eq!(
            log["totalRows"], log_lines,
            "{ctx}: refused runs did not run"
        );

        // The identity the action sees: the chosen one, built as sign-in builds it, or
        // the caller by default.
        for (who, want) in [
            (
                json!({ "anonymous": true }),
                json!({ "username": "Guest", "role": "Public", "userId": null }),
            ),
            (
                json!({ "userId": bob.id }),
                json!({ "username": "bob@x.test", "role": "User", "userId": bob.id.to_string() }),
            ),
            (
                json!({ "email": "RO@x.test" }),
                json!({ "username": "ro@x.test", "role": "ReadOnly", "userId": ro.id.to_string() }),
            ),
            (
                Value::Null,
                json!({ "username": admin.email, "role": "Admin", "userId": admin.id.to_string() }),
            ),
        ] {
            let mut body = json!({ "object": "general", "name": "whoami" });
            if !who.is_null() {
                body["as"] = who.clone();
            }
            let answer = run(&app, body).await;
            let mut profile = answer["result"].clone();
            profile.as_object_mut().unwrap().remove("app");
            assert_eq!(profile, want, "{ctx}: as {who}: {answer}");
        }

        // A throwing action: its error and lines, no emits, and nothing sent.
        let answer = run(&app, json!({ "object": "general", "name": "fail" })).await;
        assert_eq!(answer["ok"], false, "{ctx}: {answer}");
        assert_eq!(
            answer["error"],
            json!({ "status": 409, "Message": "nope" }),
            "{ctx}"
        );
        assert_eq!(answer["emits"], json!([]), "{ctx}");
        assert_eq!(answer["logs"][0]["level"], "error", "{ctx}: {answer}");
        assert_eq!(answer["logs"][0]["message"], "about to fail", "{ctx}");
        assert!(answer.get("result").is_none(), "{answer}");
        // A limit: stopped, said so, and the time it took.
        let answer = run(&app, json!({ "object": "general", "name": "spin" })).await;
        assert_eq!(answer["ok"], false, "{ctx}: {answer}");
        assert_eq!(answer["error"]["status"], 422, "{ctx}: {answer}");
        let message = answer["error"]["Message"].as_str().unwrap();
        assert!(message.contains("time limit of 300 ms"), "{ctx}: {message}");
        assert!(
            answer["durationMs"].as_f64().unwrap() >= 300.0,
            "{ctx}: {answer}"
        );
        let got = received(&app, &mut [&mut admin_s, &mut ann_s, &mut bob_s]).await;
        assert!(
            got.iter().all(Vec::is_empty),
            "{ctx}: failed runs sent {got:?}"
        );
    }
}

#[tokio::test]
async fn runs_and_limit_hits_are_counted() {
    let backend = &backends()[0];
    let app = spawn(backend).start().await;
    let count = |text: &str, name: &str, label: &str| metric(text, name, &[label]);
    let before = app.metrics_text().await;
    run(&app, json!({ "object": "general", "name": "whoami" })).await;
    run(&app, json!({ "object": "general", "name": "fail" })).await;
    run(&app, json!({ "object": "general", "name": "spin" })).await;
    let after = app.metrics_text().await;
    // Other tests in this process run actions too: at least these runs were counted.
    for (name, label) in [
        ("livebase_action_runs_total", r#"outcome="ok""#),
        ("livebase_action_runs_total", r#"outcome="thrown""#),
        ("livebase_action_runs_total", r#"outcome="limit""#),
        ("livebase_action_limit_hits_total", r#"limit="time""#),
    ] {
        let grew = count(&after, name, label) - count(&before, name, label);
        assert!(grew >= 1.0, "{name}{{{label}}} grew by {grew}:\n{after}");
    }
}

#[tokio::test]
async fn run_refuses_bad_requests_and_non_admins_and_runs_nothing() {
    let backend = &backends()[0];
    let app = spawn(backend)
        .config(|c| {
            c.action_time_limit_ms = 300;
            c.max_body_bytes = 64 * 1024;
        })
        .start()
        .await;
    let user = app.user("u@x.test", "User").await;
    let good = json!({ "object": "items", "name": "report" });
    let (status, body) = app.post("/1/action/run", &user.cred(), good.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["Message"].is_string(), "{body}");
    let (status, body) = app.post("/1/action/run", &Cred::None, good.clone()).await;
    assert_eq!(status, 401, "{body}");

    let with = |extra: Value| {
        let mut body = good.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (bad, says) in [
        (json!({}), "`object` is required"),
        (json!({ "object": "items" }), "`name` is required"),
        (json!({ "object": 5, "name": "report" }), "`object`"),
        (json!({ "object": "items", "name": "" }), "`name`"),
        (with(json!({ "extra": 1 })), "unknown field `extra`"),
        (with(json!({ "id": "1" })), "`id`"),
        (with(json!({ "id": 0 })), "`id`"),
        (with(json!({ "id": -3 })), "`id`"),
        (with(json!({ "id": 1.5 })), "`id`"),
        (with(json!({ "id": 1e300 })), "`id`"),
        (
            json!({ "object": "general", "name": "whoami", "id": 1 }),
            "`id`",
        ),
        (with(json!({ "as": {} })), "`as`"),
        (with(json!({ "as": "u@x.test" })), "`as`"),
        (with(json!({ "as": { "userId": "5" } })), "`userId`"),
        (
            with(json!({ "as": { "userId": 5, "email": "u@x.test" } })),
            "`as`",
        ),
        (with(json!({ "as": { "anonymous": false } })), "`as`"),
        (with(json!({ "as": { "role": "Admin" } })), "`as`"),
        (
            with(json!({ "as": { "userId": 99999 } })),
            "no user with id 99999",
        ),
        (
            with(json!({ "as": { "email": "nobody@x.test" } })),
            "no user with email `nobody@x.test`",
        ),
        (json!([1]), "a run takes"),
        (json!("report"), "a run takes"),
    ] {
        let (status, body) = app.post("/1/action/run", &master(), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let message = body["Message"].as_str().unwrap();
        assert!(message.contains(says), "{bad}: {message}");
    }
    for (missing, says) in [
        (
            json!({ "object": "items", "name": "nope" }),
            "no on-demand action `nope` on `items`",
        ),
        (
            json!({ "object": "nothing", "name": "report" }),
            "no on-demand action",
        ),
        (
            json!({ "object": "general", "name": "report" }),
            "no on-demand action",
        ),
    ] {
        let (status, body) = app.post("/1/action/run", &master(), missing.clone()).await;
        assert_eq!(status, 404, "{missing}: {body}");
        assert!(body["Message"].as_str().unwrap().contains(says), "{body}");
    }
    let raw = |body: String| {
        with_cred(app.client.post(app.url("/1/action/run")), &master())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = raw("{\"object\": \"items\",".into()).await.unwrap();
    assert_eq!(response.status().as_u16(), 400, "malformed JSON");
    let huge = with(json!({ "parameters": { "x": "y".repeat(100 * 1024) } }));
    let response = raw(huge.to_string()).await.unwrap();
    assert_eq!(response.status().as_u16(), 413, "over --max-body-bytes");

    // None of that ran the action: its log is still empty.
    let (_, all) = app.get("/1/action/config?pageSize=100", &master()).await;
    for action in all["data"].as_array().unwrap() {
        let (_, log) = app
            .get(
                &format!("/1/action/config/{}/logs", action["id"]),
                &master(),
            )
            .await;
        assert_eq!(log["totalRows"], 0, "{}: {log}", action["name"]);
    }
}
