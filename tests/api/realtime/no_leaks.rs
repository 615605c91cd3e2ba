//! No leaked events: a randomized property test of livebase's whole delivery policy.
//!
//! A random app — data objects in every row-security mode (`none`, `owner`,
//! `ownerWrite`) with random role permissions, two declared roles, LoopBack names on
//! some objects, the built-in `users` object under random rules of its own — random
//! users with random roles, anonymous sockets, and sockets subscribed over a random
//! subset of every path: `db-<object>` channels, Sails list watches and one-row
//! subscriptions, LoopBack names (joined at authentication for readable objects), plain
//! channels (`socket.broadcast`, `chan_in`), and the identity rooms action emits target
//! (`emitUsers` / `emitRole` / `emitAll`). Then batches of concurrent random writes and
//! on-demand action calls, over REST and over Sails virtual requests, by users, Admin,
//! the master token and anonymous callers; actions on every trigger emit to random
//! targets and sometimes fail, refuse the write, or see it refused later (a unique
//! field), so refused writes are part of every batch.
//!
//! The oracle is written from DESIGN.md ("Auth and permissions", "Actions",
//! "Realtime"), not from livebase's permission code: it predicts the status of every
//! request and, for each one that commits, which socket is owed which event on which
//! path. After each batch a marker row goes through the write path's event bus (so the
//! relay has delivered everything before it), then a barrier emit reaches every
//! authenticated socket, and everything each socket received is matched against what
//! it was owed: an extra event is a failure (reported as a LEAK when its user may not
//! read the row or was not a target of the emit), an owed event that did not come is a
//! failure. Between batches sockets join and leave channels, list and read rows (whose
//! answers are checked too), re-authenticate as someone else, and users change role
//! (their sockets must be ended, and the ones that come back, and new ones, see only
//! the new role's rows).
//!
//! Numbers and order (README, "The event log"): every logged event (`db_*`, Sails and
//! LoopBack events of a committed change, and its before actions' emits) carries its
//! change's `seq` where the README puts it, the same on every path and every socket (the
//! oracle learns each change's number from the witness, sentinel 0, an Admin in every
//! `db-` channel); a write's after actions' emits carry the number of an entry of their
//! own (learnt from the first socket that gets one); what is not logged (on-demand
//! actions' emits, `chan_out`) carries none. On each socket, the numbers of a stream
//! only grow: a `db-` channel's, a Sails row's, the LoopBack names', strictly; actions'
//! emits to the identity rooms and to each channel, in order. An event one connection receives twice on one
//! path is a DUPLICATE.
//!
//! Reconnections (`resume`): after each settled batch up to three sockets drop and stay
//! away one to three batches; most sockets a role change ended come back at once or
//! after a batch or two; after batch 2 to 5 the one node restarts on its data (every
//! socket closes) or, across nodes, a node other than the witness's is killed (SIGKILL),
//! its sockets come back on the others and, once it is started again a batch or two
//! later, on its replacement too; at the end every socket away comes back. Each comes
//! back with `lastSeq` the highest `seq` it received (one in ten without), the same
//! credentials (a user's old or new token after a role change) and the same
//! subscriptions. What it is owed for the time away is exactly what its replays owe, by
//! `resume`'s rule (the logged events after `lastSeq` that the identity may read now
//! through those paths, once each), and after them whatever comes live.
//!
//! Update events and "could read before but not after": in livebase who may read a row
//! depends only on the reader's role and the row's creator (`owner` / `ownerWrite` key
//! on the creating user, kept apart from the fields; no update changes it). So an update
//! never changes who may read the row; the one thing that does is a role change, and the
//! contract's answer there is that the user's sockets end (`relay::forget_changed_identity`,
//! "their rooms were chosen for the old identity"). The oracle models exactly that: the
//! users-row event of the role change may reach the user's old sockets (they could read it
//! until then), which must then close; nothing after it reaches them.
//!
//! Where DESIGN.md is silent the oracle follows the code and its tests: a failing
//! *after* action's emits are dropped (the write stays; `WriteHook::after` "a failure is
//! logged and its emits dropped"); a Sails `post` subscribes its socket to the new row
//! when the request answers, so that socket's own `created` event may or may not come
//! (it is allowed, not owed, unless the socket also watches the object);
//! `emitUsers(["Guest"])` reaches anonymous sockets, whose username is `Guest`.
//!
//! Across nodes (`no_leaked_events_over_every_path_across_nodes`, when PostgreSQL and
//! Redis are configured): the same generator and oracle over three real binaries, each
//! socket and each REST request on a random node, so most events cross nodes through
//! Redis and role changes end sockets through the bus. The barrier is then built from
//! requests alone (`Sim::sync`): a marker row through each node, awaited by an Admin
//! sentinel socket on each node, then one `emitAll('__barrier')` action call through a
//! random node. The node choices come from a random stream of their own: a seed draws
//! the same app on one node and on several, and a one-node run draws nothing more.
//!
//! Reproduce a failure with the seed it prints (every random choice repeats; thread
//! timing, and so the row ids and the sequence numbers, may not; whether a join fell in
//! a resume window is read from its ack, not drawn):
//! `LIVEBASE_NO_LEAKS_SEED=<seed> cargo test --test api no_leaks -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::common::{ANON, Backend, Cred, Endpoint, Spawn, TestApp, backends, id_of, master};
use crate::sio::{Incoming, Sio};

mod resume;

/// Events checked on SQLite (PostgreSQL: `PG_TARGET`); batches run until it is reached.
const SQLITE_TARGET: usize = 10_000;
const PG_TARGET: usize = 10_000;
/// Events checked across `CLUSTER_NODES` real nodes.
const CLUSTER_TARGET: usize = 10_000;
const CLUSTER_NODES: usize = 3;
const MIN_BATCHES: usize = 6;
const MAX_BATCHES: usize = 400;

const ROLES: [&str; 6] = ["Admin", "User", "ReadOnly", "Public", "Editor", "Viewer"];
const NON_ADMIN: [&str; 5] = ["User", "ReadOnly", "Public", "Editor", "Viewer"];
const CHANNELS: [&str; 4] = ["room0", "room1", "room2", "room3"];
const TRIGGERS: [&str; 6] = [
    "beforeCreate",
    "afterCreate",
    "beforeUpdate",
    "afterUpdate",
    "beforeDelete",
    "afterDelete",
];
const BEFORE: [&str; 3] = ["beforeCreate", "beforeUpdate", "beforeDelete"];

// ---------------------------------------------------------------------------------
// Randomness: splitmix64, seeded from LIVEBASE_NO_LEAKS_SEED or the clock.
// ---------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    fn subset(&mut self, items: &[&str], p: f64) -> Vec<String> {
        items
            .iter()
            .filter(|_| self.chance(p))
            .map(|s| s.to_string())
            .collect()
    }
}

fn seed() -> u64 {
    match std::env::var("LIVEBASE_NO_LEAKS_SEED") {
        Ok(text) if !text.trim().is_empty() => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("LIVEBASE_NO_LEAKS_SEED={text} is not a number"))
        }
        _ => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            nanos ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// Prints the seed again if the test panics anywhere (also inside the shared socket
/// helpers, whose messages cannot carry it).
struct SeedOnPanic(String);

impl Drop for SeedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "no_leaks FAILED — {}; reproduce with LIVEBASE_NO_LEAKS_SEED",
                self.0
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// The model: objects, identities, rows, and the permission rules of DESIGN.md.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Owner,
    OwnerWrite,
}

impl Mode {
    fn text(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Owner => "owner",
            Mode::OwnerWrite => "ownerWrite",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    Read,
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone)]
struct Obj {
    name: String,
    mode: Mode,
    read: Vec<String>,
    create: Vec<String>,
    update: Vec<String>,
    delete: Vec<String>,
    loopback: bool,
    /// The built-in `users` object (rows are the users; no actions on it).
    users: bool,
}

impl Obj {
    fn roles(&self, op: Perm) -> &[String] {
        match op {
            Perm::Read => &self.read,
            Perm::Create => &self.create,
            Perm::Update => &self.update,
            Perm::Delete => &self.delete,
        }
    }

    /// The field each write sets to a fresh tag, so every event names its write.
    fn tag_field(&self) -> &'static str {
        if self.users { "firstName" } else { "title" }
    }

    fn schema(&self) -> Value {
        let fields = if self.users {
            json!({})
        } else {
            json!({
                "title": { "type": "string" },
                "code": { "type": "string", "unique": true },
                "fx": { "type": "json" }
            })
        };
        json!({
            "name": self.name,
            "fields": fields,
            "permissions": {
                "read": self.read, "create": self.create,
                "update": self.update, "delete": self.delete
            },
            "rowSecurity": self.mode.text(),
            "events": if self.loopback { json!(["loopback"]) } else { json!([]) },
        })
    }
}

/// A caller or a socket's user.
#[derive(Debug, Clone)]
struct Who {
    /// Index in `Sim::persons` (the master token acts as person 0, the first Admin).
    person: Option<usize>,
    user_id: Option<i64>,
    username: String,
    role: String,
    master: bool,
}

impl Who {
    fn guest() -> Who {
        Who {
            person: None,
            user_id: None,
            username: "Guest".into(),
            role: "Public".into(),
            master: false,
        }
    }

    fn describe(&self) -> String {
        let master = if self.master { " (master token)" } else { "" };
        format!("{} [{}]{master}", self.username, self.role)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Denied,
    All,
    Own(i64),
}

impl Scope {
    fn covers(self, owner: Option<i64>) -> bool {
        match self {
            Scope::Denied => false,
            Scope::All => true,
            Scope::Own(me) => owner == Some(me),
        }
    }
}

/// DESIGN.md, "Auth and permissions": Admin and the master token pass everything;
/// otherwise the role must be listed for the operation; row security `none` leaves it
/// at that, `owner` limits reads and writes to the rows the user created, `ownerWrite`
/// lets readers read every row and only the creator write. Anonymous callers are nobody
/// and own nothing: under `owner` they may read nothing, and they cannot create rows of
/// an object that records its creator (livebase answers 403; the contract says
/// "owner-secured objects record the creating user", and an anonymous caller has none).
fn scope(who: &Who, obj: &Obj, op: Perm) -> Scope {
    if who.master || who.role == "Admin" {
        return Scope::All;
    }
    if !obj.roles(op).contains(&who.role) {
        return Scope::Denied;
    }
    match (obj.mode, op) {
        (Mode::None, _) | (Mode::OwnerWrite, Perm::Read) => Scope::All,
        (_, Perm::Create) => match who.user_id {
            Some(_) => Scope::All,
            None => Scope::Denied,
        },
        _ => who.user_id.map_or(Scope::Denied, Scope::Own),
    }
}

fn may_read(who: &Who, obj: &Obj, owner: Option<i64>) -> bool {
    scope(who, obj, Perm::Read).covers(owner)
}

struct Person {
    email: String,
    password: String,
    role: String,
    id: i64,
    token: String,
    /// Handle of the person's `users` row.
    row: usize,
}

#[derive(Debug, Clone)]
struct Row {
    obj: usize,
    /// 0 until its create commits.
    id: i64,
    owner: Option<i64>,
    /// The tag of the last committed write.
    tag: String,
    fx: Value,
    code: String,
    alive: bool,
}

struct Sock {
    label: String,
    sio: Sio,
    /// The node it is connected to.
    node: usize,
    who: Who,
    /// The access token it authenticated with (`None`: anonymous): it reconnects with it.
    token: Option<String>,
    db: BTreeSet<usize>,
    watch: BTreeSet<usize>,
    rows: BTreeSet<usize>,
    chans: BTreeSet<String>,
    /// What this socket must receive before the next barrier (key → count).
    owed: HashMap<String, usize>,
    /// What it may receive (readable and targeted, but not promised).
    optional: HashSet<String>,
    /// Being ended by a role change: everything it is owed becomes optional.
    soft: bool,
    /// Its public id (the `sid` other members see in `chan_out`), learnt from a `join`.
    public: std::sync::OnceLock<String>,
    /// Connected with `lastSeq`: its joins within the window replay (`resume`).
    resume: Option<resume::Resumed>,
    /// The keys of every event this connection received: one coming again is a duplicate.
    received: HashSet<String>,
    /// Keys owed by a replay, to count the replayed events checked.
    replays: HashSet<String>,
    /// Every room it has joined on this connection (`resume`'s model of them).
    been_in: HashSet<String>,
    /// The highest `seq` it received: the `lastSeq` it reconnects with.
    max_seq: Option<u64>,
    /// The last `seq` it received on each stream (`Sim::stream`): they only grow.
    last: HashMap<String, u64>,
}

impl Sock {
    /// A socket with no subscriptions and nothing owed yet.
    fn new(label: String, sio: Sio, node: usize, who: Who, token: Option<String>) -> Sock {
        Sock {
            label,
            sio,
            node,
            who,
            token,
            db: BTreeSet::new(),
            watch: BTreeSet::new(),
            rows: BTreeSet::new(),
            public: std::sync::OnceLock::new(),
            chans: BTreeSet::new(),
            owed: HashMap::new(),
            optional: HashSet::new(),
            soft: false,
            resume: None,
            received: HashSet::new(),
            replays: HashSet::new(),
            been_in: HashSet::new(),
            max_seq: None,
            last: HashMap::new(),
        }
    }

    fn owe(&mut self, key: String) {
        if self.soft {
            self.optional.insert(key);
        } else {
            *self.owed.entry(key).or_default() += 1;
        }
    }

    fn forget_subscriptions(&mut self) {
        self.db.clear();
        self.watch.clear();
        self.rows.clear();
        self.chans.clear();
    }
}

/// A committed change as the event log holds it: the keys of its events on each path
/// and of its before actions' emits, which leave with it and which a replay sends again.
struct Logged {
    /// Its number in the log, learnt from the first of its events a socket receives (the
    /// witness, sentinel 0, is in every `db-` channel and receives one of each change;
    /// an entry of after actions' emits that reached no socket stays unknown).
    seq: Option<u64>,
    /// The row change, or `None` for an entry of a write's after actions' emits.
    change: Option<Change>,
    /// `(key, emit)` of each emit of the write's before actions (after actions', for an
    /// entry without a change).
    emits: Vec<(String, Value)>,
}

struct Change {
    obj: usize,
    /// Its row's handle.
    row: usize,
    owner: Option<i64>,
    db: String,
    sails: String,
    lb: String,
}

// Event keys: the same function names an owed event and classifies a received one.
// The first segment is the path, the rest identifies the write (every write carries a
// fresh tag) and the payload facts that must hold (channel, id, previous row).

fn k_db(obj: &str, verb: &str, id: i64, tag: &str) -> String {
    if verb == "deleted" {
        format!("db|{obj}|deleted|{id}")
    } else {
        format!("db|{obj}|{verb}|{id}|{tag}")
    }
}

fn k_sails(obj: &str, verb: &str, id: i64, tag: &str, previous: &str) -> String {
    match verb {
        "created" => format!("sails|{obj}|created|{id}|{tag}"),
        "updated" => format!("sails|{obj}|updated|{id}|{tag}|{previous}"),
        _ => format!("sails|{obj}|destroyed|{id}|{previous}"),
    }
}

fn k_lb(obj: &str, verb: &str, id: i64, tag: &str) -> String {
    if verb == "deleted" {
        format!("lb|{obj}|deleted|{id}")
    } else {
        format!("lb|{obj}|{verb}|{id}|{tag}")
    }
}

fn k_emit(event: &str, trigger: &str, emit: &Value, w: &str) -> String {
    format!("{event}|{trigger}|{}|{w}", text(emit))
}

fn k_chan(channel: &str, tag: &str, sid: &str) -> String {
    format!("chan|{channel}|{tag}|{sid}")
}

/// The number of a marker row's event (`Sim::sync`): `Some(seq)`, `Some(None)` for one
/// without it, `None` for any other event.
fn marker_seq(name: &str, args: &[Value]) -> Option<Option<u64>> {
    match name {
        "/markers/POST" => Some(args.get(1).and_then(|a| a["seq"].as_u64())),
        "db_created" if args.first().is_some_and(|a| a["channel"] == "db-markers") => {
            Some(args[0]["seq"].as_u64())
        }
        _ => None,
    }
}

/// A `join` ack without what varies: the public id (checked), and `recovered` and `seq`
/// (a join in a resume window has them; `Sim::subscribed` checks them).
fn joined(ack: &Value) -> Value {
    let mut ack = crate::common::without_sid(ack);
    if let Some(map) = ack.as_object_mut() {
        map.remove("recovered");
        map.remove("seq");
    }
    ack
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn emit_event(kind: &str) -> &'static str {
    match kind {
        "users" => "fx_users",
        "role" => "fx_role",
        "all" => "fx_all",
        _ => "fx_room",
    }
}

// ---------------------------------------------------------------------------------
// Actions: one template for every trigger. The row (or the call's body) carries `fx`:
// `fx[<trigger>]` lists emits `{id, kind, users|role|room}`; `fx.fail === <trigger>`
// throws after emitting; `fx.refuse === <trigger>` makes the second before action
// (`b_refuse`, run after `a_emit` in name order) refuse with status 412.
// ---------------------------------------------------------------------------------

const ACTION: &str = r#"
function backandCallback(userInput, dbRow, parameters, userProfile) {
  var fx = (userInput && userInput.fx) || (dbRow && dbRow.fx) || null;
  var w = (userInput && userInput.title) || (dbRow && dbRow.title) || null;
  var t = "@TRIGGER@";
  if (!fx || typeof fx !== "object") return {};
  if ("@MODE@" === "refuse") {
    if (fx.refuse === t) throw { status: 412, message: "refused by " + t };
    return {};
  }
  var list = fx[t] || [];
  for (var i = 0; i < list.length; i++) {
    var e = list[i];
    var data = { t: t, e: e.id, w: w };
    if (e.kind === "users") socket.emitUsers("fx_users", data, e.users);
    else if (e.kind === "role") socket.emitRole("fx_role", data, e.role);
    else if (e.kind === "all") socket.emitAll("fx_all", data);
    else if (e.kind === "room") socket.broadcast(e.room, "fx_room", data);
  }
  if (fx.fail === t) throw new Error("failed on purpose in " + t);
  return { emitted: list.length };
}"#;

fn action(trigger: &str, mode: &str) -> String {
    ACTION.replace("@TRIGGER@", trigger).replace("@MODE@", mode)
}

fn emits_of<'a>(fx: &'a Value, trigger: &str) -> &'a [Value] {
    fx.get(trigger)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn fails(fx: &Value, trigger: &str) -> bool {
    fx.get("fail").and_then(Value::as_str) == Some(trigger)
}

fn refuses(fx: &Value, trigger: &str) -> bool {
    fx.get("refuse").and_then(Value::as_str) == Some(trigger)
}

// ---------------------------------------------------------------------------------
// Operations of a batch.
// ---------------------------------------------------------------------------------

enum Via {
    Rest(Cred),
    /// A Sails virtual request (or `chan_in`) on this socket, as its identity.
    Sock(usize),
}

enum Plan {
    Create {
        row: usize,
        body: Value,
        conflict: bool,
    },
    Update {
        row: usize,
        body: Value,
        tag: String,
        fx: Option<Value>,
        code: Option<String>,
        conflict: bool,
    },
    Delete {
        row: usize,
    },
    /// An on-demand action: a general function, or an object's or a row's action.
    Call {
        url: String,
        body: Value,
        fx: Value,
        tag: String,
    },
    ChanIn {
        channel: String,
        tag: String,
    },
}

struct Op {
    via: Via,
    /// The node a REST request goes to (a socket's request goes to the socket's node).
    node: usize,
    who: Who,
    plan: Plan,
    expect: u16,
    /// Sails style: the blueprint alias (`/<object>/<id>`), and PATCH for updates.
    alias: bool,
    patch: bool,
}

#[derive(Default)]
struct Stats {
    batches: usize,
    ops: usize,
    committed: usize,
    refused: BTreeMap<u16, usize>,
    via_socket: usize,
    calls: usize,
    churn: usize,
    reauths: usize,
    role_changes: usize,
    /// Batch requests over REST, by the node they went to.
    rest_by_node: BTreeMap<usize, usize>,
    /// Events received and matched, by path.
    checked: BTreeMap<String, usize>,
    /// Of those, deliveries that were allowed but not promised.
    optional_hits: usize,
    /// Of those, events a replay owed (at connection, or a join in a resume window).
    replayed: usize,
    /// Of those, replayed at connection (before `recovered`).
    replayed_at_connection: usize,
    /// Reconnections, by why the socket was away.
    reconnects: BTreeMap<&'static str, usize>,
    /// Of those, with `lastSeq`; and of those, as a user whose role changed meanwhile.
    resumed: usize,
    role_changed_away: usize,
    /// Joins and Sails subscriptions whose ack said `recovered` (within a window).
    window_joins: usize,
    /// Server restarts (one node) or node kills (several), and the time spent stopping
    /// and starting servers for them.
    restarts: usize,
    restart_time: Duration,
}

struct Sim {
    ctx: String,
    /// How many nodes serve the app; every socket and REST request goes to a random one.
    nodes: usize,
    /// Those choices, on a stream of their own: with one node nothing is drawn, and
    /// every other choice of a seed is the same whatever the number of nodes, until the
    /// restart (one node) or node kill (several), which send different sockets away.
    spread: Rng,
    /// Sockets `0..sentinels`: an Admin socket on each node, which no batch or churn
    /// touches (see `sync`); the first is also the witness, in every `db-` channel
    /// (`resume::witness`).
    sentinels: usize,
    objs: Vec<Obj>,
    persons: Vec<Person>,
    rows: Vec<Row>,
    by_id: HashMap<(usize, i64), usize>,
    socks: Vec<Sock>,
    /// Connected, never authenticated, with their node: must receive nothing at all.
    unauth: Vec<(usize, Sio)>,
    /// Every committed change, in the order the oracle applied it.
    log: Vec<Logged>,
    /// The key of every logged event → its change in `log`.
    logged: HashMap<String, usize>,
    /// The numbers of the marker rows (`sync`), which every socket reads by LoopBack name.
    marker_seqs: BTreeSet<u64>,
    /// The highest number received: after a settle, the last one in the log.
    head: u64,
    /// Sockets away from the server, to come back (`resume`).
    away: Vec<resume::Away>,
    /// A node that was killed and not started again yet (several nodes), and for how
    /// many more batches.
    down: Option<usize>,
    down_batches: usize,
    counter: u64,
    markers: u64,
    refused_tags: HashSet<String>,
    stats: Stats,
    /// Every id a socket received from another client (`chan_out.sid`): each is then
    /// tried as a session credential on both transports.
    seen_ids: BTreeSet<String>,
}

fn random_objects(rng: &mut Rng) -> Vec<Obj> {
    let count = 4 + rng.below(3);
    let mut modes = vec![Mode::None, Mode::Owner, Mode::OwnerWrite];
    while modes.len() < count {
        modes.push(*rng.pick(&[Mode::None, Mode::Owner, Mode::OwnerWrite]));
    }
    // Shuffle, so no mode is tied to a position.
    rng.shuffle(&mut modes);
    let mut objs = Vec::new();
    for (k, mode) in modes.into_iter().enumerate() {
        let mut read = rng.subset(&NON_ADMIN, 0.55);
        if !read.iter().any(|r| r == "User" || r == "Editor") {
            read.push(if rng.chance(0.5) { "User" } else { "Editor" }.into());
        }
        let mut create = rng.subset(&NON_ADMIN, 0.5);
        if !create.iter().any(|r| r == "User") && rng.chance(0.7) {
            create.push("User".into());
        }
        let update = rng.subset(&NON_ADMIN, 0.45);
        let delete = rng.subset(&NON_ADMIN, 0.4);
        objs.push(Obj {
            name: format!("t{k}"),
            mode,
            read,
            create,
            update,
            delete,
            loopback: match k {
                0 => true,
                1 => false,
                _ => rng.chance(0.5),
            },
            users: false,
        });
    }
    let mut read = rng.subset(&NON_ADMIN, 0.5);
    read.push("User".into());
    objs.push(Obj {
        name: "users".into(),
        mode: *rng.pick(&[Mode::None, Mode::Owner, Mode::OwnerWrite]),
        read,
        create: vec![],
        update: rng.subset(&NON_ADMIN, 0.5),
        delete: vec![],
        loopback: rng.chance(0.5),
        users: true,
    });
    objs
}

fn vary_case(rng: &mut Rng, s: &str) -> String {
    match rng.below(4) {
        0 => s.to_uppercase(),
        1 => {
            let mut chars = s.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
                .unwrap_or_default()
        }
        _ => s.to_string(),
    }
}

impl Sim {
    /// A node for a socket or a REST request.
    fn pick_node(&mut self) -> usize {
        match (self.nodes, self.down) {
            (1, _) => 0,
            (n, None) => self.spread.below(n),
            (n, Some(down)) => {
                let k = self.spread.below(n - 1);
                if k >= down { k + 1 } else { k }
            }
        }
    }

    /// The nodes serving now (all but a killed one).
    fn live(&self) -> Vec<usize> {
        (0..self.nodes).filter(|k| Some(*k) != self.down).collect()
    }

    /// A socket batches and churn may use: any but the sentinels.
    fn pick_sock(&self, rng: &mut Rng) -> usize {
        self.sentinels + rng.below(self.socks.len() - self.sentinels)
    }

    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    fn data_objs(&self) -> Vec<usize> {
        (0..self.objs.len())
            .filter(|&i| !self.objs[i].users)
            .collect()
    }

    fn person_who(&self, p: usize) -> Who {
        let person = &self.persons[p];
        Who {
            person: Some(p),
            user_id: Some(person.id),
            username: person.email.clone(),
            role: person.role.clone(),
            master: false,
        }
    }

    fn master_who(&self) -> Who {
        Who {
            master: true,
            ..self.person_who(0)
        }
    }

    // ----- random emits and fx -----

    fn gen_emit(&mut self, rng: &mut Rng) -> Value {
        self.counter += 1;
        let id = self.counter;
        match rng.below(10) {
            0..=2 => {
                let mut users = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    let target = match rng.below(10) {
                        0 => "Guest".to_string(),
                        1 => "nobody@nl.test".to_string(),
                        _ => {
                            let p = rng.below(self.persons.len());
                            self.persons[p].email.clone()
                        }
                    };
                    users.push(vary_case(rng, &target));
                }
                if rng.chance(0.2) {
                    // The same user twice (maybe in another case): still one event.
                    let again = users[0].to_lowercase();
                    users.push(again);
                }
                json!({ "id": id, "kind": "users", "users": users })
            }
            3..=4 => {
                let role = match rng.below(8) {
                    0 => "user".to_string(), // roles are case-sensitive: nobody
                    1 => "Nobody".to_string(),
                    _ => rng.pick(&ROLES).to_string(),
                };
                json!({ "id": id, "kind": "role", "role": role })
            }
            5 => json!({ "id": id, "kind": "all" }),
            _ => {
                let room = if rng.chance(0.2) {
                    // A db channel's name is not a plain channel: nobody is in it.
                    let objs = self.data_objs();
                    format!("db-{}", self.objs[*rng.pick(&objs)].name)
                } else {
                    rng.pick(&CHANNELS).to_string()
                };
                json!({ "id": id, "kind": "room", "room": room })
            }
        }
    }

    fn gen_fx(&mut self, rng: &mut Rng, triggers: &[&str]) -> Value {
        let mut fx = Map::new();
        for t in triggers {
            if rng.chance(0.45) {
                let list: Vec<Value> = (0..1 + rng.below(2)).map(|_| self.gen_emit(rng)).collect();
                fx.insert(t.to_string(), json!(list));
            }
        }
        if rng.chance(0.2) {
            fx.insert("fail".into(), json!(rng.pick(triggers)));
        }
        let befores: Vec<&str> = triggers
            .iter()
            .copied()
            .filter(|t| BEFORE.contains(t))
            .collect();
        if !befores.is_empty() && rng.chance(0.2) {
            fx.insert("refuse".into(), json!(rng.pick(&befores)));
        }
        Value::Object(fx)
    }

    // ----- who receives what -----

    /// Owes the events of a committed change of row `handle` to every socket that may
    /// read the row and listens on the path; the change goes into `log` (its index).
    fn owe_row_event(
        &mut self,
        handle: usize,
        verb: &str,
        previous: &str,
        poster: Option<usize>,
    ) -> usize {
        let row = self.rows[handle].clone();
        let obj = self.objs[row.obj].clone();
        let db = k_db(&obj.name, verb, row.id, &row.tag);
        let sails_verb = if verb == "deleted" { "destroyed" } else { verb };
        let sails = k_sails(&obj.name, sails_verb, row.id, &row.tag, previous);
        let lb = k_lb(&obj.name, verb, row.id, &row.tag);
        for (i, sock) in self.socks.iter_mut().enumerate() {
            if !may_read(&sock.who, &obj, row.owner) {
                continue;
            }
            if sock.db.contains(&row.obj) {
                sock.owe(db.clone());
            }
            if sock.watch.contains(&row.obj) || sock.rows.contains(&handle) {
                sock.owe(sails.clone());
            } else if poster == Some(i) && verb == "created" {
                // A Sails `post` subscribes its socket to the new row once the request
                // answers; the relay may deliver the created event before or after.
                sock.optional.insert(sails.clone());
            }
            if obj.loopback {
                sock.owe(lb.clone());
            }
        }
        let entry = self.log.len();
        for key in [&db, &sails, &lb] {
            self.logged.insert(key.clone(), entry);
        }
        self.log.push(Logged {
            seq: None,
            change: Some(Change {
                obj: row.obj,
                row: handle,
                owner: row.owner,
                db,
                sails,
                lb,
            }),
            emits: Vec::new(),
        });
        entry
    }

    /// Owes each emit to the sockets it targets; their keys, with the emits.
    fn owe_emits(&mut self, emits: &[Value], trigger: &str, w: &str) -> Vec<(String, Value)> {
        let mut keys = Vec::new();
        for e in emits {
            let kind = e["kind"].as_str().unwrap_or_default();
            let key = k_emit(emit_event(kind), trigger, &e["id"], w);
            for sock in &mut self.socks {
                let to = match kind {
                    "users" => e["users"].as_array().into_iter().flatten().any(|u| {
                        u.as_str().unwrap_or_default().to_lowercase()
                            == sock.who.username.to_lowercase()
                    }),
                    "role" => e["role"].as_str() == Some(sock.who.role.as_str()),
                    "all" => true,
                    _ => sock.chans.contains(e["room"].as_str().unwrap_or_default()),
                };
                if to {
                    sock.owe(key.clone());
                }
            }
            keys.push((key, e.clone()));
        }
        keys
    }

    /// A before action's emits: logged with its write's change `entry`, under its number.
    fn owe_logged_emits(&mut self, entry: usize, emits: &[Value], trigger: &str, w: &str) {
        let keys = self.owe_emits(emits, trigger, w);
        for (key, _) in &keys {
            self.logged.insert(key.clone(), entry);
        }
        self.log[entry].emits = keys;
    }

    /// An after action's emits, unless it failed: logged once the write's after actions
    /// ran, as an entry of their own (none when they emitted nothing), numbered after
    /// the write's change.
    fn owe_after_emits(&mut self, fx: &Value, trigger: &str, w: &str) {
        if fails(fx, trigger) {
            return;
        }
        let keys = self.owe_emits(emits_of(fx, trigger), trigger, w);
        if keys.is_empty() {
            return;
        }
        let entry = self.log.len();
        for (key, _) in &keys {
            self.logged.insert(key.clone(), entry);
        }
        self.log.push(Logged {
            seq: None,
            change: None,
            emits: keys,
        });
    }

    // ----- generating a batch -----

    fn pick_actor(&self, rng: &mut Rng, load: &mut HashMap<usize, usize>) -> (Via, Who) {
        if self.socks.len() > self.sentinels && rng.chance(0.35) {
            let i = self.pick_sock(rng);
            let n = load.entry(i).or_default();
            if *n < 3 {
                *n += 1;
                return (Via::Sock(i), self.socks[i].who.clone());
            }
        }
        match rng.below(12) {
            0 => (Via::Rest(master()), self.master_who()),
            1 => (Via::Rest(Cred::Anonymous(ANON.into())), Who::guest()),
            _ => {
                let p = rng.below(self.persons.len());
                (
                    Via::Rest(Cred::Bearer(self.persons[p].token.clone())),
                    self.person_who(p),
                )
            }
        }
    }

    /// A live row untouched in this batch (each row is written at most once per batch,
    /// so every outcome is decided by the state before it).
    fn pick_row(
        &self,
        rng: &mut Rng,
        touched: &HashSet<usize>,
        filter: impl Fn(&Row) -> bool,
    ) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.rows.len())
            .filter(|h| {
                let r = &self.rows[*h];
                r.alive && !touched.contains(h) && filter(r)
            })
            .collect();
        (!candidates.is_empty()).then(|| *rng.pick(&candidates))
    }

    fn gen_ops(&mut self, rng: &mut Rng) -> Vec<Op> {
        let count = 24 + rng.below(17);
        let mut ops = Vec::new();
        let mut touched = HashSet::new();
        let mut load = HashMap::new();
        let data = self.data_objs();
        for _ in 0..count {
            let (via, who) = self.pick_actor(rng, &mut load);
            let on_socket = matches!(via, Via::Sock(_));
            let roll = rng.below(100);
            let plan = if roll >= 94 && on_socket {
                self.gen_chan_in(rng)
            } else if roll >= 82 {
                self.gen_call(rng, &mut touched)
            } else if roll >= 68 {
                match self.pick_row(rng, &touched, |r| !self.objs[r.obj].users) {
                    Some(row) => {
                        touched.insert(row);
                        Plan::Delete { row }
                    }
                    None => self.gen_create(rng, &data, &mut touched, &who),
                }
            } else if roll >= 40 {
                match self.pick_row(rng, &touched, |_| true) {
                    Some(row) => {
                        touched.insert(row);
                        self.gen_update(rng, row, &mut touched)
                    }
                    None => self.gen_create(rng, &data, &mut touched, &who),
                }
            } else {
                self.gen_create(rng, &data, &mut touched, &who)
            };
            let expect = self.predict(&who, &plan);
            let node = match via {
                Via::Rest(_) => self.pick_node(),
                Via::Sock(i) => self.socks[i].node,
            };
            ops.push(Op {
                via,
                node,
                who,
                plan,
                expect,
                alias: rng.chance(0.5),
                patch: rng.chance(0.5),
            });
        }
        ops
    }

    fn gen_create(
        &mut self,
        rng: &mut Rng,
        data: &[usize],
        touched: &mut HashSet<usize>,
        who: &Who,
    ) -> Plan {
        let obj = *rng.pick(data);
        let tag = self.next("w");
        let fx = self.gen_fx(rng, &TRIGGERS);
        let mut conflict = false;
        let mut code = self.next("k");
        if rng.chance(0.08)
            && let Some(other) = self.pick_row(rng, touched, |r| r.obj == obj)
        {
            // Pinned: nothing else in the batch may change or delete it.
            touched.insert(other);
            code = self.rows[other].code.clone();
            conflict = true;
        }
        let body = json!({ "title": tag, "code": code, "fx": fx });
        self.rows.push(Row {
            obj,
            id: 0,
            owner: who.user_id,
            tag,
            fx,
            code,
            alive: false,
        });
        let row = self.rows.len() - 1;
        touched.insert(row);
        Plan::Create {
            row,
            body,
            conflict,
        }
    }

    fn gen_update(&mut self, rng: &mut Rng, row: usize, touched: &mut HashSet<usize>) -> Plan {
        let obj = self.rows[row].obj;
        let tag = self.next("w");
        if self.objs[obj].users {
            return Plan::Update {
                row,
                body: json!({ "firstName": tag }),
                tag,
                fx: None,
                code: None,
                conflict: false,
            };
        }
        let mut body = json!({ "title": tag });
        let fx = if rng.chance(0.8) {
            let fx = self.gen_fx(rng, &TRIGGERS);
            body["fx"] = fx.clone();
            Some(fx)
        } else {
            // Actions then see the stored row's fx (dbRow), as the oracle does.
            None
        };
        let mut code = None;
        let mut conflict = false;
        if rng.chance(0.08)
            && let Some(other) = self.pick_row(rng, touched, |r| r.obj == obj)
        {
            touched.insert(other);
            body["code"] = json!(self.rows[other].code);
            conflict = true;
        } else if rng.chance(0.1) {
            let fresh = self.next("k");
            body["code"] = json!(fresh);
            code = Some(fresh);
        }
        Plan::Update {
            row,
            body,
            tag,
            fx,
            code,
            conflict,
        }
    }

    fn gen_call(&mut self, rng: &mut Rng, touched: &mut HashSet<usize>) -> Plan {
        let tag = self.next("c");
        let fx = self.gen_fx(rng, &["onDemand"]);
        let data = self.data_objs();
        let url = match rng.below(3) {
            0 => "/1/function/general/fx".to_string(),
            1 => format!(
                "/1/objects/action/{}?name=fx",
                self.objs[*rng.pick(&data)].name
            ),
            _ => match self.pick_row(rng, touched, |r| !self.objs[r.obj].users) {
                Some(row) => {
                    // Pinned, so it is not deleted while the action reads it.
                    touched.insert(row);
                    let r = &self.rows[row];
                    format!(
                        "/1/objects/action/{}/{}?name=fx",
                        self.objs[r.obj].name, r.id
                    )
                }
                None => "/1/function/general/fx".to_string(),
            },
        };
        Plan::Call {
            url,
            body: json!({ "title": tag, "fx": fx }),
            fx,
            tag,
        }
    }

    fn gen_chan_in(&mut self, rng: &mut Rng) -> Plan {
        let channel = if rng.chance(0.15) {
            let data = self.data_objs();
            format!("db-{}", self.objs[*rng.pick(&data)].name)
        } else {
            rng.pick(&CHANNELS).to_string()
        };
        Plan::ChanIn {
            channel,
            tag: self.next("h"),
        }
    }

    /// The status DESIGN.md gives this request, from the state before the batch.
    /// Order of a write: permission → before actions (`a_emit` may throw: 400;
    /// `b_refuse` may refuse: 412) → transaction (unique `code`: 409) → 200.
    fn predict(&self, who: &Who, plan: &Plan) -> u16 {
        // An update or delete of a row the caller may not change: 403 when the role may
        // not, or when it may read the row but not write it; 404 when it may not even
        // see the row.
        let gate = |obj: &Obj, row: &Row, op: Perm| -> Option<u16> {
            let s = scope(who, obj, op);
            if s == Scope::Denied {
                return Some(403);
            }
            if !s.covers(row.owner) {
                return Some(if may_read(who, obj, row.owner) {
                    403
                } else {
                    404
                });
            }
            None
        };
        let actions = |fx: &Value, before: &str, conflict: bool| -> u16 {
            if fails(fx, before) {
                400
            } else if refuses(fx, before) {
                412
            } else if conflict {
                409
            } else {
                200
            }
        };
        match plan {
            Plan::Create { row, conflict, .. } => {
                let r = &self.rows[*row];
                if scope(who, &self.objs[r.obj], Perm::Create) == Scope::Denied {
                    return 403;
                }
                actions(&r.fx, "beforeCreate", *conflict)
            }
            Plan::Update {
                row, fx, conflict, ..
            } => {
                let r = &self.rows[*row];
                let obj = &self.objs[r.obj];
                if let Some(status) = gate(obj, r, Perm::Update) {
                    return status;
                }
                if obj.users {
                    return 200;
                }
                actions(fx.as_ref().unwrap_or(&r.fx), "beforeUpdate", *conflict)
            }
            Plan::Delete { row } => {
                let r = &self.rows[*row];
                if let Some(status) = gate(&self.objs[r.obj], r, Perm::Delete) {
                    return status;
                }
                actions(&r.fx, "beforeDelete", false)
            }
            Plan::Call { url, fx, .. } => {
                // Object actions need read permission on the object, row actions on the
                // row (403 for the role, 404 for a row it cannot see).
                if let Some(rest) = url.strip_prefix("/1/objects/action/") {
                    let path = rest.split('?').next().unwrap_or_default();
                    let mut parts = path.split('/');
                    let name = parts.next().unwrap_or_default();
                    let obj = self.objs.iter().find(|o| o.name == name).expect("object");
                    let s = scope(who, obj, Perm::Read);
                    if s == Scope::Denied {
                        return 403;
                    }
                    if let Some(id) = parts.next() {
                        let oi = self.objs.iter().position(|o| o.name == name).unwrap();
                        let handle = self.by_id[&(oi, id.parse::<i64>().unwrap())];
                        if !s.covers(self.rows[handle].owner) {
                            return 404;
                        }
                    }
                }
                if fails(fx, "onDemand") { 400 } else { 200 }
            }
            Plan::ChanIn { channel, .. } => {
                if channel.starts_with("db-") {
                    400
                } else {
                    200
                }
            }
        }
    }

    fn request(&self, op: &Op) -> (&'static str, String, Option<Value>) {
        let row_url = |h: usize| {
            let r = &self.rows[h];
            format!("/1/objects/{}/{}", self.objs[r.obj].name, r.id)
        };
        match &op.plan {
            Plan::Create { row, body, .. } => (
                "post",
                format!("/1/objects/{}", self.objs[self.rows[*row].obj].name),
                Some(body.clone()),
            ),
            Plan::Update { row, body, .. } => {
                let verb = if op.patch && matches!(op.via, Via::Sock(_)) {
                    "patch"
                } else {
                    "put"
                };
                (verb, row_url(*row), Some(body.clone()))
            }
            Plan::Delete { row } => ("delete", row_url(*row), None),
            Plan::Call { url, body, .. } => ("post", url.clone(), Some(body.clone())),
            Plan::ChanIn { .. } => ("chan_in", String::new(), None),
        }
    }
}

async fn execute(nodes: &Nodes, sim: &Sim, op: &Op) -> (u16, Value) {
    let (verb, url, body) = sim.request(op);
    match &op.via {
        Via::Rest(cred) => {
            let method = match verb {
                "post" => Method::POST,
                "put" => Method::PUT,
                _ => Method::DELETE,
            };
            nodes.at(op.node).req(method, &url, cred, body).await
        }
        Via::Sock(i) => {
            let s = &sim.socks[*i].sio;
            if let Plan::ChanIn { channel, tag } = &op.plan {
                if sim.socks[*i].public.get().is_none() {
                    let ack = s.call("join", json!("whoami-probe")).await;
                    s.call("leave", json!("whoami-probe")).await;
                    if let Some(id) = ack["sid"].as_str() {
                        assert_ne!(id, s.sid, "a public id is never the session id");
                        let _ = sim.socks[*i].public.set(id.to_string());
                    }
                }
                let ack = s
                    .call(
                        "chan_in",
                        json!({ "channel": channel, "data": { "tag": tag } }),
                    )
                    .await;
                let status = if ack.get("ok") == Some(&json!(true)) {
                    200
                } else {
                    400
                };
                return (status, ack);
            }
            let url = match url.strip_prefix("/1/objects") {
                // Sails blueprint aliases `/<object>[/<id>]` (not the action routes).
                Some(rest) if op.alias && !rest.starts_with("/action/") => rest.to_string(),
                _ => url,
            };
            let mut request = json!({ "method": verb, "url": url });
            if let Some(body) = body {
                request["data"] = body;
            }
            let ack = s.call(verb, request).await;
            let status = ack["statusCode"].as_u64().unwrap_or(0) as u16;
            (status, ack["body"].clone())
        }
    }
}

// ---------------------------------------------------------------------------------
// Sockets.
// ---------------------------------------------------------------------------------

/// Connects a socket for person `p` (or anonymously) by a random way of authenticating:
/// handshake `auth`, Backand `login`, or LoopBack `authentication`.
async fn connect(base: &str, rng: &mut Rng, token: Option<&str>) -> Sio {
    match (token, rng.below(3)) {
        (Some(token), 0) => Sio::with_token(base, token).await,
        (None, 0) => Sio::connect(base, Some(json!({ "anonymousToken": ANON })))
            .await
            .expect("anonymous socket connects"),
        (Some(token), 1) => {
            let mut s = Sio::connect(base, None).await.expect("socket connects");
            let header = if rng.chance(0.5) {
                format!("Bearer {token}")
            } else {
                token.to_string()
            };
            s.emit("login", &[json!(header), Value::Null, Value::Null]);
            s.expect("authorized").await;
            s
        }
        (None, _) => {
            let mut s = Sio::connect(base, None).await.expect("socket connects");
            s.emit("login", &[json!(""), json!(ANON), Value::Null]);
            s.expect("authorized").await;
            s
        }
        (Some(token), _) => {
            let mut s = Sio::connect(base, None).await.expect("socket connects");
            s.emit("authentication", &[json!({ "id": token })]);
            s.expect("authenticated").await;
            s
        }
    }
}

impl Sim {
    async fn add_socket(&mut self, nodes: &Nodes, rng: &mut Rng, person: Option<usize>) {
        let (who, token) = match person {
            Some(p) => (self.person_who(p), Some(self.persons[p].token.clone())),
            None => (Who::guest(), None),
        };
        let node = self.pick_node();
        let sio = connect(nodes.at(node).base, rng, token.as_deref()).await;
        let label = format!(
            "socket#{} of {}{}",
            self.socks.len(),
            who.describe(),
            self.on(node)
        );
        self.socks.push(Sock::new(label, sio, node, who, token));
        let i = self.socks.len() - 1;
        self.subscribe_randomly(rng, i).await;
    }

    async fn subscribe_randomly(&mut self, rng: &mut Rng, i: usize) {
        for o in 0..self.objs.len() {
            if rng.chance(0.5) {
                self.join_db(i, o).await;
            }
            if rng.chance(0.45) {
                self.sails_list(i, o, rng.chance(0.5)).await;
            }
        }
        for channel in CHANNELS {
            if rng.chance(0.35) {
                self.join_channel(i, channel).await;
            }
        }
    }

    /// ` on node <k>` where there are several.
    fn on(&self, node: usize) -> String {
        if self.nodes == 1 {
            String::new()
        } else {
            format!(" on node {node}")
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("{}: {what}", self.ctx)
    }

    async fn join_db(&mut self, i: usize, o: usize) {
        let obj = self.objs[o].clone();
        let channel = format!("db-{}", obj.name);
        let sent = Instant::now();
        let ack = self.socks[i].sio.call("join", json!(channel)).await;
        let sock = &self.socks[i];
        if scope(&sock.who, &obj, Perm::Read) == Scope::Denied {
            let refused = ack["error"]
                .as_str()
                .is_some_and(|m| m.contains("may not read"));
            if !refused {
                self.fail(format!(
                    "{} may not read {}: joining {channel} must be refused, got {ack}",
                    sock.label, obj.name
                ));
            }
        } else {
            if joined(&ack) != json!({ "ok": true, "channel": channel }) {
                self.fail(format!("{} joining {channel}: {ack}", sock.label));
            }
            self.subscribed(i, &ack, resume::Join::Db(o), sent);
            self.socks[i].db.insert(o);
        }
    }

    async fn leave_db(&mut self, i: usize, o: usize) {
        let channel = format!("db-{}", self.objs[o].name);
        let ack = self.socks[i].sio.call("leave", json!(channel)).await;
        if crate::common::without_sid(&ack) != json!({ "ok": true, "channel": channel }) {
            self.fail(format!("{} leaving {channel}: {ack}", self.socks[i].label));
        }
        self.socks[i].db.remove(&o);
    }

    async fn join_channel(&mut self, i: usize, channel: &str) {
        let sent = Instant::now();
        let ack = self.socks[i].sio.call("join", json!(channel)).await;
        if joined(&ack) != json!({ "ok": true, "channel": channel }) {
            self.fail(format!("{} joining {channel}: {ack}", self.socks[i].label));
        }
        self.subscribed(i, &ack, resume::Join::Chan(channel.to_string()), sent);
        self.socks[i].chans.insert(channel.to_string());
    }

    async fn leave_channel(&mut self, i: usize, channel: &str) {
        let ack = self.socks[i]
            .sio
            .call("leave", json!({ "channel": channel }))
            .await;
        if crate::common::without_sid(&ack) != json!({ "ok": true, "channel": channel }) {
            self.fail(format!("{} leaving {channel}: {ack}", self.socks[i].label));
        }
        self.socks[i].chans.remove(channel);
    }

    /// A Sails list `get`: the rows returned are exactly the readable ones, and the
    /// socket then watches the object.
    async fn sails_list(&mut self, i: usize, o: usize, alias: bool) {
        let obj = self.objs[o].clone();
        let url = if alias {
            format!("/{}", obj.name)
        } else {
            format!("/1/objects/{}", obj.name)
        };
        let sent = Instant::now();
        let ack = self.socks[i]
            .sio
            .call(
                "get",
                json!({ "method": "get", "url": url, "data": { "pageSize": 1000 } }),
            )
            .await;
        let sock = &self.socks[i];
        let status = ack["statusCode"].as_u64().unwrap_or(0);
        if scope(&sock.who, &obj, Perm::Read) == Scope::Denied {
            if status != 403 {
                self.fail(format!(
                    "{} may not read {}: get {url} must answer 403, got {ack}",
                    sock.label, obj.name
                ));
            }
            return;
        }
        if status != 200 {
            self.fail(format!("{} get {url}: {ack}", sock.label));
        }
        let got: BTreeSet<i64> = ack["body"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["id"].as_i64())
            .collect();
        let want: BTreeSet<i64> = self
            .rows
            .iter()
            .filter(|r| r.obj == o && r.alive && may_read(&sock.who, &obj, r.owner))
            .map(|r| r.id)
            .collect();
        if got != want {
            let leaked: Vec<_> = got.difference(&want).collect();
            let missing: Vec<_> = want.difference(&got).collect();
            self.fail(format!(
                "{} listed {}: rows it may not read {leaked:?}, readable rows missing {missing:?}",
                sock.label, obj.name
            ));
        }
        self.subscribed(i, &ack, resume::Join::Watch(o), sent);
        self.socks[i].watch.insert(o);
    }

    /// A Sails one-row `get`: answered by the rules (403 for the role, 404 for a row it
    /// cannot see or that is gone); a success subscribes the socket to the row.
    async fn sails_row(&mut self, i: usize, handle: usize, alias: bool) {
        let row = self.rows[handle].clone();
        let obj = self.objs[row.obj].clone();
        let url = if alias {
            format!("/{}/{}", obj.name, row.id)
        } else {
            format!("/1/objects/{}/{}", obj.name, row.id)
        };
        let sent = Instant::now();
        let ack = self.socks[i]
            .sio
            .call("get", json!({ "method": "get", "url": url }))
            .await;
        let sock = &self.socks[i];
        let status = ack["statusCode"].as_u64().unwrap_or(0);
        let s = scope(&sock.who, &obj, Perm::Read);
        let want = if s == Scope::Denied {
            403
        } else if !row.alive || !s.covers(row.owner) {
            404
        } else {
            200
        };
        if status != want {
            self.fail(format!(
                "{} get {url} must answer {want}: {ack}",
                sock.label
            ));
        }
        if want == 200 {
            let field = obj.tag_field();
            if text(&ack["body"][field]) != row.tag {
                self.fail(format!(
                    "{} get {url}: {field} must be {}: {ack}",
                    sock.label, row.tag
                ));
            }
            self.subscribed(i, &ack, resume::Join::Row(handle), sent);
            self.socks[i].rows.insert(handle);
        }
    }

    /// Authenticating again as someone else: the socket's rooms are those of the new
    /// identity only (subscriptions do not follow it).
    async fn reauth(&mut self, rng: &mut Rng, i: usize) {
        let anonymous = rng.chance(0.2);
        let who = if anonymous {
            Who::guest()
        } else {
            let p = rng.below(self.persons.len());
            self.person_who(p)
        };
        let sio = &mut self.socks[i].sio;
        if anonymous {
            sio.emit("login", &[Value::Null, json!(ANON), Value::Null]);
            sio.expect("authorized").await;
        } else {
            let token = self.persons[who.person.unwrap()].token.clone();
            if rng.chance(0.5) {
                sio.emit("authentication", &[json!({ "id": token })]);
                sio.expect("authenticated").await;
            } else {
                sio.emit("login", &[json!(token), Value::Null, Value::Null]);
                sio.expect("authorized").await;
            }
        }
        // What it got before, as the old identity, is checked now: nothing is in flight
        // between batches but the replays of joins in its resume window, which came
        // before their acks. The new identity's streams start after it: its joins in the
        // window may replay what the old one could not read.
        let before: Vec<(String, Vec<Value>)> = self.socks[i]
            .sio
            .drain(Duration::ZERO)
            .await
            .into_iter()
            .filter_map(|e| match e {
                Incoming::Event(name, args) => Some((name, args)),
                Incoming::Closed => None,
            })
            .collect();
        let mut problems = Vec::new();
        self.check(i, before, &mut problems);
        if !problems.is_empty() {
            self.fail(format!(
                "before a re-authentication:\n  {}",
                problems.join("\n  ")
            ));
        }
        let token = who.person.map(|p| self.persons[p].token.clone());
        let sock = &mut self.socks[i];
        sock.label = format!("{} → {}", sock.label, who.describe());
        sock.who = who;
        sock.token = token;
        sock.forget_subscriptions();
        sock.last.clear();
        self.entered(i, &resume::Join::Identity);
        self.stats.reauths += 1;
    }

    /// Subscriptions change between batches.
    async fn churn(&mut self, rng: &mut Rng) {
        for _ in 0..2 + rng.below(6) {
            if self.socks.len() <= self.sentinels {
                return;
            }
            let i = self.pick_sock(rng);
            let o = rng.below(self.objs.len());
            self.stats.churn += 1;
            match rng.below(100) {
                0..=24 => self.join_db(i, o).await,
                25..=34 => self.leave_db(i, o).await,
                35..=49 => self.sails_list(i, o, rng.chance(0.5)).await,
                50..=74 => {
                    let known: Vec<usize> = (0..self.rows.len())
                        .filter(|h| self.rows[*h].id != 0)
                        .collect();
                    if !known.is_empty() {
                        let handle = *rng.pick(&known);
                        self.sails_row(i, handle, rng.chance(0.5)).await;
                    }
                }
                75..=82 => {
                    let channel = *rng.pick(&CHANNELS);
                    if rng.chance(0.6) {
                        self.join_channel(i, channel).await;
                    } else {
                        self.leave_channel(i, channel).await;
                    }
                }
                83..=93 => {
                    self.reauth(rng, i).await;
                    if rng.chance(0.7) {
                        self.subscribe_randomly(rng, i).await;
                    }
                }
                _ => {
                    // A refused authentication keeps the socket as it was.
                    let sio = &mut self.socks[i].sio;
                    sio.emit("authentication", &[json!({ "id": "not-a-token" })]);
                    sio.expect("unauthorized").await;
                }
            }
        }
    }

    // ----- a batch -----

    async fn batch(&mut self, nodes: &Nodes, rng: &mut Rng) {
        let ops = self.gen_ops(rng);
        let results: Vec<(u16, Value)> = {
            let sim = &*self;
            futures_util::stream::iter(ops.iter().map(|op| execute(nodes, sim, op)))
                .buffered(12)
                .collect()
                .await
        };
        let mut wrong = Vec::new();
        for (op, (status, body)) in ops.iter().zip(&results) {
            if *status != op.expect {
                let (verb, url, request) = self.request(op);
                let via = match &op.via {
                    Via::Rest(_) => format!("REST{}", self.on(op.node)),
                    Via::Sock(i) => format!("Sails on {}", self.socks[*i].label),
                };
                wrong.push(format!(
                    "{verb} {url} by {} over {via}: expected {}, got {status} {body}; request {}",
                    op.who.describe(),
                    op.expect,
                    request.unwrap_or(Value::Null)
                ));
            }
        }
        if !wrong.is_empty() {
            self.fail(format!(
                "{} request(s) answered against the contract:\n  {}",
                wrong.len(),
                wrong.join("\n  ")
            ));
        }
        self.stats.ops += ops.len();
        for (op, (status, body)) in ops.into_iter().zip(results) {
            match op.via {
                Via::Sock(_) => self.stats.via_socket += 1,
                Via::Rest(_) => *self.stats.rest_by_node.entry(op.node).or_default() += 1,
            }
            if status != 200 {
                *self.stats.refused.entry(status).or_default() += 1;
                match &op.plan {
                    Plan::Create { row, .. } => {
                        let tag = self.rows[*row].tag.clone();
                        self.refused_tags.insert(tag);
                    }
                    Plan::Update { tag, .. } | Plan::Call { tag, .. } => {
                        self.refused_tags.insert(tag.clone());
                    }
                    _ => {}
                }
                continue;
            }
            self.stats.committed += 1;
            self.apply(op, &body);
        }
    }

    /// The committed request's events and emits, owed to their receivers.
    fn apply(&mut self, op: Op, body: &Value) {
        let poster = match op.via {
            Via::Sock(i) => Some(i),
            Via::Rest(_) => None,
        };
        match op.plan {
            Plan::Create { row, .. } => {
                let id = id_of(body);
                let r = &mut self.rows[row];
                r.id = id;
                r.alive = true;
                let (obj, fx, tag) = (r.obj, r.fx.clone(), r.tag.clone());
                self.by_id.insert((obj, id), row);
                let entry = self.owe_row_event(row, "created", "", poster);
                self.owe_logged_emits(entry, emits_of(&fx, "beforeCreate"), "beforeCreate", &tag);
                self.owe_after_emits(&fx, "afterCreate", &tag);
                // Sails: a `post` subscribes its socket to the row, if it may read it.
                if let Some(i) = poster
                    && scope(&self.socks[i].who, &self.objs[obj], Perm::Read) != Scope::Denied
                {
                    self.socks[i].rows.insert(row);
                    self.entered(i, &resume::Join::Row(row));
                }
            }
            Plan::Update {
                row, tag, fx, code, ..
            } => {
                let r = &mut self.rows[row];
                let previous = std::mem::replace(&mut r.tag, tag.clone());
                let effective = fx.clone().unwrap_or_else(|| r.fx.clone());
                if let Some(fx) = fx {
                    r.fx = fx;
                }
                if let Some(code) = code {
                    r.code = code;
                }
                let users = self.objs[r.obj].users;
                let entry = self.owe_row_event(row, "updated", &previous, None);
                if !users {
                    let before = emits_of(&effective, "beforeUpdate");
                    self.owe_logged_emits(entry, before, "beforeUpdate", &tag);
                    self.owe_after_emits(&effective, "afterUpdate", &tag);
                }
            }
            Plan::Delete { row } => {
                let (fx, tag) = (self.rows[row].fx.clone(), self.rows[row].tag.clone());
                let entry = self.owe_row_event(row, "deleted", &tag, None);
                self.rows[row].alive = false;
                for sock in &mut self.socks {
                    sock.rows.remove(&row);
                }
                self.owe_logged_emits(entry, emits_of(&fx, "beforeDelete"), "beforeDelete", &tag);
                self.owe_after_emits(&fx, "afterDelete", &tag);
            }
            Plan::Call { fx, tag, .. } => {
                self.stats.calls += 1;
                self.owe_emits(emits_of(&fx, "onDemand"), "onDemand", &tag);
            }
            Plan::ChanIn { channel, tag } => {
                let sid = match op.via {
                    Via::Sock(i) => self.socks[i].public.get().cloned().unwrap_or_default(),
                    Via::Rest(_) => unreachable!("chan_in is a socket event"),
                };
                let key = k_chan(&channel, &tag, &sid);
                for sock in &mut self.socks {
                    if sock.chans.contains(&channel) {
                        sock.owe(key.clone());
                    }
                }
            }
        }
    }

    /// A role change: the user's row event, then every socket of that user ends (their
    /// rooms were chosen for the old role). Most come back (`resume`), and new ones
    /// may come, as the user is now.
    async fn role_change(&mut self, nodes: &Nodes, rng: &mut Rng) {
        if self.persons.len() < 2 {
            return;
        }
        let p = 1 + rng.below(self.persons.len() - 1);
        let old = self.persons[p].role.clone();
        let choices: Vec<&str> = ROLES.iter().copied().filter(|r| *r != old).collect();
        let new = rng.pick(&choices).to_string();
        let tag = self.next("w");
        for sock in &mut self.socks {
            if sock.who.person == Some(p) && !sock.who.master {
                sock.soft = true;
            }
        }
        let (id, handle) = (self.persons[p].id, self.persons[p].row);
        let (status, body) = nodes
            .at(self.pick_node())
            .req(
                Method::PUT,
                &format!("/1/objects/users/{id}"),
                &master(),
                Some(json!({ "role": new, "firstName": tag })),
            )
            .await;
        if status != 200 {
            self.fail(format!(
                "role change of {}: {status} {body}",
                self.persons[p].email
            ));
        }
        let previous = std::mem::replace(&mut self.rows[handle].tag, tag);
        self.owe_row_event(handle, "updated", &previous, None);
        self.settle(nodes).await;
        // Its sockets were ended. Most come back as clients reconnect, with `lastSeq`
        // and the same subscriptions, as the user is now: at once, or after a batch or
        // two; the others are gone.
        let mut at_once = Vec::new();
        let mut i = 0;
        while i < self.socks.len() {
            if !self.socks[i].soft {
                i += 1;
            } else if rng.chance(0.7) {
                let away = self.leave(i, rng.below(3), "ended by a role change", rng);
                if away.misses == 0 {
                    at_once.push(away);
                } else {
                    self.away.push(away);
                }
            } else {
                self.socks.remove(i);
            }
        }

        self.persons[p].role = new;
        let at = nodes.at(self.pick_node());
        let person = &self.persons[p];
        let (status, login) = at.login(&person.email, &person.password).await;
        if status != 200 {
            self.fail(format!("login after role change: {status} {login}"));
        }
        self.persons[p].token = login["access_token"].as_str().unwrap().to_string();
        for away in at_once {
            self.come_back(nodes, away).await;
        }
        for _ in 0..rng.below(2) {
            self.add_socket(nodes, rng, Some(p)).await;
        }
        self.stats.role_changes += 1;
    }

    // ----- checking -----

    /// Until everything caused so far is on its way to its sockets, then a barrier after
    /// it on every authenticated socket; returns the barrier's marker.
    ///
    /// 1. A marker row written through each node. A node's relay delivers its own
    ///    writes in order, and action emits left before their requests answered, so
    ///    once a node's marker has reached a socket, everything that node caused before
    ///    it has been handed out (locally, and published on Redis).
    /// 2. Every marker awaited on the sentinel of every node (an Admin with no
    ///    subscriptions, which each marker reaches by its LoopBack name). A node hands
    ///    its sockets what Redis brings in the order it came, so once its sentinel has
    ///    every marker, it has queued everything earlier for its own sockets.
    /// 3. The barrier, emitted through a random node: after all that on every socket.
    async fn sync(&mut self, nodes: &Nodes, name: &str) -> String {
        let live = self.live();
        let titles: Vec<String> = live.iter().map(|k| format!("{name}.{k}")).collect();
        for (&k, title) in live.iter().zip(&titles) {
            let (status, body) = nodes
                .at(k)
                .req(
                    Method::POST,
                    "/1/objects/markers",
                    &master(),
                    Some(json!({ "title": title })),
                )
                .await;
            if status != 200 {
                self.fail(format!("marker write{}: {status} {body}", self.on(k)));
            }
        }
        for &s in &live {
            let mut missing: BTreeSet<&String> = titles.iter().collect();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !missing.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                let Some(got) = self.socks[s].sio.try_expect("/markers/POST", left).await else {
                    self.fail(format!("{} never got {missing:?}", self.socks[s].label));
                };
                missing.remove(&text(&got["title"]));
            }
        }
        let node = self.pick_node();
        nodes.barrier(node).await
    }

    /// Everything each socket got since the last settle, against what it was owed.
    async fn settle(&mut self, nodes: &Nodes) {
        self.markers += 1;
        let barrier = self.sync(nodes, &format!("marker{}", self.markers)).await;
        let mut problems = Vec::new();
        for i in 0..self.socks.len() {
            if Some(self.socks[i].node) == self.down {
                // The sentinel of a killed node (its other sockets are away).
                continue;
            }
            let events: Vec<(String, Vec<Value>)> = if self.socks[i].soft {
                // Being ended: what it got until it closed; it must close.
                let incoming = self.socks[i].sio.drain(Duration::from_secs(10)).await;
                if !incoming.iter().any(|e| matches!(e, Incoming::Closed)) {
                    problems.push(format!(
                        "{}: its user's role changed, so it must be disconnected; it was not",
                        self.socks[i].label
                    ));
                }
                incoming
                    .into_iter()
                    .filter_map(|e| match e {
                        Incoming::Event(name, args) => Some((name, args)),
                        Incoming::Closed => None,
                    })
                    .collect()
            } else {
                self.socks[i].sio.until_barrier(&barrier).await
            };
            self.check(i, events, &mut problems);
        }
        if !problems.is_empty() {
            let shown: Vec<&String> = problems.iter().take(40).collect();
            self.fail(format!(
                "{} problem(s) in batch {}:\n  {}",
                problems.len(),
                self.stats.batches,
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
    }

    fn check(&mut self, i: usize, events: Vec<(String, Vec<Value>)>, problems: &mut Vec<String>) {
        let mut owed = std::mem::take(&mut self.socks[i].owed);
        let mut optional = std::mem::take(&mut self.socks[i].optional);
        for (name, args) in events {
            if let Some(seq) = marker_seq(&name, &args) {
                match seq {
                    Some(seq) => {
                        self.marker_seqs.insert(seq);
                        // A marker's LoopBack name is in the socket's LoopBack stream.
                        let stream = if name.starts_with('/') {
                            "lb"
                        } else {
                            "db|markers"
                        };
                        self.in_order(i, stream, seq, true, problems);
                    }
                    None => problems.push(format!(
                        "{}: `{name}` of a marker row without its seq: {args:?}",
                        self.socks[i].label
                    )),
                }
                continue;
            }
            if name == "chan_out"
                && let Some(id) = args.first().and_then(|a| a["sid"].as_str())
            {
                self.seen_ids.insert(id.to_string());
            }
            let key = self.classify(&name, &args);
            self.check_seq(i, &name, &args, &key, problems);
            let path = key.split('|').next().unwrap_or_default().to_string();
            if let Some(n) = owed.get_mut(&key).filter(|n| **n > 0) {
                *n -= 1;
                self.matched(i, key, path);
                continue;
            }
            if optional.remove(&key) {
                self.stats.optional_hits += 1;
                self.matched(i, key, path);
                continue;
            }
            let why = self.explain(i, &key);
            let mut payload = Value::Array(args).to_string();
            if payload.len() > 160 {
                let mut end = 160;
                while !payload.is_char_boundary(end) {
                    end -= 1;
                }
                payload.truncate(end);
                payload.push('…');
            }
            problems.push(format!(
                "{}: got `{name}` [{key}]: {why}; payload {payload}",
                self.socks[i].label
            ));
        }
        for (key, n) in owed {
            if n > 0 {
                problems.push(format!(
                    "{}: MISSING {n}× [{key}] (it may read it and listens on that path)",
                    self.socks[i].label
                ));
            }
        }
    }

    /// A received event that was owed or allowed.
    fn matched(&mut self, i: usize, key: String, path: String) {
        *self.stats.checked.entry(path).or_default() += 1;
        let sock = &mut self.socks[i];
        if sock.replays.remove(&key) {
            self.stats.replayed += 1;
        }
        sock.received.insert(key);
    }

    /// Where an event carries its number, and that the number is its entry's: `seq` in
    /// `db_*` and Sails payloads, `{seq}` as the second argument of LoopBack names and of
    /// before and after actions' emits; nothing on what is not logged (on-demand
    /// actions' emits, `chan_out`).
    /// Then that the socket's numbers grow on the event's stream.
    fn check_seq(
        &mut self,
        i: usize,
        name: &str,
        args: &[Value],
        key: &str,
        problems: &mut Vec<String>,
    ) {
        let path = key.split('|').next().unwrap_or_default();
        let entry = match self.logged.get(key) {
            Some(&entry) => entry,
            None => {
                let unlogged =
                    matches!(path, "fx_users" | "fx_role" | "fx_all" | "fx_room" | "chan");
                if unlogged && args.len() != 1 {
                    problems.push(format!(
                        "{}: `{name}` [{key}] is not logged, so it carries no seq; got {args:?}",
                        self.socks[i].label
                    ));
                }
                // Any other unknown event is reported as not owed.
                return;
            }
        };
        let seq = if matches!(path, "db" | "sails") {
            args.first()
                .and_then(|a| a.get("seq"))
                .and_then(Value::as_u64)
                .filter(|_| args.len() == 1)
        } else {
            match args {
                [_, Value::Object(second)] if second.len() == 1 => {
                    second.get("seq").and_then(Value::as_u64)
                }
                _ => None,
            }
        };
        let Some(seq) = seq else {
            problems.push(format!(
                "{}: `{name}` [{key}] without its seq where it belongs: {args:?}",
                self.socks[i].label
            ));
            return;
        };
        match self.log[entry].seq {
            None => self.log[entry].seq = Some(seq),
            Some(known) if known != seq => problems.push(format!(
                "{}: `{name}` [{key}] carries seq {seq}, but its change's number is {known}",
                self.socks[i].label
            )),
            Some(_) => {}
        }
        let (stream, strict) = self.stream(key, entry);
        self.in_order(i, &stream, seq, strict, problems);
    }

    /// Events of one stream reach a socket in log order: a row's events on each path
    /// (`db` per object, since one room carries them all; Sails per row; LoopBack names
    /// all together, joined at once), strictly; actions' emits to the identity rooms,
    /// and to each channel, in order (several emits of one entry share a number).
    fn stream(&self, key: &str, entry: usize) -> (String, bool) {
        let parts: Vec<&str> = key.split('|').collect();
        match parts[0] {
            "db" => (format!("db|{}", parts[1]), true),
            "sails" => (format!("sails|{}|{}", parts[1], parts[3]), true),
            "lb" => ("lb".to_string(), true),
            _ => {
                let emit = self.log[entry].emits.iter().find(|(k, _)| k == key);
                match emit.map(|(_, e)| e) {
                    Some(e) if e["kind"] == "room" => (format!("room|{}", text(&e["room"])), false),
                    _ => ("identity".to_string(), false),
                }
            }
        }
    }

    fn in_order(
        &mut self,
        i: usize,
        stream: &str,
        seq: u64,
        strict: bool,
        problems: &mut Vec<String>,
    ) {
        self.head = self.head.max(seq);
        let sock = &mut self.socks[i];
        sock.max_seq = Some(sock.max_seq.map_or(seq, |m| m.max(seq)));
        let last = sock.last.entry(stream.to_string()).or_insert(0);
        if seq < *last || (strict && seq == *last) {
            problems.push(format!(
                "{}: OUT OF ORDER on {stream}: seq {seq} after {last}",
                sock.label
            ));
        }
        *last = (*last).max(seq);
    }

    /// Why an event was not owed: whether its receiver may read it at all.
    fn explain(&self, i: usize, key: &str) -> String {
        let sock = &self.socks[i];
        if sock.received.contains(key) {
            return "DUPLICATE: this connection already received it on this path".into();
        }
        let parts: Vec<&str> = key.split('|').collect();
        if parts.iter().any(|p| self.refused_tags.contains(*p)) {
            return "LEAK: it comes from a REFUSED request, which must deliver nothing".into();
        }
        match parts[0] {
            "db" | "sails" | "lb" => {
                let handle = self
                    .objs
                    .iter()
                    .position(|o| o.name == parts[1])
                    .and_then(|o| self.by_id.get(&(o, parts[3].parse().ok()?)));
                match handle {
                    Some(&h) => {
                        let row = &self.rows[h];
                        let obj = &self.objs[row.obj];
                        if may_read(&sock.who, obj, row.owner) {
                            "readable, but not subscribed on this path, or a duplicate".to_string()
                        } else {
                            format!(
                                "LEAK: {} may not read {} row {} (owner {:?}, rowSecurity {})",
                                sock.who.describe(),
                                obj.name,
                                row.id,
                                row.owner,
                                obj.mode.text()
                            )
                        }
                    }
                    None => "LEAK: an event for a row never committed".into(),
                }
            }
            "fx_users" | "fx_role" | "fx_all" | "fx_room" | "chan" => {
                "LEAK: not owed to this socket: not a target (not its user, role or \
                 channel), or its action failed, or a duplicate"
                    .into()
            }
            // Only a socket being ended drains past a barrier.
            "unknown" if parts.get(1) == Some(&"__barrier") => {
                "LEAK: an emit made after its user's role changed reached it (the socket \
                 outlived the change)"
                    .into()
            }
            _ => "an event no path should carry".to_string(),
        }
    }

    /// The key of a received event (see `k_db` and friends).
    fn classify(&self, name: &str, args: &[Value]) -> String {
        let a = args.first().cloned().unwrap_or(Value::Null);
        let malformed = || format!("malformed|{name}|{}", Value::Array(args.to_vec()));
        let tag_field = |obj: &str| {
            if obj == "users" { "firstName" } else { "title" }
        };
        // No row in any event carries a password or its hash.
        if a.to_string().to_lowercase().contains("password") {
            return malformed();
        }
        match name {
            "db_created" | "db_updated" | "db_deleted" => {
                let Some(obj) = a["channel"].as_str().and_then(|c| c.strip_prefix("db-")) else {
                    return malformed();
                };
                if name == "db_deleted" {
                    return match a["data"].as_i64() {
                        Some(id) => k_db(obj, "deleted", id, ""),
                        None => malformed(),
                    };
                }
                let verb = &name[3..];
                match a["data"]["id"].as_i64() {
                    Some(id) => k_db(obj, verb, id, &text(&a["data"][tag_field(obj)])),
                    None => malformed(),
                }
            }
            "fx_users" | "fx_role" | "fx_all" | "fx_room" => k_emit(
                name,
                a["t"].as_str().unwrap_or("?"),
                &a["e"],
                &text(&a["w"]),
            ),
            "chan_out" => k_chan(
                a["channel"].as_str().unwrap_or("?"),
                &text(&a["data"]["tag"]),
                a["sid"].as_str().unwrap_or("?"),
            ),
            _ if name.starts_with('/') => {
                let parts: Vec<&str> = name[1..].split('/').collect();
                match parts.as_slice() {
                    [obj, "POST"] => match a["id"].as_i64() {
                        Some(id) => k_lb(obj, "created", id, &text(&a[tag_field(obj)])),
                        None => malformed(),
                    },
                    [obj, id, "PUT"]
                        if a["id"].as_i64().map(|i| i.to_string()).as_deref() == Some(*id) =>
                    {
                        k_lb(
                            obj,
                            "updated",
                            id.parse().unwrap(),
                            &text(&a[tag_field(obj)]),
                        )
                    }
                    [obj, id, "DELETE"]
                        if a == json!({ "id": id.parse::<i64>().unwrap_or(-1) }) =>
                    {
                        k_lb(obj, "deleted", id.parse().unwrap(), "")
                    }
                    _ => malformed(),
                }
            }
            obj if self.objs.iter().any(|o| o.name == obj) => {
                let tf = tag_field(obj);
                let Some(id) = a["id"].as_i64() else {
                    return malformed();
                };
                match a["verb"].as_str() {
                    Some("created") if a["data"]["id"] == json!(id) => {
                        k_sails(obj, "created", id, &text(&a["data"][tf]), "")
                    }
                    Some("updated") if a["data"]["id"] == json!(id) => k_sails(
                        obj,
                        "updated",
                        id,
                        &text(&a["data"][tf]),
                        &text(&a["previous"][tf]),
                    ),
                    Some("destroyed") if a.get("data").is_none_or(Value::is_null) => {
                        k_sails(obj, "destroyed", id, "", &text(&a["previous"][tf]))
                    }
                    _ => malformed(),
                }
            }
            _ => format!("unknown|{name}|{}", Value::Array(args.to_vec())),
        }
    }
}

// ---------------------------------------------------------------------------------
// Where the sockets and requests go: one in-process node, or real binaries.
// ---------------------------------------------------------------------------------

/// The nodes serving the app, which `Sim` reaches by index (`bases`), and how a barrier
/// reaches every authenticated socket on them.
struct Nodes {
    bases: Vec<String>,
    client: reqwest::Client,
    host: Host,
}

enum Host {
    /// One in-process node: its realtime layer emits the barrier (`TestApp::barrier`).
    /// `None` only while it restarts.
    InProcess(Option<TestApp>),
    /// Real binaries: the on-demand action `barrier` calls `emitAll('__barrier', …)`.
    /// `servers[k]` is node `k`'s process in `cluster.nodes`.
    Binaries {
        cluster: crate::cluster::Cluster,
        servers: Vec<usize>,
    },
}

/// The barrier of real binaries, reached as `/1/function/general/barrier`.
const BARRIER_ACTION: &str = r#"
function backandCallback(userInput) {
  socket.emitAll("__barrier", userInput.marker);
  return {};
}"#;

impl Nodes {
    fn at(&self, node: usize) -> Endpoint<'_> {
        Endpoint {
            client: &self.client,
            base: &self.bases[node],
        }
    }

    /// Emits a new barrier marker through `node` and returns it (see `Sim::sync`).
    async fn barrier(&self, node: usize) -> String {
        match &self.host {
            Host::InProcess(app) => app.as_ref().expect("running").barrier().await,
            Host::Binaries { .. } => {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let marker = format!("nb{n}");
                let (status, body) = self
                    .at(node)
                    .req(
                        Method::POST,
                        "/1/function/general/barrier",
                        &master(),
                        Some(json!({ "marker": marker })),
                    )
                    .await;
                assert_eq!(status, 200, "barrier through node {node}: {body}");
                marker
            }
        }
    }

    /// One node: stops the server (its sockets are closed) and starts it again on the
    /// same data, at once. Several: kills node `k` with SIGKILL (`start_again` replaces it).
    async fn stop(&mut self, k: usize) {
        match &mut self.host {
            Host::InProcess(app) => {
                let app = app.take().expect("running").restart(one_node_config).await;
                self.bases[k] = app.base.clone();
                self.host = Host::InProcess(Some(app));
            }
            Host::Binaries { cluster, servers } => cluster.nodes[servers[k]].stop(),
        }
    }

    /// A new process in place of killed node `k`, on the same database, once it listens.
    fn start_again(&mut self, k: usize) {
        if let Host::Binaries { cluster, servers } = &mut self.host {
            let base = tokio::task::block_in_place(|| cluster.add_with(&[]).base.clone());
            servers[k] = cluster.nodes.len() - 1;
            self.bases[k] = base;
        }
    }
}

/// The generated app as files under a node's directory: `schema/…` and `actions/…`.
fn app_files(objs: &[Obj]) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "schema/_roles.json".to_string(),
            json!({ "roles": ["Editor", "Viewer"] }).to_string(),
        ),
        (
            "schema/markers.json".to_string(),
            json!({ "name": "markers", "fields": { "title": { "type": "string" } },
                    "permissions": { "read": ROLES, "create": [], "update": [], "delete": [] },
                    "events": ["loopback"] })
            .to_string(),
        ),
        (
            "actions/general/onDemand/fx.js".to_string(),
            action("onDemand", "emit"),
        ),
    ];
    for obj in objs {
        files.push((
            format!("schema/{}.json", obj.name),
            obj.schema().to_string(),
        ));
        if obj.users {
            continue;
        }
        let mut add = |path: String, code: String| {
            files.push((format!("actions/{}/{path}", obj.name), code));
        };
        for t in TRIGGERS {
            if BEFORE.contains(&t) {
                add(format!("{t}/a_emit.js"), action(t, "emit"));
                add(format!("{t}/b_refuse.js"), action(t, "refuse"));
            } else {
                add(format!("{t}/emit.js"), action(t, "emit"));
            }
        }
        add("onDemand/fx.js".into(), action("onDemand", "emit"));
    }
    files
}

// ---------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------

/// One in-process node on `backend`.
async fn run(backend: &Backend, seed: u64, target: usize) -> String {
    let started = Instant::now();
    let ctx = format!("no_leaks seed={seed} backend={}", backend.name());
    let _guard = SeedOnPanic(ctx.clone());
    let mut rng = Rng(seed);
    let objs = random_objects(&mut rng);

    let mut spawn = Spawn::new(backend);
    for (path, content) in app_files(&objs) {
        spawn = match (path.strip_prefix("schema/"), path.strip_prefix("actions/")) {
            (Some(file), _) => spawn.schema(file, serde_json::from_str(&content).unwrap()),
            (_, Some(file)) => spawn.action(file, &content),
            _ => unreachable!("{path}"),
        };
    }
    let app = spawn.config(one_node_config).start().await;
    let mut nodes = Nodes {
        bases: vec![app.base.clone()],
        client: app.client.clone(),
        host: Host::InProcess(Some(app)),
    };
    simulate(&mut nodes, ctx, rng, objs, target, started).await
}

/// The one node's configuration (also when it restarts).
fn one_node_config(c: &mut livebase::config::Config) {
    // Unauthenticated sockets stay for the whole run (and must get nothing).
    c.socket_auth_timeout_ms = 3_600_000;
    // A loaded 2-core machine must not turn a slow action or a burst into a
    // failure that is not about who receives what.
    c.action_time_limit_ms = 20_000;
    c.socket_buffer = 8192;
    c.watch = false;
}

/// `CLUSTER_NODES` real binaries on one PostgreSQL database and one Redis; `None` (with
/// a note) unless both are configured.
async fn run_cluster(seed: u64, target: usize) -> Option<String> {
    let started = Instant::now();
    let ctx = format!("no_leaks seed={seed} cluster of {CLUSTER_NODES} nodes");
    let _guard = SeedOnPanic(ctx.clone());
    let mut rng = Rng(seed);
    let objs = random_objects(&mut rng);

    let mut files = app_files(&objs);
    files.push((
        "actions/general/onDemand/barrier.js".into(),
        BARRIER_ACTION.into(),
    ));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let cluster = crate::cluster::on_redis(
        CLUSTER_NODES,
        &files,
        &[
            // The secrets and the first Admin of `common`, as on one node.
            ("--master-token", crate::common::MASTER),
            ("--anonymous-token", ANON),
            ("--admin-email", crate::common::ADMIN_EMAIL),
            ("--admin-password", crate::common::ADMIN_PASSWORD),
            ("--admin-user-token", crate::common::ADMIN_USER_TOKEN),
            // As `run` configures its one node.
            ("--socket-auth-timeout-ms", "3600000"),
            ("--action-time-limit-ms", "20000"),
            ("--socket-buffer", "8192"),
            ("--max-connections-per-address", "0"),
            ("--db-pool-size", "4"),
        ],
    )
    .await?;
    let mut nodes = Nodes {
        bases: cluster.nodes.iter().map(|n| n.base.clone()).collect(),
        client: crate::process::client(),
        host: Host::Binaries {
            servers: (0..cluster.nodes.len()).collect(),
            cluster,
        },
    };
    Some(simulate(&mut nodes, ctx, rng, objs, target, started).await)
}

/// Users, sockets spread over the nodes, then batches until `target` events were
/// checked; the summary line.
async fn simulate(
    nodes: &mut Nodes,
    ctx: String,
    mut rng: Rng,
    objs: Vec<Obj>,
    target: usize,
    started: Instant,
) -> String {
    let users_obj = objs.iter().position(|o| o.users).unwrap();
    let mut sim = Sim {
        ctx: ctx.clone(),
        nodes: nodes.bases.len(),
        spread: Rng(rng.0 ^ 0x6e6f_6465_7370_7264),
        sentinels: nodes.bases.len(),
        objs,
        persons: Vec::new(),
        rows: Vec::new(),
        by_id: HashMap::new(),
        socks: Vec::new(),
        unauth: Vec::new(),
        counter: 0,
        markers: 0,
        refused_tags: HashSet::new(),
        stats: Stats::default(),
        seen_ids: BTreeSet::new(),
        log: Vec::new(),
        logged: HashMap::new(),
        marker_seqs: BTreeSet::new(),
        head: 0,
        away: Vec::new(),
        down: None,
        down_batches: 0,
    };
    let shape: Vec<String> = sim
        .objs
        .iter()
        .map(|o| {
            format!(
                "{}({}, read {:?}, create {:?}, update {:?}, delete {:?}{})",
                o.name,
                o.mode.text(),
                o.read,
                o.create,
                o.update,
                o.delete,
                if o.loopback { ", loopback" } else { "" }
            )
        })
        .collect();
    eprintln!("{ctx}: app {}", shape.join("; "));

    // People. The sentinels connect first so they can wait out the users' own events.
    let admin = nodes.at(sim.pick_node()).admin().await;
    let admin_row = nodes.at(sim.pick_node()).row("users", admin.id).await;
    let mut sentinels = Vec::new();
    for node in 0..sim.sentinels {
        sentinels.push(Sio::with_token(nodes.at(node).base, &admin.token).await);
    }
    sim.persons.push(Person {
        email: admin.email.clone(),
        password: admin.password.clone(),
        role: "Admin".into(),
        id: admin.id,
        token: admin.token.clone(),
        row: 0,
    });
    let people = 6 + rng.below(7);
    let weighted = [
        "User", "User", "User", "ReadOnly", "Editor", "Viewer", "Public", "Admin",
    ];
    for k in 0..people {
        let role = rng.pick(&weighted).to_string();
        let email = format!("u{k}@nl.test");
        let user = nodes.at(sim.pick_node()).user(&email, &role).await;
        sim.persons.push(Person {
            email,
            password: user.password,
            role,
            id: user.id,
            token: user.token,
            row: 0,
        });
    }
    for p in 0..sim.persons.len() {
        let first_name = if p == 0 {
            text(&admin_row["firstName"])
        } else {
            sim.persons[p].email.clone()
        };
        let id = sim.persons[p].id;
        sim.rows.push(Row {
            obj: users_obj,
            id,
            owner: Some(id),
            tag: first_name,
            fx: Value::Null,
            code: String::new(),
            alive: true,
        });
        let handle = sim.rows.len() - 1;
        sim.persons[p].row = handle;
        sim.by_id.insert((users_obj, id), handle);
    }
    for (node, sentinel) in sentinels.into_iter().enumerate() {
        let who = sim.person_who(0);
        let label = format!("sentinel of {}{}", admin.email, sim.on(node));
        let token = Some(admin.token.clone());
        sim.socks.push(Sock::new(label, sentinel, node, who, token));
    }
    // Whatever the users' creation delivered is not under test: settle it away.
    let barrier = sim.sync(nodes, "setup").await;
    for s in 0..sim.sentinels {
        sim.socks[s].sio.until_barrier(&barrier).await;
    }
    sim.witness().await;

    for p in 0..sim.persons.len() {
        let sockets = if p == 0 {
            rng.below(2)
        } else {
            1 + rng.below(4)
        };
        for _ in 0..sockets {
            sim.add_socket(nodes, &mut rng, Some(p)).await;
        }
    }
    for _ in 0..1 + rng.below(3) {
        sim.add_socket(nodes, &mut rng, None).await;
    }
    sim.unauthenticated(nodes, false).await;
    sim.unauthenticated(nodes, true).await;
    eprintln!(
        "{ctx}: {} users ({} with Admin), {} authenticated sockets, {} unauthenticated",
        sim.persons.len(),
        sim.persons.iter().filter(|p| p.role == "Admin").count(),
        sim.socks.len(),
        sim.unauth.len()
    );

    let total = |sim: &Sim| sim.stats.checked.values().sum::<usize>();
    // After which batch the server restarts (one node) or a node is killed (several).
    let restart_after = 2 + rng.below(4);
    while sim.stats.batches < MAX_BATCHES
        && (sim.stats.batches < MIN_BATCHES || total(&sim) < target)
    {
        sim.come_back_due(nodes).await;
        sim.churn(&mut rng).await;
        if sim.stats.batches > 0 && sim.stats.role_changes < 3 && rng.chance(0.2) {
            sim.role_change(nodes, &mut rng).await;
        }
        sim.batch(nodes, &mut rng).await;
        sim.settle(nodes).await;
        sim.stats.batches += 1;
        sim.between_batches(nodes, &mut rng, restart_after).await;
    }
    // Every socket still away comes back, and gets what it is owed.
    sim.come_back_all(nodes).await;
    sim.settle(nodes).await;

    // No id another client handed over names a session on any node, on either
    // transport; the probe itself recognises a live one (a control: a socket's own
    // session id on its node).
    let control = &sim.socks[0];
    assert!(
        crate::sio::names_a_session(nodes.at(control.node).base, &control.sio.sid).await,
        "{ctx}: control: a live session id is recognised"
    );
    for id in &sim.seen_ids {
        for node in sim.live() {
            assert!(
                !crate::sio::names_a_session(nodes.at(node).base, id).await,
                "{ctx}: `{id}`, received from another client, names a live session{}",
                sim.on(node)
            );
        }
    }
    eprintln!(
        "{ctx}: {} ids received from other clients, none a credential",
        sim.seen_ids.len()
    );

    // Never-authenticated sockets got nothing in the whole run.
    for (k, (_, s)) in sim.unauth.iter_mut().enumerate() {
        let got = events_of(s).await;
        assert!(
            got.is_empty(),
            "{ctx}: unauthenticated socket {k} received {got:?}"
        );
    }

    let checked = total(&sim);
    let s = &sim.stats;
    let mut socks_by_node = BTreeMap::<usize, usize>::new();
    for sock in &sim.socks {
        *socks_by_node.entry(sock.node).or_default() += 1;
    }
    let spread = if sim.nodes == 1 {
        String::new()
    } else {
        format!(
            "; REST requests by node {:?}, sockets by node at the end {socks_by_node:?}",
            s.rest_by_node
        )
    };
    let summary = format!(
        "{ctx}: {checked} events delivered and checked, 0 leaked, 0 missing, 0 duplicated, \
         0 out of order — by path {:?} ({} of them allowed-but-optional Sails creates); \
         {} reconnections {:?}, {} with lastSeq ({} with a role changed while away), \
         {} server restarts / node kills ({:.1}s stopping and starting); {} replayed events \
         checked ({} at connection), \
         {} joins in a resume window; {} batches, {} requests ({} over Sails/chan_in \
         sockets, {} on-demand calls) of which {} committed and refused by status {:?}; \
         {} subscription changes, {} re-authentications, {} role changes; {} users, {} \
         sockets at the end{spread}; {:.1}s",
        s.checked,
        s.optional_hits,
        s.reconnects.values().sum::<usize>(),
        s.reconnects,
        s.resumed,
        s.role_changed_away,
        s.restarts,
        s.restart_time.as_secs_f64(),
        s.replayed,
        s.replayed_at_connection,
        s.window_joins,
        s.batches,
        s.ops,
        s.via_socket,
        s.calls,
        s.committed,
        s.refused,
        s.churn,
        s.reauths,
        s.role_changes,
        sim.persons.len(),
        sim.socks.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        checked >= target,
        "{ctx}: only {checked} events checked after {MAX_BATCHES} batches (want {target})"
    );
    summary
}

/// The events an unauthenticated socket (which no barrier reaches) has received.
async fn events_of(s: &mut Sio) -> Vec<Incoming> {
    s.drain(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|e| matches!(e, Incoming::Event(..)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leaked_events_over_every_path() {
    let seed = seed();
    eprintln!("no_leaks: seed {seed} (LIVEBASE_NO_LEAKS_SEED={seed} reproduces this run)");
    for backend in backends() {
        let target = match backend {
            Backend::Sqlite => SQLITE_TARGET,
            Backend::Postgres(_) => PG_TARGET,
        };
        let summary = run(&backend, seed, target).await;
        eprintln!("{summary}");
    }
}

/// The same property with every socket and every request on a random one of three real
/// nodes sharing one PostgreSQL database and one Redis: room emits cross the nodes
/// through Redis, revocations through the database's bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leaked_events_over_every_path_across_nodes() {
    let seed = seed();
    eprintln!(
        "no_leaks across nodes: seed {seed} (LIVEBASE_NO_LEAKS_SEED={seed} reproduces this run)"
    );
    if let Some(summary) = run_cluster(seed, CLUSTER_TARGET).await {
        eprintln!("{summary}");
    }
}

/// socketioxide sends a socket's CONNECT answer and
/// only then marks it connected, while it already handles the client's next packets (on
/// another thread of a multi-threaded runtime, as the server runs in production). A
/// client that joins or authenticates the moment it sees CONNECT must still be answered
/// normally, not refused as if its socket had closed or re-authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_events_after_connect_are_answered() {
    let backend = Backend::Sqlite;
    let app = super::start(&backend).await;
    let alice = app.user("alice@x.test", "User").await;
    for round in 0..150 {
        // Handshake auth, then `join` at once.
        let s = app.socket(&alice.token).await;
        let ack = s.call("join", json!("db-posts")).await;
        assert_eq!(
            crate::common::without_sid(&ack),
            json!({ "ok": true, "channel": "db-posts" }),
            "round {round}: join right after connecting"
        );
        // No credentials, then `authentication` at once.
        let mut s = Sio::connect(&app.base, None).await.expect("connects");
        s.emit("authentication", &[json!({ "id": alice.token })]);
        let Some(got) = s.try_expect("authenticated", Duration::from_secs(5)).await else {
            let instead = s.drain(Duration::from_millis(100)).await;
            panic!("round {round}: `authentication` right after connecting: got {instead:?}");
        };
        assert_eq!(got["username"], json!(alice.email), "round {round}");
    }
}
