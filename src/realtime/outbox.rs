//! What is queued for each socket, in bytes: socketioxide bounds a socket's queue by
//! message count only, and a count of large messages is a lot of memory. Every emit
//! livebase makes adds its size to each local target's `Outbox`; the connection the
//! socket's transport currently runs on counts what it writes (`conn::WriteTap`), and
//! the difference is what is still held for that socket.
//!
//! A socket over `--socket-buffer-bytes` misses further emits (counted as drops) until
//! it has caught up; one that has not caught up (to half the budget) within the ping
//! timeout is disconnected. A socket
//! with nothing queued always gets the next message, whatever its size, so one large
//! event is never undeliverable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

use super::Realtime;
use crate::conn::WriteTap;

/// One socket's queue accounting, kept in its extensions.
pub struct Outbox {
    /// Bytes of every message handed to the socket's queue.
    queued: AtomicU64,
    /// Bytes its connections wrote (attached to their `WriteTap`).
    written: Arc<AtomicU64>,
    /// Since when it has been behind (it missed a message and has not caught up).
    over_since: Mutex<Option<Instant>>,
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
            written: Arc::default(),
            over_since: Mutex::new(None),
        }
    }

    /// Bytes still held for the socket. Writes of messages that were not counted here
    /// (heartbeats, the CONNECT answer) would read as credit; it is forgotten.
    fn backlog(&self) -> u64 {
        let written = self.written.load(Ordering::Relaxed);
        let queued = self.queued.load(Ordering::Relaxed);
        if written >= queued {
            self.queued.fetch_max(written, Ordering::Relaxed);
            0
        } else {
            queued - written
        }
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
        tap.attach(outbox.written.clone());
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
        tap.attach(outbox.written.clone());
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
        let patience = Duration::from_secs(3600);
        // Nothing queued: even a message over the budget goes.
        assert_eq!(outbox.admit(10_000, 1000, patience), Verdict::Send);
        assert_eq!(outbox.admit(10, 1000, patience), Verdict::Drop);
        outbox.written.fetch_add(9_500, Ordering::Relaxed);
        assert_eq!(outbox.admit(400, 1000, patience), Verdict::Send);
        assert_eq!(outbox.admit(200, 1000, patience), Verdict::Drop);
        // Writes of uncounted packets are no credit for later.
        outbox.written.fetch_add(100_000, Ordering::Relaxed);
        assert_eq!(outbox.admit(900, 1000, patience), Verdict::Send);
        assert_eq!(outbox.admit(900, 1000, patience), Verdict::Drop);
        assert_eq!(outbox.admit(900, 1000, Duration::ZERO), Verdict::Disconnect);
    }
}
