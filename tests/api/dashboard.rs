//! The dashboard at `/_/`: its files are served with a policy that keeps other
//! people's rows from running as script, and the one API it added (`/1/admin/schema`)
//! answers Admins only and shows no secret.

use serde_json::json;

use crate::common::*;

const FILES: [(&str, &str); 9] = [
    ("/_/", "text/html"),
    ("/_/app.css", "text/css"),
    ("/_/app.js", "text/javascript"),
    ("/_/ui.js", "text/javascript"),
    ("/_/data.js", "text/javascript"),
    ("/_/actions.js", "text/javascript"),
    ("/_/live.js", "text/javascript"),
    ("/_/sockets.js", "text/javascript"),
    ("/_/health.js", "text/javascript"),
];

#[tokio::test]
async fn every_file_is_served_with_a_strict_policy_and_holds_no_secret() {
    let backend = Backend::Sqlite;
    let app = Spawn::new(&backend).start().await;
    for (path, content_type) in FILES {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        let text = response.text().await.unwrap();
        for secret in [
            MASTER,
            ANON,
            SIGNUP,
            JWT_SECRET,
            ADMIN_PASSWORD,
            ADMIN_USER_TOKEN,
        ] {
            assert!(!text.contains(secret), "{path} holds a secret");
        }
        // Rows are rendered as text nodes only: no file parses strings as HTML.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!text.contains(sink), "{path} uses {sink}");
        }
    }
    let response = app.client.get(app.url("/_")).send().await.unwrap();
    assert_eq!(response.status(), 200, "/_ leads to /_/");
    assert_eq!(response.url().path(), "/_/");

    for missing in ["/_/nope.js", "/_/..%2fCargo.toml", "/_/index.html.bak"] {
        let (status, body) = app.get(missing, &Cred::None).await;
        assert_eq!(status, 404, "{missing}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("no dashboard file")
        );
    }
}

#[tokio::test]
async fn the_schema_is_described_to_admins_only() {
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema(
                "notes.json",
                json!({ "name": "notes",
                        "fields": { "title": { "type": "string", "required": true, "maxLength": 80 },
                                    "body": { "type": "text" },
                                    "author": { "type": "user" } },
                        "permissions": { "read": ["User"], "create": ["User"], "update": ["User"],
                                         "delete": ["Admin"] },
                        "rowSecurity": "owner" }),
            )
            .start()
            .await;
        let user = app.user("ann@example.com", "User").await;
        assert_eq!(
            app.get("/1/admin/schema", &Cred::None).await.0,
            401,
            "{}",
            backend.name()
        );
        assert_eq!(
            app.get("/1/admin/schema", &Cred::Anonymous(ANON.into()))
                .await
                .0,
            403
        );
        let (status, body) = app.get("/1/admin/schema", &user.cred()).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["Message"].as_str().unwrap().contains("Admin"));

        let admin = app.admin().await;
        for cred in [admin.cred(), master()] {
            let (status, body) = app.get("/1/admin/schema", &cred).await;
            assert_eq!(status, 200, "{body}");
            let notes = body["objects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == "notes")
                .expect("notes is described")
                .clone();
            assert_eq!(notes["rowSecurity"], "owner");
            assert_eq!(notes["permissions"]["read"], json!(["User"]));
            assert_eq!(notes["permissions"]["delete"], json!(["Admin"]));
            let field = |name: &str| {
                notes["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["name"] == name)
                    .cloned()
                    .unwrap_or_else(|| panic!("field {name} in {notes}"))
            };
            assert_eq!(field("title")["type"], "string");
            assert_eq!(field("title")["required"], true);
            assert_eq!(field("title")["maxLength"], 80);
            assert_eq!(field("author")["type"], "user");
            assert_eq!(field("author")["object"], "users");
            assert!(body["roles"].as_array().unwrap().contains(&json!("Admin")));
            let users = body["objects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == "users")
                .expect("users is described")
                .to_string();
            for hidden in ["password", "hash", "token"] {
                assert!(!users.to_lowercase().contains(hidden), "{users}");
            }
        }
    }
}
