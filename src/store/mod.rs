//! Storage over SQLite or PostgreSQL.
//!
//! `Store` hides which database is underneath: callers build a `Sql` (see `sql`), and
//! the store binds and runs it and decodes rows by schema type. It never decides who
//! may do what and never emits events; the write path (`records`) owns that.
//!
//! SQLite gets two pools: one writer connection (so writes queue in the pool instead of
//! failing with SQLITE_BUSY) and several readers, which WAL lets run beside it.

pub mod bus;
pub mod events;
pub mod manifest;
pub mod migrate;
pub mod nodes;
pub mod presence;
pub mod read_only;
pub mod sql;
pub mod statements;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Postgres, Sqlite, Transaction};

use crate::schema::{FieldType, ObjectSchema};
pub use sql::{Dialect, Sql};

/// The column recording which user created a row (used by row security).
pub const OWNER_COLUMN: &str = "lb_owner";

/// One stored row: its id, its creator, and its schema fields as client JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: i64,
    pub owner: Option<i64>,
    pub fields: Map<String, Value>,
}

impl Record {
    /// The row as clients see it: `id` plus every schema field.
    pub fn to_json(&self) -> Value {
        let mut out = Map::with_capacity(self.fields.len() + 1);
        out.insert("id".into(), Value::from(self.id));
        for (k, v) in &self.fields {
            out.insert(k.clone(), v.clone());
        }
        Value::Object(out)
    }
}

#[derive(Clone)]
enum Pools {
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
        /// Opened read-only with `query_only` on, for SQL an operator wrote (named
        /// queries): the database itself refuses any write that gets past their check.
        query: SqlitePool,
    },
    Postgres(PgPool),
}

/// Handle to the database. Cloning is shallow: the pools are shared.
#[derive(Clone)]
pub struct Store {
    pools: Arc<Pools>,
    /// This process's name on the cluster bus (`bus`): its own notes are skipped.
    origin: Arc<str>,
    /// The URL it was opened with: the bus listens on a connection of its own, so it
    /// never holds one of the pool's.
    url: Arc<str>,
}

/// A write transaction on either database.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Store {
    /// Opens `url` (`sqlite://…` or `postgres://…`), creating the SQLite file and its
    /// directory if missing, with WAL on.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Store> {
        let pools = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // One direct attempt first: the pool would retry until its timeout and then
            // report only that, hiding the real reason (refused, bad password, no db).
            {
                use sqlx::Connection;
                let attempt =
                    tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
                        .await;
                let reason = match attempt {
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                        None
                    }
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("no answer within 10 s".to_string()),
                };
                if let Some(reason) = reason {
                    anyhow::bail!("cannot connect to PostgreSQL at {}: {reason}", redact(url));
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot connect to PostgreSQL at {}: {e}", redact(url))
                })?;
            Pools::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| anyhow::anyhow!("cannot read the SQLite URL {}: {e}", redact(url)))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // NORMAL under WAL loses nothing when the process dies; only an OS crash
                // or power cut can drop the last commits.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(false)
                // SQLite's LOWER/LIKE fold ASCII only; string filters use REGEXP with
                // Rust's Unicode-aware `(?i)` instead (see `statements::push_text_match`).
                .with_regexp();
            if let Some(parent) = std::path::Path::new(options.get_filename()).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the directory {} of SQLite database {}: {e}",
                        parent.display(),
                        redact(url)
                    )
                })?;
            }
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.clone())
                .await
                .map_err(|e| anyhow::anyhow!("cannot open SQLite database {}: {e}", redact(url)))?;
            let reader = SqlitePoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await?;
            // Lazy: an app without named queries never opens it.
            let query = SqlitePoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(options.read_only(true).pragma("query_only", "ON"));
            Pools::Sqlite {
                writer,
                reader,
                query,
            }
        } else {
            anyhow::bail!(
                "unsupported database URL `{}`: use sqlite://PATH or postgres://…",
                redact(url)
            );
        };
        if let Pools::Postgres(pool) = &pools {
            bus::prepare(pool).await?;
        }
        let store = Store {
            pools: Arc::new(pools),
            origin: {
                use rand::RngCore;
                let mut bytes = [0u8; 12];
                rand::rng().fill_bytes(&mut bytes);
                bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into()
            },
            url: url.into(),
        };
        migrate::create_internal_tables(&store).await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        match &*self.pools {
            Pools::Sqlite { .. } => Dialect::Sqlite,
            Pools::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A new statement in this database's dialect.
    pub fn sql(&self) -> Sql {
        Sql::new(self.dialect())
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &*self.pools {
            Pools::Sqlite { writer, .. } => Tx::Sqlite(writer.begin().await?),
            Pools::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Runs a read and decodes each row's columns by `types`.
    pub async fn fetch(
        &self,
        sql: &Sql,
        types: &[FieldType],
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        match &*self.pools {
            Pools::Sqlite { reader, .. } => fetch_sqlite(reader, sql, types).await,
            Pools::Postgres(pool) => fetch_pg(pool, sql, types).await,
        }
    }

    pub async fn fetch_records(
        &self,
        sql: &Sql,
        object: &ObjectSchema,
    ) -> Result<Vec<Record>, sqlx::Error> {
        let rows = self.fetch(sql, &record_types(object)).await?;
        Ok(rows.into_iter().map(|r| to_record(r, object)).collect())
    }

    /// `fetch_records` for a statement whose rows end with one more integer column
    /// (`statements::list`'s count of every match): the records, and that count (`None`
    /// when no row came back).
    pub async fn fetch_records_counted(
        &self,
        sql: &Sql,
        object: &ObjectSchema,
    ) -> Result<(Option<i64>, Vec<Record>), sqlx::Error> {
        let mut types = record_types(object);
        types.push(FieldType::Int);
        let rows = self.fetch(sql, &types).await?;
        let mut count = None;
        let records = rows
            .into_iter()
            .map(|mut r| {
                count = r.pop().and_then(|v| v.as_i64());
                to_record(r, object)
            })
            .collect();
        Ok((count, records))
    }

    /// Runs one writing statement as a transaction of its own (one round trip; on
    /// SQLite, on the writer) and decodes what it answers by `types`.
    pub async fn fetch_written(
        &self,
        sql: &Sql,
        types: &[FieldType],
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        match &*self.pools {
            Pools::Sqlite { writer, .. } => fetch_sqlite(writer, sql, types).await,
            Pools::Postgres(pool) => fetch_pg(pool, sql, types).await,
        }
    }

    /// Runs a statement outside any explicit transaction (on SQLite, on the writer).
    pub async fn execute(&self, sql: &Sql) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin().await?;
        let n = tx.execute(sql).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// (connections open, connections idle) across the pools, for `/metrics`.
    pub fn pool_stats(&self) -> (u32, usize) {
        match &*self.pools {
            Pools::Sqlite {
                writer,
                reader,
                query,
            } => (
                writer.size() + reader.size() + query.size(),
                writer.num_idle() + reader.num_idle() + query.num_idle(),
            ),
            Pools::Postgres(pool) => (pool.size(), pool.num_idle()),
        }
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        match &*self.pools {
            Pools::Sqlite { writer, .. } => writer.is_closed(),
            Pools::Postgres(pool) => pool.is_closed(),
        }
    }

    pub async fn close(&self) {
        match &*self.pools {
            Pools::Sqlite {
                writer,
                reader,
                query,
            } => {
                query.close().await;
                reader.close().await;
                writer.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}

impl Tx {
    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    pub fn sql(&self) -> Sql {
        Sql::new(self.dialect())
    }

    pub async fn fetch(
        &mut self,
        sql: &Sql,
        types: &[FieldType],
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => fetch_sqlite(&mut **tx, sql, types).await,
            Tx::Postgres(tx) => fetch_pg(&mut **tx, sql, types).await,
        }
    }

    pub async fn fetch_records(
        &mut self,
        sql: &Sql,
        object: &ObjectSchema,
    ) -> Result<Vec<Record>, sqlx::Error> {
        let rows = self.fetch(sql, &record_types(object)).await?;
        Ok(rows.into_iter().map(|r| to_record(r, object)).collect())
    }

    pub async fn execute(&mut self, sql: &Sql) -> Result<u64, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => {
                let q = sqlx::query_with(AssertSqlSafe(sql.text.clone()), sql.sqlite_args());
                Ok(q.execute(&mut **tx).await?.rows_affected())
            }
            Tx::Postgres(tx) => {
                let q = sqlx::query_with(AssertSqlSafe(sql.text.clone()), sql.pg_args());
                Ok(q.execute(&mut **tx).await?.rows_affected())
            }
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// `"id", "lb_owner", <fields…>`: the column list every record read selects, in the
/// order `record_types` decodes.
pub fn push_record_columns(sql: &mut Sql, object: &ObjectSchema) {
    sql.ident("id").push(", ").ident(OWNER_COLUMN);
    for f in &object.fields {
        sql.push(", ").ident(&f.name);
    }
}

fn record_types(object: &ObjectSchema) -> Vec<FieldType> {
    let mut types = Vec::with_capacity(object.fields.len() + 2);
    types.push(FieldType::Int);
    types.push(FieldType::Int);
    types.extend(object.fields.iter().map(|f| f.ty.clone()));
    types
}

fn to_record(row: Vec<Value>, object: &ObjectSchema) -> Record {
    let mut values = row.into_iter();
    let id = values.next().and_then(|v| v.as_i64()).unwrap_or_default();
    let owner = values.next().and_then(|v| v.as_i64());
    let fields = object
        .fields
        .iter()
        .zip(values)
        .map(|(f, v)| (f.name.clone(), v))
        .collect();
    Record { id, owner, fields }
}

async fn fetch_sqlite<'e, E>(
    executor: E,
    sql: &Sql,
    types: &[FieldType],
) -> Result<Vec<Vec<Value>>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query_with(AssertSqlSafe(sql.text.clone()), sql.sqlite_args())
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| {
            types
                .iter()
                .enumerate()
                .map(|(i, t)| sql::sqlite_value(row, i, t))
                .collect()
        })
        .collect()
}

async fn fetch_pg<'e, E>(
    executor: E,
    sql: &Sql,
    types: &[FieldType],
) -> Result<Vec<Vec<Value>>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query_with(AssertSqlSafe(sql.text.clone()), sql.pg_args())
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| {
            types
                .iter()
                .enumerate()
                .map(|(i, t)| sql::pg_value(row, i, t))
                .collect()
        })
        .collect()
}

/// A database URL fit for a log line: the password, if any, replaced by `***`. The
/// userinfo ends at the URL's last `@`, as a password may hold an unencoded `/`, `?`,
/// `:` or `@`; a URL whose query holds an `@` is then redacted past its host (more than
/// needed, never less). A `password=` query parameter is redacted too.
pub(crate) fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://").map(|i| i + 3) {
        let rest = &url[scheme_end..];
        if let Some(at) = rest.rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                redact_query(&rest[at..])
            );
        }
    }
    redact_query(url)
}

/// `text` with the value of each `password=` query parameter replaced by `***`.
fn redact_query(text: &str) -> String {
    match text.split_once('?') {
        Some((head, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{head}?{}", query.join("&"))
        }
        None => text.to_string(),
    }
}

/// The schema field a unique-constraint error is about, if it is one.
pub fn unique_violation_field(err: &sqlx::Error, object: &ObjectSchema) -> Option<String> {
    let db = err.as_database_error()?;
    if !db.is_unique_violation() {
        return None;
    }
    let prefix = migrate::unique_index_prefix(&object.name);
    if let Some(field) = db.constraint().and_then(|c| c.strip_prefix(&prefix)) {
        return Some(field.to_string());
    }
    // SQLite: "UNIQUE constraint failed: items.name"
    let marker = format!("{}.", object.name);
    let message = db.message();
    message
        .find(&marker)
        .map(|at| message[at + marker.len()..].trim().to_string())
        .or_else(|| Some("a unique field".to_string()))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_log_lines() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?sslmode=off&password=x"),
            "postgres://h/db?sslmode=off&password=***"
        );
    }

    #[test]
    fn a_password_holding_url_delimiters_is_redacted_whole() {
        let cases = [
            ("postgres://u:pa/ss@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:pa?ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:pa@ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p:w@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u:a/b?c=d&password=e@f@h:5432/db?sslmode=require&password=x",
                "postgres://u:***@h:5432/db?sslmode=require&password=***",
            ),
            ("postgresql://u:/@?@h", "postgresql://u:***@h"),
            // No password in the userinfo: the query's is still redacted.
            (
                "postgres://me@h/db?user=a@b&password=y",
                "postgres://me@h/db?user=a@b&password=***",
            ),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact(url), redacted, "{url}");
            for secret in ["pa/ss", "pa?ss", "pa@ss", "p:w", "a/b?c", "e@f"] {
                assert!(!redact(url).contains(secret), "{url}: {secret}");
            }
        }
    }
}
