//! Committed changes become socket events: `db_created` / `db_updated` / `db_deleted` on
//! `db-<object>` channels, Sails `{verb, id, data, previous}` events named after the
//! object, and LoopBack `/<object>/POST`-style names for objects that opt in. Each goes
//! to the rooms `rooms::readers_of_row` names, so only sockets whose user may read the
//! row receive it. Each carries its number in the event log: `seq` in the `db_*` and
//! Sails payloads, a second argument `{seq}` for LoopBack names and for the emits of the
//! write's before actions, which leave with its event. What the write's after actions
//! emitted is an entry of the log of its own (`RecordEvent::is_emits_only`), delivered
//! in its turn, with its own number, the same way.
//!
//! Driven by the event log (`store::events`), in its order: every node delivers every
//! committed change, of every node, to its own sockets, in sequence order, once. This
//! process's changes arrive at once on the write path's bus; a number missing from what
//! arrived (another node's change, or one of this node's still in its after hooks) is
//! read from the log after a short wait, or at once when PostgreSQL announces another
//! node's commit. A relay that falls behind the bus reads what it missed from the log
//! instead of losing it; only events already pruned from the log are lost, and then
//! every socket is ended so clients read afresh.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::resume::{self, RelayEnd};
use super::rooms::{self, Audience, Feed};
use super::watch::Cause;
use super::{Realtime, emit_to};
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

/// Delivers every committed change after `after` until the write path goes away, and
/// carries out the sockets' replays (`resume`) between deliveries.
pub async fn run(
    records: Records,
    mut events: broadcast::Receiver<Arc<RecordEvent>>,
    realtime: Realtime,
    after: u64,
    follow: Follow,
) {
    let RelayEnd { mut requests, view } = realtime.follow_log(records.clone());
    view.delivered.store(after, Ordering::SeqCst);
    let mut relay = Relay {
        records,
        realtime,
        next: after + 1,
        held: BTreeMap::new(),
        ring: VecDeque::new(),
        ring_bytes: 0,
        view,
        ahead: Vec::new(),
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
        relay.answer_ahead();
        let deadline = [
            waiting_since.map(|t| t + GAP_WAIT),
            relay
                .ahead
                .iter()
                .map(|r| r.asked + resume::AHEAD_PATIENCE)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let read_log = tokio::select! {
            Some(request) = requests.recv() => {
                relay.resume(request);
                false
            }
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
            () = sleep_until(deadline), if deadline.is_some() => waiting_since.is_some(),
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
    /// The latest events delivered, for replays (`resume`).
    ring: VecDeque<Arc<RecordEvent>>,
    ring_bytes: usize,
    view: Arc<resume::View>,
    /// Replays asking for more than was delivered yet (another node got there first).
    ahead: Vec<resume::Request>,
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

    async fn deliver(&mut self, event: &Arc<RecordEvent>) {
        deliver(&self.realtime, event).await;
        self.next = event.seq + 1;
        self.ring_bytes += event.bytes;
        self.ring.push_back(event.clone());
        while self.ring.len() > resume::RING_EVENTS || self.ring_bytes > resume::RING_BYTES {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            self.ring_bytes -= old.bytes;
        }
        let first = self.ring.front().map_or(u64::MAX, |e| e.seq);
        self.view.ring_first.store(first, Ordering::SeqCst);
        self.view.delivered.store(event.seq, Ordering::SeqCst);
        metrics::gauge!("livebase_events_delivered_seq").set(event.seq as f64);
    }

    /// A socket's join with its replay, now, between two deliveries; or, if it asks
    /// for more than was delivered yet, once that is delivered (or its patience ran out).
    fn resume(&mut self, request: resume::Request) {
        if request.after >= self.next && request.asked.elapsed() < resume::AHEAD_PATIENCE {
            self.ahead.push(request);
            return;
        }
        let first = self.ring.front().map_or(u64::MAX, |e| e.seq);
        resume::carry_out(
            &self.realtime.shared,
            request,
            self.next - 1,
            self.ring.iter(),
            first,
        );
    }

    fn answer_ahead(&mut self) {
        if self.ahead.is_empty() {
            return;
        }
        for request in std::mem::take(&mut self.ahead) {
            self.resume(request);
        }
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

/// One emit an event makes: whom (`audience`, whose rooms decide who gets it), why
/// (`cause`, for the admin stream), and what.
pub(super) struct Out<'a> {
    pub audience: Audience<'a>,
    pub cause: Cause<'a>,
    pub name: String,
    pub data: Payload,
}

/// An emit's arguments: one payload, or a payload and `{seq}`.
pub(super) enum Payload {
    One(Value),
    Numbered(Value, u64),
}

impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::One(value) => value.serialize(serializer),
            // A tuple: socketioxide sends each element as an argument of its own.
            Payload::Numbered(value, seq) => (value, json!({ "seq": seq })).serialize(serializer),
        }
    }
}

/// A before or after action's emit as logged (`actions::sandbox::Emit::logged`):
/// `{kind, event, target, data, action}`.
pub(super) struct LoggedEmit {
    kind: &'static str,
    event: String,
    targets: Vec<String>,
    data: Value,
    action: String,
}

/// The logged emits of `event` this version can read (others are skipped, said once
/// each).
pub(super) fn logged_emits(event: &RecordEvent) -> Vec<LoggedEmit> {
    let mut out = Vec::with_capacity(event.emits.len());
    for emit in event.emits.iter() {
        let field = |name: &str| emit.get(name).and_then(Value::as_str);
        let kind = match field("kind") {
            Some("emitUsers") => "emitUsers",
            Some("emitRole") => "emitRole",
            Some("emitAll") => "emitAll",
            Some("broadcast") => "broadcast",
            _ => "",
        };
        let targets = match emit.get("target") {
            Some(Value::Array(users)) => users
                .iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let readable = match kind {
            "emitUsers" | "emitAll" => true,
            "emitRole" | "broadcast" => targets.len() == 1,
            _ => false,
        };
        match (readable, field("event")) {
            (true, Some(name)) => out.push(LoggedEmit {
                kind,
                event: name.to_string(),
                targets,
                data: emit.get("data").cloned().unwrap_or(Value::Null),
                action: field("action").unwrap_or("").to_string(),
            }),
            _ => tracing::warn!(seq = event.seq, "a logged emit this version cannot read"),
        }
    }
    out
}

/// Every emit `event` makes, in the order they leave: the write's before actions' emits
/// first (as they did before it committed), then `db_*`, the Sails event, and the
/// LoopBack name; for an entry of after actions' emits (no `object`), only those. Live
/// delivery sends each to its audience's rooms; a replay sends each to one socket if it
/// is in those rooms (`resume`). Without `payloads` every `data` is null and nothing is
/// encoded: for a replay asking only whom an event reaches.
pub(super) fn outgoing<'a>(
    object: Option<&'a ObjectSchema>,
    event: &'a RecordEvent,
    emits: &'a [LoggedEmit],
    payloads: bool,
) -> Vec<Out<'a>> {
    let seq = event.seq;
    let mut out = Vec::with_capacity(emits.len() + 3);
    for emit in emits {
        let audience = match emit.kind {
            "emitUsers" => Audience::Users(&emit.targets),
            "emitRole" => Audience::Role(&emit.targets[0]),
            "broadcast" => Audience::Channel(&emit.targets[0]),
            _ => Audience::Authenticated,
        };
        out.push(Out {
            audience,
            cause: Cause::Action {
                who: &event.actor,
                action: &emit.action,
            },
            name: emit.event.clone(),
            data: match payloads {
                true => Payload::Numbered(emit.data.clone(), seq),
                false => Payload::One(Value::Null),
            },
        });
    }
    let Some(object) = object else {
        return out;
    };
    let owner = event.owner();
    let (row, previous) = match payloads {
        true => (
            event.record.as_ref().map(wire::row),
            event.previous.as_ref().map(wire::row),
        ),
        false => (None, None),
    };
    let id = event.id;
    let cause = Cause::Change(event);
    let readers = |feed| Audience::Readers {
        feed,
        object,
        owner,
        id,
    };

    let channel = rooms::db_channel(&object.name);
    let (name, data) = match event.verb {
        Verb::Created => ("db_created", row.clone().unwrap_or(Value::Null)),
        Verb::Updated => ("db_updated", row.clone().unwrap_or(Value::Null)),
        Verb::Deleted => ("db_deleted", json!(id)),
    };
    out.push(Out {
        audience: readers(Feed::DbChannel),
        cause,
        name: name.to_string(),
        data: Payload::One(json!({ "channel": channel, "data": data, "seq": seq })),
    });

    // Sails: watchers of the object who may read the row, and subscribers of this row.
    let mut payload = json!({ "id": id, "seq": seq });
    match event.verb {
        Verb::Created => {
            payload["verb"] = json!("created");
            payload["data"] = row.clone().unwrap_or(Value::Null);
        }
        Verb::Updated => {
            payload["verb"] = json!("updated");
            payload["data"] = row.clone().unwrap_or(Value::Null);
            payload["previous"] = previous.clone().unwrap_or(Value::Null);
        }
        Verb::Deleted => {
            payload["verb"] = json!("destroyed");
            payload["previous"] = previous.unwrap_or(Value::Null);
        }
    }
    out.push(Out {
        audience: readers(Feed::SailsWatch),
        cause,
        name: object.name.clone(),
        data: Payload::One(payload),
    });

    if object.publishes_loopback() {
        let (name, data) = match event.verb {
            Verb::Created => (format!("/{}/POST", object.name), row),
            Verb::Updated => (format!("/{}/{id}/PUT", object.name), row),
            Verb::Deleted => (
                format!("/{}/{id}/DELETE", object.name),
                Some(json!({ "id": id })),
            ),
        };
        out.push(Out {
            audience: readers(Feed::LoopBack),
            cause,
            name,
            data: Payload::Numbered(data.unwrap_or(Value::Null), seq),
        });
    }
    out
}

async fn deliver(realtime: &Realtime, event: &RecordEvent) {
    let object = realtime.schema().object(&event.object).cloned();
    let emits = logged_emits(event);
    for out in outgoing(object.as_deref(), event, &emits, true) {
        emit_to(
            realtime.here(),
            &realtime.shared,
            out.audience,
            out.cause,
            &out.name,
            &out.data,
        )
        .await;
    }
    // A deleted row has no subscribers left (who had its events: `resume::leaving`).
    if event.verb == Verb::Deleted
        && object.is_some()
        && let Some(root) = realtime.here()
    {
        let row_room = rooms::row(&event.object, event.id);
        for s in root.clone().to(row_room.clone()).sockets() {
            resume::leaving(&s, [row_room.clone()]);
        }
        if let Err(e) = root.to(row_room.clone()).leave(row_room).await {
            tracing::debug!(error = %e, "dropping a deleted row's subscribers");
        }
    }
}
