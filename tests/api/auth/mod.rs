//! Who may call: the `/token` grants (password and refresh), Bearer / Basic /
//! AnonymousToken credentials, sign-up, sign-out, password change and reset, and what
//! is never revealed (password hashes). Shared helpers live here; the tests are in
//! `tokens` (grants and credentials) and `accounts` (sign-up and account flows).

mod accounts;
mod rate_limits;
mod tokens;

use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::common::*;

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 JWT over `claims`, signed with `secret`.
fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Claims shaped as livebase issues them.
fn claims(user_id: i64, kind: &str, app: &str, iat: u64, exp: u64) -> Value {
    json!({ "sub": user_id.to_string(), "tv": 0, "kind": kind, "app": app, "iat": iat, "exp": exp })
}

/// The claims of a token livebase issued, checked against the test secret.
fn decode(token: &str) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap_or_else(|e| panic!("token {token} does not verify with JWT_SECRET: {e}"))
    .claims
}

/// The 401 every unusable bearer token gets; the Backand SDK refreshes on this text.
fn invalid_token() -> Value {
    json!({ "Message": "invalid or expired token" })
}

/// A refused `/token` request: `Message` plus the OAuth fields token clients read.
fn grant_refused(message: &str) -> Value {
    json!({ "Message": message, "error": "invalid_grant", "error_description": message })
}

async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// `POST /token`, form-encoded as the Backand SDK sends it.
async fn token_form(app: &TestApp, fields: &[(&str, &str)]) -> (u16, Value) {
    answer(
        app.client
            .post(app.url("/token"))
            .form(fields)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `POST /1/user/signup` with an optional `SignUpToken` header.
async fn signup(app: &TestApp, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut rb = app.client.post(app.url("/1/user/signup")).json(&body);
    if let Some(token) = token {
        rb = rb.header("SignUpToken", token);
    }
    answer(rb.send().await.unwrap()).await
}

/// A user created by the master token with a chosen password and names; returns the id.
async fn create_user(
    app: &TestApp,
    email: &str,
    role: &str,
    password: &str,
    first: &str,
    last: &str,
) -> i64 {
    let (status, body) = app
        .post(
            "/1/objects/users",
            &master(),
            json!({ "email": email, "role": role, "password": password,
                    "firstName": first, "lastName": last }),
        )
        .await;
    assert_eq!(
        status,
        200,
        "{}: create {email}: {body}",
        app.backend.name()
    );
    body["__metadata"]["id"].as_str().unwrap().parse().unwrap()
}

/// Signs in and returns the `/token` answer, asserting success.
async fn login_ok(app: &TestApp, email: &str, password: &str) -> Value {
    let (status, body) = app.login(email, password).await;
    assert_eq!(
        status,
        200,
        "{}: login {email}/{password}: {body}",
        app.backend.name()
    );
    body
}

fn text(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {v}"))
        .to_string()
}

/// A user's user token (Backand's "user key"), read from the database: no API shows it.
async fn user_token(app: &TestApp, user_id: i64) -> String {
    livebase::auth::credentials::user_token(&app.state.store, user_id)
        .await
        .unwrap()
        .expect("the user has a credentials row")
}

/// Moves a pending reset token's expiry (unix seconds).
async fn set_reset_expires(app: &TestApp, user_id: i64, expires: i64) {
    use livebase::schema::value::SqlValue;
    let store = &app.state.store;
    let mut sql = store.sql();
    sql.push("UPDATE lb_credentials SET reset_expires = ")
        .bind(SqlValue::Int(expires))
        .push(" WHERE user_id = ")
        .bind(SqlValue::Int(user_id));
    let affected = store.execute(&sql).await.unwrap();
    assert_eq!(affected, 1, "{}: no credentials row", app.backend.name());
}

async fn user_count(app: &TestApp) -> usize {
    app.all_rows("users").await.len()
}

/// Fails if `value` holds, at any depth, a key naming a password or hash, or an argon2
/// hash as a value.
fn assert_no_secrets(value: &Value, context: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let k = key.to_ascii_lowercase();
                assert!(
                    !k.contains("password") && !k.contains("hash"),
                    "{context}: field `{key}` must not be returned: {value}"
                );
                assert_no_secrets(v, context);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| assert_no_secrets(v, context)),
        Value::String(s) => assert!(
            !s.starts_with("$argon2"),
            "{context}: a password hash is returned: {s}"
        ),
        _ => {}
    }
}

fn things_schema() -> Value {
    json!({
        "name": "things",
        "fields": { "name": { "type": "string" } },
        "permissions": { "read": ["Admin", "User", "ReadOnly"], "create": ["Admin", "User"],
                         "update": ["Admin", "User"], "delete": ["Admin"] }
    })
}

/// Collects the `reset_token` field of log events emitted on this thread while alive.
#[derive(Clone, Default)]
struct ResetTokens(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ResetTokens {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Find(Option<String>);
        impl tracing::field::Visit for Find {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "reset_token" {
                    self.0 = Some(value.to_string());
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "reset_token" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut find = Find(None);
        event.record(&mut find);
        if let Some(token) = find.0 {
            self.0.lock().unwrap().push(token);
        }
    }
}

impl ResetTokens {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

// ---------------------------------------------------------------------------------------
// POST /token: the password grant
// ---------------------------------------------------------------------------------------

async fn get_at(base: &str, path: &str, header: (&str, String)) -> (u16, Value) {
    answer(
        reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header(header.0, header.1)
            .send()
            .await
            .unwrap(),
    )
    .await
}
