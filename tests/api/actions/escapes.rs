//! Ways around the sandbox's limits: jobs that keep forking, finalizers
//! that would run in the next caller's invocation, loops of host calls the interrupt
//! check never sees, and memory held outside the engine.

use serde_json::json;

use crate::common::{Spawn, TestApp, backends, master};

const FORK: &str = r#"
function spin() { queueMicrotask(spin); queueMicrotask(spin); }
async function backandCallback() { spin(); await new Promise(() => {}); }"#;

const FINALIZER: &str = r#"
function backandCallback() {
  return { registry: typeof FinalizationRegistry, weakRef: typeof WeakRef };
}"#;

const DB_LOOP: &str = r#"
function backandCallback() {
  for (let i = 0; i < 1e9; i++) { try { db.list('items'); } catch (e) { if (e.message !== 'interrupted') throw e; } }
}"#;

const EMIT_FLOOD: &str = r#"
function backandCallback() {
  const s = 'x'.repeat(1 << 20);
  for (let i = 0; i < 40; i++) socket.emitAll('e', s);
}"#;

/// Tiny data, huge names: the event, room and user-list strings are copied out of the
/// engine too, and must count against the same budget.
const NAME_FLOOD: &str = r#"
function backandCallback() {
  const big = 'n'.repeat(1 << 20);
  for (let i = 0; i < 10; i++) socket.emitAll(big, 1);
  for (let i = 0; i < 10; i++) socket.broadcast(big, big, 1);
  for (let i = 0; i < 10; i++) socket.emitUsers('e', 1, [big, big, big]);
}"#;

const HUGE_THROW: &str = r#"
function backandCallback() { throw 'y'.repeat(5 << 20); }"#;

const OK: &str = "function backandCallback() { return 'ok'; }";

async fn call(app: &TestApp, name: &str) -> (u16, serde_json::Value) {
    app.get(&format!("/1/function/general/{name}"), &master())
        .await
}

#[tokio::test]
async fn time_limits_hold_against_forks_finalizers_and_host_loops() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .schema(
            "items.json",
            json!({ "name": "items", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["User"] } }),
        )
        .config(|c| {
            c.action_time_limit_ms = 1000;
            c.action_memory_limit_mib = 16;
        })
        .action("general/onDemand/fork.js", FORK)
        .action("general/onDemand/finalizer.js", FINALIZER)
        .action("general/onDemand/dbloop.js", DB_LOOP)
        .action("general/onDemand/ok.js", OK)
        .start()
        .await;
    // More forks than pool threads: none may keep a thread.
    let mut forks = Vec::new();
    for _ in 0..4 {
        let base = app.base.clone();
        forks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let resp = crate::common::with_cred(
                client.get(format!("{base}/1/function/general/fork")),
                &master(),
            )
            .send()
            .await
            .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }));
    }
    for fork in forks {
        let (status, body) = fork.await.unwrap();
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("time limit"), "{body}");
    }
    assert_eq!(call(&app, "ok").await, (200, json!("ok")));

    let (status, body) = call(&app, "finalizer").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "registry": "undefined", "weakRef": "undefined" })
    );

    let (status, body) = call(&app, "dbloop").await;
    assert_eq!(
        status, 422,
        "a loop of db calls stops at the time limit: {body}"
    );
    assert_eq!(call(&app, "ok").await, (200, json!("ok")));
}

#[tokio::test]
async fn memory_held_outside_the_engine_is_bounded() {
    let backend = &backends()[0];
    // A generous time limit: this is about memory, and a loaded debug build is slow.
    let app = Spawn::new(backend)
        .config(|c| {
            c.action_time_limit_ms = 60_000;
            c.action_memory_limit_mib = 16;
        })
        .action("general/onDemand/emitflood.js", EMIT_FLOOD)
        .action("general/onDemand/hugethrow.js", HUGE_THROW)
        .action("general/onDemand/nameflood.js", NAME_FLOOD)
        .action("general/onDemand/ok.js", OK)
        .start()
        .await;
    for flood in ["emitflood", "nameflood"] {
        let (status, body) = call(&app, flood).await;
        assert_eq!(status, 422, "{flood}: {body}");
        assert!(
            body["Message"].as_str().unwrap().contains("memory"),
            "{flood}: {body}"
        );
    }

    let (status, body) = call(&app, "hugethrow").await;
    assert_eq!(status, 400);
    assert!(
        body["Message"].as_str().unwrap().len() < 8192,
        "thrown messages are truncated"
    );
    assert_eq!(call(&app, "ok").await, (200, json!("ok")));
}

const SPIN: &str = "function backandCallback() { for (;;) {} }";

const HUGE_RESULT: &str = r#"
function backandCallback() { return 'r'.repeat(20 << 20); }"#;

const HUGE_INPUT: &str = r#"
function backandCallback(userInput) { userInput.blob = 'i'.repeat(20 << 20); return 1; }"#;

/// A result bigger than an invocation may hand out is refused as a limit (422, like the
/// memory limit), not copied into a response; the next call is unharmed.
#[tokio::test]
async fn huge_results_are_refused_with_a_clear_error() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .config(|c| {
            c.action_time_limit_ms = 60_000;
            c.action_memory_limit_mib = 128;
        })
        .action("general/onDemand/hugeresult.js", HUGE_RESULT)
        .action("general/onDemand/hugeinput.js", HUGE_INPUT)
        .action("general/onDemand/ok.js", OK)
        .start()
        .await;
    for (name, what) in [
        ("hugeresult", "the action's result"),
        ("hugeinput", "the action's userInput"),
    ] {
        let (status, body) = call(&app, name).await;
        assert_eq!(status, 422, "{name}: {body}");
        let message = body["Message"].as_str().unwrap();
        assert!(
            message.contains(what) && message.contains("16 MiB"),
            "{name}: {message}"
        );
    }
    assert_eq!(call(&app, "ok").await, (200, json!("ok")));
}

/// An action that hit its time limit runs its later calls on the one low-priority
/// penalty thread: a burst of them cannot occupy the main threads, so another action
/// keeps being answered while they run, one at a time, each ending with a clear error.
#[tokio::test]
async fn an_action_that_hits_its_limits_cannot_take_every_thread() {
    let backend = &backends()[0];
    let app = Spawn::new(backend)
        .config(|c| c.action_time_limit_ms = 300)
        .action("general/onDemand/spin.js", SPIN)
        .action("general/onDemand/ok.js", OK)
        .start()
        .await;
    // The first offence runs on a main thread and ends at the time limit.
    let (status, body) = call(&app, "spin").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["Message"].as_str().unwrap().contains("time limit"));

    let app = std::sync::Arc::new(app);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut spins = Vec::new();
    for _ in 0..24 {
        let (app, done) = (app.clone(), done.clone());
        spins.push(tokio::spawn(async move {
            let answer = call(&app, "spin").await;
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer
        }));
    }
    // Let the burst queue up (the 8 past the penalty lane's 16 are refused outright;
    // on a loaded machine their answers take a while), then the other action is
    // answered at once, ten times, while the held spins still run.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while done.load(std::sync::atomic::Ordering::SeqCst) < 8 && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let finished_before = done.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(call(&app, "ok").await, (200, json!("ok")));
    }
    let finished_after = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        finished_after <= finished_before + 1,
        "`ok` waited for the spins: {finished_before} → {finished_after} finished meanwhile"
    );
    let (mut timed_out, mut refused) = (0, 0);
    for spin in spins {
        let (status, body) = spin.await.unwrap();
        assert_eq!(status, 422, "{body}");
        let message = body["Message"].as_str().unwrap();
        if message.contains("time limit") {
            timed_out += 1;
        } else {
            assert!(
                message.contains("recently hit its limits"),
                "unclear: {message}"
            );
            refused += 1;
        }
    }
    // 16 may be held at once, and each waits at most 4 time limits: some run, the
    // rest are refused unrun — none is lost and none waits forever.
    assert!(
        timed_out >= 1 && refused >= 8,
        "{timed_out} ran, {refused} refused"
    );
    assert_eq!(call(&app, "ok").await, (200, json!("ok")));
}
