//! Resuming after a reconnect (`auth: {token, lastSeq}`): before any live event, the
//! socket gets every event after `lastSeq` that its identity may read now, through the
//! rooms it joins (identity rooms at connection, channels joined within the window),
//! then `recovered`; nothing it may not read, nothing twice. Bad `lastSeq` values are
//! refused at the handshake; a number never given says `recovered: false`.

use std::time::Duration;

use serde_json::{Value, json};

use super::objects;
use crate::common::{Spawn, TestApp, backends};
use crate::sio::{Incoming, Sio};

/// `objects` plus `secrets`: readable by role User only, with LoopBack names.
fn with_secrets(spawn: Spawn<'_>) -> Spawn<'_> {
    objects(spawn).schema(
        "secrets.json",
        json!({ "name": "secrets", "fields": { "title": { "type": "string" } },
                "permissions": { "read": ["User"], "create": ["User"], "update": ["User"], "delete": ["User"] },
                "events": ["loopback"] }),
    )
}

async fn resume_socket(app: &TestApp, token: &str, last_seq: Value) -> Result<Sio, String> {
    Sio::connect(
        &app.base,
        Some(json!({ "token": token, "lastSeq": last_seq })),
    )
    .await
}

/// Everything received until `recovered` (consumed), as `(name, args)`.
async fn until_recovered(s: &mut Sio) -> (Vec<(String, Vec<Value>)>, Value) {
    let mut seen = Vec::new();
    loop {
        match s.next(Duration::from_secs(10)).await {
            Some(Incoming::Event(name, mut args)) if name == "recovered" => {
                return (seen, args.remove(0));
            }
            Some(Incoming::Event(name, args)) => seen.push((name, args)),
            other => panic!("no `recovered` before {other:?}; saw {seen:?}"),
        }
    }
}

/// The sequence number an emit carries: `seq` in its payload, or `{seq}` second.
fn seq_of(args: &[Value]) -> Option<u64> {
    args.first()
        .and_then(|a| a.get("seq"))
        .or_else(|| args.get(1).and_then(|a| a.get("seq")))
        .and_then(Value::as_u64)
}

async fn create(app: &TestApp, who: &crate::common::User, object: &str, title: &str) -> i64 {
    let (status, body) = app
        .post(
            &format!("/1/objects/{object}"),
            &who.cred(),
            json!({ "title": title }),
        )
        .await;
    assert_eq!(status, 200, "{object} {title}: {body}");
    crate::common::id_of(&body)
}

#[tokio::test]
async fn a_reconnecting_socket_gets_what_it_may_read_that_it_missed_then_recovered() {
    for backend in backends() {
        let name = backend.name();
        let app = with_secrets(Spawn::new(&backend)).start().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut first = app.socket(&alice.token).await;
        assert_eq!(
            first.call("join", json!("db-notes")).await["ok"],
            json!(true)
        );
        create(&app, &alice, "notes", "seen").await;
        let seen = first.expect("db_created").await;
        let last = seen["seq"].as_u64().expect("numbered");
        drop(first);

        // While away: rows alice may read (posts, her own notes) and may not (bob's
        // notes, under owner row security).
        let post = create(&app, &bob, "posts", "bob's post").await;
        let bobs_note = create(&app, &bob, "notes", "bob's note").await;
        let her_note = create(&app, &alice, "notes", "her note").await;

        let mut back = resume_socket(&app, &alice.token, json!(last))
            .await
            .unwrap();
        // At connection: her identity rooms, i.e. the LoopBack names of what she may
        // read, in order, then `recovered`.
        let (replayed, recovered) = until_recovered(&mut back).await;
        assert_eq!(recovered["recovered"], json!(true), "{name}: {recovered}");
        let names: Vec<&str> = replayed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["/posts/POST", "/notes/POST"],
            "{name}: {replayed:?}"
        );
        assert_eq!(replayed[0].1[0]["id"], json!(post));
        assert_eq!(replayed[1].1[0]["id"], json!(her_note));
        let seqs: Vec<u64> = replayed.iter().filter_map(|(_, a)| seq_of(a)).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > last,
            "{seqs:?}"
        );

        // Joining the channel it had replays that channel's missed events, and only
        // those she may read; the ack says it recovered.
        let ack = back.call("join", json!("db-notes")).await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        assert_eq!(ack["recovered"], json!(true), "{ack}");
        let got = back.expect("db_created").await;
        assert_eq!(got["data"]["id"], json!(her_note), "{name}: {got}");
        assert!(got["seq"].as_u64().unwrap() > last);
        // Then live, once: nothing replayed twice, bob's note never.
        let live = create(&app, &alice, "notes", "live").await;
        let got = back.expect("db_created").await;
        assert_eq!(
            got["data"]["id"],
            json!(live),
            "{name}: no replay twice: {got}"
        );
        let marker = app.barrier().await;
        let rest = back.until_barrier(&marker).await;
        assert!(
            rest.iter()
                .all(|(n, a)| n != "db_created" || a[0]["data"]["id"] != json!(bobs_note)),
            "{name}: bob's note leaked: {rest:?}"
        );
        assert!(
            rest.iter().all(|(n, _)| n != "recovered"),
            "{name}: {rest:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_user_demoted_while_away_gets_nothing_they_can_no_longer_read() {
    for backend in backends() {
        let name = backend.name();
        let app = with_secrets(Spawn::new(&backend)).start().await;
        let admin = app.admin().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut first = app.socket(&alice.token).await;
        assert_eq!(
            first.call("join", json!("db-secrets")).await["ok"],
            json!(true)
        );
        create(&app, &bob, "secrets", "seen").await;
        let last = first.expect("db_created").await["seq"].as_u64().unwrap();
        drop(first);

        let secret = create(&app, &bob, "secrets", "while away").await;
        let post = create(&app, &bob, "posts", "while away").await;
        let (status, body) = app
            .put(
                &format!("/1/objects/users/{}", alice.id),
                &admin.cred(),
                json!({ "role": "ReadOnly" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, token) = app.login(&alice.email, &alice.password).await;
        assert_eq!(status, 200, "{token}");
        let token = token["access_token"].as_str().unwrap().to_string();

        let mut back = resume_socket(&app, &token, json!(last)).await.unwrap();
        let (replayed, recovered) = until_recovered(&mut back).await;
        assert_eq!(recovered["recovered"], json!(true), "{name}: {recovered}");
        let names: Vec<&str> = replayed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["/posts/POST"],
            "{name}: only what ReadOnly reads: {replayed:?}"
        );
        assert_eq!(replayed[0].1[0]["id"], json!(post));
        let ack = back.call("join", json!("db-secrets")).await;
        assert_ne!(
            ack["ok"],
            json!(true),
            "{name}: ReadOnly may not join db-secrets: {ack}"
        );
        let marker = app.barrier().await;
        let rest = back.until_barrier(&marker).await;
        assert!(
            rest.iter().all(|(_, a)| a
                .first()
                .and_then(|d| d.get("data"))
                .and_then(|d| d.get("id"))
                != Some(&json!(secret))),
            "{name}: {rest:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_last_seq_values_are_refused_at_the_handshake() {
    let backend = &backends()[0];
    let app = objects(Spawn::new(backend)).start().await;
    let alice = app.user("alice@x.test", "User").await;
    for bad in [
        json!(-1),
        json!(1.5),
        json!("abc"),
        json!({ "seq": 1 }),
        json!([1]),
        json!(""),
        json!("1".repeat(30)),
    ] {
        let refused = resume_socket(&app, &alice.token, bad.clone()).await;
        let Err(message) = refused else {
            panic!("lastSeq {bad} was accepted");
        };
        assert!(message.contains("lastSeq"), "{bad}: {message}");
    }
    // A decimal string is a number too.
    let mut s = resume_socket(&app, &alice.token, json!("0")).await.unwrap();
    let (_, recovered) = until_recovered(&mut s).await;
    assert_eq!(recovered["recovered"], json!(true), "{recovered}");
    app.stop().await;
}

#[tokio::test]
async fn a_number_never_given_says_recovered_false_and_zero_replays_everything() {
    let backend = &backends()[0];
    let app = objects(Spawn::new(backend)).start().await;
    let alice = app.user("alice@x.test", "User").await;
    for i in 0..5 {
        create(&app, &alice, "posts", &format!("p{i}")).await;
    }
    let (_, head) = app.state.store.event_bounds().await.unwrap();
    // A number far ahead of any given: after waiting for the relay to catch up with it
    // (another node may have delivered further), nothing to replay, and not recovered.
    let mut ahead = resume_socket(&app, &alice.token, json!(head + 1000))
        .await
        .unwrap();
    let (replayed, recovered) = until_recovered(&mut ahead).await;
    assert_eq!(recovered["recovered"], json!(false), "{recovered}");
    assert!(replayed.is_empty(), "{replayed:?}");
    assert_eq!(recovered["seq"], json!(head));
    // Everything replayable from the start: recovered.
    let mut all = resume_socket(&app, &alice.token, json!(0)).await.unwrap();
    let (replayed, recovered) = until_recovered(&mut all).await;
    assert_eq!(recovered["recovered"], json!(true), "{recovered}");
    assert_eq!(replayed.len(), 5, "the five LoopBack names: {replayed:?}");
    app.stop().await;
}

#[tokio::test]
async fn clients_without_handshake_auth_resume_with_last_seq_in_the_url() {
    let backend = &backends()[0];
    let app = objects(Spawn::new(backend)).start().await;
    let alice = app.user("alice@x.test", "User").await;
    create(&app, &alice, "posts", "before").await;
    let (_, last) = app.state.store.event_bounds().await.unwrap();
    let post = create(&app, &alice, "posts", "missed").await;
    let query = format!("&token={}&lastSeq={last}", alice.token);
    let mut s = Sio::connect_request(&app.base, &query, &[], None)
        .await
        .unwrap();
    let (replayed, recovered) = until_recovered(&mut s).await;
    assert_eq!(recovered["recovered"], json!(true), "{recovered}");
    let names: Vec<&str> = replayed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["/posts/POST"], "{replayed:?}");
    assert_eq!(replayed[0].1[0]["id"], json!(post));
    let bad = format!("&token={}&lastSeq=soon", alice.token);
    let refused = Sio::connect_request(&app.base, &bad, &[], None).await;
    assert!(
        refused.as_ref().is_err_and(|m| m.contains("lastSeq")),
        "{:?}",
        refused.err()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_sails_list_within_the_window_replays_the_rows_it_missed() {
    for backend in backends() {
        let name = backend.name();
        let app = objects(Spawn::new(&backend)).start().await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        create(&app, &alice, "notes", "before").await;
        let (_, last) = app.state.store.event_bounds().await.unwrap();
        let hers = create(&app, &alice, "notes", "hers").await;
        create(&app, &bob, "notes", "bob's").await;
        let mut s = resume_socket(&app, &alice.token, json!(last))
            .await
            .unwrap();
        until_recovered(&mut s).await;
        let ack = super::support::req(&s, "get", "/notes", Value::Null).await;
        assert_eq!(ack["statusCode"], 200, "{name}: {ack}");
        assert_eq!(ack["recovered"], json!(true), "{name}: {ack}");
        let got = s.expect("notes").await;
        assert_eq!(got["verb"], "created", "{name}: {got}");
        assert_eq!(got["id"], json!(hers), "{name}: only her own note: {got}");
        assert!(got["seq"].as_u64().unwrap() > last);
        s.assert_none(&app, "notes").await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_room_left_in_the_window_replays_nothing_when_joined_again() {
    for backend in backends() {
        let name = backend.name();
        let app = objects(Spawn::new(&backend)).start().await;
        let alice = app.user("alice@x.test", "User").await;
        create(&app, &alice, "posts", "before").await;
        let (_, last) = app.state.store.event_bounds().await.unwrap();
        let missed = create(&app, &alice, "posts", "missed").await;
        let mut s = resume_socket(&app, &alice.token, json!(last))
            .await
            .unwrap();
        until_recovered(&mut s).await;
        let ack = s.call("join", json!("db-posts")).await;
        assert_eq!(ack["recovered"], json!(true), "{name}: {ack}");
        let got = s.expect("db_created").await;
        assert_eq!(got["data"]["id"], json!(missed), "{name}: {got}");

        // Left and joined again in the window: it had that event already.
        s.call("leave", json!("db-posts")).await;
        let ack = s.call("join", json!("db-posts")).await;
        assert_eq!(ack["ok"], json!(true), "{name}: {ack}");
        s.assert_none(&app, "db_created").await;
        // Authenticating again leaves every room: the same again.
        s.emit("login", &[json!(alice.token), Value::Null, Value::Null]);
        s.expect("authorized").await;
        let ack = s.call("join", json!("db-posts")).await;
        assert_eq!(ack["ok"], json!(true), "{name}: {ack}");
        s.assert_none(&app, "db_created").await;
        // Still a member: what comes next comes once.
        let live = create(&app, &alice, "posts", "live").await;
        let got = s.expect("db_created").await;
        assert_eq!(got["data"]["id"], json!(live), "{name}: {got}");
        s.assert_none(&app, "db_created").await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_row_deleted_in_the_window_is_not_replayed_again_to_its_subscriber() {
    for backend in backends() {
        let name = backend.name();
        let app = objects(Spawn::new(&backend)).start().await;
        let alice = app.user("alice@x.test", "User").await;
        let note = create(&app, &alice, "notes", "before").await;
        let (_, last) = app.state.store.event_bounds().await.unwrap();
        let mut s = resume_socket(&app, &alice.token, json!(last))
            .await
            .unwrap();
        until_recovered(&mut s).await;
        let ack = super::support::req(&s, "get", &format!("/notes/{note}"), Value::Null).await;
        assert_eq!(ack["recovered"], json!(true), "{name}: {ack}");
        let (status, body) = app
            .delete(&format!("/1/objects/notes/{note}"), &alice.cred())
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let got = s.expect("notes").await;
        assert_eq!(got["verb"], "destroyed", "{name}: {got}");
        // Watching the object now, in the window: the row's events came already.
        let ack = super::support::req(&s, "get", "/notes", Value::Null).await;
        assert_eq!(ack["recovered"], json!(true), "{name}: {ack}");
        s.assert_none(&app, "notes").await;
        app.stop().await;
    }
}

/// A `memos` afterCreate that emits to its writer and to role User, then fails if the
/// title asks it to (its emits are dropped then).
const AFTER_ANNOUNCE: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  socket.emitUsers("mine", { id: dbRow.id, of: parameters.seq }, [userProfile.username]);
  socket.emitRole("for_users", { id: dbRow.id }, "User");
  if (userInput.title === "fail") throw new Error("failed after emitting");
}"#;

#[tokio::test]
async fn after_actions_emits_are_numbered_after_their_write_and_replayed() {
    for backend in backends() {
        let name = backend.name();
        let app = objects(Spawn::new(&backend))
            .action("memos/afterCreate/announce.js", AFTER_ANNOUNCE)
            .start()
            .await;
        let alice = app.user("alice@x.test", "User").await;
        let bob = app.user("bob@x.test", "User").await;
        let mut s = app.socket(&alice.token).await;
        let first = create(&app, &alice, "memos", "first").await;
        // Live: both emits of the write's after action share one number, the log entry
        // after the write's own.
        let mine = s.expect_args("mine").await;
        let for_users = s.expect_args("for_users").await;
        assert_eq!(mine[0]["id"], json!(first), "{name}: {mine:?}");
        let write_seq = mine[0]["of"].as_u64().expect("parameters.seq");
        let seq = seq_of(&mine[1..]).expect("a numbered emit");
        assert!(seq > write_seq, "{name}: emit {seq}, write {write_seq}");
        assert_eq!(seq_of(&for_users[1..]), Some(seq), "{name}: {for_users:?}");
        // In the log: the emits' entry names the write, whose after hooks it settled in
        // the same statement.
        let logged = app
            .state
            .store
            .events_after(write_seq - 1, 10)
            .await
            .unwrap();
        let entries: Vec<_> = logged
            .iter()
            .map(|e| {
                (
                    e.seq,
                    e.object.as_str(),
                    e.verb.as_str(),
                    e.row_id,
                    e.after_pending,
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                (write_seq, "memos", "created", first, false),
                (seq, "", "emitted", write_seq as i64, false),
            ],
            "{name}"
        );
        drop(s);

        // While away: bob's memo (its `mine` is bob's, its `for_users` hers too), one
        // whose after action fails (nothing of it is logged), and one of hers.
        let bobs = create(&app, &bob, "memos", "bob's").await;
        create(&app, &alice, "memos", "fail").await;
        let hers = create(&app, &alice, "memos", "hers").await;

        let mut back = resume_socket(&app, &alice.token, json!(seq)).await.unwrap();
        let (replayed, recovered) = until_recovered(&mut back).await;
        assert_eq!(recovered["recovered"], json!(true), "{name}: {recovered}");
        let got: Vec<(&str, Value)> = replayed
            .iter()
            .map(|(n, a)| (n.as_str(), a[0]["id"].clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("for_users", json!(bobs)),
                ("mine", json!(hers)),
                ("for_users", json!(hers)),
            ],
            "{name}: {replayed:?}"
        );
        let seqs: Vec<u64> = replayed
            .iter()
            .filter_map(|(_, a)| seq_of(&a[1..]))
            .collect();
        assert_eq!(
            seqs.len(),
            3,
            "{name}: every replayed emit numbered: {replayed:?}"
        );
        assert!(
            seqs[0] > seq && seqs[0] < seqs[1] && seqs[1] == seqs[2],
            "{seqs:?}"
        );
        // Then live, once each; nothing of the failed action, bob's `mine` never.
        let marker = app.barrier().await;
        let rest = back.until_barrier(&marker).await;
        assert!(
            rest.iter().all(|(n, _)| n != "mine" && n != "for_users"),
            "{name}: {rest:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_replay_longer_than_its_share_of_the_queue_stops_and_its_answer_still_arrives() {
    let backend = &backends()[0];
    // A queue of 16 messages: a replay takes at most 12 of them.
    let app = objects(Spawn::new(backend))
        .config(|c| c.socket_buffer = 16)
        .start()
        .await;
    let alice = app.user("alice@x.test", "User").await;
    let (_, before) = app.state.store.event_bounds().await.unwrap();
    for i in 0..20 {
        create(&app, &alice, "posts", &format!("p{i}")).await;
    }
    let (_, head) = app.state.store.event_bounds().await.unwrap();

    // 20 missed LoopBack names: the first 12 in order, then `recovered: false`, which
    // arrives (the queue kept room for it).
    let mut long = resume_socket(&app, &alice.token, json!(before))
        .await
        .unwrap();
    let (replayed, recovered) = until_recovered(&mut long).await;
    assert_eq!(recovered["recovered"], json!(false), "{recovered}");
    assert_eq!(recovered["replayed"], json!(12), "{recovered}");
    let titles: Vec<Value> = replayed
        .iter()
        .map(|(_, a)| a[0]["title"].clone())
        .collect();
    let first: Vec<Value> = (0..12).map(|i| json!(format!("p{i}"))).collect();
    assert_eq!(titles, first, "{replayed:?}");
    // A join whose replay is too long is answered too, and says so.
    let ack = long.call("join", json!("db-posts")).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    assert_eq!(ack["recovered"], json!(false), "{ack}");

    // 8 missed: within its share, all of them, recovered.
    let mut short = resume_socket(&app, &alice.token, json!(head - 8))
        .await
        .unwrap();
    let (replayed, recovered) = until_recovered(&mut short).await;
    assert_eq!(recovered["recovered"], json!(true), "{recovered}");
    assert_eq!(replayed.len(), 8, "{replayed:?}");
    app.stop().await;
}
