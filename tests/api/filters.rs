//! List queries: every filter operator, `search`, `sort` and paging, as one table of
//! cases run against each backend over the same seeded rows. Each case states the exact
//! rows (by seed position) and order it must return, and `totalRows`.

use serde_json::{Value, json};

use crate::common::*;

fn things_schema() -> Value {
    json!({
        "name": "things",
        "fields": {
            "name": { "type": "string" },
            "note": { "type": "text" },
            "qty": { "type": "int" },
            "price": { "type": "float" },
            "active": { "type": "bool" },
            "at": { "type": "datetime" },
            "meta": { "type": "json" },
            "tag": { "type": "string" }
        },
        "permissions": { "read": ["User"], "create": ["User"] }
    })
}

/// The seed rows, in insertion order; cases name rows by their 1-based position here.
fn seed_rows() -> Vec<Value> {
    vec![
        /* 1 */
        json!({ "name": "Apple", "note": "Red fruit", "qty": 5, "price": 1.5, "active": true,
                "at": "2026-01-01T00:00:00Z", "meta": { "k": 1 }, "tag": "x" }),
        /* 2 */
        json!({ "name": "apple pie", "note": "Baked, 100% good", "qty": 10, "price": 12.25,
                "active": false, "at": "2026-03-15T12:30:00Z", "meta": { "k": 2 }, "tag": "" }),
        /* 3 */
        json!({ "name": "BANANA", "note": null, "qty": -3, "price": 0.5, "active": true,
                "at": "2025-12-31T23:59:59.999Z", "meta": null, "tag": null }),
        /* 4 */
        json!({ "name": "50% off", "note": "discount_code", "qty": 0, "price": 99.99,
                "active": false, "at": "2026-06-01", "meta": [1, 2], "tag": "sale" }),
        /* 5 */
        json!({ "name": "under_score", "note": "it's \"quoted\"", "qty": null, "price": null,
                "active": null, "at": null, "meta": null, "tag": "y" }),
        /* 6 */
        json!({ "name": "", "note": "", "qty": 7, "price": 7.0, "active": true,
                "at": "2026-01-01T00:00:00.001Z", "meta": { "k": 1 }, "tag": "x" }),
        /* 7 */
        json!({ "name": "O'Brien", "note": "Irish name", "qty": 100, "price": -2.5,
                "active": false, "at": "2030-01-01T00:00:00Z", "meta": "str", "tag": null }),
        /* 8 */
        json!({ "name": "50_50", "note": "Half AND half", "qty": 5, "price": 1.5,
                "active": null, "at": "2026-01-01T00:00:00Z", "meta": { "k": 3 }, "tag": "Y" }),
    ]
}

fn filter(value: Value) -> String {
    format!("filter={}", q(&value))
}

fn cond(field: &str, operator: &str, value: Value) -> Value {
    json!({ "fieldName": field, "operator": operator, "value": value })
}

/// One condition, as a one-element array (the SDK's usual form).
fn one(field: &str, operator: &str, value: Value) -> String {
    filter(json!([cond(field, operator, value)]))
}

fn sort(keys: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(f, o)| json!({ "fieldName": f, "order": o }))
        .collect();
    format!("sort={}", q(&Value::Array(keys)))
}

fn ids_of(body: &Value) -> Vec<i64> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array in {body}"))
        .iter()
        .map(|row| {
            row["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("row without id: {row}"))
        })
        .collect()
}

/// Starts an app with `things`, a signed-in User, and the seed rows; returns the ids
/// of the seed rows in order.
async fn seeded(backend: &Backend) -> (TestApp, Cred, Vec<i64>) {
    let app = Spawn::new(backend)
        .schema("things.json", things_schema())
        .start()
        .await;
    let user = app.user("reader@test.local", "User").await;
    let cred = user.cred();
    let mut ids = Vec::new();
    for row in seed_rows() {
        let (status, body) = app.post("/1/objects/things", &cred, row.clone()).await;
        assert_eq!(status, 200, "{}: seeding {row}: {body}", backend.name());
        let id: i64 = body["__metadata"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{}: no id in {body}", backend.name()));
        ids.push(id);
    }
    (app, cred, ids)
}

struct Case {
    what: String,
    query: String,
    /// Seed positions (1-based) in the order the page must list them.
    want: Vec<usize>,
}

fn case(what: impl Into<String>, query: String, want: &[usize]) -> Case {
    Case {
        what: what.into(),
        query,
        want: want.to_vec(),
    }
}

/// Runs every case, collecting mismatches (prefixed with the backend) so one wrong
/// answer, or one backend, does not hide the rest.
async fn run_cases(
    app: &TestApp,
    cred: &Cred,
    ids: &[i64],
    cases: Vec<Case>,
    failures: &mut Vec<String>,
) {
    let backend = app.backend.name();
    for c in cases {
        let path = format!("/1/objects/things?pageSize=100&{}", c.query);
        let (status, body) = app.get(&path, cred).await;
        let want: Vec<i64> = c.want.iter().map(|&n| ids[n - 1]).collect();
        if status != 200 {
            failures.push(format!(
                "{backend}: {}: status {status}, body {body} ({path})",
                c.what
            ));
            continue;
        }
        let got = ids_of(&body);
        if got != want || body["totalRows"] != json!(want.len()) {
            let pos: Vec<String> = got
                .iter()
                .map(|id| match ids.iter().position(|x| x == id) {
                    Some(p) => (p + 1).to_string(),
                    None => format!("id{id}"),
                })
                .collect();
            failures.push(format!(
                "{backend}: {}: want rows {:?}, got rows [{}] with totalRows {} ({path})",
                c.what,
                c.want,
                pos.join(", "),
                body["totalRows"]
            ));
        }
    }
}

fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} {what} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[rustfmt::skip]
fn operator_cases(id: impl Fn(usize) -> i64) -> Vec<Case> {
    let search = |text: &str| format!("search={}", enc(text));
    vec![
        // equals (exact; numbers, booleans and datetimes may come as text)
        case("name equals Apple", one("name", "equals", json!("Apple")), &[1]),
        case("equals is exact, not case-folded", one("name", "equals", json!("apple")), &[]),
        case("name equals with a quote", one("name", "equals", json!("O'Brien")), &[7]),
        case("name equals empty string", one("name", "equals", json!("")), &[6]),
        case("qty equals 5", one("qty", "equals", json!(5)), &[1, 8]),
        case("qty equals \"5\" (text)", one("qty", "equals", json!("5")), &[1, 8]),
        case("qty equals negative", one("qty", "equals", json!(-3)), &[3]),
        case("price equals 1.5", one("price", "equals", json!(1.5)), &[1, 8]),
        case("price equals \"7\" (text)", one("price", "equals", json!("7")), &[6]),
        case("price equals integer 7", one("price", "equals", json!(7)), &[6]),
        case("active equals true", one("active", "equals", json!(true)), &[1, 3, 6]),
        case("active equals false", one("active", "equals", json!(false)), &[2, 4, 7]),
        case("active equals \"false\" (text)", one("active", "equals", json!("false")), &[2, 4, 7]),
        case("active equals \"1\" (text)", one("active", "equals", json!("1")), &[1, 3, 6]),
        case("at equals RFC 3339", one("at", "equals", json!("2026-01-01T00:00:00Z")), &[1, 8]),
        case("at equals bare date", one("at", "equals", json!("2026-01-01")), &[1, 8]),
        case("at equals with offset", one("at", "equals", json!("2026-01-01T01:00:00+01:00")), &[1, 8]),
        case("at equals millis", one("at", "equals", json!("2026-01-01T00:00:00.001Z")), &[6]),
        case("meta equals object", one("meta", "equals", json!({ "k": 1 })), &[1, 6]),
        case("meta equals array", one("meta", "equals", json!([1, 2])), &[4]),
        case("tag equals null", one("tag", "equals", Value::Null), &[3, 7]),
        case("note equals null", one("note", "equals", Value::Null), &[3]),
        case("qty equals null", one("qty", "equals", Value::Null), &[5]),
        case("id equals", one("id", "equals", json!(id(4))), &[4]),
        case("id equals as text", one("id", "equals", json!(id(4).to_string())), &[4]),
        // notEquals keeps NULL rows: NULL is "not equal" to any value
        case("qty notEquals 5", one("qty", "notEquals", json!(5)), &[2, 3, 4, 5, 6, 7]),
        case("tag notEquals x", one("tag", "notEquals", json!("x")), &[2, 3, 4, 5, 7, 8]),
        case("active notEquals true", one("active", "notEquals", json!(true)), &[2, 4, 5, 7, 8]),
        case("tag notEquals null", one("tag", "notEquals", Value::Null), &[1, 2, 4, 5, 6, 8]),
        case("meta notEquals object", one("meta", "notEquals", json!({ "k": 1 })), &[2, 3, 4, 5, 7, 8]),
        case("name notEquals Apple", one("name", "notEquals", json!("Apple")), &[2, 3, 4, 5, 6, 7, 8]),
        case("id notEquals", one("id", "notEquals", json!(id(1))), &[2, 3, 4, 5, 6, 7, 8]),
        // comparisons: int (NULL never compares)
        case("qty greaterThan 5", one("qty", "greaterThan", json!(5)), &[2, 6, 7]),
        case("qty greaterThanOrEqualsTo 5", one("qty", "greaterThanOrEqualsTo", json!(5)), &[1, 2, 6, 7, 8]),
        case("qty lessThan 5", one("qty", "lessThan", json!(5)), &[3, 4]),
        case("qty lessThanOrEqualsTo 0", one("qty", "lessThanOrEqualsTo", json!(0)), &[3, 4]),
        case("qty lessThan \"-1\" (text)", one("qty", "lessThan", json!("-1")), &[3]),
        case("qty greaterThan \"99\" (text)", one("qty", "greaterThan", json!("99")), &[7]),
        // comparisons: float
        case("price greaterThan 1.5", one("price", "greaterThan", json!(1.5)), &[2, 4, 6]),
        case("price greaterThanOrEqualsTo 1.5", one("price", "greaterThanOrEqualsTo", json!(1.5)), &[1, 2, 4, 6, 8]),
        case("price lessThan 1.5", one("price", "lessThan", json!(1.5)), &[3, 7]),
        case("price lessThanOrEqualsTo \"0.5\"", one("price", "lessThanOrEqualsTo", json!("0.5")), &[3, 7]),
        case("price greaterThan integer 7", one("price", "greaterThan", json!(7)), &[2, 4]),
        // comparisons: datetime (any accepted form, compared as instants)
        case("at greaterThan", one("at", "greaterThan", json!("2026-01-01T00:00:00Z")), &[2, 4, 6, 7]),
        case("at greaterThanOrEqualsTo date", one("at", "greaterThanOrEqualsTo", json!("2026-01-01")), &[1, 2, 4, 6, 7, 8]),
        case("at lessThan date", one("at", "lessThan", json!("2026-01-01")), &[3]),
        case("at lessThanOrEqualsTo millis", one("at", "lessThanOrEqualsTo", json!("2026-01-01T00:00:00.001Z")), &[1, 3, 6, 8]),
        case("at lessThan with offset", one("at", "lessThan", json!("2026-01-01T01:00:00+01:00")), &[3]),
        case("at greaterThan space form", one("at", "greaterThan", json!("2026-06-01 00:00:00")), &[7]),
        // comparisons: id
        case("id greaterThan", one("id", "greaterThan", json!(id(3))), &[4, 5, 6, 7, 8]),
        case("id greaterThanOrEqualsTo", one("id", "greaterThanOrEqualsTo", json!(id(7))), &[7, 8]),
        case("id lessThan", one("id", "lessThan", json!(id(3))), &[1, 2]),
        case("id lessThanOrEqualsTo (text)", one("id", "lessThanOrEqualsTo", json!(id(2).to_string())), &[1, 2]),
        // string operators: case-insensitive; %, _ and \ match themselves
        case("name startsWith APP", one("name", "startsWith", json!("APP")), &[1, 2]),
        case("name startsWith 50%", one("name", "startsWith", json!("50%")), &[4]),
        case("name startsWith 50_", one("name", "startsWith", json!("50_")), &[8]),
        case("name startsWith number 50", one("name", "startsWith", json!(50)), &[4, 8]),
        case("name startsWith o'b", one("name", "startsWith", json!("o'b")), &[7]),
        case("name endsWith PIE", one("name", "endsWith", json!("PIE")), &[2]),
        case("name endsWith % OFF", one("name", "endsWith", json!("% OFF")), &[4]),
        case("name endsWith _50", one("name", "endsWith", json!("_50")), &[8]),
        case("name endsWith %", one("name", "endsWith", json!("%")), &[]),
        case("name contains an", one("name", "contains", json!("an")), &[3]),
        case("name contains %", one("name", "contains", json!("%")), &[4]),
        case("name contains _", one("name", "contains", json!("_")), &[5, 8]),
        case("name contains %_ together", one("name", "contains", json!("%_")), &[]),
        case("name contains quote", one("name", "contains", json!("'")), &[7]),
        case("name contains backslash", one("name", "contains", json!("\\")), &[]),
        case("note contains 100%", one("note", "contains", json!("100%")), &[2]),
        case("note contains _", one("note", "contains", json!("_")), &[4]),
        case("note contains double quotes", one("note", "contains", json!("\"QUOTED\"")), &[5]),
        case("note contains and", one("note", "contains", json!("and")), &[8]),
        case("name notContains apple", one("name", "notContains", json!("apple")), &[3, 4, 5, 6, 7, 8]),
        case("note notContains A (nulls kept)", one("note", "notContains", json!("A")), &[1, 3, 4, 5, 6]),
        case("note notContains %", one("note", "notContains", json!("%")), &[1, 3, 4, 5, 6, 7, 8]),
        case("tag notContains _", one("tag", "notContains", json!("_")), &[1, 2, 3, 4, 5, 6, 7, 8]),
        // empty / notEmpty: strings are empty when null or ''; other types when null
        case("tag empty (null or '')", one("tag", "empty", Value::Null), &[2, 3, 7]),
        case("tag notEmpty", one("tag", "notEmpty", Value::Null), &[1, 4, 5, 6, 8]),
        case("name empty", one("name", "empty", Value::Null), &[6]),
        case("note empty", one("note", "empty", Value::Null), &[3, 6]),
        case("qty empty", one("qty", "empty", Value::Null), &[5]),
        case("qty notEmpty", one("qty", "notEmpty", Value::Null), &[1, 2, 3, 4, 6, 7, 8]),
        case("price empty", one("price", "empty", Value::Null), &[5]),
        case("active empty", one("active", "empty", Value::Null), &[5, 8]),
        case("active notEmpty", one("active", "notEmpty", Value::Null), &[1, 2, 3, 4, 6, 7]),
        case("at empty", one("at", "empty", Value::Null), &[5]),
        case("meta empty", one("meta", "empty", Value::Null), &[3, 5]),
        case("meta notEmpty", one("meta", "notEmpty", Value::Null), &[1, 2, 4, 6, 7, 8]),
        // in: an array or a comma-separated string
        case("qty in array", one("qty", "in", json!([5, 0])), &[1, 4, 8]),
        case("qty in comma string", one("qty", "in", json!("5,0")), &[1, 4, 8]),
        case("qty in comma string with spaces", one("qty", "in", json!("5, 100")), &[1, 7, 8]),
        case("qty in empty array", one("qty", "in", json!([])), &[]),
        case("name in array", one("name", "in", json!(["Apple", "BANANA", "nope"])), &[1, 3]),
        case("name in comma string", one("name", "in", json!("Apple,O'Brien")), &[1, 7]),
        case("id in array", one("id", "in", json!([id(2), id(5)])), &[2, 5]),
        case("tag in array with null", one("tag", "in", json!(["x", null])), &[1, 6]),
        case("price in mixed forms", one("price", "in", json!([1.5, "7"])), &[1, 6, 8]),
        case("active in [true]", one("active", "in", json!([true])), &[1, 3, 6]),
        case("at in dates", one("at", "in", json!(["2026-01-01", "2030-01-01T00:00:00Z"])), &[1, 7, 8]),
        // several conditions are ANDed; a single object is one condition
        case("qty >= 5 and active", filter(json!([
            cond("qty", "greaterThanOrEqualsTo", json!(5)), cond("active", "equals", json!(true))])), &[1, 6]),
        case("startsWith apple and price > 2", filter(json!([
            cond("name", "startsWith", json!("apple")), cond("price", "greaterThan", json!(2))])), &[2]),
        case("three conditions", filter(json!([cond("tag", "equals", json!("x")),
            cond("name", "equals", json!("Apple")), cond("qty", "equals", json!(5))])), &[1]),
        case("contradictory conditions", filter(json!([
            cond("qty", "greaterThan", json!(0)), cond("qty", "lessThan", json!(0))])), &[]),
        case("single object filter", filter(cond("qty", "equals", json!(10))), &[2]),
        case("empty filter array", filter(json!([])), &[1, 2, 3, 4, 5, 6, 7, 8]),
        // search: any string or text field, case-insensitive, literal
        case("search apple", search("apple"), &[1, 2]),
        case("search APPLE", search("APPLE"), &[1, 2]),
        case("search in a text field", search("half"), &[8]),
        case("search in another string field", search("y"), &[5, 8]),
        case("search %", search("%"), &[2, 4]),
        case("search _", search("_"), &[4, 5, 8]),
        case("search quote", search("o'b"), &[7]),
        case("search no match", search("zzz"), &[]),
        case("search padded", search("  apple  "), &[1, 2]),
        case("search with filter", format!("{}&{}", search("apple"), one("qty", "equals", json!(10))), &[2]),
    ]
}

#[rustfmt::skip]
fn sort_cases(id: impl Fn(usize) -> i64) -> Vec<Case> {
    let qty_set = one("qty", "notEmpty", Value::Null);
    let price_set = one("price", "notEmpty", Value::Null);
    let at_set = one("at", "notEmpty", Value::Null);
    let active_set = one("active", "notEmpty", Value::Null);
    let three_names = one("id", "in", json!(format!("{},{},{}", id(1), id(3), id(7))));
    vec![
        case("default order is id", String::new(), &[1, 2, 3, 4, 5, 6, 7, 8]),
        case("id desc", sort(&[("id", "desc")]), &[8, 7, 6, 5, 4, 3, 2, 1]),
        case("id asc", sort(&[("id", "asc")]), &[1, 2, 3, 4, 5, 6, 7, 8]),
        case("qty asc, ties by id", format!("{qty_set}&{}", sort(&[("qty", "asc")])), &[3, 4, 1, 8, 6, 2, 7]),
        case("qty desc, ties by id", format!("{qty_set}&{}", sort(&[("qty", "desc")])), &[7, 2, 6, 1, 8, 4, 3]),
        case("order DESC in capitals", format!("{qty_set}&{}", sort(&[("qty", "DESC")])), &[7, 2, 6, 1, 8, 4, 3]),
        case("order left out is asc", format!("{qty_set}&sort={}", q(&json!([{ "fieldName": "qty" }]))),
            &[3, 4, 1, 8, 6, 2, 7]),
        case("single sort object", format!("{qty_set}&sort={}", q(&json!({ "fieldName": "qty", "order": "desc" }))),
            &[7, 2, 6, 1, 8, 4, 3]),
        case("price asc", format!("{price_set}&{}", sort(&[("price", "asc")])), &[7, 3, 1, 8, 6, 2, 4]),
        case("at asc", format!("{at_set}&{}", sort(&[("at", "asc")])), &[3, 1, 8, 6, 2, 4, 7]),
        case("at desc", format!("{at_set}&{}", sort(&[("at", "desc")])), &[7, 4, 2, 6, 1, 8, 3]),
        case("active asc", format!("{active_set}&{}", sort(&[("active", "asc")])), &[2, 4, 7, 1, 3, 6]),
        // Apple < BANANA < O'Brien under byte order and under any linguistic collation.
        case("name asc", format!("{three_names}&{}", sort(&[("name", "asc")])), &[1, 3, 7]),
        case("name desc", format!("{three_names}&{}", sort(&[("name", "desc")])), &[7, 3, 1]),
        case("active desc then qty asc",
            format!("{active_set}&{}", sort(&[("active", "desc"), ("qty", "asc")])), &[3, 1, 6, 4, 2, 7]),
        case("price asc then id desc",
            format!("{price_set}&{}", sort(&[("price", "asc"), ("id", "desc")])), &[7, 3, 8, 1, 6, 2, 4]),
        case("tag asc then qty desc",
            format!("{}&{}", one("tag", "in", json!(["x", "sale"])), sort(&[("tag", "asc"), ("qty", "desc")])),
            &[4, 6, 1]),
    ]
}

#[tokio::test]
async fn every_operator_returns_exactly_the_matching_rows() {
    let mut failures = Vec::new();
    for backend in backends() {
        let (app, cred, ids) = seeded(&backend).await;
        let cases = operator_cases(|n| ids[n - 1]);
        run_cases(&app, &cred, &ids, cases, &mut failures).await;
    }
    assert_no_failures("filter", &failures);
}

#[tokio::test]
async fn sort_orders_by_each_key_then_id() {
    let mut failures = Vec::new();
    for backend in backends() {
        let (app, cred, ids) = seeded(&backend).await;
        let cases = sort_cases(|n| ids[n - 1]);
        run_cases(&app, &cred, &ids, cases, &mut failures).await;
    }
    assert_no_failures("sort", &failures);
}

#[tokio::test]
async fn paging_slices_the_list_and_keeps_total_rows() {
    for backend in backends() {
        let (app, cred, ids) = seeded(&backend).await;
        let name = backend.name();
        let pages: [(&str, &[usize], i64); 7] = [
            ("pageSize=3&pageNumber=1", &[1, 2, 3], 8),
            ("pageSize=3&pageNumber=2", &[4, 5, 6], 8),
            ("pageSize=3&pageNumber=3", &[7, 8], 8),
            ("pageSize=3&pageNumber=4", &[], 8),
            ("pageSize=3&pageNumber=1000000", &[], 8),
            ("pageSize=3", &[1, 2, 3], 8),
            ("pageSize=8&pageNumber=1", &[1, 2, 3, 4, 5, 6, 7, 8], 8),
        ];
        for (query, want, total) in pages {
            let (status, body) = app.get(&format!("/1/objects/things?{query}"), &cred).await;
            assert_eq!(status, 200, "{name}: {query}: {body}");
            let want: Vec<i64> = want.iter().map(|&n| ids[n - 1]).collect();
            assert_eq!(ids_of(&body), want, "{name}: {query}: {body}");
            assert_eq!(body["totalRows"], json!(total), "{name}: {query}: {body}");
        }

        // Paging composes with filter and sort: totalRows counts the filtered rows.
        let base = format!(
            "{}&{}",
            one("qty", "notEmpty", Value::Null),
            sort(&[("qty", "desc")])
        );
        let pages: [(&str, &[usize]); 5] = [
            ("pageSize=2&pageNumber=1", &[7, 2]),
            ("pageSize=2&pageNumber=2", &[6, 1]),
            ("pageSize=2&pageNumber=3", &[8, 4]),
            ("pageSize=2&pageNumber=4", &[3]),
            ("pageSize=2&pageNumber=5", &[]),
        ];
        for (query, want) in pages {
            let path = format!("/1/objects/things?{base}&{query}");
            let (status, body) = app.get(&path, &cred).await;
            assert_eq!(status, 200, "{name}: {path}: {body}");
            let want: Vec<i64> = want.iter().map(|&n| ids[n - 1]).collect();
            assert_eq!(ids_of(&body), want, "{name}: {path}: {body}");
            assert_eq!(body["totalRows"], json!(7), "{name}: {path}: {body}");
        }

        // Without pageSize, a page holds 20 rows; all 8 fit.
        let (status, body) = app.get("/1/objects/things", &cred).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(ids_of(&body), ids, "{name}: default page: {body}");
        assert_eq!(body["totalRows"], json!(8), "{name}: {body}");
    }
}

/// Rows come back with every field typed as written, so filters compare like values.
#[tokio::test]
async fn listed_rows_carry_their_typed_values() {
    for backend in backends() {
        let (app, cred, ids) = seeded(&backend).await;
        let name = backend.name();
        let path = format!("/1/objects/things?{}", one("id", "equals", json!(ids[3])));
        let (status, body) = app.get(&path, &cred).await;
        assert_eq!(status, 200, "{name}: {body}");
        let row = &body["data"][0];
        assert_eq!(row["name"], json!("50% off"), "{name}: {row}");
        assert_eq!(row["qty"], json!(0), "{name}: {row}");
        assert_eq!(row["price"], json!(99.99), "{name}: {row}");
        assert_eq!(row["active"], json!(false), "{name}: {row}");
        assert_eq!(
            row["at"],
            json!("2026-06-01T00:00:00.000Z"),
            "{name}: {row}"
        );
        assert_eq!(row["meta"], json!([1, 2]), "{name}: {row}");
        assert_eq!(
            row["__metadata"]["id"],
            json!(ids[3].to_string()),
            "{name}: {row}"
        );
    }
}

/// NULLs must sort the same way on both databases. SQLite treats NULL as the smallest
/// value (first ascending, last descending); PostgreSQL by default treats it as the
/// largest. livebase promises one behaviour, so the test holds both to SQLite's (and
/// MySQL's, which Backand ran on).
#[tokio::test]
async fn sort_puts_nulls_in_the_same_place_on_every_backend() {
    let mut failures = Vec::new();
    for backend in backends() {
        let (app, cred, ids) = seeded(&backend).await;
        let cases = vec![
            case(
                "qty asc, null first",
                sort(&[("qty", "asc")]),
                &[5, 3, 4, 1, 8, 6, 2, 7],
            ),
            case(
                "qty desc, null last",
                sort(&[("qty", "desc")]),
                &[7, 2, 6, 1, 8, 4, 3, 5],
            ),
            case(
                "tag asc over null, '' and text",
                format!(
                    "{}&{}",
                    one(
                        "id",
                        "in",
                        json!(format!("{}, {}, {}", ids[1], ids[2], ids[3]))
                    ),
                    sort(&[("tag", "asc")])
                ),
                &[3, 2, 4],
            ),
        ];
        run_cases(&app, &cred, &ids, cases, &mut failures).await;
    }
    assert_no_failures("null-ordering", &failures);
}

/// "Case-insensitive" must hold beyond ASCII, and the same on both databases.
#[tokio::test]
async fn string_operators_fold_case_beyond_ascii() {
    let mut failures = Vec::new();
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema("things.json", things_schema())
            .start()
            .await;
        let name = backend.name();
        let mut ids = Vec::new();
        for n in ["CRÈME BRÛLÉE", "crème fraîche", "Ärger"] {
            let (status, body) = app
                .post("/1/objects/things", &master(), json!({ "name": n }))
                .await;
            assert_eq!(status, 200, "{name}: {body}");
            ids.push(
                body["__metadata"]["id"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            );
        }
        let cases = vec![
            case(
                "contains crème",
                one("name", "contains", json!("crème")),
                &[1, 2],
            ),
            case(
                "contains CRÈME",
                one("name", "contains", json!("CRÈME")),
                &[1, 2],
            ),
            case(
                "startsWith är",
                one("name", "startsWith", json!("är")),
                &[3],
            ),
            case(
                "endsWith brûlée",
                one("name", "endsWith", json!("brûlée")),
                &[1],
            ),
            case(
                "notContains crème",
                one("name", "notContains", json!("crème")),
                &[3],
            ),
            case("search ärger", format!("search={}", enc("ärger")), &[3]),
        ];
        run_cases(&app, &master(), &ids, cases, &mut failures).await;
    }
    assert_no_failures("non-ASCII", &failures);
}
