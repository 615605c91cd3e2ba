//! `/token` grants and the three kinds of credentials.

use super::*;

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
                "username": ADMIN_EMAIL, "firstName": "Admin", "lastName": null,
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
