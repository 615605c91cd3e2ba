//! Read-only statements whose text an operator wrote (named queries): checked against
//! the database without running them, and run in a read-only transaction with a row cap
//! and a time limit, each column decoded by the type of the value it holds.
//!
//! The read-only guarantee here is the database's own (PostgreSQL `READ ONLY`
//! transactions; on SQLite a pool opened read-only with `query_only` on), so it holds
//! whatever the text's static check missed. Nothing here decides who may run what.

use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::postgres::{PgDatabaseError, PgErrorPosition, PgRow};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};

use super::{Pools, Sql, Store};
use crate::schema::value::{SqlValue, format_datetime};

/// What one run may take.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// More rows than this is an error rather than a silently cut answer.
    pub max_rows: usize,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("it returns more than {0} rows; narrow it (WHERE, LIMIT) or page it with parameters")]
    TooManyRows(usize),
    #[error("it ran longer than {0} ms")]
    Timeout(u128),
    /// The database refused the statement: its message, and (PostgreSQL) the character
    /// position in the text it points at.
    #[error("the database refused it: {message}")]
    Refused {
        message: String,
        position: Option<usize>,
    },
    #[error(
        "column `{column}` has type {ty}, which a query cannot return; cast it (e.g. CAST(… AS TEXT))"
    )]
    Column { column: String, ty: String },
    #[error(transparent)]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for ReadError {
    fn from(e: sqlx::Error) -> Self {
        match e.as_database_error() {
            // PostgreSQL's `statement_timeout` (57014) and SQLite's interrupt by the
            // progress handler (SQLITE_INTERRUPT, 9); `read_only` puts in the limit.
            Some(db) if matches!(db.code().as_deref(), Some("57014" | "9")) => {
                ReadError::Timeout(0)
            }
            Some(db) => {
                let position =
                    db.try_downcast_ref::<PgDatabaseError>()
                        .and_then(|pg| match pg.position() {
                            Some(PgErrorPosition::Original(at)) => Some(at),
                            _ => None,
                        });
                ReadError::Refused {
                    message: db.message().to_string(),
                    position,
                }
            }
            None => ReadError::Other(e),
        }
    }
}

/// PostgreSQL column types a query may return (see `pg_json`).
const PG_TYPES: [&str; 16] = [
    "INT2",
    "INT4",
    "INT8",
    "FLOAT4",
    "FLOAT8",
    "NUMERIC",
    "BOOL",
    "TEXT",
    "VARCHAR",
    "BPCHAR",
    "NAME",
    "TIMESTAMPTZ",
    "TIMESTAMP",
    "DATE",
    "JSON",
    "JSONB",
];

impl Store {
    /// Compiles `text` (no parameters) against the database without running it: unknown
    /// tables or columns and syntax errors are refused, and on PostgreSQL so are result
    /// columns of a type `read_only` could not decode.
    pub async fn check_read_only(&self, text: &str) -> Result<(), ReadError> {
        match &*self.pools {
            Pools::Sqlite { query, .. } => {
                let mut conn = query.acquire().await?;
                conn.lock_handle().await?.remove_progress_handler();
                conn.prepare(AssertSqlSafe(text.to_string()).into_sql_str())
                    .await?;
            }
            Pools::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                let statement = (&mut *tx)
                    .prepare(AssertSqlSafe(text.to_string()).into_sql_str())
                    .await?;
                for column in statement.columns() {
                    let ty = column.type_info().name().to_string();
                    if !PG_TYPES.contains(&ty.as_str()) && ty != "VOID" && ty != "UNKNOWN" {
                        return Err(ReadError::Column {
                            column: column.name().to_string(),
                            ty,
                        });
                    }
                }
                tx.rollback().await?;
            }
        }
        Ok(())
    }

    /// Runs `sql` read-only: each row an object keyed by column name.
    pub async fn read_only(
        &self,
        sql: &Sql,
        limits: ReadLimits,
    ) -> Result<Vec<Map<String, Value>>, ReadError> {
        let run = async {
            match &*self.pools {
                Pools::Sqlite { query, .. } => {
                    let mut conn = query.acquire().await?;
                    // SQLite has no statement timeout: the progress handler interrupts
                    // the statement at the deadline. Set on every use, it replaces the
                    // last run's (whose deadline has passed).
                    let deadline = std::time::Instant::now() + limits.timeout;
                    conn.lock_handle()
                        .await?
                        .set_progress_handler(10_000, move || std::time::Instant::now() < deadline);
                    let rows = sqlx::query_with(AssertSqlSafe(sql.text.clone()), sql.sqlite_args())
                        .fetch(&mut *conn);
                    collect(rows, limits.max_rows, sqlite_row).await
                }
                Pools::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SET TRANSACTION READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                    let set_timeout = format!(
                        "SET LOCAL statement_timeout = {}",
                        limits.timeout.as_millis().max(1)
                    );
                    sqlx::query(AssertSqlSafe(set_timeout))
                        .execute(&mut *tx)
                        .await?;
                    let answer = {
                        // Not kept prepared: PostgreSQL fixes a statement's parameter
                        // types, and the next run may bind other JSON kinds.
                        let rows = sqlx::query_with(AssertSqlSafe(sql.text.clone()), sql.pg_args())
                            .persistent(false)
                            .fetch(&mut *tx);
                        collect(rows, limits.max_rows, pg_row).await
                    };
                    tx.rollback().await?;
                    answer
                }
            }
        };
        // A backstop: the database's own limit (above) should answer first.
        let backstop = limits.timeout + Duration::from_millis(500);
        match tokio::time::timeout(backstop, run).await {
            Ok(Err(ReadError::Timeout(_))) | Err(_) => {
                Err(ReadError::Timeout(limits.timeout.as_millis()))
            }
            Ok(answer) => answer,
        }
    }
}

async fn collect<R>(
    mut rows: impl futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
    max_rows: usize,
    decode: fn(&R) -> Result<Map<String, Value>, ReadError>,
) -> Result<Vec<Map<String, Value>>, ReadError> {
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await? {
        if out.len() == max_rows {
            return Err(ReadError::TooManyRows(max_rows));
        }
        out.push(decode(&row)?);
    }
    Ok(out)
}

/// SQLite values carry their own type: INTEGER, REAL, TEXT (BLOB refused). A boolean
/// is an INTEGER there, so it arrives as 0 or 1.
fn sqlite_row(row: &SqliteRow) -> Result<Map<String, Value>, ReadError> {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" => Value::from(row.try_get_unchecked::<i64, _>(i)?),
                "REAL" => SqlValue::Float(row.try_get_unchecked::<f64, _>(i)?).to_json(),
                "TEXT" => Value::String(row.try_get_unchecked::<String, _>(i)?),
                other => {
                    return Err(ReadError::Column {
                        column: column.name().to_string(),
                        ty: other.to_string(),
                    });
                }
            }
        };
        out.insert(column.name().to_string(), value);
    }
    Ok(out)
}

fn pg_row(row: &PgRow) -> Result<Map<String, Value>, ReadError> {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        out.insert(column.name().to_string(), pg_json(row, i, column)?);
    }
    Ok(out)
}

fn pg_json(row: &PgRow, i: usize, column: &sqlx::postgres::PgColumn) -> Result<Value, ReadError> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = column.type_info().name().to_string();
    Ok(match ty.as_str() {
        "INT2" => Value::from(row.try_get::<i16, _>(i)?),
        "INT4" => Value::from(row.try_get::<i32, _>(i)?),
        "INT8" => Value::from(row.try_get::<i64, _>(i)?),
        "FLOAT4" => SqlValue::Float(f64::from(row.try_get::<f32, _>(i)?)).to_json(),
        "FLOAT8" => SqlValue::Float(row.try_get::<f64, _>(i)?).to_json(),
        "NUMERIC" => {
            let bytes = raw.as_bytes().map_err(sqlx::Error::Decode)?;
            numeric(bytes).ok_or_else(|| ReadError::Column {
                column: column.name().to_string(),
                ty: "NUMERIC (NaN or infinite)".into(),
            })?
        }
        "BOOL" => Value::Bool(row.try_get::<bool, _>(i)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::String(row.try_get::<String, _>(i)?),
        "TIMESTAMPTZ" => Value::String(format_datetime(&row.try_get::<DateTime<Utc>, _>(i)?)),
        "TIMESTAMP" => Value::String(
            row.try_get::<NaiveDateTime, _>(i)?
                .format("%Y-%m-%dT%H:%M:%S%.3f")
                .to_string(),
        ),
        "DATE" => Value::String(row.try_get::<NaiveDate, _>(i)?.to_string()),
        "JSON" | "JSONB" => row.try_get::<sqlx::types::Json<Value>, _>(i)?.0,
        _ => {
            return Err(ReadError::Column {
                column: column.name().to_string(),
                ty,
            });
        }
    })
}

/// PostgreSQL's binary NUMERIC (digit count, weight, sign, scale, base-10000 digits)
/// as a JSON number: an integer when it has no decimals and fits, else a float.
fn numeric(bytes: &[u8]) -> Option<Value> {
    let word = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let scale = word(6)?;
    if sign != 0x0000 && sign != 0x4000 {
        return None;
    }
    let mut value = 0f64;
    let mut integer: Option<i64> = (scale == 0).then_some(0);
    for k in 0..ndigits {
        let digit = word(8 + 2 * k)?;
        let power = weight - k as i32;
        value += f64::from(digit) * 10000f64.powi(power);
        integer = integer.and_then(|n| {
            let place = 10000i64.checked_pow(u32::try_from(power).ok()?)?;
            n.checked_add(i64::from(digit).checked_mul(place)?)
        });
    }
    let negative = sign == 0x4000;
    Some(match integer {
        Some(n) => Value::from(if negative { -n } else { n }),
        None => SqlValue::Float(if negative { -value } else { value }).to_json(),
    })
}

#[cfg(test)]
mod tests {
    use super::numeric;
    use serde_json::json;

    fn encode(ndigits: u16, weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [ndigits, weight as u16, sign, scale] {
            out.extend(w.to_be_bytes());
        }
        for d in digits {
            out.extend(d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_become_json_numbers() {
        assert_eq!(numeric(&encode(0, 0, 0, 0, &[])), Some(json!(0)));
        assert_eq!(
            numeric(&encode(2, 1, 0, 0, &[12, 3456])),
            Some(json!(123456))
        );
        assert_eq!(numeric(&encode(1, 0, 0x4000, 0, &[42])), Some(json!(-42)));
        assert_eq!(numeric(&encode(2, 0, 0, 2, &[3, 2500])), Some(json!(3.25)));
        assert_eq!(numeric(&encode(1, 1, 0, 0, &[5])), Some(json!(50000)));
        assert_eq!(numeric(&encode(0, 0, 0xC000, 0, &[])), None);
    }
}
