//! Sails-style virtual requests and subscriptions, StaticBackend channels, and bad input
//! on every socket event: each checked over a real socket, with the database (as the
//! master token sees it) as the witness of what was or was not written.

use std::time::Duration;

use serde_json::{Value, json};

use super::{id_of, start};
use crate::common::{ANON, Cred, Spawn, TestApp, backends, master};
use crate::sio::{Incoming, Sio};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A Sails virtual request `{method, url, data}` on the `verb` event; the whole ack.
async fn req(s: &Sio, verb: &str, url: &str, data: Value) -> Value {
    let mut request = json!({ "method": verb, "url": url });
    if !data.is_null() {
        request["data"] = data;
    }
    s.call(verb, request).await
}

/// Same, with `headers`.
async fn req_with_headers(s: &Sio, verb: &str, url: &str, data: Value, headers: Value) -> Value {
    s.call(
        verb,
        json!({ "method": verb, "url": url, "data": data, "headers": headers }),
    )
    .await
}

fn status(ack: &Value) -> u64 {
    ack["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("ack without a numeric statusCode: {ack}"))
}

/// The body of an ack that must be a success, after checking the ack's shape.
fn ok_body(ack: &Value, what: &str) -> Value {
    assert_eq!(status(ack), 200, "{what}: {ack}");
    assert!(ack["headers"].is_object(), "{what}: headers object: {ack}");
    assert!(ack.get("body").is_some(), "{what}: body: {ack}");
    ack["body"].clone()
}

/// The `Message` of a failed virtual request, after checking its status.
fn failure(ack: &Value, expected: u64, what: &str) -> String {
    assert_eq!(status(ack), expected, "{what}: {ack}");
    assert!(ack["headers"].is_object(), "{what}: headers object: {ack}");
    let message = ack["body"]["Message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a failure carries body.Message: {ack}"));
    assert!(!message.is_empty(), "{what}: empty Message");
    message.to_string()
}

/// The text of an `{error}` ack.
fn ack_error(ack: &Value, what: &str) -> String {
    let text = ack["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected an {{error}} ack, got {ack}"));
    assert!(!text.is_empty(), "{what}: empty error");
    text.to_string()
}

/// The next `error` event, checked to name `event`; its message.
async fn error_event(s: &mut Sio, event: &str, what: &str) -> String {
    let got = s.expect("error").await;
    assert_eq!(got["event"], json!(event), "{what}: {got}");
    let message = got["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: error event without message: {got}"));
    assert!(!message.is_empty(), "{what}: empty message");
    message.to_string()
}

/// The row `id` of `object` as the master token sees it, if it exists.
async fn row(app: &TestApp, object: &str, id: i64) -> Option<Value> {
    app.all_rows(object)
        .await
        .into_iter()
        .find(|r| r["id"] == json!(id))
}

async fn titles(app: &TestApp, object: &str) -> Vec<String> {
    let mut all: Vec<String> = app
        .all_rows(object)
        .await
        .iter()
        .map(|r| r["title"].as_str().unwrap_or("").to_string())
        .collect();
    all.sort();
    all
}

async fn rest_create(app: &TestApp, object: &str, cred: &Cred, title: &str) -> i64 {
    let (status, body) = app
        .post(
            &format!("/1/objects/{object}"),
            cred,
            json!({ "title": title }),
        )
        .await;
    assert_eq!(status, 200, "create {object}: {body}");
    id_of(&body)
}

async fn rest_update(app: &TestApp, object: &str, id: i64, cred: &Cred, title: &str) {
    let (status, body) = app
        .put(
            &format!("/1/objects/{object}/{id}"),
            cred,
            json!({ "title": title }),
        )
        .await;
    assert_eq!(status, 200, "update {object}/{id}: {body}");
}

/// A socket with no credentials (it would be disconnected after the auth timeout).
async fn unauthenticated(app: &TestApp) -> Sio {
    Sio::connect(&app.base, None)
        .await
        .expect("a socket without credentials may connect")
}

/// The socket still answers and still has its identity.
async fn still_works(app: &TestApp, s: &Sio, what: &str) {
    assert_eq!(
        s.call("echo", json!({ "alive": what })).await,
        json!({ "alive": what }),
        "{what}: echo"
    );
    ok_body(&req(s, "get", "/1/objects/posts", Value::Null).await, what);
    let (status, _) = app.get("/healthz", &Cred::None).await;
    assert_eq!(status, 200, "{what}: REST answers");
}

fn basic(master: &str, user: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{master}:{user}"))
    )
}

// ---------------------------------------------------------------------------------------
// A. Sails virtual requests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sails_requests_create_read_update_delete_like_rest() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let s = app.socket(&alice.token).await;

        // post, canonical path and blueprint alias.
        let ack = req(&s, "post", "/1/objects/posts", json!({ "title": "a" })).await;
        let body = ok_body(&ack, "post /1/objects/posts");
        let a = id_of(&body);
        assert!(
            ack["headers"]["content-type"]
                .as_str()
                .is_some_and(|c| c.starts_with("application/json")),
            "response headers are relayed: {ack}"
        );
        assert_eq!(
            row(&app, "posts", a).await.expect("row a written")["title"],
            "a"
        );

        let b = id_of(&ok_body(
            &req(&s, "post", "/posts", json!({ "title": "b" })).await,
            "post /posts",
        ));
        assert_ne!(a, b);
        assert_eq!(
            row(&app, "posts", b).await.expect("row b written")["title"],
            "b"
        );
        assert_eq!(titles(&app, "posts").await, ["a", "b"]);

        // get list, with `data` as query parameters.
        let all = ok_body(
            &req(&s, "get", "/1/objects/posts", Value::Null).await,
            "list",
        );
        assert_eq!(all["totalRows"], json!(2), "{all}");
        assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all}");

        let page = ok_body(
            &req(&s, "get", "/1/objects/posts", json!({ "pageSize": 1 })).await,
            "list pageSize 1",
        );
        assert_eq!(page["totalRows"], json!(2), "{page}");
        assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");

        let filter = json!([{ "fieldName": "title", "operator": "equals", "value": "b" }]);
        let filtered = ok_body(
            &req(
                &s,
                "get",
                "/posts",
                json!({ "filter": filter.to_string(), "pageSize": 10 }),
            )
            .await,
            "list filtered (alias)",
        );
        assert_eq!(filtered["totalRows"], json!(1), "{filtered}");
        assert_eq!(filtered["data"][0]["id"], json!(b), "{filtered}");
        assert_eq!(filtered["data"][0]["title"], "b", "{filtered}");

        // `filter` given as JSON rather than a JSON string is the same query.
        let same = ok_body(
            &req(&s, "get", "/posts", json!({ "filter": filter })).await,
            "list filter as JSON",
        );
        assert_eq!(same["data"], filtered["data"], "{same}");

        // Query string in the url and `data` together.
        let second = ok_body(
            &req(&s, "get", "/posts?pageSize=1", json!({ "pageNumber": 2, "sort": json!([{ "fieldName": "title", "order": "asc" }]).to_string() })).await,
            "list url query + data",
        );
        assert_eq!(second["data"].as_array().unwrap().len(), 1, "{second}");
        assert_eq!(second["data"][0]["title"], "b", "{second}");

        // A filter on an unknown field is the same 400 REST gives.
        let bad = json!([{ "fieldName": "nope", "operator": "equals", "value": 1 }]);
        failure(
            &req(&s, "get", "/posts", json!({ "filter": bad.to_string() })).await,
            400,
            "filter on an unknown field",
        );

        // get one row, both paths.
        let one = ok_body(
            &req(&s, "get", &format!("/1/objects/posts/{a}"), Value::Null).await,
            "get one",
        );
        assert_eq!(one["id"], json!(a), "{one}");
        assert_eq!(one["title"], "a", "{one}");
        let one = ok_body(
            &req(&s, "get", &format!("/posts/{b}"), Value::Null).await,
            "get one alias",
        );
        assert_eq!(one["title"], "b", "{one}");

        // put, patch (an update), on both paths.
        ok_body(
            &req(
                &s,
                "put",
                &format!("/1/objects/posts/{a}"),
                json!({ "title": "a2" }),
            )
            .await,
            "put",
        );
        assert_eq!(row(&app, "posts", a).await.unwrap()["title"], "a2");
        ok_body(
            &req(
                &s,
                "patch",
                &format!("/posts/{a}"),
                json!({ "title": "a3" }),
            )
            .await,
            "patch alias",
        );
        assert_eq!(row(&app, "posts", a).await.unwrap()["title"], "a3");
        ok_body(
            &req(
                &s,
                "patch",
                &format!("/1/objects/posts/{b}"),
                json!({ "title": "b2" }),
            )
            .await,
            "patch",
        );
        assert_eq!(row(&app, "posts", b).await.unwrap()["title"], "b2");
        ok_body(
            &req(&s, "put", &format!("/posts/{b}"), json!({ "title": "b3" })).await,
            "put alias",
        );
        assert_eq!(titles(&app, "posts").await, ["a3", "b3"]);

        // An update that fails validation writes nothing.
        failure(
            &req(&s, "put", &format!("/posts/{a}"), json!({ "title": 5 })).await,
            400,
            "put with a wrong type",
        );
        failure(
            &req(&s, "patch", &format!("/posts/{a}"), json!({ "nope": "x" })).await,
            400,
            "patch with an unknown field",
        );
        assert_eq!(titles(&app, "posts").await, ["a3", "b3"]);

        // delete, both paths; then the rows are gone for REST and sockets alike.
        let gone = ok_body(
            &req(&s, "delete", &format!("/posts/{b}"), Value::Null).await,
            "delete alias",
        );
        assert_eq!(id_of(&gone), b);
        assert!(row(&app, "posts", b).await.is_none(), "b deleted");
        assert!(
            row(&app, "posts", a).await.is_some(),
            "a untouched by b's delete"
        );
        ok_body(
            &req(&s, "delete", &format!("/1/objects/posts/{a}"), Value::Null).await,
            "delete",
        );
        assert!(app.all_rows("posts").await.is_empty());
        failure(
            &req(&s, "get", &format!("/posts/{a}"), Value::Null).await,
            404,
            "get deleted",
        );
        failure(
            &req(&s, "delete", &format!("/posts/{a}"), Value::Null).await,
            404,
            "delete twice",
        );
        failure(
            &req(
                &s,
                "put",
                &format!("/posts/{a}"),
                json!({ "title": "zombie" }),
            )
            .await,
            404,
            "put deleted",
        );
        assert!(
            app.all_rows("posts").await.is_empty(),
            "nothing resurrected"
        );
    }
}

#[tokio::test]
async fn sails_requests_act_as_the_socket_user_never_as_headers_say() {
    for backend in backends() {
        let app = start(&backend).await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let reader = app.user("reader@x.test", "ReadOnly").await;
        let sa = app.socket(&alice.token).await;
        let sb = app.socket(&bob.token).await;
        let sr = app.socket(&reader.token).await;
        let sadmin = app.socket(&admin.token).await;

        // Alice's socket creates rows as Alice: owner security then hides them from Bob.
        let note = id_of(&ok_body(
            &req(&sa, "post", "/notes", json!({ "title": "alice note" })).await,
            "alice posts a note",
        ));
        let memo = id_of(&ok_body(
            &req(&sa, "post", "/memos", json!({ "title": "alice memo" })).await,
            "alice posts a memo",
        ));
        let path = |o: &str, id: i64| format!("/1/objects/{o}/{id}");
        assert_eq!(app.get(&path("notes", note), &alice.cred()).await.0, 200);
        assert_eq!(app.get(&path("notes", note), &bob.cred()).await.0, 404);

        let impersonations = [
            json!({ "Authorization": format!("Bearer {}", admin.token) }),
            json!({ "authorization": format!("Bearer {}", alice.token) }),
            json!({ "Authorization": basic(crate::common::MASTER, crate::common::ADMIN_USER_TOKEN) }),
            json!({ "AnonymousToken": ANON }),
        ];

        // ownerWrite: Bob reads Alice's memo but may not change it.
        ok_body(
            &req(&sb, "get", &path("memos", memo), Value::Null).await,
            "bob reads memo",
        );
        let m = failure(
            &req(
                &sb,
                "put",
                &path("memos", memo),
                json!({ "title": "bob was here" }),
            )
            .await,
            403,
            "bob puts alice's memo",
        );
        assert!(m.contains("memos"), "{m}");
        failure(
            &req(
                &sb,
                "patch",
                &format!("/memos/{memo}"),
                json!({ "title": "bob was here" }),
            )
            .await,
            403,
            "bob patches alice's memo",
        );
        failure(
            &req(&sb, "delete", &path("memos", memo), Value::Null).await,
            403,
            "bob deletes alice's memo",
        );
        for headers in &impersonations {
            failure(
                &req_with_headers(
                    &sb,
                    "put",
                    &path("memos", memo),
                    json!({ "title": "bob was here" }),
                    headers.clone(),
                )
                .await,
                403,
                &format!("bob puts alice's memo with headers {headers}"),
            );
            failure(
                &req_with_headers(
                    &sb,
                    "delete",
                    &path("memos", memo),
                    Value::Null,
                    headers.clone(),
                )
                .await,
                403,
                &format!("bob deletes alice's memo with headers {headers}"),
            );
        }
        assert_eq!(
            row(&app, "memos", memo).await.expect("memo kept")["title"],
            "alice memo"
        );

        // owner: Bob may not even see Alice's note, so updating it is the 404 REST gives
        // (the row's existence is not revealed), whatever headers he adds.
        let (rest_status, rest_body) = app
            .put(
                &path("notes", note),
                &bob.cred(),
                json!({ "title": "bob was here" }),
            )
            .await;
        let ack = req(
            &sb,
            "put",
            &path("notes", note),
            json!({ "title": "bob was here" }),
        )
        .await;
        assert_eq!(
            status(&ack),
            rest_status as u64,
            "socket and REST agree: {ack} vs {rest_body}"
        );
        assert_eq!(ack["body"], rest_body, "socket and REST agree");
        failure(&ack, 404, "bob puts alice's note");
        failure(
            &req(&sb, "get", &path("notes", note), Value::Null).await,
            404,
            "bob gets alice's note",
        );
        let listed = ok_body(
            &req(&sb, "get", "/notes", Value::Null).await,
            "bob lists notes",
        );
        assert_eq!(
            listed["totalRows"],
            json!(0),
            "bob sees none of alice's notes: {listed}"
        );
        for headers in &impersonations {
            failure(
                &req_with_headers(
                    &sb,
                    "put",
                    &path("notes", note),
                    json!({ "title": "bob was here" }),
                    headers.clone(),
                )
                .await,
                404,
                &format!("bob puts alice's note with headers {headers}"),
            );
            failure(
                &req_with_headers(&sb, "get", &path("notes", note), json!({}), headers.clone())
                    .await,
                404,
                &format!("bob gets alice's note with headers {headers}"),
            );
            let listed = ok_body(
                &req_with_headers(&sb, "get", "/notes", json!({}), headers.clone()).await,
                "bob lists notes with headers",
            );
            assert_eq!(listed["totalRows"], json!(0), "headers {headers}: {listed}");
        }
        assert_eq!(
            row(&app, "notes", note).await.expect("note kept")["title"],
            "alice note"
        );

        // ReadOnly may read but not write, even claiming the master key in headers.
        ok_body(
            &req(&sr, "get", "/posts", Value::Null).await,
            "reader lists posts",
        );
        for headers in impersonations.iter().chain([&json!({})]) {
            let m = failure(
                &req_with_headers(
                    &sr,
                    "post",
                    "/posts",
                    json!({ "title": "ro" }),
                    headers.clone(),
                )
                .await,
                403,
                &format!("ReadOnly posts with headers {headers}"),
            );
            assert!(m.contains("ReadOnly"), "{m}");
        }
        assert!(
            app.all_rows("posts").await.is_empty(),
            "ReadOnly wrote nothing"
        );

        // Positive controls: the owner and an Admin socket may change the rows.
        ok_body(
            &req(
                &sa,
                "put",
                &path("notes", note),
                json!({ "title": "alice 2" }),
            )
            .await,
            "alice updates her note",
        );
        assert_eq!(row(&app, "notes", note).await.unwrap()["title"], "alice 2");
        ok_body(
            &req(
                &sadmin,
                "put",
                &path("memos", memo),
                json!({ "title": "by admin" }),
            )
            .await,
            "admin updates alice's memo",
        );
        assert_eq!(row(&app, "memos", memo).await.unwrap()["title"], "by admin");
    }
}

#[tokio::test]
async fn sails_requests_need_an_authenticated_socket() {
    for backend in backends() {
        let app = start(&backend).await;
        let admin = app.admin().await;
        let existing = rest_create(&app, "posts", &master(), "existing").await;
        let mut s = unauthenticated(&app).await;

        for (verb, url, data) in [
            ("get", "/1/objects/posts".to_string(), Value::Null),
            ("get", format!("/posts/{existing}"), Value::Null),
            ("post", "/posts".to_string(), json!({ "title": "anon" })),
            (
                "put",
                format!("/posts/{existing}"),
                json!({ "title": "anon" }),
            ),
            (
                "patch",
                format!("/posts/{existing}"),
                json!({ "title": "anon" }),
            ),
            ("delete", format!("/posts/{existing}"), Value::Null),
        ] {
            let m = failure(
                &req(&s, verb, &url, data.clone()).await,
                401,
                &format!("{verb} {url}"),
            );
            assert!(m.contains("authenticate"), "{verb} {url}: {m}");
            // Credentials in the virtual request's headers do not authenticate the socket.
            for headers in [
                json!({ "Authorization": format!("Bearer {}", admin.token) }),
                json!({ "Authorization": basic(crate::common::MASTER, crate::common::ADMIN_USER_TOKEN) }),
                json!({ "AnonymousToken": ANON }),
            ] {
                failure(
                    &req_with_headers(&s, verb, &url, data.clone(), headers.clone()).await,
                    401,
                    &format!("{verb} {url} with {headers}"),
                );
            }
        }
        // Without an ack: an `error` event naming the event and the status.
        s.emit(
            "post",
            &[json!({ "url": "/posts", "data": { "title": "anon" } })],
        );
        let m = error_event(&mut s, "post", "unauthenticated post without ack").await;
        assert!(m.starts_with("401"), "{m}");
        assert_eq!(titles(&app, "posts").await, ["existing"], "nothing written");

        // Once it authenticates, the same socket's requests run as that user.
        s.emit("authentication", &[json!({ "id": admin.token })]);
        s.expect("authenticated").await;
        let listed = ok_body(
            &req(&s, "get", "/posts", Value::Null).await,
            "after authentication",
        );
        assert_eq!(listed["totalRows"], json!(1), "{listed}");

        // An anonymous socket is role Public: reads posts, writes nothing, reads no notes.
        let anon = Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON })))
            .await
            .expect("anonymous socket");
        ok_body(
            &req(&anon, "get", "/posts", Value::Null).await,
            "Public lists posts",
        );
        failure(
            &req(&anon, "post", "/posts", json!({ "title": "guest" })).await,
            403,
            "Public posts",
        );
        failure(
            &req(&anon, "get", "/notes", Value::Null).await,
            403,
            "Public lists notes",
        );
        assert_eq!(titles(&app, "posts").await, ["existing"], "nothing written");
    }
}

#[tokio::test]
async fn sails_malformed_requests_answer_400_and_write_nothing() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let existing = rest_create(&app, "posts", &alice.cred(), "existing").await;
        let mut s = app.socket(&alice.token).await;
        let at = format!("/1/objects/posts/{existing}");

        // (event, whole request, a word the message must contain)
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "post",
                json!({ "method": "post", "data": { "title": "x" } }),
                "url",
            ),
            (
                "post",
                json!({ "url": "1/objects/posts", "data": { "title": "x" } }),
                "url",
            ),
            (
                "post",
                json!({ "url": "posts", "data": { "title": "x" } }),
                "url",
            ),
            ("post", json!({ "url": 5, "data": { "title": "x" } }), "url"),
            (
                "post",
                json!({ "url": null, "data": { "title": "x" } }),
                "url",
            ),
            ("post", json!("/1/objects/posts"), "url"),
            ("post", json!(null), "url"),
            ("post", json!([{ "url": "/posts" }]), "url"),
            ("delete", json!({ "url": ["/posts"] }), "url"),
            (
                "get",
                json!({ "url": "/1/objects/posts", "data": 5 }),
                "data",
            ),
            (
                "get",
                json!({ "url": "/1/objects/posts", "data": "pageSize=1" }),
                "data",
            ),
            ("delete", json!({ "url": at, "data": [1] }), "data"),
            ("delete", json!({ "url": at, "data": true }), "data"),
            (
                "post",
                json!({ "method": "put", "url": "/1/objects/posts", "data": { "title": "x" } }),
                "method",
            ),
            (
                "put",
                json!({ "method": "delete", "url": at, "data": { "title": "x" } }),
                "method",
            ),
            ("delete", json!({ "method": "get", "url": at }), "method"),
            (
                "patch",
                json!({ "method": 5, "url": at, "data": { "title": "x" } }),
                "method",
            ),
            (
                "post",
                json!({ "url": "/posts", "data": { "title": "x" }, "headers": { "x-extra": 5 } }),
                "x-extra",
            ),
            (
                "post",
                json!({ "url": "/posts", "data": { "title": "x" }, "headers": { "x-extra": { "a": 1 } } }),
                "x-extra",
            ),
            (
                "delete",
                json!({ "url": at, "headers": { "x-extra": true } }),
                "x-extra",
            ),
            (
                "post",
                json!({ "url": "/posts", "data": { "title": "x" }, "headers": "x-extra: 1" }),
                "headers",
            ),
            (
                "post",
                json!({ "url": "/posts", "data": { "title": "x" }, "headers": ["x-extra"] }),
                "headers",
            ),
            (
                "post",
                json!({ "url": "/posts", "data": { "title": "x" }, "headers": { "bad header": "1" } }),
                "header",
            ),
            (
                "post",
                json!({ "url": "/posts", "data": { "title": "x" }, "headers": { "x-extra": "line\nbreak" } }),
                "x-extra",
            ),
            (
                "post",
                json!({ "url": "/1/objects/po sts", "data": { "title": "x" } }),
                "url",
            ),
        ];
        for (event, request, word) in &cases {
            let what = format!("{event} {request}");
            let ack = s.call(event, request.clone()).await;
            let m = failure(&ack, 400, &what);
            assert!(
                m.contains(word),
                "{what}: message should name `{word}`: {m}"
            );
        }
        // Bodies the write path refuses are 400 too.
        for data in [
            json!(5),
            json!("title"),
            json!([{ "title": "x" }]),
            json!({ "nope": 1 }),
            json!({ "title": [1] }),
        ] {
            failure(
                &req(&s, "post", "/posts", data.clone()).await,
                400,
                &format!("post data {data}"),
            );
            failure(
                &req(&s, "put", &at, data.clone()).await,
                400,
                &format!("put data {data}"),
            );
        }
        // Without an ack the same refusals are `error` events naming the event.
        for (event, request, word) in cases.iter().take(4) {
            s.emit(event, &[request.clone()]);
            let m = error_event(&mut s, event, &format!("{event} {request} without ack")).await;
            assert!(m.starts_with("400"), "{m}");
            assert!(m.contains(word), "{m}");
        }

        let all = app.all_rows("posts").await;
        assert_eq!(all.len(), 1, "nothing written: {all:?}");
        assert_eq!(all[0]["id"], json!(existing));
        assert_eq!(all[0]["title"], "existing", "nothing changed");
        still_works(&app, &s, "after malformed requests").await;
    }
}

#[tokio::test]
async fn sails_unknown_routes_answer_404() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let s = app.socket(&alice.token).await;
        for (verb, url) in [
            ("get", "/nope/x/y"),
            ("post", "/nope/x/y"),
            ("get", "/nope"),
            ("get", "/nope/1"),
            ("delete", "/nope/1"),
            ("get", "/1/objects/nothing"),
            ("post", "/1/objects/nothing"),
            ("get", "/1/objects/posts/1/extra"),
        ] {
            let data = if verb == "post" {
                json!({ "title": "x" })
            } else {
                Value::Null
            };
            let m = failure(
                &req(&s, verb, url, data).await,
                404,
                &format!("{verb} {url}"),
            );
            let lower = m.to_lowercase();
            assert!(
                lower.contains("no ") || lower.contains("not found"),
                "{verb} {url}: {m}"
            );
        }
        let m = failure(
            &req(&s, "get", "/nope/x/y", Value::Null).await,
            404,
            "route",
        );
        assert!(m.contains("/nope/x/y"), "the message names the path: {m}");
        // A path that is a row of an existing object but absent is a 404 as well.
        failure(
            &req(&s, "get", "/posts/999999", Value::Null).await,
            404,
            "absent row",
        );
        failure(
            &req(&s, "get", "/posts/abc", Value::Null).await,
            400,
            "non-numeric id",
        );
        assert!(app.all_rows("posts").await.is_empty(), "nothing written");
    }
}

// ---------------------------------------------------------------------------------------
// B. Sails subscriptions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sails_list_get_subscribes_to_created_updated_destroyed() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let carol = app.user("carol@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;
        let mut idle = app.socket(&carol.token).await; // never does a `get`
        let sbob = app.socket(&bob.token).await;

        let listed = ok_body(
            &req(&sa, "get", "/posts", Value::Null).await,
            "alice lists posts",
        );
        assert_eq!(listed["totalRows"], json!(0));

        // Created by someone else, over REST.
        let id = rest_create(&app, "posts", &bob.cred(), "first").await;
        let got = sa.expect("posts").await;
        assert_eq!(got["verb"], "created", "{got}");
        assert_eq!(got["id"], json!(id), "{got}");
        assert_eq!(got["data"]["title"], "first", "{got}");
        assert_eq!(got["data"]["id"], json!(id), "{got}");

        rest_update(&app, "posts", id, &bob.cred(), "second").await;
        let got = sa.expect("posts").await;
        assert_eq!(got["verb"], "updated", "{got}");
        assert_eq!(got["id"], json!(id), "{got}");
        assert_eq!(got["data"]["title"], "second", "{got}");
        assert_eq!(got["previous"]["title"], "first", "{got}");

        let (status, body) = app
            .delete(&format!("/1/objects/posts/{id}"), &bob.cred())
            .await;
        assert_eq!(status, 200, "{body}");
        let got = sa.expect("posts").await;
        assert_eq!(got["verb"], "destroyed", "{got}");
        assert_eq!(got["id"], json!(id), "{got}");
        assert_eq!(got["previous"]["title"], "second", "{got}");
        assert!(got.get("data").is_none_or(Value::is_null), "{got}");

        // Writes through another socket's virtual requests are changes like any other.
        let id2 = id_of(&ok_body(
            &req(&sbob, "post", "/posts", json!({ "title": "via socket" })).await,
            "bob posts over his socket",
        ));
        let got = sa.expect("posts").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("created"), json!(id2)),
            "{got}"
        );
        ok_body(
            &req(
                &sbob,
                "patch",
                &format!("/posts/{id2}"),
                json!({ "title": "patched" }),
            )
            .await,
            "bob patches",
        );
        let got = sa.expect("posts").await;
        assert_eq!(got["verb"], "updated", "{got}");
        assert_eq!(got["data"]["title"], "patched", "{got}");
        assert_eq!(got["previous"]["title"], "via socket", "{got}");

        // No duplicates: each change arrived once (alice is in the row room and the
        // watcher room).
        sa.assert_none(&app, "posts").await;
        // A socket that never did a `get` received none of it.
        idle.assert_none(&app, "posts").await;

        // Other objects' changes are not `posts` events and reach no `notes` watcher.
        rest_create(&app, "memos", &bob.cred(), "memo").await;
        let mut watcher = app.socket(&bob.token).await;
        ok_body(
            &req(&watcher, "get", "/memos", Value::Null).await,
            "bob lists memos",
        );
        let m2 = rest_create(&app, "memos", &bob.cred(), "memo 2").await;
        assert_eq!(watcher.expect("memos").await["id"], json!(m2));
        sa.assert_none(&app, "memos").await;
        sa.assert_none(&app, "posts").await;
    }
}

#[tokio::test]
async fn sails_get_one_row_subscribes_to_that_row_only() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let r1 = rest_create(&app, "posts", &bob.cred(), "one").await;
        let r2 = rest_create(&app, "posts", &bob.cred(), "two").await;
        let mut sa = app.socket(&alice.token).await;
        let mut lister = app.socket(&bob.token).await;

        let one = ok_body(
            &req(&sa, "get", &format!("/posts/{r1}"), Value::Null).await,
            "get r1",
        );
        assert_eq!(one["id"], json!(r1));
        ok_body(
            &req(&lister, "get", "/posts", Value::Null).await,
            "lister lists",
        );

        // r2 is changed first: if alice were subscribed to it, that event would come first.
        rest_update(&app, "posts", r2, &bob.cred(), "two b").await;
        rest_update(&app, "posts", r1, &bob.cred(), "one b").await;
        let got = sa.expect("posts").await;
        assert_eq!(got["verb"], "updated", "{got}");
        assert_eq!(
            got["id"],
            json!(r1),
            "only r1's update reaches alice: {got}"
        );
        assert_eq!(got["data"]["title"], "one b");
        assert_eq!(got["previous"]["title"], "one");
        // The lister, subscribed to both, gets both, in order.
        assert_eq!(lister.expect("posts").await["id"], json!(r2));
        assert_eq!(lister.expect("posts").await["id"], json!(r1));

        // A new row is not part of a one-row subscription.
        let r3 = rest_create(&app, "posts", &bob.cred(), "three").await;
        let got = lister.expect("posts").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("created"), json!(r3))
        );
        sa.assert_none(&app, "posts").await;

        // Deleting r2 does not reach alice; deleting r1 does.
        for id in [r2, r1] {
            let (status, body) = app
                .delete(&format!("/1/objects/posts/{id}"), &bob.cred())
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let got = sa.expect("posts").await;
        assert_eq!(got["verb"], "destroyed", "{got}");
        assert_eq!(got["id"], json!(r1), "{got}");
        for id in [r2, r1] {
            let got = lister.expect("posts").await;
            assert_eq!(
                (got["verb"].clone(), got["id"].clone()),
                (json!("destroyed"), json!(id))
            );
        }
        sa.assert_none(&app, "posts").await;

        // A deleted row's subscribers are dropped: a later row, even one that gets the
        // same id, is not theirs.
        let top = rest_create(&app, "posts", &bob.cred(), "top").await;
        assert_eq!(lister.expect("posts").await["id"], json!(top));
        let mut single = app.socket(&alice.token).await;
        ok_body(
            &req(&single, "get", &format!("/posts/{top}"), Value::Null).await,
            "get top",
        );
        let (status, body) = app
            .delete(&format!("/1/objects/posts/{top}"), &bob.cred())
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(single.expect("posts").await["verb"], "destroyed");
        assert_eq!(lister.expect("posts").await["verb"], "destroyed");
        let next = rest_create(&app, "posts", &bob.cred(), "next").await;
        assert_eq!(lister.expect("posts").await["id"], json!(next));
        rest_update(&app, "posts", next, &bob.cred(), "next b").await;
        assert_eq!(lister.expect("posts").await["verb"], "updated");
        single.assert_none(&app, "posts").await;

        // A `get` that fails subscribes to nothing.
        let mut sfail = app.socket(&alice.token).await;
        failure(
            &req(&sfail, "get", &format!("/posts/{r1}"), Value::Null).await,
            404,
            "get deleted",
        );
        rest_update(&app, "posts", r3, &bob.cred(), "three b").await;
        assert_eq!(lister.expect("posts").await["id"], json!(r3));
        sfail.assert_none(&app, "posts").await;
    }
}

#[tokio::test]
async fn sails_subscriptions_follow_owner_security() {
    for backend in backends() {
        let app = start(&backend).await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let reader = app.user("reader@x.test", "ReadOnly").await;
        let mut sa = app.socket(&alice.token).await;
        let mut sb = app.socket(&bob.token).await;
        let mut sr = app.socket(&reader.token).await;
        let mut sadmin = app.socket(&admin.token).await;
        let old = rest_create(&app, "notes", &alice.cred(), "old").await;

        let bobs = ok_body(
            &req(&sb, "get", "/notes", Value::Null).await,
            "bob lists notes",
        );
        assert_eq!(bobs["totalRows"], json!(0), "{bobs}");
        for s in [&sa, &sr, &sadmin] {
            ok_body(&req(s, "get", "/notes", Value::Null).await, "lists notes");
        }

        // Alice's new note: alice and the admin see it, bob and the ReadOnly user do not.
        let note = rest_create(&app, "notes", &alice.cred(), "secret").await;
        let got = sa.expect("notes").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("created"), json!(note))
        );
        assert_eq!(got["data"]["title"], "secret");
        assert_eq!(sadmin.expect("notes").await["id"], json!(note));
        sb.assert_none(&app, "notes").await;
        sr.assert_none(&app, "notes").await;

        // Nor the updates of Alice's notes, old (listed by alice) or new.
        rest_update(&app, "notes", old, &alice.cred(), "old b").await;
        rest_update(&app, "notes", note, &alice.cred(), "secret b").await;
        for expected in [old, note] {
            let got = sa.expect("notes").await;
            assert_eq!(
                (got["verb"].clone(), got["id"].clone()),
                (json!("updated"), json!(expected))
            );
            assert_eq!(sadmin.expect("notes").await["id"], json!(expected));
        }
        sb.assert_none(&app, "notes").await;
        sr.assert_none(&app, "notes").await;

        // Bob's own note reaches bob (and admin), not alice.
        let mine = rest_create(&app, "notes", &bob.cred(), "bob's").await;
        let got = sb.expect("notes").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("created"), json!(mine))
        );
        assert_eq!(sadmin.expect("notes").await["id"], json!(mine));
        sa.assert_none(&app, "notes").await;
        sr.assert_none(&app, "notes").await;

        // Deleting Alice's note reaches only those who could read it.
        let (status, body) = app
            .delete(&format!("/1/objects/notes/{note}"), &alice.cred())
            .await;
        assert_eq!(status, 200, "{body}");
        let got = sa.expect("notes").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("destroyed"), json!(note))
        );
        sb.assert_none(&app, "notes").await;

        // ownerWrite: every reader watches every row.
        for s in [&sa, &sb, &sr] {
            ok_body(&req(s, "get", "/memos", Value::Null).await, "lists memos");
        }
        let memo = rest_create(&app, "memos", &alice.cred(), "public memo").await;
        for s in [&mut sa, &mut sb, &mut sr] {
            let got = s.expect("memos").await;
            assert_eq!(
                (got["verb"].clone(), got["id"].clone()),
                (json!("created"), json!(memo))
            );
        }
    }
}

/// Authenticating again replaces the socket's rooms: what it subscribed to as one user
/// does not follow it when it becomes another.
#[tokio::test]
async fn sails_subscriptions_end_when_the_socket_changes_identity() {
    for backend in backends() {
        let app = start(&backend).await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let old = rest_create(&app, "notes", &alice.cred(), "old").await;
        let mut sa = app.socket(&alice.token).await;
        let mut s = app.socket(&admin.token).await;
        ok_body(&req(&sa, "get", "/notes", Value::Null).await, "alice lists");
        ok_body(&req(&s, "get", "/notes", Value::Null).await, "admin lists");
        ok_body(
            &req(&s, "get", &format!("/notes/{old}"), Value::Null).await,
            "admin gets one",
        );

        // Still the admin: sees alice's new note.
        let first = rest_create(&app, "notes", &alice.cred(), "first").await;
        assert_eq!(sa.expect("notes").await["id"], json!(first));
        assert_eq!(s.expect("notes").await["id"], json!(first));

        // Now Bob: none of Alice's notes, whichever way it had subscribed.
        s.emit("authentication", &[json!({ "id": bob.token })]);
        assert_eq!(
            s.expect("authenticated").await["username"],
            json!(bob.email)
        );
        let second = rest_create(&app, "notes", &alice.cred(), "second").await;
        rest_update(&app, "notes", old, &alice.cred(), "old b").await;
        rest_update(&app, "notes", first, &alice.cred(), "first b").await;
        for (verb, id) in [("created", second), ("updated", old), ("updated", first)] {
            let got = sa.expect("notes").await;
            assert_eq!(
                (got["verb"].clone(), got["id"].clone()),
                (json!(verb), json!(id))
            );
        }
        s.assert_none(&app, "notes").await;
        // And its requests now run as Bob.
        let listed = ok_body(&req(&s, "get", "/notes", Value::Null).await, "bob lists");
        assert_eq!(listed["totalRows"], json!(0), "{listed}");
    }
}

/// Creating a row over a socket subscribes the creator to it (Sails), but only within
/// what its user may read: a role that may create but not read an object must not see
/// later changes others make to that row.
#[tokio::test]
async fn sails_post_subscribes_only_within_read_permission() {
    for backend in backends() {
        let app = super::objects(Spawn::new(&backend))
            .schema(
                "inbox.json",
                json!({ "name": "inbox", "fields": { "title": { "type": "string" } },
                        "permissions": { "read": [], "create": ["User"], "update": [], "delete": [] } }),
            )
            .start()
            .await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;
        let mut sadmin = app.socket(&admin.token).await;
        ok_body(
            &req(&sadmin, "get", "/inbox", Value::Null).await,
            "admin lists inbox",
        );

        let id = id_of(&ok_body(
            &req(&sa, "post", "/inbox", json!({ "title": "to the admin" })).await,
            "alice drops a message",
        ));
        assert_eq!(sadmin.expect("inbox").await["id"], json!(id));
        // Alice may not read it back, by REST or by socket.
        assert_eq!(
            app.get(&format!("/1/objects/inbox/{id}"), &alice.cred())
                .await
                .0,
            403
        );
        failure(
            &req(&sa, "get", &format!("/inbox/{id}"), Value::Null).await,
            403,
            "alice reads inbox",
        );

        // The admin's reply is not Alice's to read.
        rest_update(&app, "inbox", id, &master(), "secret admin reply").await;
        let got = sadmin.expect("inbox").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("updated"), json!(id))
        );
        let (status, body) = app
            .delete(&format!("/1/objects/inbox/{id}"), &master())
            .await;
        assert_eq!(status, 200, "{body}");
        let got = sadmin.expect("inbox").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("destroyed"), json!(id))
        );
        let marker = app.barrier().await;
        let leaked: Vec<_> = sa
            .until_barrier(&marker)
            .await
            .into_iter()
            .filter(|(name, args)| name == "inbox" && args[0]["verb"] != "created")
            .collect();
        assert!(
            leaked.is_empty(),
            "a non-reader received changes to the row: {leaked:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// C. Channels
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn channels_echo_join_publish_leave() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;
        let mut sb = app.socket(&bob.token).await;
        let mut sc = app.socket(&bob.token).await; // same user, not a member

        // echo: with an ack the data comes back as the ack, without one as an event.
        let data = json!({ "n": 1, "list": [1, "two", null], "nested": { "ok": true } });
        assert_eq!(sa.call("echo", data.clone()).await, data);
        assert_eq!(sa.call("echo", json!("text")).await, json!("text"));
        sa.emit("echo", &[json!("hi")]);
        assert_eq!(sa.expect("echo").await, json!("hi"));
        sa.assert_none(&app, "echo").await; // the acked echoes sent no event

        // join: `joined` event without an ack, `{ok: true}` ack with one.
        sa.emit("join", &[json!("room-1")]);
        assert_eq!(sa.expect("joined").await, json!("room-1"));
        let ack = sb.call("join", json!({ "channel": "room-1" })).await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        assert_eq!(ack["channel"], json!("room-1"), "{ack}");
        sb.assert_none(&app, "joined").await;
        sc.emit("join", &[json!("room-2")]);
        assert_eq!(sc.expect("joined").await, json!("room-2"));

        // chan_in from a member: every member gets it, the sender included.
        let ack = sa
            .call(
                "chan_in",
                json!({ "channel": "room-1", "data": { "m": 1 } }),
            )
            .await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        let sender = sa.sid.clone();
        assert!(!sender.is_empty());
        for s in [&mut sa, &mut sb] {
            let got = s.expect("chan_out").await;
            assert_eq!(
                got,
                json!({ "channel": "room-1", "data": { "m": 1 }, "sid": sender })
            );
        }
        sa.assert_none(&app, "chan_out").await; // exactly once
        sc.assert_none(&app, "chan_out").await; // not a member of room-1

        // chan_in from a non-member (no ack): members get it with its sid, it does not.
        sc.emit(
            "chan_in",
            &[json!({ "channel": "room-1", "data": "from c" })],
        );
        for s in [&mut sa, &mut sb] {
            let got = s.expect("chan_out").await;
            assert_eq!(got["channel"], "room-1");
            assert_eq!(got["data"], "from c");
            assert_eq!(got["sid"], json!(sc.sid));
        }
        sc.assert_none(&app, "chan_out").await;
        // The sid is the sender's.
        sb.call("chan_in", json!({ "channel": "room-1", "data": 2 }))
            .await;
        assert_eq!(sa.expect("chan_out").await["sid"], json!(sb.sid));
        assert_eq!(sb.expect("chan_out").await["sid"], json!(sb.sid));

        // A channel's messages stay in that channel.
        sc.call("chan_in", json!({ "channel": "room-2", "data": "two" }))
            .await;
        let got = sc.expect("chan_out").await;
        assert_eq!(
            (got["channel"].clone(), got["sid"].clone()),
            (json!("room-2"), json!(sc.sid))
        );
        sa.assert_none(&app, "chan_out").await;
        sb.assert_none(&app, "chan_out").await;

        // leave without an ack: an `ok` event; then nothing more from room-1.
        sa.emit("leave", &[json!("room-1")]);
        let ok = sa.expect("ok").await;
        assert_eq!(ok, json!({ "event": "leave", "channel": "room-1" }));
        sb.call("chan_in", json!({ "channel": "room-1", "data": 3 }))
            .await;
        assert_eq!(sb.expect("chan_out").await["data"], json!(3));
        sa.assert_none(&app, "chan_out").await;

        // leave with an ack; leaving twice is harmless.
        let ack = sb.call("leave", json!({ "channel": "room-1" })).await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        assert_eq!(sb.call("leave", json!("room-1")).await["ok"], json!(true));
        sc.call("chan_in", json!({ "channel": "room-1", "data": 4 }))
            .await;
        sc.call("chan_in", json!({ "channel": "room-2", "data": "witness" }))
            .await;
        assert_eq!(sc.expect("chan_out").await["data"], "witness");
        sa.assert_none(&app, "chan_out").await;
        sb.assert_none(&app, "chan_out").await;

        // Joining again works, and `data` may be absent (null).
        sa.call("join", json!("room-1")).await;
        sb.call("chan_in", json!({ "channel": "room-1" })).await;
        let got = sa.expect("chan_out").await;
        assert_eq!(got["data"], Value::Null, "{got}");
        assert_eq!(got["sid"], json!(sb.sid));

        // Boundary names are accepted.
        let longest = "x".repeat(100);
        for name in [longest.as_str(), "a-b_c.d:e@f", "1"] {
            let ack = sa.call("join", json!(name)).await;
            assert_eq!(ack["ok"], json!(true), "{name}: {ack}");
        }
    }
}

#[tokio::test]
async fn channels_refuse_invalid_names() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;
        let mut member = app.socket(&alice.token).await;
        let long = "y".repeat(101);

        // (name, a word the message must contain)
        let bad_names: Vec<(Value, &str)> = vec![
            (json!(""), "1 to 100"),
            (json!(long), "1 to 100"),
            (json!("room 1"), "` `"),
            (json!("<script>"), "`<`"),
            (json!("a/b"), "`/`"),
            (json!("é"), "letters"),
            (json!("tab\there"), "letters"),
            (json!(5), "channel name"),
            (json!(true), "channel name"),
            (json!(["room-1"]), "channel name"),
            (json!({}), "channel name"),
            (json!({ "channel": 5 }), "channel name"),
            (json!({ "name": "room-1" }), "channel name"),
            (json!({ "channel": "" }), "1 to 100"),
            (json!({ "channel": "<script>" }), "`<`"),
            (json!(null), "channel name"),
        ];
        for (name, word) in &bad_names {
            for event in ["join", "leave"] {
                let ack = sa.call(event, name.clone()).await;
                let e = ack_error(&ack, &format!("{event} {name}"));
                assert!(e.contains(word), "{event} {name}: `{word}` in {e}");
                sa.emit(event, &[name.clone()]);
                let m = error_event(&mut sa, event, &format!("{event} {name} without ack")).await;
                assert_eq!(m, e, "ack and event say the same");
            }
            // chan_in with the name as its channel.
            let message = match name {
                Value::Object(_) => name.clone(),
                other => json!({ "channel": other, "data": 1 }),
            };
            let e = ack_error(
                &sa.call("chan_in", message.clone()).await,
                &format!("chan_in {message}"),
            );
            if name.is_string() || name.get("channel").is_some_and(Value::is_string) {
                assert!(e.contains(word), "chan_in {message}: `{word}` in {e}");
            }
        }
        // Missing argument entirely.
        for event in ["join", "leave", "chan_in"] {
            sa.emit(event, &[]);
            error_event(&mut sa, event, &format!("{event} with no argument")).await;
        }
        // chan_in without a channel, or with a non-object.
        for message in [
            json!({ "data": 1 }),
            json!("room-1"),
            json!(["room-1", 1]),
            json!(7),
        ] {
            let e = ack_error(
                &sa.call("chan_in", message.clone()).await,
                &format!("chan_in {message}"),
            );
            assert!(e.contains("{channel, data}"), "{e}");
        }

        // None of those joined anything: a member of a valid channel hears only valid
        // traffic, and the refused socket receives nothing from a channel it never joined.
        member.call("join", json!("room-1")).await;
        member
            .call("chan_in", json!({ "channel": "room-1", "data": "only" }))
            .await;
        assert_eq!(member.expect("chan_out").await["data"], "only");
        member.assert_none(&app, "chan_out").await;
        sa.assert_none(&app, "chan_out").await;
        sa.assert_none(&app, "joined").await;
    }
}

#[tokio::test]
async fn channels_refuse_publishing_into_db_channels() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut member = app.socket(&alice.token).await;
        let mut sb = app.socket(&bob.token).await;
        assert_eq!(
            member.call("join", json!("db-posts")).await["ok"],
            json!(true)
        );
        assert_eq!(sb.call("join", json!("db-posts")).await["ok"], json!(true));

        // From a member and from a non-member, with and without an ack.
        let fake = json!({ "channel": "db-posts", "data": { "id": 1, "title": "forged" } });
        for s in [&sb, &member] {
            let e = ack_error(&s.call("chan_in", fake.clone()).await, "chan_in db-posts");
            assert!(e.contains("cannot publish into database channel"), "{e}");
            assert!(e.contains("db-posts"), "{e}");
        }
        sb.emit("chan_in", &[fake.clone()]);
        let m = error_event(&mut sb, "chan_in", "chan_in db-posts without ack").await;
        assert!(m.contains("cannot publish into database channel"), "{m}");
        // Also a db channel of no object, and the db_ event names as plain events.
        let e = ack_error(
            &sb.call("chan_in", json!({ "channel": "db-nothing", "data": 1 }))
                .await,
            "chan_in db-nothing",
        );
        assert!(e.contains("cannot publish"), "{e}");
        sb.emit(
            "db_created",
            &[json!({ "channel": "db-posts", "data": { "id": 1 } })],
        );
        let m = error_event(&mut sb, "db_created", "db_created from a client").await;
        assert!(m.contains("unknown event"), "{m}");

        for s in [&mut member, &mut sb] {
            s.assert_none(&app, "chan_out").await;
            s.assert_none(&app, "db_created").await;
        }

        // The channel itself still works for real changes.
        let id = rest_create(&app, "posts", &alice.cred(), "real").await;
        for s in [&mut member, &mut sb] {
            let got = s.expect("db_created").await;
            assert_eq!(got["channel"], "db-posts");
            assert_eq!(got["data"]["id"], json!(id));
            assert_eq!(got["data"]["title"], "real");
        }
        assert_eq!(
            titles(&app, "posts").await,
            ["real"],
            "nothing forged was written"
        );

        // Joining the db channel of a missing object is refused with a reason.
        let e = ack_error(
            &sb.call("join", json!("db-nothing")).await,
            "join db-nothing",
        );
        assert!(e.contains("nothing"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// D. Bad input
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_event_answers_bad_arguments_and_the_socket_keeps_working() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;

        // Wrong types.
        for (event, arg) in [
            ("join", json!(42)),
            ("join", json!({ "room": "room-1" })),
            ("leave", json!(4.5)),
            ("chan_in", json!("a string")),
            ("chan_in", json!(null)),
            ("chan_in", json!({ "channel": ["room-1"], "data": 1 })),
        ] {
            let e = ack_error(
                &sa.call(event, arg.clone()).await,
                &format!("{event} {arg}"),
            );
            assert!(e.contains("expect"), "{event} {arg}: {e}");
            sa.emit(event, &[arg.clone()]);
            error_event(&mut sa, event, &format!("{event} {arg} without ack")).await;
        }
        // Login / authentication with nonsense: refused, and the socket keeps its identity.
        for args in [
            vec![json!({ "a": 1 })],
            vec![json!(1), json!(2), json!(3)],
            vec![json!([])],
            vec![json!("Bearer not-a-token")],
            vec![],
        ] {
            sa.emit("login", &args);
            let got = sa.expect("notAuthorized").await;
            assert!(
                got["message"].as_str().is_some_and(|m| !m.is_empty()),
                "login {args:?}: {got}"
            );
        }
        for args in [
            vec![json!({ "a": 1 })],
            vec![json!("token")],
            vec![json!({ "id": 5 })],
            vec![],
        ] {
            sa.emit("authentication", &args);
            let got = sa.expect("unauthorized").await;
            assert!(
                got["message"].as_str().is_some_and(|m| !m.is_empty()),
                "authentication {args:?}: {got}"
            );
        }
        sa.assert_none(&app, "authorized").await;
        still_works(&app, &sa, "after refused logins").await;

        // Missing arguments.
        for event in ["join", "leave", "chan_in"] {
            sa.emit(event, &[]);
            error_event(&mut sa, event, &format!("{event} without arguments")).await;
        }
        for verb in ["get", "post", "put", "patch", "delete"] {
            sa.emit(verb, &[]);
            let m = error_event(&mut sa, verb, &format!("{verb} without arguments")).await;
            assert!(m.starts_with("400"), "{verb}: {m}");
        }
        sa.emit("echo", &[]);
        assert_eq!(
            sa.expect("echo").await,
            Value::Null,
            "echo of nothing is null"
        );

        // Unknown events, with and without an ack.
        for name in [
            "bogus",
            "__proto__",
            "chan_out",
            "joined",
            "<script>",
            "disconnect",
            "connect",
            "error",
            "get_x",
            "",
        ] {
            sa.emit(name, &[json!(1)]);
            let m = error_event(&mut sa, name, &format!("unknown `{name}`")).await;
            assert!(m.contains("unknown event"), "{m}");
            assert!(m.contains(name), "the message names the event: {m}");
            let e = ack_error(&sa.call(name, json!({ "x": 1 })).await, name);
            assert!(e.contains("unknown event"), "{e}");
        }
        sa.emit("bogus", &[]);
        error_event(&mut sa, "bogus", "unknown event without arguments").await;

        // An unauthenticated socket is told to authenticate, for every command.
        let mut anon = unauthenticated(&app).await;
        for (event, arg) in [
            ("echo", json!("x")),
            ("join", json!("room-1")),
            ("leave", json!("room-1")),
            ("chan_in", json!({ "channel": "room-1", "data": 1 })),
        ] {
            let e = ack_error(&anon.call(event, arg.clone()).await, event);
            assert!(e.contains("authenticate"), "{event}: {e}");
            anon.emit(event, &[arg]);
            error_event(&mut anon, event, &format!("unauthenticated {event}")).await;
        }
        // It joined nothing: a publish into room-1 does not reach it.
        sa.call("join", json!("room-1")).await;
        sa.call(
            "chan_in",
            json!({ "channel": "room-1", "data": "members only" }),
        )
        .await;
        assert_eq!(sa.expect("chan_out").await["data"], "members only");
        let leaked: Vec<_> = anon
            .drain(Duration::from_millis(300))
            .await
            .into_iter()
            .filter(|i| matches!(i, Incoming::Event(name, _) if name == "chan_out"))
            .collect();
        assert!(leaked.is_empty(), "unauthenticated socket got {leaked:?}");

        still_works(&app, &sa, "after all bad input").await;
        let mut fresh = app.socket(&alice.token).await;
        ok_body(
            &req(&fresh, "get", "/posts", Value::Null).await,
            "fresh lists",
        );
        let id = rest_create(&app, "posts", &alice.cred(), "after").await;
        let got = fresh.expect("posts").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("created"), json!(id))
        );
    }
}

#[tokio::test]
async fn malformed_frames_do_not_hurt_other_sockets() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut bystander = app.socket(&alice.token).await;
        bystander.call("join", json!("room-1")).await;
        ok_body(
            &req(&bystander, "get", "/posts", Value::Null).await,
            "bystander lists",
        );

        // Frames that are not valid Socket.IO packets: the server drops that connection
        // (socketioxide closes on a packet parsing error), and only that one.
        for frame in [
            "42[not json",
            "42{\"a\":1}",
            "4z",
            "42[]",
            "42[1,2]",
            "49[\"x\"]",
            "4",
            "x",
        ] {
            let mut victim = app.socket(&alice.token).await;
            victim.send_raw(frame);
            assert!(
                victim.closed_within(Duration::from_secs(3)).await,
                "frame {frame:?} closes that connection"
            );
            bystander
                .call("chan_in", json!({ "channel": "room-1", "data": frame }))
                .await;
            assert_eq!(bystander.expect("chan_out").await["data"], json!(frame));
        }
        // A member of room-1 sending invalid JSON is closed too, and leaves the room.
        let mut victim = app.socket(&alice.token).await;
        victim.call("join", json!("room-1")).await;
        victim.send_raw("42[not json");
        assert!(
            victim.closed_within(Duration::from_secs(3)).await,
            "a frame that is not a Socket.IO packet ends that connection"
        );

        still_works(&app, &bystander, "bystander after malformed frames").await;
        // The bystander still gets change events; the closed victim is gone from room-1.
        let id = rest_create(&app, "posts", &alice.cred(), "after").await;
        assert_eq!(bystander.expect("posts").await["id"], json!(id));
        bystander
            .call("chan_in", json!({ "channel": "room-1", "data": "last" }))
            .await;
        assert_eq!(bystander.expect("chan_out").await["data"], "last");

        let mut fresh = app.socket(&alice.token).await;
        ok_body(
            &req(&fresh, "get", "/posts", Value::Null).await,
            "fresh lists",
        );
        let id = rest_create(&app, "posts", &alice.cred(), "fresh").await;
        assert_eq!(fresh.expect("posts").await["id"], json!(id));
    }
}

#[tokio::test]
async fn oversized_messages_close_only_that_socket() {
    for backend in backends() {
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut bystander = app.socket(&alice.token).await;
        bystander.call("join", json!("big")).await;
        ok_body(
            &req(&bystander, "get", "/posts", Value::Null).await,
            "bystander lists",
        );

        // Under the 1 MiB limit: delivered.
        let under = "u".repeat(512 * 1024);
        let sender = app.socket(&alice.token).await;
        assert_eq!(
            sender
                .call("chan_in", json!({ "channel": "big", "data": under }))
                .await["ok"],
            json!(true)
        );
        assert_eq!(
            bystander.expect("chan_out").await["data"]
                .as_str()
                .map(str::len),
            Some(under.len())
        );

        // 2 MiB in chan_in: that socket is disconnected and nothing is delivered.
        let huge = "h".repeat(2 * 1024 * 1024);
        let mut victim = app.socket(&alice.token).await;
        victim.emit("chan_in", &[json!({ "channel": "big", "data": huge })]);
        let chan_in_closed = victim.closed_within(Duration::from_secs(5)).await;

        // 2 MiB in a Sails post: disconnected, nothing written.
        let mut victim2 = app.socket(&alice.token).await;
        victim2.emit(
            "post",
            &[json!({ "url": "/posts", "data": { "title": huge } })],
        );
        let post_closed = victim2.closed_within(Duration::from_secs(5)).await;

        // The server stays up: REST answers, other sockets work, events still flow.
        let (status, _) = app.get("/healthz", &Cred::None).await;
        assert_eq!(status, 200);
        still_works(&app, &bystander, "bystander after oversized messages").await;
        let id = rest_create(&app, "posts", &alice.cred(), "small").await;
        let got = bystander.expect("posts").await;
        assert_eq!(
            (got["verb"].clone(), got["id"].clone()),
            (json!("created"), json!(id))
        );
        let mut fresh = app.socket(&alice.token).await;
        fresh.call("join", json!("big")).await;
        fresh
            .call("chan_in", json!({ "channel": "big", "data": "fine" }))
            .await;
        assert_eq!(fresh.expect("chan_out").await["data"], "fine");
        assert_eq!(
            titles(&app, "posts").await,
            ["small"],
            "the oversized post wrote nothing"
        );

        assert!(
            chan_in_closed,
            "a 2 MiB chan_in (limit 1 MiB) must close that socket"
        );
        assert!(
            post_closed,
            "a 2 MiB post (limit 1 MiB) must close that socket"
        );
        // The bystander got "fine" and never the oversized message.
        let marker = app.barrier().await;
        let sizes: Vec<usize> = bystander
            .until_barrier(&marker)
            .await
            .into_iter()
            .filter(|(name, _)| name == "chan_out")
            .map(|(_, args)| args[0]["data"].as_str().map_or(0, str::len))
            .collect();
        assert_eq!(
            sizes,
            ["fine".len()],
            "chan_out sizes the bystander received"
        );
    }
}
