//! The realtime check: what a Socket.IO observer joined to `db-fault_rows` must have
//! received for a cycle's writes, once it resumed after the kill. Pure: the observer
//! (`observer.rs`) hands over what it received, parsed here, so the rules are
//! unit-tested.
//!
//! Every committed change writes its event into the event log in its own transaction,
//! numbered `seq` (gap-free, in commit order), and realtime delivery follows the log; a
//! client that reconnects with `lastSeq` gets, when it joins a channel again, what it
//! missed there before the join's ack. So once the observer has resumed and seen the
//! cycle's marker (a `fault_marks` row created after every write of the cycle was
//! answered or cut off, on the second channel it joins; the relay delivers in `seq`
//! order, so every earlier event came before it):
//!
//! - every acknowledged create, update and delete, and every in-doubt one the database
//!   shows applied, has had exactly one event: `db_created` / `db_updated` with the row
//!   at the version the write set (the whole row, as that write stored it), or
//!   `db_deleted` with its id; a create's event carries the `seq` its `afterCreate` saw
//!   (the ledger row's);
//! - a key's events come in the order of its writes;
//! - no event is for a write that was refused, for an in-doubt write the database does
//!   not show, or for one never sent;
//! - no `seq` arrives twice (on one connection or across a resume), each connection's
//!   `seq`s strictly increase, and nothing a join replayed arrives after its ack.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use crate::model::{Op, Outcome, Sent, same, stored_fields};

/// The channel of the rows under test.
pub const ROWS_CHANNEL: &str = "db-fault_rows";
/// The channel of the markers (`fault_marks`).
pub const MARKS_CHANNEL: &str = "db-fault_marks";

/// A `db_*` event as its payload shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created {
        key: String,
        id: i64,
        ver: i64,
    },
    Updated {
        key: String,
        id: i64,
        ver: i64,
    },
    Deleted {
        id: i64,
    },
    /// Any `db_*` event on the markers' channel.
    Mark {
        key: String,
    },
}

/// One `db_*` event received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The observer's connection it came on (1, 2, … over the run).
    pub conn: usize,
    pub seq: u64,
    pub change: Change,
    /// Set when it came after this connection's join ack of its channel on a resume:
    /// the ack's `seq`, up to which the join replayed before answering.
    pub after_ack: Option<u64>,
    /// What is wrong with the payload itself (a row that is not one write), if anything.
    pub problem: Option<String>,
}

/// A `db_*` event read: its `seq`, its change, and what is wrong with its row, if anything.
pub type DbEvent = (u64, Change, Option<String>);

/// A Socket.IO event frame (`42[name, payload]`), if it is a `db_*` event: its `seq`
/// and change, or why it cannot be read.
pub fn parse_db_event(frame: &str) -> Option<Result<DbEvent, String>> {
    let json = frame.strip_prefix("42")?;
    if !json.starts_with("[\"db_") {
        return None;
    }
    Some(parse_db_json(json).map_err(|e| format!("{e}: {}", short(json))))
}

fn parse_db_json(json: &str) -> Result<DbEvent, String> {
    let value: Value = serde_json::from_str(json).map_err(|e| format!("not JSON ({e})"))?;
    let name = value[0].as_str().unwrap_or("");
    let payload = &value[1];
    let seq = payload["seq"].as_u64().ok_or("no seq")?;
    let data = &payload["data"];
    let channel = payload["channel"].as_str().ok_or("no channel")?;
    if channel == MARKS_CHANNEL {
        let key = data["key"].as_str().unwrap_or("").to_string();
        return Ok((seq, Change::Mark { key }, None));
    }
    if channel != ROWS_CHANNEL {
        return Err(format!("an event of channel `{channel}`"));
    }
    let row = || -> Result<(String, i64, i64, Option<String>), String> {
        let (Some(key), Some(id), Some(ver)) = (
            data["key"].as_str(),
            data["id"].as_i64(),
            data["ver"].as_i64(),
        ) else {
            return Err("a row without key, id or ver".into());
        };
        let problem = stored_fields(key, ver)
            .into_iter()
            .find_map(|(name, want)| {
                let got = data.get(&name).unwrap_or(&Value::Null);
                (!same(got, &want)).then(|| {
                    format!(
                        "its row `{key}` (id {id}, ver {ver}) is not one write: field `{name}` is \
                     {}, expected {}",
                        short(&got.to_string()),
                        short(&want.to_string())
                    )
                })
            });
        Ok((key.to_string(), id, ver, problem))
    };
    match name {
        "db_created" => {
            let (key, id, ver, problem) = row()?;
            Ok((seq, Change::Created { key, id, ver }, problem))
        }
        "db_updated" => {
            let (key, id, ver, problem) = row()?;
            Ok((seq, Change::Updated { key, id, ver }, problem))
        }
        "db_deleted" => {
            let id = data
                .as_i64()
                .or_else(|| data.as_str().and_then(|s| s.parse().ok()))
                .ok_or("db_deleted without an id")?;
            Ok((seq, Change::Deleted { id }, None))
        }
        other => Err(format!("unknown event `{other}`")),
    }
}

/// The `recovered` event a resumed connection gets (`42["recovered", {recovered, …}]`).
pub fn parse_recovered(frame: &str) -> Option<bool> {
    let json = frame.strip_prefix("42")?;
    if !json.starts_with("[\"recovered\"") {
        return None;
    }
    let value: Value = serde_json::from_str(json).ok()?;
    Some(value[1]["recovered"].as_bool() == Some(true))
}

/// An ack frame (`43<id>[data]`): its id and its first argument.
pub fn parse_ack(frame: &str) -> Option<(u64, Value)> {
    let rest = frame.strip_prefix("43")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse().ok()?;
    let value: Value = serde_json::from_str(&rest[digits..]).ok()?;
    Some((id, value.get(0).cloned().unwrap_or(Value::Null)))
}

/// What a write's event is, for matching: a key, the verb and the version it set (or,
/// for a delete, the row id, which is all its event shows).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Token {
    Created(i64),
    Updated(i64),
    Deleted(i64),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventCounts {
    /// `db_*` events received on the rows channel.
    pub received: usize,
    /// Writes acknowledged (or in doubt and applied) whose one event came.
    pub matched: usize,
}

#[derive(Debug, Default)]
pub struct EventReport {
    pub counts: EventCounts,
    pub violations: Vec<String>,
}

/// One observer's events over the run: what carries from cycle to cycle.
#[derive(Debug, Default)]
pub struct EventLog {
    /// Every `seq` received, with the connection it came on.
    seqs: HashMap<u64, usize>,
    /// The last `seq` each connection received.
    last: HashMap<usize, u64>,
    /// Row ids to keys, from writes and `db_created` events: a `db_deleted` shows only
    /// the id.
    ids: HashMap<i64, String>,
}

impl EventLog {
    /// Checks the events received since the last check (`seen`, in arrival order, up to
    /// and including the cycle's marker) against the cycle's writes (`sent`), given which
    /// in-doubt writes the database shows applied and the `seq` each key's ledger row
    /// holds.
    pub fn check(
        &mut self,
        sent: &[Sent],
        applied: &HashSet<String>,
        create_seqs: &HashMap<String, i64>,
        seen: &[Seen],
    ) -> EventReport {
        let mut report = EventReport::default();
        let v = &mut report.violations;
        // The stream itself: no seq twice, increasing per connection, nothing replayed
        // after the ack.
        let mut fresh = Vec::new();
        for s in seen {
            if let Some(problem) = &s.problem {
                v.push(format!("seq {}: {problem}", s.seq));
            }
            if let Some(first) = self.seqs.insert(s.seq, s.conn) {
                v.push(format!(
                    "seq {} received twice (on connection {first}, then on {}): {:?}",
                    s.seq, s.conn, s.change
                ));
                continue;
            }
            if let Some(last) = self.last.insert(s.conn, s.seq)
                && last >= s.seq
            {
                v.push(format!(
                    "connection {}: seq {} came after seq {last}",
                    s.conn, s.seq
                ));
            }
            if let Some(ack) = s.after_ack
                && s.seq <= ack
            {
                v.push(format!(
                    "connection {}: seq {} came after the join ack that replayed up to {ack}",
                    s.conn, s.seq
                ));
            }
            if !matches!(s.change, Change::Mark { .. }) {
                report.counts.received += 1;
                fresh.push(s);
            }
        }

        // What each write should have produced.
        for s in sent {
            match (&s.op, &s.outcome) {
                (Op::Create { .. }, Outcome::Acked { id: Some(id) })
                | (Op::Update { id, .. } | Op::Delete { id, .. }, _) => {
                    self.ids.insert(*id, s.key.clone());
                }
                _ => {}
            }
        }
        for s in &fresh {
            if let Change::Created { key, id, .. } = &s.change {
                self.ids.insert(*id, key.clone());
            }
        }
        // Per key, in write order: the token, whether an event must come, and the write.
        let mut writes: BTreeMap<&str, Vec<(Token, bool, &Sent)>> = BTreeMap::new();
        for s in sent {
            let token = match &s.op {
                Op::Create { ver } | Op::Duplicate { ver } => Token::Created(*ver),
                Op::Update { to, .. } => Token::Updated(*to),
                Op::Delete { id, .. } => Token::Deleted(*id),
                // Refused creates send version 1 (or a string in its place).
                Op::Refused(_) => Token::Created(1),
            };
            let committed = !s.op.must_fail()
                && match s.outcome {
                    Outcome::Acked { .. } => true,
                    Outcome::InDoubt => applied.contains(&s.key),
                    Outcome::Refused { .. } => false,
                };
            writes
                .entry(&s.key)
                .or_default()
                .push((token, committed, s));
        }

        // What came, by key and token.
        let mut came: BTreeMap<String, BTreeMap<Token, Vec<(u64, i64)>>> = BTreeMap::new();
        for s in &fresh {
            let (key, token, id) = match &s.change {
                Change::Created { key, id, ver } => (key.clone(), Token::Created(*ver), *id),
                Change::Updated { key, id, ver } => (key.clone(), Token::Updated(*ver), *id),
                Change::Deleted { id } => match self.ids.get(id) {
                    Some(key) => (key.clone(), Token::Deleted(*id), *id),
                    None => {
                        v.push(format!(
                            "seq {}: db_deleted of id {id}, which no write deleted",
                            s.seq
                        ));
                        continue;
                    }
                },
                Change::Mark { .. } => continue,
            };
            came.entry(key)
                .or_default()
                .entry(token)
                .or_default()
                .push((s.seq, id));
        }

        for (key, list) in &writes {
            let mut got = came.remove(*key).unwrap_or_default();
            let mut order: Vec<(u64, &Sent)> = Vec::new();
            for (token, committed, s) in list {
                let events = got.remove(token).unwrap_or_default();
                let what = describe(s);
                match (committed, events.as_slice()) {
                    (true, []) => v.push(format!(
                        "{what}: no event came (the observer resumed and saw the cycle's \
                         marker)"
                    )),
                    (true, [(seq, id)]) => {
                        report.counts.matched += 1;
                        order.push((*seq, s));
                        if let (Op::Create { .. }, Outcome::Acked { id: Some(want) }) =
                            (&s.op, &s.outcome)
                            && want != id
                        {
                            v.push(format!("{what}: its db_created (seq {seq}) has id {id}"));
                        }
                        if let (Token::Created(_), Some(ledger)) = (token, create_seqs.get(*key))
                            && *ledger as u64 != *seq
                        {
                            v.push(format!(
                                "{what}: its db_created has seq {seq}, its afterCreate ran \
                                 for seq {ledger}"
                            ));
                        }
                    }
                    (true, more) => v.push(format!(
                        "{what}: {} events (seq {:?})",
                        more.len(),
                        more.iter().map(|(seq, _)| seq).collect::<Vec<_>>()
                    )),
                    (false, []) => {}
                    (false, events) => v.push(format!(
                        "{what}: {} event(s) (seq {:?}) for a write that {}",
                        events.len(),
                        events.iter().map(|(seq, _)| seq).collect::<Vec<_>>(),
                        match s.outcome {
                            Outcome::InDoubt => "the database does not show",
                            _ => "was refused",
                        }
                    )),
                }
            }
            // A key's writes are sequential (one writer, one request at a time).
            if order.windows(2).any(|w| w[0].0 > w[1].0) {
                v.push(format!(
                    "`{key}`: events out of write order: {:?}",
                    order
                        .iter()
                        .map(|(seq, s)| format!("seq {seq} for {}", describe(s)))
                        .collect::<Vec<_>>()
                ));
            }
            for (token, events) in got {
                v.push(format!(
                    "`{key}`: event(s) {token:?} (seq {:?}) that no write of the cycle made",
                    events.iter().map(|(seq, _)| seq).collect::<Vec<_>>()
                ));
            }
        }
        for (key, tokens) in came {
            for (token, events) in tokens {
                v.push(format!(
                    "`{key}`: event(s) {token:?} (seq {:?}) for a key never written this cycle",
                    events.iter().map(|(seq, _)| seq).collect::<Vec<_>>()
                ));
            }
        }
        report
    }
}

fn describe(s: &Sent) -> String {
    let outcome = match s.outcome {
        Outcome::Acked { .. } => "acknowledged".to_string(),
        Outcome::Refused { status } => format!("refused ({status})"),
        Outcome::InDoubt => "in-doubt".to_string(),
    };
    format!("{outcome} {:?} of `{}`", s.op, s.key)
}

fn short(text: &str) -> String {
    if text.len() > 120 {
        let head: String = text.chars().take(117).collect();
        format!("{head}… ({} bytes)", text.len())
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sent(key: &str, op: Op, outcome: Outcome) -> Sent {
        Sent {
            key: key.into(),
            op,
            outcome,
        }
    }

    fn acked(id: Option<i64>) -> Outcome {
        Outcome::Acked { id }
    }

    fn seen(conn: usize, seq: u64, change: Change) -> Seen {
        Seen {
            conn,
            seq,
            change,
            after_ack: None,
            problem: None,
        }
    }

    fn created(key: &str, id: i64, ver: i64) -> Change {
        Change::Created {
            key: key.into(),
            id,
            ver,
        }
    }

    fn updated(key: &str, id: i64, ver: i64) -> Change {
        Change::Updated {
            key: key.into(),
            id,
            ver,
        }
    }

    fn mark(n: usize) -> Change {
        Change::Mark {
            key: format!("mark-{n}"),
        }
    }

    /// A create (id 1), an update to version 2, a delete of another row (id 2, created
    /// the cycle before), a refused duplicate and a refused create.
    fn cycle() -> Vec<Sent> {
        vec![
            sent("w0-a", Op::Create { ver: 1 }, acked(Some(1))),
            sent(
                "w0-a",
                Op::Update {
                    id: 1,
                    from: 1,
                    to: 2,
                },
                acked(None),
            ),
            sent("w0-b", Op::Delete { id: 2, ver: 5 }, acked(None)),
            sent(
                "w0-a",
                Op::Duplicate { ver: 1002 },
                Outcome::Refused { status: 409 },
            ),
            sent(
                "w0-r",
                Op::Refused(crate::model::Refusal::Action),
                Outcome::Refused { status: 422 },
            ),
        ]
    }

    fn all_came() -> Vec<Seen> {
        vec![
            seen(1, 10, created("w0-a", 1, 1)),
            seen(1, 12, updated("w0-a", 1, 2)),
            // A resume: the delete came on the next connection.
            seen(2, 13, Change::Deleted { id: 2 }),
            seen(2, 14, mark(1)),
        ]
    }

    fn check(sent: &[Sent], seen: &[Seen]) -> EventReport {
        let seqs = HashMap::from([("w0-a".to_string(), 10)]);
        EventLog::default().check(sent, &HashSet::new(), &seqs, seen)
    }

    #[test]
    fn every_acknowledged_write_has_exactly_one_event() {
        let r = check(&cycle(), &all_came());
        assert_eq!(r.violations, Vec::<String>::new());
        assert_eq!(
            r.counts,
            EventCounts {
                received: 3,
                matched: 3
            }
        );

        // Each acknowledged write's event missing in turn: one violation each.
        for missing in 0..3 {
            let mut came = all_came();
            came.remove(missing);
            let r = check(&cycle(), &came);
            assert_eq!(r.violations.len(), 1, "{missing}: {:?}", r.violations);
            assert!(
                r.violations[0].contains("no event came"),
                "{:?}",
                r.violations
            );
        }

        // The update at the wrong version: missing, and one no write made.
        let mut came = all_came();
        came[1].change = updated("w0-a", 1, 3);
        let r = check(&cycle(), &came);
        assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
    }

    #[test]
    fn an_event_twice_is_a_violation() {
        // The same seq again after a resume (the replay sent what had come live).
        let mut came = all_came();
        came.insert(2, seen(2, 12, updated("w0-a", 1, 2)));
        let r = check(&cycle(), &came);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("seq 12 received twice"));

        // The same write under two seqs.
        let mut came = all_came();
        came.insert(2, seen(2, 13, updated("w0-a", 1, 2)));
        for s in &mut came[3..] {
            s.seq += 1;
        }
        let r = check(&cycle(), &came);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("2 events (seq [12, 13])"));

        // A seq seen in an earlier cycle, again.
        let mut log = EventLog::default();
        let seqs = HashMap::from([("w0-a".to_string(), 10)]);
        let r = log.check(&cycle(), &HashSet::new(), &seqs, &all_came());
        assert!(r.violations.is_empty());
        let r = log.check(&[], &HashSet::new(), &seqs, &[seen(3, 13, mark(2))]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }

    #[test]
    fn seqs_increase_per_connection_and_replays_precede_the_ack() {
        let mut came = all_came();
        came.swap(0, 1);
        let r = check(&cycle(), &came);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("connection 1: seq 10 came after seq 12"));
        // A key's events in another order than its writes (each connection in order).
        let came = [
            seen(1, 10, updated("w0-a", 1, 2)),
            seen(2, 12, created("w0-a", 1, 1)),
            seen(2, 13, Change::Deleted { id: 2 }),
            seen(2, 14, mark(1)),
        ];
        let seqs = HashMap::from([("w0-a".to_string(), 12)]);
        let r = EventLog::default().check(&cycle(), &HashSet::new(), &seqs, &came);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("out of write order"));
        // Lower seqs on a later connection are fine: each connection counts alone.
        let mut came = all_came();
        came[2] = seen(2, 11, Change::Deleted { id: 2 });
        assert_eq!(check(&cycle(), &came).violations, Vec::<String>::new());

        // An event the join should have replayed, after its ack.
        let mut came = all_came();
        came[2].after_ack = Some(13);
        let r = check(&cycle(), &came);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("after the join ack"));
        came[2].after_ack = Some(12);
        assert_eq!(check(&cycle(), &came).violations, Vec::<String>::new());
    }

    #[test]
    fn no_event_for_a_refused_write() {
        for change in [created("w0-a", 9, 1002), created("w0-r", 9, 1)] {
            let mut came = all_came();
            came.insert(3, seen(2, 14, change));
            came[4].seq = 15;
            let r = check(&cycle(), &came);
            assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
            assert!(
                r.violations[0].contains("was refused"),
                "{:?}",
                r.violations
            );
        }
        // Nor for a key never sent, nor a delete of a row no write deleted.
        for change in [created("w9-x", 9, 1), Change::Deleted { id: 77 }] {
            let mut came = all_came();
            came.insert(3, seen(2, 14, change));
            came[4].seq = 15;
            let r = check(&cycle(), &came);
            assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        }
    }

    #[test]
    fn in_doubt_writes_have_their_event_when_applied() {
        let ops = [sent("w1-x", Op::Create { ver: 4 }, Outcome::InDoubt)];
        let event = [seen(1, 20, created("w1-x", 5, 4)), seen(1, 21, mark(1))];
        let applied = HashSet::from(["w1-x".to_string()]);
        let none = HashMap::new();
        // Applied, and its event came.
        let r = EventLog::default().check(&ops, &applied, &none, &event);
        assert_eq!((r.violations.len(), r.counts.matched), (0, 1));
        // Applied, and no event: a violation.
        let r = EventLog::default().check(&ops, &applied, &none, &event[1..]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        // Not applied: no event is right, an event is not.
        let r = EventLog::default().check(&ops, &HashSet::new(), &none, &event[1..]);
        assert_eq!(r.violations, Vec::<String>::new());
        let r = EventLog::default().check(&ops, &HashSet::new(), &none, &event);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("does not show"));
    }

    #[test]
    fn a_create_event_carries_its_id_and_the_seq_its_after_action_saw() {
        let mut came = all_came();
        came[0].change = created("w0-a", 7, 1);
        let r = check(&cycle(), &came);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("has id 7"));
        let seqs = HashMap::from([("w0-a".to_string(), 11)]);
        let r = EventLog::default().check(&cycle(), &HashSet::new(), &seqs, &all_came());
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("ran for seq 11"));
    }

    #[test]
    fn reads_the_frames() {
        let row = |key: &str, id: i64, ver: i64| {
            let mut map = stored_fields(key, ver);
            map.insert("id".into(), json!(id));
            Value::Object(map)
        };
        let frame = |name: &str, channel: &str, data: Value, seq: u64| {
            format!(
                "42{}",
                json!([name, { "channel": channel, "data": data, "seq": seq }])
            )
        };
        let f = frame("db_updated", ROWS_CHANNEL, row("w0-a", 3, 2), 42);
        assert_eq!(
            parse_db_event(&f),
            Some(Ok((42, updated("w0-a", 3, 2), None)))
        );
        let f = frame("db_deleted", ROWS_CHANNEL, json!(3), 43);
        assert_eq!(
            parse_db_event(&f),
            Some(Ok((43, Change::Deleted { id: 3 }, None)))
        );
        let f = frame("db_created", MARKS_CHANNEL, json!({"key": "mark-1"}), 44);
        assert_eq!(parse_db_event(&f), Some(Ok((44, mark(1), None))));
        // A row mixing two versions is reported.
        let mut torn = row("w0-a", 3, 2);
        torn["label"] = json!("w0-a/v3");
        let f = frame("db_created", ROWS_CHANNEL, torn, 45);
        let Some(Ok((45, _, Some(problem)))) = parse_db_event(&f) else {
            panic!("{:?}", parse_db_event(&f));
        };
        assert!(problem.contains("field `label`"), "{problem}");
        assert_eq!(parse_db_event(r#"42["faultCreated",{"key":"x"}]"#), None);
        assert!(matches!(
            parse_db_event(r#"42["db_created",{}]"#),
            Some(Err(_))
        ));

        assert_eq!(
            parse_recovered(r#"42["recovered",{"recovered":true,"seq":9,"replayed":0}]"#),
            Some(true)
        );
        assert_eq!(
            parse_recovered(r#"42["recovered",{"recovered":false,"seq":9}]"#),
            Some(false)
        );
        assert_eq!(
            parse_ack(r#"431[{"ok":true,"recovered":true,"seq":12}]"#),
            Some((1, json!({"ok": true, "recovered": true, "seq": 12})))
        );
        assert_eq!(parse_ack("2"), None);
    }
}
