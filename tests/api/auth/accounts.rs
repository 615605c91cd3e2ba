//! Sign-up, sign-out, password change and reset, secrets on disk, role changes.

use super::*;

#[tokio::test]
async fn signup_creates_a_user_who_can_sign_in() {
    for backend in backends() {
        let app = Spawn::new(&backend).start().await;
        let be = backend.name();
        let (status, body) = signup(
            &app,
            Some(SIGNUP),
            json!({ "email": "Fay@X.io", "password": "fay-secret", "confirmPassword": "fay-secret",
                    "firstName": "Fay", "lastName": "Wray" }),
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
        // Names not given are null in the answer, the profile and the stored row alike.
        let gus = text(&body, "userId");
        assert_eq!(body["firstName"], Value::Null, "{be}: {body}");
        assert_eq!(body["lastName"], Value::Null, "{be}: {body}");
        assert_eq!(body["fullName"], "", "{be}: {body}");
        let (_, profile) = app
            .get(
                "/api/account/profile",
                &Cred::Bearer(text(&body, "access_token")),
            )
            .await;
        assert_eq!(profile["lastName"], Value::Null, "{be}: {profile}");
        let rows = app.all_rows("users").await;
        let row = rows
            .iter()
            .find(|r| r["__metadata"]["id"] == gus)
            .unwrap_or_else(|| panic!("{be}: user {gus} not listed: {rows:?}"));
        assert_eq!(row["lastName"], Value::Null, "{be}: {row}");
        assert_eq!(row["firstName"], Value::Null, "{be}: {row}");
        // Given only a first name: the last stays null, the full name is the first.
        let (_, body) = signup(
            &app,
            Some(SIGNUP),
            json!({ "email": "hal@x.io", "password": "hal-secret", "firstName": "Hal" }),
        )
        .await;
        assert_eq!(body["firstName"], "Hal", "{be}: {body}");
        assert_eq!(body["lastName"], Value::Null, "{be}: {body}");
        assert_eq!(body["fullName"], "Hal", "{be}: {body}");
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

/// The SDK's `signup(first, last, email, pw, confirm, parameters)`: each parameter fills
/// the `users` field of that name; any other name is refused and nothing is created.
#[tokio::test]
async fn signup_parameters_fill_user_fields_and_unknown_ones_are_refused() {
    let users =
        json!({ "name": "users", "fields": { "nickname": { "type": "string", "maxLength": 10 } } });
    for backend in backends() {
        let app = Spawn::new(&backend)
            .schema("users.json", users.clone())
            .start()
            .await;
        let be = backend.name();
        let body = |email: &str, parameters: Value| {
            json!({ "email": email, "password": "ivy-secret", "confirmPassword": "ivy-secret",
                    "firstName": "Ivy", "lastName": "Ng", "parameters": parameters })
        };
        let before = user_count(&app).await;
        let cases = [
            (
                json!({ "source": "web" }),
                400,
                "signup parameter `source` is not a field of users",
            ),
            (
                json!({ "role": "Admin" }),
                403,
                "signup parameter `role` cannot be set by signing up",
            ),
            (
                json!({ "password": "other-pw" }),
                403,
                "signup parameter `password` cannot be set by signing up",
            ),
            (
                json!({ "firstName": "Eve" }),
                400,
                "signup parameter `firstName` is already given in the body",
            ),
            (
                json!({ "nickname": 7 }),
                400,
                "field `nickname` expects a string, got a number",
            ),
            (
                json!({ "nickname": "far-too-long-a-name" }),
                400,
                "field `nickname` is longer than 10 characters",
            ),
            (json!(["nickname"]), 400, "`parameters` must be an object"),
        ];
        for (parameters, want, message) in cases {
            let (status, answer) =
                signup(&app, Some(SIGNUP), body("ivy@x.io", parameters.clone())).await;
            assert_eq!(
                (status, &answer),
                (want, &json!({ "Message": message })),
                "{be}: parameters {parameters}"
            );
        }
        assert_eq!(
            user_count(&app).await,
            before,
            "{be}: a refused signup created a user"
        );

        let (status, answer) = signup(
            &app,
            Some(SIGNUP),
            body("ivy@x.io", json!({ "nickname": "ivy" })),
        )
        .await;
        assert_eq!(status, 200, "{be}: {answer}");
        let row = app
            .row("users", text(&answer, "userId").parse().unwrap())
            .await;
        assert_eq!(row["nickname"], "ivy", "{be}: {row}");
        assert_eq!(row["role"], "User", "{be}: {row}");
        // `null` and `{}` are no parameters at all.
        for (email, parameters) in [("jo@x.io", Value::Null), ("kit@x.io", json!({}))] {
            let (status, answer) = signup(&app, Some(SIGNUP), body(email, parameters)).await;
            assert_eq!(status, 200, "{be}: {email}: {answer}");
        }
    }
}

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

        // Another sign-in of the same user, made before the change: it must end.
        let other = login_ok(&app, "lee@x.io", "lee-old-pw").await;
        let other_access = Cred::Bearer(text(&other, "access_token"));
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
        let (status, body) = app.get("/api/account/profile", &other_access).await;
        assert_eq!(
            (status, body),
            (401, invalid_token()),
            "{be}: another session's token from before the change"
        );
        let (status, body) = token_form(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &text(&other, "refresh_token")),
            ],
        )
        .await;
        assert_eq!(
            (status, body),
            (401, grant_refused("invalid or expired token")),
            "{be}: another session's refresh token from before the change"
        );
        // The session that made the change goes on with the token it holds, as the
        // Backand SDK does: a second change in a row, then a refresh.
        let (status, _) = app.get("/api/account/profile", &access).await;
        assert_eq!(status, 200, "{be}: the changing session stays signed in");
        let (status, body) = app
            .post(
                "/1/user/changePassword",
                &access,
                change("lee-new-pw", "lee-newer-pw"),
            )
            .await;
        assert_eq!((status, &body), (200, &json!({})), "{be}: second change");
        for stale in ["lee-old-pw", "lee-new-pw"] {
            let (status, _) = app.login("lee@x.io", stale).await;
            assert_eq!(status, 400, "{be}: {stale} after the second change");
        }
        let (status, refreshed) = token_form(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &text(&tokens, "refresh_token")),
            ],
        )
        .await;
        assert_eq!(
            status, 200,
            "{be}: the changing session refreshes: {refreshed}"
        );
        let fresh = login_ok(&app, "lee@x.io", "lee-newer-pw").await;
        for (what, token) in [
            ("refreshed", text(&refreshed, "access_token")),
            ("fresh sign-in", text(&fresh, "access_token")),
        ] {
            let (status, _) = app.get("/api/account/profile", &Cred::Bearer(token)).await;
            assert_eq!(status, 200, "{be}: {what} token after the changes");
        }
        // A later change by another session ends the first one after all.
        let fresh_access = Cred::Bearer(text(&fresh, "access_token"));
        let (status, _) = app
            .post(
                "/1/user/changePassword",
                &fresh_access,
                change("lee-newer-pw", "lee-newest-pw"),
            )
            .await;
        assert_eq!(status, 200, "{be}: third change, by the new session");
        let (status, body) = app.get("/api/account/profile", &access).await;
        assert_eq!(
            (status, body),
            (401, invalid_token()),
            "{be}: the first session after another session's change"
        );
        let (status, _) = app.get("/api/account/profile", &fresh_access).await;
        assert_eq!(status, 200, "{be}: the session that changed it last");
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
        // Backand answered both with an empty body, and SDK callers compare with "".
        assert_eq!((status, &known), (200, &json!("")), "{be}: known user");
        let tokens = captured.take();
        assert_eq!(tokens.len(), 1, "{be}: one reset token logged: {tokens:?}");
        let token = tokens[0].clone();
        let raw = app
            .client
            .post(app.url("/1/user/requestResetPassword"))
            .json(&json!({ "username": "nobody@x.io" }))
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status(), 200, "{be}");
        assert!(
            raw.headers().get("content-type").is_none(),
            "{be}: an empty answer claims a type: {:?}",
            raw.headers()
        );
        assert!(raw.bytes().await.unwrap().is_empty(), "{be}: body");
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
            (200, &json!("")),
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
            (200, &json!("")),
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
        if let Backend::Postgres(_) = backend {
            // Shared by every node in lb_secrets (tests/api/cluster), not one node's file.
            assert!(!path.exists(), "{be}: no secrets.json on PostgreSQL");
        } else {
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

#[tokio::test]
/// The first start keeps what was in force (here: the flags) in `secrets.json` (on
/// PostgreSQL in `lb_secrets`), so a later start without the flags accepts the same
/// credentials, and only those.
async fn secrets_in_force_on_first_start_are_kept_for_later_starts() {
    for backend in backends() {
        let be = backend.name();
        let app = Spawn::new(&backend).start().await;
        let path = app.data_dir.path().join("secrets.json");
        let written = std::fs::read_to_string(&path).ok();
        let file: Value = match (&backend, &written) {
            (Backend::Sqlite, Some(written)) => serde_json::from_str(written).unwrap(),
            (Backend::Postgres(_), None) => json!({
                "masterToken": MASTER, "anonymousToken": ANON,
                "signupToken": SIGNUP, "jwtSecret": JWT_SECRET,
            }),
            _ => panic!("{be}: secrets.json: {written:?}"),
        };
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
            std::fs::read_to_string(&path).ok(),
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

/// `livebase admin reset-password`, the real binary against the database of a running
/// server: the new password signs in, the old one does not, and the user's earlier
/// tokens stop working (within the server's 5 s credentials cache).
#[tokio::test]
async fn the_admin_reset_password_command_sets_the_password_and_ends_sessions() {
    for be in backends() {
        let app = Spawn::new(&be).start().await;
        let (status, before) = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(status, 200, "{be:?}: {before}");
        let old = Cred::Bearer(before["access_token"].as_str().unwrap().to_string());
        let run = |email: &str, password: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_livebase"))
                .arg("--data-dir")
                .arg(app.data_dir.path())
                .args(["--database-url", &app.database_url])
                .args(["admin", "reset-password", email, "--password", password])
                .output()
                .unwrap()
        };
        let nobody = run("nobody@test.local", "whatever-123");
        assert!(!nobody.status.success(), "{be:?}");
        assert!(
            String::from_utf8_lossy(&nobody.stderr).contains("nobody@test.local"),
            "{be:?}: {nobody:?}"
        );
        let short = run(ADMIN_EMAIL, "x");
        assert!(!short.status.success(), "{be:?}: {short:?}");
        assert_eq!(
            app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.0,
            200,
            "{be:?}: unchanged"
        );

        let done = run(ADMIN_EMAIL, "reset-from-the-cli");
        assert!(done.status.success(), "{be:?}: {done:?}");
        assert_eq!(
            app.login(ADMIN_EMAIL, "reset-from-the-cli").await.0,
            200,
            "{be:?}"
        );
        assert_ne!(
            app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.0,
            200,
            "{be:?}"
        );
        let mut status = 200;
        for _ in 0..80 {
            status = app.get("/api/account/profile", &old).await.0;
            if status == 401 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status, 401, "{be:?}: the earlier token still works");
    }
}
