//! What the fault driver expects the database to hold, and the check of what a
//! restarted server shows against it. Pure: no I/O, so the rules are unit-tested.
//!
//! Every field of a `fault_rows` row follows from `(key, ver)`, so one look at a row
//! says whether it was written as one piece. Each key belongs to one writer, whose
//! requests are sequential: per key, every write is answered (acknowledged or refused)
//! except at most the last one, which the kill may leave in doubt. What a restart may
//! show for a key is therefore the state after its answered writes, or — for an
//! in-doubt write — that state or the state after that write; nothing else.
//!
//! The companion `fault_ledger` row is written by an *after* action, which runs after
//! the row's commit, as its own write, and before the client is answered. After actions
//! are owed until they ran: the write's event is logged as owing them in the write's
//! transaction, so when a kill falls between the two commits the next start (or, with
//! several nodes, a surviving node once the killed one's heartbeat is stale) runs them.
//! They run at least once, and the fault app's are idempotent (`parameters.seq`). So once
//! the owed ones have run (`paired`): every committed row has exactly one ledger row,
//! matching it, and no ledger row outlives its row. A row without its ledger row, a
//! ledger row after a committed delete, or a second ledger row for one key is a
//! violation. Ledger rows written after the kill (`at`) are the after actions recovered.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

/// `fault_rows` fields as the client sends them on create: all follow from (key, ver).
pub fn sent_fields(key: &str, ver: i64) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("key".into(), json!(key));
    for (name, value) in update_fields(key, ver) {
        map.insert(name, value);
    }
    map
}

/// The fields an update sends (everything but the key).
pub fn update_fields(key: &str, ver: i64) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("ver".into(), json!(ver));
    map.insert("label".into(), json!(format!("{key}/v{ver}")));
    // Quarter steps are exact in binary floating point on both databases.
    map.insert("amount".into(), json!(ver as f64 * 0.25));
    map.insert("flag".into(), json!(ver % 2 == 0));
    map.insert(
        "doc".into(),
        json!({ "key": key, "ver": ver, "parts": [ver, ver + 1, ver + 2] }),
    );
    map.insert("note".into(), json!(note(key, ver)));
    map
}

/// The row as stored: what was sent plus the `check` stamp the before actions add.
pub fn stored_fields(key: &str, ver: i64) -> Map<String, Value> {
    let mut map = sent_fields(key, ver);
    map.insert("check".into(), json!(format!("{key}#{ver}")));
    map
}

/// A text of 40 to ~1,240 bytes that changes with every version, so writes differ in
/// size and a row mixing two versions shows in its longest field too.
fn note(key: &str, ver: i64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(ver.to_le_bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let unit = format!("{key}:{ver};");
    let len = 40 + (hash % 1200) as usize;
    unit.repeat(len / unit.len() + 1)[..len].to_string()
}

/// The writer that owns `key` (`w<index>-…`).
pub fn writer_of(key: &str) -> Option<usize> {
    key.strip_prefix('w')?.split('-').next()?.parse().ok()
}

/// Whether every `fault_rows` row has exactly one ledger row naming it and every ledger
/// row's key has a row: what the database holds once every owed after action ran. The
/// driver reads until this holds (or a bound passes), then checks.
pub fn paired(rows: &[Value], ledger: &[Value]) -> bool {
    let field = |v: &Value, name: &str| v.get(name).cloned().unwrap_or(Value::Null);
    let mut ids: HashMap<String, i64> = HashMap::new();
    for row in rows {
        let (Value::String(key), Some(id)) = (field(row, "key"), field(row, "id").as_i64()) else {
            return false;
        };
        ids.insert(key, id);
    }
    let mut named: HashMap<String, Vec<i64>> = HashMap::new();
    for l in ledger {
        let (Value::String(key), Some(row_id)) = (field(l, "key"), field(l, "rowId").as_i64())
        else {
            return false;
        };
        named.entry(key).or_default().push(row_id);
    }
    named.len() == ids.len()
        && ids
            .iter()
            .all(|(key, id)| named.get(key).is_some_and(|n| n[..] == [*id]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub ver: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    pub row_id: i64,
    pub ver: i64,
}

/// What one key must look like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expect {
    pub row: Option<Row>,
    pub ledger: Option<Ledger>,
}

/// Why a create must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The before action throws for labels starting `refuse:`.
    Action,
    /// A field the schema does not have.
    UnknownField,
    /// `ver` as a string.
    WrongType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        ver: i64,
    },
    Update {
        id: i64,
        from: i64,
        to: i64,
    },
    Delete {
        id: i64,
        ver: i64,
    },
    /// A create reusing the key of a live row: `key` is unique, so it must fail.
    Duplicate {
        ver: i64,
    },
    /// A create the server must refuse before writing anything.
    Refused(Refusal),
}

impl Op {
    /// Whether the server must refuse this write (never acknowledge it).
    pub fn must_fail(&self) -> bool {
        matches!(self, Op::Duplicate { .. } | Op::Refused(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with a body; for a create, the id it answered.
    Acked { id: Option<i64> },
    /// Answered with this non-2xx status.
    Refused { status: u16 },
    /// Sent, and no answer came (the kill).
    InDoubt,
}

/// One request a writer sent and what became of it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
}

/// How the in-doubt writes of a cycle turned out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Doubts {
    pub total: usize,
    /// The write is visible after the restart.
    pub applied: usize,
    /// It is not.
    pub not_applied: usize,
}

#[derive(Debug, Default, Clone)]
pub struct CycleReport {
    pub acked_creates: usize,
    pub acked_updates: usize,
    pub acked_deletes: usize,
    /// Writes the server had to refuse and did.
    pub refused_as_expected: usize,
    /// Legitimate writes refused (not a crash-safety violation; printed).
    pub unexpected_refusals: Vec<String>,
    pub doubts: Doubts,
    /// Rows and ledger rows read back and checked field by field.
    pub rows_checked: usize,
    pub ledger_checked: usize,
    /// Ledger rows written after the kill (their `at` is later than the check's `since`):
    /// `afterCreate` runs a killed process owed, run by the next start or another node.
    pub recovered: usize,
    /// Keys whose in-doubt write the database shows applied: its event must have come.
    pub applied_doubts: HashSet<String>,
    /// The `seq` of each key's ledger row: the log number of the create its
    /// `afterCreate` ran for, which the create's `db_created` event must carry.
    pub create_seqs: HashMap<String, i64>,
    pub violations: Vec<String>,
}

impl CycleReport {
    pub fn acked(&self) -> usize {
        self.acked_creates + self.acked_updates + self.acked_deletes
    }
}

/// The expected state of every key ever sent.
#[derive(Debug, Default)]
pub struct Model {
    keys: BTreeMap<String, Expect>,
    /// Keys already reported with two ledger rows (reported once, not every cycle).
    doubled: HashSet<String>,
    /// The `seq` of every ledger row ever read, and whether it was written after the kill
    /// before the check that first read it.
    ledger_seqs: HashMap<i64, bool>,
}

/// The owed events the server ran (`classify_owed`), by what became of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OwedRuns {
    /// `afterCreate` that had not written before the kill: its ledger row was written
    /// after it.
    pub recovered: usize,
    /// `afterCreate` run again after it had written before the kill: still one row.
    pub rerun: usize,
    /// Events without a ledger row of their own: `afterDelete`.
    pub other: usize,
}

impl Model {
    /// Live rows of `writer`, for its updates and deletes.
    pub fn live_rows(&self, writer: usize) -> Vec<(String, Row)> {
        self.keys
            .iter()
            .filter(|(k, _)| writer_of(k) == Some(writer))
            .filter_map(|(k, e)| e.row.map(|r| (k.clone(), r)))
            .collect()
    }

    pub fn live_count(&self) -> usize {
        self.keys.values().filter(|e| e.row.is_some()).count()
    }

    /// Applies a cycle's writes and checks the rows read back after the restart, once
    /// owed after actions ran (`rows` and `ledger` as `GET /1/objects/…` answers them).
    /// The model then holds what was seen, so a later cycle checks it again.
    #[cfg(test)]
    pub fn check(&mut self, sent: &[Sent], rows: &[Value], ledger: &[Value]) -> CycleReport {
        self.check_since(sent, rows, ledger, None)
    }

    /// `check`, also counting the ledger rows written after `since` (milliseconds since
    /// the Unix epoch: when the killed process was gone and every other write answered)
    /// as recovered after actions.
    pub fn check_since(
        &mut self,
        sent: &[Sent],
        rows: &[Value],
        ledger: &[Value],
        since: Option<i64>,
    ) -> CycleReport {
        let mut report = CycleReport::default();
        let mut doubts: HashMap<String, Op> = HashMap::new();
        // Keys whose last write was answered with a refusal, for the violation text.
        let mut refused: HashMap<&str, u16> = HashMap::new();
        for s in sent {
            self.apply(s, &mut report, &mut doubts);
            match s.outcome {
                Outcome::Refused { status } => refused.insert(&s.key, status),
                _ => refused.remove(s.key.as_str()),
            };
        }
        let seen_rows = index_rows(rows, &mut report);
        let seen_ledger = self.index_ledger(ledger, since, &mut report);
        for key in seen_rows.keys().chain(seen_ledger.keys()) {
            if !self.keys.contains_key(key) {
                report
                    .violations
                    .push(format!("`{key}` is in the database but was never sent"));
            }
        }
        for (key, expect) in self.keys.iter_mut() {
            let seen = Expect {
                row: seen_rows.get(key).copied(),
                ledger: seen_ledger.get(key).copied(),
            };
            match resolve(*expect, doubts.get(key), seen) {
                Ok(resolution) if doubts.contains_key(key) => {
                    report.doubts.total += 1;
                    match resolution {
                        Resolution::Applied => {
                            report.doubts.applied += 1;
                            report.applied_doubts.insert(key.clone());
                        }
                        Resolution::NotApplied => report.doubts.not_applied += 1,
                    }
                }
                Ok(_) => {}
                Err(why) => {
                    let answer = match refused.get(key.as_str()) {
                        Some(status) => format!(" (its last write was answered {status})"),
                        None => String::new(),
                    };
                    report.violations.push(format!("`{key}`: {why}{answer}"));
                }
            }
            *expect = seen;
        }
        report
    }

    /// `fault_ledger` by key. A second ledger row for a key (an after action that wrote
    /// twice) is a violation, reported once per key; the first one (lowest id) counts.
    /// Rows written after `since` are counted as recovered.
    fn index_ledger(
        &mut self,
        rows: &[Value],
        since: Option<i64>,
        report: &mut CycleReport,
    ) -> HashMap<String, Ledger> {
        let mut out = HashMap::new();
        let mut seqs: HashMap<String, Vec<Option<i64>>> = HashMap::new();
        for row in rows {
            report.ledger_checked += 1;
            let (Some(key), Some(row_id), Some(ver)) = (
                row.get("key").and_then(Value::as_str),
                row.get("rowId").and_then(Value::as_i64),
                row.get("ver").and_then(Value::as_i64),
            ) else {
                report
                    .violations
                    .push(format!("a ledger row without key, rowId or ver: {row}"));
                continue;
            };
            let at = row.get("at").and_then(Value::as_i64);
            let late = matches!((since, at), (Some(since), Some(at)) if at > since);
            report.recovered += usize::from(late);
            let seq = row.get("seq").and_then(Value::as_i64);
            if let Some(seq) = seq {
                self.ledger_seqs.entry(seq).or_insert(late);
            }
            seqs.entry(key.to_string()).or_default().push(seq);
            if let Some(seq) = seq {
                report.create_seqs.entry(key.to_string()).or_insert(seq);
            }
            out.entry(key.to_string()).or_insert(Ledger { row_id, ver });
        }
        let mut doubled: Vec<(String, Vec<Option<i64>>)> =
            seqs.into_iter().filter(|(_, s)| s.len() > 1).collect();
        doubled.sort();
        for (key, seqs) in doubled {
            if self.doubled.insert(key.clone()) {
                report.violations.push(format!(
                    "`{key}` has {} ledger rows (seq {seqs:?}): an after action ran again and \
                     wrote again",
                    seqs.len()
                ));
            }
        }
        out
    }

    /// The owed events a server ran (`seqs`, from its log), by the ledger rows read so
    /// far: a create's ledger row first read with a write time after the kill is a
    /// recovered after action; one written before it, a re-run; no ledger row, a delete's.
    pub fn classify_owed(&self, seqs: &[i64]) -> OwedRuns {
        let mut runs = OwedRuns::default();
        for seq in seqs {
            match self.ledger_seqs.get(seq) {
                Some(true) => runs.recovered += 1,
                Some(false) => runs.rerun += 1,
                None => runs.other += 1,
            }
        }
        runs
    }

    /// One answered (or unanswered) write: moves the expectation on, or notes the doubt.
    fn apply(&mut self, s: &Sent, report: &mut CycleReport, doubts: &mut HashMap<String, Op>) {
        let expect = self.keys.entry(s.key.clone()).or_default();
        if doubts.contains_key(&s.key) {
            report.violations.push(format!(
                "driver bug: `{}` has a write after an in-doubt one",
                s.key
            ));
        }
        match (&s.outcome, &s.op) {
            (Outcome::InDoubt, op) => {
                doubts.insert(s.key.clone(), op.clone());
            }
            (Outcome::Acked { .. }, op) if op.must_fail() => report.violations.push(format!(
                "`{}`: {op:?} must be refused but was acknowledged",
                s.key
            )),
            (Outcome::Acked { id }, Op::Create { ver }) => match id {
                Some(id) => {
                    report.acked_creates += 1;
                    expect.row = Some(Row { id: *id, ver: *ver });
                    expect.ledger = Some(Ledger {
                        row_id: *id,
                        ver: *ver,
                    });
                }
                None => report
                    .violations
                    .push(format!("`{}`: create acknowledged without an id", s.key)),
            },
            (Outcome::Acked { .. }, Op::Update { id, to, .. }) => {
                report.acked_updates += 1;
                expect.row = Some(Row { id: *id, ver: *to });
            }
            (Outcome::Acked { .. }, Op::Delete { .. }) => {
                report.acked_deletes += 1;
                expect.row = None;
                expect.ledger = None;
            }
            (Outcome::Acked { .. }, _) => unreachable!("must_fail ops handled above"),
            (Outcome::Refused { .. }, op) if op.must_fail() => report.refused_as_expected += 1,
            (Outcome::Refused { status }, op) => report
                .unexpected_refusals
                .push(format!("`{}`: {op:?} answered {status}", s.key)),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Resolution {
    Applied,
    NotApplied,
}

/// Whether `seen` is a state the key may be in after its answered writes (`before`)
/// and its in-doubt write, if any.
fn resolve(before: Expect, doubt: Option<&Op>, seen: Expect) -> Result<Resolution, String> {
    let unchanged = |what: &str| -> Result<Resolution, String> {
        if seen == before {
            Ok(Resolution::NotApplied)
        } else {
            Err(format!("{what}: expected {before:?}, found {seen:?}"))
        }
    };
    match doubt {
        None => unchanged("no write in doubt"),
        Some(op) if op.must_fail() => unchanged(&format!("in-doubt {op:?} must change nothing")),
        Some(Op::Create { ver }) => match (seen.row, seen.ledger) {
            _ if before.row.is_some() => Err(format!(
                "driver bug: create of a live key (expected {before:?})"
            )),
            (None, None) => Ok(Resolution::NotApplied),
            (None, Some(l)) => Err(format!(
                "ledger row {l:?} without its row: the after action ran for a create that \
                 did not commit"
            )),
            (Some(r), _) if r.ver != *ver => Err(format!(
                "in-doubt create of version {ver} shows version {}",
                r.ver
            )),
            (Some(r), None) => Err(format!(
                "in-doubt create committed as {r:?} but has no ledger row: its owed \
                 afterCreate never ran"
            )),
            (Some(r), Some(l))
                if l == (Ledger {
                    row_id: r.id,
                    ver: *ver,
                }) =>
            {
                Ok(Resolution::Applied)
            }
            (Some(r), Some(l)) => Err(format!("ledger row {l:?} does not match row {r:?}")),
        },
        Some(Op::Update { id, from, to }) => {
            if seen.ledger != before.ledger {
                return Err(format!(
                    "an update changed the ledger: expected {:?}, found {:?}",
                    before.ledger, seen.ledger
                ));
            }
            match seen.row {
                Some(r)
                    if r == (Row {
                        id: *id,
                        ver: *from,
                    }) =>
                {
                    Ok(Resolution::NotApplied)
                }
                Some(r) if r == (Row { id: *id, ver: *to }) => Ok(Resolution::Applied),
                other => Err(format!(
                    "in-doubt update {from}→{to} of id {id}: found {other:?}"
                )),
            }
        }
        Some(Op::Delete { id, ver }) => match seen.row {
            Some(r) if r == (Row { id: *id, ver: *ver }) && seen.ledger == before.ledger => {
                Ok(Resolution::NotApplied)
            }
            None if seen.ledger.is_none() => Ok(Resolution::Applied),
            None => Err(format!(
                "in-doubt delete of id {id} committed but the ledger row {:?} is still there: \
                 its owed afterDelete never ran",
                seen.ledger
            )),
            _ => Err(format!(
                "in-doubt delete of id {id}: expected {before:?} or nothing, found {seen:?}"
            )),
        },
        Some(Op::Duplicate { .. } | Op::Refused(_)) => unreachable!("must_fail handled above"),
    }
}

/// `fault_rows` by key, each checked whole: every field must be what `(key, ver)` gives.
fn index_rows(rows: &[Value], report: &mut CycleReport) -> HashMap<String, Row> {
    let mut out = HashMap::new();
    for row in rows {
        report.rows_checked += 1;
        let (Some(id), Some(key), Some(ver)) = (
            row.get("id").and_then(Value::as_i64),
            row.get("key").and_then(Value::as_str),
            row.get("ver").and_then(Value::as_i64),
        ) else {
            report
                .violations
                .push(format!("a row without id, key or ver: {row}"));
            continue;
        };
        for (name, want) in stored_fields(key, ver) {
            let got = row.get(&name).unwrap_or(&Value::Null);
            if !same(got, &want) {
                report.violations.push(format!(
                    "row `{key}` (id {id}, ver {ver}) is not one write: field `{name}` is {}, \
                     expected {}",
                    short(got),
                    short(&want)
                ));
            }
        }
        if out.insert(key.to_string(), Row { id, ver }).is_some() {
            report
                .violations
                .push(format!("two rows with the unique key `{key}`"));
        }
    }
    out
}

/// JSON equality, with numbers compared by value (`1` and `1.0` are the same float).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 80 {
        let head: String = text.chars().take(77).collect();
        format!("{head}… ({} bytes)", text.len())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_json(key: &str, id: i64, ver: i64) -> Value {
        let mut map = stored_fields(key, ver);
        map.insert("id".into(), json!(id));
        Value::Object(map)
    }

    fn ledger_json(key: &str, row_id: i64, ver: i64) -> Value {
        ledger_at(key, row_id, ver, 1_000)
    }

    /// A ledger row written at `at` (ms), for the event numbered `row_id + 100`.
    fn ledger_at(key: &str, row_id: i64, ver: i64, at: i64) -> Value {
        json!({ "id": row_id + 1000, "key": key, "rowId": row_id, "ver": ver,
                "seq": row_id + 100, "at": at })
    }

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

    #[test]
    fn acknowledged_writes_must_all_be_there() {
        let mut model = Model::default();
        let ops = [
            sent("w0-a", Op::Create { ver: 1 }, acked(Some(1))),
            sent("w0-b", Op::Create { ver: 3 }, acked(Some(2))),
            sent(
                "w0-a",
                Op::Update {
                    id: 1,
                    from: 1,
                    to: 2,
                },
                acked(None),
            ),
            sent("w0-b", Op::Delete { id: 2, ver: 3 }, acked(None)),
            sent(
                "w0-b",
                Op::Duplicate { ver: 9 },
                Outcome::Refused { status: 409 },
            ),
        ];
        let r = model.check(
            &ops,
            &[row_json("w0-a", 1, 2)],
            &[ledger_json("w0-a", 1, 1)],
        );
        assert_eq!(r.violations, Vec::<String>::new());
        assert_eq!((r.acked(), r.refused_as_expected), (4, 1));

        // The same writes, but the restart lost the update: a violation.
        let mut model = Model::default();
        let r = model.check(
            &ops,
            &[row_json("w0-a", 1, 1)],
            &[ledger_json("w0-a", 1, 1)],
        );
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }

    #[test]
    fn a_row_mixing_two_versions_is_a_half_write() {
        let mut model = Model::default();
        let ops = [sent("w1-a", Op::Create { ver: 4 }, acked(Some(7)))];
        let mut torn = row_json("w1-a", 7, 4);
        torn["note"] = json!(note("w1-a", 5));
        let r = model.check(&ops, &[torn], &[ledger_json("w1-a", 7, 4)]);
        assert_eq!(r.violations.len(), 1);
        assert!(
            r.violations[0].contains("field `note`"),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn in_doubt_writes_may_go_either_way_but_not_elsewhere() {
        let create = || vec![sent("w0-x", Op::Create { ver: 2 }, Outcome::InDoubt)];
        // Not applied; applied whole (its after action included).
        for (rows, ledger, applied) in [
            (vec![], vec![], 0),
            (
                vec![row_json("w0-x", 5, 2)],
                vec![ledger_json("w0-x", 5, 2)],
                1,
            ),
        ] {
            let r = Model::default().check(&create(), &rows, &ledger);
            assert_eq!(r.violations, Vec::<String>::new());
            assert_eq!((r.doubts.total, r.doubts.applied), (1, applied));
        }
        // Applied without its after action: owed after actions run after a restart, so
        // once they have, a committed row without its ledger row is a violation.
        let r = Model::default().check(&create(), &[row_json("w0-x", 5, 2)], &[]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("afterCreate never ran"),
            "{:?}",
            r.violations
        );
        // A ledger row without its row cannot happen: the after action runs after commit.
        let r = Model::default().check(&create(), &[], &[ledger_json("w0-x", 5, 2)]);
        assert_eq!(r.violations.len(), 1);

        // An in-doubt update shows the old or the new version, nothing else.
        let mut model = Model::default();
        let first = [sent("w0-y", Op::Create { ver: 1 }, acked(Some(3)))];
        model.check(
            &first,
            &[row_json("w0-y", 3, 1)],
            &[ledger_json("w0-y", 3, 1)],
        );
        let update = [sent(
            "w0-y",
            Op::Update {
                id: 3,
                from: 1,
                to: 2,
            },
            Outcome::InDoubt,
        )];
        for (ver, ok) in [(1, true), (2, true), (3, false)] {
            let mut m = Model::default();
            m.check(
                &first,
                &[row_json("w0-y", 3, 1)],
                &[ledger_json("w0-y", 3, 1)],
            );
            let r = m.check(
                &update,
                &[row_json("w0-y", 3, ver)],
                &[ledger_json("w0-y", 3, 1)],
            );
            assert_eq!(r.violations.is_empty(), ok, "ver {ver}: {:?}", r.violations);
        }
        // An in-doubt duplicate must change nothing; a row never sent is a violation.
        let dup = [sent("w0-y", Op::Duplicate { ver: 9 }, Outcome::InDoubt)];
        let r = model.check(
            &dup,
            &[row_json("w0-y", 3, 1)],
            &[ledger_json("w0-y", 3, 1)],
        );
        assert_eq!(r.violations, Vec::<String>::new());
        let r = model.check(
            &[],
            &[row_json("w0-y", 3, 1), row_json("w9-ghost", 4, 1)],
            &[ledger_json("w0-y", 3, 1)],
        );
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }

    #[test]
    fn a_refused_write_must_leave_nothing() {
        let ops = [sent(
            "w2-r",
            Op::Refused(Refusal::Action),
            Outcome::Refused { status: 422 },
        )];
        let r = Model::default().check(&ops, &[], &[]);
        assert_eq!((r.violations.len(), r.refused_as_expected), (0, 1));
        let r = Model::default().check(&ops, &[row_json("w2-r", 1, 1)], &[]);
        assert_eq!(r.violations.len(), 1);

        // A legitimate create answered 500 that committed anyway: the client was told
        // it failed, so it will retry and duplicate it.
        let ops = [sent(
            "w2-s",
            Op::Create { ver: 1 },
            Outcome::Refused { status: 500 },
        )];
        let r = Model::default().check(
            &ops,
            &[row_json("w2-s", 4, 1)],
            &[ledger_json("w2-s", 4, 1)],
        );
        assert_eq!(r.unexpected_refusals.len(), 1);
        assert_eq!(r.violations.len(), 1);
        assert!(
            r.violations[0].contains("answered 500"),
            "{:?}",
            r.violations
        );
    }

    /// A model holding `w0-d` (id 8, version 1) with its ledger row.
    fn with_live_row() -> Model {
        let mut model = Model::default();
        let r = model.check(
            &[sent("w0-d", Op::Create { ver: 1 }, acked(Some(8)))],
            &[row_json("w0-d", 8, 1)],
            &[ledger_json("w0-d", 8, 1)],
        );
        assert_eq!(r.violations, Vec::<String>::new());
        model
    }

    #[test]
    fn every_committed_write_has_had_its_after_action() {
        // An acknowledged create whose ledger row is missing.
        let ops = [sent("w0-a", Op::Create { ver: 1 }, acked(Some(1)))];
        let r = Model::default().check(&ops, &[row_json("w0-a", 1, 1)], &[]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);

        // An acknowledged delete whose ledger row is still there.
        let delete = |outcome| [sent("w0-d", Op::Delete { id: 8, ver: 1 }, outcome)];
        let r = with_live_row().check(&delete(acked(None)), &[], &[ledger_json("w0-d", 8, 1)]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        let r = with_live_row().check(&delete(acked(None)), &[], &[]);
        assert_eq!(r.violations, Vec::<String>::new());

        // An in-doubt delete: not applied (row and ledger kept) or applied whole; applied
        // with the ledger row left behind is its afterDelete never run.
        let r = with_live_row().check(
            &delete(Outcome::InDoubt),
            &[row_json("w0-d", 8, 1)],
            &[ledger_json("w0-d", 8, 1)],
        );
        assert_eq!(r.violations, Vec::<String>::new());
        assert_eq!((r.doubts.total, r.doubts.not_applied), (1, 1));
        let r = with_live_row().check(&delete(Outcome::InDoubt), &[], &[]);
        assert_eq!(r.violations, Vec::<String>::new());
        assert_eq!((r.doubts.total, r.doubts.applied), (1, 1));
        let r = with_live_row().check(&delete(Outcome::InDoubt), &[], &[ledger_json("w0-d", 8, 1)]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("afterDelete never ran"),
            "{:?}",
            r.violations
        );
        // Not applied, but the ledger row gone: the after action ran for nothing.
        let r = with_live_row().check(&delete(Outcome::InDoubt), &[row_json("w0-d", 8, 1)], &[]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }

    #[test]
    fn an_after_action_that_wrote_twice_is_a_violation_once() {
        let mut model = Model::default();
        let ops = [sent("w0-a", Op::Create { ver: 1 }, acked(Some(1)))];
        let mut twice = ledger_json("w0-a", 1, 1);
        twice["id"] = json!(2001);
        twice["seq"] = json!(999);
        let rows = [row_json("w0-a", 1, 1)];
        let ledger = [ledger_json("w0-a", 1, 1), twice];
        let r = model.check(&ops, &rows, &ledger);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("2 ledger rows"),
            "{:?}",
            r.violations
        );
        // Still there the next cycle: not counted again.
        let r = model.check(&[], &rows, &ledger);
        assert_eq!(r.violations, Vec::<String>::new());
    }

    #[test]
    fn ledger_rows_written_after_the_kill_are_recovered_after_actions() {
        let ops = [
            sent("w0-a", Op::Create { ver: 1 }, acked(Some(1))),
            sent("w1-b", Op::Create { ver: 2 }, Outcome::InDoubt),
        ];
        let rows = [row_json("w0-a", 1, 1), row_json("w1-b", 2, 2)];
        let ledger = [
            ledger_at("w0-a", 1, 1, 5_000),
            ledger_at("w1-b", 2, 2, 9_000),
        ];
        let r = Model::default().check_since(&ops, &rows, &ledger, Some(6_000));
        assert_eq!(r.violations, Vec::<String>::new());
        assert_eq!((r.recovered, r.doubts.applied), (1, 1));
        // What the realtime check takes from it: the in-doubt write shown applied, and
        // the seq each create's after action saw.
        assert_eq!(r.applied_doubts, HashSet::from(["w1-b".to_string()]));
        assert_eq!(
            r.create_seqs,
            HashMap::from([("w0-a".to_string(), 101), ("w1-b".to_string(), 102)])
        );
        let r = Model::default().check_since(&ops, &rows, &ledger, Some(9_000));
        assert_eq!(r.recovered, 0);
        let r = Model::default().check(&ops, &rows, &ledger);
        assert_eq!(r.recovered, 0);

        // The server ran the owed events 102 (w1-b's create, written after the kill),
        // 101 (w0-a's, written before it: a re-run) and 150 (no ledger row: a delete).
        let mut model = Model::default();
        model.check_since(&ops, &rows, &ledger, Some(6_000));
        assert_eq!(
            model.classify_owed(&[102, 101, 150]),
            OwedRuns {
                recovered: 1,
                rerun: 1,
                other: 1
            }
        );
    }

    #[test]
    fn paired_means_every_row_has_exactly_its_ledger_row() {
        let rows = [row_json("w0-a", 1, 1), row_json("w0-b", 2, 3)];
        let both = [ledger_json("w0-a", 1, 1), ledger_json("w0-b", 2, 3)];
        assert!(paired(&rows, &both));
        assert!(paired(&[], &[]));
        // A row still waiting for its afterCreate.
        assert!(!paired(&rows, &both[..1]));
        // A ledger row still waiting for its afterDelete.
        assert!(!paired(&rows[..1], &both));
        // A ledger row naming another id, and a key with two ledger rows.
        assert!(!paired(&rows[..1], &[ledger_json("w0-a", 9, 1)]));
        assert!(!paired(
            &rows[..1],
            &[ledger_json("w0-a", 1, 1), ledger_json("w0-a", 1, 1)]
        ));
    }

    #[test]
    fn keys_name_their_writer() {
        assert_eq!(writer_of("w12-c3-7"), Some(12));
        assert_eq!(writer_of("x"), None);
    }
}
