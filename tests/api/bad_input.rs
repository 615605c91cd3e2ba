//! Bad input on the data routes: every refusal is a 4xx whose `Message` names the
//! problem, and nothing is written. Bodies, ids, list parameters, injection attempts
//! and credentials, table-driven, on each backend.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

fn lists_schema() -> Value {
    json!({
        "name": "lists",
        "fields": { "title": { "type": "string", "required": true } },
        "permissions": { "read": ["User"], "create": ["User"], "update": ["User"], "delete": ["User"] }
    })
}

fn things_schema() -> Value {
    json!({
        "name": "things",
        "fields": {
            "name": { "type": "string", "required": true, "unique": true, "maxLength": 20 },
            "code": { "type": "string" },
            "body": { "type": "text" },
            "qty": { "type": "int" },
            "price": { "type": "float" },
            "active": { "type": "bool" },
            "at": { "type": "datetime" },
            "meta": { "type": "json" },
            "owner": { "type": "user" },
            "list": { "type": "ref", "object": "lists" }
        },
        "permissions": {
            "read": ["User", "Public"], "create": ["User", "Public"],
            "update": ["User", "Public"], "delete": ["User", "Public"]
        }
    })
}

/// A running app with `lists` and `things`, a signed-in User, and two rows: `keep`
/// (every field set) and `other`.
struct Fixture {
    app: TestApp,
    user: User,
    keep: i64,
    other: i64,
    list: i64,
}

async fn fixture(backend: &Backend, max_body: Option<usize>) -> Fixture {
    let mut spawn = Spawn::new(backend)
        .schema("lists.json", lists_schema())
        .schema("things.json", things_schema());
    if let Some(limit) = max_body {
        spawn = spawn.config(move |c| c.max_body_bytes = limit);
    }
    let app = spawn.start().await;
    let user = app.user("writer@test.local", "User").await;
    let cred = user.cred();
    let list = created_id(
        backend,
        app.post("/1/objects/lists", &cred, json!({ "title": "groceries" }))
            .await,
    );
    let keep = created_id(
        backend,
        app.post(
            "/1/objects/things",
            &cred,
            json!({ "name": "keep", "code": "c1", "body": "long text", "qty": 1, "price": 1.5,
                    "active": true, "at": "2026-01-01T00:00:00Z", "meta": { "a": [1] },
                    "owner": user.id, "list": list }),
        )
        .await,
    );
    let other = created_id(
        backend,
        app.post("/1/objects/things", &cred, json!({ "name": "other" }))
            .await,
    );
    Fixture {
        app,
        user,
        keep,
        other,
        list,
    }
}

fn created_id(backend: &Backend, (status, body): (u16, Value)) -> i64 {
    assert_eq!(status, 200, "{}: seeding: {body}", backend.name());
    body["__metadata"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{}: no id in {body}", backend.name()))
}

/// Every row of every object the tests write to, as master sees them.
async fn snapshot(app: &TestApp) -> (Vec<Value>, Vec<Value>) {
    (app.all_rows("things").await, app.all_rows("lists").await)
}

/// A request whose body is sent byte for byte as JSON (which `TestApp::req` cannot do
/// for text that is not valid JSON).
async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    cred: &Cred,
    body: &str,
) -> (u16, Value) {
    let rb = app
        .client
        .request(method, app.url(path))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    let resp = with_cred(rb, cred).send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

enum Input {
    Raw(&'static str),
    Json(Value),
}

struct Refusal {
    what: String,
    input: Input,
    status: u16,
    /// Each must appear in the `Message`.
    mentions: Vec<String>,
}

fn refusal(what: &str, input: Input, status: u16, mentions: &[&str]) -> Refusal {
    Refusal {
        what: what.to_string(),
        input,
        status,
        mentions: mentions.iter().map(|m| m.to_string()).collect(),
    }
}

/// Checks one answer: the status, a `Message` naming each of `mentions`.
fn check_answer(
    failures: &mut Vec<String>,
    label: &str,
    (status, body): &(u16, Value),
    want_status: u16,
    mentions: &[String],
) {
    if *status != want_status {
        failures.push(format!("{label}: want {want_status}, got {status}: {body}"));
        return;
    }
    let Some(message) = body["Message"].as_str() else {
        failures.push(format!("{label}: no Message in {body}"));
        return;
    };
    for m in mentions {
        if !message.contains(m.as_str()) {
            failures.push(format!(
                "{label}: Message `{message}` does not mention `{m}`"
            ));
        }
    }
}

/// Sends every refusal to `method path`, checking each answer and that nothing
/// changed in the database afterwards.
async fn run_refusals(
    fx: &Fixture,
    method: Method,
    path: &str,
    cases: Vec<Refusal>,
    failures: &mut Vec<String>,
) {
    let app = &fx.app;
    let cred = fx.user.cred();
    let backend = app.backend.name();
    for case in cases {
        let before = snapshot(app).await;
        let answer = match &case.input {
            Input::Raw(text) => send_raw(app, method.clone(), path, &cred, text).await,
            Input::Json(v) => app.req(method.clone(), path, &cred, Some(v.clone())).await,
        };
        let label = format!("{backend}: {method} {path}: {}", case.what);
        check_answer(failures, &label, &answer, case.status, &case.mentions);
        let after = snapshot(app).await;
        if before != after {
            failures.push(format!(
                "{label}: the refused write changed the database: {}",
                changes(&before, &after)
            ));
        }
    }
}

/// The rows that differ between two snapshots, for a readable failure.
fn changes(before: &(Vec<Value>, Vec<Value>), after: &(Vec<Value>, Vec<Value>)) -> String {
    let rows = |snap: &(Vec<Value>, Vec<Value>)| -> Vec<String> {
        snap.0.iter().chain(&snap.1).map(Value::to_string).collect()
    };
    let (old, new) = (rows(before), rows(after));
    let gone: Vec<&String> = old.iter().filter(|r| !new.contains(r)).collect();
    let came: Vec<&String> = new.iter().filter(|r| !old.contains(r)).collect();
    format!("rows gone {gone:?}, rows new {came:?}")
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[rustfmt::skip]
fn create_refusals(fx: &Fixture) -> Vec<Refusal> {
    use Input::{Json, Raw};
    let owner = fx.user.id;
    vec![
        refusal("truncated JSON", Raw(r#"{"name": "x","#), 400, &["JSON"]),
        refusal("unquoted key", Raw(r#"{name: "x"}"#), 400, &["JSON"]),
        refusal("trailing garbage", Raw(r#"{"name": "x"} trailing"#), 400, &["JSON"]),
        refusal("body is an array", Raw(r#"[{"name": "x"}]"#), 400, &["object"]),
        refusal("body is a number", Raw("42"), 400, &["object"]),
        refusal("body is a string", Raw(r#""x""#), 400, &["object"]),
        refusal("body is true", Raw("true"), 400, &["object"]),
        refusal("empty body lacks the required field", Raw(""), 400, &["name", "required"]),
        refusal("string field given a number", Json(json!({ "name": 5 })), 400, &["name"]),
        refusal("string field given an object", Json(json!({ "name": { "a": 1 } })), 400, &["name"]),
        refusal("text field given an array", Json(json!({ "name": "a1", "body": ["x"] })), 400, &["body"]),
        refusal("int field given a string", Json(json!({ "name": "a2", "qty": "5" })), 400, &["qty"]),
        refusal("int field given a fraction", Json(json!({ "name": "a3", "qty": 1.5 })), 400, &["qty"]),
        refusal("int field given a bool", Json(json!({ "name": "a4", "qty": true })), 400, &["qty"]),
        refusal("int beyond 64 bits", Raw(r#"{"name": "a5", "qty": 99999999999999999999}"#), 400, &["qty"]),
        refusal("int just beyond i64", Raw(r#"{"name": "a6", "qty": 9223372036854775808}"#), 400, &["qty"]),
        refusal("float field given a string", Json(json!({ "name": "a7", "price": "1.5" })), 400, &["price"]),
        refusal("float field given a bool", Json(json!({ "name": "a8", "price": true })), 400, &["price"]),
        refusal("bool field given 1", Json(json!({ "name": "a9", "active": 1 })), 400, &["active"]),
        refusal("bool field given a float", Json(json!({ "name": "a10", "active": 1.5 })), 400, &["active"]),
        refusal("bool field given \"true\"", Json(json!({ "name": "a11", "active": "true" })), 400, &["active"]),
        refusal("datetime given words", Json(json!({ "name": "a12", "at": "yesterday" })), 400, &["at"]),
        refusal("datetime month 13", Json(json!({ "name": "a13", "at": "2026-13-01" })), 400, &["at"]),
        refusal("datetime February 30", Json(json!({ "name": "a14", "at": "2026-02-30" })), 400, &["at"]),
        refusal("datetime hour 25", Json(json!({ "name": "a15", "at": "2026-01-01T25:00:00Z" })), 400, &["at"]),
        refusal("datetime given a number", Json(json!({ "name": "a16", "at": 1767225600 })), 400, &["at"]),
        refusal("user ref 0", Json(json!({ "name": "a17", "owner": 0 })), 400, &["owner"]),
        refusal("user ref negative", Json(json!({ "name": "a18", "owner": -1 })), 400, &["owner"]),
        refusal("user ref as text", Json(json!({ "name": "a19", "owner": owner.to_string() })), 400, &["owner"]),
        refusal("object ref 0", Json(json!({ "name": "a20", "list": 0 })), 400, &["list"]),
        refusal("object ref fraction", Json(json!({ "name": "a21", "list": 1.5 })), 400, &["list"]),
        refusal("object ref an object", Json(json!({ "name": "a22", "list": { "id": 1 } })), 400, &["list"]),
        refusal("unknown field", Json(json!({ "name": "a23", "nope": 1 })), 400, &["nope"]),
        refusal("field name in the wrong case", Json(json!({ "Name": "a" })), 400, &["Name"]),
        refusal("password is not a field here", Json(json!({ "name": "a24", "password": "x" })), 400, &["password"]),
        refusal("missing required field", Json(json!({ "qty": 1 })), 400, &["name", "required"]),
        refusal("required field null", Json(json!({ "name": null, "qty": 1 })), 400, &["name", "required"]),
        refusal("id in the body", Json(json!({ "id": 99, "name": "a25" })), 400, &["id"]),
        refusal("over maxLength", Json(json!({ "name": "x".repeat(21) })), 400, &["name", "20"]),
        refusal("over maxLength in multi-byte chars", Json(json!({ "name": "é".repeat(21) })), 400, &["name", "20"]),
        refusal("over the 255 string default", Json(json!({ "name": "a26", "code": "x".repeat(256) })), 400, &["code", "255"]),
        refusal("ref to a missing row", Json(json!({ "name": "a27", "list": 999_999 })), 400, &["list", "999999"]),
        refusal("user ref to a missing user", Json(json!({ "name": "a28", "owner": 999_999 })), 400, &["owner", "999999"]),
        refusal("unique violation", Json(json!({ "name": "keep" })), 409, &["name"]),
    ]
}

#[rustfmt::skip]
fn update_refusals(fx: &Fixture) -> Vec<Refusal> {
    use Input::{Json, Raw};
    vec![
        refusal("truncated JSON", Raw(r#"{"qty": "#), 400, &["JSON"]),
        refusal("body is an array", Raw(r#"[{"qty": 2}]"#), 400, &["object"]),
        refusal("body is a number", Raw("42"), 400, &["object"]),
        refusal("body is a string", Raw(r#""qty""#), 400, &["object"]),
        refusal("int field given a string", Json(json!({ "qty": "5" })), 400, &["qty"]),
        refusal("float field given a string", Json(json!({ "price": "2" })), 400, &["price"]),
        refusal("bool field given a float", Json(json!({ "active": 1.5 })), 400, &["active"]),
        refusal("bad datetime", Json(json!({ "at": "soon" })), 400, &["at"]),
        refusal("user ref 0", Json(json!({ "owner": 0 })), 400, &["owner"]),
        refusal("unknown field", Json(json!({ "nope": 1 })), 400, &["nope"]),
        refusal("unknown field beside a good one", Json(json!({ "qty": 2, "nope": 1 })), 400, &["nope"]),
        refusal("required field set to null", Json(json!({ "name": null })), 400, &["name"]),
        refusal("required field null beside a good one", Json(json!({ "qty": 2, "name": null })), 400, &["name"]),
        refusal("id in the body differs", Json(json!({ "id": fx.other, "qty": 2 })), 400, &["id"]),
        refusal("id in the body is not a number", Json(json!({ "id": "abc", "qty": 2 })), 400, &["id"]),
        refusal("over maxLength", Json(json!({ "name": "x".repeat(21) })), 400, &["name", "20"]),
        refusal("over the 255 string default", Json(json!({ "code": "x".repeat(256) })), 400, &["code", "255"]),
        refusal("ref to a missing row", Json(json!({ "qty": 2, "list": 999_999 })), 400, &["list", "999999"]),
        refusal("user ref to a missing user", Json(json!({ "qty": 2, "owner": 999_999 })), 400, &["owner", "999999"]),
        refusal("unique violation", Json(json!({ "qty": 2, "name": "other" })), 409, &["name"]),
    ]
}

#[tokio::test]
async fn bad_create_bodies_are_refused_and_write_nothing() {
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        let cases = create_refusals(&fx);
        run_refusals(&fx, Method::POST, "/1/objects/things", cases, &mut failures).await;

        // The limits are where the messages say: exactly at them, a write succeeds.
        let (status, body) = fx
            .app
            .post(
                "/1/objects/things",
                &fx.user.cred(),
                json!({ "name": "é".repeat(20), "code": "x".repeat(255), "list": fx.list,
                        "owner": fx.user.id }),
            )
            .await;
        assert_eq!(
            status,
            200,
            "{}: a write at the limits: {body}",
            backend.name()
        );
    }
    assert_no_failures(&failures);
}

#[tokio::test]
async fn bad_update_bodies_are_refused_and_change_nothing() {
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        let cases = update_refusals(&fx);
        let path = format!("/1/objects/things/{}", fx.keep);
        run_refusals(&fx, Method::PUT, &path, cases, &mut failures).await;

        // An `id` that matches the path (as number or text) is fine.
        for id in [json!(fx.keep), json!(fx.keep.to_string())] {
            let (status, body) = fx
                .app
                .put(&path, &fx.user.cred(), json!({ "id": id, "qty": 3 }))
                .await;
            assert_eq!(status, 200, "{}: PUT with id {id}: {body}", backend.name());
        }
    }
    assert_no_failures(&failures);
}

#[tokio::test]
async fn oversized_bodies_are_413_and_write_nothing() {
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, Some(4096)).await;
        let big = json!({ "name": "big", "body": "x".repeat(5000) });
        let cases = vec![refusal(
            "body over 4096 bytes",
            Input::Json(big.clone()),
            413,
            &["larger"],
        )];
        run_refusals(&fx, Method::POST, "/1/objects/things", cases, &mut failures).await;
        let cases = vec![refusal(
            "body over 4096 bytes",
            Input::Json(big),
            413,
            &["larger"],
        )];
        let path = format!("/1/objects/things/{}", fx.keep);
        run_refusals(&fx, Method::PUT, &path, cases, &mut failures).await;

        // Just under the limit is accepted.
        let (status, body) = fx
            .app
            .post(
                "/1/objects/things",
                &fx.user.cred(),
                json!({ "name": "small", "body": "x".repeat(3500) }),
            )
            .await;
        assert_eq!(
            status,
            200,
            "{}: a body under the limit: {body}",
            backend.name()
        );
    }
    assert_no_failures(&failures);
}

#[tokio::test]
async fn bad_ids_and_unknown_objects_are_refused() {
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        let app = &fx.app;
        let cred = fx.user.cred();
        let name = backend.name();
        let before = snapshot(app).await;
        let body = json!({ "qty": 7 });
        let bad_ids = [
            "abc",
            "0",
            "-1",
            "1.5",
            "1e3",
            "0x10",
            "99999999999999999999",
            "%20",
        ];
        for id in bad_ids {
            let path = format!("/1/objects/things/{id}");
            let mention = vec![id.replace("%20", " ")];
            for method in [Method::GET, Method::PUT, Method::DELETE] {
                let answer = app
                    .req(method.clone(), &path, &cred, Some(body.clone()))
                    .await;
                let label = format!("{name}: {method} {path}");
                check_answer(&mut failures, &label, &answer, 400, &mention);
            }
        }
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let path = "/1/objects/things/999999";
            let answer = app
                .req(method.clone(), path, &cred, Some(body.clone()))
                .await;
            let label = format!("{name}: {method} {path}");
            check_answer(&mut failures, &label, &answer, 404, &["999999".to_string()]);
        }
        let unknown = [
            (Method::GET, "/1/objects/nope".to_string()),
            (Method::POST, "/1/objects/nope".to_string()),
            (Method::GET, format!("/1/objects/nope/{}", fx.keep)),
            (Method::PUT, format!("/1/objects/nope/{}", fx.keep)),
            (Method::DELETE, format!("/1/objects/nope/{}", fx.keep)),
            (Method::GET, "/1/objects/Things".to_string()),
        ];
        for (method, path) in unknown {
            let object = path.split('/').nth(3).unwrap().to_string();
            let answer = app
                .req(method.clone(), &path, &cred, Some(json!({ "name": "n" })))
                .await;
            check_answer(
                &mut failures,
                &format!("{name}: {method} {path}"),
                &answer,
                404,
                &[object],
            );
        }
        let after = snapshot(app).await;
        assert_eq!(
            before, after,
            "{name}: refused requests changed the database"
        );
    }
    assert_no_failures(&failures);
}

#[rustfmt::skip]
fn list_refusals() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let f = |v: Value| format!("filter={}", q(&v));
    let s = |v: Value| format!("sort={}", q(&v));
    let c = |field: &str, op: &str, value: Value| json!([{ "fieldName": field, "operator": op, "value": value }]);
    vec![
        ("unknown field in filter", f(c("nope", "equals", json!(1))), vec!["nope"]),
        ("unknown field in sort", s(json!([{ "fieldName": "nope", "order": "asc" }])), vec!["nope"]),
        ("unknown operator", f(c("qty", "like", json!(1))), vec!["like"]),
        ("operator in the wrong case", f(c("qty", "EQUALS", json!(1))), vec!["EQUALS"]),
        ("filter not JSON", "filter=%5B%7B%22fieldName%22%3A".to_string(), vec!["filter", "JSON"]),
        ("filter is plain text", "filter=name%3Dkeep".to_string(), vec!["filter", "JSON"]),
        ("filter is a number", f(json!(5)), vec!["filter"]),
        ("filter is a string", f(json!("name")), vec!["filter"]),
        ("filter holds a number", f(json!([1])), vec!["filter"]),
        ("filter object has an extra key",
            f(json!([{ "fieldName": "qty", "operator": "equals", "value": 1, "extra": 2 }])), vec!["extra"]),
        ("filter object lacks operator", f(json!([{ "fieldName": "qty", "value": 1 }])), vec!["operator"]),
        ("filter object lacks fieldName", f(json!([{ "operator": "equals", "value": 1 }])), vec!["fieldName"]),
        ("string operator on an int", f(c("qty", "contains", json!("1"))), vec!["contains", "qty"]),
        ("string operator on a datetime", f(c("at", "startsWith", json!("2026"))), vec!["startsWith", "at"]),
        ("text for an int", f(c("qty", "equals", json!("abc"))), vec!["qty"]),
        ("fraction for an int", f(c("qty", "greaterThan", json!(1.5))), vec!["qty"]),
        ("word for a bool", f(c("active", "equals", json!("yes"))), vec!["active"]),
        ("words for a datetime", f(c("at", "lessThan", json!("soon"))), vec!["at"]),
        ("bad element in `in`", f(c("qty", "in", json!([1, "x"]))), vec!["qty"]),
        ("array for equals on an int", f(c("qty", "equals", json!([1, 2]))), vec!["qty"]),
        ("ordering a json field", f(c("meta", "greaterThan", json!(1))), vec!["meta"]),
        ("sorting a json field", s(json!([{ "fieldName": "meta" }])), vec!["meta"]),
        ("sort not JSON", "sort=name".to_string(), vec!["sort", "JSON"]),
        ("sort is a number", s(json!(1)), vec!["sort"]),
        ("sort object has an extra key", s(json!([{ "fieldName": "qty", "dir": "asc" }])), vec!["dir"]),
        ("sort order up", s(json!([{ "fieldName": "qty", "order": "up" }])), vec!["up"]),
        ("sort order with SQL", s(json!([{ "fieldName": "qty", "order": "asc; DROP TABLE things" }])), vec!["order"]),
        ("pageSize text", "pageSize=abc".to_string(), vec!["pageSize", "abc"]),
        ("pageSize zero", "pageSize=0".to_string(), vec!["pageSize"]),
        ("pageSize negative", "pageSize=-5".to_string(), vec!["pageSize", "-5"]),
        ("pageSize fraction", "pageSize=2.5".to_string(), vec!["pageSize"]),
        ("pageSize over the maximum", "pageSize=1001".to_string(), vec!["pageSize", "1000"]),
        ("pageSize huge", "pageSize=99999999999999999999".to_string(), vec!["pageSize"]),
        ("pageNumber text", "pageNumber=abc".to_string(), vec!["pageNumber", "abc"]),
        ("pageNumber zero", "pageNumber=0".to_string(), vec!["pageNumber"]),
        ("pageNumber negative", "pageNumber=-1".to_string(), vec!["pageNumber"]),
        ("pageNumber huge", "pageNumber=99999999999".to_string(), vec!["pageNumber"]),
        ("search too long", format!("search={}", "x".repeat(201)), vec!["search"]),
    ]
}

#[tokio::test]
async fn bad_list_parameters_are_400_naming_the_problem() {
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        let cred = fx.user.cred();
        let before = snapshot(&fx.app).await;
        for (what, query, mentions) in list_refusals() {
            let path = format!("/1/objects/things?{query}");
            let answer = fx.app.get(&path, &cred).await;
            let mentions: Vec<String> = mentions.iter().map(|m| m.to_string()).collect();
            let label = format!("{}: {what} ({path})", backend.name());
            check_answer(&mut failures, &label, &answer, 400, &mentions);
        }
        assert_eq!(
            before,
            snapshot(&fx.app).await,
            "{}: lists changed rows",
            backend.name()
        );
    }
    assert_no_failures(&failures);
}

const BOBBY: &str = "Robert'); DROP TABLE things;--";
const TAUTOLOGY: &str = "' OR 1=1 --";

#[tokio::test]
async fn injection_in_values_matches_only_literally() {
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        let app = &fx.app;
        let cred = fx.user.cred();
        let name = backend.name();
        // Rows whose values are themselves injection strings: they must be found by
        // exactly those strings, and by nothing looser.
        let bobby = created_id(
            &backend,
            app.post(
                "/1/objects/things",
                &cred,
                json!({ "name": "bobby", "body": BOBBY }),
            )
            .await,
        );
        let tautology = created_id(
            &backend,
            app.post("/1/objects/things", &cred, json!({ "name": TAUTOLOGY }))
                .await,
        );
        let before = snapshot(app).await;
        assert_eq!(before.0.len(), 4, "{name}: {:?}", before.0);

        let c = |field: &str, op: &str, value: Value| {
            format!(
                "filter={}",
                q(&json!([{ "fieldName": field, "operator": op, "value": value }]))
            )
        };
        let search = |text: &str| {
            let encoded: String = text.bytes().map(|b| format!("%{b:02X}")).collect();
            format!("search={encoded}")
        };
        let cases: Vec<(&str, String, Vec<i64>)> = vec![
            (
                "tautology as a name",
                c("name", "equals", json!(TAUTOLOGY)),
                vec![tautology],
            ),
            (
                "quote-closing tautology",
                c("name", "equals", json!("x' OR '1'='1")),
                vec![],
            ),
            (
                "double-quote drop",
                c("name", "equals", json!("\"; DROP TABLE things; --")),
                vec![],
            ),
            (
                "drop as notEquals",
                c("name", "notEquals", json!("'; DROP TABLE things; --")),
                vec![fx.keep, fx.other, bobby, tautology],
            ),
            (
                "stacked query in contains",
                c("name", "contains", json!("' OR '1'='1")),
                vec![],
            ),
            (
                "comment in startsWith",
                c("name", "startsWith", json!("%' --")),
                vec![],
            ),
            (
                "union in endsWith",
                c("name", "endsWith", json!("' UNION SELECT * FROM users --")),
                vec![],
            ),
            (
                "the stored drop text, exactly",
                c("body", "equals", json!(BOBBY)),
                vec![bobby],
            ),
            (
                "part of the stored drop text",
                c("body", "contains", json!("drop table things")),
                vec![bobby],
            ),
            (
                "injection in `in`",
                c("name", "in", json!(format!("{TAUTOLOGY},keep"))),
                vec![fx.keep, tautology],
            ),
            (
                "injection in `in` array",
                c("name", "in", json!([TAUTOLOGY, "x'); DROP TABLE lists;--"])),
                vec![tautology],
            ),
            (
                "search with a tautology",
                search("' OR 1=1 --"),
                vec![tautology],
            ),
            (
                "search with a drop",
                search("\"; DROP TABLE things; --"),
                vec![],
            ),
            ("search with a semicolon", search(";"), vec![bobby]),
        ];
        for (what, query, want) in cases {
            let path = format!("/1/objects/things?{query}");
            let (status, body) = app.get(&path, &cred).await;
            let got: Vec<i64> = body["data"]
                .as_array()
                .map(|rows| rows.iter().filter_map(|r| r["id"].as_i64()).collect())
                .unwrap_or_default();
            if status != 200 || got != want || body["totalRows"] != json!(want.len()) {
                failures.push(format!(
                    "{name}: {what}: want 200 with ids {want:?}, got {status}: {body} ({path})"
                ));
            }
        }
        // Values that cannot be the field's type are refused, not spliced in.
        for (field, value) in [
            ("qty", "1 OR 1=1"),
            ("id", "1; DROP TABLE things"),
            ("price", "0) OR (1=1"),
            ("active", "true OR 1=1"),
            ("at", "2026-01-01' OR '1'='1"),
        ] {
            let path = format!("/1/objects/things?{}", c(field, "equals", json!(value)));
            let answer = app.get(&path, &cred).await;
            check_answer(
                &mut failures,
                &format!("{name}: {field} = {value}"),
                &answer,
                400,
                &[field.to_string()],
            );
        }
        assert_eq!(
            before,
            snapshot(app).await,
            "{name}: rows changed after injection attempts"
        );
    }
    assert_no_failures(&failures);
}

#[tokio::test]
async fn injection_in_names_is_refused() {
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        let app = &fx.app;
        let cred = fx.user.cred();
        let name = backend.name();
        let before = snapshot(app).await;
        let hostile = [
            "name; DROP TABLE things",
            "name\"--",
            "name\" = name OR \"1",
            "1=1",
            "(SELECT 1)",
            "name ",
            "",
        ];
        for field in hostile {
            for (what, query) in [
                (
                    "filter",
                    format!(
                        "filter={}",
                        q(&json!([{ "fieldName": field, "operator": "equals", "value": "keep" }]))
                    ),
                ),
                (
                    "sort",
                    format!(
                        "sort={}",
                        q(&json!([{ "fieldName": field, "order": "asc" }]))
                    ),
                ),
            ] {
                let path = format!("/1/objects/things?{query}");
                let answer = app.get(&path, &cred).await;
                let label = format!("{name}: {what} on field {field:?}");
                check_answer(&mut failures, &label, &answer, 400, &[format!("`{field}`")]);
            }
        }
        let path = format!(
            "/1/objects/things?filter={}",
            q(&json!([{ "fieldName": "name", "operator": "= 'keep' OR 1=1 --", "value": "x" }]))
        );
        check_answer(
            &mut failures,
            &format!("{name}: operator injection"),
            &app.get(&path, &cred).await,
            400,
            &["operator".to_string()],
        );

        // Object names are looked up, never spliced: quotes and SQL in the path are 404.
        let objects = [
            "things%22",
            "things'",
            "%22things%22",
            "things%22%3B%20DROP%20TABLE%20things%3B--",
            "things;DROP%20TABLE%20things",
            "users%22%20--",
        ];
        for object in objects {
            for (method, path) in [
                (Method::GET, format!("/1/objects/{object}")),
                (Method::POST, format!("/1/objects/{object}")),
                (Method::GET, format!("/1/objects/{object}/{}", fx.keep)),
                (Method::PUT, format!("/1/objects/{object}/{}", fx.keep)),
                (Method::DELETE, format!("/1/objects/{object}/{}", fx.keep)),
            ] {
                let answer = app
                    .req(
                        method.clone(),
                        &path,
                        &master(),
                        Some(json!({ "name": "pwned" })),
                    )
                    .await;
                check_answer(
                    &mut failures,
                    &format!("{name}: {method} {path}"),
                    &answer,
                    404,
                    &["no object".to_string()],
                );
            }
        }
        assert_eq!(
            before,
            snapshot(app).await,
            "{name}: rows changed after injection attempts"
        );
    }
    assert_no_failures(&failures);
}

#[tokio::test]
async fn bad_credentials_on_data_routes_are_401() {
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        let app = &fx.app;
        let name = backend.name();
        let (status, login) = app.login(&fx.user.email, &fx.user.password).await;
        assert_eq!(status, 200, "{name}: {login}");
        let refresh = login["refresh_token"].as_str().unwrap().to_string();

        let creds: Vec<(&str, Cred, &str)> = vec![
            ("no credentials", Cred::None, "credentials"),
            (
                "bearer garbage",
                Cred::Bearer("garbage".into()),
                "invalid or expired token",
            ),
            (
                "bearer with nothing",
                Cred::Raw("Bearer".into()),
                "invalid or expired token",
            ),
            (
                "bearer tampered",
                Cred::Bearer(format!("{}x", fx.user.token)),
                "invalid or expired token",
            ),
            (
                "refresh token as access token",
                Cred::Bearer(refresh),
                "invalid or expired token",
            ),
            ("unknown scheme", Cred::Raw("Token abc".into()), "scheme"),
            (
                "digest scheme",
                Cred::Raw("Digest username=\"x\"".into()),
                "scheme",
            ),
            (
                "wrong anonymous token",
                Cred::Anonymous("not-the-token".into()),
                "anonymous",
            ),
            (
                "empty anonymous token",
                Cred::Anonymous(String::new()),
                "anonymous",
            ),
            (
                "basic with wrong master",
                Cred::Basic("wrong".into(), ADMIN_USER_TOKEN.into()),
                "Basic",
            ),
            (
                "basic with wrong user token",
                Cred::Basic(MASTER.into(), "wrong".into()),
                "Basic",
            ),
            ("basic not base64", Cred::Raw("Basic !!!".into()), "Basic"),
        ];
        let keep = format!("/1/objects/things/{}", fx.keep);
        let routes = [
            (Method::GET, "/1/objects/things".to_string(), None),
            (
                Method::POST,
                "/1/objects/things".to_string(),
                Some(json!({ "name": "intruder" })),
            ),
            (Method::GET, keep.clone(), None),
            (Method::PUT, keep.clone(), Some(json!({ "qty": 666 }))),
            (Method::DELETE, keep.clone(), None),
        ];
        let before = snapshot(app).await;
        for (what, cred, mention) in &creds {
            for (method, path, body) in &routes {
                let answer = app.req(method.clone(), path, cred, body.clone()).await;
                let label = format!("{name}: {what}: {method} {path}");
                check_answer(&mut failures, &label, &answer, 401, &[mention.to_string()]);
                if *what == "bearer garbage"
                    && answer.1["Message"] != json!("invalid or expired token")
                {
                    failures.push(format!(
                        "{label}: Message must be exactly `invalid or expired token`: {}",
                        answer.1
                    ));
                }
            }
        }
        assert_eq!(
            before,
            snapshot(app).await,
            "{name}: refused credentials changed rows"
        );

        // The same routes answer the right anonymous token, so the 401s above were
        // about the credentials.
        let (status, body) = app
            .get("/1/objects/things", &Cred::Anonymous(ANON.into()))
            .await;
        assert_eq!(status, 200, "{name}: anonymous read: {body}");
        assert_eq!(body["totalRows"], json!(2), "{name}: {body}");
    }
    assert_no_failures(&failures);
}

/// Values one backend cannot hold must get the same answer on every backend: PostgreSQL
/// stores no U+0000 in text or jsonb and no timestamp before 4713 BC, so livebase
/// refuses them (400 naming the field) instead of storing them on SQLite and failing
/// with a 500 on PostgreSQL. A filter value containing U+0000 can then match nothing.
#[tokio::test]
async fn values_a_backend_cannot_store_are_refused_everywhere() {
    use Input::Json;
    let mut failures = Vec::new();
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        // Filters first, while no row could hold such a value.
        let app = &fx.app;
        let cred = fx.user.cred();
        let name = backend.name();
        let c = |field: &str, op: &str, value: Value| {
            let filter = json!([{ "fieldName": field, "operator": op, "value": value }]);
            format!("/1/objects/things?filter={}", q(&filter))
        };
        let path = c("at", "lessThan", json!("-5000-01-01"));
        let answer = app.get(&path, &cred).await;
        check_answer(
            &mut failures,
            &format!("{name}: {path}"),
            &answer,
            400,
            &["at".to_string()],
        );
        // NUL ends a C string: it must not cut a LIKE pattern down to a match-all.
        let nothing = [
            c("name", "equals", json!("keep\u{0}")),
            c("name", "contains", json!("\u{0}")),
            c("name", "startsWith", json!("\u{0}")),
            c("meta", "equals", json!("\u{0}")),
            "/1/objects/things?search=%00".to_string(),
        ];
        for path in nothing {
            let (status, body) = app.get(&path, &cred).await;
            if status != 200 || body["totalRows"] != json!(0) || body["data"] != json!([]) {
                failures.push(format!(
                    "{name}: {path}: want 200 and no rows, got {status}: {body}"
                ));
            }
        }
        #[rustfmt::skip]
        let creates = vec![
            refusal("NUL in a string", Json(json!({ "name": "a\u{0}b" })), 400, &["name"]),
            refusal("NUL in a text", Json(json!({ "name": "n2", "body": "x\u{0}y" })), 400, &["body"]),
            refusal("NUL in json", Json(json!({ "name": "n3", "meta": { "k": "\u{0}" } })), 400, &["meta"]),
            refusal("datetime in 5000 BC", Json(json!({ "name": "n4", "at": "-5000-01-01" })), 400, &["at"]),
        ];
        run_refusals(
            &fx,
            Method::POST,
            "/1/objects/things",
            creates,
            &mut failures,
        )
        .await;
        #[rustfmt::skip]
        let updates = vec![
            refusal("NUL in a text", Json(json!({ "qty": 2, "body": "x\u{0}" })), 400, &["body"]),
            refusal("datetime in 5000 BC", Json(json!({ "qty": 2, "at": "-5000-01-01" })), 400, &["at"]),
        ];
        let path = format!("/1/objects/things/{}", fx.keep);
        run_refusals(&fx, Method::PUT, &path, updates, &mut failures).await;
    }
    assert_no_failures(&failures);
}

/// `curl -d '{…}'` labels JSON as a form: refused with the header to send, not read as
/// a form whose one field is the whole text; nothing is written.
#[tokio::test]
async fn json_labelled_as_a_form_is_refused_naming_the_header() {
    for backend in backends() {
        let fx = fixture(&backend, None).await;
        let (_, before) = fx.app.get("/1/objects/lists", &fx.user.cred()).await;
        let response = with_cred(
            reqwest::Client::new().post(fx.app.url("/1/objects/lists")),
            &fx.user.cred(),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#" {"title":"sent by curl -d"}"#)
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), 415, "{backend:?}");
        let body: Value = response.json().await.unwrap();
        let message = body["Message"].as_str().unwrap_or_default();
        assert!(
            message.contains("Content-Type: application/json"),
            "{backend:?}: {body}"
        );
        let (_, after) = fx.app.get("/1/objects/lists", &fx.user.cred()).await;
        assert_eq!(before["totalRows"], after["totalRows"], "{backend:?}");
        // A real form still is one (the SDK's sign-in).
        let response = reqwest::Client::new()
            .post(fx.app.url("/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", "writer@test.local"),
                ("password", "nope-wrong"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{backend:?}: a form is read as one");
    }
}
