//! What one client connection may hold: a request head must arrive in time, one address
//! may hold only so many connections, a refused body is answered 413 where its sender
//! can read it, and every rejection — axum's own extractors' included — is
//! `{"Message": …}`.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{ADMIN_USER_TOKEN, Cred, MASTER, Spawn, backends, basic_header};

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Everything the server sends until it closes the connection (or `wait` runs out).
async fn read_all(tcp: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let done = tokio::time::timeout(wait, tcp.read_to_end(&mut got)).await;
    done.ok()?.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

fn json_body(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {answer}"))
}

#[tokio::test]
async fn a_request_head_that_never_finishes_is_cut() {
    let app = Spawn::new(&backends()[0])
        .config(|c| c.header_read_timeout_ms = 500)
        .start()
        .await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(addr(&app.base)).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(tcp);
    }
    for tcp in &mut slow {
        let closed = read_all(tcp, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "a half-sent request head is closed within the timeout"
        );
    }
    // A client that sends its request in time is served as before.
    let (status, _) = app.get("/healthz", &Cred::None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let app = Spawn::new(&backends()[0])
        .config(|c| c.max_connections_per_address = 3)
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&app.base)).await.unwrap());
    }
    let mut fourth = TcpStream::connect(addr(&app.base)).await.unwrap();
    let answer = read_all(&mut fourth, Duration::from_secs(5))
        .await
        .expect("the refusal, then close");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let message = json_body(&answer)["Message"].as_str().unwrap().to_string();
    assert!(message.contains("too many connections"), "{message}");
    // Giving one back makes room again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut tcp = TcpStream::connect(addr(&app.base)).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_all(&mut tcp, Duration::from_secs(5))
            .await
            .unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slot came back: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_oversized_body_is_answered_413_after_it_was_sent() {
    let app = Spawn::new(&backends()[0])
        .config(|c| c.max_body_bytes = 4096)
        .start()
        .await;
    for path in [
        "/1/objects/items",
        "/1/function/general/anything",
        "/1/action/config",
    ] {
        let body = "x".repeat(64 * 1024 * 1024);
        let mut tcp = TcpStream::connect(addr(&app.base)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            basic_header(MASTER, ADMIN_USER_TOKEN),
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        // The whole body goes through: the server reads it rather than resetting.
        tcp.write_all(body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{path}: the body could not be sent: {e}"));
        let mut got = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut got))
            .await
            .expect("an answer")
            .expect("readable");
        let answer = String::from_utf8_lossy(&got[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{answer}"
        );
        let message = json_body(&answer)["Message"].as_str().unwrap().to_string();
        assert!(message.contains("larger"), "{path}: {message}");
    }
}

#[tokio::test]
async fn extractor_rejections_answer_in_the_error_shape() {
    let app = Spawn::new(&backends()[0])
        .config(|c| c.max_body_bytes = 4096)
        .start()
        .await;
    let admin = basic_header(MASTER, ADMIN_USER_TOKEN);
    for path in [
        "/1/objects/%FF",
        "/1/objects/items/%FF",
        "/1/function/general/%C0",
        "/1/action/config/%FF",
        "/1/objects/action/%FF",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("authorization", &admin)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(kind.starts_with("application/json"), "{path}: {kind}");
        assert!(
            body["Message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
    // A chunked body over the limit (no Content-Length) on an on-demand route.
    let mut tcp = TcpStream::connect(addr(&app.base)).await.unwrap();
    let mut request = format!(
        "POST /1/function/general/anything HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..8 {
        request.push_str(&format!("400\r\n{}\r\n", "x".repeat(1024)));
    }
    request.push_str("0\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let answer = read_all(&mut tcp, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(json_body(&answer)["Message"].is_string(), "{answer}");
}
