//! Starting the real binary: a start that cannot happen says, in one line on stderr,
//! which flag and which path or address it is about; the first start prints the app
//! name beside the secrets it generated, and later starts print neither.

use std::time::Duration;

use serde_json::Value;

use super::{Server, client, livebase, printed, run_to_exit};
use crate::common::basic_header;

/// What a newcomer gets wrong, and the words the one line must hold.
#[test]
fn a_start_that_cannot_happen_names_its_flag_and_path_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let not_a_dir = dir.path().join("schema-is-a-file");
    std::fs::write(&not_a_dir, "{}").unwrap();
    let not_a_dir = not_a_dir.to_string_lossy().into_owned();
    let bad_secrets = dir.path().join("bad-secrets");
    std::fs::create_dir_all(bad_secrets.join("secrets.json")).unwrap();
    let bad_secrets = bad_secrets.to_string_lossy().into_owned();
    let password = "hunter2secret";
    let mysql = format!("mysql://me:{password}@db.example/app");
    let postgres = format!("postgres://me:{password}@127.0.0.1:1/app");
    // (flag, value, words the line must hold)
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "--data-dir",
            "/proc/livebase-nope/data",
            vec!["--data-dir", "/proc/livebase-nope/data"],
        ),
        ("--listen", &taken_addr, vec!["--listen", &taken_addr]),
        (
            "--listen",
            "not-an-address",
            vec!["--listen", "not-an-address"],
        ),
        ("--schema-dir", &not_a_dir, vec!["--schema-dir", &not_a_dir]),
        (
            "--database-url",
            &mysql,
            vec!["--database-url", "mysql://me:***@db.example/app"],
        ),
        (
            "--database-url",
            "sqlite:///proc/livebase-nope/x.db",
            vec!["--database-url", "/proc/livebase-nope"],
        ),
        (
            "--database-url",
            &postgres,
            vec!["--database-url", "postgres://me:***@127.0.0.1:1/app"],
        ),
        (
            "--data-dir",
            &bad_secrets,
            vec![&bad_secrets, "secrets.json"],
        ),
    ];
    let mut problems = Vec::new();
    for (flag, value, words) in &cases {
        let exited = run_to_exit(livebase(dir.path(), &[(flag, value)]));
        let line = exited.stderr.trim();
        let case = format!("{flag} {value}");
        if exited.code != Some(1) {
            problems.push(format!("{case}: exit code {:?}: {exited:?}", exited.code));
        }
        if line.lines().count() != 1 || !line.starts_with("livebase: ") {
            problems.push(format!("{case}: not one `livebase: …` line: {line:?}"));
        }
        for word in words {
            if !line.contains(word) {
                problems.push(format!("{case}: the line does not name `{word}`: {line}"));
            }
        }
        // A Rust debug dump, a panic or a password has no place in it.
        for wrong in [
            "Os {",
            "Error {",
            "kind:",
            "panicked",
            "RUST_BACKTRACE",
            password,
        ] {
            if line.contains(wrong) || exited.stdout.contains(password) {
                problems.push(format!("{case}: holds `{wrong}`: {line}"));
            }
        }
    }
    drop(taken);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn the_first_start_prints_the_app_name_with_the_generated_secrets_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(livebase(dir.path(), &[]));
    let first = server.output();
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("data/secrets.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        printed(&first, "app name").as_deref(),
        Some("livebase"),
        "{first}"
    );
    assert_eq!(kept["appName"], "livebase");
    let master = printed(&first, "master token").expect("the master token is printed");
    assert_eq!(kept["masterToken"], master.as_str());
    assert_eq!(
        printed(&first, "anonymous token").as_deref(),
        kept["anonymousToken"].as_str()
    );
    // What was printed works: the master token with the first Admin's user token.
    let user_token = printed(&first, "user token:").expect("the Admin's user token is printed");
    let client = client();
    let answer = client
        .get(format!("{}/api/account/profile", server.base))
        .header("Authorization", basic_header(&master, &user_token))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let profile: Value = answer.json().await.unwrap();
    assert_eq!(profile["role"], "Admin", "{profile}");
    let wrong = client
        .get(format!("{}/api/account/profile", server.base))
        .header("Authorization", basic_header("not-the-master", &user_token))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    drop(server);

    // A later start shows nothing of it again.
    let again = Server::start(livebase(dir.path(), &[]));
    let later = again.output();
    assert_eq!(printed(&later, "app name"), None, "{later}");
    assert_eq!(printed(&later, "master token"), None, "{later}");
    assert!(!later.contains(&master), "{later}");
    drop(again);

    // An app name given on the first start is the one printed and kept.
    let other = tempfile::tempdir().unwrap();
    let named = Server::start(livebase(other.path(), &[("--app-name", "shop-app")]));
    assert!(
        named
            .wait_for("app name         shop-app", Duration::from_secs(5))
            .await,
        "{}",
        named.output()
    );
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(other.path().join("data/secrets.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept["appName"], "shop-app");
}
