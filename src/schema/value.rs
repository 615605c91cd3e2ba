//! Typed values on their way into or out of the database.
//!
//! A `SqlValue` is what a JSON input becomes once a schema field has checked it; both
//! backends bind it (SQLite stores bools as integers, datetimes as canonical UTC text
//! and JSON as text, so that ordering and equality behave the same as on PostgreSQL).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Json(Value),
    DateTime(DateTime<Utc>),
}

impl SqlValue {
    /// The JSON a client sees for this value.
    pub fn to_json(&self) -> Value {
        match self {
            SqlValue::Null => Value::Null,
            SqlValue::Int(i) => Value::from(*i),
            SqlValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            SqlValue::Bool(b) => Value::Bool(*b),
            SqlValue::Text(s) => Value::String(s.clone()),
            SqlValue::Json(v) => v.clone(),
            SqlValue::DateTime(d) => Value::String(format_datetime(d)),
        }
    }
}

/// The one text form of a datetime: RFC 3339, UTC, milliseconds. SQLite stores this
/// exact form, so text comparison there orders like timestamps do on PostgreSQL.
pub fn format_datetime(d: &DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Accepts RFC 3339 (`2026-11-22T10:00:00Z`, any offset), a bare date, or a date and
/// time without offset (taken as UTC). Precision beyond milliseconds is dropped so that
/// both databases hold the same value.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let parsed = if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        d.with_timezone(&Utc)
    } else if let Ok(n) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        n.and_utc()
    } else if let Ok(n) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f") {
        n.and_utc()
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)?.and_utc()
    } else {
        return None;
    };
    // Years 1–9999 only: PostgreSQL's range is wider but not unbounded, and within it
    // SQLite's fixed-width text form sorts exactly like the timestamps it stands for.
    if !(1..=9999).contains(&chrono::Datelike::year(&parsed)) {
        return None;
    }
    let millis = parsed.timestamp_millis();
    DateTime::from_timestamp_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_normalise_to_one_text_form() {
        let cases = [
            ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00.000Z"),
            ("2026-11-22T11:00:00+01:00", "2026-11-22T10:00:00.000Z"),
            ("2026-11-22T10:00:00.123456Z", "2026-11-22T10:00:00.123Z"),
            ("2026-11-22", "2026-11-22T00:00:00.000Z"),
            ("2026-11-22 10:00:00", "2026-11-22T10:00:00.000Z"),
        ];
        for (input, want) in cases {
            let got = parse_datetime(input).map(|d| format_datetime(&d));
            assert_eq!(got.as_deref(), Some(want), "input {input}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-22T25:00:00Z",
            "1'; DROP",
        ] {
            assert!(parse_datetime(bad).is_none(), "accepted {bad}");
        }
    }
}
