//! The log the real binary writes to a file: one line per request under its own target
//! (method, path, status, milliseconds, user) carrying no credential or query string,
//! silenced on its own by `RUST_LOG`, and no terminal colour codes.

use std::time::Duration;

use serde_json::Value;

use super::{Server, client, livebase};
use crate::common::basic_header;

const EMAIL: &str = "boss@log.test";
const PASSWORD: &str = "password-never-logged";
const MASTER: &str = "master-never-logged";
const USER_TOKEN: &str = "user-token-never-logged";

fn start(dir: &std::path::Path, rust_log: &str) -> Server {
    let mut command = livebase(
        dir,
        &[
            ("--admin-email", EMAIL),
            ("--admin-password", PASSWORD),
            ("--master-token", MASTER),
            ("--admin-user-token", USER_TOKEN),
        ],
    );
    command.env("RUST_LOG", rust_log);
    Server::start(command)
}

/// The request lines of `output`.
fn request_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains("livebase::request"))
        .collect()
}

#[tokio::test]
async fn every_request_has_a_line_with_its_user_and_no_credential() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "info");
    let http = client();
    let url = |path: &str| format!("{}{path}", server.base);

    let health = http
        .get(url("/healthz?probe=query-text-never-logged"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let token: Value = http
        .post(url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", EMAIL),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"]
        .as_str()
        .expect("signed in")
        .to_string();
    let refresh = token["refresh_token"].as_str().unwrap().to_string();
    let profile = http
        .get(url(
            "/api/account/profile?parameters=%7B%22k%22%3A%22query-text-never-logged%22%7D",
        ))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 200);
    let basic = basic_header(MASTER, USER_TOKEN);
    let listed = http
        .get(url("/1/objects/users"))
        .header("Authorization", &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let refused = http
        .get(url("/1/objects/users"))
        .bearer_auth("not-a-token-never-logged")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let missing = http.get(url("/no/such/route")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    assert!(
        server
            .wait_for("path=/no/such/route", Duration::from_secs(5))
            .await,
        "{}",
        server.output()
    );
    let output = server.output();
    let lines = request_lines(&output);
    let expect = [
        ("GET", "/healthz", 200, "-"),
        ("POST", "/token", 200, "-"),
        ("GET", "/api/account/profile", 200, EMAIL),
        ("GET", "/1/objects/users", 200, EMAIL),
        ("GET", "/1/objects/users", 401, "-"),
        ("GET", "/no/such/route", 404, "-"),
    ];
    for (method, path, status, user) in expect {
        let found = lines.iter().any(|l| {
            l.contains(" INFO ")
                && l.contains(&format!("method={method} "))
                && l.contains(&format!("path={path} "))
                && l.contains(&format!("status={status} "))
                && l.contains(" ms=")
                && l.ends_with(&format!("user={user}"))
        });
        assert!(
            found,
            "no line for {method} {path} {status} {user}:\n{output}"
        );
    }
    assert_eq!(lines.len(), expect.len(), "one line per request:\n{output}");
    for secret in [
        access.as_str(),
        refresh.as_str(),
        PASSWORD,
        MASTER,
        USER_TOKEN,
        basic.as_str(),
        "never-logged",
        "?",
    ] {
        for line in &lines {
            assert!(!line.contains(secret), "`{secret}` in the log: {line}");
        }
    }
    // Written to a file, the log has no terminal colour codes.
    assert!(
        !output.contains('\u{1b}'),
        "colour codes in a log file:\n{output}"
    );
}

#[tokio::test]
async fn rust_log_silences_the_request_lines_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), "info,livebase::request=off");
    let health = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Other info lines still come: the one shutdown writes.
    // SAFETY: signals the process this test started, by its id.
    unsafe {
        libc::kill(server.pid() as libc::pid_t, libc::SIGTERM);
    }
    assert!(
        server
            .wait_for("shutting down", Duration::from_secs(10))
            .await,
        "{}",
        server.output()
    );
    server.stop();
    let output = server.output();
    assert!(request_lines(&output).is_empty(), "{output}");
}

/// The server log tells an action's bug (an error, in the words the client gets plus
/// the action's file, which the client is never shown) from its refusal (info, not a
/// warning), never in Rust's debug form.
#[tokio::test]
async fn an_actions_bug_is_an_error_line_and_its_refusal_an_info_line() {
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("actions/general/onDemand");
    std::fs::create_dir_all(&functions).unwrap();
    let typo = functions.join("typo.js");
    std::fs::write(
        &typo,
        "function backandCallback() {\n  return missing;\n}\n",
    )
    .unwrap();
    std::fs::write(
        functions.join("refuse.js"),
        "function backandCallback() { throw new Error('not today'); }\n",
    )
    .unwrap();
    let server = start(dir.path(), "info");
    let http = client();
    let basic = basic_header(MASTER, USER_TOKEN);
    let mut answers = Vec::new();
    for name in ["typo", "refuse"] {
        let answer = http
            .get(format!("{}/1/function/general/{name}", server.base))
            .header("Authorization", &basic)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        answers.push((status, body));
    }
    assert_eq!(
        answers[0],
        (
            500,
            serde_json::json!({ "Message": "action general/onDemand/typo failed: ReferenceError: missing is not defined (line 2, column 10)" })
        )
    );
    let bug = format!(
        "action general/onDemand/typo failed: ReferenceError: missing is not defined ({}, line 2, column 10)",
        typo.display()
    );
    assert_eq!(
        answers[1],
        (400, serde_json::json!({ "Message": "not today" }))
    );
    assert!(
        server
            .wait_for("threw: not today", Duration::from_secs(5))
            .await,
        "{}",
        server.output()
    );
    let output = server.output();
    let bug_lines: Vec<&str> = output.lines().filter(|l| l.contains(&bug)).collect();
    assert_eq!(bug_lines.len(), 1, "{output}");
    assert!(bug_lines[0].contains(" ERROR "), "{output}");
    assert!(bug_lines[0].contains("action=typo"), "{output}");
    let refusal: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("threw: not today"))
        .collect();
    assert_eq!(refusal.len(), 1, "{output}");
    assert!(refusal[0].contains(" INFO "), "{output}");
    for debug_form in ["Thrown {", "Bug {", "failure="] {
        assert!(!output.contains(debug_form), "{debug_form} in:\n{output}");
    }
    assert!(
        !output
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("refuse")),
        "{output}"
    );
}
