//! `GET|POST /1/query/data/{name}`: rows as the caller may see them, bad input refused
//! by name, parameters always bound.

use serde_json::{Value, json};

use super::spawn;
use crate::common::{ANON, Cred, TestApp, backends, master, q};

fn emails(rows: &Value) -> Vec<&str> {
    rows.as_array()
        .unwrap_or_else(|| panic!("an array of rows: {rows}"))
        .iter()
        .map(|r| r["email"].as_str().unwrap())
        .collect()
}

async fn run(app: &TestApp, cred: &Cred, name: &str, parameters: &Value) -> (u16, Value) {
    app.get(
        &format!("/1/query/data/{name}?parameters={}", q(parameters)),
        cred,
    )
    .await
}

#[tokio::test]
async fn a_query_answers_its_rows_by_get_and_post() {
    for backend in &backends() {
        let app = spawn(backend).start().await;
        let alice = app.user("alice@q.test", "User").await;
        let bob = app.user("bob@q.test", "User").await;
        app.user("carol@q.test", "ReadOnly").await;
        let b = backend.name();

        let (status, rows) = run(
            &app,
            &alice.cred(),
            "users_by_role",
            &json!({"role": "User"}),
        )
        .await;
        assert_eq!(status, 200, "{b}: {rows}");
        assert_eq!(
            emails(&rows),
            [alice.email.as_str(), bob.email.as_str()],
            "{b}"
        );
        assert_eq!(rows[0]["id"], json!(alice.id), "{b}: ids are numbers");
        assert_eq!(rows[0]["role"], "User", "{b}");

        // The SDK's query.post(name, parameters): {"parameters": {…}} in the body.
        let (status, rows) = app
            .post(
                "/1/query/data/users_by_role",
                &alice.cred(),
                json!({ "parameters": { "role": "ReadOnly" } }),
            )
            .await;
        assert_eq!(status, 200, "{b}: {rows}");
        assert_eq!(emails(&rows), ["carol@q.test"], "{b}");

        // Admin (and the master token) may run any query.
        let (status, rows) = run(&app, &master(), "users_by_role", &json!({"role": "Admin"})).await;
        assert_eq!(status, 200, "{b}: {rows}");
        assert_eq!(emails(&rows), [crate::common::ADMIN_EMAIL], "{b}");

        // No rows is an empty array, not an error.
        let (status, rows) = run(
            &app,
            &alice.cred(),
            "users_by_role",
            &json!({"role": "Nobody"}),
        )
        .await;
        assert_eq!((status, rows), (200, json!([])), "{b}");

        let (status, rows) = run(&app, &alice.cred(), "kinds", &json!({"n": 41})).await;
        assert_eq!(status, 200, "{b}: {rows}");
        assert_eq!(
            rows,
            json!([{ "i": 1, "f": 2.5, "t": "x", "empty": null, "c": 4, "next": 42 }]),
            "{b}"
        );
    }
}

#[tokio::test]
async fn bad_parameters_are_refused_by_name() {
    for backend in &backends() {
        let app = spawn(backend).start().await;
        let alice = app.user("alice@q.test", "User").await;
        let b = backend.name();
        let cases: [(&str, u16, &str); 8] = [
            ("parameters=%7Bnot%20json", 400, "not JSON"),
            ("parameters=%5B1%5D", 400, "JSON object"),
            ("parameters=%7B%7D", 400, "needs the parameter `role`"),
            ("", 400, "needs the parameter `role`"),
            (
                "parameters=%7B%22role%22%3A%22User%22%2C%22x%22%3A1%7D",
                400,
                "has no parameter `x`",
            ),
            (
                "parameters=%7B%22role%22%3A%5B%22User%22%5D%7D",
                400,
                "`role`",
            ),
            (
                "parameters=%7B%22role%22%3A%7B%22a%22%3A1%7D%7D",
                400,
                "not an object",
            ),
            ("parameters=%7B%22role%22%3A1e400%7D", 400, "not JSON"),
        ];
        for (query, status, wanted) in cases {
            let (got, body) = app
                .get(
                    &format!("/1/query/data/users_by_role?{query}"),
                    &alice.cred(),
                )
                .await;
            assert_eq!(got, status, "{b} {query}: {body}");
            let message = body["Message"].as_str().unwrap_or_default();
            assert!(message.contains(wanted), "{b} {query}: {body}");
        }
        let (status, body) = run(
            &app,
            &alice.cred(),
            "users_by_role",
            &json!({"role": ["User"]}),
        )
        .await;
        assert_eq!(status, 400, "{b}: {body}");
        assert!(
            body["Message"].as_str().unwrap().contains("not an array"),
            "{body}"
        );

        let (status, body) = run(&app, &alice.cred(), "nope", &json!({})).await;
        assert_eq!(status, 404, "{b}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("no query `nope`")
        );

        for (body, wanted) in [
            (json!({ "params": {} }), "unknown body key `params`"),
            (json!([1]), "the body of a query"),
            (json!({ "parameters": "{\"role\": " }), "not JSON"),
        ] {
            let (status, answer) = app
                .post("/1/query/data/users_by_role", &alice.cred(), body.clone())
                .await;
            assert_eq!(status, 400, "{b} {body}: {answer}");
            assert!(
                answer["Message"].as_str().unwrap().contains(wanted),
                "{b} {body}: {answer}"
            );
        }
        let (status, answer) = app
            .post(
                &format!(
                    "/1/query/data/users_by_role?parameters={}",
                    q(&json!({"role": "User"}))
                ),
                &alice.cred(),
                json!({ "parameters": { "role": "User" } }),
            )
            .await;
        assert_eq!(status, 400, "{b}: {answer}");
        assert!(answer["Message"].as_str().unwrap().contains("give it once"));
    }
}

#[tokio::test]
async fn only_the_roles_it_names_may_run_a_query() {
    for backend in &backends() {
        let app = spawn(backend).start().await;
        let carol = app.user("carol@q.test", "ReadOnly").await;
        let b = backend.name();
        let params = json!({ "role": "ReadOnly" });
        for (who, cred, status) in [
            ("ReadOnly", carol.cred(), 403),
            ("anonymous", Cred::Anonymous(ANON.into()), 403),
            ("nobody", Cred::None, 401),
        ] {
            let (got, body) = run(&app, &cred, "users_by_role", &params).await;
            assert_eq!(got, status, "{b} {who}: {body}");
            assert!(
                !body.to_string().contains("carol@q.test"),
                "{b} {who}: {body}"
            );
            assert!(body.get("Message").is_some(), "{b} {who}: {body}");
        }
        let (_, body) = run(&app, &carol.cred(), "users_by_role", &params).await;
        assert_eq!(
            body["Message"],
            "role `ReadOnly` may not run query `users_by_role`"
        );
    }
}

#[tokio::test]
async fn parameters_arrive_as_values_never_as_sql() {
    for backend in &backends() {
        let app = spawn(backend).start().await;
        let alice = app.user("alice@q.test", "User").await;
        let b = backend.name();
        for attack in [
            "User' OR '1'='1",
            "x'); DROP TABLE \"users\"; --",
            "{{role}}",
            "?",
            "$1",
            "a+b %2B",
        ] {
            let (status, rows) = run(
                &app,
                &alice.cred(),
                "users_by_role",
                &json!({"role": attack}),
            )
            .await;
            assert_eq!((status, &rows), (200, &json!([])), "{b} {attack}");
            let (status, rows) = run(&app, &alice.cred(), "echo", &json!({"t": attack})).await;
            assert_eq!(status, 200, "{b} {attack}: {rows}");
            assert_eq!(rows, json!([{ "t": attack }]), "{b}");
        }
        // Each JSON kind is bound as its own type.
        for value in [json!(7), json!(-2.25), json!(true), json!(null), json!("")] {
            let (status, rows) = run(&app, &alice.cred(), "echo", &json!({"t": value})).await;
            assert_eq!(status, 200, "{b} {value}: {rows}");
            let want = match (&backend, &value) {
                // SQLite has no boolean: true is stored and read as 1.
                (crate::common::Backend::Sqlite, Value::Bool(_)) => json!(1),
                _ => value.clone(),
            };
            assert_eq!(rows[0]["t"], want, "{b} {value}");
        }
        // The users table is still there and whole.
        let (status, rows) = run(
            &app,
            &alice.cred(),
            "users_by_role",
            &json!({"role": "User"}),
        )
        .await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(emails(&rows), [alice.email.as_str()], "{b}");
    }
}

/// The SDK's `query.get(name, {t: "a+b"})` sends `encodeURIComponent("a+b")` inside the
/// JSON; the query sees what the caller wrote.
#[tokio::test]
async fn sdk_escaped_parameters_arrive_as_written() {
    let backend = &backends()[0];
    let app = spawn(backend).start().await;
    let alice = app.user("alice@q.test", "User").await;
    let sent = json!({ "t": crate::common::enc("a+b c") });
    let (status, rows) = app
        .get(
            &format!("/1/query/data/echo?parameters={}", q(&sent)),
            &alice.cred(),
        )
        .await;
    assert_eq!((status, rows), (200, json!([{ "t": "a+b c" }])));
}
