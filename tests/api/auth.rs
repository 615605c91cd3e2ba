//! Who may call: the `/token` grants (password and refresh), Bearer / Basic /
//! AnonymousToken credentials, sign-up, sign-out, password change and reset, and what
//! is never revealed (password hashes, whether an account exists).

use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sqlx::Connection;

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
    const SQL: &str = "SELECT user_token FROM lb_credentials WHERE user_id = $1";
    match &app.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.database_url)
                .await
                .unwrap();
            sqlx::query_scalar::<_, String>(SQL)
                .bind(user_id)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Backend::Postgres(_) => {
            let mut c = sqlx::PgConnection::connect(&app.database_url)
                .await
                .unwrap();
            sqlx::query_scalar::<_, String>(SQL)
                .bind(user_id)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

/// Moves a pending reset token's expiry (unix seconds).
async fn set_reset_expires(app: &TestApp, user_id: i64, expires: i64) {
    const SQL: &str = "UPDATE lb_credentials SET reset_expires = $1 WHERE user_id = $2";
    let affected = match &app.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.database_url)
                .await
                .unwrap();
            sqlx::query(SQL)
                .bind(expires)
                .bind(user_id)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected()
        }
        Backend::Postgres(_) => {
            let mut c = sqlx::PgConnection::connect(&app.database_url)
                .await
                .unwrap();
            sqlx::query(SQL)
                .bind(expires)
                .bind(user_id)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected()
        }
    };
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

#[tokio::test]
async fn password_grant_answers_the_backand_token_shape_form_and_json() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let id = create_user(&app, "ann@x.io", "User", "ann-secret", "Ann", "Lee").await;

        // Form-encoded, with the case of the email not mattering.
        let (status, form) = token_form(
            &app,
            &[
                ("grant_type", "password"),
                ("username", "Ann@X.io"),
                ("password", "ann-secret"),
                ("appName", "livebase"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{be}: form grant: {form}");
        // JSON, without appName (the SDK may omit it).
        let (status, js) = app
            .post(
                "/token",
                &Cred::None,
                json!({ "grant_type": "password", "username": "ann@x.io", "password": "ann-secret" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: JSON grant: {js}");

        for body in [&form, &js] {
            let keys: Vec<&str> = body
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            for key in [
                "access_token",
                "token_type",
                "expires_in",
                "refresh_token",
                "username",
                "role",
                "userId",
                "firstName",
                "lastName",
                "fullName",
                "appName",
            ] {
                assert!(keys.contains(&key), "{be}: `{key}` missing from {body}");
            }
            assert_eq!(body["token_type"], "bearer", "{be}: {body}");
            assert_eq!(body["expires_in"], 3600, "{be}: {body}");
            assert_eq!(body["username"], "ann@x.io", "{be}: {body}");
            assert_eq!(body["role"], "User", "{be}: {body}");
            assert_eq!(body["userId"], id.to_string(), "{be}: {body}");
            assert_eq!(body["firstName"], "Ann", "{be}: {body}");
            assert_eq!(body["lastName"], "Lee", "{be}: {body}");
            assert_eq!(body["fullName"], "Ann Lee", "{be}: {body}");
            assert_eq!(body["appName"], "livebase", "{be}: {body}");
            assert_no_secrets(body, &format!("{be}: /token answer"));

            let access = decode(&text(body, "access_token"));
            assert_eq!(access["sub"], id.to_string(), "{be}: {access}");
            assert_eq!(access["kind"], "access", "{be}: {access}");
            assert_eq!(access["app"], "livebase", "{be}: {access}");
            let lifetime = access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap();
            assert_eq!(lifetime, 3600, "{be}: access lifetime");
            let refresh = decode(&text(body, "refresh_token"));
            assert_eq!(refresh["kind"], "refresh", "{be}: {refresh}");
            assert_eq!(refresh["sub"], id.to_string(), "{be}: {refresh}");
            assert!(
                refresh["exp"].as_u64().unwrap() > access["exp"].as_u64().unwrap(),
                "{be}: a refresh token outlives the access token"
            );

            let (status, profile) = app
                .get(
                    "/api/account/profile",
                    &Cred::Bearer(text(body, "access_token")),
                )
                .await;
            assert_eq!(status, 200, "{be}: {profile}");
            assert_eq!(profile["username"], "ann@x.io", "{be}: {profile}");
        }
    }
}

#[tokio::test]
async fn password_grant_refusals_name_the_problem_and_do_not_reveal_accounts() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let bad_login = grant_refused("invalid username or password");

        let (status, wrong_password) = app.login(ADMIN_EMAIL, "not-the-password").await;
        assert_eq!(status, 400, "{be}: wrong password: {wrong_password}");
        assert_eq!(wrong_password, bad_login, "{be}: wrong password");
        let (status, unknown_user) = app.login("nobody@x.io", "not-the-password").await;
        assert_eq!(status, 400, "{be}: unknown user: {unknown_user}");
        assert_eq!(
            unknown_user, wrong_password,
            "{be}: an unknown user and a wrong password must be indistinguishable"
        );
        // The same over JSON.
        let (status, body) = app
            .post(
                "/token",
                &Cred::None,
                json!({ "username": ADMIN_EMAIL, "password": "nope-nope" }),
            )
            .await;
        assert_eq!((status, body), (400, bad_login.clone()), "{be}: JSON");

        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[("grant_type", "password"), ("password", ADMIN_PASSWORD)],
                "`username` is required",
            ),
            (
                &[("grant_type", "password"), ("username", ADMIN_EMAIL)],
                "`password` is required",
            ),
            (&[], "`username` is required"),
            (
                &[
                    ("grant_type", "password"),
                    ("username", ADMIN_EMAIL),
                    ("password", ADMIN_PASSWORD),
                    ("appName", "someone-elses-app"),
                ],
                "unknown appName `someone-elses-app`",
            ),
            (
                &[
                    ("grant_type", "client_credentials"),
                    ("username", ADMIN_EMAIL),
                    ("password", ADMIN_PASSWORD),
                ],
                "unsupported grant_type `client_credentials` (use password or refresh_token)",
            ),
            (
                &[("grant_type", "refresh_token")],
                "`refresh_token` is required",
            ),
        ];
        for (fields, message) in cases {
            let (status, body) = token_form(&app, fields).await;
            assert_eq!(status, 400, "{be}: {fields:?}: {body}");
            assert_eq!(body, grant_refused(message), "{be}: {fields:?}");
        }
        // A wrong type in JSON.
        let (status, body) = app
            .post(
                "/token",
                &Cred::None,
                json!({ "username": ADMIN_EMAIL, "password": 12345678 }),
            )
            .await;
        assert_eq!(status, 400, "{be}: numeric password: {body}");
        assert_eq!(body, grant_refused("`password` must be a string"), "{be}");

        // A user with no password set cannot sign in, and is not told so either.
        let (status, body) = app
            .post(
                "/1/objects/users",
                &master(),
                json!({ "email": "nopass@x.io", "role": "User" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: user without password: {body}");
        for password in ["", "anything-at-all"] {
            let (status, body) = app.login("nopass@x.io", password).await;
            assert_eq!(
                (status, body),
                (400, bad_login.clone()),
                "{be}: passwordless user with `{password}`"
            );
        }

        // None of that stopped the real password from working.
        login_ok(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    }
}

// ---------------------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_grants_issue_working_tokens_and_refuse_anything_else() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let first = login_ok(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let refresh = text(&first, "refresh_token");
        let admin_id: i64 = text(&first, "userId").parse().unwrap();

        // Backand style: grant_type=password with refreshToken (and the username).
        let (status, backand) = token_form(
            &app,
            &[
                ("grant_type", "password"),
                ("refreshToken", &refresh),
                ("username", ADMIN_EMAIL),
                ("appName", "livebase"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{be}: Backand refresh: {backand}");
        // OAuth style.
        let (status, oauth) = token_form(
            &app,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
        assert_eq!(status, 200, "{be}: OAuth refresh: {oauth}");
        // And as JSON.
        let (status, js) = app
            .post(
                "/token",
                &Cred::None,
                json!({ "grant_type": "refresh_token", "refresh_token": refresh }),
            )
            .await;
        assert_eq!(status, 200, "{be}: JSON refresh: {js}");

        for body in [&backand, &oauth, &js] {
            assert_eq!(body["username"], ADMIN_EMAIL, "{be}: {body}");
            assert_eq!(body["role"], "Admin", "{be}: {body}");
            assert_eq!(body["userId"], admin_id.to_string(), "{be}: {body}");
            assert_eq!(body["token_type"], "bearer", "{be}: {body}");
            let (status, profile) = app
                .get(
                    "/api/account/profile",
                    &Cred::Bearer(text(body, "access_token")),
                )
                .await;
            assert_eq!(status, 200, "{be}: refreshed token: {profile}");
            assert_eq!(profile["username"], ADMIN_EMAIL, "{be}: {profile}");
            // The refresh token that came with it is itself a refresh token.
            assert_eq!(decode(&text(body, "refresh_token"))["kind"], "refresh");
        }

        // An access token is not a refresh token.
        let access = text(&first, "access_token");
        for fields in [
            vec![("grant_type", "refresh_token"), ("refresh_token", &*access)],
            vec![("grant_type", "password"), ("refreshToken", &*access)],
        ] {
            let (status, body) = token_form(&app, &fields).await;
            assert_eq!(status, 401, "{be}: access token as refresh: {body}");
            assert_eq!(body, grant_refused("invalid refresh token"), "{be}");
        }
        // Garbage, a truncated token, one signed elsewhere.
        let forged = sign(
            "another-secret-entirely-000000",
            &claims(admin_id, "refresh", "livebase", now(), now() + 600),
        );
        let truncated = &refresh[..refresh.len() - 4];
        for garbage in ["garbage", "a.b.c", truncated, &forged] {
            let (status, body) = token_form(
                &app,
                &[("grant_type", "refresh_token"), ("refresh_token", garbage)],
            )
            .await;
            assert_eq!(status, 401, "{be}: refresh with {garbage}: {body}");
            assert_eq!(body, grant_refused("invalid refresh token"), "{be}");
        }
        // An expired refresh token says so.
        let expired = sign(
            JWT_SECRET,
            &claims(admin_id, "refresh", "livebase", now() - 7200, now() - 3600),
        );
        let (status, body) = token_form(
            &app,
            &[("grant_type", "refresh_token"), ("refresh_token", &expired)],
        )
        .await;
        assert_eq!(status, 401, "{be}: expired refresh: {body}");
        assert_eq!(body, grant_refused("refresh token expired"), "{be}");
        // A well-signed, current refresh token for another app.
        let other_app = sign(
            JWT_SECRET,
            &claims(admin_id, "refresh", "other-app", now(), now() + 600),
        );
        let (status, body) = token_form(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &other_app),
            ],
        )
        .await;
        assert_eq!(status, 401, "{be}: other app's refresh: {body}");
        assert_eq!(body, grant_refused("invalid or expired token"), "{be}");
    }
}

// ---------------------------------------------------------------------------------------
// Bearer tokens
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bearer_tokens_work_until_they_do_not() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let id = create_user(&app, "cat@x.io", "User", "cat-secret", "Cat", "Stevens").await;
        let tokens = login_ok(&app, "cat@x.io", "cat-secret").await;
        let access = text(&tokens, "access_token");

        let (status, profile) = app
            .get("/api/account/profile", &Cred::Bearer(access.clone()))
            .await;
        assert_eq!(status, 200, "{be}: {profile}");
        assert_eq!(
            profile,
            json!({
                "username": "cat@x.io", "firstName": "Cat", "lastName": "Stevens",
                "fullName": "Cat Stevens", "role": "User", "userId": id.to_string(),
                "appName": "livebase",
            }),
            "{be}: profile"
        );
        // The scheme name is case-insensitive, as in HTTP.
        let (status, body) = app
            .get(
                "/api/account/profile",
                &Cred::Raw(format!("bearer {access}")),
            )
            .await;
        assert_eq!(status, 200, "{be}: lowercase scheme: {body}");

        // A token signed here by the test with the server's secret works: the claims
        // below are the real shape, so the refusals that follow are about what differs.
        let ours = sign(
            JWT_SECRET,
            &claims(id, "access", "livebase", now(), now() + 600),
        );
        let (status, body) = app.get("/api/account/profile", &Cred::Bearer(ours)).await;
        assert_eq!(status, 200, "{be}: self-signed good token: {body}");
        assert_eq!(body["username"], "cat@x.io", "{be}: {body}");

        let expired = sign(
            JWT_SECRET,
            &claims(id, "access", "livebase", now() - 3600, now() - 120),
        );
        let other_secret = sign(
            "another-secret-entirely-000000",
            &claims(id, "access", "livebase", now(), now() + 600),
        );
        let other_app = sign(
            JWT_SECRET,
            &claims(id, "access", "other-app", now(), now() + 600),
        );
        let no_such_user = sign(
            JWT_SECRET,
            &claims(999_999, "access", "livebase", now(), now() + 600),
        );
        let bad_sub = sign(
            JWT_SECRET,
            &json!({ "sub": "admin", "tv": 0, "kind": "access", "app": "livebase",
                     "iat": now(), "exp": now() + 600 }),
        );
        let old_version = sign(
            JWT_SECRET,
            &json!({ "sub": id.to_string(), "tv": 7, "kind": "access", "app": "livebase",
                     "iat": now(), "exp": now() + 600 }),
        );
        let mut flipped = access.clone().into_bytes();
        let mid = flipped.len() / 2;
        flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let unsigned = {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
            let body = b64.encode(
                claims(id, "access", "livebase", now(), now() + 600)
                    .to_string()
                    .as_bytes(),
            );
            format!("{header}.{body}.")
        };
        let cases = [
            ("expired", expired),
            ("another secret", other_secret),
            ("another app", other_app),
            ("no such user", no_such_user),
            ("non-numeric sub", bad_sub),
            ("stale token version", old_version),
            ("refresh token as bearer", text(&tokens, "refresh_token")),
            ("garbled", "not-a-jwt".to_string()),
            ("three garbage parts", "a.b.c".to_string()),
            ("truncated", access[..access.len() - 5].to_string()),
            ("one character changed", flipped),
            ("alg none", unsigned),
            ("empty", String::new()),
        ];
        for (what, token) in cases {
            let (status, body) = app
                .get("/api/account/profile", &Cred::Bearer(token.clone()))
                .await;
            assert_eq!(status, 401, "{be}: {what} ({token}): {body}");
            assert_eq!(body, invalid_token(), "{be}: {what}");
        }
        for header in ["Bearer", "Bearer ", "Bearer    "] {
            let (status, body) = app
                .get("/api/account/profile", &Cred::Raw(header.into()))
                .await;
            assert_eq!(status, 401, "{be}: `{header}`: {body}");
            assert_eq!(body, invalid_token(), "{be}: `{header}`");
        }
        let (status, body) = app
            .get(
                "/api/account/profile",
                &Cred::Raw(format!("Token {access}")),
            )
            .await;
        assert_eq!(status, 401, "{be}: unknown scheme: {body}");
        assert_eq!(
            body,
            json!({ "Message": "unsupported Authorization scheme: use Bearer or Basic" }),
            "{be}"
        );
        // Refusals are the same on data routes, not just the profile.
        let (status, body) = app
            .get(
                "/1/objects/users",
                &Cred::Bearer(text(&tokens, "refresh_token")),
            )
            .await;
        assert_eq!((status, body), (401, invalid_token()), "{be}: data route");

        // And the good token still works after all that.
        let (status, _) = app.get("/api/account/profile", &Cred::Bearer(access)).await;
        assert_eq!(status, 200, "{be}");
    }
}

#[tokio::test]
async fn a_deleted_users_token_stops_working() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let id = create_user(&app, "dan@x.io", "User", "dan-secret", "Dan", "").await;
        let tokens = login_ok(&app, "dan@x.io", "dan-secret").await;
        let access = Cred::Bearer(text(&tokens, "access_token"));
        // Used once, so the server has the user's auth facts cached.
        let (status, profile) = app.get("/api/account/profile", &access).await;
        assert_eq!(status, 200, "{be}: {profile}");
        assert_eq!(
            profile["fullName"], "Dan",
            "{be}: no trailing space: {profile}"
        );

        let (status, body) = app
            .delete(&format!("/1/objects/users/{id}"), &master())
            .await;
        assert_eq!(status, 200, "{be}: delete user: {body}");

        let (status, body) = app.get("/api/account/profile", &access).await;
        assert_eq!(
            (status, body),
            (401, invalid_token()),
            "{be}: deleted user's token"
        );
        let (status, body) = token_form(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &text(&tokens, "refresh_token")),
            ],
        )
        .await;
        assert_eq!(
            (status, body),
            (401, grant_refused("invalid or expired token")),
            "{be}: deleted user's refresh token"
        );
        let (status, body) = app.login("dan@x.io", "dan-secret").await;
        assert_eq!(
            (status, body),
            (400, grant_refused("invalid username or password")),
            "{be}: deleted user's password"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Basic master:userToken
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn basic_master_and_user_token_acts_as_that_user() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let admin_id = app.admin().await.id;

        let (status, profile) = app
            .get(
                "/api/account/profile",
                &Cred::Basic(MASTER.into(), ADMIN_USER_TOKEN.into()),
            )
            .await;
        assert_eq!(status, 200, "{be}: {profile}");
        assert_eq!(
            profile,
            json!({
                "username": ADMIN_EMAIL, "firstName": "Admin", "lastName": "",
                "fullName": "Admin", "role": "Admin", "userId": admin_id.to_string(),
                "appName": "livebase",
            }),
            "{be}: admin via Basic"
        );
        assert_eq!(user_token(&app, admin_id).await, ADMIN_USER_TOKEN, "{be}");

        let eve = create_user(&app, "eve@x.io", "User", "eve-secret", "Eve", "Ng").await;
        let eve_token = user_token(&app, eve).await;
        assert_ne!(eve_token, ADMIN_USER_TOKEN, "{be}");
        assert!(
            eve_token.len() >= 32,
            "{be}: user token `{eve_token}` too guessable"
        );
        let (status, profile) = app
            .get(
                "/api/account/profile",
                &Cred::Basic(MASTER.into(), eve_token.clone()),
            )
            .await;
        assert_eq!(status, 200, "{be}: {profile}");
        assert_eq!(profile["username"], "eve@x.io", "{be}: {profile}");
        assert_eq!(profile["role"], "User", "{be}: {profile}");
        assert_eq!(profile["userId"], eve.to_string(), "{be}: {profile}");

        let refused = json!({ "Message": "invalid Basic credentials" });
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cases = [
            (
                "wrong master",
                format!("Basic {}", b64(&format!("not-master:{ADMIN_USER_TOKEN}"))),
            ),
            (
                "master with one char more",
                format!("Basic {}", b64(&format!("{MASTER}x:{ADMIN_USER_TOKEN}"))),
            ),
            (
                "anonymous token as master",
                format!("Basic {}", b64(&format!("{ANON}:{ADMIN_USER_TOKEN}"))),
            ),
            (
                "unknown user token",
                format!("Basic {}", b64(&format!("{MASTER}:no-such-user-token"))),
            ),
            (
                "empty user token",
                format!("Basic {}", b64(&format!("{MASTER}:"))),
            ),
            (
                "user token as master",
                format!("Basic {}", b64(&format!("{ADMIN_USER_TOKEN}:{MASTER}"))),
            ),
            ("no colon", format!("Basic {}", b64(MASTER))),
            ("not base64", format!("Basic {MASTER}:{ADMIN_USER_TOKEN}")),
            (
                "base64 of bytes that are not UTF-8",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b':', b'a'])
                ),
            ),
            ("nothing", "Basic".to_string()),
        ];
        for (what, header) in cases {
            let (status, body) = app
                .get("/api/account/profile", &Cred::Raw(header.clone()))
                .await;
            assert_eq!(status, 401, "{be}: {what} (`{header}`): {body}");
            assert_eq!(body, refused, "{be}: {what}");
        }
        // Refused on data routes too.
        let (status, body) = app
            .get(
                "/1/objects/users",
                &Cred::Basic("not-master".into(), ADMIN_USER_TOKEN.into()),
            )
            .await;
        assert_eq!((status, body), (401, refused), "{be}: data route");
    }
}

#[tokio::test]
async fn master_token_with_a_readonly_users_token_passes_every_permission() {
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema("things.json", things_schema())
            .start()
            .await;
        let be = backend.name();
        let reader = create_user(&app, "ro@x.io", "ReadOnly", "ro-secret", "Ro", "").await;
        let bearer = Cred::Bearer(text(
            &login_ok(&app, "ro@x.io", "ro-secret").await,
            "access_token",
        ));
        let basic = Cred::Basic(MASTER.into(), user_token(&app, reader).await);

        // As themselves, a ReadOnly user may read but not write.
        let (status, body) = app.get("/1/objects/things", &bearer).await;
        assert_eq!(status, 200, "{be}: ReadOnly reads: {body}");
        let (status, body) = app
            .post("/1/objects/things", &bearer, json!({ "name": "by bearer" }))
            .await;
        assert_eq!(
            status, 403,
            "{be}: ReadOnly creates with a bearer token: {body}"
        );
        let (status, body) = app.get("/1/objects/users", &bearer).await;
        assert_eq!(status, 403, "{be}: ReadOnly lists users: {body}");

        // With the master token they are still themselves...
        let (status, profile) = app.get("/api/account/profile", &basic).await;
        assert_eq!(status, 200, "{be}: {profile}");
        assert_eq!(profile["username"], "ro@x.io", "{be}: {profile}");
        assert_eq!(profile["role"], "ReadOnly", "{be}: {profile}");
        // ...but pass every check: create, update, delete (Admin only) and users.
        let (status, body) = app
            .post("/1/objects/things", &basic, json!({ "name": "by master" }))
            .await;
        assert_eq!(status, 200, "{be}: master+ReadOnly creates: {body}");
        let thing = text(&body["__metadata"], "id");
        let (status, body) = app
            .put(
                &format!("/1/objects/things/{thing}"),
                &basic,
                json!({ "name": "renamed" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: master+ReadOnly updates: {body}");
        let (status, body) = app.get(&format!("/1/objects/things/{thing}"), &basic).await;
        assert_eq!(
            (status, &body["name"]),
            (200, &json!("renamed")),
            "{be}: {body}"
        );
        let (status, body) = app.get("/1/objects/users", &basic).await;
        assert_eq!(status, 200, "{be}: master+ReadOnly lists users: {body}");
        assert_eq!(body["totalRows"], 2, "{be}: {body}");
        let (status, body) = app
            .delete(&format!("/1/objects/things/{thing}"), &basic)
            .await;
        assert_eq!(status, 200, "{be}: master+ReadOnly deletes: {body}");
        let (status, body) = app.get(&format!("/1/objects/things/{thing}"), &basic).await;
        assert_eq!(status, 404, "{be}: deleted: {body}");
    }
}

// ---------------------------------------------------------------------------------------
// AnonymousToken and no credentials
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn anonymous_token_is_guest_with_role_public() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let (status, profile) = app
            .get("/api/account/profile", &Cred::Anonymous(ANON.into()))
            .await;
        assert_eq!(status, 200, "{be}: {profile}");
        assert_eq!(profile["username"], "Guest", "{be}: {profile}");
        assert_eq!(profile["role"], "Public", "{be}: {profile}");
        assert_eq!(profile["userId"], Value::Null, "{be}: {profile}");
        assert_eq!(profile["appName"], "livebase", "{be}: {profile}");

        for wrong in [
            "wrong-anonymous-token",
            MASTER,
            SIGNUP,
            "",
            &ANON[..ANON.len() - 1],
        ] {
            let (status, body) = app
                .get("/api/account/profile", &Cred::Anonymous(wrong.into()))
                .await;
            assert_eq!(status, 401, "{be}: AnonymousToken `{wrong}`: {body}");
            assert_eq!(
                body,
                json!({ "Message": "invalid anonymous token" }),
                "{be}"
            );
        }
        let (status, body) = app.get("/api/account/profile", &Cred::None).await;
        assert_eq!(status, 401, "{be}: no credentials: {body}");
        assert_eq!(
            body,
            json!({ "Message": "missing credentials: send Authorization or AnonymousToken" }),
            "{be}"
        );
        let (status, body) = app.get("/1/objects/users", &Cred::None).await;
        assert_eq!(status, 401, "{be}: no credentials on data: {body}");
        // Guests have nothing to sign out of and no password to change.
        let (status, body) = app
            .get("/1/user/signout", &Cred::Anonymous(ANON.into()))
            .await;
        assert_eq!(status, 400, "{be}: guest signout: {body}");
        let (status, body) = app
            .post(
                "/1/user/changePassword",
                &Cred::Anonymous(ANON.into()),
                json!({ "oldPassword": "whatever", "newPassword": "whatever-new" }),
            )
            .await;
        assert_eq!(status, 403, "{be}: guest changePassword: {body}");
    }
}

// ---------------------------------------------------------------------------------------
// Sign-up
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn signup_creates_a_user_who_can_sign_in() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let (status, body) = signup(
            &app,
            Some(SIGNUP),
            json!({ "email": "Fay@X.io", "password": "fay-secret", "confirmPassword": "fay-secret",
                    "firstName": "Fay", "lastName": "Wray", "parameters": { "source": "web" } }),
        )
        .await;
        assert_eq!(status, 200, "{be}: signup: {body}");
        assert_eq!(body["username"], "fay@x.io", "{be}: {body}");
        assert_eq!(body["role"], "User", "{be}: {body}");
        assert_eq!(body["fullName"], "Fay Wray", "{be}: {body}");
        assert_eq!(body["token_type"], "bearer", "{be}: {body}");
        assert_eq!(body["appName"], "livebase", "{be}: {body}");
        assert_eq!(body["token"], body["access_token"], "{be}: {body}");
        assert_no_secrets(&body, &format!("{be}: signup answer"));
        let id = text(&body, "userId");

        let (status, profile) = app
            .get(
                "/api/account/profile",
                &Cred::Bearer(text(&body, "access_token")),
            )
            .await;
        assert_eq!(status, 200, "{be}: signup's token: {profile}");
        assert_eq!(profile["userId"], id, "{be}: {profile}");
        assert_eq!(profile["role"], "User", "{be}: {profile}");
        let (status, refreshed) = token_form(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &text(&body, "refresh_token")),
            ],
        )
        .await;
        assert_eq!(status, 200, "{be}: signup's refresh token: {refreshed}");

        let tokens = login_ok(&app, "fay@x.io", "fay-secret").await;
        assert_eq!(tokens["userId"], id, "{be}");
        assert_eq!(tokens["role"], "User", "{be}");
        let rows = app.all_rows("users").await;
        let row = rows
            .iter()
            .find(|r| r["__metadata"]["id"] == id)
            .unwrap_or_else(|| panic!("{be}: user {id} not listed: {rows:?}"));
        assert_eq!(row["email"], "fay@x.io", "{be}: {row}");
        assert_eq!(row["role"], "User", "{be}: {row}");

        // Without confirmPassword is fine too.
        let (status, body) = signup(
            &app,
            Some(SIGNUP),
            json!({ "email": "gus@x.io", "password": "gus-secret" }),
        )
        .await;
        assert_eq!(status, 200, "{be}: signup without confirmPassword: {body}");
    }
}

#[tokio::test]
async fn signup_refusals_create_nothing() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let good = json!({ "email": "hal@x.io", "password": "hal-secret", "confirmPassword": "hal-secret" });
        let before = user_count(&app).await;

        let (status, body) = signup(&app, None, good.clone()).await;
        assert_eq!(status, 401, "{be}: no SignUpToken: {body}");
        assert_eq!(
            body,
            json!({ "Message": "missing SignUpToken header" }),
            "{be}"
        );
        for wrong in ["wrong-signup-token", ANON, MASTER, ""] {
            let (status, body) = signup(&app, Some(wrong), good.clone()).await;
            assert_eq!(status, 401, "{be}: SignUpToken `{wrong}`: {body}");
            assert_eq!(body, json!({ "Message": "invalid SignUpToken" }), "{be}");
        }
        let cases = [
            (
                json!({ "email": "hal@x.io", "password": "hal-secret", "confirmPassword": "hal-secreT" }),
                400,
                "password and confirmPassword differ",
            ),
            (
                json!({ "email": "hal@x.io", "password": "short", "confirmPassword": "short" }),
                400,
                "password must be at least 6 characters",
            ),
            (
                json!({ "email": "hal@x.io" }),
                400,
                "`password` is required",
            ),
            (
                json!({ "email": "hal@x.io", "password": "hal-secret", "role": "Admin" }),
                403,
                "signing up cannot choose a role",
            ),
            (
                json!({ "email": "hal@x.io", "password": "hal-secret", "role": "User" }),
                403,
                "signing up cannot choose a role",
            ),
            (
                json!({ "email": "hal@x.io", "password": "hal-secret", "nickname": "hal" }),
                400,
                "unknown field `nickname` for object `users`",
            ),
            (
                json!({ "email": "not-an-email", "password": "hal-secret" }),
                400,
                "`not-an-email` is not an email address",
            ),
        ];
        for (body, want_status, message) in cases {
            let (status, answer) = signup(&app, Some(SIGNUP), body.clone()).await;
            assert_eq!(status, want_status, "{be}: {body}: {answer}");
            assert_eq!(answer, json!({ "Message": message }), "{be}: {body}");
        }
        let (status, body) = signup(&app, Some(SIGNUP), json!(["not", "an", "object"])).await;
        assert_eq!(status, 400, "{be}: array body: {body}");
        assert_eq!(
            user_count(&app).await,
            before,
            "{be}: a refused signup created a user"
        );
        let (status, body) = app.login("hal@x.io", "hal-secret").await;
        assert_eq!(
            status, 400,
            "{be}: refused signups must not sign in: {body}"
        );

        // Duplicate email, case-insensitively.
        let (status, body) = signup(
            &app,
            Some(SIGNUP),
            json!({ "email": "Bob@x.io", "password": "bob-secret" }),
        )
        .await;
        assert_eq!(status, 200, "{be}: first Bob: {body}");
        let after_bob = user_count(&app).await;
        assert_eq!(after_bob, before + 1, "{be}");
        for email in ["bob@x.io", "BOB@X.IO", " bob@x.io "] {
            let (status, body) = signup(
                &app,
                Some(SIGNUP),
                json!({ "email": email, "password": "other-secret" }),
            )
            .await;
            assert_eq!(status, 409, "{be}: duplicate `{email}`: {body}");
            assert_eq!(
                body,
                json!({ "Message": "field `email` must be unique: another `users` row already has this value" }),
                "{be}: duplicate `{email}`"
            );
        }
        assert_eq!(
            user_count(&app).await,
            after_bob,
            "{be}: a duplicate created a user"
        );
        // Bob's password is untouched by the duplicate attempts.
        login_ok(&app, "bob@x.io", "bob-secret").await;
        let (status, _) = app.login("bob@x.io", "other-secret").await;
        assert_eq!(status, 400, "{be}");
    }
}

// ---------------------------------------------------------------------------------------
// Password hashes never leave the server
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn passwords_and_hashes_are_never_returned() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let ivy = create_user(&app, "ivy@x.io", "User", "ivy-secret", "Ivy", "").await;
        let ivy_login = login_ok(&app, "ivy@x.io", "ivy-secret").await;
        assert_no_secrets(&ivy_login, &format!("{be}: /token"));

        let (status, list) = app.get("/1/objects/users?pageSize=100", &master()).await;
        assert_eq!(status, 200, "{be}: {list}");
        assert_eq!(list["totalRows"], 2, "{be}: {list}");
        assert_no_secrets(&list, &format!("{be}: users list"));
        // The rows carry real data, so the check above looked at something.
        let emails: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["email"].as_str().unwrap())
            .collect();
        assert!(
            emails.contains(&"ivy@x.io") && emails.contains(&ADMIN_EMAIL),
            "{be}: {list}"
        );

        let (status, row) = app.get(&format!("/1/objects/users/{ivy}"), &master()).await;
        assert_eq!(status, 200, "{be}: {row}");
        assert_no_secrets(&row, &format!("{be}: users row"));

        let (status, profile) = app
            .get(
                "/api/account/profile",
                &Cred::Bearer(text(&ivy_login, "access_token")),
            )
            .await;
        assert_eq!(status, 200, "{be}: {profile}");
        assert_no_secrets(&profile, &format!("{be}: profile"));

        let (status, created) = app
            .post(
                "/1/objects/users?returnObject=true",
                &master(),
                json!({ "email": "jo@x.io", "password": "jo-secret", "role": "User" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: {created}");
        assert_eq!(
            created["email"], "jo@x.io",
            "{be}: whole row returned: {created}"
        );
        assert_no_secrets(&created, &format!("{be}: created user row"));
        let (status, updated) = app
            .put(
                &format!("/1/objects/users/{ivy}?returnObject=true"),
                &master(),
                json!({ "lastName": "Ivers" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: {updated}");
        assert_no_secrets(&updated, &format!("{be}: updated user row"));
        // A password cannot be set through the row either.
        let (status, body) = app
            .put(
                &format!("/1/objects/users/{ivy}"),
                &master(),
                json!({ "password": "sneaky-new-password" }),
            )
            .await;
        assert_eq!(status, 400, "{be}: password through PUT: {body}");
        login_ok(&app, "ivy@x.io", "ivy-secret").await;
    }
}

// ---------------------------------------------------------------------------------------
// Sign-out
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sign_out_revokes_access_and_refresh_tokens() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        create_user(&app, "kim@x.io", "User", "kim-secret", "Kim", "").await;
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let tokens = login_ok(&app, "kim@x.io", "kim-secret").await;
            let second = login_ok(&app, "kim@x.io", "kim-secret").await;
            let access = Cred::Bearer(text(&tokens, "access_token"));
            let (status, _) = app.get("/api/account/profile", &access).await;
            assert_eq!(status, 200, "{be}");

            let (status, body) = app
                .req(method.clone(), "/1/user/signout", &access, None)
                .await;
            assert_eq!((status, &body), (200, &json!({})), "{be}: {method} signout");

            let (status, body) = app.get("/api/account/profile", &access).await;
            assert_eq!(
                (status, body),
                (401, invalid_token()),
                "{be}: {method}: after signout"
            );
            // Every token issued before sign-out, not just the one used for it.
            let (status, body) = app
                .get(
                    "/api/account/profile",
                    &Cred::Bearer(text(&second, "access_token")),
                )
                .await;
            assert_eq!(
                (status, body),
                (401, invalid_token()),
                "{be}: {method}: other session"
            );
            for refresh in [
                text(&tokens, "refresh_token"),
                text(&second, "refresh_token"),
            ] {
                let (status, body) = token_form(
                    &app,
                    &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
                )
                .await;
                assert_eq!(
                    (status, body),
                    (401, grant_refused("invalid or expired token")),
                    "{be}: {method}: refresh after signout"
                );
            }
            // Signing out again with the dead token is refused.
            let (status, body) = app
                .req(method.clone(), "/1/user/signout", &access, None)
                .await;
            assert_eq!(
                (status, body),
                (401, invalid_token()),
                "{be}: {method}: second signout"
            );

            let again = login_ok(&app, "kim@x.io", "kim-secret").await;
            let (status, profile) = app
                .get(
                    "/api/account/profile",
                    &Cred::Bearer(text(&again, "access_token")),
                )
                .await;
            assert_eq!(status, 200, "{be}: {method}: signed in again: {profile}");
            assert_eq!(profile["username"], "kim@x.io", "{be}");
            let (status, body) = token_form(
                &app,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &text(&again, "refresh_token")),
                ],
            )
            .await;
            assert_eq!(status, 200, "{be}: {method}: new refresh token: {body}");
        }
        let (status, body) = app.get("/1/user/signout", &Cred::None).await;
        assert_eq!(status, 401, "{be}: signout without credentials: {body}");
    }
}

// ---------------------------------------------------------------------------------------
// Change password
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn change_password_checks_the_old_one_and_revokes_tokens() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        create_user(&app, "lee@x.io", "User", "lee-old-pw", "Lee", "").await;
        let tokens = login_ok(&app, "lee@x.io", "lee-old-pw").await;
        let access = Cred::Bearer(text(&tokens, "access_token"));
        let change = |old: &str, new: &str| json!({ "oldPassword": old, "newPassword": new });

        let cases = [
            (
                change("wrong-old-pw", "lee-new-pw"),
                "the old password is wrong",
            ),
            (
                change("lee-old-pw", "short"),
                "password must be at least 6 characters",
            ),
            (
                change("wrong-old-pw", "short"),
                "password must be at least 6 characters",
            ),
            (
                json!({ "newPassword": "lee-new-pw" }),
                "`oldPassword` is required",
            ),
            (
                json!({ "oldPassword": "lee-old-pw" }),
                "`newPassword` is required",
            ),
        ];
        for (body, message) in cases {
            let (status, answer) = app
                .post("/1/user/changePassword", &access, body.clone())
                .await;
            assert_eq!(status, 400, "{be}: {body}: {answer}");
            assert_eq!(answer, json!({ "Message": message }), "{be}: {body}");
        }
        // Nothing changed by the refusals.
        let (status, _) = app.get("/api/account/profile", &access).await;
        assert_eq!(status, 200, "{be}: token still good after refused changes");
        login_ok(&app, "lee@x.io", "lee-old-pw").await;

        let (status, body) = app
            .post(
                "/1/user/changePassword",
                &Cred::None,
                change("lee-old-pw", "lee-new-pw"),
            )
            .await;
        assert_eq!(
            status, 401,
            "{be}: changePassword without credentials: {body}"
        );

        let (status, body) = app
            .post(
                "/1/user/changePassword",
                &access,
                change("lee-old-pw", "lee-new-pw"),
            )
            .await;
        assert_eq!((status, &body), (200, &json!({})), "{be}: change: {body}");

        let (status, body) = app.login("lee@x.io", "lee-old-pw").await;
        assert_eq!(
            (status, body),
            (400, grant_refused("invalid username or password")),
            "{be}: old password after change"
        );
        let fresh = login_ok(&app, "lee@x.io", "lee-new-pw").await;
        let (status, body) = app.get("/api/account/profile", &access).await;
        assert_eq!(
            (status, body),
            (401, invalid_token()),
            "{be}: token from before the change"
        );
        let (status, body) = token_form(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &text(&tokens, "refresh_token")),
            ],
        )
        .await;
        assert_eq!(
            (status, body),
            (401, grant_refused("invalid or expired token")),
            "{be}: refresh token from before the change"
        );
        let (status, _) = app
            .get(
                "/api/account/profile",
                &Cred::Bearer(text(&fresh, "access_token")),
            )
            .await;
        assert_eq!(status, 200, "{be}: token from after the change");
    }
}

// ---------------------------------------------------------------------------------------
// Password reset
// ---------------------------------------------------------------------------------------

// The reset token only reaches the server log (there is no mail server), so the test
// reads it from there: a `tracing` subscriber scoped to this thread. `#[tokio::test]` runs
// a current-thread runtime, so the server's handlers log on this very thread.
#[tokio::test]
async fn password_reset_over_http() {
    use tracing_subscriber::layer::SubscriberExt;
    let captured = ResetTokens::default();
    let _log =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let id = create_user(&app, "max@x.io", "User", "max-old-pw", "Max", "").await;
        let before = login_ok(&app, "max@x.io", "max-old-pw").await;
        let refused = json!({ "Message": "invalid or expired reset token" });

        // Known and unknown users get the same answer.
        let (status, known) = app
            .post(
                "/1/user/requestResetPassword",
                &Cred::None,
                json!({ "username": "max@x.io" }),
            )
            .await;
        assert_eq!((status, &known), (200, &json!({})), "{be}: known user");
        let tokens = captured.take();
        assert_eq!(tokens.len(), 1, "{be}: one reset token logged: {tokens:?}");
        let token = tokens[0].clone();
        let (status, unknown) = app
            .post(
                "/1/user/requestResetPassword",
                &Cred::None,
                json!({ "username": "nobody@x.io" }),
            )
            .await;
        assert_eq!((status, &unknown), (200, &known), "{be}: unknown user");
        assert!(
            captured.take().is_empty(),
            "{be}: no token for an unknown user"
        );
        let (status, body) = app
            .post("/1/user/requestResetPassword", &Cred::None, json!({}))
            .await;
        assert_eq!(
            (status, body),
            (400, json!({ "Message": "`username` is required" })),
            "{be}: no username"
        );

        assert!(
            token.starts_with(&format!("{id}.")),
            "{be}: reset token `{token}` names user {id}"
        );
        let secret = &token[token.find('.').unwrap() + 1..];
        let reset = |t: &str, pw: &str| json!({ "resetToken": t, "newPassword": pw });
        let bogus = [
            format!("{id}.not-the-secret"),
            format!("{id}.{}", &secret[..secret.len() - 1]),
            format!("{id}."),
            format!("{}.{secret}", id + 1),
            format!("x.{secret}"),
            "no-dot-at-all".to_string(),
            secret.to_string(),
            String::new(),
        ];
        for t in &bogus {
            let (status, body) = app
                .post("/1/user/resetPassword", &Cred::None, reset(t, "max-new-pw"))
                .await;
            assert_eq!((status, &body), (400, &refused), "{be}: reset token `{t}`");
        }
        let (status, body) = app
            .post("/1/user/resetPassword", &Cred::None, reset(&token, "short"))
            .await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({ "Message": "password must be at least 6 characters" })
            ),
            "{be}: short new password"
        );
        let (status, body) = app
            .post(
                "/1/user/resetPassword",
                &Cred::None,
                json!({ "resetToken": token }),
            )
            .await;
        assert_eq!(
            (status, body),
            (400, json!({ "Message": "`newPassword` is required" })),
            "{be}"
        );
        // An expired token is refused; the same token within its hour works.
        set_reset_expires(&app, id, now() as i64 - 10).await;
        let (status, body) = app
            .post(
                "/1/user/resetPassword",
                &Cred::None,
                reset(&token, "max-new-pw"),
            )
            .await;
        assert_eq!(
            (status, &body),
            (400, &refused),
            "{be}: expired reset token"
        );
        set_reset_expires(&app, id, now() as i64 + 600).await;
        // Nothing so far changed the password.
        login_ok(&app, "max@x.io", "max-old-pw").await;

        let (status, body) = app
            .post(
                "/1/user/resetPassword",
                &Cred::None,
                reset(&token, "max-new-pw"),
            )
            .await;
        assert_eq!(
            (status, &body),
            (200, &json!({})),
            "{be}: reset with the logged token"
        );
        let (status, body) = app.login("max@x.io", "max-old-pw").await;
        assert_eq!(
            (status, body),
            (400, grant_refused("invalid username or password")),
            "{be}: old password after reset"
        );
        login_ok(&app, "max@x.io", "max-new-pw").await;
        let (status, body) = app
            .get(
                "/api/account/profile",
                &Cred::Bearer(text(&before, "access_token")),
            )
            .await;
        assert_eq!(
            (status, body),
            (401, invalid_token()),
            "{be}: token from before the reset"
        );
        // A reset token works once.
        let (status, body) = app
            .post(
                "/1/user/resetPassword",
                &Cred::None,
                reset(&token, "max-third-pw"),
            )
            .await;
        assert_eq!((status, &body), (400, &refused), "{be}: reset token reused");
        login_ok(&app, "max@x.io", "max-new-pw").await;

        // A newer request replaces the older token.
        let _ = app
            .post(
                "/1/user/requestResetPassword",
                &Cred::None,
                json!({ "username": "MAX@x.io" }),
            )
            .await;
        let _ = app
            .post(
                "/1/user/requestResetPassword",
                &Cred::None,
                json!({ "username": "max@x.io" }),
            )
            .await;
        let two = captured.take();
        assert_eq!(two.len(), 2, "{be}: {two:?}");
        let (status, body) = app
            .post(
                "/1/user/resetPassword",
                &Cred::None,
                reset(&two[0], "max-fourth-pw"),
            )
            .await;
        assert_eq!(
            (status, &body),
            (400, &refused),
            "{be}: superseded reset token"
        );
        let (status, body) = app
            .post(
                "/1/user/resetPassword",
                &Cred::None,
                reset(&two[1], "max-fourth-pw"),
            )
            .await;
        assert_eq!(
            (status, &body),
            (200, &json!({})),
            "{be}: latest reset token"
        );
        login_ok(&app, "max@x.io", "max-fourth-pw").await;
    }
}

// ---------------------------------------------------------------------------------------
// Secrets file
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_file_is_private_and_flags_win() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let path = app.data_dir.path().join("secrets.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{be}: {}: {e}", path.display()));
        let file: Value = serde_json::from_str(&text).unwrap();
        for key in [
            "appName",
            "anonymousToken",
            "signupToken",
            "masterToken",
            "jwtSecret",
        ] {
            assert!(
                file[key].as_str().is_some_and(|v| !v.is_empty()),
                "{be}: `{key}` missing from secrets.json: {file}"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "{be}: secrets.json mode {:o}",
                mode & 0o777
            );
        }
        // The tokens given as flags are the ones in force.
        let secrets = app.state.auth.secrets();
        assert_eq!(secrets.master_token, MASTER, "{be}");
        assert_eq!(secrets.anonymous_token, ANON, "{be}");
        assert_eq!(secrets.signup_token, SIGNUP, "{be}");
        assert_eq!(secrets.jwt_secret, JWT_SECRET, "{be}");
        let (status, _) = app.get("/api/account/profile", &master()).await;
        assert_eq!(status, 200, "{be}");
    }
}

/// Drops a PostgreSQL test database when the test ends, even by a panic.
struct DropDatabase(Option<(String, String)>);

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

#[tokio::test]
/// The first start keeps what was in force (here: the flags) in `secrets.json`, so a
/// later start without the flags accepts the same credentials, and only those.
async fn secrets_in_force_on_first_start_are_kept_for_later_starts() {
    for backend in backends() {
        let be = backend.name();
        let app = Spawn::new(&backend).start().await;
        let path = app.data_dir.path().join("secrets.json");
        let written = std::fs::read_to_string(&path).unwrap();
        let file: Value = serde_json::from_str(&written).unwrap();
        let (dir, schema_dir, url, pg) = app.stop().await;
        let _drop = DropDatabase(pg);

        // Restart on the same data without the token flags: the kept secrets rule.
        let mut config = test_config(dir.path(), &schema_dir, &url);
        config.master_token = None;
        config.anonymous_token = None;
        config.signup_token = None;
        config.jwt_secret = None;
        let built = livebase::server::build(config, Vec::new())
            .await
            .expect("restart builds");
        let state = built.state.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(livebase::server::serve(listener, built, async {
            let _ = stopped.await;
        }));

        let secrets = state.auth.secrets();
        assert_eq!(secrets.master_token, text(&file, "masterToken"), "{be}");
        assert_eq!(
            secrets.anonymous_token,
            text(&file, "anonymousToken"),
            "{be}"
        );
        assert_eq!(secrets.signup_token, text(&file, "signupToken"), "{be}");
        assert_eq!(secrets.jwt_secret, text(&file, "jwtSecret"), "{be}");
        assert_eq!(secrets.app_name, "livebase", "{be}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            written,
            "{be}: secrets.json must not be rewritten on restart"
        );

        assert_eq!(
            text(&file, "masterToken"),
            MASTER,
            "{be}: first start stored the flag"
        );
        assert_eq!(text(&file, "anonymousToken"), ANON, "{be}");
        assert_eq!(text(&file, "signupToken"), SIGNUP, "{be}");
        assert_eq!(text(&file, "jwtSecret"), JWT_SECRET, "{be}");

        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let (status, body) = get_at(
            &base,
            "/api/account/profile",
            (
                "Authorization",
                format!("Basic {}", b64(format!("{MASTER}:{ADMIN_USER_TOKEN}"))),
            ),
        )
        .await;
        assert_eq!(status, 200, "{be}: kept master token: {body}");
        assert_eq!(body["username"], ADMIN_EMAIL, "{be}: {body}");
        let (status, body) = get_at(
            &base,
            "/api/account/profile",
            (
                "Authorization",
                format!(
                    "Basic {}",
                    b64(format!("not-the-master:{ADMIN_USER_TOKEN}"))
                ),
            ),
        )
        .await;
        assert_eq!(status, 401, "{be}: another master token: {body}");
        let (status, body) = get_at(
            &base,
            "/api/account/profile",
            ("AnonymousToken", ANON.into()),
        )
        .await;
        assert_eq!(
            (status, &body["username"]),
            (200, &json!("Guest")),
            "{be}: kept anonymous token: {body}"
        );
        let (status, _) = get_at(
            &base,
            "/api/account/profile",
            ("AnonymousToken", "not-the-anonymous-token".into()),
        )
        .await;
        assert_eq!(status, 401, "{be}: another anonymous token");
        // Tokens signed before the restart still verify: the signing secret was kept.
        let kept = sign(
            JWT_SECRET,
            &claims(1, "access", "livebase", now(), now() + 600),
        );
        let (status, body) = get_at(
            &base,
            "/api/account/profile",
            ("Authorization", format!("Bearer {kept}")),
        )
        .await;
        assert_eq!(
            status, 200,
            "{be}: token signed with the kept secret: {body}"
        );
        let other = sign(
            "some-other-secret-0123456789",
            &claims(1, "access", "livebase", now(), now() + 600),
        );
        let (status, body) = get_at(
            &base,
            "/api/account/profile",
            ("Authorization", format!("Bearer {other}")),
        )
        .await;
        assert_eq!((status, body), (401, invalid_token()), "{be}: other secret");

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_role_change_applies_to_tokens_already_issued() {
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema("things.json", things_schema())
            .start()
            .await;
        let be = backend.name();
        let id = create_user(&app, "ora@x.io", "User", "ora-secret", "Ora", "").await;
        let bearer = Cred::Bearer(text(
            &login_ok(&app, "ora@x.io", "ora-secret").await,
            "access_token",
        ));
        let (status, body) = app
            .post("/1/objects/things", &bearer, json!({ "name": "as User" }))
            .await;
        assert_eq!(status, 200, "{be}: User creates: {body}");

        let (status, body) = app
            .put(
                &format!("/1/objects/users/{id}"),
                &master(),
                json!({ "role": "ReadOnly" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: demote: {body}");
        let (status, body) = app
            .post(
                "/1/objects/things",
                &bearer,
                json!({ "name": "as ReadOnly" }),
            )
            .await;
        assert_eq!(status, 403, "{be}: the same token after demotion: {body}");
        let (status, profile) = app.get("/api/account/profile", &bearer).await;
        assert_eq!(
            (status, &profile["role"]),
            (200, &json!("ReadOnly")),
            "{be}: {profile}"
        );
        let (status, body) = app.get("/1/objects/things", &bearer).await;
        assert_eq!(status, 200, "{be}: ReadOnly still reads: {body}");
    }
}

/// Median time of `n` calls of `f`.
async fn median_time<F, Fut>(n: usize, mut f: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        f().await;
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

// Timing must not tell a known account from an unknown one. The bounds are loose (a
// known account may take twice as long plus 10 ms) so that load on the machine does not
// make this flaky; an argon2 hash on one path and none on the other still fails it.
#[tokio::test]
async fn known_and_unknown_accounts_take_alike_time() {
    for backend in backends() {
        let be = backend.name();
        let app = Spawn::new(&backend).start().await;
        let slack = std::time::Duration::from_millis(10);

        // The password grant, which spends a dummy verification on unknown users.
        let login = |email: &'static str| {
            let app = &app;
            move || async move {
                let (status, _) = app.login(email, "wrong-password").await;
                assert_eq!(status, 400);
            }
        };
        let known = median_time(7, login(ADMIN_EMAIL)).await;
        let unknown = median_time(7, login("nobody@x.io")).await;
        assert!(
            known <= unknown * 2 + slack && unknown <= known * 2 + slack,
            "{be}: POST /token: known account {known:?}, unknown {unknown:?}"
        );

        let reset = |email: &'static str| {
            let app = &app;
            move || async move {
                let (status, _) = app
                    .post(
                        "/1/user/requestResetPassword",
                        &Cred::None,
                        json!({ "username": email }),
                    )
                    .await;
                assert_eq!(status, 200);
            }
        };
        let known = median_time(7, reset(ADMIN_EMAIL)).await;
        let unknown = median_time(7, reset("nobody@x.io")).await;
        assert!(
            known <= unknown * 2 + slack && unknown <= known * 2 + slack,
            "{be}: POST /1/user/requestResetPassword: known account {known:?}, unknown {unknown:?}: \
         the response time reveals which accounts exist"
        );
    }
}
