//! The floor's records: the bench app's `open` and `owned` objects in SQLite through
//! sqlx, read with the statements livebase runs for the same requests (copied from its
//! `sqlx::query` debug log: `store::statements::{list, count}` and the by-id read), so
//! the `reads` scenario can tell livebase's cost from the database's.
//!
//! Same table shape and indexes as livebase creates (`id` INTEGER PRIMARY KEY
//! AUTOINCREMENT, the hidden `lb_owner`, the fields in name order, the `lbo_<object>`
//! owner index), the same connection options (WAL, `synchronous = NORMAL`, a 10 s busy
//! timeout, foreign keys off) and the same pools (one writer, 16 readers: livebase's
//! default `--db-pool-size`).
//!
//! What it leaves out: the schema files (the two objects are written down here),
//! permissions and roles (the caller is whoever the token names, see `caller`), field
//! validation beyond types, every filter operator but `equals`, sort and search, events,
//! actions and realtime.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
// Every statement is built from the names in `OBJECTS` (filter fields are matched
// against them); values are bound, so `AssertSqlSafe` holds.
use sqlx::{Arguments, AssertSqlSafe, Row};

/// livebase's default `--db-pool-size`, and its largest `pageSize`.
const READERS: u32 = 16;
const MAX_PAGE_SIZE: i64 = 1000;
/// livebase's `http::bulk::MAX_STEPS`.
const MAX_STEPS: usize = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Int,
    Text,
}

/// An object of `bench/app/schema` as livebase stores it: fields in name order.
struct Object {
    name: &'static str,
    /// `rowSecurity: owner`: a caller reads only the rows whose `lb_owner` it is.
    owned: bool,
    fields: &'static [(&'static str, Ty)],
}

const OBJECTS: [Object; 2] = [
    Object {
        name: "open",
        owned: false,
        fields: &[("body", Ty::Text), ("seq", Ty::Int), ("tag", Ty::Text)],
    },
    Object {
        name: "owned",
        owned: true,
        fields: &[("body", Ty::Text), ("seq", Ty::Int)],
    },
];

fn object(name: &str) -> Result<&'static Object, Answer> {
    OBJECTS
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no object named `{name}`")))
}

/// `"id", "lb_owner", <fields>`: livebase's record columns.
fn columns(o: &Object) -> String {
    let mut out = String::from("\"id\", \"lb_owner\"");
    for (name, _) in o.fields {
        out.push_str(&format!(", \"{name}\""));
    }
    out
}

pub struct Db {
    writer: SqlitePool,
    reader: SqlitePool,
}

type Answer = (StatusCode, Json<Value>);

fn fail(status: StatusCode, message: impl Into<String>) -> Answer {
    (status, Json(json!({ "Message": message.into() })))
}

fn internal(e: sqlx::Error) -> Answer {
    eprintln!("floor: {e}");
    fail(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Opens a fresh database at `path` (deleted first, with its WAL files) and creates the
/// objects' tables as livebase does.
pub async fn open(path: &Path) -> anyhow::Result<Db> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        std::fs::remove_file(&file).ok();
    }
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(false);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    for o in &OBJECTS {
        let mut create = String::from(
            "CREATE TABLE \"{}\" (\"id\" INTEGER PRIMARY KEY AUTOINCREMENT, \"lb_owner\" INTEGER",
        )
        .replace("{}", o.name);
        for (name, ty) in o.fields {
            let ty = if *ty == Ty::Int { "INTEGER" } else { "TEXT" };
            create.push_str(&format!(", \"{name}\" {ty}"));
        }
        create.push(')');
        sqlx::query(AssertSqlSafe(create)).execute(&writer).await?;
        let index = format!(
            "CREATE INDEX IF NOT EXISTS \"lbo_{0}\" ON \"{0}\" (\"lb_owner\")",
            o.name
        );
        sqlx::query(AssertSqlSafe(index)).execute(&writer).await?;
    }
    let reader = SqlitePoolOptions::new()
        .max_connections(READERS)
        .connect_with(options)
        .await?;
    Ok(Db { writer, reader })
}

/// The caller: the floor verifies no token; `Bearer floor-<n>` (what the harness hands
/// out for the floor) is user `n`, and row security compares that number.
fn caller(headers: &HeaderMap) -> Result<i64, Answer> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer floor-"))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            fail(
                StatusCode::UNAUTHORIZED,
                "missing credentials: Authorization must be `Bearer floor-<n>`",
            )
        })
}

/// A row as livebase answers it: its fields (null when NULL), `id`, and
/// `__metadata: {id: "<id>"}`; `lb_owner` stays hidden.
fn row_json(o: &Object, row: &SqliteRow) -> Result<(i64, Map<String, Value>), sqlx::Error> {
    let id: i64 = row.try_get(0)?;
    let owner: Option<i64> = row.try_get(1)?;
    let mut out = Map::new();
    out.insert("id".into(), id.into());
    for (i, (name, ty)) in o.fields.iter().enumerate() {
        let value = match ty {
            Ty::Int => row.try_get::<Option<i64>, _>(i + 2)?.map(Value::from),
            Ty::Text => row.try_get::<Option<String>, _>(i + 2)?.map(Value::from),
        };
        out.insert((*name).into(), value.unwrap_or(Value::Null));
    }
    out.insert("__metadata".into(), json!({ "id": id.to_string() }));
    Ok((owner.unwrap_or(0), out))
}

/// `GET /1/objects/{object}/{id}`: livebase's by-id read, then its owner check (another
/// user's row answers as a missing one).
pub async fn get_one(
    State(app): State<std::sync::Arc<super::App>>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    match get_one_inner(&app.db, &name, &id, &headers).await {
        Ok(row) => (StatusCode::OK, Json(Value::Object(row))),
        Err(answer) => answer,
    }
}

async fn get_one_inner(
    db: &Db,
    name: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Map<String, Value>, Answer> {
    let me = caller(headers)?;
    let o = object(name)?;
    let id: i64 = id
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("`{id}` is not a row id")))?;
    let sql = format!("SELECT {} FROM \"{}\" WHERE \"id\" = ?", columns(o), o.name);
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&db.reader)
        .await
        .map_err(internal)?;
    let missing = || {
        fail(
            StatusCode::NOT_FOUND,
            format!("no `{name}` row with id {id}"),
        )
    };
    let row = row.ok_or_else(missing)?;
    let (owner, row) = row_json(o, &row).map_err(internal)?;
    if o.owned && owner != me {
        return Err(missing());
    }
    Ok(row)
}

/// `GET /1/objects/{object}?pageSize&pageNumber&filter`: livebase's one-statement page
/// with the count of every match as a scalar subquery, the owner restriction under owner row security, `equals`
/// conditions; past the last page the count is asked apart, as livebase does.
pub async fn list(
    State(app): State<std::sync::Arc<super::App>>,
    UrlPath(name): UrlPath<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    match list_inner(&app.db, &name, &params, &headers).await {
        Ok(answer) => (StatusCode::OK, Json(answer)),
        Err(answer) => answer,
    }
}

async fn list_inner(
    db: &Db,
    name: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Value, Answer> {
    let me = caller(headers)?;
    let o = object(name)?;
    let number = |key: &str, default: i64, max: i64| match params.get(key) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(fail(
                StatusCode::BAD_REQUEST,
                format!("{key} must be a whole number from 1 to {max}, got `{text}`"),
            )),
        },
    };
    let page_size = number("pageSize", 20, MAX_PAGE_SIZE)?;
    let page_number = number("pageNumber", 1, 1_000_000_000)?;
    let conditions = match params.get("filter").map(|f| f.trim()) {
        None | Some("") => Vec::new(),
        Some(text) => filter(o, text)?,
    };

    // ` WHERE 1 = 1[ AND "lb_owner" = ?][ AND "<field>" = ? | IS NULL]…`, as
    // livebase's `statements::push_where`.
    let mut clause = String::from(" WHERE 1 = 1");
    if o.owned {
        clause.push_str(" AND \"lb_owner\" = ?");
    }
    for (field, value) in &conditions {
        match value {
            Value::Null => clause.push_str(&format!(" AND \"{field}\" IS NULL")),
            _ => clause.push_str(&format!(" AND \"{field}\" = ?")),
        }
    }
    // The clause's values, bound `times` times in a row (the count's clause, then the
    // page's).
    let clause_args = |times: usize| -> Result<SqliteArguments, Answer> {
        let mut args = SqliteArguments::default();
        let encode = |e| internal(sqlx::Error::Encode(e));
        for _ in 0..times {
            if o.owned {
                args.add(me).map_err(encode)?;
            }
            for (_, value) in &conditions {
                match value {
                    Value::Null => {}
                    Value::String(s) => args.add(s.clone()).map_err(encode)?,
                    other => args
                        .add(other.as_i64().unwrap_or_default())
                        .map_err(encode)?,
                }
            }
        }
        Ok(args)
    };
    let count_args = clause_args(1)?;
    let mut args = clause_args(2)?;
    let sql = format!(
        "SELECT {}, (SELECT COUNT(*) FROM \"{name}\"{clause}) FROM \"{name}\"{clause} \
         ORDER BY \"id\" ASC LIMIT ? OFFSET ?",
        columns(o),
        name = o.name
    );
    args.add(page_size)
        .map_err(|e| internal(sqlx::Error::Encode(e)))?;
    args.add(page_size * (page_number - 1))
        .map_err(|e| internal(sqlx::Error::Encode(e)))?;
    let rows = sqlx::query_with(AssertSqlSafe(sql), args)
        .fetch_all(&db.reader)
        .await
        .map_err(internal)?;
    let count_column = 2 + o.fields.len();
    let mut total = None;
    let mut data = Vec::with_capacity(rows.len());
    for row in &rows {
        total = Some(row.try_get::<i64, _>(count_column).map_err(internal)?);
        data.push(Value::Object(row_json(o, row).map_err(internal)?.1));
    }
    let total = match total {
        Some(total) => total,
        None if page_number <= 1 => 0,
        None => {
            let sql = format!("SELECT COUNT(*) FROM \"{}\"{clause}", o.name);
            sqlx::query_scalar_with::<_, i64, _>(AssertSqlSafe(sql), count_args)
                .fetch_one(&db.reader)
                .await
                .map_err(internal)?
        }
    };
    Ok(json!({ "data": data, "totalRows": total }))
}

/// `filter`: one `{fieldName, operator, value}` or an array of them, `equals` only, the
/// value typed by its field (or null).
fn filter(o: &Object, text: &str) -> Result<Vec<(&'static str, Value)>, Answer> {
    let bad = |m: String| fail(StatusCode::BAD_REQUEST, m);
    let items = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items,
        Ok(one @ Value::Object(_)) => vec![one],
        _ => return Err(bad("filter must be a JSON array of objects".into())),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let field_name = item["fieldName"].as_str().unwrap_or_default();
        let Some((field, ty)) = o.fields.iter().find(|(f, _)| *f == field_name) else {
            return Err(bad(format!(
                "unknown field `{field_name}` for object `{}`",
                o.name
            )));
        };
        if item["operator"] != "equals" {
            return Err(bad(format!(
                "the floor supports only the `equals` operator, not {}",
                item["operator"]
            )));
        }
        let value = item.get("value").cloned().unwrap_or(Value::Null);
        let typed = match (ty, &value) {
            (_, Value::Null) | (Ty::Text, Value::String(_)) => true,
            (Ty::Int, v) => v.as_i64().is_some(),
            _ => false,
        };
        if !typed {
            return Err(bad(format!("`{field}` cannot equal {value}")));
        }
        out.push((*field, value));
    }
    Ok(out)
}

/// `POST /1/bulk` of `{method: "POST", url: "/1/objects/<object>", data}` steps, one
/// transaction, `lb_owner` the caller: how the harness seeds the floor's rows, as it
/// seeds livebase's. Answers `[{__metadata: {id}}]` per step.
pub async fn bulk(
    State(app): State<std::sync::Arc<super::App>>,
    headers: HeaderMap,
    Json(steps): Json<Value>,
) -> Answer {
    match bulk_inner(&app.db, &headers, steps).await {
        Ok(answer) => (StatusCode::OK, Json(answer)),
        Err(answer) => answer,
    }
}

async fn bulk_inner(db: &Db, headers: &HeaderMap, steps: Value) -> Result<Value, Answer> {
    let me = caller(headers)?;
    let bad = |m: String| fail(StatusCode::BAD_REQUEST, m);
    let Value::Array(steps) = steps else {
        return Err(bad("a bulk body is a JSON array of steps".into()));
    };
    if steps.len() > MAX_STEPS {
        return Err(fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a bulk has at most {MAX_STEPS} steps"),
        ));
    }
    let mut tx = db.writer.begin().await.map_err(internal)?;
    let mut answers = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let url = step["url"].as_str().unwrap_or_default();
        let Some(name) = url
            .strip_prefix("/1/objects/")
            .filter(|_| step["method"] == "POST")
        else {
            return Err(bad(format!(
                "step {i}: the floor's bulk only creates (POST /1/objects/<object>)"
            )));
        };
        let o = object(name)?;
        let Value::Object(data) = &step["data"] else {
            return Err(bad(format!("step {i}: data must be an object")));
        };
        if let Some(unknown) = data.keys().find(|k| !o.fields.iter().any(|(f, _)| f == k)) {
            return Err(bad(format!("step {i}: unknown field `{unknown}`")));
        }
        let names: Vec<String> = o.fields.iter().map(|(f, _)| format!("\"{f}\"")).collect();
        let sql = format!(
            "INSERT INTO \"{}\" (\"lb_owner\", {}) VALUES (?{}) RETURNING \"id\"",
            o.name,
            names.join(", "),
            ", ?".repeat(names.len())
        );
        let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).bind(me);
        for (field, ty) in o.fields {
            query = match (ty, data.get(*field).unwrap_or(&Value::Null)) {
                (_, Value::Null) => query.bind(None::<i64>),
                (Ty::Int, Value::Number(n)) if n.as_i64().is_some() => query.bind(n.as_i64()),
                (Ty::Text, Value::String(s)) => query.bind(s.clone()),
                (_, v) => return Err(bad(format!("step {i}: `{field}` cannot be {v}"))),
            };
        }
        let id = query.fetch_one(&mut *tx).await.map_err(internal)?;
        answers.push(json!({ "__metadata": { "id": id.to_string() } }));
    }
    tx.commit().await.map_err(internal)?;
    Ok(Value::Array(answers))
}
