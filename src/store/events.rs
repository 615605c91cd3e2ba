//! The event log (an outbox): every committed change's event, written by the write path
//! in the same transaction as the change (`Tx::log_events`), so a change and its event
//! commit together or not at all.
//!
//! Sequence numbers come from one counter row (`lb_event_head`), bumped at the end of
//! the writing transaction. On PostgreSQL the row lock it takes is held until commit, so
//! a transaction that numbers its events after another's commits after it: sequence
//! order is commit order, with no gaps (a rolled-back transaction gives its numbers
//! back). SQLite's single writer gives the same order. Pruning old events never lowers
//! the counter, so a number is never given twice. A write's lone event (most writes)
//! takes one statement: on PostgreSQL the counter's update, the insert and the `NOTIFY`
//! together; on SQLite the insert numbers itself from the counter and a trigger moves it.
//!
//! The store keeps each event's body as the write path wrote it (JSON text); it never
//! reads it. Events whose after hooks have yet to run are marked `after_pending` with the
//! node that owes them, so another start can run what a killed node left undone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use super::{Dialect, Pools, Sql, Store, Tx};
use crate::schema::FieldType;
use crate::schema::value::SqlValue;

/// The verb of an entry that is no change but what a change's after hooks emitted; its
/// `row_id` is that change's number (0 for none), whose after hooks it marks done.
pub const EMITTED: &str = "emitted";

/// One event as the write path hands it to the log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub object: String,
    pub verb: &'static str,
    pub row_id: i64,
    pub owner: Option<i64>,
    pub body: String,
    /// After hooks still have to run for it.
    pub after_pending: bool,
}

/// One event as the log keeps it.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub seq: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub object: String,
    pub verb: String,
    pub row_id: i64,
    pub owner: Option<i64>,
    pub body: String,
    pub after_pending: bool,
    /// The node that owes its after hooks.
    pub node: String,
}

/// The statements that create the log's tables, for `migrate::create_internal_tables`.
pub(super) fn create_statements(dialect: Dialect) -> Vec<String> {
    let (int, flag) = match dialect {
        Dialect::Sqlite => ("INTEGER", "INTEGER"),
        Dialect::Postgres => ("BIGINT", "BOOLEAN"),
    };
    let mut statements = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS lb_events (seq {int} PRIMARY KEY, at {int} NOT NULL, \
             object TEXT NOT NULL, verb TEXT NOT NULL, row_id {int} NOT NULL, owner {int}, \
             body TEXT NOT NULL, after_pending {flag} NOT NULL, node TEXT NOT NULL)"
        ),
        // Only the few events whose after hooks are owed are indexed.
        format!(
            "CREATE INDEX IF NOT EXISTS lb_events_after_pending ON lb_events (seq) WHERE {}",
            pending_true(dialect)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS lb_event_head (id {int} PRIMARY KEY, seq {int} NOT NULL)"
        ),
        "INSERT INTO lb_event_head (id, seq) VALUES (1, 0) ON CONFLICT DO NOTHING".to_string(),
    ];
    // SQLite numbers a lone event in its insert (`lone_event`); the head follows. An
    // `emitted` entry settles the change its `row_id` names.
    if dialect == Dialect::Sqlite {
        statements.push(
            "CREATE TRIGGER IF NOT EXISTS lb_events_head AFTER INSERT ON lb_events \
             BEGIN UPDATE lb_event_head SET seq = NEW.seq WHERE id = 1 AND seq < NEW.seq; END"
                .to_string(),
        );
        statements.push(format!(
            "CREATE TRIGGER IF NOT EXISTS lb_events_settle AFTER INSERT ON lb_events \
             WHEN NEW.verb = '{EMITTED}' AND NEW.row_id > 0 \
             BEGIN UPDATE lb_events SET after_pending = 0 WHERE seq = NEW.row_id; END"
        ));
    }
    statements
}

/// The condition "after hooks are owed" (SQLite stores the flag as an integer).
fn pending_true(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "after_pending <> 0",
        Dialect::Postgres => "after_pending",
    }
}

const COLUMNS: &str = "seq, at, object, verb, row_id, owner, body, after_pending, node";
const TYPES: [FieldType; 9] = [
    FieldType::Int,
    FieldType::Int,
    FieldType::Text,
    FieldType::Text,
    FieldType::Int,
    FieldType::Int,
    FieldType::Text,
    FieldType::Bool,
    FieldType::Text,
];

fn decode(row: Vec<Value>) -> Option<LoggedEvent> {
    let mut it = row.into_iter();
    let mut next = || it.next().unwrap_or(Value::Null);
    let seq = next().as_i64()? as u64;
    let at_ms = next().as_i64().unwrap_or(0);
    let object = next().as_str()?.to_string();
    let verb = next().as_str()?.to_string();
    let row_id = next().as_i64()?;
    let owner = next().as_i64();
    let body = next().as_str()?.to_string();
    let after_pending = next().as_bool().unwrap_or(false);
    let node = next().as_str().unwrap_or_default().to_string();
    Some(LoggedEvent {
        seq,
        at_ms,
        object,
        verb,
        row_id,
        owner,
        body,
        after_pending,
        node,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Tx {
    /// Appends `events` to the log, numbered in order; answers the first one's number.
    /// Call it last in the transaction: from here to commit it holds the counter.
    /// `announce`: tell other nodes following the log (`NOTIFY`, PostgreSQL) at commit.
    pub async fn log_events(
        &mut self,
        events: &[NewEvent],
        node: &str,
        announce: bool,
    ) -> Result<u64, sqlx::Error> {
        if let [event] = events {
            return self.log_one(event, node, announce).await;
        }
        let n = events.len() as i64;
        let mut sql = self.sql();
        sql.push("UPDATE lb_event_head SET seq = seq + ")
            .bind(SqlValue::Int(n))
            .push(" WHERE id = 1 RETURNING seq");
        let last = first_seq(self.fetch(&sql, &[FieldType::Int]).await?)? as i64;
        let first = last - n + 1;
        let at = now_ms();
        // One statement per few hundred rows keeps the bound values under SQLite's limit.
        for (chunk_no, chunk) in events.chunks(100).enumerate() {
            let mut sql = self.sql();
            sql.push("INSERT INTO lb_events (")
                .push(COLUMNS)
                .push(") VALUES ");
            for (i, e) in chunk.iter().enumerate() {
                let seq = first + (chunk_no * 100 + i) as i64;
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(").bind(SqlValue::Int(seq)).push(", ");
                push_values(&mut sql, e, at, node);
                sql.push(")");
            }
            self.execute(&sql).await?;
        }
        if announce && self.dialect() == Dialect::Postgres {
            let mut sql = self.sql();
            sql.push("SELECT pg_notify('")
                .push(EVENTS_CHANNEL)
                .push("', ")
                .bind(SqlValue::Text(last.to_string()))
                .push(")");
            self.execute(&sql).await?;
        }
        Ok(first as u64)
    }

    /// One event in one statement (most writes): numbered from the head, which moves
    /// with it, and announced in the same statement when asked.
    async fn log_one(
        &mut self,
        event: &NewEvent,
        node: &str,
        announce: bool,
    ) -> Result<u64, sqlx::Error> {
        let sql = lone_event(self.sql(), event, node, announce);
        first_seq(self.fetch(&sql, &[FieldType::Int]).await?)
    }
}

/// The statement that logs `event` alone, numbered from the head, and answers its number.
/// An `emitted` entry that names a change in `row_id` also marks that change's after
/// hooks done, in the same statement (on SQLite by the trigger `lb_events_settle`).
fn lone_event(mut sql: Sql, event: &NewEvent, node: &str, announce: bool) -> Sql {
    let at = now_ms();
    match sql.dialect {
        // The trigger `lb_events_head` moves the head to the number inserted.
        Dialect::Sqlite => {
            sql.push("INSERT INTO lb_events (")
                .push(COLUMNS)
                .push(") SELECT seq + 1, ");
            push_values(&mut sql, event, at, node);
            sql.push(" FROM lb_event_head WHERE id = 1 RETURNING seq");
        }
        Dialect::Postgres => {
            sql.push("WITH head AS (UPDATE lb_event_head SET seq = seq + 1 WHERE id = 1 RETURNING seq), ");
            if event.verb == EMITTED && event.row_id > 0 {
                // A data-modifying CTE runs whether or not it is referenced.
                sql.push("settled AS (UPDATE lb_events SET after_pending = false WHERE seq = ")
                    .bind(SqlValue::Int(event.row_id))
                    .push("), ");
            }
            sql.push("logged AS (INSERT INTO lb_events (")
                .push(COLUMNS)
                .push(") SELECT seq, ");
            push_values(&mut sql, event, at, node);
            sql.push(" FROM head RETURNING seq) SELECT seq");
            if announce {
                sql.push(", pg_notify('")
                    .push(EVENTS_CHANNEL)
                    .push("', seq::text)");
            }
            sql.push(" FROM logged");
        }
    }
    sql
}

/// The number in the first row's first column (the counter, or an event's `seq`).
fn first_seq(rows: Vec<Vec<Value>>) -> Result<u64, sqlx::Error> {
    rows.first()
        .and_then(|r| r[0].as_i64())
        .map(|seq| seq as u64)
        .ok_or_else(no_head)
}

fn no_head() -> sqlx::Error {
    sqlx::Error::Protocol("lb_event_head has no row".into())
}

/// An event's columns after `seq`, bound, comma-separated.
fn push_values(sql: &mut Sql, e: &NewEvent, at: i64, node: &str) {
    sql.bind(SqlValue::Int(at))
        .push(", ")
        .bind(SqlValue::Text(e.object.clone()))
        .push(", ")
        .bind(SqlValue::Text(e.verb.to_string()))
        .push(", ")
        .bind(SqlValue::Int(e.row_id))
        .push(", ")
        .bind(e.owner.map_or(SqlValue::Null, SqlValue::Int))
        .push(", ")
        .bind(SqlValue::Text(e.body.clone()))
        .push(", ")
        .bind(SqlValue::Bool(e.after_pending))
        .push(", ")
        .bind(SqlValue::Text(node.to_string()));
}

impl Store {
    /// Marks an event's after hooks as run: one statement, committed.
    pub async fn after_done(&self, seq: u64) -> Result<(), sqlx::Error> {
        let mut sql = self.sql();
        sql.push("UPDATE lb_events SET after_pending = ")
            .bind(SqlValue::Bool(false))
            .push(" WHERE seq = ")
            .bind(SqlValue::Int(seq as i64));
        self.fetch_written(&sql, &[]).await.map(|_| ())
    }

    /// Logs an `emitted` entry (what a change's after hooks emitted) on its own, and
    /// when its `row_id` names that change, marks the change's after hooks done: one
    /// statement, committed (a crash leaves both undone or both done). Answers its number.
    pub async fn log_emitted(
        &self,
        event: &NewEvent,
        node: &str,
        announce: bool,
    ) -> Result<u64, sqlx::Error> {
        debug_assert_eq!(event.verb, EMITTED);
        let sql = lone_event(self.sql(), event, node, announce);
        first_seq(self.fetch_written(&sql, &[FieldType::Int]).await?)
    }
}

/// The `NOTIFY` channel a committed event is announced on (PostgreSQL).
pub const EVENTS_CHANNEL: &str = "livebase_events";

impl Store {
    /// Up to `limit` events after `after`, in order.
    pub async fn events_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        let mut sql = self.sql();
        sql.push("SELECT ")
            .push(COLUMNS)
            .push(" FROM lb_events WHERE seq > ")
            .bind(SqlValue::Int(after as i64))
            .push(" ORDER BY seq LIMIT ")
            .push(&limit.to_string());
        let rows = self.fetch(&sql, &TYPES).await?;
        Ok(rows.into_iter().filter_map(decode).collect())
    }

    /// `(first kept, last given)`: the oldest event still in the log (the head plus one
    /// when it is empty) and the newest sequence number given.
    pub async fn event_bounds(&self) -> Result<(u64, u64), sqlx::Error> {
        let mut sql = self.sql();
        sql.push(
            "SELECT (SELECT seq FROM lb_event_head WHERE id = 1), \
             (SELECT MIN(seq) FROM lb_events)",
        );
        let rows = self.fetch(&sql, &[FieldType::Int, FieldType::Int]).await?;
        let row = rows.first();
        let head = row.and_then(|r| r[0].as_i64()).unwrap_or(0) as u64;
        let first = row
            .and_then(|r| r[1].as_i64())
            .map_or(head + 1, |s| s as u64);
        Ok((first, head))
    }

    /// Events whose after hooks a node other than `me` and not in `live` owes: taken over
    /// by `me` (each one by exactly one node), oldest first, at most `limit`.
    pub async fn claim_pending_afters(
        &self,
        me: &str,
        live: &[String],
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        let mut sql = self.sql();
        sql.push("SELECT ")
            .push(COLUMNS)
            .push(" FROM lb_events WHERE ")
            .push(pending_true(self.dialect()))
            .push(" AND node <> ")
            .bind(SqlValue::Text(me.to_string()));
        for node in live {
            sql.push(" AND node <> ").bind(SqlValue::Text(node.clone()));
        }
        sql.push(" ORDER BY seq LIMIT ").push(&limit.to_string());
        let found: Vec<LoggedEvent> = self
            .fetch(&sql, &TYPES)
            .await?
            .into_iter()
            .filter_map(decode)
            .collect();
        let mut claimed = Vec::with_capacity(found.len());
        for mut event in found {
            let mut sql = self.sql();
            sql.push("UPDATE lb_events SET node = ")
                .bind(SqlValue::Text(me.to_string()))
                .push(" WHERE seq = ")
                .bind(SqlValue::Int(event.seq as i64))
                .push(" AND node = ")
                .bind(SqlValue::Text(event.node.clone()));
            if self.execute(&sql).await? == 1 {
                event.node = me.to_string();
                claimed.push(event);
            }
        }
        Ok(claimed)
    }

    /// Deletes events beyond the retention: more than `keep_count` behind the head, or
    /// older than `keep_ms`; never one whose after hooks are still owed. Answers how many.
    pub async fn prune_events(&self, keep_count: u64, keep_ms: u64) -> Result<u64, sqlx::Error> {
        let (_, head) = self.event_bounds().await?;
        let below = head.saturating_sub(keep_count) as i64;
        let before = now_ms().saturating_sub(keep_ms.min(i64::MAX as u64) as i64);
        let mut sql = self.sql();
        sql.push("DELETE FROM lb_events WHERE (seq <= ")
            .bind(SqlValue::Int(below))
            .push(" OR at < ")
            .bind(SqlValue::Int(before))
            .push(") AND ")
            .push("NOT (")
            .push(pending_true(self.dialect()))
            .push(")");
        self.execute(&sql).await
    }
}

impl Store {
    /// Wakes `wake` whenever a node commits events, and after each reconnect of the
    /// listening connection (what was announced meanwhile is in the log), until the
    /// store closes. PostgreSQL only: on SQLite this process is the only writer.
    pub fn follow_events(&self, wake: Arc<Notify>) {
        let Pools::Postgres(pool) = &*self.pools else {
            return;
        };
        let (url, closed) = (self.url.clone(), pool.close_event());
        let pool = pool.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = closed => {}
                () = follow(&url, &pool, &wake) => {}
            }
        });
    }
}

async fn follow(url: &str, pool: &sqlx::PgPool, wake: &Notify) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Err(e) = listen(url, wake).await;
        if pool.is_closed() {
            return;
        }
        // The database is gone (dropped, or its URL no longer valid): nothing to follow.
        if let Some(db) = e.as_database_error()
            && matches!(db.code().as_deref(), Some("3D000" | "28P01" | "28000"))
        {
            tracing::error!(error = %e, "event log: stopped following other nodes");
            return;
        }
        tracing::warn!(error = %e, "event log: following other nodes again shortly");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn listen(url: &str, wake: &Notify) -> Result<std::convert::Infallible, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(EVENTS_CHANNEL).await?;
    loop {
        // Also after a reconnect (`None`): the relay reads whatever it missed.
        wake.notify_one();
        listener.try_recv().await?;
    }
}
