//! Channel presence: who is in a channel whose name starts with `presence-` (Pusher's
//! convention: a channel opts in by its name, so clients need no option and channels
//! that do not want it — large ones, where every join and leave would reach every
//! member — pay nothing, and clients that do not expect `presence` events get none).
//! Members are users,
//! shown by id only (`{userId}`; an anonymous socket is its own member, `{userId: null,
//! sid}` with its public id): never an email, a token or a session id, so a channel
//! tells its members no more than that user ids are there. Apps that show names read
//! them over REST, where the `users` permissions apply.
//!
//! - When a user's first socket enters a channel, its members get `presence`
//!   `{channel, event: "join", member}`; when its last socket leaves it (`leave`, a
//!   disconnect, authenticating as someone else), `{…, event: "leave", …}`.
//! - `presence(channel)` (a member asking) answers `{channel, members, truncated}`.
//!
//! The list lives in the database the nodes share (`store::presence`), so it is the same
//! on every node; announcements go to the channel's room like any channel emit (across
//! nodes through Redis). A node that dies is noticed by the others within its heartbeat
//! (`lb_nodes`, 5 s) plus one sweep (`SWEEP_EVERY`): they remove its sockets and
//! announce the members that left with them.
//!
//! Bounded: a member may enter channels at most `MAX_ENTRIES` times per `WINDOW` on a
//! node (a flapping client, reconnecting or not, is refused with an error until the
//! window passes, so it cannot flood a channel with announcements); lists answer at
//! most `MAX_LISTED` members.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::{SocketIo, SocketRef};
use super::rooms::{self, Audience};
use super::watch::Cause;
use super::{Shared, emit_to, root_of, session};
use crate::auth::Identity;
use crate::store::Store;
use crate::store::presence::Change;

/// The prefix of the channels that have presence.
pub const PREFIX: &str = "presence-";

/// Whether channel `name` has presence.
pub fn applies(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Channel entries one member may make per `WINDOW` on one node.
pub const MAX_ENTRIES: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(10);
/// Members one `presence` answer lists.
pub const MAX_LISTED: u32 = 1000;
/// How often a node looks for nodes that died.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// The presence registry of this node.
pub(crate) struct Presence {
    store: Store,
    node: String,
    /// Entries per member in the current window.
    entries: moka::future::Cache<String, Arc<std::sync::atomic::AtomicU32>>,
}

impl Presence {
    pub fn new(store: Store, node: &str) -> Presence {
        Presence {
            store,
            node: node.to_string(),
            entries: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
        }
    }
}

/// Marks a socket that entered a plain channel at least once.
#[derive(Clone, Copy)]
struct Recorded;

/// The member a socket counts as.
fn member_of(s: &SocketRef, who: &Identity) -> String {
    match who.user_id {
        Some(id) => format!("u:{id}"),
        None => format!("s:{}", session::public_id(s)),
    }
}

/// A member as clients see it.
pub fn member_json(member: &str) -> Value {
    match member.split_once(':') {
        Some(("u", id)) => json!({ "userId": id.parse::<i64>().ok() }),
        Some((_, sid)) => json!({ "userId": null, "sid": sid }),
        None => json!({ "userId": null }),
    }
}

/// Whether `who` may enter one more channel now; counts the entry.
pub(crate) async fn may_enter(
    shared: &Shared,
    s: &SocketRef,
    who: &Identity,
) -> Result<(), String> {
    let Some(presence) = shared.presence.get() else {
        return Ok(());
    };
    let count = presence
        .entries
        .get_with(member_of(s, who), async { Default::default() })
        .await;
    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if n >= MAX_ENTRIES {
        metrics::counter!("livebase_presence_refusals_total").increment(1);
        return Err(format!(
            "joining channels too often: at most {MAX_ENTRIES} joins per {} s; try again shortly",
            WINDOW.as_secs()
        ));
    }
    Ok(())
}

/// After a socket joined plain channel `name`: records it, and announces its member if
/// it was not there yet.
pub(crate) async fn entered(
    shared: &Shared,
    io: &SocketIo,
    s: &SocketRef,
    who: &Identity,
    name: &str,
) {
    let Some(presence) = shared.presence.get() else {
        return;
    };
    let member = member_of(s, who);
    s.extensions.insert(Recorded);
    match presence
        .store
        .presence_enter(name, &session::public_id(s), &member, &presence.node)
        .await
    {
        Ok(true) => announce(shared, io, name, "join", &member).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, channel = name, "recording presence"),
    }
}

/// After a socket left plain channel `name` (every channel when `None`: it disconnected
/// or became someone else): announces the members no longer there.
pub(crate) async fn left(shared: &Shared, io: &SocketIo, s: &SocketRef, name: Option<&str>) {
    let Some(presence) = shared.presence.get() else {
        return;
    };
    // A socket that never entered a plain channel costs no query.
    if s.extensions.get::<Recorded>().is_none() {
        return;
    }
    match presence
        .store
        .presence_leave(&session::public_id(s), name)
        .await
    {
        Ok(gone) => announce_all(shared, io, gone).await,
        Err(e) => tracing::warn!(error = %e, "recording presence"),
    }
}

/// The members of `name`, for a socket that is one of them.
pub(crate) async fn members(shared: &Shared, s: &SocketRef, name: &str) -> Result<Value, String> {
    let Some(presence) = shared.presence.get() else {
        return Err("presence is not available here".into());
    };
    if !s.rooms().iter().any(|r| **r == *rooms::channel(name)) {
        return Err(format!("join `{name}` to see who is in it"));
    }
    let members = presence
        .store
        .presence_members(name, MAX_LISTED + 1)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "reading presence");
            "presence could not be read; try again".to_string()
        })?;
    let truncated = members.len() > MAX_LISTED as usize;
    let members: Vec<Value> = members
        .iter()
        .take(MAX_LISTED as usize)
        .map(|m| member_json(m))
        .collect();
    Ok(json!({ "channel": name, "members": members, "truncated": truncated }))
}

async fn announce(shared: &Shared, io: &SocketIo, channel: &str, event: &str, member: &str) {
    metrics::counter!("livebase_presence_announcements_total", "event" => event.to_string())
        .increment(1);
    let payload = json!({ "channel": channel, "event": event, "member": member_json(member) });
    emit_to(
        root_of(io, shared),
        shared,
        Audience::Channel(channel),
        Cause::Server,
        "presence",
        &payload,
    )
    .await;
}

async fn announce_all(shared: &Shared, io: &SocketIo, gone: Vec<Change>) {
    for change in gone {
        announce(shared, io, &change.channel, "leave", &change.member).await;
    }
}

/// Starts presence: this node's rows of an earlier run are gone (its sockets are), and
/// with several nodes (`several`) every `SWEEP_EVERY` the rows of nodes that died are
/// taken away and their members' departures announced.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    io: SocketIo,
    store: Store,
    node: &str,
    several: bool,
) {
    let presence = Presence::new(store.clone(), node);
    let _ = shared.presence.set(presence);
    // Alone: every row is an earlier run's; nobody is connected to hear of them.
    if !several && let Err(e) = store.presence_sweep(&[node.to_string()]).await {
        tracing::warn!(error = %e, "clearing presence of an earlier run");
    }
    if !several {
        return;
    }
    let shared = shared.clone();
    let node = node.to_string();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            if store.is_closed() {
                return;
            }
            let mut live = match crate::store::nodes::live_ids(&store).await {
                Ok(live) => live,
                Err(e) => {
                    tracing::debug!(error = %e, "listing live nodes for presence");
                    continue;
                }
            };
            live.push(node.clone());
            match store.presence_sweep(&live).await {
                Ok(gone) => announce_all(&shared, &io, gone).await,
                Err(e) => tracing::debug!(error = %e, "sweeping presence of stopped nodes"),
            }
        }
    });
}
