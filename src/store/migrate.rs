//! Making the database match the schema.
//!
//! The schema as last applied is kept in `lb_schema`, so a start can tell an added field
//! (add the column) from a removed or retyped one (data would be lost: refuse, naming
//! the file and field, unless the operator passed `--allow-destructive-schema`). Tables
//! of objects whose file disappeared are left alone. Everything is planned before any
//! statement runs and applied in one transaction.

use std::collections::BTreeMap;

use super::sql::{Dialect, column_type};
use super::{OWNER_COLUMN, Store, Tx};
use crate::schema::value::SqlValue;
use crate::schema::{Field, FieldType, ObjectSchema, Schema, SchemaError};
use serde::{Deserialize, Serialize};

/// Serialises concurrent starts of several nodes against one PostgreSQL database.
const MIGRATION_LOCK_KEY: i64 = 0x6c69_7665_6261_7365; // "livebase"

pub(crate) async fn create_internal_tables(store: &Store) -> anyhow::Result<()> {
    let id_type = match store.dialect() {
        Dialect::Sqlite => "INTEGER",
        Dialect::Postgres => "BIGINT",
    };
    let statements = [
        "CREATE TABLE IF NOT EXISTS lb_schema (object TEXT PRIMARY KEY, definition TEXT NOT NULL)"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS lb_credentials (user_id {id_type} PRIMARY KEY, \
             password_hash TEXT, user_token TEXT NOT NULL UNIQUE, \
             token_version {id_type} NOT NULL DEFAULT 0, \
             reset_token_hash TEXT, reset_expires {id_type}, kept_session TEXT)"
        ),
        // Files of the built-in `files` action: the bytes live on disk under the
        // generated `stored_name`; the caller's filename is kept only here.
        format!(
            "CREATE TABLE IF NOT EXISTS lb_files (stored_name TEXT PRIMARY KEY, \
             object TEXT NOT NULL, filename TEXT NOT NULL, owner {id_type}, \
             size {id_type} NOT NULL, content_type TEXT NOT NULL, created TEXT NOT NULL)"
        ),
        "CREATE INDEX IF NOT EXISTS lb_files_by_name ON lb_files (object, filename)".to_string(),
    ]
    .into_iter()
    // The event log (`store::events`).
    .chain(super::events::create_statements(store.dialect()))
    // Channel presence (`store::presence`).
    .chain(super::presence::create_statements());
    // Only PostgreSQL is shared by several nodes: they agree on the secrets there
    // (`auth::secrets`) and each says it is alive (`store::nodes`). SQLite keeps the
    // secrets in `<data-dir>/secrets.json` and is one node's file.
    let shared = [
        "CREATE TABLE IF NOT EXISTS lb_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS lb_nodes (node_id TEXT PRIMARY KEY, started TIMESTAMPTZ, \
         seen TIMESTAMPTZ, listen TEXT)",
        // What the node serves (`store::manifest`), compared by each starting node.
        "ALTER TABLE lb_nodes ADD COLUMN IF NOT EXISTS manifest TEXT",
    ];
    let shared = match store.dialect() {
        Dialect::Postgres => &shared[..],
        Dialect::Sqlite => &[],
    };
    let mut tx = store.begin().await?;
    lock(&mut tx).await?;
    for text in statements
        .into_iter()
        .chain(shared.iter().map(|s| s.to_string()))
    {
        let mut sql = tx.sql();
        sql.push(&text);
        tx.execute(&sql).await?;
    }
    add_kept_session(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Databases made before sessions were kept across a password change lack the column.
async fn add_kept_session(tx: &mut Tx) -> Result<(), sqlx::Error> {
    let mut sql = tx.sql();
    if tx.dialect() == Dialect::Postgres {
        sql.push("ALTER TABLE lb_credentials ADD COLUMN IF NOT EXISTS kept_session TEXT");
        return tx.execute(&sql).await.map(|_| ());
    }
    sql.push(
        "SELECT COUNT(*) FROM pragma_table_info('lb_credentials') WHERE name = 'kept_session'",
    );
    let found = tx.fetch(&sql, &[FieldType::Int]).await?;
    if found.first().and_then(|r| r[0].as_i64()) == Some(0) {
        let mut sql = tx.sql();
        sql.push("ALTER TABLE lb_credentials ADD COLUMN kept_session TEXT");
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Holds, until `tx` ends, the lock every start takes on PostgreSQL before it changes
/// shared state (tables, secrets, its node row), so starts of several nodes take turns.
/// Nothing on SQLite, which one node alone opens.
pub(crate) async fn lock(tx: &mut Tx) -> Result<(), sqlx::Error> {
    if tx.dialect() == Dialect::Postgres {
        let mut sql = tx.sql();
        sql.push("SELECT pg_advisory_xact_lock(")
            .push(&MIGRATION_LOCK_KEY.to_string())
            .push(")");
        tx.execute(&sql).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredField {
    #[serde(rename = "type")]
    ty: String,
    unique: bool,
}

type StoredObject = BTreeMap<String, StoredField>;

fn stored_shape(object: &ObjectSchema) -> StoredObject {
    object
        .fields
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                StoredField {
                    ty: f.ty.describe(),
                    unique: f.unique,
                },
            )
        })
        .collect()
}

/// Unique indexes are named `lbu_<object>_<field>`, so a constraint error names its field.
pub(crate) fn unique_index_prefix(object: &str) -> String {
    format!("lbu_{object}_")
}

fn unique_index_name(object: &str, field: &str) -> String {
    fit_identifier(format!("{}{field}", unique_index_prefix(object)), "lbu")
}

fn owner_index_name(object: &str) -> String {
    fit_identifier(format!("lbo_{object}"), "lbo")
}

/// Index names derived from long object and field names would pass PostgreSQL's
/// 63-byte identifier limit; those get a stable hashed name instead.
fn fit_identifier(name: String, prefix: &str) -> String {
    if name.len() <= 63 {
        return name;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{prefix}_{hash:016x}")
}

enum Step {
    CreateTable(String),
    DropIndex(String),
    DropColumn(String, String),
    AddColumn(String, Field),
    FillDefault(String, Field),
    CreateUniqueIndex(String, String),
    CreateOwnerIndex(String),
}

/// Brings the tables in line with `schema`. Returns notes for the operator (e.g. a
/// table whose schema file is gone).
pub async fn apply_schema(
    store: &Store,
    schema: &Schema,
    allow_destructive: bool,
) -> anyhow::Result<Vec<String>> {
    let mut tx = store.begin().await?;
    lock(&mut tx).await?;

    let mut stored: BTreeMap<String, StoredObject> = BTreeMap::new();
    let mut sql = tx.sql();
    sql.push("SELECT object, definition FROM lb_schema");
    for row in tx.fetch(&sql, &[FieldType::Text, FieldType::Text]).await? {
        let (Some(name), Some(def)) = (row[0].as_str(), row[1].as_str()) else {
            continue;
        };
        let shape: StoredObject = serde_json::from_str(def)
            .map_err(|e| anyhow::anyhow!("lb_schema row for `{name}` is unreadable: {e}"))?;
        stored.insert(name.to_string(), shape);
    }

    let mut steps = Vec::new();
    for object in schema.objects.values() {
        let columns = existing_columns(&mut tx, &object.name).await?;
        plan_object(
            object,
            stored.get(&object.name),
            columns.as_deref(),
            allow_destructive,
            &mut steps,
        )?;
    }
    let notes = stored
        .keys()
        .filter(|name| !schema.objects.contains_key(*name))
        .map(|name| {
            format!("object `{name}` has no schema file any more; its table is kept and not served")
        })
        .collect();

    for step in steps {
        run_step(&mut tx, schema, step).await?;
    }
    for object in schema.objects.values() {
        let definition = serde_json::to_string(&stored_shape(object))?;
        let mut sql = tx.sql();
        sql.push("INSERT INTO lb_schema (object, definition) VALUES (")
            .bind(SqlValue::Text(object.name.clone()))
            .push(", ")
            .bind(SqlValue::Text(definition))
            .push(") ON CONFLICT (object) DO UPDATE SET definition = excluded.definition");
        tx.execute(&sql).await?;
    }
    tx.commit().await?;
    Ok(notes)
}

fn plan_object(
    object: &ObjectSchema,
    stored: Option<&StoredObject>,
    columns: Option<&[String]>,
    allow_destructive: bool,
    steps: &mut Vec<Step>,
) -> Result<(), SchemaError> {
    let name = &object.name;
    let Some(columns) = columns else {
        steps.push(Step::CreateTable(name.clone()));
        steps.push(Step::CreateOwnerIndex(name.clone()));
        for f in object.fields.iter().filter(|f| f.unique) {
            steps.push(Step::CreateUniqueIndex(name.clone(), f.name.clone()));
        }
        return Ok(());
    };
    let empty = StoredObject::new();
    let stored = stored.unwrap_or(&empty);
    let refuse = |field: &str, message: String| {
        Err(SchemaError::new(
            &object.file,
            Some(field),
            format!(
                "{message}; this would lose data. Restore the field, or start with --allow-destructive-schema to accept the loss"
            ),
        ))
    };

    for (field, old) in stored {
        if object.field(field).is_none() {
            if !allow_destructive {
                return refuse(field, "was removed from the schema".into());
            }
            if old.unique {
                steps.push(Step::DropIndex(unique_index_name(name, field)));
            }
            steps.push(Step::DropColumn(name.clone(), field.clone()));
        }
    }
    for field in &object.fields {
        let has_column = columns.contains(&field.name);
        match stored.get(&field.name) {
            Some(old) if old.ty != field.ty.describe() => {
                if !allow_destructive {
                    return refuse(
                        &field.name,
                        format!("type changed from {} to {}", old.ty, field.ty.describe()),
                    );
                }
                if old.unique {
                    steps.push(Step::DropIndex(unique_index_name(name, &field.name)));
                }
                steps.push(Step::DropColumn(name.clone(), field.name.clone()));
                steps.push(Step::AddColumn(name.clone(), field.clone()));
                steps.push(Step::FillDefault(name.clone(), field.clone()));
                if field.unique {
                    steps.push(Step::CreateUniqueIndex(name.clone(), field.name.clone()));
                }
            }
            Some(old) => {
                if old.unique && !field.unique {
                    steps.push(Step::DropIndex(unique_index_name(name, &field.name)));
                } else if !old.unique && field.unique {
                    steps.push(Step::CreateUniqueIndex(name.clone(), field.name.clone()));
                }
            }
            None => {
                if !has_column {
                    steps.push(Step::AddColumn(name.clone(), field.clone()));
                    steps.push(Step::FillDefault(name.clone(), field.clone()));
                }
                if field.unique {
                    steps.push(Step::CreateUniqueIndex(name.clone(), field.name.clone()));
                }
            }
        }
    }
    if !columns.iter().any(|c| c == OWNER_COLUMN) {
        steps.push(Step::AddColumn(
            name.clone(),
            Field {
                name: OWNER_COLUMN.into(),
                ty: FieldType::Int,
                required: false,
                unique: false,
                default: None,
                max_length: None,
            },
        ));
        steps.push(Step::CreateOwnerIndex(name.clone()));
    }
    Ok(())
}

async fn run_step(tx: &mut Tx, schema: &Schema, step: Step) -> anyhow::Result<()> {
    let dialect = tx.dialect();
    let mut sql = tx.sql();
    match &step {
        Step::CreateTable(name) => {
            let object = schema.object(name).expect("planned from the schema");
            let id = match dialect {
                Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
                Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
            };
            sql.push("CREATE TABLE ")
                .ident(name)
                .push(" (")
                .ident("id")
                .push(" ")
                .push(id)
                .push(", ")
                .ident(OWNER_COLUMN)
                .push(" ")
                .push(column_type(dialect, &FieldType::Int));
            for f in &object.fields {
                sql.push(", ")
                    .ident(&f.name)
                    .push(" ")
                    .push(column_type(dialect, &f.ty));
            }
            sql.push(")");
        }
        Step::DropIndex(index) => {
            sql.push("DROP INDEX IF EXISTS ").ident(index);
        }
        Step::DropColumn(table, column) => {
            sql.push("ALTER TABLE ")
                .ident(table)
                .push(" DROP COLUMN ")
                .ident(column);
        }
        Step::AddColumn(table, field) => {
            sql.push("ALTER TABLE ")
                .ident(table)
                .push(" ADD COLUMN ")
                .ident(&field.name)
                .push(" ")
                .push(column_type(dialect, &field.ty));
        }
        Step::FillDefault(table, field) => {
            let Some(default) = &field.default else {
                return Ok(());
            };
            let value = field
                .check_value(default)
                .map_err(|m| anyhow::anyhow!("default of `{}`: {m}", field.name))?;
            sql.push("UPDATE ")
                .ident(table)
                .push(" SET ")
                .ident(&field.name)
                .push(" = ")
                .bind(value)
                .push(" WHERE ")
                .ident(&field.name)
                .push(" IS NULL");
        }
        Step::CreateUniqueIndex(table, field) => {
            sql.push("CREATE UNIQUE INDEX IF NOT EXISTS ")
                .ident(&unique_index_name(table, field))
                .push(" ON ")
                .ident(table)
                .push(" (")
                .ident(field)
                .push(")");
        }
        Step::CreateOwnerIndex(table) => {
            sql.push("CREATE INDEX IF NOT EXISTS ")
                .ident(&owner_index_name(table))
                .push(" ON ")
                .ident(table)
                .push(" (")
                .ident(OWNER_COLUMN)
                .push(")");
        }
    }
    tx.execute(&sql).await.map_err(|e| {
        let object = match &step {
            Step::CreateUniqueIndex(table, field) => schema.object(table).map(|o| {
                SchemaError::new(
                    &o.file,
                    Some(field),
                    format!(
                        "cannot make the field unique: existing rows hold duplicate values ({e})"
                    ),
                )
            }),
            _ => None,
        };
        match object {
            Some(schema_error) => anyhow::Error::new(schema_error),
            None => anyhow::Error::new(e),
        }
    })?;
    Ok(())
}

/// The table's columns, or `None` when there is no such table.
async fn existing_columns(tx: &mut Tx, table: &str) -> Result<Option<Vec<String>>, sqlx::Error> {
    let mut sql = tx.sql();
    let name = SqlValue::Text(table.to_string());
    match tx.dialect() {
        Dialect::Sqlite => sql.push("SELECT name FROM pragma_table_info(").bind(name).push(")"),
        Dialect::Postgres => sql
            .push("SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ")
            .bind(name),
    };
    let rows = tx.fetch(&sql, &[FieldType::Text]).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter_map(|r| r[0].as_str().map(str::to_string))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_stay_valid_identifiers() {
        let long = "a".repeat(63);
        for name in [
            unique_index_name("items", "name"),
            unique_index_name(&long, &long),
            owner_index_name(&long),
            owner_index_name("items"),
        ] {
            assert!(crate::schema::is_valid_identifier(&name), "{name}");
        }
        assert_eq!(unique_index_name("items", "name"), "lbu_items_name");
        assert_ne!(unique_index_name(&long, "x"), unique_index_name(&long, "y"));
    }
}
