//! Every saved version of an action: kept on upload, replace, file reload and rollback
//! (push is in `push.rs`), listed newest first, bounded, backfilled for a database from
//! before versions were kept; rollback through the API and the real `livebase` binary.

use tokio::process::Command;

use serde_json::{Value, json};

use crate::common::{
    ADMIN_USER_TOKEN, Cred, DropDatabase, MASTER, Spawn, TestApp, backends, exec_pg, master,
    test_config, with_cred,
};

fn code(answer: &str) -> String {
    format!("// answers {answer}\nfunction backandCallback() {{\n  return '{answer}';\n}}\n")
}

/// `(version, source)` of every kept version, newest first.
async fn kept(app: &TestApp, id: i64) -> Vec<(i64, String)> {
    let (status, body) = app
        .get(
            &format!("/1/action/config/{id}/versions?pageSize=1000"),
            &master(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(i64, &str)]) -> Vec<(i64, String)> {
    list.iter().map(|(v, s)| (*v, s.to_string())).collect()
}

async fn answer(app: &TestApp, name: &str) -> Value {
    app.get(&format!("/1/function/general/{name}"), &master())
        .await
        .1
}

async fn id_of_action(app: &TestApp, name: &str) -> i64 {
    let (_, all) = app.get("/1/action/config?pageSize=1000", &master()).await;
    all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no action {name}: {all}"))["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn every_change_is_kept_and_rollback_saves_an_earlier_one_anew() {
    for backend in backends() {
        let ctx = backend.name();
        let app = Spawn::new(&backend)
            .action("general/onDemand/fromfile.js", &code("f1"))
            .start()
            .await;
        let file_id = id_of_action(&app, "fromfile").await;
        assert_eq!(kept(&app, file_id).await, pairs(&[(1, "file")]), "{ctx}");

        let (status, created) = app
            .post(
                "/1/action/config",
                &master(),
                json!({ "name": "which", "object": "general", "trigger": "onDemand", "code": code("v1") }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let id = created["id"].as_i64().unwrap();
        for n in ["v2", "v3"] {
            let (status, body) = app
                .put(
                    &format!("/1/action/config/{id}"),
                    &master(),
                    json!({ "code": code(n) }),
                )
                .await;
            assert_eq!(status, 200, "{ctx}: {body}");
        }
        assert_eq!(answer(&app, "which").await, json!("v3"));
        // Replacing takes {code} (and the record's own fields, ignored); anything else
        // is refused and saves nothing. Only `push` may be claimed as a source.
        let replace = format!("/1/action/config/{id}");
        for bad in [
            json!({ "code": code("x"), "extra": 1 }),
            json!({ "code": code("x"), "source": "rollback" }),
            json!({ "code": code("x"), "source": 7 }),
            json!({ "code": 7 }),
            json!({ "name": "which" }),
            json!([code("x")]),
        ] {
            let (status, body) = app.put(&replace, &master(), bad.clone()).await;
            assert_eq!(status, 400, "{ctx}: {bad}: {body}");
            assert!(body["Message"].is_string(), "{bad}: {body}");
        }
        let (status, body) = app
            .post(
                "/1/action/config",
                &master(),
                json!({ "name": "other", "object": "general", "trigger": "onDemand",
                        "code": code("o"), "source": "file" }),
            )
            .await;
        assert_eq!(status, 400, "{ctx}: a claimed `file` source: {body}");
        let (_, current) = app.get(&replace, &master()).await;
        assert_eq!(
            current["version"], 3,
            "{ctx}: refusals saved nothing: {current}"
        );
        // The record read back, with new code, is a replace.
        let mut record = current.clone();
        record["code"] = json!(code("v3"));
        let (status, body) = app.put(&replace, &master(), record).await;
        assert_eq!(status, 200, "{ctx}: {body}");
        assert_eq!(body["version"], 4, "{ctx}: {body}");
        let (status, body) = app
            .put(&replace, &master(), json!({ "code": code("v3") }))
            .await;
        assert_eq!(status, 200, "{ctx}: {body}");

        // The listing: newest first, with code, time and source.
        let (status, listed) = app
            .get(&format!("/1/action/config/{id}/versions"), &master())
            .await;
        assert_eq!(status, 200, "{ctx}: {listed}");
        assert_eq!(listed["totalRows"], 5, "{ctx}: {listed}");
        let first = &listed["data"][0];
        assert_eq!(first["version"], 5);
        assert_eq!(first["code"], code("v3"));
        assert_eq!(first["source"], "replace");
        let at = first["createdAt"].as_str().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
        let age = chrono::Utc::now().signed_duration_since(at);
        assert!(
            age.num_seconds().abs() < 60,
            "{ctx}: saved just now: {first}"
        );
        assert_eq!(listed["data"][4]["code"], code("v1"));
        for (page, want) in [(1, vec![5, 4]), (2, vec![3, 2]), (3, vec![1]), (4, vec![])] {
            let (status, body) = app
                .get(
                    &format!("/1/action/config/{id}/versions?pageSize=2&pageNumber={page}"),
                    &master(),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["totalRows"], 5, "{body}");
            let on_page: Vec<i64> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["version"].as_i64().unwrap())
                .collect();
            assert_eq!(on_page, want, "{ctx}: page {page}");
        }

        // Rollback: a new version with version 1's code, running now; history kept.
        let (status, rolled) = app
            .post(
                &format!("/1/action/config/{id}/rollback"),
                &master(),
                json!({ "version": 1 }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {rolled}");
        assert_eq!(
            rolled,
            json!({ "id": id, "name": "which", "object": "general", "trigger": "onDemand",
                    "code": code("v1"), "version": 6, "actionType": "Function",
                    "file": null }),
            "{ctx}"
        );
        assert_eq!(
            answer(&app, "which").await,
            json!("v1"),
            "{ctx}: rolled-back code runs"
        );
        assert_eq!(
            kept(&app, id).await,
            pairs(&[
                (6, "rollback"),
                (5, "replace"),
                (4, "replace"),
                (3, "replace"),
                (2, "replace"),
                (1, "upload")
            ]),
            "{ctx}"
        );

        // Refused rollbacks change nothing.
        let rollback = format!("/1/action/config/{id}/rollback");
        let (status, body) = app
            .post(&rollback, &master(), json!({ "version": 9 }))
            .await;
        assert_eq!(status, 404, "{ctx}: unknown version: {body}");
        assert!(
            body["Message"].as_str().unwrap().contains("version 9"),
            "{body}"
        );
        for bad in [
            json!({}),
            json!({ "version": "2" }),
            json!({ "version": 0 }),
            json!({ "version": -1 }),
            json!({ "version": 1.5 }),
            json!({ "version": 1e300 }),
            json!({ "version": null }),
            json!({ "version": 2, "code": "x" }),
            json!([2]),
            json!(2),
        ] {
            let (status, body) = app.post(&rollback, &master(), bad.clone()).await;
            assert_eq!(status, 400, "{ctx}: {bad}: {body}");
            assert!(body["Message"].is_string(), "{bad}: {body}");
        }
        for raw in ["{\"version\": ", "{\"version\": 99999999999999999999999}"] {
            let response = with_cred(app.client.post(app.url(&rollback)), &master())
                .header("content-type", "application/json")
                .body(raw)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 400, "{ctx}: {raw}");
        }
        let (status, _) = app
            .post(
                "/1/action/config/999/rollback",
                &master(),
                json!({ "version": 1 }),
            )
            .await;
        assert_eq!(status, 404, "{ctx}: unknown action");
        let (status, _) = app.get("/1/action/config/999/versions", &master()).await;
        assert_eq!(status, 404, "{ctx}: unknown action");
        for bad in [
            "pageSize=x",
            "pageNumber=-1",
            "pageSize=99999999999999999999999",
        ] {
            let (status, body) = app
                .get(&format!("/1/action/config/{id}/versions?{bad}"), &master())
                .await;
            assert_eq!(status, 400, "{ctx}: {bad}: {body}");
        }

        // Admin only: a User is refused 403, no credentials 401, and nothing changes.
        let user = app.user("u@x.test", "User").await;
        for cred in [user.cred(), Cred::None] {
            let want = if matches!(cred, Cred::None) { 401 } else { 403 };
            let (status, body) = app.post(&rollback, &cred, json!({ "version": 2 })).await;
            assert_eq!(status, want, "{ctx}: {body}");
            assert!(body["Message"].is_string(), "{body}");
            let (status, _) = app
                .get(&format!("/1/action/config/{id}/versions"), &cred)
                .await;
            assert_eq!(status, want, "{ctx}");
        }
        assert_eq!(
            kept(&app, id).await.len(),
            6,
            "{ctx}: refusals saved nothing"
        );
        assert_eq!(answer(&app, "which").await, json!("v1"), "{ctx}");

        // A changed file is kept as a `file` version.
        let path = app
            .data_dir
            .path()
            .join("actions/general/onDemand/fromfile.js");
        std::fs::write(&path, code("f2")).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while answer(&app, "fromfile").await != json!("f2") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{ctx}: file not reloaded"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            kept(&app, file_id).await,
            pairs(&[(2, "file"), (1, "file")]),
            "{ctx}"
        );

        // Deleting an action deletes its versions: a new one of the same name starts over.
        let (status, _) = app
            .delete(&format!("/1/action/config/{id}"), &master())
            .await;
        assert_eq!(status, 200);
        let (_, again) = app
            .post(
                "/1/action/config",
                &master(),
                json!({ "name": "which", "object": "general", "trigger": "onDemand", "code": code("new") }),
            )
            .await;
        let again = again["id"].as_i64().unwrap();
        assert_eq!(kept(&app, again).await, pairs(&[(1, "upload")]), "{ctx}");
        let mut sql = app.state.store.sql();
        sql.push("SELECT COUNT(*) FROM lb_action_versions WHERE action_id = ")
            .bind(livebase::schema::value::SqlValue::Int(id));
        let left = app
            .state
            .store
            .fetch(&sql, &[livebase::schema::FieldType::Int])
            .await
            .unwrap();
        assert_eq!(
            left[0][0],
            json!(0),
            "{ctx}: the deleted action's versions are gone"
        );
    }
}

#[tokio::test]
async fn only_the_newest_hundred_versions_are_kept() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .action("general/onDemand/busy.js", &code("0"))
        .start()
        .await;
    let id = id_of_action(&app, "busy").await;
    for n in 1..=105 {
        let (status, body) = app
            .put(
                &format!("/1/action/config/{id}"),
                &master(),
                json!({ "code": code(&n.to_string()) }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let all = kept(&app, id).await;
    assert_eq!(all.len(), 100);
    assert_eq!((all[0].0, all[99].0), (106, 7), "the newest hundred");
    let (status, _) = app
        .post(
            &format!("/1/action/config/{id}/rollback"),
            &master(),
            json!({ "version": 6 }),
        )
        .await;
    assert_eq!(status, 404, "pruned");
    let (status, body) = app
        .post(
            &format!("/1/action/config/{id}/rollback"),
            &master(),
            json!({ "version": 7 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 107);
    assert_eq!(
        answer(&app, "busy").await,
        json!("6"),
        "version 7 held code 6"
    );
    let all = kept(&app, id).await;
    assert_eq!((all.len(), all[0].0, all[99].0), (100, 107, 8));
}

#[tokio::test]
async fn an_older_database_starts_and_gets_its_current_versions_backfilled() {
    for backend in backends() {
        let ctx = backend.name();
        // Uploaded, not a file: a file would be stored again on the next start.
        let app = Spawn::new(&backend).start().await;
        let (status, created) = app
            .post(
                "/1/action/config",
                &master(),
                json!({ "name": "old", "object": "general", "trigger": "onDemand", "code": code("o1") }),
            )
            .await;
        assert_eq!(status, 200, "{ctx}: {created}");
        let id = created["id"].as_i64().unwrap();
        let (status, _) = app
            .put(
                &format!("/1/action/config/{id}"),
                &master(),
                json!({ "code": code("o2") }),
            )
            .await;
        assert_eq!(status, 200);
        let (data, schema, url, pg) = app.stop().await;
        let _drop = DropDatabase(pg);
        // As a database from before versions were kept.
        match &backend {
            crate::common::Backend::Postgres(_) => {
                exec_pg(&url, "DROP TABLE lb_action_versions").await
            }
            crate::common::Backend::Sqlite => {
                use sqlx::Connection;
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("DROP TABLE lb_action_versions")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
        }
        let app = livebase::server::build(test_config(data.path(), &schema, &url), Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{ctx}: an older database starts: {e:#}"));
        let (total, versions) = app.state.actions.versions(id, 20, 1).await.unwrap();
        assert_eq!(total, 1, "{ctx}");
        assert_eq!(
            (
                versions[0].version,
                versions[0].code.as_str(),
                versions[0].source.as_str()
            ),
            (2, code("o2").as_str(), "backfill"),
            "{ctx}: the current version, saved on start"
        );
        // A rollback to it works; the next start backfills nothing more.
        let rolled = app.state.actions.roll_back(id, 2).await.unwrap();
        assert_eq!(rolled.version, 3);
        app.state.store.close().await;
        let app = livebase::server::build(test_config(data.path(), &schema, &url), Vec::new())
            .await
            .unwrap();
        let (total, versions) = app.state.actions.versions(id, 20, 1).await.unwrap();
        let listed: Vec<(i64, &str)> = versions
            .iter()
            .map(|v| (v.version, v.source.as_str()))
            .collect();
        assert_eq!(
            (total, listed),
            (2, vec![(3, "rollback"), (2, "backfill")]),
            "{ctx}"
        );
        app.state.store.close().await;
    }
}

/// Runs the real `livebase` binary's `actions` subcommand against `app`.
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_livebase"))
        .arg("actions")
        .args(args)
        .args([
            "--url",
            &app.base,
            "--master-token",
            MASTER,
            "--user-token",
            ADMIN_USER_TOKEN,
        ])
        .output()
        .await
        .expect("the livebase binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_binary_lists_versions_and_rolls_back() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .action("general/onDemand/cli.js", &code("c1"))
        .start()
        .await;
    let id = id_of_action(&app, "cli").await;
    let (status, _) = app
        .put(
            &format!("/1/action/config/{id}"),
            &master(),
            json!({ "code": code("c2") }),
        )
        .await;
    assert_eq!(status, 200);

    let (ok, out, err) = cli(&app, &["versions", "general/onDemand/cli"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("v2 ") && lines[0].contains("replace"),
        "{out}"
    );
    assert!(
        lines[0].ends_with("// answers c2"),
        "first line of the code: {out}"
    );
    assert!(
        lines[1].starts_with("v1 ") && lines[1].contains("file"),
        "{out}"
    );
    assert!(lines[1].ends_with("// answers c1"), "{out}");

    let (ok, out, err) = cli(
        &app,
        &["rollback", "general/onDemand/cli", "--version", "1"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("version 3 now holds the code of version 1"),
        "{out}"
    );
    assert_eq!(answer(&app, "cli").await, json!("c1"));

    // Refusals: a missing version, an unknown action, a malformed name; nothing changes.
    for (args, says) in [
        (
            vec!["rollback", "general/onDemand/cli", "--version", "42"],
            "404",
        ),
        (
            vec!["rollback", "general/onDemand/nope", "--version", "1"],
            "no action general/onDemand/nope",
        ),
        (vec!["versions", "general/cli"], "<object>/<trigger>/<name>"),
    ] {
        let (ok, _, err) = cli(&app, &args).await;
        assert!(!ok, "{args:?} must fail");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(kept(&app, id).await.len(), 3);
}
