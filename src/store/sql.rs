//! The one place dynamic SQL is assembled.
//!
//! `Sql` carries text and the values bound to it. Values only ever enter through
//! `bind` (a placeholder, never text), identifiers only through `ident`, which refuses
//! anything that is not a validated schema name. The dialect decides placeholder style
//! and how each value is bound.

use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};

use crate::schema::value::{SqlValue, format_datetime};
use crate::schema::{FieldType, is_valid_identifier};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Sql {
    pub dialect: Dialect,
    pub text: String,
    pub args: Vec<SqlValue>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Sql {
            dialect,
            text: String::with_capacity(128),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// A quoted identifier. Names reach here only from the validated schema or from
    /// fixed internal names; the check makes a slip loud instead of injectable.
    pub fn ident(&mut self, name: &str) -> &mut Self {
        assert!(
            is_valid_identifier(name),
            "identifier `{name}` did not come from the schema"
        );
        self.text.push('"');
        self.text.push_str(name);
        self.text.push('"');
        self
    }

    /// A bound value. NULL is written as the literal so PostgreSQL infers the column's
    /// type instead of the type of whatever Rust `None` we would bind.
    pub fn bind(&mut self, value: SqlValue) -> &mut Self {
        if value == SqlValue::Null {
            self.text.push_str("NULL");
            return self;
        }
        self.args.push(value);
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.args.len().to_string());
            }
        }
        self
    }

    /// `"a", "b", "c"`
    pub fn ident_list<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> &mut Self {
        for (i, name) in names.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.ident(name);
        }
        self
    }

    pub(crate) fn sqlite_args(&self) -> SqliteArguments {
        use sqlx::Arguments;
        let mut args = SqliteArguments::default();
        for v in &self.args {
            let r = match v {
                SqlValue::Null => args.add(Option::<i64>::None),
                SqlValue::Int(i) => args.add(*i),
                SqlValue::Float(f) => args.add(*f),
                SqlValue::Bool(b) => args.add(i64::from(*b)),
                SqlValue::Text(s) => args.add(s.clone()),
                SqlValue::Json(j) => args.add(j.to_string()),
                SqlValue::DateTime(d) => args.add(format_datetime(d)),
            };
            r.expect("binding an owned value cannot fail");
        }
        args
    }

    pub(crate) fn pg_args(&self) -> PgArguments {
        use sqlx::Arguments;
        let mut args = PgArguments::default();
        for v in &self.args {
            let r = match v {
                SqlValue::Null => args.add(Option::<i64>::None),
                SqlValue::Int(i) => args.add(*i),
                SqlValue::Float(f) => args.add(*f),
                SqlValue::Bool(b) => args.add(*b),
                SqlValue::Text(s) => args.add(s.clone()),
                SqlValue::Json(j) => args.add(sqlx::types::Json(j.clone())),
                SqlValue::DateTime(d) => args.add(*d),
            };
            r.expect("binding an owned value cannot fail");
        }
        args
    }
}

/// Reads column `idx` of a SQLite row as the JSON a client sees for a field of `ty`.
pub(crate) fn sqlite_value(
    row: &SqliteRow,
    idx: usize,
    ty: &FieldType,
) -> Result<serde_json::Value, sqlx::Error> {
    use serde_json::Value;
    Ok(match ty {
        FieldType::String | FieldType::Text | FieldType::Datetime => row
            .try_get::<Option<String>, _>(idx)?
            .map_or(Value::Null, Value::String),
        FieldType::Int | FieldType::User | FieldType::Ref(_) => row
            .try_get::<Option<i64>, _>(idx)?
            .map_or(Value::Null, Value::from),
        FieldType::Float => row
            .try_get::<Option<f64>, _>(idx)?
            .map_or(Value::Null, |f| SqlValue::Float(f).to_json()),
        FieldType::Bool => row
            .try_get::<Option<i64>, _>(idx)?
            .map_or(Value::Null, |b| Value::Bool(b != 0)),
        FieldType::Json => match row.try_get::<Option<String>, _>(idx)? {
            None => Value::Null,
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            }
        },
    })
}

/// Reads column `idx` of a PostgreSQL row as the JSON a client sees for a field of `ty`.
pub(crate) fn pg_value(
    row: &PgRow,
    idx: usize,
    ty: &FieldType,
) -> Result<serde_json::Value, sqlx::Error> {
    use serde_json::Value;
    Ok(match ty {
        FieldType::String | FieldType::Text => row
            .try_get::<Option<String>, _>(idx)?
            .map_or(Value::Null, Value::String),
        FieldType::Int | FieldType::User | FieldType::Ref(_) => row
            .try_get::<Option<i64>, _>(idx)?
            .map_or(Value::Null, Value::from),
        FieldType::Float => row
            .try_get::<Option<f64>, _>(idx)?
            .map_or(Value::Null, |f| SqlValue::Float(f).to_json()),
        FieldType::Bool => row
            .try_get::<Option<bool>, _>(idx)?
            .map_or(Value::Null, Value::Bool),
        FieldType::Datetime => row
            .try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(idx)?
            .map_or(Value::Null, |d| Value::String(format_datetime(&d))),
        FieldType::Json => row
            .try_get::<Option<sqlx::types::Json<Value>>, _>(idx)?
            .map_or(Value::Null, |j| j.0),
    })
}

/// Column types per dialect. SQLite keeps datetimes as canonical text (see `value`).
pub fn column_type(dialect: Dialect, ty: &FieldType) -> &'static str {
    match (dialect, ty) {
        (Dialect::Sqlite, FieldType::String | FieldType::Text | FieldType::Datetime) => "TEXT",
        (Dialect::Sqlite, FieldType::Json) => "TEXT",
        (Dialect::Sqlite, FieldType::Float) => "REAL",
        (Dialect::Sqlite, _) => "INTEGER",
        (Dialect::Postgres, FieldType::String | FieldType::Text) => "TEXT",
        (Dialect::Postgres, FieldType::Datetime) => "TIMESTAMPTZ",
        (Dialect::Postgres, FieldType::Json) => "JSONB",
        (Dialect::Postgres, FieldType::Float) => "DOUBLE PRECISION",
        (Dialect::Postgres, FieldType::Bool) => "BOOLEAN",
        (Dialect::Postgres, _) => "BIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect_and_null_is_literal() {
        for (dialect, want) in [
            (
                Dialect::Sqlite,
                r#"SELECT * FROM "items" WHERE "a" = ? AND "b" IS NULL OR "c" = ?"#,
            ),
            (
                Dialect::Postgres,
                r#"SELECT * FROM "items" WHERE "a" = $1 AND "b" IS NULL OR "c" = $2"#,
            ),
        ] {
            let mut sql = Sql::new(dialect);
            sql.push("SELECT * FROM ")
                .ident("items")
                .push(" WHERE ")
                .ident("a")
                .push(" = ")
                .bind(SqlValue::Int(1))
                .push(" AND ")
                .ident("b")
                .push(" IS ")
                .bind(SqlValue::Null)
                .push(" OR ")
                .ident("c")
                .push(" = ")
                .bind(SqlValue::Text("x'; DROP TABLE items; --".into()));
            assert_eq!(sql.text, want);
            assert_eq!(sql.args.len(), 2);
        }
    }

    #[test]
    #[should_panic(expected = "did not come from the schema")]
    fn identifiers_outside_the_schema_are_refused() {
        Sql::new(Dialect::Sqlite).ident("name\"; DROP TABLE x; --");
    }
}
