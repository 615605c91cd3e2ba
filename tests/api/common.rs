//! Test harness: a real livebase on 127.0.0.1:0 with its own temporary data directory
//! and, for PostgreSQL, its own freshly created database (dropped afterwards).

use std::sync::Arc;

use livebase::config::Config;
use livebase::http::AppState;
use livebase::records::WriteHook;
use reqwest::Method;
use serde_json::{Value, json};

pub const MASTER: &str = "master-token-for-tests";
pub const ANON: &str = "anonymous-token-for-tests";
pub const SIGNUP: &str = "signup-token-for-tests";
pub const JWT_SECRET: &str = "jwt-secret-for-tests-0123456789";
pub const ADMIN_EMAIL: &str = "admin@test.local";
pub const ADMIN_PASSWORD: &str = "admin-password";
pub const ADMIN_USER_TOKEN: &str = "admin-user-token";

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// SQLite always; PostgreSQL when `LIVEBASE_TEST_POSTGRES_URL` is set (else says so).
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    match std::env::var("LIVEBASE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => all.push(Backend::Postgres(url)),
        _ => {
            // Once per run, and past libtest's capture (which only takes the print
            // macros), so the skip is visible in a passing run too.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = std::io::stderr().write_all(
                    b"note: PostgreSQL tests skipped (set LIVEBASE_TEST_POSTGRES_URL to run them)\n",
                );
            });
        }
    }
    all
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Cred {
    None,
    Bearer(String),
    Basic(String, String),
    Anonymous(String),
    Raw(String),
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub password: String,
    pub token: String,
}

impl User {
    pub fn cred(&self) -> Cred {
        Cred::Bearer(self.token.clone())
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub backend: Backend,
    pub data_dir: tempfile::TempDir,
    pub schema_dir: std::path::PathBuf,
    pub database_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    pg_database: Option<(String, String)>,
}

/// A change to the test configuration, applied just before the server is built.
pub type ConfigTweak<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

pub struct Spawn<'a> {
    pub backend: &'a Backend,
    pub schema: Vec<(String, String)>,
    /// `(path under actions/, code)`.
    pub actions: Vec<(String, String)>,
    /// `(file under queries/, text)`.
    pub queries: Vec<(String, String)>,
    pub hooks: Vec<Arc<dyn WriteHook>>,
    pub tweak: Option<ConfigTweak<'a>>,
}

impl<'a> Spawn<'a> {
    pub fn new(backend: &'a Backend) -> Self {
        Spawn {
            backend,
            schema: Vec::new(),
            actions: Vec::new(),
            queries: Vec::new(),
            hooks: Vec::new(),
            tweak: None,
        }
    }

    pub fn schema(mut self, file: &str, body: Value) -> Self {
        self.schema.push((file.to_string(), body.to_string()));
        self
    }

    /// An action file, e.g. `("items/beforeCreate/check.js", "function backandCallback…")`.
    pub fn action(mut self, path: &str, code: &str) -> Self {
        self.actions.push((path.to_string(), code.to_string()));
        self
    }

    /// A named query file, e.g. `("by_role.sql", "-- roles: User\nSELECT …")`.
    pub fn query(mut self, file: &str, text: &str) -> Self {
        self.queries.push((file.to_string(), text.to_string()));
        self
    }

    pub fn hook(mut self, hook: Arc<dyn WriteHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    pub fn config(mut self, f: impl FnOnce(&mut Config) + 'a) -> Self {
        self.tweak = Some(Box::new(f));
        self
    }

    pub async fn start(self) -> TestApp {
        self.try_start().await.expect("server builds")
    }

    /// Starts the server, or returns the error its build stops with (`{e:#}`).
    pub async fn try_start(self) -> Result<TestApp, String> {
        let data_dir = tempfile::tempdir().unwrap();
        let schema_dir = data_dir.path().join("schema");
        std::fs::create_dir_all(&schema_dir).unwrap();
        for (file, body) in &self.schema {
            std::fs::write(schema_dir.join(file), body).unwrap();
        }
        let actions_dir = data_dir.path().join("actions");
        for (file, code) in &self.actions {
            let path = actions_dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, code).unwrap();
        }
        let queries_dir = data_dir.path().join("queries");
        for (file, text) in &self.queries {
            let path = queries_dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let (database_url, pg_database) = match self.backend {
            Backend::Sqlite => (
                format!("sqlite://{}", data_dir.path().join("t.db").display()),
                None,
            ),
            Backend::Postgres(admin_url) => {
                let name = format!("lbt_{}", rand_suffix());
                exec_pg(admin_url, &format!("CREATE DATABASE {name}")).await;
                (
                    with_database(admin_url, &name),
                    Some((admin_url.clone(), name)),
                )
            }
        };
        let mut config = test_config(data_dir.path(), &schema_dir, &database_url);
        if let Some(tweak) = self.tweak {
            tweak(&mut config);
        }
        let stored = Stored {
            backend: self.backend.clone(),
            data_dir,
            schema_dir,
            database_url,
            pg_database,
        };
        serve(config, self.hooks, stored).await
    }
}

/// What a test server keeps on disk and in its database, which a restart starts on again.
struct Stored {
    backend: Backend,
    data_dir: tempfile::TempDir,
    schema_dir: std::path::PathBuf,
    database_url: String,
    pg_database: Option<(String, String)>,
}

/// Builds a server from `config` on `stored` and serves it on a random port.
async fn serve(
    config: Config,
    hooks: Vec<Arc<dyn WriteHook>>,
    stored: Stored,
) -> Result<TestApp, String> {
    let Stored {
        backend,
        data_dir,
        schema_dir,
        database_url,
        pg_database,
    } = stored;
    let app = match livebase::server::build(config, hooks).await {
        Ok(app) => app,
        Err(e) => {
            drop(DropDatabase(pg_database));
            return Err(format!("{e:#}"));
        }
    };
    let state = app.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        livebase::server::serve(listener, app, async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    // The TLS tests turn on reqwest's rustls (without a built-in crypto provider),
    // after which every client in this binary needs a process-wide provider.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    Ok(TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        state,
        backend,
        data_dir,
        schema_dir,
        database_url,
        shutdown: Some(tx),
        server: Some(server),
        pg_database,
    })
}

pub fn test_config(data_dir: &std::path::Path, schema_dir: &std::path::Path, url: &str) -> Config {
    let mut config = Config::default_with(data_dir.to_path_buf(), schema_dir.to_path_buf());
    config.database_url = Some(url.to_string());
    config.master_token = Some(MASTER.into());
    config.anonymous_token = Some(ANON.into());
    config.signup_token = Some(SIGNUP.into());
    config.jwt_secret = Some(JWT_SECRET.into());
    config.admin_email = ADMIN_EMAIL.into();
    config.admin_password = Some(ADMIN_PASSWORD.into());
    config.admin_user_token = Some(ADMIN_USER_TOKEN.into());
    config.db_pool_size = 4;
    // Tests sign in from one address many times a second; `auth::rate_limits` turns
    // the per-address limit back on where it is the subject.
    config.auth_rate_per_minute = 0;
    // Every test client comes from loopback; the cap has its own tests.
    config.max_connections_per_address = 0;
    // Never the repository's example actions: each test writes its own.
    config.actions_dir = data_dir.join("actions");
    config.queries_dir = data_dir.join("queries");
    config
}

pub fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000, n)
}

/// `postgres://u@h:p/db?x` → same URL on database `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    format!("{base}/{name}{query}")
}

pub async fn exec_pg(url: &str, statement: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("postgres reachable");
    sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Drops a PostgreSQL test database when it goes out of scope, even in a panic. A
/// fresh runtime on its own thread, because Drop cannot await on the test's.
pub struct DropDatabase(pub Option<(String, String)>);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.0.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(exec_pg(
                    &admin,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ));
            })
            .join();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        drop(DropDatabase(self.pg_database.take()));
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// This server as an `Endpoint` (what a node of a cluster is too).
    pub fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            client: &self.client,
            base: &self.base,
        }
    }

    /// Sends a request and returns (status, JSON body or the text as a JSON string).
    pub async fn req(
        &self,
        method: Method,
        path: &str,
        cred: &Cred,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.endpoint().req(method, path, cred, body).await
    }

    pub async fn get(&self, path: &str, cred: &Cred) -> (u16, Value) {
        self.req(Method::GET, path, cred, None).await
    }

    pub async fn post(&self, path: &str, cred: &Cred, body: Value) -> (u16, Value) {
        self.req(Method::POST, path, cred, Some(body)).await
    }

    pub async fn put(&self, path: &str, cred: &Cred, body: Value) -> (u16, Value) {
        self.req(Method::PUT, path, cred, Some(body)).await
    }

    pub async fn delete(&self, path: &str, cred: &Cred) -> (u16, Value) {
        self.req(Method::DELETE, path, cred, None).await
    }

    /// `POST /token` with the password grant, form-encoded as the Backand SDK sends it.
    pub async fn login(&self, email: &str, password: &str) -> (u16, Value) {
        self.endpoint().login(email, password).await
    }

    pub async fn admin(&self) -> User {
        self.endpoint().admin().await
    }

    /// A user with `role`, created by the master token and signed in.
    pub async fn user(&self, email: &str, role: &str) -> User {
        self.endpoint().user(email, role).await
    }

    /// The rows of `object` straight from the database's point of view (as master).
    pub async fn all_rows(&self, object: &str) -> Vec<Value> {
        let (status, body) = self
            .get(
                &format!("/1/objects/{object}?pageSize=1000"),
                &Cred::Basic(MASTER.into(), ADMIN_USER_TOKEN.into()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    pub async fn stop(
        mut self,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        String,
        Option<(String, String)>,
    ) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.state.store.close().await;
        let dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap());
        (
            dir,
            self.schema_dir.clone(),
            self.database_url.clone(),
            self.pg_database.take(),
        )
    }
}

impl TestApp {
    /// Stops this server (as `stop` does: its sockets are closed) and starts a new one
    /// on the same data directory and database, with `tweak` applied to the test
    /// configuration as `Spawn::config` would: what a process restart keeps.
    pub async fn restart(self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let backend = self.backend.clone();
        let (data_dir, schema_dir, database_url, pg_database) = self.stop().await;
        let mut config = test_config(data_dir.path(), &schema_dir, &database_url);
        tweak(&mut config);
        let stored = Stored {
            backend,
            data_dir,
            schema_dir,
            database_url,
            pg_database,
        };
        serve(config, Vec::new(), stored)
            .await
            .expect("server builds again on its data")
    }
}

/// Sends a request and returns (status, JSON body or the text as a JSON string).
pub async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    cred: &Cred,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = with_cred(client.request(method, url), cred);
    if let Some(body) = body {
        rb = rb.json(&body);
    }
    let resp = rb.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Adds the headers that carry `cred` to a request.
pub fn with_cred(rb: reqwest::RequestBuilder, cred: &Cred) -> reqwest::RequestBuilder {
    match cred {
        Cred::None => rb,
        Cred::Bearer(t) => rb.header("Authorization", format!("Bearer {t}")),
        Cred::Basic(m, u) => rb.header("Authorization", basic_header(m, u)),
        Cred::Anonymous(t) => rb.header("AnonymousToken", t),
        Cred::Raw(h) => rb.header("Authorization", h),
    }
}

pub fn master() -> Cred {
    Cred::Basic(MASTER.into(), ADMIN_USER_TOKEN.into())
}

/// Percent-encodes text for a query parameter.
pub fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// URL-encodes a JSON value for a query parameter.
pub fn q(value: &Value) -> String {
    enc(&value.to_string())
}

/// `Basic base64(master:userToken)`, as the Backand SDK sends it.
pub fn basic_header(master: &str, user_token: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{master}:{user_token}"));
    format!("Basic {b64}")
}

/// The sum of the `/metrics` samples of `name` whose labels include every one of
/// `labels` (`key="value"`); 0 when there are none.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl TestApp {
    /// `GET /metrics` as text.
    pub async fn metrics_text(&self) -> String {
        let resp = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.unwrap()
    }
}

/// The id in a create answer's `__metadata`.
pub fn id_of(created: &Value) -> i64 {
    created["__metadata"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no __metadata.id in {created}"))
        .parse()
        .unwrap()
}

impl TestApp {
    /// The row as REST returns it to the master token (it must exist).
    pub async fn row(&self, object: &str, id: i64) -> Value {
        self.endpoint().row(object, id).await
    }
}

/// One server reached over HTTP, in-process (`TestApp::endpoint`) or a node of a cluster
/// of real binaries started with the test secrets (`MASTER`, `ADMIN_EMAIL`, …).
#[derive(Clone, Copy)]
pub struct Endpoint<'a> {
    pub client: &'a reqwest::Client,
    pub base: &'a str,
}

impl Endpoint<'_> {
    /// Sends a request and returns (status, JSON body or the text as a JSON string).
    pub async fn req(
        &self,
        method: Method,
        path: &str,
        cred: &Cred,
        body: Option<Value>,
    ) -> (u16, Value) {
        send(
            self.client,
            method,
            &format!("{}{path}", self.base),
            cred,
            body,
        )
        .await
    }

    /// `POST /token` with the password grant, form-encoded as the Backand SDK sends it.
    pub async fn login(&self, email: &str, password: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/token", self.base))
            .form(&[
                ("grant_type", "password"),
                ("username", email),
                ("password", password),
                ("appName", "livebase"),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin(&self) -> User {
        let (status, body) = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(status, 200, "admin login: {body}");
        User {
            id: body["userId"].as_str().unwrap().parse().unwrap(),
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
            token: body["access_token"].as_str().unwrap().into(),
        }
    }

    /// A user with `role`, created by the master token and signed in.
    pub async fn user(&self, email: &str, role: &str) -> User {
        let password = format!("pw-{email}");
        let (status, body) = self
            .req(
                Method::POST,
                "/1/objects/users",
                &master(),
                Some(json!({ "email": email, "role": role, "password": password, "firstName": email })),
            )
            .await;
        assert_eq!(status, 200, "create user {email}: {body}");
        let (status, login) = self.login(email, &password).await;
        assert_eq!(status, 200, "login {email}: {login}");
        User {
            id: body["__metadata"]["id"].as_str().unwrap().parse().unwrap(),
            email: email.into(),
            password,
            token: login["access_token"].as_str().unwrap().into(),
        }
    }

    /// The row as REST returns it to the master token (it must exist).
    pub async fn row(&self, object: &str, id: i64) -> Value {
        let (status, body) = self
            .req(
                Method::GET,
                &format!("/1/objects/{object}/{id}"),
                &master(),
                None,
            )
            .await;
        assert_eq!(status, 200, "GET {object}/{id}: {body}");
        body
    }
}

/// A `join` ack without the member's public id (checked to be there), for comparing the
/// rest exactly; other acks pass unchanged.
pub fn without_sid(ack: &Value) -> Value {
    let mut ack = ack.clone();
    if let Some(map) = ack.as_object_mut()
        && let Some(sid) = map.remove("sid")
    {
        assert!(
            sid.as_str().is_some_and(|s| !s.is_empty()),
            "a public id: {sid}"
        );
    }
    ack
}
