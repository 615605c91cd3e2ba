//! Who a socket is: handshake `auth` ({token} / {anonymousToken}), Backand `login`,
//! LoopBack `authentication`; an unauthenticated socket hears nothing and is ended after
//! the auth timeout; re-authentication replaces rooms; sign-out and role changes end a
//! user's sockets; the connection limit; and socket.io v2 clients (engine.io v3).

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{id_of, objects, start};
use crate::common::*;
use crate::sio::{PATIENCE, Sio, next_frame, raw_v5, raw_ws, send};

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

/// What a server error tells a socket that has not authenticated.
const NOT_AUTHENTICATED: &str =
    "authenticate first: handshake auth {token} or {anonymousToken}, `login` or `authentication`";
const INVALID_TOKEN: &str = "invalid or expired token";
/// How long an unauthenticated socket is watched for events that must not come (no
/// barrier reaches it). The event under test has already reached a control socket.
const QUIET: Duration = Duration::from_millis(300);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An access token shaped exactly as livebase issues them, signed with the test secret.
fn access_token(user_id: i64, iat: u64, exp: u64) -> String {
    access_token_signed(JWT_SECRET, user_id, iat, exp)
}

fn access_token_signed(secret: &str, user_id: i64, iat: u64, exp: u64) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": user_id.to_string(), "tv": 0, "kind": "access", "app": "livebase",
                 "iat": iat, "exp": exp }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The `connect_error` message of a handshake that must be refused.
async fn refusal(app: &TestApp, auth: Value) -> String {
    match Sio::connect(&app.base, Some(auth.clone())).await {
        Ok(s) => panic!(
            "handshake auth {auth} must be refused, but socket {} connected",
            s.sid
        ),
        Err(message) => message,
    }
}

async fn anonymous(app: &TestApp) -> Sio {
    Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON })))
        .await
        .expect("socket connects with the anonymous token")
}

async fn unauthenticated(app: &TestApp) -> Sio {
    Sio::connect(&app.base, None)
        .await
        .expect("a socket without credentials connects (and must authenticate later)")
}

async fn emit_all(app: &TestApp, event: &str, data: Value) {
    app.state.realtime.emit_all(event, &data).await;
}

async fn emit_users(app: &TestApp, event: &str, data: Value, user: &str) {
    app.state
        .realtime
        .emit_users(event, &data, &[user.to_string()])
        .await;
}

async fn emit_role(app: &TestApp, event: &str, data: Value, role: &str) {
    app.state.realtime.emit_role(event, &data, role).await;
}

/// Nothing at all reaches `s` for `QUIET` (for sockets no barrier reaches).
async fn assert_silent(s: &mut Sio, what: &str) {
    let got = s.drain(QUIET).await;
    assert!(
        got.is_empty(),
        "{what}: socket {} must receive nothing (nor be closed), got {got:?}",
        s.sid
    );
}

/// `emit_all` reaches the authenticated `control` socket but not `s`.
async fn assert_hears_nothing(app: &TestApp, control: &mut Sio, s: &mut Sio, what: &str) {
    emit_all(app, "broadcast", json!({ "probe": what })).await;
    assert_eq!(
        control.expect("broadcast").await,
        json!({ "probe": what }),
        "{what}: control socket"
    );
    assert_silent(s, what).await;
}

/// Backand's `login(authorizationHeader, anonymousToken, appName)`.
fn login(s: &Sio, header: Value, anonymous_token: Value, app_name: &str) {
    s.emit("login", &[header, anonymous_token, json!(app_name)]);
}

/// The first of `events` to arrive at `s`, with its first argument.
async fn first_of(s: &mut Sio, events: &[&str]) -> (String, Value) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        for event in events {
            if let Some(v) = s.try_expect(event, Duration::from_millis(20)).await {
                return (event.to_string(), v);
            }
        }
    }
    panic!("socket {} received none of {events:?}", s.sid);
}

/// What `authorized` / `authenticated` carry for a user.
fn welcome(user: &User, role: &str) -> Value {
    json!({ "username": user.email, "role": role, "userId": user.id.to_string() })
}

fn guest_welcome() -> Value {
    json!({ "username": "Guest", "role": "Public", "userId": null })
}

/// Asserts `s` is in exactly the rooms of `username`/`role` among those probed: the
/// user's and role's emits arrive, the other user's and role's do not.
async fn assert_identity(
    app: &TestApp,
    s: &mut Sio,
    username: &str,
    role: &str,
    other_user: &str,
    other_role: &str,
    be: &str,
) {
    emit_users(app, "to_user", json!({ "to": username }), username).await;
    assert_eq!(
        s.expect("to_user").await,
        json!({ "to": username }),
        "{be}: emit_users({username})"
    );
    emit_role(app, "to_role", json!({ "to": role }), role).await;
    assert_eq!(
        s.expect("to_role").await,
        json!({ "to": role }),
        "{be}: emit_role({role})"
    );
    emit_users(app, "to_other_user", json!({}), other_user).await;
    emit_role(app, "to_other_role", json!({}), other_role).await;
    let marker = app.barrier().await;
    let seen = s.until_barrier(&marker).await;
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(name, _)| name == "to_other_user" || name == "to_other_role")
        .collect();
    assert!(
        wrong.is_empty(),
        "{be}: socket of {username}/{role} got emits for {other_user}/{other_role}: {wrong:?}"
    );
}

/// `livebase_socket_refusals_total{reason}` as `/metrics` shows it (0 if absent).
async fn refusals(app: &TestApp, reason: &str) -> f64 {
    let text = app.metrics_text().await;
    metric(
        &text,
        "livebase_socket_refusals_total",
        &[&format!("reason=\"{reason}\"")],
    )
}

/// Retries an anonymous connection until the server accepts one (a slot freed).
async fn connect_when_a_slot_frees(app: &TestApp, why: &str) -> Sio {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON }))).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                assert!(e.contains("connection limit reached"), "{why}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{why}: no slot freed within {PATIENCE:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Handshake auth
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn handshake_token_with_or_without_bearer_prefix_authenticates() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "ReadOnly").await;
        let mut plain = Sio::connect(&app.base, Some(json!({ "token": alice.token })))
            .await
            .unwrap_or_else(|e| panic!("{be}: plain token refused: {e}"));
        let mut prefixed = Sio::connect(
            &app.base,
            Some(json!({ "token": format!("Bearer {}", alice.token) })),
        )
        .await
        .unwrap_or_else(|e| panic!("{be}: `Bearer ` token refused: {e}"));

        emit_all(&app, "x", json!({ "n": 1 })).await;
        assert_eq!(plain.expect("x").await, json!({ "n": 1 }), "{be}");
        assert_eq!(prefixed.expect("x").await, json!({ "n": 1 }), "{be}");

        for s in [&mut plain, &mut prefixed] {
            assert_identity(&app, s, &alice.email, "User", &bob.email, "ReadOnly", be).await;
            assert_eq!(s.call("echo", json!("hi")).await, json!("hi"), "{be}");
        }

        // Bob's socket is Bob's: the same probes the other way round.
        let mut sb = app.socket(&bob.token).await;
        assert_identity(
            &app,
            &mut sb,
            &bob.email,
            "ReadOnly",
            &alice.email,
            "User",
            be,
        )
        .await;
    }
}

/// sails.io.js and socket.io 2.x clients have no `auth` payload: they put the token in
/// the handshake URL (`io.sails.query = 'token=…'`) or an `Authorization` header on the
/// handshake request (`io.sails.headers`).
#[tokio::test]
async fn the_handshake_request_may_carry_the_token_in_its_query_or_headers() {
    let backend = &backends()[0];
    let app = start(backend).await;
    let alice = app.user("alice@x.test", "User").await;
    let bob = app.user("bob@x.test", "ReadOnly").await;
    let mut by_query =
        Sio::connect_request(&app.base, &format!("&token={}", alice.token), &[], None)
            .await
            .expect("a token in the handshake query authenticates");
    let bearer = format!("Bearer {}", alice.token);
    let mut by_header = Sio::connect_request(&app.base, "", &[("authorization", &bearer)], None)
        .await
        .expect("an Authorization header on the handshake authenticates");
    let mut by_anonymous_header =
        Sio::connect_request(&app.base, "", &[("anonymoustoken", ANON)], None)
            .await
            .expect("an AnonymousToken header on the handshake authenticates");
    let mut none = unauthenticated(&app).await;
    for s in [&mut by_query, &mut by_header] {
        assert_identity(
            &app,
            s,
            &alice.email,
            "User",
            &bob.email,
            "ReadOnly",
            "sqlite",
        )
        .await;
        assert_eq!(s.call("echo", json!("hi")).await, json!("hi"));
    }
    emit_role(&app, "to_public", json!({}), "Public").await;
    assert_eq!(by_anonymous_header.expect("to_public").await, json!({}));
    assert_hears_nothing(&app, &mut by_query, &mut none, "no credentials at all").await;

    // A bad token there is refused as in `auth`, with the reason; the `auth` payload,
    // when there is one, is what counts.
    let refused = Sio::connect_request(&app.base, "&token=garbage", &[], None)
        .await
        .err()
        .expect("a bad token in the query is refused");
    assert!(refused.contains("token"), "{refused}");
    let bad_header = Sio::connect_request(&app.base, "", &[("authorization", "Bearer nope")], None)
        .await
        .err()
        .expect("a bad Authorization header is refused");
    assert!(bad_header.contains("token"), "{bad_header}");
    let mut auth_wins = Sio::connect_request(
        &app.base,
        &format!("&token={}", alice.token),
        &[],
        Some(json!({ "anonymousToken": ANON })),
    )
    .await
    .expect("the auth payload authenticates");
    emit_users(&app, "to_alice", json!({}), &alice.email).await;
    emit_role(&app, "to_public_again", json!({}), "Public").await;
    assert_eq!(auth_wins.expect("to_public_again").await, json!({}));
    assert!(
        auth_wins
            .try_expect("to_alice", Duration::from_millis(200))
            .await
            .is_none(),
        "the query's token must not add to the auth payload's identity"
    );
}

#[tokio::test]
async fn handshake_with_a_bad_token_is_refused_with_the_reason() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let (status, tokens) = app.login(&alice.email, &alice.password).await;
        assert_eq!(status, 200, "{be}: {tokens}");
        let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

        // A token forged with the real shape and secret works, so the refusals below are
        // about what differs.
        let ours = access_token(alice.id, now(), now() + 600);
        Sio::connect(&app.base, Some(json!({ "token": ours })))
            .await
            .unwrap_or_else(|e| panic!("{be}: self-signed fresh token refused: {e}"));

        let cases = [
            (
                "expired",
                json!(access_token(alice.id, now() - 3600, now() - 120)),
            ),
            (
                "another secret",
                json!(access_token_signed(
                    "another-secret-entirely-000000",
                    alice.id,
                    now(),
                    now() + 600
                )),
            ),
            ("garbage", json!("not-a-jwt")),
            ("garbage after Bearer", json!("Bearer not-a-jwt")),
            ("empty", json!("")),
            ("refresh token", json!(refresh)),
            (
                "no such user",
                json!(access_token(999_999, now(), now() + 600)),
            ),
        ];
        for (what, token) in cases {
            let message = refusal(&app, json!({ "token": token })).await;
            assert_eq!(message, INVALID_TOKEN, "{be}: {what}");
        }

        for (what, token) in [
            ("number", json!(42)),
            ("object", json!({ "id": alice.token })),
        ] {
            let message = refusal(&app, json!({ "token": token })).await;
            assert_eq!(
                message, "handshake auth `token` must be a string",
                "{be}: token as {what}"
            );
        }
        let message = refusal(&app, json!({ "anonymousToken": 7 })).await;
        assert_eq!(
            message, "handshake auth `anonymousToken` must be a string",
            "{be}"
        );

        // A bad token is not rescued by a good anonymous token beside it.
        let message = refusal(
            &app,
            json!({ "token": "not-a-jwt", "anonymousToken": ANON }),
        )
        .await;
        assert_eq!(
            message, INVALID_TOKEN,
            "{be}: bad token + good anonymousToken"
        );
    }
}

/// Anonymous handshakes touch no database: one backend is enough.
#[tokio::test]
async fn anonymous_handshake_is_a_guest_in_the_public_role() {
    let app = start(&Backend::Sqlite).await;
    let mut guest = anonymous(&app).await;

    emit_all(&app, "x", json!(1)).await;
    assert_eq!(guest.expect("x").await, json!(1));
    emit_role(&app, "public_news", json!({ "n": 2 }), "Public").await;
    assert_eq!(guest.expect("public_news").await, json!({ "n": 2 }));
    emit_users(&app, "guest_news", json!({ "n": 3 }), "Guest").await;
    assert_eq!(guest.expect("guest_news").await, json!({ "n": 3 }));
    emit_role(&app, "user_news", json!({}), "User").await;
    guest.assert_none(&app, "user_news").await;
    emit_role(&app, "admin_news", json!({}), "Admin").await;
    guest.assert_none(&app, "admin_news").await;
    assert_eq!(
        guest.call("echo", json!({ "a": 1 })).await,
        json!({ "a": 1 })
    );

    for (what, token) in [
        ("wrong", "not-the-anonymous-token"),
        ("master token", MASTER),
        ("signup token", SIGNUP),
        ("empty", ""),
    ] {
        let message = refusal(&app, json!({ "anonymousToken": token })).await;
        assert_eq!(message, "invalid anonymous token", "{what}");
    }
}

// ---------------------------------------------------------------------------------------
// No credentials: silence, commands refused, then the auth timeout
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unauthenticated_socket_hears_nothing_and_may_only_authenticate() {
    let app = start(&Backend::Sqlite).await;
    let mut control = anonymous(&app).await;
    let mut s = unauthenticated(&app).await;

    assert_hears_nothing(&app, &mut control, &mut s, "emit_all").await;
    emit_role(&app, "role_news", json!({}), "Public").await;
    emit_users(&app, "user_news", json!({}), "Guest").await;
    assert_eq!(control.expect("role_news").await, json!({}));
    assert_eq!(control.expect("user_news").await, json!({}));
    assert_silent(&mut s, "emit_role / emit_users").await;

    // Commands answer with an error saying to authenticate, by ack …
    for (event, data) in [
        ("echo", json!("hi")),
        ("join", json!("lobby")),
        ("leave", json!("lobby")),
        ("chan_in", json!({ "channel": "lobby", "data": 1 })),
    ] {
        assert_eq!(
            s.call(event, data).await,
            json!({ "error": NOT_AUTHENTICATED }),
            "`{event}` before authenticating"
        );
    }
    let sails = s.call("get", json!({ "url": "/posts" })).await;
    assert_eq!(sails["statusCode"], 401, "{sails}");
    assert_eq!(
        sails["body"],
        json!({ "Message": NOT_AUTHENTICATED }),
        "{sails}"
    );
    // … or, without one, by an `error` event naming the command.
    s.emit("echo", &[json!("hi")]);
    assert_eq!(
        s.expect("error").await,
        json!({ "event": "echo", "message": NOT_AUTHENTICATED })
    );
    s.emit("join", &[json!("lobby")]);
    assert_eq!(
        s.expect("error").await,
        json!({ "event": "join", "message": NOT_AUTHENTICATED })
    );

    // The refused join really joined nothing: a message in `lobby` does not reach it.
    assert_eq!(
        control.call("join", json!("lobby")).await["ok"],
        json!(true)
    );
    assert_eq!(
        control
            .call("chan_in", json!({ "channel": "lobby", "data": "psst" }))
            .await,
        json!({ "ok": true })
    );
    assert_eq!(control.expect("chan_out").await["data"], json!("psst"));
    assert_silent(&mut s, "chan_out of a channel it failed to join").await;

    // Authenticating lifts all of it.
    login(&s, json!(""), json!(ANON), "livebase");
    assert_eq!(s.expect("authorized").await, guest_welcome());
    assert_eq!(s.call("echo", json!("hi")).await, json!("hi"));
    emit_all(&app, "after", json!(1)).await;
    assert_eq!(s.expect("after").await, json!(1));
}

#[tokio::test]
async fn unauthenticated_socket_is_told_and_disconnected_after_the_auth_timeout() {
    const TIMEOUT_MS: u64 = 800;
    for backend in backends() {
        let be = backend.name();
        // Long enough that the sockets meant to authenticate in time always do.
        let app = objects(Spawn::new(&backend).config(|c| c.socket_auth_timeout_ms = TIMEOUT_MS))
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let before = refusals(&app, "auth_timeout").await;

        let started = Instant::now();
        let mut idle = unauthenticated(&app).await;
        let mut by_handshake = app.socket(&alice.token).await;
        let mut by_login = unauthenticated(&app).await;
        login(
            &by_login,
            json!(format!("Bearer {}", alice.token)),
            json!(null),
            "livebase",
        );
        assert_eq!(
            by_login.expect("authorized").await,
            welcome(&alice, "User"),
            "{be}"
        );
        let mut by_loopback = unauthenticated(&app).await;
        by_loopback.emit("authentication", &[json!({ "id": alice.token })]);
        assert_eq!(
            by_loopback.expect("authenticated").await,
            welcome(&alice, "User"),
            "{be}"
        );

        // The idle socket hears why, and only then is closed.
        let told = idle.expect("error").await;
        assert_eq!(
            told,
            json!({ "message": format!("not authenticated within {TIMEOUT_MS} ms; disconnecting") }),
            "{be}"
        );
        assert!(
            idle.closed_within(PATIENCE).await,
            "{be}: idle socket not closed"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(TIMEOUT_MS),
            "{be}: closed after {:?}, before the timeout",
            started.elapsed()
        );
        assert!(
            refusals(&app, "auth_timeout").await >= before + 1.0,
            "{be}: auth_timeout refusal not counted"
        );

        // Sockets that authenticated in time, each way, are kept past their own timeout.
        tokio::time::sleep(Duration::from_millis(TIMEOUT_MS)).await;
        emit_all(&app, "still_here", json!(1)).await;
        for s in [&mut by_handshake, &mut by_login, &mut by_loopback] {
            assert_eq!(s.expect("still_here").await, json!(1), "{be}");
            s.assert_none(&app, "error").await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Backand `login`
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn backand_login_authorizes_a_bearer_or_basic_or_anonymous_caller() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "ReadOnly").await;

        let mut s = unauthenticated(&app).await;
        login(
            &s,
            json!(format!("Bearer {}", alice.token)),
            json!(null),
            "livebase",
        );
        assert_eq!(
            first_of(&mut s, &["authorized", "notAuthorized"]).await,
            ("authorized".to_string(), welcome(&alice, "User")),
            "{be}"
        );
        assert_identity(
            &app,
            &mut s,
            &alice.email,
            "User",
            &bob.email,
            "ReadOnly",
            be,
        )
        .await;

        // Basic master:userToken is the admin, as REST would see it.
        let (status, admin_login) = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(status, 200, "{be}: {admin_login}");
        let mut sm = unauthenticated(&app).await;
        login(
            &sm,
            json!(basic_header(MASTER, ADMIN_USER_TOKEN)),
            json!(null),
            "livebase",
        );
        let (event, who) = first_of(&mut sm, &["authorized", "notAuthorized"]).await;
        assert_eq!(event, "authorized", "{be}: {who}");
        assert_eq!(
            who,
            json!({ "username": ADMIN_EMAIL, "role": admin_login["role"],
                    "userId": admin_login["userId"] }),
            "{be}"
        );
        emit_users(&app, "to_admin", json!(1), ADMIN_EMAIL).await;
        assert_eq!(sm.expect("to_admin").await, json!(1), "{be}");

        // Anonymous token only (empty authorization): a guest.
        let mut sg = unauthenticated(&app).await;
        login(&sg, json!(""), json!(ANON), "livebase");
        assert_eq!(
            first_of(&mut sg, &["authorized", "notAuthorized"]).await,
            ("authorized".to_string(), guest_welcome()),
            "{be}"
        );
        emit_role(&app, "public_news", json!(1), "Public").await;
        assert_eq!(sg.expect("public_news").await, json!(1), "{be}");
        sg.assert_none(&app, "to_admin").await;
        emit_role(&app, "user_news", json!(1), "User").await;
        assert_eq!(s.expect("user_news").await, json!(1), "{be}");
        sg.assert_none(&app, "user_news").await;
    }
}

#[tokio::test]
async fn backand_login_refusals_say_why_and_grant_nothing() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut control = anonymous(&app).await;
        let mut s = unauthenticated(&app).await;
        let bearer = format!("Bearer {}", alice.token);
        let expired = format!(
            "Bearer {}",
            access_token(alice.id, now() - 3600, now() - 120)
        );

        let cases = [
            (
                "garbage bearer",
                json!("Bearer not-a-jwt"),
                json!(null),
                "livebase",
                INVALID_TOKEN.to_string(),
            ),
            (
                "expired bearer",
                json!(expired),
                json!(null),
                "livebase",
                INVALID_TOKEN.to_string(),
            ),
            (
                "good token, wrong app",
                json!(bearer),
                json!(null),
                "other-app",
                "unknown app `other-app`".to_string(),
            ),
            (
                "wrong master in Basic",
                json!(basic_header("not-master", ADMIN_USER_TOKEN)),
                json!(null),
                "livebase",
                "invalid Basic credentials".to_string(),
            ),
            (
                "wrong user token in Basic",
                json!(basic_header(MASTER, "nope")),
                json!(null),
                "livebase",
                "invalid Basic credentials".to_string(),
            ),
            (
                "unknown scheme",
                json!("Token abc"),
                json!(null),
                "livebase",
                "unsupported Authorization scheme: use Bearer or Basic".to_string(),
            ),
            (
                "wrong anonymous token",
                json!(""),
                json!("nope"),
                "livebase",
                "invalid anonymous token".to_string(),
            ),
            (
                "no credentials",
                json!(null),
                json!(null),
                "livebase",
                "missing credentials: send Authorization or AnonymousToken".to_string(),
            ),
        ];
        for (what, header, anon, app_name, message) in cases {
            login(&s, header, anon, app_name);
            assert_eq!(
                first_of(&mut s, &["authorized", "notAuthorized"]).await,
                ("notAuthorized".to_string(), json!({ "message": message })),
                "{be}: {what}"
            );
            // Neither Alice's room nor the room of every authenticated socket.
            emit_users(&app, "to_alice", json!(what), &alice.email).await;
            assert_hears_nothing(&app, &mut control, &mut s, what).await;
        }
        let echo = s.call("echo", json!("hi")).await;
        assert_eq!(echo, json!({ "error": NOT_AUTHENTICATED }), "{be}");

        // It may still authenticate, and a later refusal keeps the identity it has.
        login(&s, json!(bearer), json!(null), "livebase");
        assert_eq!(
            s.expect("authorized").await,
            welcome(&alice, "User"),
            "{be}"
        );
        login(&s, json!("Bearer not-a-jwt"), json!(null), "livebase");
        assert_eq!(
            s.expect("notAuthorized").await,
            json!({ "message": INVALID_TOKEN }),
            "{be}"
        );
        emit_users(&app, "to_alice", json!("kept"), &alice.email).await;
        assert_eq!(s.expect("to_alice").await, json!("kept"), "{be}");
    }
}

// ---------------------------------------------------------------------------------------
// LoopBack `authentication`
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn loopback_authentication_authenticates_or_answers_unauthorized() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut control = anonymous(&app).await;

        let mut s = unauthenticated(&app).await;
        let malformed = [
            ("a bare string", json!(alice.token)),
            ("no id", json!({ "userId": alice.id })),
            ("numeric id", json!({ "id": 5 })),
            ("null id", json!({ "id": null })),
            ("null", json!(null)),
        ];
        for (what, data) in malformed {
            s.emit("authentication", &[data]);
            assert_eq!(
                first_of(&mut s, &["authenticated", "unauthorized"]).await,
                (
                    "unauthorized".to_string(),
                    json!({ "message": "authentication expects {id: <access token>}" })
                ),
                "{be}: {what}"
            );
            assert_hears_nothing(&app, &mut control, &mut s, what).await;
        }
        for (what, token) in [
            ("garbage", "not-a-jwt".to_string()),
            ("expired", access_token(alice.id, now() - 3600, now() - 120)),
        ] {
            s.emit("authentication", &[json!({ "id": token })]);
            assert_eq!(
                first_of(&mut s, &["authenticated", "unauthorized"]).await,
                (
                    "unauthorized".to_string(),
                    json!({ "message": INVALID_TOKEN })
                ),
                "{be}: {what}"
            );
            assert_hears_nothing(&app, &mut control, &mut s, what).await;
        }

        s.emit(
            "authentication",
            &[json!({ "id": alice.token, "userId": alice.id })],
        );
        assert_eq!(
            first_of(&mut s, &["authenticated", "unauthorized"]).await,
            ("authenticated".to_string(), welcome(&alice, "User")),
            "{be}"
        );
        assert_identity(
            &app,
            &mut s,
            &alice.email,
            "User",
            &bob.email,
            "ReadOnly",
            be,
        )
        .await;

        // LoopBack names of the objects it may read come with it: Bob's own note reaches
        // Bob's LoopBack socket only.
        let mut sb = unauthenticated(&app).await;
        sb.emit("authentication", &[json!({ "id": bob.token })]);
        assert_eq!(
            sb.expect("authenticated").await,
            welcome(&bob, "User"),
            "{be}"
        );
        let (status, post) = app
            .post("/1/objects/posts", &alice.cred(), json!({ "title": "p" }))
            .await;
        assert_eq!(status, 200, "{be}: {post}");
        assert_eq!(
            s.expect("/posts/POST").await["id"],
            json!(id_of(&post)),
            "{be}"
        );
        assert_eq!(
            sb.expect("/posts/POST").await["id"],
            json!(id_of(&post)),
            "{be}"
        );
        let (status, note) = app
            .post("/1/objects/notes", &bob.cred(), json!({ "title": "n" }))
            .await;
        assert_eq!(status, 200, "{be}: {note}");
        assert_eq!(
            sb.expect("/notes/POST").await["id"],
            json!(id_of(&note)),
            "{be}"
        );
        s.assert_none(&app, "/notes/POST").await;
    }
}

// ---------------------------------------------------------------------------------------
// Re-authentication replaces rooms
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn authenticating_again_as_another_user_replaces_every_room() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "ReadOnly").await;
        let mut witness = app.socket(&alice.token).await;
        assert_eq!(
            witness.call("join", json!("db-notes")).await["ok"],
            json!(true)
        );

        let mut s = app.socket(&alice.token).await;
        assert_eq!(
            s.call("join", json!("db-notes")).await["ok"],
            json!(true),
            "{be}"
        );
        assert_identity(
            &app,
            &mut s,
            &alice.email,
            "User",
            &bob.email,
            "ReadOnly",
            be,
        )
        .await;

        // Backand login as Bob: Alice's user, role and row rooms are gone.
        login(
            &s,
            json!(format!("Bearer {}", bob.token)),
            json!(null),
            "livebase",
        );
        assert_eq!(
            s.expect("authorized").await,
            welcome(&bob, "ReadOnly"),
            "{be}"
        );
        assert_identity(
            &app,
            &mut s,
            &bob.email,
            "ReadOnly",
            &alice.email,
            "User",
            be,
        )
        .await;
        let (status, note) = app
            .post(
                "/1/objects/notes",
                &alice.cred(),
                json!({ "title": "private" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: {note}");
        // Alice's own socket gets her note both ways; the re-authenticated one neither.
        assert_eq!(
            witness.expect("db_created").await["data"]["id"],
            json!(id_of(&note))
        );
        assert_eq!(
            witness.expect("/notes/POST").await["id"],
            json!(id_of(&note))
        );
        let marker = app.barrier().await;
        let seen = s.until_barrier(&marker).await;
        assert!(
            !seen
                .iter()
                .any(|(name, _)| name == "db_created" || name == "/notes/POST"),
            "{be}: socket now Bob's still got Alice's note: {seen:?}"
        );

        // LoopBack authentication back to Alice: Bob's rooms are gone in turn.
        s.emit("authentication", &[json!({ "id": alice.token })]);
        assert_eq!(
            s.expect("authenticated").await,
            welcome(&alice, "User"),
            "{be}"
        );
        assert_identity(
            &app,
            &mut s,
            &alice.email,
            "User",
            &bob.email,
            "ReadOnly",
            be,
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// Sign-out and role changes end a user's sockets
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sign_out_disconnects_that_users_sockets_only() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut by_handshake = app.socket(&alice.token).await;
        let mut by_login = unauthenticated(&app).await;
        login(
            &by_login,
            json!(format!("Bearer {}", alice.token)),
            json!(null),
            "livebase",
        );
        assert_eq!(by_login.expect("authorized").await, welcome(&alice, "User"));
        let mut bobs = app.socket(&bob.token).await;
        // Opened as Alice, then Bob's: it left Alice's rooms, so her sign-out spares it.
        let mut was_alice = app.socket(&alice.token).await;
        login(
            &was_alice,
            json!(format!("Bearer {}", bob.token)),
            json!(null),
            "livebase",
        );
        assert_eq!(was_alice.expect("authorized").await, welcome(&bob, "User"));

        let (status, body) = app.post("/1/user/signout", &alice.cred(), json!({})).await;
        assert_eq!(status, 200, "{be}: signout: {body}");
        assert!(
            by_handshake.closed_within(PATIENCE).await,
            "{be}: handshake socket of a signed-out user stays open"
        );
        assert!(
            by_login.closed_within(PATIENCE).await,
            "{be}: login socket of a signed-out user stays open"
        );

        // Bob's sockets are untouched and still Bob's.
        for s in [&mut bobs, &mut was_alice] {
            assert_identity(&app, s, &bob.email, "User", &alice.email, "ReadOnly", be).await;
        }

        // The signed-out token no longer opens a socket.
        let message = refusal(&app, json!({ "token": alice.token })).await;
        assert_eq!(message, INVALID_TOKEN, "{be}");
    }
}

#[tokio::test]
async fn a_password_change_disconnects_that_users_sockets_only() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        // Alice signed in twice (two browsers); she changes her password in the first.
        let (status, second) = app.login(&alice.email, &alice.password).await;
        assert_eq!(status, 200, "{be}: {second}");
        let second = second["access_token"].as_str().unwrap().to_string();
        let mut changing = app.socket(&alice.token).await;
        let mut elsewhere = app.socket(&second).await;
        let mut bobs = app.socket(&bob.token).await;

        let (status, body) = app
            .post(
                "/1/user/changePassword",
                &alice.cred(),
                json!({ "oldPassword": alice.password, "newPassword": "alice-new-pw" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: changePassword: {body}");
        // The other sign-in's tokens stopped working; a socket opened with one must not
        // stay.
        assert!(
            elsewhere.closed_within(PATIENCE).await,
            "{be}: a socket of another session of a user whose password changed stays open"
        );
        // The session that made the change keeps its socket, with its identity.
        for (socket, email) in [(&mut changing, &alice.email), (&mut bobs, &bob.email)] {
            assert_identity(&app, socket, email, "User", "nobody@x.test", "ReadOnly", be).await;
        }
        let message = refusal(&app, json!({ "token": second })).await;
        assert_eq!(message, INVALID_TOKEN, "{be}");
    }
}

#[tokio::test]
async fn a_role_change_disconnects_that_users_sockets_and_nothing_else_does() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut sa = app.socket(&alice.token).await;
        let mut sb = app.socket(&bob.token).await;
        let path = format!("/1/objects/users/{}", alice.id);

        // A change that is not about identity keeps the socket. The relay handles users
        // changes in order, so a post it relays later proves the first one was handled.
        let (status, body) = app
            .put(&path, &admin.cred(), json!({ "firstName": "Alicia" }))
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        let (status, post) = app
            .post(
                "/1/objects/posts",
                &bob.cred(),
                json!({ "title": "after rename" }),
            )
            .await;
        assert_eq!(status, 200, "{be}: {post}");
        assert_eq!(
            sa.expect("/posts/POST").await["id"],
            json!(id_of(&post)),
            "{be}: socket dropped for a firstName change"
        );

        let (status, body) = app
            .put(&path, &admin.cred(), json!({ "role": "ReadOnly" }))
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        assert!(
            sa.closed_within(PATIENCE).await,
            "{be}: socket of a user whose role changed stays open"
        );
        assert_identity(
            &app,
            &mut sb,
            &bob.email,
            "User",
            &alice.email,
            "ReadOnly",
            be,
        )
        .await;

        // Reconnecting with the same token gives the new role's rooms.
        let mut again = app.socket(&alice.token).await;
        assert_identity(
            &app,
            &mut again,
            &alice.email,
            "ReadOnly",
            &bob.email,
            "User",
            be,
        )
        .await;
        login(
            &again,
            json!(format!("Bearer {}", alice.token)),
            json!(null),
            "livebase",
        );
        assert_eq!(
            again.expect("authorized").await,
            welcome(&alice, "ReadOnly"),
            "{be}"
        );

        // Deleting a user ends their sockets too, and theirs only.
        let (status, body) = app
            .delete(&format!("/1/objects/users/{}", bob.id), &admin.cred())
            .await;
        assert_eq!(status, 200, "{be}: delete user: {body}");
        assert!(
            sb.closed_within(PATIENCE).await,
            "{be}: socket of a deleted user stays open"
        );
        emit_users(&app, "still_alice", json!(1), &alice.email).await;
        assert_eq!(again.expect("still_alice").await, json!(1), "{be}");
        let message = refusal(&app, json!({ "token": bob.token })).await;
        assert_eq!(message, INVALID_TOKEN, "{be}: deleted user's token");
    }
}

/// A socket that never authenticates gives its slot back when the timeout ends it.
#[tokio::test]
async fn the_auth_timeout_frees_the_connection_slot() {
    let app = Spawn::new(&Backend::Sqlite)
        .config(|c| {
            c.max_connections = 1;
            c.socket_auth_timeout_ms = 300;
        })
        .start()
        .await;
    let mut idle = unauthenticated(&app).await;
    assert_eq!(
        refusal(&app, json!({ "anonymousToken": ANON })).await,
        "connection limit reached: this server accepts 1 sockets at once; try again later"
    );
    assert_eq!(
        idle.expect("error").await["message"],
        "not authenticated within 300 ms; disconnecting"
    );
    assert!(idle.closed_within(PATIENCE).await, "idle socket not closed");
    let mut guest = connect_when_a_slot_frees(&app, "after the auth timeout").await;
    emit_all(&app, "x", json!(1)).await;
    assert_eq!(guest.expect("x").await, json!(1));
}

// ---------------------------------------------------------------------------------------
// Connection limit (no database involved: anonymous sockets)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn connections_over_the_limit_are_refused_until_one_closes() {
    let app = Spawn::new(&Backend::Sqlite)
        .config(|c| c.max_connections = 2)
        .start()
        .await;
    let limit_msg =
        "connection limit reached: this server accepts 2 sockets at once; try again later";
    let before = refusals(&app, "limit").await;

    let first = raw_v5(&app.base, json!({ "anonymousToken": ANON }))
        .await
        .expect("first connection accepted");
    // Refused handshakes do not hold a slot.
    for _ in 0..3 {
        assert_eq!(
            refusal(&app, json!({ "anonymousToken": "wrong" })).await,
            "invalid anonymous token"
        );
    }
    let mut second = anonymous(&app).await;

    // Full: authenticated or not, a third is refused, saying why.
    assert_eq!(
        refusal(&app, json!({ "anonymousToken": ANON })).await,
        limit_msg
    );
    let err = Sio::connect(&app.base, None)
        .await
        .err()
        .expect("unauthenticated third connection must be refused");
    assert_eq!(err, limit_msg);
    let after = refusals(&app, "limit").await;
    assert!(
        after >= before + 2.0,
        "refusals{{reason=\"limit\"}} went from {before} to {after}"
    );
    assert!(
        app.metrics_text()
            .await
            .contains("livebase_socket_refusals_total{reason=\"limit\"}"),
        "/metrics lacks the limit refusal counter"
    );

    // The connections held are unharmed.
    emit_all(&app, "x", json!(1)).await;
    assert_eq!(second.expect("x").await, json!(1));

    // A dropped TCP connection frees its slot …
    drop(first);
    let mut third = connect_when_a_slot_frees(&app, "after a dropped connection").await;
    // … as does a client's namespace disconnect.
    second.send_raw("41");
    let mut fourth = connect_when_a_slot_frees(&app, "after a client disconnect").await;

    // Full again: the count was freed once per close, not more.
    assert_eq!(
        refusal(&app, json!({ "anonymousToken": ANON })).await,
        limit_msg
    );
    emit_all(&app, "y", json!(2)).await;
    assert_eq!(third.expect("y").await, json!(2));
    assert_eq!(fourth.expect("y").await, json!(2));
}

// ---------------------------------------------------------------------------------------
// socket.io v2 clients: engine.io protocol 3, socket.io protocol 4
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn engine_io_v3_client_logs_in_and_receives_events() {
    for backend in backends() {
        let be = backend.name();
        let app = start(&backend).await;
        let alice = app.user("alice@x.test", "User").await;
        let mut ws = raw_ws(&app.base, 3).await;

        let open = next_frame(&mut ws, PATIENCE).await.expect("open packet");
        let handshake: Value = serde_json::from_str(
            open.strip_prefix('0')
                .unwrap_or_else(|| panic!("{be}: open packet {open}")),
        )
        .unwrap_or_else(|e| panic!("{be}: open packet {open}: {e}"));
        assert!(handshake["sid"].is_string(), "{be}: {handshake}");
        assert!(handshake["pingInterval"].is_u64(), "{be}: {handshake}");
        assert!(handshake["pingTimeout"].is_u64(), "{be}: {handshake}");

        // Protocol 4: the server connects the default namespace by itself.
        assert_eq!(
            next_frame(&mut ws, PATIENCE).await.as_deref(),
            Some("40"),
            "{be}: default namespace connect"
        );

        // Engine.io 3: the client pings, the server pongs.
        send(&mut ws, "2").await;
        assert_eq!(
            next_frame(&mut ws, PATIENCE).await.as_deref(),
            Some("3"),
            "{be}"
        );

        // Unauthenticated, it is refused commands.
        send(&mut ws, r#"42["echo","hi"]"#).await;
        let frame = next_frame(&mut ws, PATIENCE).await.expect("error frame");
        let event: Value = serde_json::from_str(frame.strip_prefix("42").unwrap_or("null"))
            .unwrap_or_else(|e| panic!("{be}: {frame}: {e}"));
        assert_eq!(
            event,
            json!(["error", { "event": "echo", "message": NOT_AUTHENTICATED }]),
            "{be}"
        );

        let login = json!(["login", format!("Bearer {}", alice.token), null, "livebase"]);
        send(&mut ws, &format!("42{login}")).await;
        let frame = next_frame(&mut ws, PATIENCE)
            .await
            .expect("authorized frame");
        let event: Value = serde_json::from_str(frame.strip_prefix("42").unwrap_or("null"))
            .unwrap_or_else(|e| panic!("{be}: {frame}: {e}"));
        assert_eq!(
            event,
            json!(["authorized", welcome(&alice, "User")]),
            "{be}"
        );

        emit_users(&app, "hello", json!({ "n": 1 }), &alice.email).await;
        assert_eq!(
            next_frame(&mut ws, PATIENCE).await.as_deref(),
            Some(r#"42["hello",{"n":1}]"#),
            "{be}"
        );
        send(&mut ws, r#"427["echo","hi"]"#).await;
        assert_eq!(
            next_frame(&mut ws, PATIENCE).await.as_deref(),
            Some(r#"437["hi"]"#),
            "{be}: echo ack"
        );
        send(&mut ws, "2").await;
        assert_eq!(
            next_frame(&mut ws, PATIENCE).await.as_deref(),
            Some("3"),
            "{be}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Token expiry
// ---------------------------------------------------------------------------------------

/// A socket authenticated with an access token lives as long as the token would be
/// accepted over HTTP: then it is told why and disconnected, by every way of
/// authenticating with a token. An anonymous socket (no expiry) stays.
#[tokio::test]
async fn a_socket_is_disconnected_when_its_access_token_expires() {
    let backend = &backends()[0];
    let app = objects(Spawn::new(backend))
        .config(|c| c.access_token_ttl = 1)
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let issued = Instant::now();
    let mut by_handshake = app.socket(&alice.token).await;
    let mut by_login = unauthenticated(&app).await;
    by_login.emit("login", &[json!(format!("Bearer {}", alice.token))]);
    by_login.expect("authorized").await;
    let mut by_authentication = unauthenticated(&app).await;
    by_authentication.emit("authentication", &[json!({ "id": alice.token })]);
    by_authentication.expect("authenticated").await;
    let guest = anonymous(&app).await;

    // exp is 1 s after issue (whole seconds), plus the 5 s leeway tokens get over HTTP.
    for (name, s) in [
        ("handshake", &mut by_handshake),
        ("login", &mut by_login),
        ("authentication", &mut by_authentication),
    ] {
        let said = s
            .try_expect("error", Duration::from_secs(12))
            .await
            .unwrap_or_else(|| panic!("{name}: no expiry notice"));
        assert!(
            said["message"].as_str().unwrap().contains("expired"),
            "{name}: {said}"
        );
        assert!(s.closed_within(PATIENCE).await, "{name}: still connected");
    }
    assert!(
        issued.elapsed() >= Duration::from_secs(4),
        "closed before the token's leeway ended: {:?}",
        issued.elapsed()
    );
    // The token is refused over HTTP too by now, and the anonymous socket is still in.
    let (status, _) = app.get("/1/objects/posts", &alice.cred()).await;
    assert_eq!(status, 401);
    assert_eq!(guest.call("echo", json!("here")).await, json!("here"));
}
