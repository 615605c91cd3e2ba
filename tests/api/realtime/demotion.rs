//! A demoted user's sockets leave their rooms before the write that demoted them is
//! answered: write hooks run after commit and before the response, and a hook that runs
//! after livebase's own emits to the old role, which the demoted socket must not get.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Spawn, backends};
use crate::sio::Incoming;
use livebase::realtime::Realtime;
use livebase::records::{BoxFuture, RecordEvent, Records, WriteHook};

/// After every `users` write, emits `after_users_write` to role `User`.
struct EmitToUsers(Arc<OnceLock<Realtime>>);

impl WriteHook for EmitToUsers {
    fn after<'a>(
        &'a self,
        _records: &'a Records,
        event: &'a RecordEvent,
    ) -> BoxFuture<'a, Vec<Value>> {
        Box::pin(async move {
            if event.object == "users"
                && let Some(realtime) = self.0.get()
            {
                realtime
                    .emit_role("after_users_write", &json!({ "id": event.id }), "User")
                    .await;
            }
            Vec::new()
        })
    }
}

#[tokio::test]
async fn a_demoted_users_sockets_are_out_of_the_old_role_before_the_answer() {
    let backend = &backends()[0];
    let handle = Arc::new(OnceLock::new());
    let app = Spawn::new(backend)
        .hook(Arc::new(EmitToUsers(handle.clone())))
        .start()
        .await;
    let _ = handle.set(app.state.realtime.clone());
    let admin = app.admin().await;
    let alice = app.user("alice@x.test", "User").await;
    let bob = app.user("bob@x.test", "User").await;
    let mut demoted = app.socket(&alice.token).await;
    let mut witness = app.socket(&bob.token).await;

    let (status, body) = app
        .put(
            &format!("/1/objects/users/{}", alice.id),
            &admin.cred(),
            json!({ "role": "ReadOnly" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The role's other members got the hook's emit ...
    assert_eq!(
        witness.expect("after_users_write").await["id"],
        json!(alice.id)
    );
    // ... and the demoted socket, already out of every room, did not; it was closed.
    let got = demoted.drain(Duration::from_millis(500)).await;
    let leaked: Vec<_> = got
        .iter()
        .filter(|e| matches!(e, Incoming::Event(name, _) if name == "after_users_write"))
        .collect();
    assert!(leaked.is_empty(), "the demoted socket received {leaked:?}");
    assert!(
        got.iter().any(|e| matches!(e, Incoming::Closed)),
        "the demoted socket was disconnected: {got:?}"
    );
}
