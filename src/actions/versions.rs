//! Every saved version of each action, as rows of `lb_action_versions`
//! `{action_id, version, code, created_at, source}`: appended in the same transaction as
//! the `lb_actions` change that made it, pruned to the newest `KEPT_VERSIONS` per action.
//!
//! This file only reads and writes that table; what a version change means (compiling,
//! the catalog) is `registry`'s, and `lb_actions` is `store`'s.

use serde_json::Value;

use crate::schema::FieldType;
use crate::schema::value::{SqlValue, format_datetime};
use crate::store::{Dialect, Store, Tx, migrate};

/// Versions kept per action; older ones are pruned when a new one is saved.
pub const KEPT_VERSIONS: i64 = 100;

/// What made a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /1/action/config`.
    Upload,
    /// `PUT /1/action/config/{id}`.
    Replace,
    /// A file of the actions directory, at start or reloaded while running.
    File,
    /// `livebase actions push`.
    Push,
    /// `POST /1/action/config/{id}/rollback`: an earlier version's code saved anew.
    Rollback,
    /// Filled in on start for an action saved before versions were kept: its origin is
    /// not known.
    Backfill,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upload => "upload",
            Source::Replace => "replace",
            Source::File => "file",
            Source::Push => "push",
            Source::Rollback => "rollback",
            Source::Backfill => "backfill",
        }
    }
}

/// One saved version, as `/1/action/config/{id}/versions` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: i64,
    pub code: String,
    /// RFC 3339.
    pub created_at: String,
    pub source: String,
}

/// Creates the table, and saves the current version of every action that has none
/// saved (a database from before versions were kept).
pub async fn create_table(store: &Store) -> Result<(), sqlx::Error> {
    let mut tx = store.begin().await?;
    // Nodes started together must not create it, or backfill it, at the same moment.
    migrate::lock(&mut tx).await?;
    let id_type = match tx.dialect() {
        Dialect::Sqlite => "INTEGER",
        Dialect::Postgres => "BIGINT",
    };
    let mut sql = tx.sql();
    sql.push(&format!(
        "CREATE TABLE IF NOT EXISTS lb_action_versions (action_id {id_type} NOT NULL, \
         version BIGINT NOT NULL, code TEXT NOT NULL, created_at TEXT NOT NULL, \
         source TEXT NOT NULL, PRIMARY KEY (action_id, version))"
    ));
    tx.execute(&sql).await?;
    let mut sql = tx.sql();
    sql.push(
        "INSERT INTO lb_action_versions (action_id, version, code, created_at, source) \
         SELECT a.id, a.version, a.code, ",
    )
    .bind(SqlValue::Text(now()))
    .push(", ")
    .bind(SqlValue::Text(Source::Backfill.as_str().into()))
    .push(
        " FROM lb_actions a WHERE NOT EXISTS (SELECT 1 FROM lb_action_versions v \
         WHERE v.action_id = a.id AND v.version = a.version)",
    );
    let filled = tx.execute(&sql).await?;
    tx.commit().await?;
    if filled > 0 {
        tracing::info!(
            actions = filled,
            "saved the current version of actions stored before versions were kept"
        );
    }
    Ok(())
}

/// Saves `code` as `version` of action `id`, then prunes the versions past
/// `KEPT_VERSIONS`. Runs in the caller's transaction, beside its `lb_actions` change.
pub async fn append(
    tx: &mut Tx,
    id: i64,
    version: i64,
    code: &str,
    source: Source,
) -> Result<(), sqlx::Error> {
    let mut sql = tx.sql();
    sql.push(
        "INSERT INTO lb_action_versions (action_id, version, code, created_at, source) VALUES (",
    )
    .bind(SqlValue::Int(id))
    .push(", ")
    .bind(SqlValue::Int(version))
    .push(", ")
    .bind(SqlValue::Text(code.into()))
    .push(", ")
    .bind(SqlValue::Text(now()))
    .push(", ")
    .bind(SqlValue::Text(source.as_str().into()))
    .push(")");
    tx.execute(&sql).await?;
    // Versions only grow, one at a time per change, so this keeps the newest
    // `KEPT_VERSIONS` (fewer when some were saved before versions were kept).
    let mut sql = tx.sql();
    sql.push("DELETE FROM lb_action_versions WHERE action_id = ")
        .bind(SqlValue::Int(id))
        .push(" AND version <= ")
        .bind(SqlValue::Int(version - KEPT_VERSIONS));
    tx.execute(&sql).await?;
    Ok(())
}

/// A deleted action's versions go with it.
pub async fn delete_all(tx: &mut Tx, id: i64) -> Result<(), sqlx::Error> {
    let mut sql = tx.sql();
    sql.push("DELETE FROM lb_action_versions WHERE action_id = ")
        .bind(SqlValue::Int(id));
    tx.execute(&sql).await?;
    Ok(())
}

/// `(how many are kept, one page of them newest first)`.
pub async fn list(
    store: &Store,
    id: i64,
    page_size: i64,
    page: i64,
) -> Result<(i64, Vec<Version>), sqlx::Error> {
    let mut sql = store.sql();
    sql.push("SELECT COUNT(*) FROM lb_action_versions WHERE action_id = ")
        .bind(SqlValue::Int(id));
    let total = store.fetch(&sql, &[FieldType::Int]).await?;
    let total = total.first().and_then(|r| r[0].as_i64()).unwrap_or(0);
    let mut sql = store.sql();
    sql.push("SELECT version, code, created_at, source FROM lb_action_versions WHERE action_id = ")
        .bind(SqlValue::Int(id))
        .push(" ORDER BY version DESC LIMIT ")
        .bind(SqlValue::Int(page_size))
        .push(" OFFSET ")
        .bind(SqlValue::Int((page - 1).saturating_mul(page_size)));
    let rows = store.fetch(&sql, &TYPES).await?;
    Ok((total, rows.into_iter().filter_map(to_version).collect()))
}

/// Version `version` of action `id`, if it is kept.
pub async fn get(store: &Store, id: i64, version: i64) -> Result<Option<Version>, sqlx::Error> {
    let mut sql = store.sql();
    sql.push("SELECT version, code, created_at, source FROM lb_action_versions WHERE action_id = ")
        .bind(SqlValue::Int(id))
        .push(" AND version = ")
        .bind(SqlValue::Int(version));
    let rows = store.fetch(&sql, &TYPES).await?;
    Ok(rows.into_iter().next().and_then(to_version))
}

const TYPES: [FieldType; 4] = [
    FieldType::Int,
    FieldType::Text,
    FieldType::Text,
    FieldType::Text,
];

fn to_version(row: Vec<Value>) -> Option<Version> {
    Some(Version {
        version: row[0].as_i64()?,
        code: row[1].as_str()?.to_string(),
        created_at: row[2].as_str()?.to_string(),
        source: row[3].as_str()?.to_string(),
    })
}

fn now() -> String {
    format_datetime(&chrono::Utc::now())
}
