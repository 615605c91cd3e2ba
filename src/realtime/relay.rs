//! Committed changes become socket events: `db_created` / `db_updated` / `db_deleted` on
//! `db-<object>` channels, Sails `{verb, id, data, previous}` events named after the
//! object, and LoopBack `/<object>/POST`-style names for objects that opt in. Each goes
//! to the rooms `rooms::readers_of_row` names, so only sockets whose user may read the
//! row receive it. Each carries its number in the event log: `seq` in the `db_*` and
//! Sails payloads, a second argument `{seq}` for LoopBack names and for the emits of the
//! write's before actions, which leave with its event.
//!
//! Driven by the event log (`store::events`), in its order: every node delivers every
//! committed change, of every node, to its own sockets, in sequence order, once. This
//! process's changes arrive at once on the write path's bus; a number missing from what
//! arrived (another node's change, or one of this node's still in its after hooks) is
//! read from the log after a short wait, or at once when PostgreSQL announces another
//! node's commit. A relay that falls behind the bus reads what it missed from the log
//! instead of losing it; only events already pruned from the log are lost, and then
//! every socket is ended so clients read afresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::rooms::{self, Audience, Feed};
use super::watch::Cause;
use super::{Realtime, emit_to};
use crate::auth::Identity;
use crate::records::wire;
use crate::records::{RecordEvent, Records, Verb};
use crate::schema::ObjectSchema;

/// How long a missing number is waited for on the bus before it is read from the log.
const GAP_WAIT: Duration = Duration::from_millis(50);
/// Events held out of order before the gap is read from the log without waiting.
const MAX_HELD: usize = 4096;
/// Events read from the log at once.
const BATCH: u32 = 512;
/// With several nodes, how often the log is read even without an announcement (one
/// that was lost, e.g. while the listening connection reconnected).
const POLL: Duration = Duration::from_secs(1);

/// What drives the relay besides this process's own writes.
pub struct Follow {
    /// Woken when another node committed (PostgreSQL `NOTIFY`, see `Store::follow_events`).
    pub wake: Arc<Notify>,
    /// Several nodes write the log: read it every `POLL` too.
    pub poll: bool,
}

/// Delivers every committed change after `after` until the write path goes away.
pub async fn run(
    records: Records,
    mut events: broadcast::Receiver<Arc<RecordEvent>>,
    realtime: Realtime,
    after: u64,
    follow: Follow,
) {
    let mut relay = Relay {
        records,
        realtime,
        next: after + 1,
        held: BTreeMap::new(),
    };
    let mut waiting_since: Option<Instant> = None;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        relay.deliver_held().await;
        if relay.held.is_empty() {
            waiting_since = None;
        } else if waiting_since.is_none() {
            waiting_since = Some(Instant::now());
        }
        let deadline = waiting_since.map(|t| t + GAP_WAIT);
        let read_log = tokio::select! {
            received = events.recv() => match received {
                Ok(event) => {
                    relay.hold(event);
                    relay.held.len() > MAX_HELD
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("livebase_socket_events_lagged_total").increment(missed);
                    tracing::warn!(missed, "realtime fell behind the write path; reading the event log");
                    true
                }
                Err(RecvError::Closed) => break,
            },
            () = follow.wake.notified() => true,
            _ = poll.tick(), if follow.poll => true,
            () = sleep_until(deadline), if deadline.is_some() => true,
        };
        if read_log && !relay.read_log().await {
            // The log could not be read: try again after the wait, not in a loop.
            waiting_since = Some(Instant::now());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

struct Relay {
    records: Records,
    realtime: Realtime,
    /// The next number to deliver.
    next: u64,
    /// Events that arrived ahead of `next`.
    held: BTreeMap<u64, Arc<RecordEvent>>,
}

impl Relay {
    fn hold(&mut self, event: Arc<RecordEvent>) {
        if event.seq >= self.next {
            self.held.insert(event.seq, event);
        }
    }

    async fn deliver_held(&mut self) {
        while let Some(event) = self.held.remove(&self.next) {
            self.deliver(&event).await;
        }
    }

    async fn deliver(&mut self, event: &RecordEvent) {
        deliver(&self.realtime, event).await;
        self.next = event.seq + 1;
        metrics::gauge!("livebase_events_delivered_seq").set(event.seq as f64);
    }

    /// Delivers, from the log, everything from `next` on. `false` if it could not read.
    async fn read_log(&mut self) -> bool {
        loop {
            let batch = match self.records.logged_after(self.next - 1, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = ?e, "realtime: reading the event log");
                    return false;
                }
            };
            let full = batch.len() == BATCH as usize;
            for event in batch {
                if event.seq < self.next {
                    continue;
                }
                if event.seq > self.next {
                    // Pruned before this node delivered them (or unreadable): sockets
                    // missed changes and cannot tell. They start afresh.
                    let missed = event.seq - self.next;
                    metrics::counter!("livebase_socket_events_lost_total").increment(missed);
                    tracing::error!(
                        missed,
                        "realtime fell further behind than the event log keeps; disconnecting all sockets"
                    );
                    self.realtime.disconnect_all().await;
                }
                self.held.remove(&event.seq);
                self.deliver(&event).await;
            }
            self.held.retain(|seq, _| *seq >= self.next);
            self.deliver_held().await;
            if !full {
                return true;
            }
        }
    }
}

async fn deliver(realtime: &Realtime, event: &RecordEvent) {
    // The write's before actions emitted first, as they did before it committed.
    for emit in event.emits.iter() {
        logged_emit(realtime, emit, &event.actor, event.seq).await;
    }
    let Some(object) = realtime.schema().object(&event.object).cloned() else {
        return;
    };
    let shared = &realtime.shared;
    let owner = event.owner();
    let row = event.record.as_ref().map(wire::row);
    let previous = event.previous.as_ref().map(wire::row);
    let id = event.id;

    let channel = rooms::db_channel(&object.name);
    let (name, data) = match event.verb {
        Verb::Created => ("db_created", row.clone().unwrap_or(Value::Null)),
        Verb::Updated => ("db_updated", row.clone().unwrap_or(Value::Null)),
        Verb::Deleted => ("db_deleted", json!(id)),
    };
    let readers = Audience::Readers {
        feed: Feed::DbChannel,
        object: &object,
        owner,
        id,
    };
    let cause = Cause::Change(event);
    let seq = event.seq;
    emit_to(
        realtime.here(),
        shared,
        readers,
        cause,
        name,
        &json!({ "channel": channel, "data": data, "seq": seq }),
    )
    .await;

    sails(
        realtime,
        &object,
        event,
        owner,
        row.as_ref(),
        previous.as_ref(),
    )
    .await;

    if object.publishes_loopback() {
        let (name, data) = match event.verb {
            Verb::Created => (format!("/{}/POST", object.name), row.clone()),
            Verb::Updated => (format!("/{}/{id}/PUT", object.name), row.clone()),
            Verb::Deleted => (
                format!("/{}/{id}/DELETE", object.name),
                Some(json!({ "id": id })),
            ),
        };
        let readers = Audience::Readers {
            feed: Feed::LoopBack,
            object: &object,
            owner,
            id,
        };
        let numbered = (data, json!({ "seq": seq }));
        emit_to(realtime.here(), shared, readers, cause, &name, &numbered).await;
    }
}

async fn sails(
    realtime: &Realtime,
    object: &ObjectSchema,
    event: &RecordEvent,
    owner: Option<i64>,
    row: Option<&Value>,
    previous: Option<&Value>,
) {
    let shared = &realtime.shared;
    let row_room = rooms::row(&object.name, event.id);
    // Watchers of the object who may read the row, and subscribers of this row.
    let targets = Audience::Readers {
        feed: Feed::SailsWatch,
        object,
        owner,
        id: event.id,
    };
    let mut payload = json!({ "id": event.id, "seq": event.seq });
    match event.verb {
        Verb::Created => {
            payload["verb"] = json!("created");
            payload["data"] = row.cloned().unwrap_or(Value::Null);
        }
        Verb::Updated => {
            payload["verb"] = json!("updated");
            payload["data"] = row.cloned().unwrap_or(Value::Null);
            payload["previous"] = previous.cloned().unwrap_or(Value::Null);
        }
        Verb::Deleted => {
            payload["verb"] = json!("destroyed");
            payload["previous"] = previous.cloned().unwrap_or(Value::Null);
        }
    }
    emit_to(
        realtime.here(),
        shared,
        targets,
        Cause::Change(event),
        &object.name,
        &payload,
    )
    .await;
    if event.verb == Verb::Deleted
        && let Some(root) = realtime.here()
        && let Err(e) = root.to(row_room.clone()).leave(row_room).await
    {
        tracing::debug!(error = %e, "dropping a deleted row's subscribers");
    }
}

/// A before action's emit logged with its write (`actions::sandbox::Emit::logged`):
/// `{kind, event, target, data, action}`, sent to this node's sockets with `{seq}` as a
/// second argument. One this version cannot read is skipped, said once each.
async fn logged_emit(realtime: &Realtime, emit: &Value, who: &Identity, seq: u64) {
    let field = |name: &str| emit.get(name).and_then(Value::as_str);
    let (Some(kind), Some(name)) = (field("kind"), field("event")) else {
        tracing::warn!(seq, "a logged emit this version cannot read");
        return;
    };
    let action = field("action").unwrap_or("");
    let data = (
        emit.get("data").cloned().unwrap_or(Value::Null),
        json!({ "seq": seq }),
    );
    let emitter = realtime
        .on_behalf(Cause::Action { who, action })
        .here_only();
    let target = emit.get("target");
    match (kind, target) {
        ("emitUsers", Some(Value::Array(users))) => {
            let users: Vec<String> = users
                .iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect();
            emitter.emit_users(name, &data, &users).await
        }
        ("emitRole", Some(Value::String(role))) => emitter.emit_role(name, &data, role).await,
        ("emitAll", _) => emitter.emit_all(name, &data).await,
        ("broadcast", Some(Value::String(room))) => emitter.broadcast(room, name, &data).await,
        _ => tracing::warn!(seq, kind, "a logged emit this version cannot read"),
    }
}
