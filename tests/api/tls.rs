//! `--tls-cert`/`--tls-key`: the listener serves HTTPS and WSS itself (rustls), checked
//! with real TLS clients (reqwest on rustls, and tokio-tungstenite over a rustls
//! stream) that trust only a certificate made for the test.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livebase::config::Config;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Backend, Cred, Spawn, TestApp, test_config};
use crate::sio::PATIENCE;

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
struct TestCert {
    dir: tempfile::TempDir,
    der: CertificateDer<'static>,
}

impl TestCert {
    fn new() -> Self {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names).expect("a certificate");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), signing_key.serialize_pem()).unwrap();
        TestCert {
            dir,
            der: cert.der().clone(),
        }
    }

    fn apply(&self, c: &mut Config) {
        c.tls_cert = Some(self.dir.path().join("cert.pem"));
        c.tls_key = Some(self.dir.path().join("key.pem"));
    }

    /// A client configuration that trusts this certificate and nothing else.
    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        client_config(roots)
    }
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn https_client(tls: Arc<ClientConfig>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// Starts livebase with TLS and points the test client at it over HTTPS.
async fn start_tls(cert: &TestCert) -> TestApp {
    let backend = Backend::Sqlite;
    let mut app = crate::realtime::objects(Spawn::new(&backend))
        .config(|c| cert.apply(c))
        .start()
        .await;
    app.base = app.base.replacen("http://", "https://", 1);
    app.client = https_client(cert.client_config());
    app
}

fn port(app: &TestApp) -> u16 {
    app.base.rsplit(':').next().unwrap().parse().unwrap()
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A WebSocket over TLS to the Socket.IO endpoint, through a bare rustls stream.
async fn wss(port: u16, tls: Arc<ClientConfig>) -> std::io::Result<Wss> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await?;
    let url = format!("wss://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(std::io::Error::other)?;
    Ok(ws)
}

/// The next text frame that is not an engine.io ping (pings are answered).
async fn next_text(ws: &mut Wss) -> String {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection stays open")
            .expect("a good frame");
        if let Message::Text(t) = frame {
            if t.as_str() == "2" {
                ws.send(Message::Text("3".into())).await.unwrap();
                continue;
            }
            return t.to_string();
        }
    }
}

#[tokio::test]
async fn https_and_wss_serve_the_api_and_realtime_with_the_given_certificate() {
    let cert = TestCert::new();
    let app = start_tls(&cert).await;

    // REST over HTTPS: health, sign-in, a write.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_11);
    let alice = app.user("alice@tls.test", "User").await;

    // Socket.IO over WSS: authenticate, join the notes channel, receive a write's event.
    let mut ws = wss(port(&app), cert.client_config())
        .await
        .expect("WSS connects");
    assert!(next_text(&mut ws).await.starts_with('0'), "engine.io open");
    let auth = json!({ "token": alice.token });
    ws.send(Message::Text(format!("40{auth}").into()))
        .await
        .unwrap();
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40{"), "connected: {connected}");
    ws.send(Message::Text(r#"421["join","db-notes"]"#.into()))
        .await
        .unwrap();
    let ack = next_text(&mut ws).await;
    assert!(ack.starts_with("431"), "join ack: {ack}");
    let (status, body) = app
        .post(
            "/1/objects/notes",
            &alice.cred(),
            json!({ "title": "over TLS" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let event = next_text(&mut ws).await;
    let payload: Value = serde_json::from_str(event.trim_start_matches("42")).unwrap();
    assert_eq!(payload[0], "db_created", "db event over WSS: {event}");
    assert_eq!(
        payload[1]["data"]["title"], "over TLS",
        "db event over WSS: {event}"
    );
}

#[tokio::test]
async fn plain_http_and_untrusting_clients_get_nothing_from_a_tls_listener() {
    let cert = TestCert::new();
    let app = start_tls(&cert).await;

    // Plain HTTP to the TLS port: no HTTP response (the handshake fails and it closes).
    let mut tcp = TcpStream::connect(("127.0.0.1", port(&app))).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&got)
    );

    // A client that does not trust the certificate refuses it, for HTTPS and for WSS.
    let stranger = client_config(RootCertStore::empty());
    let refused = https_client(stranger.clone())
        .get(app.url("/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");
    assert!(wss(port(&app), stranger).await.is_err());

    // The server is unharmed by both.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn stalled_handshakes_do_not_hold_up_other_clients() {
    let cert = TestCert::new();
    let app = start_tls(&cert).await;
    // Connections that never send a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(TcpStream::connect(("127.0.0.1", port(&app))).await.unwrap());
    }
    let started = std::time::Instant::now();
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // Generous: it must not have waited for the stalled handshakes' 10 s limit.
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(stalled);
    let (status, _) = app
        .get(
            "/1/objects/notes",
            &Cred::Basic(
                crate::common::MASTER.into(),
                crate::common::ADMIN_USER_TOKEN.into(),
            ),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_bad_certificate_or_key_stops_the_start_with_a_message_naming_the_file() {
    let cert = TestCert::new();
    let other = TestCert::new();
    let data = tempfile::tempdir().unwrap();
    let schema = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.path().join("db.sqlite").display());
    type Tweak<'a> = Box<dyn Fn(&mut Config) + 'a>;
    let cases: Vec<(&str, Tweak, &str)> = vec![
        (
            "missing certificate file",
            Box::new(|c: &mut Config| {
                cert.apply(c);
                c.tls_cert = Some(cert.dir.path().join("nope.pem"));
            }),
            "nope.pem",
        ),
        (
            "a key where the certificate should be",
            Box::new(|c: &mut Config| {
                cert.apply(c);
                c.tls_cert = c.tls_key.clone();
            }),
            "holds no PEM certificate",
        ),
        (
            "a certificate where the key should be",
            Box::new(|c: &mut Config| {
                cert.apply(c);
                c.tls_key = c.tls_cert.clone();
            }),
            "no PEM private key",
        ),
        (
            "a key that belongs to another certificate",
            Box::new(|c: &mut Config| {
                cert.apply(c);
                c.tls_key = Some(other.dir.path().join("key.pem"));
            }),
            "do not make a usable certificate and key",
        ),
    ];
    for (case, tweak, expected) in cases {
        let mut config = test_config(data.path(), schema.path(), &url);
        tweak(&mut config);
        let error = match livebase::server::build(config, Vec::new()).await {
            Ok(_) => panic!("{case}: the server started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains(expected), "{case}: {error}");
    }
    // Nothing was created before the certificate was checked.
    assert!(!data.path().join("db.sqlite").exists());
}
