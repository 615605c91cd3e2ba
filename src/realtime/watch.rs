//! The admin event stream (`GET /1/admin/events`): while at least one admin stream is
//! open, every room emit is recorded — what it was, whom it was addressed to, who
//! caused it, and which of this node's sockets it was sent to — into a ring of recent
//! events and onto every open stream. With nobody watching an emit pays one atomic load
//! and nothing else: no formatting, no listing, no allocation.
//!
//! It observes delivery and never takes part in it: the emit is the same single room
//! emit either way, and the recipients are the sockets the adapter's own selection
//! names (the target rooms less the sockets left out for their byte budget), listed
//! beside it. It decides nothing about who may receive what; `trace` explains a
//! recorded emit with `rooms` and `access`, as delivery itself does.
//!
//! Bounded: at most `MAX_STREAMS` streams, `MAX_EVENTS` events and `MAX_RING_BYTES` in
//! the ring, `MAX_DATA_BYTES` of each payload, `MAX_RECIPIENTS` ids per event, and
//! `LIVE_CAPACITY` messages waiting for a slow stream (which is then told how many it
//! missed instead).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::cluster::SocketRef;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::rooms::{self, Audience, Feed};
use super::session;
use crate::auth::Identity;
use crate::records::{RecordEvent, Verb};

/// Admin streams open at once.
pub const MAX_STREAMS: usize = 8;
/// Events the ring keeps for a stream that opens (or reopens).
pub const MAX_EVENTS: usize = 500;
/// Bytes the ring may hold (rendered events, rooms and recipient lists).
pub const MAX_RING_BYTES: usize = 8 << 20;
/// Bytes of an emit's payload shown; past it, a preview and the full size.
pub const MAX_DATA_BYTES: usize = 4096;
/// Socket ids recorded per event; past it the event says `truncated`.
pub const MAX_RECIPIENTS: usize = 10_000;
/// Target rooms shown in an event's JSON (all are kept for the trace).
const MAX_ROOMS_SHOWN: usize = 100;
/// Usernames named in an `emitUsers` target text.
const MAX_USERS_SHOWN: usize = 10;
/// Messages a stream may fall behind by before it is told it lost some.
const LIVE_CAPACITY: usize = 256;

/// Who or what caused an emit, as the stream shows it (`by`, `kind`). Never used for
/// delivery.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// livebase itself (or an embedding program), with no caller to name.
    Server,
    /// An action's `socket.emit*`, run as `who`.
    Action { who: &'a Identity, action: &'a str },
    /// A client's `chan_in` publication.
    Publish { who: &'a Identity },
    /// A committed change (the db, Sails and LoopBack events of it).
    Change(&'a RecordEvent),
}

impl Cause<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Cause::Server | Cause::Action { .. } => "emit",
            Cause::Publish { .. } => "channel",
            Cause::Change(_) => "change",
        }
    }

    fn by(&self) -> Option<(&Identity, Option<&str>)> {
        match *self {
            Cause::Server => None,
            Cause::Action { who, action } => Some((who, Some(action))),
            Cause::Publish { who } => Some((who, None)),
            Cause::Change(event) => Some((&event.actor, None)),
        }
    }
}

/// An audience as recorded: owned, for the trace to explain later.
#[derive(Debug, Clone)]
pub enum Addressed {
    Users(Vec<String>),
    Role(String),
    Authenticated,
    Channel(String),
    Readers {
        feed: Feed,
        object: String,
        owner: Option<i64>,
        id: i64,
    },
}

impl Addressed {
    fn of(audience: &Audience<'_>) -> Self {
        match *audience {
            Audience::Users(users) => Addressed::Users(users.to_vec()),
            Audience::Role(role) => Addressed::Role(role.to_string()),
            Audience::Authenticated => Addressed::Authenticated,
            Audience::Channel(name) => Addressed::Channel(name.to_string()),
            Audience::Readers {
                feed,
                object,
                owner,
                id,
            } => Addressed::Readers {
                feed,
                object: object.name.clone(),
                owner,
                id,
            },
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Addressed::Users(users) => users.iter().map(|u| u.len() + 24).sum(),
            Addressed::Role(text) | Addressed::Channel(text) => text.len(),
            Addressed::Authenticated => 0,
            Addressed::Readers { object, .. } => object.len(),
        }
    }

    /// The `target` text: what the emit was addressed to, in the words of its API.
    fn target(&self, cause: &Cause<'_>) -> String {
        match self {
            Addressed::Users(users) => {
                let mut text = format!(
                    "emitUsers {}",
                    users
                        .iter()
                        .take(MAX_USERS_SHOWN)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if users.len() > MAX_USERS_SHOWN {
                    text.push_str(&format!(" and {} more", users.len() - MAX_USERS_SHOWN));
                }
                text
            }
            Addressed::Role(role) => format!("emitRole {role}"),
            Addressed::Authenticated => "emitAll".into(),
            Addressed::Channel(name) => match cause {
                Cause::Publish { .. } => format!("channel {name}"),
                _ => format!("room {name}"),
            },
            Addressed::Readers {
                feed, object, id, ..
            } => match feed {
                Feed::DbChannel => rooms::db_channel(object),
                Feed::SailsWatch => format!("sails {object} watchers and row {id} subscribers"),
                Feed::LoopBack => format!("loopback {object}"),
            },
        }
    }
}

/// What every stream is sent for one event: its JSON, rendered once, and the facts the
/// stream filters match.
#[derive(Debug)]
pub struct Summary {
    pub id: u64,
    pub object: Option<String>,
    pub event: String,
    /// `by.username`, if anyone caused it.
    pub by: Option<String>,
    pub json: String,
}

/// One recorded emit, as the ring keeps it for `trace`.
#[derive(Debug)]
pub struct Recorded {
    pub summary: Arc<Summary>,
    pub at: Instant,
    pub addressed: Addressed,
    /// Every target room.
    pub rooms: Vec<String>,
    /// Public ids of the local sockets it was sent to, sorted (at most `MAX_RECIPIENTS`
    /// ids, together with `left_out`).
    pub recipients: Vec<Arc<str>>,
    /// Public ids of sockets in the target rooms that were left out (over their byte
    /// budget), sorted.
    pub left_out: Vec<Arc<str>>,
    /// More sockets were in the target rooms than were listed.
    pub truncated: bool,
    bytes: usize,
}

impl Recorded {
    pub fn received(&self, id: &str) -> bool {
        self.recipients.binary_search_by(|r| (**r).cmp(id)).is_ok()
    }

    pub fn was_left_out(&self, id: &str) -> bool {
        self.left_out.binary_search_by(|r| (**r).cmp(id)).is_ok()
    }
}

/// One emit as `emit_to` hands it over once it was sent.
pub(crate) struct Sent<'a, T: ?Sized> {
    pub audience: &'a Audience<'a>,
    pub cause: &'a Cause<'a>,
    pub rooms: Vec<String>,
    pub event: &'a str,
    pub data: &'a T,
    /// When the sockets in the target rooms were listed, just before the emit.
    pub at: Instant,
    /// The local sockets in the target rooms.
    pub in_rooms: Vec<SocketRef>,
    /// The rooms of the sockets the emit left out (`outbox::Ledger::behind`).
    pub behind: Option<Arc<Vec<String>>>,
    /// Sends that failed (a full socket queue, a closed socket).
    pub failed: usize,
}

/// The recorder: the ring, the live channel and the count of open streams.
pub struct Watch {
    streams: AtomicUsize,
    ring: Mutex<Ring>,
    /// Bumped whenever identities are revoked: each stream then checks that its
    /// credentials still make an Admin (they were checked only when it opened).
    revocations: tokio::sync::watch::Sender<u64>,
}

struct Ring {
    next_id: u64,
    events: VecDeque<Arc<Recorded>>,
    bytes: usize,
    /// `None` once the server closes: open streams end, new ones are refused.
    live: Option<broadcast::Sender<Arc<Summary>>>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            streams: AtomicUsize::new(0),
            ring: Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::new(),
                bytes: 0,
                live: Some(broadcast::channel(LIVE_CAPACITY).0),
            }),
            revocations: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooMany,
    Closed,
}

/// An open stream: the backlog at the moment it opened, then every later event. While
/// it exists, emits are recorded.
pub struct Subscription {
    pub backlog: Vec<Arc<Summary>>,
    pub live: broadcast::Receiver<Arc<Summary>>,
    /// Changes when identities were revoked since (see `Watch::revoked`).
    pub revocations: tokio::sync::watch::Receiver<u64>,
    _open: Open,
}

/// One open stream, counted for as long as it lives.
struct Open(Arc<Watch>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Watch {
    /// Whether anyone watches: the one check on the delivery path.
    pub fn watched(&self) -> bool {
        self.streams.load(Ordering::Relaxed) > 0
    }

    /// Opens a stream with the recorded events after `after` as its backlog.
    pub fn subscribe(self: &Arc<Self>, after: u64) -> Result<Subscription, Refused> {
        self.streams
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .map_err(|_| Refused::TooMany)?;
        let open = Open(self.clone());
        // One lock for the snapshot and the subscription, the lock `record` holds while
        // it adds and sends: no event is in both, none in neither.
        let ring = self.ring.lock().map_err(|_| Refused::Closed)?;
        let live = ring.live.as_ref().ok_or(Refused::Closed)?.subscribe();
        let backlog = ring
            .events
            .iter()
            .filter(|e| e.summary.id > after)
            .map(|e| e.summary.clone())
            .collect();
        Ok(Subscription {
            backlog,
            live,
            revocations: self.revocations.subscribe(),
            _open: open,
        })
    }

    /// The recorded event `id`, if the ring still has it.
    pub fn find(&self, id: u64) -> Option<Arc<Recorded>> {
        let ring = self.ring.lock().ok()?;
        let first = ring.events.front()?.summary.id;
        let at = usize::try_from(id.checked_sub(first)?).ok()?;
        ring.events.get(at).filter(|e| e.summary.id == id).cloned()
    }

    /// Tells every stream that some identity was revoked.
    pub fn revoked(&self) {
        self.revocations.send_modify(|n| *n += 1);
    }

    /// Ends every stream and refuses new ones (shutdown).
    pub fn close(&self) {
        if let Ok(mut ring) = self.ring.lock() {
            ring.live = None;
        }
    }

    /// Records one sent emit. Called only while `watched`.
    pub(crate) fn record<T: Serialize + ?Sized>(&self, sent: Sent<'_, T>) {
        let at = sent.at;
        let addressed = Addressed::of(sent.audience);
        // The public ids of the sockets behind, once per emit, borrowed from their rooms.
        let behind: HashSet<&str> = sent
            .behind
            .as_deref()
            .map(|rooms| rooms.iter().filter_map(|r| rooms::socket_of(r)).collect())
            .unwrap_or_default();
        let listed = sent.in_rooms.len().min(MAX_RECIPIENTS);
        let mut recipients = Vec::with_capacity(listed);
        let mut left_out = Vec::new();
        let mut sent_to = 0usize;
        for (n, s) in sent.in_rooms.iter().enumerate() {
            // Past the cap, only the count of sockets behind still needs their ids.
            if n >= listed && behind.is_empty() {
                sent_to += sent.in_rooms.len() - n;
                break;
            }
            let id = session::public_id(s);
            let behind_now = !behind.is_empty() && behind.contains(&*id);
            if !behind_now {
                sent_to += 1;
            }
            if n >= listed {
                continue;
            }
            if behind_now {
                left_out.push(id);
            } else {
                recipients.push(id);
            }
        }
        sort(&mut recipients);
        sort(&mut left_out);
        let truncated = sent.in_rooms.len() > MAX_RECIPIENTS;
        let (data, data_truncated) = preview(sent.data);

        let mut fields = Map::new();
        fields.insert("kind".into(), json!(sent.cause.kind()));
        let change = match sent.cause {
            Cause::Change(event) => Some(*event),
            _ => None,
        };
        let object = match (&addressed, change) {
            (_, Some(event)) => Some(event.object.clone()),
            (Addressed::Readers { object, .. }, None) => Some(object.clone()),
            _ => None,
        };
        fields.insert("object".into(), json!(object));
        fields.insert("verb".into(), json!(change.map(|e| verb(e.verb))));
        fields.insert("rowId".into(), json!(change.map(|e| e.id)));
        fields.insert("seq".into(), json!(change.map(|e| e.seq)));
        fields.insert("event".into(), json!(sent.event));
        fields.insert("target".into(), json!(addressed.target(sent.cause)));
        let shown: Vec<&String> = sent.rooms.iter().take(MAX_ROOMS_SHOWN).collect();
        fields.insert("rooms".into(), json!(shown));
        if sent.rooms.len() > MAX_ROOMS_SHOWN {
            fields.insert("roomsTotal".into(), json!(sent.rooms.len()));
        }
        let by = sent.cause.by().map(|(who, action)| {
            let mut by = json!({ "username": who.username, "role": who.role });
            if let Some(action) = action {
                by["action"] = json!(action);
            }
            by
        });
        fields.insert("by".into(), by.clone().unwrap_or(Value::Null));
        fields.insert("data".into(), data);
        fields.insert("dataTruncated".into(), json!(data_truncated));
        fields.insert("recipients".into(), json!(sent_to));
        fields.insert("leftOut".into(), json!(sent.in_rooms.len() - sent_to));
        fields.insert("failed".into(), json!(sent.failed));
        fields.insert("truncated".into(), json!(truncated));

        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        let Some(live) = ring.live.clone() else {
            return;
        };
        let id = ring.next_id;
        ring.next_id += 1;
        let mut head = Map::new();
        head.insert("id".into(), json!(id));
        head.insert("at".into(), json!(rfc3339(Utc::now())));
        head.extend(fields);
        let summary = Arc::new(Summary {
            id,
            object,
            event: sent.event.to_string(),
            by: by.and_then(|b| b["username"].as_str().map(str::to_string)),
            json: Value::Object(head).to_string(),
        });
        let ids = |list: &[Arc<str>]| list.iter().map(|r| r.len() + 16).sum::<usize>();
        let bytes = 256
            + summary.json.len()
            + sent.rooms.iter().map(|r| r.len() + 24).sum::<usize>()
            + ids(&recipients)
            + ids(&left_out)
            + addressed.bytes();
        let recorded = Arc::new(Recorded {
            summary: summary.clone(),
            at,
            addressed,
            rooms: sent.rooms,
            recipients,
            left_out,
            truncated,
            bytes,
        });
        ring.bytes += bytes;
        ring.events.push_back(recorded);
        while ring.events.len() > MAX_EVENTS
            || (ring.bytes > MAX_RING_BYTES && ring.events.len() > 1)
        {
            if let Some(old) = ring.events.pop_front() {
                ring.bytes -= old.bytes;
            }
        }
        // No receiver (the last stream just closed) is no error.
        let _ = live.send(summary);
    }
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn verb(verb: Verb) -> &'static str {
    match verb {
        Verb::Created => "created",
        Verb::Updated => "updated",
        Verb::Deleted => "deleted",
    }
}

/// The payload as shown: itself up to `MAX_DATA_BYTES` of JSON, else
/// `{truncated: true, bytes, preview}` with the first `MAX_DATA_BYTES` of its text.
/// Serialised once into a buffer that keeps no more than that.
fn preview<T: Serialize + ?Sized>(data: &T) -> (Value, bool) {
    struct Head {
        kept: Vec<u8>,
        total: usize,
    }
    impl std::io::Write for Head {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = MAX_DATA_BYTES.saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&buf[..buf.len().min(room)]);
            self.total += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut head = Head {
        kept: Vec::new(),
        total: 0,
    };
    if serde_json::to_writer(&mut head, data).is_err() {
        return (
            json!({ "truncated": true, "bytes": 0, "preview": "" }),
            true,
        );
    }
    if head.total <= MAX_DATA_BYTES
        && let Ok(value) = serde_json::from_slice(&head.kept)
    {
        return (value, false);
    }
    let preview = String::from_utf8_lossy(&head.kept).into_owned();
    (
        json!({ "truncated": true, "bytes": head.total, "preview": preview }),
        true,
    )
}

/// Sorted for `Recorded::received`'s binary search; a list already in order (one id,
/// or the adapter's own order) is left as it is.
fn sort(ids: &mut [Arc<str>]) {
    if !ids.is_sorted() {
        ids.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_past_the_limit_become_a_bounded_preview() {
        let small = json!({ "a": 1 });
        assert_eq!(preview(&small), (small.clone(), false));
        let big = json!({ "text": "é".repeat(10_000) });
        let (shown, truncated) = preview(&big);
        assert!(truncated);
        assert_eq!(shown["truncated"], json!(true));
        assert_eq!(shown["bytes"], json!(big.to_string().len()));
        assert!(shown["preview"].as_str().unwrap().len() <= MAX_DATA_BYTES + 3);
    }

    #[test]
    fn the_ring_is_bounded_in_bytes_as_well_as_in_events() {
        let watch = Arc::new(Watch::default());
        let _open = watch.subscribe(0).unwrap();
        // About 1.3 MB of target rooms each: the byte bound acts long before the count.
        let users: Vec<String> = (0..10_000).map(|n| format!("{n:0>100}@x")).collect();
        let audience = Audience::Users(&users);
        for n in 0..40 {
            watch.record(Sent {
                audience: &audience,
                cause: &Cause::Server,
                rooms: audience.rooms(),
                event: "big",
                data: &json!(n),
                at: Instant::now(),
                in_rooms: Vec::new(),
                behind: None,
                failed: 0,
            });
        }
        let ring = watch.ring.lock().unwrap();
        assert!(ring.bytes <= MAX_RING_BYTES, "{} bytes", ring.bytes);
        assert!(ring.events.len() < 10, "{} events", ring.events.len());
        let kept: usize = ring.events.iter().map(|e| e.bytes).sum();
        assert_eq!(kept, ring.bytes, "the count matches what is held");
        assert_eq!(
            ring.events.back().unwrap().summary.id,
            40,
            "the newest stay"
        );
        let shown: Value = serde_json::from_str(&ring.events.back().unwrap().summary.json).unwrap();
        assert_eq!(shown["rooms"].as_array().unwrap().len(), MAX_ROOMS_SHOWN);
        assert_eq!(shown["roomsTotal"], json!(10_000));
        assert!(shown["target"].as_str().unwrap().ends_with("and 9990 more"));
    }

    #[test]
    fn streams_are_limited_and_counted_while_open() {
        let watch = Arc::new(Watch::default());
        assert!(!watch.watched());
        let open: Vec<_> = (0..MAX_STREAMS)
            .map(|_| watch.subscribe(0).expect("under the limit"))
            .collect();
        assert!(watch.watched());
        assert_eq!(watch.subscribe(0).err(), Some(Refused::TooMany));
        drop(open);
        assert!(!watch.watched());
        let again = watch.subscribe(0).expect("slots came back");
        watch.close();
        drop(again);
        assert_eq!(watch.subscribe(0).err(), Some(Refused::Closed));
    }
}
