//! Sails-style virtual requests and subscriptions over a real socket, with the database
//! (as the master token sees it) as the witness of what was or was not written.

use serde_json::{Value, json};

use super::support::*;
use super::{id_of, start};
use crate::common::{ANON, Spawn, backends, basic_header, master};
use crate::sio::Sio;

// ---------------------------------------------------------------------------------------
// Sails virtual requests
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
            json!({ "Authorization": basic_header(crate::common::MASTER, crate::common::ADMIN_USER_TOKEN) }),
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
                json!({ "Authorization": basic_header(crate::common::MASTER, crate::common::ADMIN_USER_TOKEN) }),
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
            s.emit(event, std::slice::from_ref(request));
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
// Sails subscriptions
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
