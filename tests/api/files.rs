//! Backand's `files` action: upload (base64 with a filename), serving by URL, removal
//! by filename, with the object's permissions, a size limit, and names that never
//! become paths. Requests are shaped as `@backand/vanilla-sdk` 1.2.15 sends them.

use std::path::{Path, PathBuf};

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, Cred, Spawn, TestApp, backends, master, with_cred};

const ACTION: &str = "/1/objects/action/items?name=files";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `items`: users read, create and delete; `guarded` adds owner security; `locked`
/// lets only Admin create; `open` lets anonymous callers read.
async fn spawn(backend: &Backend, max_file: Option<usize>, max_body: Option<usize>) -> TestApp {
    let object = |name: &str, extra: Value| {
        let mut o = json!({ "name": name, "fields": { "name": { "type": "string" } },
            "permissions": { "read": ["Admin", "User", "ReadOnly"], "create": ["Admin", "User"],
                             "update": ["Admin", "User"], "delete": ["Admin", "User"] } });
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    };
    Spawn::new(backend)
        .schema("items.json", object("items", json!({})))
        .schema(
            "guarded.json",
            object("guarded", json!({ "rowSecurity": "owner" })),
        )
        .schema(
            "locked.json",
            object(
                "locked",
                json!({ "permissions": { "read": ["User"], "create": ["Admin"] } }),
            ),
        )
        .schema(
            "open.json",
            object(
                "open",
                json!({ "permissions": { "read": ["Public", "User"], "create": ["User"] } }),
            ),
        )
        .config(move |c| {
            if let Some(n) = max_file {
                c.max_file_bytes = n;
            }
            if let Some(n) = max_body {
                c.max_body_bytes = n;
            }
        })
        .start()
        .await
}

/// Every regular file under the data directory's `files/`.
fn files_on_disk(app: &TestApp) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.data_dir.path().join("files"), &mut out);
    out
}

async fn upload(
    app: &TestApp,
    object: &str,
    cred: &Cred,
    filename: &str,
    data: &[u8],
) -> (u16, Value) {
    app.post(
        &format!("/1/objects/action/{object}?name=files"),
        cred,
        json!({ "filename": filename, "filedata": b64(data) }),
    )
    .await
}

async fn remove(app: &TestApp, object: &str, cred: &Cred, filename: &str) -> (u16, Value) {
    app.req(
        Method::DELETE,
        &format!("/1/objects/action/{object}?name=files"),
        cred,
        Some(json!({ "filename": filename })),
    )
    .await
}

/// GET of a file URL (absolute or a path): status, headers, bytes.
async fn fetch(
    app: &TestApp,
    url: &str,
    cred: &Cred,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let url = if url.starts_with("http") {
        url.to_string()
    } else {
        app.url(url)
    };
    let resp = with_cred(app.client.get(url), cred).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn files_upload_serve_and_remove_round_trip() {
    for backend in &backends() {
        let app = spawn(backend, None, None).await;
        let user = app.user("alice@x.test", "User").await;
        let cred = user.cred();
        // Several read chunks long, every byte value.
        let data: Vec<u8> = (0..=255u8).cycle().take(200_003).collect();
        // As the SDK sends it: `data:…;base64,` stripped, the rest in `filedata`.
        let (status, body) = upload(&app, "items", &cred, "Holiday Photo.PNG", &data).await;
        assert_eq!(status, 200, "{}: {body}", backend.name());
        let url = body["url"].as_str().expect("a url").to_string();
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        let prefix = format!("{}/1/files/items/", app.base);
        assert!(url.starts_with(&prefix), "{url}");
        let stored = &url[prefix.len()..];
        assert!(stored.ends_with(".png") && stored.len() == 36, "{stored}");
        let on_disk = files_on_disk(&app);
        assert_eq!(
            on_disk,
            vec![app.data_dir.path().join("files/items").join(stored)]
        );
        assert_eq!(std::fs::read(&on_disk[0]).unwrap(), data);

        let (status, headers, bytes) = fetch(&app, &url, &cred).await;
        assert_eq!(status, 200);
        assert_eq!(bytes, data, "the exact bytes");
        assert_eq!(header(&headers, "content-length"), "200003");
        assert_eq!(header(&headers, "content-type"), "image/png");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(header(&headers, "content-security-policy"), "sandbox");
        assert!(
            header(&headers, "content-disposition")
                .starts_with("inline; filename=\"Holiday Photo.PNG\""),
            "{headers:?}"
        );

        // A second file of the same name is a second file, not an overwrite.
        let (status, second) = upload(&app, "items", &cred, "Holiday Photo.PNG", b"two").await;
        assert_eq!(status, 200, "{second}");
        assert_ne!(second["url"], body["url"]);
        assert_eq!(files_on_disk(&app).len(), 2);

        let (status, body) = remove(&app, "items", &cred, "Holiday Photo.PNG").await;
        assert_eq!((status, &body), (200, &json!({ "removed": 2 })), "{body}");
        let (status, _, bytes) = fetch(&app, &url, &cred).await;
        assert_eq!(status, 404);
        let message: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            message["Message"].as_str().unwrap().contains("no file"),
            "{message}"
        );
        assert!(files_on_disk(&app).is_empty(), "{:?}", files_on_disk(&app));
        let (status, body) = remove(&app, "items", &cred, "Holiday Photo.PNG").await;
        assert_eq!(status, 404, "{body}");
    }
}

#[tokio::test]
async fn files_bad_names_and_bodies_are_refused_and_nothing_is_written() {
    for backend in &backends() {
        let app = spawn(backend, Some(1000), Some(4096)).await;
        let cred = app.user("alice@x.test", "User").await.cred();
        let long = "x".repeat(256);
        let cases: Vec<(Value, u16, &str)> = vec![
            (
                json!({ "filename": "../x", "filedata": "aGk=" }),
                400,
                "slash",
            ),
            (
                json!({ "filename": "a/b", "filedata": "aGk=" }),
                400,
                "slash",
            ),
            (
                json!({ "filename": "a\\b", "filedata": "aGk=" }),
                400,
                "slash",
            ),
            (json!({ "filename": "..", "filedata": "aGk=" }), 400, "`..`"),
            (
                json!({ "filename": "a\u{0}b", "filedata": "aGk=" }),
                400,
                "NUL",
            ),
            (
                json!({ "filename": "a\nb", "filedata": "aGk=" }),
                400,
                "control",
            ),
            (json!({ "filename": "", "filedata": "aGk=" }), 400, "empty"),
            (json!({ "filename": long, "filedata": "aGk=" }), 400, "255"),
            (
                json!({ "filename": "a.txt", "filedata": "not base64!" }),
                400,
                "base64",
            ),
            (json!({ "filename": "a.txt" }), 400, "filedata"),
            (
                json!({ "filename": "a.txt", "filedata": 7 }),
                400,
                "filedata",
            ),
            (
                json!({ "filename": "a.txt", "filedata": "aGk=", "x": 1 }),
                400,
                "unknown field",
            ),
            (json!(["a.txt"]), 400, "JSON object"),
            // One byte over the file limit: refused from its length, before decoding.
            (
                json!({ "filename": "a.bin", "filedata": b64(&[7; 1001]) }),
                413,
                "1001 bytes",
            ),
            // Over the upload body limit (the base64 of 1000 bytes plus room).
            (
                json!({ "filename": "a.bin", "filedata": "A".repeat(8000) }),
                413,
                "larger than",
            ),
        ];
        for (body, want, says) in cases {
            let (status, answer) = app.post(ACTION, &cred, body.clone()).await;
            assert_eq!(status, want, "{}: {body} → {answer}", backend.name());
            let message = answer["Message"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{body} → {message}");
        }
        let (status, answer) = app
            .req(
                Method::DELETE,
                ACTION,
                &cred,
                Some(json!({ "filename": "../x" })),
            )
            .await;
        assert_eq!(status, 400, "{answer}");
        assert!(files_on_disk(&app).is_empty(), "{:?}", files_on_disk(&app));
        // Exactly the limit is fine, and needs a body over `--max-body-bytes` (4096).
        let (status, answer) = upload(&app, "items", &cred, "a.bin", &[7; 1000]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(files_on_disk(&app).len(), 1);
        // Other routes keep `--max-body-bytes`.
        let (status, _) = app
            .post(
                "/1/objects/items",
                &cred,
                json!({ "name": "x".repeat(5000) }),
            )
            .await;
        assert_eq!(status, 413);
    }
}

#[tokio::test]
async fn files_follow_the_objects_permissions() {
    for backend in &backends() {
        let app = spawn(backend, None, None).await;
        let alice = app.user("alice@x.test", "User").await.cred();
        let bob = app.user("bob@x.test", "User").await.cred();
        let reader = app.user("reader@x.test", "ReadOnly").await.cred();
        let anon = Cred::Anonymous(crate::common::ANON.into());

        // Create permission: only Admin may store on `locked`.
        let (status, body) = upload(&app, "locked", &alice, "a.txt", b"hi").await;
        assert_eq!(status, 403, "{body}");
        assert!(files_on_disk(&app).is_empty());
        let (status, body) = upload(&app, "nosuch", &alice, "a.txt", b"hi").await;
        assert_eq!(status, 404, "{body}");

        // Owner security: bob can neither read nor remove alice's file.
        let (status, body) = upload(&app, "guarded", &alice, "secret.txt", b"alice's").await;
        assert_eq!(status, 200, "{body}");
        let url = body["url"].as_str().unwrap().to_string();
        let (status, _, _) = fetch(&app, &url, &bob).await;
        assert_eq!(status, 404, "{}: another user's file", backend.name());
        let (status, body) = remove(&app, "guarded", &bob, "secret.txt").await;
        assert_eq!(status, 404, "{body}");
        let (status, _, bytes) = fetch(&app, &url, &alice).await;
        assert_eq!((status, bytes.as_slice()), (200, &b"alice's"[..]));
        let (status, _, _) = fetch(&app, &url, &master()).await;
        assert_eq!(status, 200, "Admin reads every file");
        let (status, _, _) = fetch(&app, &url, &anon).await;
        assert_eq!(status, 403, "Public may not read `guarded`");
        let (status, _, _) = fetch(&app, &url, &Cred::None).await;
        assert_eq!(status, 403, "no credentials is a guest");
        let (status, _, _) = fetch(&app, &url, &Cred::Bearer("forged".into())).await;
        assert_eq!(status, 401, "bad credentials are never a guest");

        // Delete permission: a ReadOnly user reads but may not remove.
        let (status, body) = upload(&app, "items", &alice, "shared.txt", b"shared").await;
        assert_eq!(status, 200, "{body}");
        let shared = body["url"].as_str().unwrap().to_string();
        let (status, _, _) = fetch(&app, &shared, &reader).await;
        assert_eq!(status, 200);
        let (status, body) = remove(&app, "items", &reader, "shared.txt").await;
        assert_eq!(status, 403, "{body}");
        // Without row security, delete on every row removes anyone's file of that name.
        let (status, body) = remove(&app, "items", &bob, "shared.txt").await;
        assert_eq!((status, &body), (200, &json!({ "removed": 1 })), "{body}");

        // Anonymous reads where the app lets Public read, with no header (`<img src>`).
        let (status, body) = upload(&app, "open", &alice, "logo.gif", b"GIF89a").await;
        assert_eq!(status, 200, "{body}");
        let logo = body["url"].as_str().unwrap();
        let (status, headers, bytes) = fetch(&app, logo, &Cred::None).await;
        assert_eq!((status, bytes.as_slice()), (200, &b"GIF89a"[..]));
        assert_eq!(header(&headers, "content-type"), "image/gif");
        let (status, body) = upload(&app, "open", &anon, "x.txt", b"x").await;
        assert_eq!(status, 403, "Public may not create on `open`: {body}");
        assert_eq!(files_on_disk(&app).len(), 2, "alice's secret and the logo");
    }
}

#[tokio::test]
async fn files_that_could_run_script_are_downloads_in_a_sandbox() {
    let backend = &backends()[0];
    let app = spawn(backend, None, None).await;
    let cred = app.user("alice@x.test", "User").await.cred();
    let script = b"<html><script>alert(document.domain)</script></html>";
    for (filename, disposition) in [
        ("page.html", "attachment; filename=\"page.html\""),
        ("image.svg", "attachment; filename=\"image.svg\""),
        ("no-extension", "attachment; filename=\"no-extension\""),
        (
            "naïve \"q\".htm",
            "attachment; filename=\"na_ve _q_.htm\"; filename*=UTF-8''na%C3%AFve%20%22q%22%2Ehtm",
        ),
    ] {
        let (status, body) = upload(&app, "items", &cred, filename, script).await;
        assert_eq!(status, 200, "{body}");
        let (status, headers, bytes) = fetch(&app, body["url"].as_str().unwrap(), &cred).await;
        assert_eq!((status, bytes.as_slice()), (200, &script[..]), "{filename}");
        assert_eq!(
            header(&headers, "content-type"),
            "application/octet-stream",
            "{filename}"
        );
        assert!(
            header(&headers, "content-disposition").starts_with(disposition),
            "{filename}: {headers:?}"
        );
        assert_eq!(header(&headers, "content-security-policy"), "sandbox");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    }
}

#[tokio::test]
async fn files_crafted_names_never_reach_the_disk() {
    let backend = &backends()[0];
    let app = spawn(backend, None, None).await;
    let cred = app.user("alice@x.test", "User").await.cred();
    // A file outside the files directory, and one inside with a valid-looking name
    // but no record: neither may be served.
    std::fs::write(app.data_dir.path().join("outside.txt"), "outside").unwrap();
    let planted = "0123456789abcdef0123456789abcdef.txt";
    let dir = app.data_dir.path().join("files/items");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(planted), "planted").unwrap();
    let (status, body) = upload(&app, "items", &cred, "real.txt", b"real").await;
    assert_eq!(status, 200, "{body}");
    let real = body["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    for path in [
        format!("/1/files/items/{planted}"),
        "/1/files/items/..%2f..%2foutside.txt".to_string(),
        "/1/files/items/..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        "/1/files/items/%2e%2e%2f%2e%2e%2foutside.txt".to_string(),
        format!("/1/files/items/{}", real.to_uppercase()),
        format!("/1/files/items/{real}%00"),
        format!("/1/files/items/{real}.."),
        format!("/1/files/guarded/{real}"),
    ] {
        let (status, headers, bytes) = fetch(&app, &path, &cred).await;
        assert_eq!(status, 404, "{path}: {}", String::from_utf8_lossy(&bytes));
        assert!(
            header(&headers, "content-type").starts_with("application/json"),
            "{path}"
        );
    }
    for path in ["/1/files/..%2fitems/x", "/1/files/items/a/b"] {
        let (status, _, _) = fetch(&app, path, &cred).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, bytes) = fetch(&app, &format!("/1/files/items/{real}"), &cred).await;
    assert_eq!((status, bytes.as_slice()), (200, &b"real"[..]));
}

#[tokio::test]
async fn files_action_methods_and_an_apps_own_files_action() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .schema(
            "items.json",
            json!({ "name": "items", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["User"], "create": ["User"], "delete": ["User"] } }),
        )
        .schema(
            "mine.json",
            json!({ "name": "mine", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["User"], "create": ["User"] } }),
        )
        .action(
            "items/onDemand/echo.js",
            "function backandCallback(userInput) { return { echoed: userInput }; }",
        )
        .action(
            "mine/onDemand/files.js",
            "function backandCallback(userInput) { return { own: userInput.filename }; }",
        )
        .start()
        .await;
    let cred = app.user("alice@x.test", "User").await.cred();
    let (status, body) = app
        .req(
            Method::DELETE,
            "/1/objects/action/items?name=echo",
            &cred,
            None,
        )
        .await;
    assert_eq!(status, 405, "{body}");
    assert!(
        body["Message"].as_str().unwrap().contains("`files`"),
        "{body}"
    );
    let (status, body) = app.get(ACTION, &cred).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = app
        .post(
            "/1/objects/action/items?name=echo",
            &cred,
            json!({ "a": 1 }),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({ "echoed": { "a": 1 } })));
    // The app's own `files` action on `mine` runs instead of the built-in one.
    let (status, body) = upload(&app, "mine", &cred, "a.txt", b"x").await;
    assert_eq!((status, &body), (200, &json!({ "own": "a.txt" })), "{body}");
    assert!(files_on_disk(&app).is_empty());
}

#[tokio::test]
async fn files_action_answers_socket_requests_through_the_same_handlers() {
    let backend = &backends()[0];
    let app = spawn(backend, None, None).await;
    let alice = app.user("alice@x.test", "User").await;
    let socket = crate::sio::Sio::with_token(&app.base, &alice.token).await;
    let ack = socket
        .call(
            "post",
            json!({ "url": ACTION, "data": { "filename": "via-socket.txt", "filedata": b64(b"sock") } }),
        )
        .await;
    assert_eq!(ack["statusCode"], 200, "{ack}");
    // No Host on a virtual request: the URL is the path.
    let url = ack["body"]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("/1/files/items/"), "{url}");
    let (status, _, bytes) = fetch(&app, &url, &alice.cred()).await;
    assert_eq!((status, bytes.as_slice()), (200, &b"sock"[..]));
    let ack = socket
        .call(
            "delete",
            json!({ "url": ACTION, "data": { "filename": "via-socket.txt" } }),
        )
        .await;
    assert_eq!(ack["statusCode"], 200, "{ack}");
    assert_eq!(ack["body"], json!({ "removed": 1 }));
    assert!(files_on_disk(&app).is_empty());
    // Over HTTP too, for clients that cannot send a DELETE body.
    let (status, body) = upload(&app, "items", &alice.cred(), "q.txt", b"q").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .req(
            Method::DELETE,
            &format!("{ACTION}&filename=q.txt"),
            &alice.cred(),
            None,
        )
        .await;
    assert_eq!((status, &body), (200, &json!({ "removed": 1 })), "{body}");
    assert!(files_on_disk(&app).is_empty());
}
