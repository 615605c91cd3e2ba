//! Resuming after a reconnect: a client that connects with the last sequence number it
//! saw (`auth: {token, lastSeq}`, or `?lastSeq=` on the handshake URL) gets, before any live event, every event after it
//! that its identity may read now, through the rooms it joins: its identity rooms at
//! connection, then each channel it joins (and each Sails subscription it makes) within
//! `WINDOW` of connecting. Then it is told whether that was everything (`recovered`).
//!
//! A replay is decided by rooms, exactly as live delivery is: each emit an event made
//! (`relay::outgoing`) is sent to the socket if one of its rooms is among the rooms the
//! socket joins now and none is among the rooms it has been in since it connected (it
//! had those events already, live or replayed, until it left the room: a `leave`, a
//! re-authentication, which leaves them all, or the deletion of a Sails row it was
//! subscribed to). The rooms are chosen for the identity as it is now, so a user whose
//! role was lowered while away gets nothing they can no longer read.
//!
//! The join and the replay happen inside the relay, between two deliveries: no live
//! event can reach the new rooms before the replay, none is sent twice, none is missed.
//! The relay keeps its recent events in memory (`RING_EVENTS`, `RING_BYTES`); a client
//! further behind has its events read from the log before it asks the relay, outside
//! it, at most `MAX_REPLAY` events and `READS` reads at once. `recovered` is false
//! when the events after `lastSeq` are no longer all in the log (pruned), or too many
//! (for one join, more than three quarters of the socket's message queue, which the
//! replay fills at once), or the number is one this server never gave: the client
//! should read afresh.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::cluster::SocketRef;
use super::{Shared, session};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::records::{RecordEvent, Records};

/// How long after connecting a socket's joins replay what it missed.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Events the relay keeps in memory for replays.
pub const RING_EVENTS: usize = 4096;
/// Bytes (of logged event bodies) the relay keeps in memory for replays.
pub const RING_BYTES: usize = 32 << 20;
/// Events one replay may go through; a client further behind reads afresh.
pub const MAX_REPLAY: u64 = 10_000;
/// Replays reading the log at once.
const READS: usize = 4;
/// Resume requests waiting for the relay.
const QUEUE: usize = 1024;
/// How long a request whose `lastSeq` is ahead of this node's delivery (another node
/// delivered it first) waits for this node to catch up.
pub const AHEAD_PATIENCE: Duration = Duration::from_secs(2);

/// What a socket that connected with `lastSeq` carries.
#[derive(Clone)]
pub(crate) struct Resume {
    pub after: u64,
    until: Instant,
    /// The rooms it left since connecting: joined again, they replay nothing, or what
    /// the socket received in them before it left would come twice.
    left: Arc<Mutex<HashSet<String>>>,
}

impl Resume {
    pub fn new(after: u64) -> Resume {
        Resume {
            after,
            until: Instant::now() + WINDOW,
            left: Arc::default(),
        }
    }
}

/// The socket is about to leave `rooms`: within its window, a later join of one of them
/// replays nothing (see `carry_out`).
pub(crate) fn leaving(s: &SocketRef, rooms: impl IntoIterator<Item = String>) {
    if let Some(resume) = pending(s) {
        resume.left.lock().unwrap().extend(rooms);
    }
}

/// The socket's resume point, while its window is open.
pub(crate) fn pending(s: &SocketRef) -> Option<Resume> {
    s.extensions
        .get::<Resume>()
        .filter(|r| Instant::now() < r.until)
}

/// `lastSeq` from handshake `auth`: absent, or a non-negative integer (a decimal string
/// too, as some clients keep it).
pub(crate) fn last_seq(auth: &Value) -> Result<Option<u64>, ApiError> {
    let bad =
        || ApiError::BadRequest("handshake auth `lastSeq` must be a non-negative integer".into());
    match auth.get("lastSeq") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 20 => {
            s.parse::<u64>().map(Some).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

/// `lastSeq` from a handshake URL's query (`?lastSeq=42`), read as `last_seq` reads it.
pub(crate) fn last_seq_in_query(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let found = query.and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find_map(|(name, value)| (name == "lastSeq").then_some(value))
    });
    match found {
        None => Ok(None),
        Some(value) => last_seq(&json!({ "lastSeq": value })),
    }
}

/// How a replay went.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Every event after `lastSeq` the socket may read in these rooms was sent.
    pub recovered: bool,
    /// The last sequence number delivered to the socket's rooms when it joined them.
    pub seq: u64,
    /// Emits sent.
    pub replayed: usize,
}

impl Outcome {
    pub fn to_json(self) -> Value {
        json!({ "recovered": self.recovered, "seq": self.seq, "replayed": self.replayed })
    }
}

/// What the relay shares with the sockets' handlers.
pub(crate) struct Log {
    requests: mpsc::Sender<Request>,
    view: Arc<View>,
    records: Records,
    reads: Semaphore,
}

/// The relay's position, read without asking it.
#[derive(Default)]
pub(crate) struct View {
    /// The last sequence number delivered.
    pub delivered: AtomicU64,
    /// The oldest event in the relay's memory (`u64::MAX` while it holds none).
    pub ring_first: AtomicU64,
}

/// One join, with its replay, for the relay to carry out.
pub(crate) struct Request {
    pub socket: SocketRef,
    pub who: Arc<Identity>,
    pub rooms: Vec<String>,
    pub after: u64,
    /// For the rooms joined at connection: the revocation epoch when the credentials
    /// were checked (`Shared::epoch`). Changed since: the socket is ended instead.
    pub epoch: Option<u64>,
    /// Events read from the log, after `after` up to `prefetched_to`.
    pub prefetched: Vec<Arc<RecordEvent>>,
    pub prefetched_to: u64,
    /// Reading the log already showed not everything can be replayed.
    pub unrecoverable: bool,
    pub asked: Instant,
    pub done: oneshot::Sender<Option<Outcome>>,
}

/// The relay's end of `Log`.
pub(crate) struct RelayEnd {
    pub requests: mpsc::Receiver<Request>,
    pub view: Arc<View>,
}

/// Sets up the channel between the sockets' handlers and the relay.
pub(crate) fn log(records: Records) -> (Log, RelayEnd) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let view = Arc::new(View {
        delivered: AtomicU64::new(0),
        ring_first: AtomicU64::new(u64::MAX),
    });
    (
        Log {
            requests: tx,
            view: view.clone(),
            records,
            reads: Semaphore::new(READS),
        },
        RelayEnd { requests: rx, view },
    )
}

/// Joins `rooms` for `who`, first replaying what the socket missed in them since
/// `after`. `None` if the socket closed or re-authenticated meanwhile (the rooms are
/// not joined then), or was ended because a revocation happened since `epoch`.
pub(crate) async fn join(
    shared: &Shared,
    s: &SocketRef,
    who: &Arc<Identity>,
    rooms: Vec<String>,
    after: u64,
    epoch: Option<u64>,
) -> Option<Outcome> {
    let Some(log) = shared.log.get() else {
        // No relay (an embedding without one): join, and say nothing was replayed.
        return session::join_as(s, who, rooms).then_some(Outcome {
            recovered: false,
            seq: 0,
            replayed: 0,
        });
    };
    let delivered = log.view.delivered.load(Ordering::SeqCst);
    let ring_first = log.view.ring_first.load(Ordering::SeqCst);
    let mut prefetched = Vec::new();
    let mut prefetched_to = after;
    let mut unrecoverable = false;
    if after < delivered && after.saturating_add(1) < ring_first {
        // Older than the relay's memory: read it from the log here, not in the relay.
        if delivered - after > MAX_REPLAY {
            unrecoverable = true;
        } else {
            let _permit = log.reads.acquire().await.ok()?;
            match log
                .records
                .logged_after(after, (delivered - after) as u32)
                .await
            {
                Ok(events) => {
                    // The first one missing: pruned (or unreadable by this version).
                    if events.first().is_none_or(|e| e.seq != after + 1) {
                        unrecoverable = true;
                    }
                    prefetched_to = events.last().map_or(after, |e| e.seq);
                    prefetched = events;
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "reading the event log for a replay");
                    unrecoverable = true;
                }
            }
        }
    }
    let (done, outcome) = oneshot::channel();
    let request = Request {
        socket: s.clone(),
        who: who.clone(),
        rooms,
        after,
        epoch,
        prefetched,
        prefetched_to,
        unrecoverable,
        asked: Instant::now(),
        done,
    };
    if log.requests.send(request).await.is_err() {
        return None;
    }
    outcome.await.ok().flatten()
}

impl Shared {
    /// Connects the relay (`relay::run`) once it runs.
    pub(crate) fn attach_log(&self, log: Log) {
        let _ = self.log.set(log);
    }
}

/// The part of a replay the relay does: checks the socket is still the one that asked,
/// joins the rooms, sends what the socket missed in them from `events` (the prefetched
/// ones, then the relay's memory), and answers.
pub(crate) fn carry_out<'a>(
    shared: &Shared,
    request: Request,
    delivered: u64,
    ring: impl Iterator<Item = &'a Arc<RecordEvent>>,
    ring_first: u64,
) {
    let s = &request.socket;
    let current =
        s.connected() && session::identity(s).is_some_and(|now| Arc::ptr_eq(&now, &request.who));
    if !current {
        let _ = request.done.send(None);
        return;
    }
    if request.epoch.is_some_and(|epoch| epoch != shared.epoch()) {
        // Identity rooms chosen with credentials that may no longer hold.
        s.clone().disconnect().ok();
        let _ = request.done.send(None);
        return;
    }
    let mut old: HashSet<String> = s.rooms().iter().map(|r| r.to_string()).collect();
    let new: Vec<String> = request
        .rooms
        .iter()
        .filter(|r| !old.contains(*r))
        .cloned()
        .collect();
    s.join(new.clone());
    if let Some(resume) = s.extensions.get::<Resume>() {
        old.extend(resume.left.lock().unwrap().iter().cloned());
    }
    let new: Vec<String> = new.into_iter().filter(|r| !old.contains(r)).collect();
    let after = request.after;
    let covered_to = request.prefetched_to.max(after);
    let mut recovered = !request.unrecoverable && after <= delivered;
    // The relay's memory must hold everything after what was read from the log.
    if recovered && covered_to < delivered && ring_first > covered_to + 1 {
        recovered = false;
    }
    let mut replayed = 0;
    // A replay is queued whole: it leaves a quarter of the socket's queue for its ack
    // and what follows live, or it would fill the queue and the ack be dropped.
    let cap = (shared.limits.buffer_messages - shared.limits.buffer_messages / 4).max(1);
    if recovered && !new.is_empty() {
        let new: HashSet<&str> = new.iter().map(String::as_str).collect();
        let mut send = |event: &RecordEvent| -> bool {
            let object = shared.schema.object(&event.object).map(|o| &**o);
            let emits = super::relay::logged_emits(event);
            // Whom it reached, without encoding anything; most events are not for it.
            let wanted: Vec<bool> = super::relay::outgoing(object, event, &emits, false)
                .iter()
                .map(|out| {
                    let rooms = out.audience.rooms();
                    rooms.iter().any(|r| new.contains(r.as_str()))
                        && !rooms.iter().any(|r| old.contains(r))
                })
                .collect();
            if !wanted.contains(&true) {
                return true;
            }
            let outs = super::relay::outgoing(object, event, &emits, true);
            for (out, _) in outs.into_iter().zip(&wanted).filter(|(_, w)| **w) {
                let size = super::outbox::size_of(&out.name, &out.data);
                if replayed >= cap
                    || !shared.admit(s, size)
                    || s.emit(out.name.as_str(), &out.data).is_err()
                {
                    // Over its share of the queue, over its byte budget, or closed: the
                    // rest cannot follow in order.
                    return false;
                }
                replayed += 1;
            }
            true
        };
        let prefetched = request.prefetched.iter();
        let all_sent = prefetched
            .filter(|e| e.seq > after && e.seq <= delivered)
            .all(|e| send(e))
            && ring
                .filter(|e| e.seq > covered_to && e.seq <= delivered)
                .all(|e| send(e));
        recovered = all_sent;
    }
    metrics::counter!("livebase_socket_replays_total", "recovered" => if recovered { "true" } else { "false" }).increment(1);
    metrics::counter!("livebase_socket_replayed_emits_total").increment(replayed as u64);
    let _ = request.done.send(Some(Outcome {
        recovered,
        seq: delivered,
        replayed,
    }));
}
