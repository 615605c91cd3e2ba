//! Health, metrics, CORS for browser apps, and JSON answers for routes that do not exist.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn health_and_metrics_report_on_requests_and_the_pool() {
    let backend = Backend::Sqlite;
    let app = Spawn::new(&backend).start().await;
    let (status, body) = app.get("/healthz", &Cred::None).await;
    let node = app.state.node.id.clone();
    assert_eq!(
        (status, body),
        (200, json!({ "status": "ok", "node": node }))
    );

    // A refused request and a served one, so both show up by status.
    assert_eq!(app.get("/1/objects/users", &Cred::None).await.0, 401);
    assert_eq!(app.get("/1/objects/users", &master()).await.0, 200);
    let text = app.metrics_text().await;
    for needle in [
        r#"livebase_http_requests_total{method="GET",route="/1/objects/{object}",status="401"}"#,
        r#"livebase_http_requests_total{method="GET",route="/1/objects/{object}",status="200"}"#,
        "livebase_http_request_duration_seconds_bucket",
        "livebase_db_pool_connections ",
        "livebase_db_pool_idle_connections ",
        r#"livebase_record_writes_total{object="users",verb="created"}"#,
    ] {
        assert!(text.contains(needle), "metrics lack `{needle}`:\n{text}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let backend = Backend::Sqlite;
    let app = Spawn::new(&backend).start().await;
    let (status, body) = app.get("/no/such/route", &Cred::None).await;
    assert_eq!(status, 404);
    assert_eq!(body["Message"], "no route for GET /no/such/route");
    let (status, body) = app
        .req(Method::PATCH, "/token", &Cred::None, Some(json!({})))
        .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["Message"], "PATCH is not allowed on /token");
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url("/1/objects/items"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,anonymoustoken,signuptoken,appname,content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_allows_the_backand_headers_from_configured_origins() {
    let backend = Backend::Sqlite;
    let any = Spawn::new(&backend).start().await;
    let resp = preflight(&any, "https://app.example").await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    // Credentialed requests (socket.io 2.x polling) need the origin itself, never `*`.
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_varies_by_origin(h);
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for header in [
        "authorization",
        "anonymoustoken",
        "signuptoken",
        "appname",
        "content-type",
    ] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("DELETE")
    );

    let listed = Spawn::new(&backend)
        .config(|c| c.cors_origins = "https://good.example, https://also.example".into())
        .start()
        .await;
    let resp = preflight(&listed, "https://good.example").await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    let resp = preflight(&listed, "https://evil.example").await;
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "an unlisted origin must not be allowed: {:?}",
        resp.headers()
    );

    // Socket.IO long-polling (how browser clients start) is cross-origin HTTP too, and
    // each answer carries the header exactly once.
    for origin in ["https://good.example", "https://evil.example"] {
        let resp = listed
            .client
            .get(listed.url("/socket.io/?EIO=4&transport=polling"))
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let allowed: Vec<_> = resp
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .collect();
        if origin == "https://good.example" {
            assert_eq!(allowed, ["https://good.example"], "{origin}");
            assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
            assert_varies_by_origin(resp.headers());
        } else {
            assert!(allowed.is_empty(), "{origin}: {allowed:?}");
        }
        assert!(
            resp.text().await.unwrap().starts_with("0{"),
            "engine.io open"
        );
    }
    let rest = listed
        .client
        .get(listed.url("/healthz"))
        .header("Origin", "https://good.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rest.headers()
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
    assert_eq!(rest.headers()["access-control-allow-credentials"], "true");
    assert_varies_by_origin(rest.headers());

    // With the default `*`, polling from any origin is answered with that origin.
    let resp = any
        .client
        .get(any.url("/socket.io/?EIO=3&transport=polling"))
        .header("Origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
}

/// A cache must not hand one origin's answer to another.
fn assert_varies_by_origin(headers: &reqwest::header::HeaderMap) {
    let vary: Vec<String> = headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_lowercase())
        .collect();
    assert!(
        vary.iter()
            .any(|v| v.split(',').any(|h| h.trim() == "origin")),
        "Vary: {vary:?}"
    );
}

/// Several nodes share one PostgreSQL database; with SQLite each would serve its own
/// file, so a second node would quietly serve other data.
#[tokio::test]
async fn a_redis_url_with_sqlite_is_refused_naming_the_database_flag() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema");
    std::fs::create_dir_all(&schema).unwrap();
    let mut config = livebase::config::Config::default_with(dir.path().join("data"), schema);
    config.redis_url = Some("redis://127.0.0.1:6379".into());
    let Err(e) = livebase::server::build(config, Vec::new()).await else {
        panic!("a server with --redis-url and SQLite was built");
    };
    let text = e.to_string();
    assert!(
        text.contains("--redis-url needs --database-url postgres://"),
        "{text}"
    );
    // Refused before anything was written.
    assert!(!dir.path().join("data").exists(), "nothing written");
}

/// An unreachable Redis stops the start before the database is touched, naming the
/// flag and never the password.
#[tokio::test]
async fn an_unreachable_redis_is_refused_before_anything_is_written() {
    let Some(url) = std::env::var("LIVEBASE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipped: LIVEBASE_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema");
    std::fs::create_dir_all(&schema).unwrap();
    let mut config = livebase::config::Config::default_with(dir.path().join("data"), schema);
    config.database_url = Some(url);
    config.redis_url = Some("redis://:hunter2@127.0.0.1:1".into());
    let Err(e) = livebase::server::build(config, Vec::new()).await else {
        panic!("a server with an unreachable Redis was built");
    };
    let text = e.to_string();
    assert!(
        text.contains("--redis-url") && text.contains("cannot connect"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "the password was shown: {text}");
    assert!(!dir.path().join("data").exists(), "nothing written");
}

/// The Backand docs' set-up step loads `/socket.io/socket.io.js` from the server: it is
/// socket.io-client's own build, with socket.io's headers and revalidation.
#[tokio::test]
async fn the_socket_io_browser_client_is_served_beside_the_sockets() {
    let app = Spawn::new(&Backend::Sqlite).start().await;
    let get = |path: &str, etag: Option<String>| {
        let mut request = app.client.get(app.url(path));
        if let Some(tag) = etag {
            request = request.header("If-None-Match", tag);
        }
        request.send()
    };
    let version = livebase::http::client_script::VERSION;
    for (path, kind, starts) in [
        (
            "/socket.io/socket.io.js",
            "application/javascript",
            "/*!\n * Socket.IO v",
        ),
        (
            "/socket.io/socket.io.min.js",
            "application/javascript",
            "/*!\n * Socket.IO v",
        ),
        (
            "/socket.io/socket.io.esm.min.js",
            "application/javascript",
            "/*!\n * Socket.IO v",
        ),
        ("/socket.io/socket.io.js.map", "application/json", "{"),
        ("/socket.io/socket.io.min.js.map", "application/json", "{"),
    ] {
        let resp = get(path, None).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {:?}",
            h["content-type"]
        );
        assert_eq!(h["etag"], format!("\"{version}\""), "{path}");
        assert_eq!(h["cache-control"], "public, max-age=0", "{path}");
        let body = resp.text().await.unwrap();
        assert!(body.starts_with(starts), "{path}: {}", &body[..40]);
        if !path.ends_with(".map") {
            assert!(body.contains(&format!("Socket.IO v{version}")), "{path}");
        }
    }
    // Revalidation answers 304 with no body, for the tag and its weak form.
    for tag in [format!("\"{version}\""), format!("W/\"{version}\"")] {
        let resp = get("/socket.io/socket.io.min.js", Some(tag.clone()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 304, "{tag}");
        assert!(resp.text().await.unwrap().is_empty());
    }
    let stale = get("/socket.io/socket.io.min.js", Some("\"1.0.0\"".into()))
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    // Other paths under /socket.io/ are still engine.io's, and sockets still connect.
    let other = get("/socket.io/socket.io.msgpack.min.js", None)
        .await
        .unwrap();
    assert_eq!(other.status(), 400);
    let poll = get("/socket.io/?EIO=4&transport=polling", None)
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);
    assert!(poll.text().await.unwrap().starts_with("0{"));
}

#[tokio::test]
async fn sails_io_js_cookie_route_answers_its_jsonp_callback_and_sets_no_cookie() {
    let app = Spawn::new(&Backend::Sqlite).start().await;
    let response = reqwest::Client::new()
        .get(app.url("/__getcookie"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript"),
        "{headers:?}"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.get("set-cookie").is_none(), "{headers:?}");
    assert_eq!(response.text().await.unwrap(), "_sailsIoJSConnect();");
}
