//! Actions as rows of `lb_actions` `{id, name, object, trigger, code, version}`, and the
//! `actions/<object>/<trigger>/<name>.js` files loaded into them at start (a file whose
//! code changed gets the next version). Every change saves its version (`versions`) in
//! the same transaction.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::versions::{self, Source};
use crate::records::Verb;
use crate::schema::value::SqlValue;
use crate::schema::{FieldType, Schema};
use crate::store::{Dialect, Store, Tx, migrate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    BeforeCreate,
    AfterCreate,
    BeforeUpdate,
    AfterUpdate,
    BeforeDelete,
    AfterDelete,
    OnDemand,
}

const TRIGGERS: [(&str, Trigger); 7] = [
    ("beforeCreate", Trigger::BeforeCreate),
    ("afterCreate", Trigger::AfterCreate),
    ("beforeUpdate", Trigger::BeforeUpdate),
    ("afterUpdate", Trigger::AfterUpdate),
    ("beforeDelete", Trigger::BeforeDelete),
    ("afterDelete", Trigger::AfterDelete),
    ("onDemand", Trigger::OnDemand),
];

impl Trigger {
    pub fn parse(text: &str) -> Option<Trigger> {
        TRIGGERS.iter().find(|(n, _)| *n == text).map(|(_, t)| *t)
    }

    pub fn as_str(self) -> &'static str {
        TRIGGERS
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("onDemand")
    }

    pub fn before(verb: Verb) -> Trigger {
        match verb {
            Verb::Created => Trigger::BeforeCreate,
            Verb::Updated => Trigger::BeforeUpdate,
            Verb::Deleted => Trigger::BeforeDelete,
        }
    }

    pub fn after(verb: Verb) -> Trigger {
        match verb {
            Verb::Created => Trigger::AfterCreate,
            Verb::Updated => Trigger::AfterUpdate,
            Verb::Deleted => Trigger::AfterDelete,
        }
    }
}

/// Actions bound to no object.
pub const GENERAL: &str = "general";

impl Trigger {
    /// Every trigger name, for messages that list them.
    pub fn names() -> String {
        TRIGGERS.map(|(name, _)| name).join(", ")
    }
}

/// An action's object must be in the schema, or `general` (without a schema, as for
/// `push`, the server is left to check).
pub fn check_object(object: &str, schema: Option<&Schema>) -> Result<(), String> {
    if object != GENERAL && schema.is_some_and(|s| s.object(object).is_none()) {
        return Err(format!(
            "no object named `{}` in the schema (use `general` for actions bound to no object)",
            object.escape_default()
        ));
    }
    Ok(())
}

/// `general` actions are functions: on demand only.
pub fn check_trigger(object: &str, trigger: Trigger) -> Result<(), String> {
    if object == GENERAL && trigger != Trigger::OnDemand {
        return Err("`general` actions can only be onDemand".into());
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub id: i64,
    pub name: String,
    pub object: String,
    pub trigger: Trigger,
    pub code: String,
    pub version: i64,
    /// The file of the actions directory this code came from; `None` for an action
    /// uploaded over the API, or replaced there since it was loaded from its file.
    pub file: Option<PathBuf>,
}

impl Action {
    /// `<object>/<trigger>/<name>.js`, the action's file relative to the actions
    /// directory, when its code is that file's (never the server's path to it).
    pub fn relative_file(&self) -> Option<String> {
        self.file
            .as_ref()
            .map(|_| format!("{}/{}/{}.js", self.object, self.trigger.as_str(), self.name))
    }
}

/// One file of the actions directory.
pub struct ActionFile {
    pub path: PathBuf,
    pub object: String,
    pub trigger: Trigger,
    pub name: String,
    pub code: String,
}

pub async fn create_table(store: &Store) -> Result<(), sqlx::Error> {
    let id = match store.dialect() {
        Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    // Under the start lock: PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against
    // another node creating the same table at the same moment.
    let mut tx = store.begin().await?;
    migrate::lock(&mut tx).await?;
    let mut sql = tx.sql();
    sql.push(&format!(
        "CREATE TABLE IF NOT EXISTS lb_actions (id {id}, object TEXT NOT NULL, \
         trigger_name TEXT NOT NULL, name TEXT NOT NULL, code TEXT NOT NULL, \
         version BIGINT NOT NULL, UNIQUE (object, trigger_name, name))"
    ));
    tx.execute(&sql).await?;
    tx.commit().await
}

/// `actions/<object>/<trigger>/<name>.js`; anything else there is an error naming the
/// path (a README at the top is allowed). A missing directory means no actions.
/// Without a schema (the `push` command), object names are left for the server to check.
pub fn read_dir(dir: &Path, schema: Option<&Schema>) -> anyhow::Result<Vec<ActionFile>> {
    let mut files = Vec::new();
    if !dir.is_dir() {
        return Ok(files);
    }
    for object_entry in sorted(dir)? {
        if !object_entry.is_dir() {
            continue;
        }
        let object = file_name(&object_entry);
        check_object(&object, schema)
            .map_err(|e| anyhow::anyhow!("{}: {e}", object_entry.display()))?;
        for trigger_entry in sorted(&object_entry)? {
            let trigger_name = file_name(&trigger_entry);
            let trigger = Trigger::parse(&trigger_name).filter(|_| trigger_entry.is_dir());
            let Some(trigger) = trigger else {
                anyhow::bail!(
                    "{}: expected a trigger folder ({})",
                    trigger_entry.display(),
                    Trigger::names()
                );
            };
            check_trigger(&object, trigger)
                .map_err(|e| anyhow::anyhow!("{}: {e}", trigger_entry.display()))?;
            for path in sorted(&trigger_entry)? {
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".js"))
                else {
                    anyhow::bail!("{}: actions are `<name>.js` files", path.display());
                };
                let code = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                files.push(ActionFile {
                    object: object.clone(),
                    trigger,
                    name: name.to_string(),
                    code,
                    path,
                });
            }
        }
    }
    Ok(files)
}

fn sorted(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // Dotfiles and editor backups (`.DS_Store`, `.x.js.swp`, `.#x.js`, `x.js~`) are not
    // actions and must not stop a start or a reload.
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with('.') && !name.ends_with('~')
        })
        .collect();
    entries.sort();
    Ok(entries)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

/// Inserts the file's action, or gives it the next version if its code changed; the
/// version is saved with it, in one transaction. Under the start lock, so nodes started
/// together with the same changed file save it as one new version, not one each.
pub async fn upsert(store: &Store, file: &ActionFile) -> Result<(), sqlx::Error> {
    let mut tx = store.begin().await?;
    migrate::lock(&mut tx).await?;
    let mut sql = tx.sql();
    sql.push("SELECT id, code, version FROM lb_actions WHERE object = ")
        .bind(SqlValue::Text(file.object.clone()))
        .push(" AND trigger_name = ")
        .bind(SqlValue::Text(file.trigger.as_str().into()))
        .push(" AND name = ")
        .bind(SqlValue::Text(file.name.clone()));
    let found = tx
        .fetch(&sql, &[FieldType::Int, FieldType::Text, FieldType::Int])
        .await?;
    let saved = match found.first() {
        Some(row) if row[1].as_str() == Some(file.code.as_str()) => return Ok(()),
        Some(row) => {
            let id = row[0].as_i64().unwrap_or_default();
            next_version(&mut tx, id, &file.code, None)
                .await?
                .map(|v| (id, v))
        }
        None => insert_row(&mut tx, &file.object, file.trigger, &file.name, &file.code)
            .await?
            .map(|id| (id, 1)),
    };
    if let Some((id, version)) = saved {
        versions::append(&mut tx, id, version, &file.code, Source::File).await?;
    }
    tx.commit().await
}

/// Every action, ordered by object, trigger and name (byte order, whatever the
/// database's collation: triggers run in this order).
pub async fn list(store: &Store) -> Result<Vec<Action>, sqlx::Error> {
    let mut sql = store.sql();
    sql.push(
        "SELECT id, name, object, trigger_name, code, version FROM lb_actions \
         ORDER BY object, trigger_name, name",
    );
    let rows = store
        .fetch(
            &sql,
            &[
                FieldType::Int,
                FieldType::Text,
                FieldType::Text,
                FieldType::Text,
                FieldType::Text,
                FieldType::Int,
            ],
        )
        .await?;
    let mut all: Vec<Action> = rows
        .into_iter()
        .filter_map(|r| {
            Some(Action {
                id: r[0].as_i64()?,
                name: r[1].as_str()?.to_string(),
                object: r[2].as_str()?.to_string(),
                trigger: Trigger::parse(r[3].as_str()?)?,
                code: r[4].as_str()?.to_string(),
                version: r[5].as_i64()?,
                file: None,
            })
        })
        .collect();
    all.sort_by(|a, b| {
        (&a.object, a.trigger.as_str(), &a.name).cmp(&(&b.object, b.trigger.as_str(), &b.name))
    });
    Ok(all)
}

/// A new action, its first version saved with it; `None` if one with the same object,
/// trigger and name exists.
pub async fn insert(
    store: &Store,
    object: &str,
    trigger: Trigger,
    name: &str,
    code: &str,
    source: Source,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = store.begin().await?;
    let Some(id) = insert_row(&mut tx, object, trigger, name, code).await? else {
        return Ok(None);
    };
    versions::append(&mut tx, id, 1, code, source).await?;
    tx.commit().await?;
    Ok(Some(id))
}

async fn insert_row(
    tx: &mut Tx,
    object: &str,
    trigger: Trigger,
    name: &str,
    code: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let mut sql = tx.sql();
    sql.push("INSERT INTO lb_actions (object, trigger_name, name, code, version) VALUES (")
        .bind(SqlValue::Text(object.into()))
        .push(", ")
        .bind(SqlValue::Text(trigger.as_str().into()))
        .push(", ")
        .bind(SqlValue::Text(name.into()))
        .push(", ")
        .bind(SqlValue::Text(code.into()))
        .push(", 1) RETURNING id");
    match tx.fetch(&sql, &[FieldType::Int]).await {
        Ok(rows) => Ok(rows.first().and_then(|r| r[0].as_i64())),
        Err(e) if is_unique(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_unique(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// What `replace_code` did.
pub enum Replaced {
    /// Saved as this version.
    Saved(i64),
    /// No such action.
    Missing,
    /// The action is at this version, not the one the caller expected: nothing saved.
    Stale(i64),
}

/// New code for an action as its next version, saved with it; only if the action is
/// still at `expected` when that is given (checked in the same statement, so of two
/// saves expecting one version, one wins and the other is `Stale`).
pub async fn replace_code(
    store: &Store,
    id: i64,
    code: &str,
    source: Source,
    expected: Option<i64>,
) -> Result<Replaced, sqlx::Error> {
    let mut tx = store.begin().await?;
    let Some(version) = next_version(&mut tx, id, code, expected).await? else {
        return Ok(match current_version(&mut tx, id).await? {
            Some(now) => Replaced::Stale(now),
            None => Replaced::Missing,
        });
    };
    versions::append(&mut tx, id, version, code, source).await?;
    tx.commit().await?;
    Ok(Replaced::Saved(version))
}

async fn next_version(
    tx: &mut Tx,
    id: i64,
    code: &str,
    expected: Option<i64>,
) -> Result<Option<i64>, sqlx::Error> {
    let mut sql = tx.sql();
    sql.push("UPDATE lb_actions SET code = ")
        .bind(SqlValue::Text(code.into()))
        .push(", version = version + 1 WHERE id = ")
        .bind(SqlValue::Int(id));
    if let Some(version) = expected {
        sql.push(" AND version = ").bind(SqlValue::Int(version));
    }
    sql.push(" RETURNING version");
    let rows = tx.fetch(&sql, &[FieldType::Int]).await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()))
}

async fn current_version(tx: &mut Tx, id: i64) -> Result<Option<i64>, sqlx::Error> {
    let mut sql = tx.sql();
    sql.push("SELECT version FROM lb_actions WHERE id = ")
        .bind(SqlValue::Int(id));
    let rows = tx.fetch(&sql, &[FieldType::Int]).await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()))
}

/// Deletes an action and its saved versions.
pub async fn delete(store: &Store, id: i64) -> Result<bool, sqlx::Error> {
    let mut tx = store.begin().await?;
    let mut sql = tx.sql();
    sql.push("DELETE FROM lb_actions WHERE id = ")
        .bind(SqlValue::Int(id));
    let deleted = tx.execute(&sql).await? > 0;
    versions::delete_all(&mut tx, id).await?;
    tx.commit().await?;
    Ok(deleted)
}
