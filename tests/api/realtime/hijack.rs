//! No id that reaches another client acts as a credential. socketioxide's socket id is
//! the engine.io session id, which lets whoever holds it poll, post into or upgrade the
//! session as its owner; members of a channel see a public id instead.

use serde_json::json;

use super::objects;
use super::support::titles;
use crate::common::{ANON, Spawn, backends};
use crate::sio::{Polling, Sio, names_a_session, polling_url, post_polling};

#[tokio::test]
async fn a_polling_senders_chan_out_id_opens_nothing() {
    let backend = &backends()[0];
    let app = objects(Spawn::new(backend)).start().await;
    let alice = app.user("alice@x.test", "User").await;

    // Alice is on long-polling only, and speaks in a channel an anonymous socket joined.
    let victim = Polling::connect(&app.base, json!({ "token": alice.token })).await;
    let mut eve = Sio::connect(&app.base, Some(json!({ "anonymousToken": ANON })))
        .await
        .unwrap();
    assert_eq!(eve.call("join", json!("lobby")).await["ok"], json!(true));
    let (status, _) = victim
        .post(r#"42["chan_in",{"channel":"lobby","data":"hello"}]"#)
        .await;
    assert_eq!(status, 200);
    let got = eve.expect("chan_out").await;
    assert_eq!(got["data"], "hello");
    let handed = got["sid"].as_str().expect("a sender id").to_string();
    assert_ne!(handed, victim.sid, "members never see the session id");

    // Eve tries it as the session: a Sails create over polling, a poll, an upgrade.
    let client = reqwest::Client::new();
    let url = polling_url(&app.base, Some(&handed));
    let forged =
        r#"421["post",{"method":"post","url":"/1/objects/posts","data":{"title":"forged"}}]"#;
    let (_, body) = post_polling(&client, &url, forged).await;
    assert!(
        body.contains("Session ID unknown"),
        "post as the victim: {body}"
    );
    assert!(!names_a_session(&app.base, &handed).await);
    // The probe can tell a live session: the victim's own id is one.
    assert!(names_a_session(&app.base, &victim.sid).await);
    assert!(
        titles(&app, "posts").await.is_empty(),
        "nothing was created"
    );

    // The victim's session is untouched and still its own.
    let (status, _) = victim
        .post(r#"423["post",{"method":"post","url":"/1/objects/posts","data":{"title":"mine"}}]"#)
        .await;
    assert_eq!(status, 200);
    let ack = victim.next_packet(|p| p.starts_with("433")).await;
    assert!(ack.contains(r#""statusCode":200"#), "{ack}");
    assert_eq!(titles(&app, "posts").await, vec!["mine".to_string()]);
}
