//! Per-address rate limits on the credential routes (`/token`, sign-up, password
//! reset): the burst passes, the next attempt gets a clear 429 with `Retry-After`, and
//! neither another address nor any other route is affected. Virtual requests over a
//! socket count against the socket's address.

use serde_json::json;

use crate::common::*;
use crate::sio::Sio;

/// A client bound to `source` (127.0.0.x), so the test can speak from two addresses.
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(source))
        .build()
        .unwrap()
}

async fn bad_login(client: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    client
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", ADMIN_EMAIL),
            ("password", "not-the-password"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn credential_routes_are_limited_per_address() {
    let backend = Backend::Sqlite;
    let app = Spawn::new(&backend)
        .config(|c| {
            c.auth_rate_per_minute = 6;
            c.auth_rate_burst = 3;
        })
        .start()
        .await;
    let here = client_from([127, 0, 0, 1]);

    // The burst: wrong passwords are answered as such.
    for _ in 0..3 {
        assert_eq!(bad_login(&here, &app).await.status(), 400);
    }
    // Then a clear refusal, with when to retry, and no attempt was made.
    let refused = bad_login(&here, &app).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value = refused.json().await.unwrap();
    let message = body["Message"].as_str().unwrap();
    assert!(
        message.contains("too many sign-in or sign-up attempts"),
        "{message}"
    );

    // Sign-up shares the budget: refused before anything is written.
    let signup = here
        .post(app.url("/1/user/signup"))
        .header("SignUpToken", SIGNUP)
        .json(&json!({ "email": "flood@x.test", "password": "password-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 429);
    let users = app.all_rows("users").await;
    assert!(
        !users.iter().any(|u| u["email"] == "flood@x.test"),
        "no user was created"
    );

    // Another address is unaffected, and can sign in.
    let there = client_from([127, 0, 0, 2]);
    let login = there
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let token = login.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    // Other routes from the limited address are unaffected.
    let profile = here
        .get(app.url("/api/account/profile"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 200);

    // A socket from the limited address cannot go around the limit with a virtual
    // request.
    let socket = Sio::with_token(&app.base, &token).await;
    let answer = socket
        .call(
            "post",
            json!({ "url": "/token", "data": { "grant_type": "password", "username": ADMIN_EMAIL, "password": "x" } }),
        )
        .await;
    assert_eq!(answer["statusCode"], 429, "{answer}");
}

#[tokio::test]
async fn the_limit_can_be_turned_off() {
    let backend = Backend::Sqlite;
    let app = Spawn::new(&backend)
        .config(|c| c.auth_rate_per_minute = 0)
        .start()
        .await;
    let here = client_from([127, 0, 0, 1]);
    for _ in 0..25 {
        assert_eq!(bad_login(&here, &app).await.status(), 400);
    }
}
