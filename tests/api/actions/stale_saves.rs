//! Two operators editing one action: a replace that names the `version` it read is
//! refused (409, nothing changed) once someone else has saved since; one that names
//! none saves as before. And the action record's `file`: the file of the actions
//! directory the running code is, relative to that directory, or null.

use serde_json::{Value, json};

use crate::common::{Spawn, TestApp, backends, master};

fn code(answer: &str) -> String {
    format!("function backandCallback() {{\n  return '{answer}';\n}}\n")
}

async fn record(app: &TestApp, id: i64) -> Value {
    let (status, body) = app.get(&format!("/1/action/config/{id}"), &master()).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn answer(app: &TestApp, name: &str) -> Value {
    app.get(&format!("/1/function/general/{name}"), &master())
        .await
        .1
}

#[tokio::test]
async fn a_save_from_a_stale_read_is_refused_and_changes_nothing() {
    for backend in backends() {
        let be = backend.name();
        let app = Spawn::new(&backend)
            .action("general/onDemand/shared.js", &code("v1"))
            .start()
            .await;
        let (_, all) = app.get("/1/action/config", &master()).await;
        let id = all["data"][0]["id"].as_i64().unwrap();
        let path = format!("/1/action/config/{id}");
        let read = record(&app, id).await;
        assert_eq!(read["version"], 1, "{be}: {read}");

        // Both operators read version 1; the first save wins.
        let mut first = read.clone();
        first["code"] = json!(code("first"));
        let (status, body) = app.put(&path, &master(), first).await;
        assert_eq!(status, 200, "{be}: {body}");
        assert_eq!(body["version"], 2, "{be}: {body}");
        let mut second = read.clone();
        second["code"] = json!(code("second"));
        let (status, body) = app.put(&path, &master(), second).await;
        assert_eq!(
            (status, body),
            (
                409,
                json!({ "Message": "action general/onDemand/shared is at version 2 now, not 1: reload it before saving" })
            ),
            "{be}"
        );
        let now = record(&app, id).await;
        assert_eq!(
            (&now["version"], &now["code"]),
            (&json!(2), &json!(code("first"))),
            "{be}: the refused save changed nothing"
        );
        assert_eq!(answer(&app, "shared").await, json!("first"), "{be}");
        let (_, versions) = app.get(&format!("{path}/versions"), &master()).await;
        assert_eq!(
            versions["totalRows"], 2,
            "{be}: no version kept: {versions}"
        );

        // Saving from the current version works; so does a save naming no version.
        let (status, body) = app
            .put(
                &path,
                &master(),
                json!({ "code": code("third"), "version": 2 }),
            )
            .await;
        assert_eq!((status, &body["version"]), (200, &json!(3)), "{be}: {body}");
        let (status, body) = app
            .put(&path, &master(), json!({ "code": code("fourth") }))
            .await;
        assert_eq!((status, &body["version"]), (200, &json!(4)), "{be}: {body}");
        let (status, body) = app
            .put(
                &path,
                &master(),
                json!({ "code": code("fifth"), "version": null }),
            )
            .await;
        assert_eq!((status, &body["version"]), (200, &json!(5)), "{be}: {body}");
        // A version from the future is no better than a stale one.
        let (status, body) = app
            .put(
                &path,
                &master(),
                json!({ "code": code("sixth"), "version": 9 }),
            )
            .await;
        assert_eq!(status, 409, "{be}: {body}");

        // Rollback is unaffected by the check.
        let (status, body) = app
            .post(
                &format!("{path}/rollback"),
                &master(),
                json!({ "version": 2 }),
            )
            .await;
        assert_eq!((status, &body["version"]), (200, &json!(6)), "{be}: {body}");

        for bad in [
            json!("6"),
            json!(0),
            json!(-1),
            json!(6.5),
            json!(1e300),
            json!(true),
            json!([6]),
            json!({ "v": 6 }),
        ] {
            let (status, body) = app
                .put(
                    &path,
                    &master(),
                    json!({ "code": code("bad"), "version": bad }),
                )
                .await;
            assert_eq!(
                (status, body),
                (
                    400,
                    json!({ "Message": "`version` must be a positive integer: the version the action was read at" })
                ),
                "{be}: {bad}"
            );
        }
        let now = record(&app, id).await;
        assert_eq!(
            (&now["version"], &now["code"]),
            (&json!(6), &json!(code("first"))),
            "{be}: nothing saved by the refused bodies"
        );
    }
}

/// Of many saves from the same read sent at once, exactly one is saved.
#[tokio::test]
async fn of_simultaneous_saves_from_one_read_one_wins() {
    for backend in backends() {
        let be = backend.name();
        let app = Spawn::new(&backend)
            .action("general/onDemand/raced.js", &code("v1"))
            .start()
            .await;
        let (_, all) = app.get("/1/action/config", &master()).await;
        let id = all["data"][0]["id"].as_i64().unwrap();
        let path = format!("/1/action/config/{id}");
        let saves = (0..8).map(|n| {
            let (app, path) = (&app, &path);
            async move {
                let body = json!({ "code": code(&format!("s{n}")), "version": 1 });
                (n, app.put(path, &master(), body).await)
            }
        });
        let results = futures_util::future::join_all(saves).await;
        let won: Vec<usize> = results
            .iter()
            .filter(|(_, (status, _))| *status == 200)
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(won.len(), 1, "{be}: {results:?}");
        for (_, (status, body)) in &results {
            assert!(*status == 200 || *status == 409, "{be}: {status} {body}");
        }
        let now = record(&app, id).await;
        assert_eq!(
            (&now["version"], &now["code"]),
            (&json!(2), &json!(code(&format!("s{}", won[0])))),
            "{be}"
        );
    }
}

#[tokio::test]
async fn the_record_names_the_file_its_code_is_while_it_is() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .action("general/onDemand/from_file.js", &code("file"))
        .start()
        .await;
    let (_, all) = app.get("/1/action/config", &master()).await;
    let id = all["data"][0]["id"].as_i64().unwrap();
    assert_eq!(
        all["data"][0]["file"], "general/onDemand/from_file.js",
        "relative to the actions directory: {all}"
    );
    let dir = app.data_dir.path().display().to_string();
    assert!(!all.to_string().contains(&dir), "no server path: {all}");
    assert_eq!(
        record(&app, id).await["file"],
        "general/onDemand/from_file.js"
    );

    let (status, body) = app
        .put(
            &format!("/1/action/config/{id}"),
            &master(),
            json!({ "code": code("edited") }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file"], Value::Null, "edited over the API: {body}");
    assert_eq!(record(&app, id).await["file"], Value::Null);

    // Rolled back to the file's code, it is the file's again.
    let (status, body) = app
        .post(
            &format!("/1/action/config/{id}/rollback"),
            &master(),
            json!({ "version": 1 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file"], "general/onDemand/from_file.js", "{body}");

    let upload = json!({ "name": "uploaded", "object": "general", "trigger": "onDemand",
                         "code": code("up") });
    let (status, body) = app.post("/1/action/config", &master(), upload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file"], Value::Null, "{body}");
}
