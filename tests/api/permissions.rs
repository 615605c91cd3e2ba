//! Every default role × read/create/update/delete × row-security mode over REST: what
//! is allowed succeeds, what is refused is refused with the right status, and a refused
//! write leaves the row exactly as it was.

use serde_json::{Value, json};

use crate::common::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Actor {
    Admin,
    /// A User who did not create the row under test.
    OtherUser,
    /// The User who created the row under test.
    Creator,
    ReadOnly,
    Guest,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    List,
    Get,
    Create,
    Update,
    Delete,
}

fn object(name: &str, row_security: &str) -> Value {
    json!({
        "name": name,
        "fields": { "title": { "type": "string", "required": true } },
        "permissions": {
            "read": ["User", "ReadOnly", "Public"],
            "create": ["User"],
            "update": ["User"],
            "delete": ["User"]
        },
        "rowSecurity": row_security
    })
}

/// Expected status for `actor` doing `op` on a row created by `Creator`; for List, 200
/// means the row is listed and 0 means the list answers 200 without it.
fn expected(mode: &str, actor: Actor, op: Op) -> u16 {
    use Actor::*;
    use Op::*;
    match (mode, actor, op) {
        (_, Admin, _) => 200,
        (_, Creator, _) => 200,
        // Read: everyone with a read role, except under owner security.
        ("owner", OtherUser | ReadOnly, List) => 0,
        ("owner", OtherUser | ReadOnly, Get) => 404,
        ("owner", Guest, List | Get) => 403,
        (_, _, List | Get) => 200,
        // Create: only the User role.
        (_, OtherUser, Create) => 200,
        (_, ReadOnly | Guest, Create) => 403,
        // Update/delete.
        ("none", OtherUser, Update | Delete) => 200,
        ("owner", OtherUser, Update | Delete) => 404,
        ("ownerWrite", OtherUser, Update | Delete) => 403,
        (_, ReadOnly | Guest, Update | Delete) => 403,
        other => panic!("no expectation for {other:?}"),
    }
}

#[tokio::test]
async fn role_by_operation_by_row_security() {
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema("open.json", object("open", "none"))
            .schema("owned.json", object("owned", "owner"))
            .schema("shared.json", object("shared", "ownerWrite"))
            .start()
            .await;
        let admin = app.admin().await;
        let creator = app.user("creator@t.io", "User").await;
        let other = app.user("other@t.io", "User").await;
        let reader = app.user("reader@t.io", "ReadOnly").await;
        let cred = |actor: Actor| match actor {
            Actor::Admin => admin.cred(),
            Actor::Creator => creator.cred(),
            Actor::OtherUser => other.cred(),
            Actor::ReadOnly => reader.cred(),
            Actor::Guest => Cred::Anonymous(ANON.into()),
        };
        let mut checked = 0;
        for (object, mode) in [
            ("open", "none"),
            ("owned", "owner"),
            ("shared", "ownerWrite"),
        ] {
            for actor in [
                Actor::Admin,
                Actor::Creator,
                Actor::OtherUser,
                Actor::ReadOnly,
                Actor::Guest,
            ] {
                for op in [Op::List, Op::Get, Op::Create, Op::Update, Op::Delete] {
                    let want = expected(mode, actor, op);
                    let ctx = format!("{} {object}({mode}) {actor:?} {op:?}", backend.name());
                    // A fresh row by the creator for every case, so cases never interact.
                    let (s, made) = app
                        .post(
                            &format!("/1/objects/{object}"),
                            &creator.cred(),
                            json!({ "title": "original" }),
                        )
                        .await;
                    assert_eq!(s, 200, "{ctx}: setup {made}");
                    let id = made["__metadata"]["id"].as_str().unwrap().to_string();
                    let row_path = format!("/1/objects/{object}/{id}");
                    let before = app.all_rows(object).await.len();
                    let c = cred(actor);
                    match op {
                        Op::List => {
                            let (s, body) = app
                                .get(&format!("/1/objects/{object}?pageSize=1000"), &c)
                                .await;
                            if want == 403 {
                                assert_eq!(s, 403, "{ctx}: {body}");
                                assert!(
                                    body["Message"].as_str().unwrap().contains("may not read"),
                                    "{ctx}: {body}"
                                );
                            } else {
                                assert_eq!(s, 200, "{ctx}: {body}");
                                let listed = body["data"].as_array().unwrap().iter().any(|r| {
                                    r["id"].as_i64().map(|v| v.to_string()).as_deref()
                                        == Some(id.as_str())
                                });
                                assert_eq!(listed, want == 200, "{ctx}: {body}");
                                let total = body["totalRows"].as_i64().unwrap() as usize;
                                assert_eq!(total, body["data"].as_array().unwrap().len(), "{ctx}");
                            }
                        }
                        Op::Get => {
                            let (s, body) = app.get(&row_path, &c).await;
                            assert_eq!(s, want, "{ctx}: {body}");
                            if s == 200 {
                                assert_eq!(body["title"], "original", "{ctx}");
                            }
                        }
                        Op::Create => {
                            let (s, body) = app
                                .post(
                                    &format!("/1/objects/{object}"),
                                    &c,
                                    json!({ "title": "new" }),
                                )
                                .await;
                            assert_eq!(s, want, "{ctx}: {body}");
                            let after = app.all_rows(object).await.len();
                            assert_eq!(after, before + usize::from(s == 200), "{ctx}: row count");
                        }
                        Op::Update => {
                            let (s, body) =
                                app.put(&row_path, &c, json!({ "title": "changed" })).await;
                            assert_eq!(s, want, "{ctx}: {body}");
                            let (_, stored) = app.get(&row_path, &master()).await;
                            let want_title = if s == 200 { "changed" } else { "original" };
                            assert_eq!(stored["title"], want_title, "{ctx}: stored row");
                        }
                        Op::Delete => {
                            let (s, body) = app.delete(&row_path, &c).await;
                            assert_eq!(s, want, "{ctx}: {body}");
                            let (exists, _) = app.get(&row_path, &master()).await;
                            assert_eq!(
                                exists,
                                if s == 200 { 404 } else { 200 },
                                "{ctx}: row after delete"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 75, "every case ran");
    }
}

#[tokio::test]
async fn objects_without_permissions_are_admin_only() {
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema(
                "secret.json",
                json!({ "name": "secret", "fields": { "x": { "type": "int" } } }),
            )
            .start()
            .await;
        let user = app.user("u@t.io", "User").await;
        let path = "/1/objects/secret";
        assert_eq!(
            app.get(path, &user.cred()).await.0,
            403,
            "{}",
            backend.name()
        );
        assert_eq!(app.post(path, &user.cred(), json!({ "x": 1 })).await.0, 403);
        assert_eq!(app.get(path, &Cred::Anonymous(ANON.into())).await.0, 403);
        assert!(
            app.all_rows("secret").await.is_empty(),
            "refused create wrote nothing"
        );
        let admin = app.admin().await;
        assert_eq!(
            app.post(path, &admin.cred(), json!({ "x": 1 })).await.0,
            200
        );
        assert_eq!(app.get(path, &admin.cred()).await.0, 200);
    }
}

#[tokio::test]
async fn users_object_protects_roles_and_other_users() {
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema(
                "users.json",
                json!({
                    "name": "users",
                    "fields": { "nickname": { "type": "string" } },
                    "permissions": { "read": ["User"], "update": ["User"] },
                    "rowSecurity": "owner"
                }),
            )
            .start()
            .await;
        let alice = app.user("alice@t.io", "User").await;
        let bob = app.user("bob@t.io", "User").await;
        let name = backend.name();

        // Each user sees only their own users row.
        let (s, list) = app.get("/1/objects/users", &alice.cred()).await;
        assert_eq!(s, 200, "{name}: {list}");
        let ids: Vec<i64> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![alice.id], "{name}");
        let bob_path = format!("/1/objects/users/{}", bob.id);
        assert_eq!(app.get(&bob_path, &alice.cred()).await.0, 404, "{name}");
        assert_eq!(
            app.put(&bob_path, &alice.cred(), json!({ "nickname": "x" }))
                .await
                .0,
            404,
            "{name}"
        );

        // A user may edit their own profile fields but not promote themselves.
        let alice_path = format!("/1/objects/users/{}", alice.id);
        let (s, body) = app
            .put(&alice_path, &alice.cred(), json!({ "nickname": "al" }))
            .await;
        assert_eq!(s, 200, "{name}: {body}");
        let (s, body) = app
            .put(&alice_path, &alice.cred(), json!({ "role": "Admin" }))
            .await;
        assert_eq!(s, 403, "{name}: {body}");
        let (_, stored) = app.get(&alice_path, &master()).await;
        assert_eq!(stored["role"], "User", "{name}: role unchanged");
        assert_eq!(stored["nickname"], "al", "{name}");

        // Admin may change roles, and the new role takes effect on the next request.
        let admin = app.admin().await;
        let (s, body) = app
            .put(&alice_path, &admin.cred(), json!({ "role": "ReadOnly" }))
            .await;
        assert_eq!(s, 200, "{name}: {body}");
        let (s, profile) = app.get("/api/account/profile", &alice.cred()).await;
        assert_eq!(s, 200);
        assert_eq!(profile["role"], "ReadOnly", "{name}: role change visible");
        let (s, body) = app
            .put(&alice_path, &admin.cred(), json!({ "role": "Wizard" }))
            .await;
        assert_eq!(s, 400, "{name}: unknown role: {body}");
    }
}
