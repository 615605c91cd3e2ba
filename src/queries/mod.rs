//! Named queries (Backand "Query" actions): `queries/<name>.sql`, read-only SQL with
//! `{{param}}` tokens bound as parameters, and the roles that may run it.
//!
//! Loaded and checked once at start (`file` for the text, the database for the rest):
//! a query that would fail stops the start naming its file and line. Running one checks
//! the caller's role (`permissions::may_run`), turns the caller's JSON parameters into
//! bound values and asks the store to run it read-only. Nothing here writes.

pub mod file;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::auth::{Identity, permissions};
use crate::error::ApiError;
use crate::schema::value::SqlValue;
use crate::store::Store;
use crate::store::read_only::{ReadError, ReadLimits};
pub use file::QueryFile;

/// The loaded queries. Cloning is shallow.
#[derive(Clone)]
pub struct Queries {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Fixed after start: files are read once (a changed query needs a restart, so
    /// what runs is always what was checked).
    queries: HashMap<String, QueryFile>,
    limits: ReadLimits,
}

impl Queries {
    /// Loads every `<name>.sql` of `dir` (none when it does not exist) and checks each
    /// against `roles` and the database; the first bad one is the error.
    pub async fn load(
        dir: &Path,
        roles: &[String],
        store: &Store,
        limits: ReadLimits,
    ) -> anyhow::Result<Queries> {
        let mut queries = HashMap::new();
        let mut entries: Vec<_> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.collect::<Result<_, _>>()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => anyhow::bail!("reading the queries directory {}: {e}", dir.display()),
        };
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let label = path.display().to_string();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let name = file_name.strip_suffix(".sql").unwrap_or_default();
            if !path.is_file() || !file::is_query_name(name) {
                anyhow::bail!(
                    "{label}: a queries directory holds only <name>.sql files, name of letters, digits, _ and -"
                );
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("{label}: cannot read it: {e}"))?;
            let query = file::parse(&label, name, &text, roles).map_err(anyhow::Error::msg)?;
            let probe = query.probe(store.dialect());
            if let Err(e) = store.check_read_only(&probe).await {
                let line = match &e {
                    ReadError::Refused {
                        position: Some(at), ..
                    } => line_at(&probe, *at),
                    _ => query.sql_line,
                };
                anyhow::bail!("{label}:{line}: {e}");
            }
            queries.insert(name.to_string(), query);
        }
        if !queries.is_empty() {
            tracing::info!(count = queries.len(), dir = %dir.display(), "named queries loaded");
        }
        Ok(Queries {
            inner: Arc::new(Inner {
                store: store.clone(),
                queries,
                limits,
            }),
        })
    }

    /// Runs `name` as `who` with `parameters` (a JSON object): the rows, as objects.
    pub async fn run(
        &self,
        who: &Identity,
        name: &str,
        parameters: &Value,
    ) -> Result<Value, ApiError> {
        let query = self
            .inner
            .queries
            .get(name)
            .ok_or_else(|| ApiError::NotFound(format!("no query `{name}`")))?;
        if !permissions::may_run(who, &query.roles) {
            return Err(ApiError::Forbidden(format!(
                "role `{}` may not run query `{name}`",
                who.role
            )));
        }
        let values = values(query, parameters)?;
        let sql = query.bound(self.inner.store.dialect(), |p| {
            values.get(p).cloned().unwrap_or(SqlValue::Null)
        });
        let rows = self
            .inner
            .store
            .read_only(&sql, self.inner.limits)
            .await
            .map_err(|e| refusal(name, e))?;
        Ok(Value::Array(rows.into_iter().map(Value::Object).collect()))
    }
}

/// The 1-based character position `at` of `text` as its line.
fn line_at(text: &str, at: usize) -> usize {
    1 + text
        .chars()
        .take(at.saturating_sub(1))
        .filter(|c| *c == '\n')
        .count()
}

/// The caller's parameters as bound values: exactly the declared ones, each a string,
/// number, boolean or null.
fn values(query: &QueryFile, parameters: &Value) -> Result<HashMap<String, SqlValue>, ApiError> {
    let empty = Map::new();
    let given = match parameters {
        Value::Object(map) => map,
        Value::Null => &empty,
        _ => {
            return Err(ApiError::bad(format!(
                "the parameters of query `{}` are a JSON object, e.g. {{\"name\": \"value\"}}",
                query.name
            )));
        }
    };
    let declared = || {
        if query.params.is_empty() {
            "none".to_string()
        } else {
            query.params.join(", ")
        }
    };
    if let Some(unknown) = given.keys().find(|k| !query.params.contains(k)) {
        return Err(ApiError::bad(format!(
            "query `{}` has no parameter `{unknown}` (it takes: {})",
            query.name,
            declared()
        )));
    }
    let mut values = HashMap::new();
    for p in &query.params {
        let value = match given.get(p) {
            None => {
                return Err(ApiError::bad(format!(
                    "query `{}` needs the parameter `{p}` (it takes: {})",
                    query.name,
                    declared()
                )));
            }
            Some(Value::Null) => SqlValue::Null,
            Some(Value::Bool(b)) => SqlValue::Bool(*b),
            Some(Value::String(s)) => SqlValue::Text(s.clone()),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => SqlValue::Int(i),
                None => match n.as_f64() {
                    Some(f) if n.is_f64() => SqlValue::Float(f),
                    _ => {
                        return Err(ApiError::bad(format!(
                            "parameter `{p}` of query `{}` is out of range: {n}",
                            query.name
                        )));
                    }
                },
            },
            Some(Value::Array(_) | Value::Object(_)) => {
                return Err(ApiError::bad(format!(
                    "parameter `{p}` of query `{}` must be a string, number, boolean or null, not an {}",
                    query.name,
                    if given[p].is_array() {
                        "array"
                    } else {
                        "object"
                    }
                )));
            }
        };
        values.insert(p.clone(), value);
    }
    Ok(values)
}

fn refusal(name: &str, e: ReadError) -> ApiError {
    match e {
        ReadError::TooManyRows(_) | ReadError::Refused { .. } => {
            ApiError::bad(format!("query `{name}`: {e}"))
        }
        ReadError::Timeout(_) => ApiError::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("query `{name}`: {e}"),
        ),
        ReadError::Column { .. } => ApiError::Status(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query `{name}`: {e}"),
        ),
        ReadError::Other(e) => ApiError::Internal(e.into()),
    }
}
