//! Reconnection cycles for the no-leaks property: sockets go away (their client drops
//! the connection, the server ends them when their user's role changes, their server
//! restarts or their node is killed), stay away for zero to three batches, and come back
//! as a client does (README, "Missed nothing: resume after a reconnect"): handshake
//! `lastSeq` = the highest `seq` they received, the same credentials (after a role
//! change, the old token or a fresh one: both name the user as they are now), then the
//! same `join`s and Sails subscriptions, at once, within the resume window.
//!
//! What a replay owes is computed from the oracle's own log (`Sim::log`: every committed
//! change with its events' keys and its before actions' emits, numbered as the witness
//! saw them) and README's room layout (`rooms`: per path, one room for the readers of
//! every row of an object, one per user under owner row security; a room per Sails row,
//! user, role, channel, and everyone), never by asking livebase. A join replays every
//! logged emit after `lastSeq` one of whose rooms it joins now and none of whose rooms
//! the socket has been in since it connected: it had those, live or replayed, until it
//! left the room (a `leave`, or all of them at a re-authentication). Rooms are chosen
//! for the identity as it is now, so that is what it may read now, through the path
//! joined (identity rooms at connection: LoopBack names and emits to its user, role or
//! everyone; `db-` channels; Sails watches and rows; channels, for `broadcast`). Each is
//! owed exactly once: an event the same connection receives again is a DUPLICATE. Not
//! logged, so never replayed: on-demand actions' emits, `chan_out`. After actions' emits
//! are an entry of their own, numbered after their write; one that reached no socket
//! live has a number the oracle never learns, so a replay may carry it (once) or not.
//!
//! Joins made later in the window, by churn on a resumed socket, replay too, by the same
//! rule; there the ack says whether the join fell in the window (`recovered`), and the
//! oracle checks that against the clock (it must within 10 s of connecting, must not
//! past them).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Mode, Nodes, Obj, Perm, Rng, Scope, Sim, Sock, Who, joined, scope};
use crate::common::ANON;
use crate::sio::{Incoming, Sio};

/// A socket that connected with `lastSeq`.
/// What a join replays: `owed` once each; `maybe` at most once (after actions' emits
/// whose number no socket saw, so the oracle cannot tell whether they follow `lastSeq`).
#[derive(Default)]
struct Replay {
    owed: Vec<String>,
    maybe: Vec<String>,
}

pub(super) struct Resumed {
    pub after: u64,
    /// Just before it connected, and once it was: the server opened its window between.
    pub connecting: Instant,
    pub connected: Instant,
}

/// What a socket joins that a replay may follow: its identity rooms at connection, a
/// `db-` channel, a Sails watch (list) or row, a channel.
#[derive(Debug)]
pub(super) enum Join {
    Identity,
    Db(usize),
    Watch(usize),
    Row(usize),
    Chan(String),
}

/// A socket away from its server, and what it needs to come back as the same client.
pub(super) struct Away {
    label: String,
    person: Option<usize>,
    /// The role it had: its user's role may change meanwhile.
    role: String,
    token: Option<String>,
    db: BTreeSet<usize>,
    watch: BTreeSet<usize>,
    rows: BTreeSet<usize>,
    chans: BTreeSet<String>,
    last_seq: Option<u64>,
    /// Batches it still misses.
    pub misses: usize,
    why: &'static str,
    /// Its own choices, drawn when it comes back.
    rng: Rng,
}

impl Sim {
    /// Socket `i` goes away (its connection is dropped here, or was closed): what it
    /// needs to come back after `misses` batches.
    pub(super) fn leave(
        &mut self,
        i: usize,
        misses: usize,
        why: &'static str,
        rng: &mut Rng,
    ) -> Away {
        let sock = self.socks.remove(i);
        assert!(
            sock.owed.values().all(|n| *n == 0),
            "{}: leaves with events owed",
            sock.label
        );
        Away {
            label: sock.label,
            person: sock.who.person,
            role: sock.who.role,
            token: sock.token,
            db: sock.db,
            watch: sock.watch,
            rows: sock.rows,
            chans: sock.chans,
            last_seq: sock.max_seq,
            misses,
            why,
            rng: Rng(rng.next()),
        }
    }

    /// After a batch is settled: the sockets away count it; a killed node whose time is
    /// up starts again; after batch `restart_after` the server restarts (one node) or a
    /// node other than the witness's is killed (several); then some sockets drop, to
    /// come back after one to three batches.
    pub(super) async fn between_batches(
        &mut self,
        nodes: &mut Nodes,
        rng: &mut Rng,
        restart_after: usize,
    ) {
        for away in &mut self.away {
            away.misses = away.misses.saturating_sub(1);
        }
        if let Some(k) = self.down {
            self.down_batches -= 1;
            if self.down_batches == 0 {
                let starting = Instant::now();
                nodes.start_again(k);
                self.stats.restart_time += starting.elapsed();
                self.down = None;
                self.reconnect_sentinel(nodes, k).await;
            }
        }
        if self.stats.batches == restart_after {
            self.stats.restarts += 1;
            let (k, why) = if self.nodes == 1 {
                (0, "a server restart")
            } else {
                (1 + self.spread.below(self.nodes - 1), "a node kill")
            };
            let stopping = Instant::now();
            nodes.stop(k).await;
            self.stats.restart_time += stopping.elapsed();
            self.displaced(rng, k, why).await;
            if self.nodes == 1 {
                self.reconnect_sentinel(nodes, k).await;
            } else {
                self.down = Some(k);
                self.down_batches = 1 + self.spread.below(2);
            }
            self.reopen_unauthenticated(nodes, k).await;
        }
        for _ in 0..rng.below(4) {
            if self.socks.len() <= self.sentinels {
                break;
            }
            let i = self.pick_sock(rng);
            let away = self.leave(i, 1 + rng.below(3), "a dropped connection", rng);
            self.away.push(away);
        }
    }

    /// Node `node` stopped: its sockets closed, having received nothing since the last
    /// barrier; all but its sentinel go away, to come back within two batches.
    async fn displaced(&mut self, rng: &mut Rng, node: usize, why: &'static str) {
        let mut problems = Vec::new();
        for i in 0..self.socks.len() {
            if self.socks[i].node != node {
                continue;
            }
            let mut events = Vec::new();
            loop {
                match self.socks[i].sio.next(Duration::from_secs(10)).await {
                    Some(Incoming::Event(name, args)) => events.push((name, args)),
                    Some(Incoming::Closed) => break,
                    None => self.fail(format!(
                        "{}: its server stopped, yet it is not closed",
                        self.socks[i].label
                    )),
                }
            }
            self.check(i, events, &mut problems);
        }
        if !problems.is_empty() {
            self.fail(format!("after {why}:\n  {}", problems.join("\n  ")));
        }
        let mut i = self.sentinels;
        while i < self.socks.len() {
            if self.socks[i].node == node {
                let away = self.leave(i, rng.below(3), why, rng);
                self.away.push(away);
            } else {
                i += 1;
            }
        }
    }

    pub(super) async fn come_back_due(&mut self, nodes: &Nodes) {
        let (due, later) = std::mem::take(&mut self.away)
            .into_iter()
            .partition(|a| a.misses == 0);
        self.away = later;
        for away in due {
            self.come_back(nodes, away).await;
        }
    }

    pub(super) async fn come_back_all(&mut self, nodes: &Nodes) {
        for away in std::mem::take(&mut self.away) {
            self.come_back(nodes, away).await;
        }
    }

    /// The client reconnects, to a random node, with `lastSeq` (one time in ten
    /// without: then nothing is replayed), gets what it missed through its identity
    /// rooms and `recovered`, and makes its subscriptions again, in a random order.
    pub(super) async fn come_back(&mut self, nodes: &Nodes, away: Away) {
        let Away {
            label,
            person,
            role,
            token,
            db,
            watch,
            rows,
            chans,
            last_seq,
            why,
            mut rng,
            ..
        } = away;
        let who = match person {
            Some(p) => self.person_who(p),
            None => Who::guest(),
        };
        let token = person.map(|p| {
            let now = self.persons[p].token.clone();
            match token {
                Some(old) if old != now && rng.chance(0.5) => old,
                _ => now,
            }
        });
        let after = last_seq.filter(|_| !rng.chance(0.1));
        let node = self.pick_node();
        let way = rng.below(3);
        let connecting = Instant::now();
        let sio = match connect_resuming(nodes.at(node).base, token.as_deref(), after, way).await {
            Ok(sio) => sio,
            Err(e) => self.fail(format!("{label} reconnecting after {why}: {e}")),
        };
        let connected = Instant::now();
        let n = self.stats.reconnects.values().sum::<usize>();
        *self.stats.reconnects.entry(why).or_default() += 1;
        let changed = who.role != role;
        let label = format!(
            "socket ⟳{n} of {}{} (back after {why}, {}{})",
            who.describe(),
            self.on(node),
            after.map_or("no lastSeq".to_string(), |a| format!("lastSeq {a}")),
            if changed { ", its role changed" } else { "" },
        );
        let mut sock = Sock::new(label, sio, node, who, token);
        sock.resume = after.map(|after| Resumed {
            after,
            connecting,
            connected,
        });
        self.socks.push(sock);
        let i = self.socks.len() - 1;
        if let Some(after) = after {
            self.stats.resumed += 1;
            if changed {
                self.stats.role_changed_away += 1;
            }
            self.recover_at_connection(i, after).await;
        }
        self.entered(i, &Join::Identity);
        let mut joins: Vec<Join> = db
            .into_iter()
            .map(Join::Db)
            .chain(chans.into_iter().map(Join::Chan))
            .chain(watch.into_iter().map(Join::Watch))
            .chain(rows.into_iter().map(Join::Row))
            .collect();
        rng.shuffle(&mut joins);
        for join in joins {
            match join {
                Join::Db(o) => self.join_db(i, o).await,
                Join::Chan(channel) => self.join_channel(i, &channel).await,
                Join::Watch(o) => self.sails_list(i, o, rng.chance(0.5)).await,
                Join::Row(handle) => self.sails_row(i, handle, rng.chance(0.5)).await,
                Join::Identity => unreachable!("joined at connection"),
            }
        }
    }

    /// Before `recovered`, exactly what the identity rooms owe since `after` (and the
    /// marker rows since, by their LoopBack names), in order; `recovered` says so.
    async fn recover_at_connection(&mut self, i: usize, after: u64) {
        self.owe_replay(i, &Join::Identity);
        let mut events = Vec::new();
        let recovered = loop {
            match self.socks[i].sio.next(Duration::from_secs(10)).await {
                Some(Incoming::Event(name, args)) if name == "recovered" => {
                    break args.into_iter().next().unwrap_or(Value::Null);
                }
                Some(Incoming::Event(name, args)) => events.push((name, args)),
                other => self.fail(format!(
                    "{}: no `recovered` after {} events, then {other:?}",
                    self.socks[i].label,
                    events.len()
                )),
            }
        };
        let label = self.socks[i].label.clone();
        let mut problems = Vec::new();
        let markers: Vec<u64> = events
            .iter()
            .filter(|(name, _)| name == "/markers/POST")
            .filter_map(|(_, args)| args.get(1)?["seq"].as_u64())
            .collect();
        let missed: Vec<u64> = self.marker_seqs.range(after + 1..).copied().collect();
        if markers != missed {
            problems.push(format!(
                "{label}: replayed marker rows {markers:?}, but missed {missed:?}"
            ));
        }
        let want = json!({ "recovered": true, "seq": self.head, "replayed": events.len() });
        if recovered != want {
            problems.push(format!("{label}: `recovered` {recovered}, want {want}"));
        }
        let replayed = events.len() - markers.len();
        self.check(i, events, &mut problems);
        if !problems.is_empty() {
            self.fail(format!(
                "{} problem(s) at a reconnection:\n  {}",
                problems.len(),
                problems.join("\n  ")
            ));
        }
        self.stats.replayed_at_connection += replayed;
    }

    /// After a successful join on socket `i` (its ack `ack`, sent at `sent`): within its
    /// resume window the ack says `recovered: true` and the log's last number, and the
    /// join replayed what the socket missed through it (owed now, checked at the next
    /// settle); outside, neither. Then the socket is in the join's rooms.
    pub(super) fn subscribed(&mut self, i: usize, ack: &Value, join: Join, sent: Instant) {
        if self.socks[i].resume.is_some() {
            self.replayed(i, ack, &join, sent);
        } else if ack.get("recovered").is_some() || ack.get("seq").is_some() {
            self.fail(format!(
                "{}: connected without lastSeq, yet {join:?} answered {ack}",
                self.socks[i].label
            ));
        }
        self.entered(i, &join);
    }

    fn replayed(&mut self, i: usize, ack: &Value, join: &Join, sent: Instant) {
        let sock = &self.socks[i];
        let told = ack.get("recovered").is_some() || ack.get("seq").is_some();
        let resumed = sock.resume.as_ref().expect("a resumed socket");
        let window = livebase::realtime::resume::WINDOW;
        if !told {
            // The server opened the window after `connecting`; the ack is here now.
            if Instant::now() < resumed.connecting + window {
                self.fail(format!(
                    "{}: {join:?} within the resume window, yet its ack replayed nothing: {ack}",
                    sock.label
                ));
            }
            return;
        }
        if sent > resumed.connected + window {
            self.fail(format!(
                "{}: {join:?} sent past the resume window, yet its ack replayed: {ack}",
                sock.label
            ));
        }
        if ack["recovered"] != json!(true) || ack["seq"] != json!(self.head) {
            self.fail(format!(
                "{}: {join:?} in the resume window: the ack must say recovered: true, seq: {}; \
                 got {ack}",
                sock.label, self.head
            ));
        }
        self.stats.window_joins += 1;
        self.owe_replay(i, join);
    }

    fn owe_replay(&mut self, i: usize, join: &Join) {
        let Replay { owed, maybe } = self.replay(i, join);
        let sock = &mut self.socks[i];
        for key in owed {
            sock.replays.insert(key.clone());
            sock.owe(key);
        }
        sock.optional.extend(maybe);
    }

    /// Socket `i` is in `join`'s rooms: since it connected, for good (see `replay`).
    pub(super) fn entered(&mut self, i: usize, join: &Join) {
        let rooms = self.rooms_of(i, join);
        self.socks[i].been_in.extend(rooms);
    }

    /// What joining `join` replays to socket `i`: every logged emit after its `lastSeq`
    /// one of whose rooms the socket joins now and none of whose rooms it has been in
    /// since connecting, by key; never one this connection already received.
    fn replay(&self, i: usize, join: &Join) -> Replay {
        let sock = &self.socks[i];
        let after = sock.resume.as_ref().expect("a resumed socket").after;
        let new: Vec<String> = self
            .rooms_of(i, join)
            .into_iter()
            .filter(|r| !sock.been_in.contains(r))
            .collect();
        let mut out = Replay::default();
        if new.is_empty() {
            return out;
        }
        for entry in &self.log {
            // Unknown for after actions' emits no socket received: whether they come
            // after `lastSeq` is not known, so they may come (once) or not.
            let after_last = match (entry.seq, &entry.change) {
                (Some(seq), _) => Some(seq > after),
                (None, None) => None,
                (None, Some(change)) => self.fail(format!(
                    "the number of change [{}] is unknown: the witness missed it",
                    change.db
                )),
            };
            if after_last == Some(false) {
                continue;
            }
            for (key, rooms) in self.emits_of_change(entry) {
                if rooms.iter().any(|r| new.contains(r))
                    && !rooms.iter().any(|r| sock.been_in.contains(r))
                    && !sock.received.contains(key)
                {
                    match after_last {
                        Some(_) => out.owed.push(key.clone()),
                        None => out.maybe.push(key.clone()),
                    }
                }
            }
        }
        out
    }

    /// The rooms socket `i` joins for `join`, as it is now (none: it may not).
    fn rooms_of(&self, i: usize, join: &Join) -> Vec<String> {
        let sock = &self.socks[i];
        let obj_room = |path: &str, o: usize| rooms::reader(path, &self.objs[o], &sock.who);
        match join {
            Join::Identity => {
                let who = &sock.who;
                let mut joined = vec![
                    rooms::user(&who.username),
                    format!("role:{}", who.role),
                    "all".to_string(),
                ];
                for o in 0..self.objs.len() {
                    if self.objs[o].loopback {
                        joined.extend(obj_room("lb", o));
                    }
                }
                joined
            }
            Join::Db(o) => obj_room("db", *o).into_iter().collect(),
            Join::Watch(o) => obj_room("sw", *o).into_iter().collect(),
            Join::Row(handle) => {
                let row = &self.rows[*handle];
                vec![rooms::row(&self.objs[row.obj], row.id)]
            }
            Join::Chan(channel) => vec![format!("chan:{channel}")],
        }
    }

    /// Each emit a logged change makes (key, rooms): its before actions' emits, then
    /// `db_*`, the Sails event, the LoopBack name.
    fn emits_of_change<'a>(&self, entry: &'a super::Logged) -> Vec<(&'a String, Vec<String>)> {
        let mut out: Vec<(&String, Vec<String>)> = entry
            .emits
            .iter()
            .map(|(key, e)| (key, rooms::of_emit(e)))
            .collect();
        let Some(change) = &entry.change else {
            return out;
        };
        let obj = &self.objs[change.obj];
        out.push((&change.db, rooms::of_row("db", obj, change.owner)));
        let mut sails = rooms::of_row("sw", obj, change.owner);
        sails.push(rooms::row(obj, self.rows[change.row].id));
        out.push((&change.sails, sails));
        if obj.loopback {
            out.push((&change.lb, rooms::of_row("lb", obj, change.owner)));
        }
        out
    }

    /// Sentinel `k` again, on its node's new server.
    async fn reconnect_sentinel(&mut self, nodes: &Nodes, k: usize) {
        let token = self.persons[0].token.clone();
        let sio = Sio::with_token(nodes.at(k).base, &token).await;
        let label = self.socks[k].label.clone();
        self.socks[k] = Sock::new(label, sio, k, self.person_who(0), Some(token));
        if k == 0 {
            self.witness().await;
        }
    }

    /// Sentinel 0 joins every `db-` channel: an Admin reads every row, so it receives an
    /// event of every logged change and of every marker row, whose numbers the oracle
    /// learns from it.
    pub(super) async fn witness(&mut self) {
        for o in 0..self.objs.len() {
            self.join_db(0, o).await;
        }
        let ack = self.socks[0].sio.call("join", json!("db-markers")).await;
        if joined(&ack) != json!({ "ok": true, "channel": "db-markers" }) {
            self.fail(format!("the witness joining db-markers: {ack}"));
        }
    }

    /// A socket that never authenticates (`refused`: after a refused `authentication`).
    pub(super) async fn unauthenticated(&mut self, nodes: &Nodes, refused: bool) {
        let node = self.pick_node();
        let mut s = Sio::connect(nodes.at(node).base, None)
            .await
            .expect("connects");
        if refused {
            s.emit("authentication", &[json!({ "id": "not-a-token" })]);
            s.expect("unauthorized").await;
        }
        self.unauth.push((node, s));
    }

    /// Node `node` stopped: its unauthenticated sockets got nothing; new ones replace
    /// them.
    async fn reopen_unauthenticated(&mut self, nodes: &Nodes, node: usize) {
        let (closed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unauth)
            .into_iter()
            .partition(|(n, _)| *n == node);
        self.unauth = kept;
        for (k, (_, mut s)) in closed.into_iter().enumerate() {
            let got = super::events_of(&mut s).await;
            if !got.is_empty() {
                self.fail(format!("an unauthenticated socket received {got:?}"));
            }
            self.unauthenticated(nodes, k % 2 == 1).await;
        }
    }
}

/// Connects as a resuming client does: handshake `auth: {token, lastSeq}` (`lastSeq` a
/// number, or a decimal string with the token as `Bearer …`), or `?token=…&lastSeq=…` on
/// the handshake URL as clients without `auth` send them; anonymously with
/// `anonymousToken` (or the `AnonymousToken` header). Without `after`, a plain
/// handshake with the same credentials.
async fn connect_resuming(
    base: &str,
    token: Option<&str>,
    after: Option<u64>,
    way: usize,
) -> Result<Sio, String> {
    let Some(after) = after else {
        let auth = match token {
            Some(token) => json!({ "token": token }),
            None => json!({ "anonymousToken": ANON }),
        };
        return Sio::connect(base, Some(auth)).await;
    };
    match (token, way) {
        (Some(token), 0) => {
            Sio::connect(base, Some(json!({ "token": token, "lastSeq": after }))).await
        }
        (Some(token), 1) => {
            let auth = json!({ "token": format!("Bearer {token}"), "lastSeq": after.to_string() });
            Sio::connect(base, Some(auth)).await
        }
        (Some(token), _) => {
            let query = format!("&token={token}&lastSeq={after}");
            Sio::connect_request(base, &query, &[], None).await
        }
        (None, 2) => {
            let query = format!("&lastSeq={after}");
            Sio::connect_request(base, &query, &[("AnonymousToken", ANON)], None).await
        }
        (None, _) => {
            let auth = json!({ "anonymousToken": ANON, "lastSeq": after });
            Sio::connect(base, Some(auth)).await
        }
    }
}

/// README's room layout ("Filtering is by room layout"), by meaning: for each path
/// (`db` channels, `sw` Sails watches, `lb` LoopBack names) the readers of every row of an
/// object share one room, and under owner row security each user who reads only their
/// own rows has one; a change goes to the shared room and its owner's. Sails rows, users
/// (usernames in any case), roles, channels and everyone have one each.
mod rooms {
    use super::{Mode, Obj, Perm, Scope, Value, Who, scope};

    pub fn reader(path: &str, obj: &Obj, who: &Who) -> Option<String> {
        match scope(who, obj, Perm::Read) {
            Scope::Denied => None,
            Scope::All => Some(format!("{path}:{}", obj.name)),
            Scope::Own(me) => Some(format!("{path}:{}:{me}", obj.name)),
        }
    }

    pub fn of_row(path: &str, obj: &Obj, owner: Option<i64>) -> Vec<String> {
        let mut rooms = vec![format!("{path}:{}", obj.name)];
        if let (Mode::Owner | Mode::OwnerWrite, Some(owner)) = (obj.mode, owner) {
            rooms.push(format!("{path}:{}:{owner}", obj.name));
        }
        rooms
    }

    pub fn row(obj: &Obj, id: i64) -> String {
        format!("row:{}:{id}", obj.name)
    }

    pub fn user(username: &str) -> String {
        format!("user:{}", username.to_lowercase())
    }

    /// An action's emit `{kind, users|role|room}`.
    pub fn of_emit(e: &Value) -> Vec<String> {
        match e["kind"].as_str().unwrap_or_default() {
            "users" => e["users"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|u| user(u.as_str().unwrap_or_default()))
                .collect(),
            "role" => vec![format!("role:{}", e["role"].as_str().unwrap_or_default())],
            "all" => vec!["all".to_string()],
            _ => vec![format!("chan:{}", e["room"].as_str().unwrap_or_default())],
        }
    }
}
