//! The `reads` scenario: REST reads against livebase, the peer and the floor (which runs
//! livebase's own SQL on SQLite through sqlx, `bin/floor/records.rs`). Per target, a
//! fresh server seeded over `POST /1/bulk` with the same rows: `open` (no row security)
//! written by one user, `owned` (owner row security) spread over many users. Then, each
//! for a fixed time in a closed loop, every connection as one user: one `owned` row by
//! id (one of the caller's), a page of 20 `open` rows, a page of 20 of the caller's
//! `owned` rows, and a page of 20 `open` rows filtered by one equality on an unindexed
//! field.
//!
//! Every answer is checked against what was seeded (status, `totalRows`, the ids and
//! fields of every row, in order); a wrong answer counts as an error, and a row of
//! another user in an owner-secured answer also as a leak. The timed by-id reads ask
//! only for the caller's rows; once before them, another user's row must read as
//! missing (404), else that too is a leak in the by-id row.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clients::{self, CheckAnswer, MakeRequest, Window, pct};
use crate::http::{self, Conn, Response};
use crate::scenarios::{Headlines, Plan};
use crate::stats::{Table, mib, ms};
use crate::target::{self, Kind, Paths, Target};

/// Rows per page of every list read.
const PAGE: usize = 20;
/// Distinct values of `open.tag`: row `i` (from 0) has tag `t{i % TAGS}`.
const TAGS: usize = 10;
/// `open` rows per bulk (livebase's most), and `owned` rows per user per bulk: users
/// write in turn, so each user's rows are spread over the table.
const OPEN_BULK: usize = 1000;
const OWNED_BULK: usize = 10;
/// Bytes of each row's `body`.
const BODY: usize = 100;

/// What was seeded into one target, and as whom.
struct Seeded {
    tokens: Vec<String>,
    /// `open` row ids by position: row `i` has `seq` `i + 1` and tag `t{i % TAGS}`.
    open: Vec<u64>,
    /// Each user's `owned` row ids, ascending.
    owned: Vec<Vec<u64>>,
}

/// One read of the scenario.
#[derive(Clone, Copy, PartialEq)]
enum Read {
    ById,
    OpenPage,
    OwnedPage,
    Filtered,
}

impl Read {
    const ALL: [Read; 4] = [Read::ById, Read::OpenPage, Read::OwnedPage, Read::Filtered];

    fn label(self) -> &'static str {
        match self {
            Read::ById => "one `owned` row by id (caller's)",
            Read::OpenPage => "`open` page of 20 (no row security)",
            Read::OwnedPage => "`owned` page of 20 (owner row security)",
            Read::Filtered => "`open` page of 20, filter tag equals (unindexed)",
        }
    }
}

pub async fn run(
    paths: &Paths,
    plan: &Plan,
    kinds: &[Kind],
    heads: &mut Headlines,
) -> Result<Table> {
    let (rows, users) = (plan.reads_rows, plan.reads_users);
    ensure!(
        users >= 2 && rows >= users * PAGE && rows >= TAGS * PAGE,
        "reads: {rows} rows over {users} users: at least 2 users, and pages of {PAGE} for each"
    );
    let mut table = Table::new(
        &format!(
            "Reads (closed loop, {} connections; {rows} `open` rows, {rows} `owned` rows over {users} users)",
            plan.http_connections
        ),
        &[
            "target",
            "read",
            "requests/s",
            "errors",
            "leaks",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "server CPU",
            "peak RSS MiB",
            "loader CPU",
        ],
    );
    for &kind in kinds {
        let target = Target::start(kind, paths).await?;
        let seeded = seed(&target, rows, users)
            .await
            .with_context(|| format!("seeding {}", kind.name()))?;
        let seeded = Arc::new(seeded);
        // The timed by-id reads ask only for the caller's rows; once, another user's
        // row must read as missing.
        let foreign = foreign_by_id(&target, &seeded).await?;
        // The seeding's own aftermath (livebase's relay delivering its events) is over
        // before anything is measured.
        tokio::time::sleep(plan.settle).await;
        for read in Read::ALL {
            let leaks = Arc::new(AtomicU64::new(0));
            let make = request(read, &seeded);
            let check = checker(read, &seeded, &leaks);
            let warm = if plan.smoke {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(1)
            };
            let warmup = clients::closed_loop_checked(
                target.addr,
                plan.http_connections,
                warm,
                make.clone(),
                check.clone(),
            )
            .await?;
            let window = Window::open(&target);
            let run = clients::closed_loop_checked(
                target.addr,
                plan.http_connections,
                plan.step,
                make,
                check,
            )
            .await?;
            let usage = window.close(&target);
            let rps = run.ok as f64 / run.elapsed.as_secs_f64();
            let mut leaks = leaks.load(Ordering::Relaxed);
            // Wrong answers in the warm-up count too.
            let mut run = run;
            run.errors += warmup.errors;
            run.first_error = run.first_error.or(warmup.first_error);
            if read == Read::ById
                && let Some(why) = &foreign
            {
                leaks += 1;
                run.errors += 1;
                run.first_error = Some(why.clone());
            }
            // A read that answered wrongly has no figure to compare.
            if run.errors == 0 {
                heads.add(
                    &format!(
                        "reads/s, {} (target: ≥ 3× peer, ≥ 0.5× floor)",
                        read.label()
                    ),
                    kind,
                    rps,
                );
            }
            table.push(vec![
                kind.name().into(),
                read.label().into(),
                format!("{rps:.0}"),
                match &run.first_error {
                    Some(e) => format!(
                        "**{}** (first: {})",
                        run.errors,
                        e.chars().take(120).collect::<String>()
                    ),
                    None => run.errors.to_string(),
                },
                if leaks == 0 {
                    "0".into()
                } else {
                    format!("**{leaks}**")
                },
                ms(&run.latencies, 0.5),
                ms(&run.latencies, 0.99),
                ms(&run.latencies, 0.999),
                pct(usage.server),
                mib(target.rss().1),
                pct(usage.loader),
            ]);
        }
        target.stop().await?;
    }
    table.notes.push(format!(
        "Each target fresh, seeded over `POST /1/bulk`: {rows} `open` rows by one user ({OPEN_BULK} per bulk; \
         `seq` 1…{rows}, `tag` one of {TAGS} values in turn, a {BODY}-byte body) and {rows} `owned` rows, {} per user, \
         the users writing {OWNED_BULK} at a time in turn; then a {} s pause. Connection *c* reads as user *c* mod {users}; \
         by-id reads pick one of the caller's rows at random, filtered reads one of the {TAGS} tags (each matches {} rows). \
         Every answer checked: status 200, `totalRows`, {PAGE} rows with the seeded ids and fields in id order, `__metadata.id`; \
         a row of another user in an `owned` answer is also counted as a leak, as is anything but a 404 when, once before the timed reads, \
         user 0 asks for one of user 1's rows by id. The floor: livebase's statements on SQLite through \
         sqlx (same tables, indexes, pragmas, pools), no auth or permissions (`Bearer floor-<n>` is user *n*). \
         Warm-up {} per read, not timed (its errors and leaks are counted).",
        rows / users,
        plan.settle.as_secs_f64(),
        rows / TAGS,
        if plan.smoke { "0.2 s" } else { "1 s" },
    ));
    Ok(table)
}

/// Signs up `users` users and writes the rows as they would: `open` by user 0, `owned`
/// by each user in turn. Keeps the ids the bulks answered.
async fn seed(target: &Target, rows: usize, users: usize) -> Result<Seeded> {
    let tokens = clients::tokens(target, users).await?;
    let mut conn = Conn::open(target.addr, target::localhost()).await?;
    let mut open = Vec::with_capacity(rows);
    while open.len() < rows {
        let steps: Vec<Value> = (open.len()..rows.min(open.len() + OPEN_BULK))
            .map(|i| {
                let data = json!({
                    "seq": i + 1,
                    "tag": tag(i % TAGS),
                    "body": body(&format!("open {}", i + 1)),
                });
                json!({ "method": "POST", "url": "/1/objects/open", "data": data })
            })
            .collect();
        open.extend(clients::bulk(&mut conn, &tokens[0], &steps).await?);
    }
    let per_user = rows / users;
    let mut owned = vec![Vec::with_capacity(per_user); users];
    for start in (0..per_user).step_by(OWNED_BULK) {
        for (u, ids) in owned.iter_mut().enumerate() {
            let steps: Vec<Value> = (start..per_user.min(start + OWNED_BULK))
                .map(|k| {
                    let data = json!({ "seq": k + 1, "body": body(&owner_mark(u)) });
                    json!({ "method": "POST", "url": "/1/objects/owned", "data": data })
                })
                .collect();
            ids.extend(clients::bulk(&mut conn, &tokens[u], &steps).await?);
        }
    }
    for ids in &mut owned {
        ids.sort_unstable();
    }
    Ok(Seeded {
        tokens,
        open,
        owned,
    })
}

/// User 0 asks for one of user 1's `owned` rows by id: anything but a 404 is a leak
/// (what it was, else `None`).
async fn foreign_by_id(target: &Target, seeded: &Seeded) -> Result<Option<String>> {
    let mut conn = Conn::open(target.addr, target::localhost()).await?;
    let path = format!("/1/objects/owned/{}", seeded.owned[1][0]);
    let resp = conn
        .send(&http::request("GET", &path, Some(&seeded.tokens[0]), None))
        .await?;
    Ok((resp.status != 404).then(|| {
        let text: String = String::from_utf8_lossy(&resp.body)
            .chars()
            .take(100)
            .collect();
        format!(
            "leak: user 0 asking for user 1's row by id was answered {} {text}",
            resp.status
        )
    }))
}

fn tag(k: usize) -> String {
    format!("t{k}")
}

/// The start of every `owned` body: whose row it is.
fn owner_mark(user: usize) -> String {
    format!("u{user}:")
}

/// `head` padded with `x` to `BODY` bytes.
fn body(head: &str) -> String {
    let mut body = head.to_string();
    while body.len() < BODY {
        body.push('x');
    }
    body
}

/// Which user's row a body marks (`u<n>:…`).
fn marked_owner(body: &str) -> Option<usize> {
    body.strip_prefix('u')?.split(':').next()?.parse().ok()
}

/// Percent-encodes a query parameter's value (everything but RFC 3986's unreserved).
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// splitmix64: the "random" row or tag of request `n` of connection `c`, the same for
/// the request and its check.
fn pick(c: usize, n: u64, len: usize) -> usize {
    let mut z = ((c as u64) << 40 ^ n).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % len as u64) as usize
}

fn user_of(c: usize, seeded: &Seeded) -> usize {
    c % seeded.tokens.len()
}

fn request(read: Read, seeded: &Arc<Seeded>) -> MakeRequest {
    let s = seeded.clone();
    let get = |path: &str, token: &str| http::request("GET", path, Some(token), None);
    match read {
        Read::ById => Arc::new(move |c, n| {
            let user = user_of(c, &s);
            let ids = &s.owned[user];
            let path = format!("/1/objects/owned/{}", ids[pick(c, n, ids.len())]);
            get(&path, &s.tokens[user])
        }),
        Read::OpenPage | Read::OwnedPage => {
            let object = if read == Read::OpenPage {
                "open"
            } else {
                "owned"
            };
            let path = format!("/1/objects/{object}?pageSize={PAGE}");
            let by_user: Vec<Vec<u8>> = s.tokens.iter().map(|t| get(&path, t)).collect();
            Arc::new(move |c, _| by_user[user_of(c, &s)].clone())
        }
        Read::Filtered => {
            let by_tag: Vec<String> = (0..TAGS)
                .map(|k| {
                    let filter =
                        json!([{ "fieldName": "tag", "operator": "equals", "value": tag(k) }]);
                    format!(
                        "/1/objects/open?pageSize={PAGE}&filter={}",
                        encode_component(&filter.to_string())
                    )
                })
                .collect();
            Arc::new(move |c, n| get(&by_tag[pick(c, n, TAGS)], &s.tokens[user_of(c, &s)]))
        }
    }
}

#[derive(Deserialize)]
struct Metadata {
    id: String,
}

/// A row as the three targets answer it (only the fields checked).
#[derive(Deserialize)]
struct Row {
    id: u64,
    __metadata: Metadata,
    seq: i64,
    body: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    total_rows: u64,
    data: Vec<Row>,
}

fn parse<'a, T: Deserialize<'a>>(resp: &'a Response) -> Result<T, String> {
    if resp.status != 200 {
        let text: String = String::from_utf8_lossy(&resp.body)
            .chars()
            .take(100)
            .collect();
        return Err(format!("{} {text}", resp.status));
    }
    serde_json::from_slice(&resp.body).map_err(|e| {
        let text: String = String::from_utf8_lossy(&resp.body)
            .chars()
            .take(100)
            .collect();
        format!("unreadable answer ({e}): {text}")
    })
}

/// The row's id agrees with itself and with the one expected.
fn same_id(row: &Row, want: u64) -> Result<(), String> {
    if row.id != want || row.__metadata.id != want.to_string() {
        return Err(format!(
            "row id {} (__metadata.id {}) where {want} was due",
            row.id, row.__metadata.id
        ));
    }
    Ok(())
}

/// An `owned` row must be `user`'s; another's is a leak.
fn owned_by(row: &Row, user: usize, leaks: &AtomicU64) -> Result<(), String> {
    let owner = row.body.as_deref().and_then(marked_owner);
    if owner != Some(user) {
        leaks.fetch_add(1, Ordering::Relaxed);
        return Err(format!(
            "leak: user {user} was answered row {} of {owner:?}",
            row.id
        ));
    }
    Ok(())
}

/// A page must hold `total` rows in all and, in order, the rows `want` names (id, and
/// what `fields` says of each).
fn page_is(
    page: &Page,
    total: usize,
    want: &[u64],
    fields: impl Fn(usize, &Row) -> Result<(), String>,
) -> Result<(), String> {
    if page.total_rows != total as u64 || page.data.len() != want.len() {
        return Err(format!(
            "totalRows {} with {} rows where {total} with {} were due",
            page.total_rows,
            page.data.len(),
            want.len()
        ));
    }
    for (i, (row, id)) in page.data.iter().zip(want).enumerate() {
        same_id(row, *id)?;
        fields(i, row)?;
    }
    Ok(())
}

fn checker(read: Read, seeded: &Arc<Seeded>, leaks: &Arc<AtomicU64>) -> CheckAnswer {
    let (s, leaks) = (seeded.clone(), leaks.clone());
    match read {
        Read::ById => Arc::new(move |c, n, resp| {
            let user = user_of(c, &s);
            let ids = &s.owned[user];
            let row: Row = parse(resp)?;
            // An answer of another user's row is a leak even if it was not the one asked.
            owned_by(&row, user, &leaks)?;
            same_id(&row, ids[pick(c, n, ids.len())])
        }),
        Read::OpenPage => Arc::new(move |_, _, resp| {
            let page: Page = parse(resp)?;
            let want = &s.open[..PAGE.min(s.open.len())];
            page_is(&page, s.open.len(), want, |i, row| {
                if row.seq != i as i64 + 1 {
                    return Err(format!("row {} has seq {}", row.id, row.seq));
                }
                Ok(())
            })
        }),
        Read::OwnedPage => Arc::new(move |c, _, resp| {
            let user = user_of(c, &s);
            let ids = &s.owned[user];
            let page: Page = parse(resp)?;
            for row in &page.data {
                owned_by(row, user, &leaks)?;
            }
            page_is(&page, ids.len(), &ids[..PAGE.min(ids.len())], |_, _| Ok(()))
        }),
        Read::Filtered => Arc::new(move |c, n, resp| {
            let k = pick(c, n, TAGS);
            let want: Vec<u64> = s.open.iter().skip(k).step_by(TAGS).copied().collect();
            let page: Page = parse(resp)?;
            page_is(
                &page,
                want.len(),
                &want[..PAGE.min(want.len())],
                |i, row| {
                    let seq = (k + i * TAGS) as i64 + 1;
                    if row.tag.as_deref() != Some(tag(k).as_str()) || row.seq != seq {
                        return Err(format!(
                            "row {} has tag {:?} seq {} where {} seq {seq} was due",
                            row.id,
                            row.tag,
                            row.seq,
                            tag(k)
                        ));
                    }
                    Ok(())
                },
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_component("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(
            encode_component(r#"[{"v":"t 1"}]"#),
            "%5B%7B%22v%22%3A%22t%201%22%7D%5D"
        );
        assert_eq!(encode_component("é"), "%C3%A9");
    }

    #[test]
    fn owned_bodies_name_their_user() {
        let b = body(&owner_mark(42));
        assert_eq!(b.len(), BODY);
        assert_eq!(marked_owner(&b), Some(42));
        assert_eq!(marked_owner("u4"), Some(4));
        assert_eq!(marked_owner("open 1xxx"), None);
        assert_eq!(marked_owner(""), None);
    }

    #[test]
    fn picks_are_stable_and_spread() {
        assert_eq!(pick(3, 7, 100), pick(3, 7, 100));
        let mut seen = [0usize; 10];
        for n in 0..10_000 {
            seen[pick(1, n, 10)] += 1;
        }
        assert!(seen.iter().all(|&k| (800..1200).contains(&k)), "{seen:?}");
    }

    fn row(id: u64, seq: i64, body: &str) -> Row {
        Row {
            id,
            __metadata: Metadata { id: id.to_string() },
            seq,
            body: Some(body.into()),
            tag: None,
        }
    }

    #[test]
    fn pages_are_checked_row_by_row() {
        let page = Page {
            total_rows: 5,
            data: vec![row(3, 1, "u1:"), row(9, 2, "u1:")],
        };
        assert!(page_is(&page, 5, &[3, 9], |_, _| Ok(())).is_ok());
        assert!(page_is(&page, 6, &[3, 9], |_, _| Ok(())).is_err());
        assert!(page_is(&page, 5, &[3, 8], |_, _| Ok(())).is_err());
        assert!(page_is(&page, 5, &[3], |_, _| Ok(())).is_err());
        let leaks = AtomicU64::new(0);
        assert!(owned_by(&page.data[0], 1, &leaks).is_ok());
        assert!(owned_by(&page.data[0], 2, &leaks).is_err());
        assert!(owned_by(&row(1, 1, "u12:"), 1, &leaks).is_err());
        assert_eq!(leaks.load(Ordering::Relaxed), 2);
        let mut wrong_meta = row(3, 1, "u1:");
        wrong_meta.__metadata.id = "4".into();
        assert!(same_id(&wrong_meta, 3).is_err());
    }
}
