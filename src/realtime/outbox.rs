//! What is queued for each socket, in bytes: socketioxide bounds a socket's queue by
//! message count only, and a count of large messages is a lot of memory. A room emit
//! adds its size to one counter per room (`Ledger`), so fan-out costs nothing per
//! socket; a sweep (every second, or as soon as half a budget's worth was emitted) turns
//! the counters a socket's rooms advanced by into its queued bytes. Answers to a
//! socket's own requests are counted on the spot. The connection the socket's transport
//! currently runs on counts what it writes (`conn::WriteTap`), and the difference is
//! what is still held for that socket.
//!
//! A socket over `--socket-buffer-bytes` misses further emits (counted as drops) until
//! it has caught up; one that has not caught up (to half the budget) within the ping
//! timeout is disconnected. A socket
//! with nothing queued always gets the next message, whatever its size, so one large
//! event is never undeliverable.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::cluster::BroadcastOperators;
use super::cluster::SocketIo;
use super::cluster::SocketRef;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use socketioxide::socket::Sid;

use super::{Realtime, Shared, rooms, session};
use crate::conn::WriteTap;

/// How often the sweep runs when little is emitted.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Bytes emitted to each room so far, and the sockets left out of room emits because
/// they are behind (their own rooms, for `except`).
#[derive(Default)]
pub struct Ledger {
    rooms: RwLock<HashMap<String, Arc<AtomicU64>>>,
    /// Bytes emitted since the last sweep, over every room.
    since_sweep: AtomicU64,
    behind: RwLock<Arc<Vec<String>>>,
    behind_count: AtomicUsize,
    sweep_now: tokio::sync::Notify,
}

impl Ledger {
    /// Counts a room emit of `size` bytes; wakes the sweep once half of `budget` was
    /// emitted since the last one, so no socket gets far past its budget between sweeps.
    pub fn record(&self, rooms: &[String], size: u64, budget: u64) {
        for room in rooms {
            let known = self.rooms.read().ok().and_then(|m| m.get(room).cloned());
            let counter = match known {
                Some(counter) => counter,
                None => match self.rooms.write() {
                    Ok(mut map) => map.entry(room.clone()).or_default().clone(),
                    Err(_) => continue,
                },
            };
            counter.fetch_add(size, Ordering::Relaxed);
        }
        let added = size * rooms.len() as u64;
        if self.since_sweep.fetch_add(added, Ordering::Relaxed) + added >= budget / 2 {
            self.sweep_now.notify_one();
        }
    }

    /// The rooms of the sockets to leave out of room emits, if any.
    pub fn behind(&self) -> Option<Arc<Vec<String>>> {
        if self.behind_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.behind.read().ok().map(|list| list.clone())
    }
}

/// Sweeps until the server closes.
pub(super) async fn keep_accounts(shared: Arc<Shared>, io: SocketIo) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            () = shared.ledger.sweep_now.notified() => {}
        }
        let Some(root) = io.of("/") else {
            return;
        };
        sweep(&shared, root);
    }
}

/// Turns room counters into each local socket's queued bytes and decides who is behind
/// (left out of room emits) and who has been behind too long (disconnected).
fn sweep(shared: &Shared, root: BroadcastOperators) {
    let ledger = &shared.ledger;
    ledger.since_sweep.store(0, Ordering::Relaxed);
    let counters = match ledger.rooms.read() {
        Ok(map) => map.clone(),
        Err(_) => return,
    };
    let (budget, patience) = (
        shared.limits.buffer_bytes,
        shared.limits.over_budget_patience,
    );
    let mut occupied = HashSet::new();
    let mut behind = Vec::new();
    for s in root.sockets() {
        let Some(outbox) = of(&s) else { continue };
        let mut offered = 0;
        let mut seen_now = HashMap::new();
        for room in s.rooms() {
            if let Some(counter) = counters.get(&*room) {
                let now = counter.load(Ordering::Relaxed);
                if let Some(last) = outbox
                    .seen
                    .lock()
                    .ok()
                    .and_then(|seen| seen.get(&*room).copied())
                {
                    offered += now.saturating_sub(last);
                }
                seen_now.insert(room.to_string(), now);
            }
            occupied.insert(room);
        }
        if let Ok(mut seen) = outbox.seen.lock() {
            *seen = seen_now;
        }
        if outbox.left_out.load(Ordering::Relaxed) {
            // Left out since the last sweep: what its rooms carried never reached it.
            if offered > 0 {
                metrics::counter!("livebase_socket_drops_total", "reason" => "bytes").increment(1);
            }
        } else {
            outbox.queued.fetch_add(offered, Ordering::Relaxed);
        }
        match outbox.standing(budget, patience) {
            Standing::Fine => outbox.left_out.store(false, Ordering::Relaxed),
            Standing::Behind => {
                outbox.left_out.store(true, Ordering::Relaxed);
                behind.push(rooms::socket(&session::public_id(&s)));
            }
            Standing::TooLong => {
                metrics::counter!("livebase_socket_over_budget_disconnects_total").increment(1);
                s.disconnect().ok();
            }
        }
    }
    // Counters of rooms nobody is in would only grow the map.
    if let Ok(mut map) = ledger.rooms.write() {
        map.retain(|room, _| occupied.contains(room.as_str()));
    }
    ledger.behind_count.store(behind.len(), Ordering::Relaxed);
    if let Ok(mut list) = ledger.behind.write() {
        *list = Arc::new(behind);
    }
}

/// Where a socket stands against its budget at a sweep.
enum Standing {
    Fine,
    Behind,
    TooLong,
}

/// One socket's queue accounting, kept in its extensions.
pub struct Outbox {
    /// Bytes of every message handed to the socket's queue.
    queued: AtomicU64,
    /// What its connections wrote: the current one's tap, as it read when attached,
    /// and what earlier connections wrote for it.
    transport: Mutex<Option<(Arc<WriteTap>, u64)>>,
    written_before: AtomicU64,
    /// Since when it has been behind (it missed a message and has not caught up).
    over_since: Mutex<Option<Instant>>,
    /// Each of its rooms' counters as the last sweep saw them.
    seen: Mutex<HashMap<String, u64>>,
    /// Left out of room emits until the next sweep.
    left_out: AtomicBool,
}

/// What the budget says about one more message for a socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Over the budget: skip this message.
    Drop,
    /// Over the budget for longer than allowed: disconnect.
    Disconnect,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            queued: AtomicU64::new(0),
            transport: Mutex::new(None),
            written_before: AtomicU64::new(0),
            over_since: Mutex::new(None),
            seen: Mutex::default(),
            left_out: AtomicBool::new(false),
        }
    }

    /// Behind once over the budget, until back under half of it; `TooLong` once
    /// behind for `patience`.
    fn standing(&self, budget: u64, patience: Duration) -> Standing {
        let backlog = self.backlog();
        let Ok(mut since) = self.over_since.lock() else {
            return Standing::Fine;
        };
        if backlog <= budget / 2 {
            *since = None;
            return Standing::Fine;
        }
        if backlog <= budget && since.is_none() {
            return Standing::Fine;
        }
        if since.get_or_insert_with(Instant::now).elapsed() >= patience {
            Standing::TooLong
        } else {
            Standing::Behind
        }
    }

    /// Moves the write counting to `tap`'s connection (a new poll or an upgrade).
    fn attach(&self, tap: &Arc<WriteTap>) {
        let Ok(mut transport) = self.transport.lock() else {
            return;
        };
        if let Some((current, _)) = transport.as_ref()
            && Arc::ptr_eq(current, tap)
        {
            return;
        }
        if let Some((old, from)) = transport.take() {
            self.written_before
                .fetch_add(old.written().saturating_sub(from), Ordering::Relaxed);
        }
        *transport = Some((tap.clone(), tap.written()));
    }

    /// Bytes its connections wrote since it was opened.
    fn written(&self) -> u64 {
        let current = match self.transport.lock() {
            Ok(transport) => transport
                .as_ref()
                .map_or(0, |(tap, from)| tap.written().saturating_sub(*from)),
            Err(_) => 0,
        };
        self.written_before.load(Ordering::Relaxed) + current
    }

    /// Bytes still held for the socket. Writes of messages that were not counted here
    /// (heartbeats, the CONNECT answer) would read as credit; it is forgotten.
    fn backlog(&self) -> u64 {
        let written = self.written();
        let queued = self.queued.load(Ordering::Relaxed);
        if written >= queued {
            self.queued.fetch_max(written, Ordering::Relaxed);
            0
        } else {
            queued - written
        }
    }

    /// Bytes still held for the socket (for the admin's socket list).
    pub fn queued_bytes(&self) -> u64 {
        self.backlog()
    }

    /// Admits a message of `size` bytes against `budget`, counting it if admitted. A
    /// socket that had to miss a message is behind until its backlog falls to half the
    /// budget; behind for `patience`, it is to be disconnected.
    pub fn admit(&self, size: u64, budget: u64, patience: Duration) -> Verdict {
        let backlog = self.backlog();
        let Ok(mut behind_since) = self.over_since.lock() else {
            return Verdict::Send;
        };
        if backlog <= budget / 2 {
            *behind_since = None;
        }
        if behind_since.is_some_and(|since| since.elapsed() >= patience) {
            return Verdict::Disconnect;
        }
        if backlog == 0 || backlog + size <= budget {
            self.queued.fetch_add(size, Ordering::Relaxed);
            return Verdict::Send;
        }
        behind_since.get_or_insert_with(Instant::now);
        Verdict::Drop
    }
}

/// A new socket's outbox, counting what the connection that opened it writes.
pub(crate) fn open(s: &SocketRef) {
    let outbox = Arc::new(Outbox::new());
    if let Some(tap) = s.req_parts().extensions.get::<Arc<WriteTap>>() {
        outbox.attach(tap);
    }
    s.extensions.insert(outbox);
}

pub(crate) fn of(s: &SocketRef) -> Option<Arc<Outbox>> {
    s.extensions.get::<Arc<Outbox>>()
}

/// Middleware around the Socket.IO layer: a request of an existing session (a poll, a
/// post, a WebSocket upgrade) moves that session's write counting to the connection it
/// arrived on, which is where its next packets will be written.
pub async fn attach_transport(
    State(realtime): State<Realtime>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/socket.io")
        && let Some(tap) = request.extensions().get::<Arc<WriteTap>>()
        && let Some(sid) = session_id(request.uri().query())
        && let Some(s) = realtime.io().get_socket(sid)
        && let Some(outbox) = of(&s)
    {
        outbox.attach(tap);
    }
    next.run(request).await
}

fn session_id(query: Option<&str>) -> Option<Sid> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("sid="))
        .and_then(|sid| sid.parse().ok())
}

/// The size a message takes in a socket's queue, near enough: its JSON, the event name
/// and the packet's framing.
pub fn size_of<T: Serialize + ?Sized>(event: &str, data: &T) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, data);
    count.0 + event.len() as u64 + 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_and_a_socket_that_catches_up_is_served_again() {
        let outbox = Outbox::new();
        let tap = Arc::new(WriteTap::default());
        outbox.attach(&tap);
        let patience = Duration::from_secs(3600);
        // Nothing queued: even a message over the budget goes.
        assert_eq!(outbox.admit(10_000, 1000, patience), Verdict::Send);
        assert_eq!(outbox.admit(10, 1000, patience), Verdict::Drop);
        tap.add(9_500);
        assert_eq!(outbox.admit(400, 1000, patience), Verdict::Send);
        assert_eq!(outbox.admit(200, 1000, patience), Verdict::Drop);
        // Writes of uncounted packets are no credit for later.
        tap.add(100_000);
        assert_eq!(outbox.admit(900, 1000, patience), Verdict::Send);
        assert_eq!(outbox.admit(900, 1000, patience), Verdict::Drop);
        assert_eq!(outbox.admit(900, 1000, Duration::ZERO), Verdict::Disconnect);
    }
}
