//! Checking one JSON value against one field.
//!
//! Writes are strict (JSON types must match: `"5"` is not an int); filter values are
//! lenient, because query strings carry numbers and booleans as text.

use serde_json::Value;

use super::value::{SqlValue, parse_datetime};
use super::{Field, FieldType};

const DEFAULT_STRING_MAX: usize = 255;

impl Field {
    /// The value a write stores for this field, or a message naming what is wrong.
    /// `null` is accepted here; whether the field may be null is the caller's rule.
    pub fn check_value(&self, value: &Value) -> Result<SqlValue, String> {
        if value.is_null() {
            return Ok(SqlValue::Null);
        }
        let wrong = |expected: &str| {
            Err(format!(
                "field `{}` expects {expected}, got {}",
                self.name,
                json_kind(value)
            ))
        };
        match &self.ty {
            FieldType::String | FieldType::Text => {
                let Some(s) = value.as_str() else {
                    return wrong("a string");
                };
                if s.contains('\0') {
                    return Err(nul_refused(&self.name));
                }
                let max = self.max_length.or(match self.ty {
                    FieldType::String => Some(DEFAULT_STRING_MAX),
                    _ => None,
                });
                if let Some(max) = max
                    && s.chars().count() > max
                {
                    return Err(format!(
                        "field `{}` is longer than {max} characters",
                        self.name
                    ));
                }
                Ok(SqlValue::Text(s.to_string()))
            }
            FieldType::Int => match value.as_i64() {
                Some(i) => Ok(SqlValue::Int(i)),
                None => wrong("an integer"),
            },
            FieldType::Float => match value.as_f64() {
                Some(f) if value.is_number() => Ok(SqlValue::Float(f)),
                _ => wrong("a number"),
            },
            FieldType::Bool => match value.as_bool() {
                Some(b) => Ok(SqlValue::Bool(b)),
                None => wrong("true or false"),
            },
            FieldType::Datetime => match value.as_str().and_then(parse_datetime) {
                Some(d) => Ok(SqlValue::DateTime(d)),
                None => wrong("a date or RFC 3339 datetime string"),
            },
            FieldType::Json => {
                if json_has_nul(value) {
                    return Err(nul_refused(&self.name));
                }
                Ok(SqlValue::Json(value.clone()))
            }
            FieldType::User | FieldType::Ref(_) => match value.as_i64() {
                Some(id) if id > 0 => Ok(SqlValue::Int(id)),
                _ => wrong("a row id (a positive integer)"),
            },
        }
    }

    /// Like `check_value`, but also takes numbers and booleans written as text, as
    /// filter values from a query string are.
    pub fn coerce_filter_value(&self, value: &Value) -> Result<SqlValue, String> {
        if let Value::String(s) = value {
            let parsed = match self.ty {
                FieldType::Int | FieldType::User | FieldType::Ref(_) => {
                    s.trim().parse::<i64>().ok().map(Value::from)
                }
                FieldType::Float => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::from),
                FieldType::Bool => match s.as_str() {
                    "true" | "1" => Some(Value::Bool(true)),
                    "false" | "0" => Some(Value::Bool(false)),
                    _ => None,
                },
                _ => None,
            };
            if let Some(v) = parsed {
                return self.check_value(&v);
            }
        }
        if let (FieldType::String | FieldType::Text, Some(n)) = (&self.ty, value.as_number()) {
            return Ok(SqlValue::Text(n.to_string()));
        }
        // Filter values are compared, never stored: no length limit applies.
        let unbounded = Field {
            max_length: Some(usize::MAX),
            ..self.clone()
        };
        unbounded.check_value(value)
    }
}

/// PostgreSQL cannot store U+0000 in text or JSON, and in SQLite it would cut C
/// strings short; refusing it keeps both databases holding the same values.
fn nul_refused(field: &str) -> String {
    format!("field `{field}` contains a NUL character (U+0000), which cannot be stored")
}

/// Whether any string or key inside a JSON value holds U+0000.
pub fn json_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(ty: FieldType) -> Field {
        Field {
            name: "f".into(),
            ty,
            required: false,
            unique: false,
            default: None,
            max_length: None,
        }
    }

    #[test]
    fn writes_are_strict_about_json_types() {
        let table = [
            (FieldType::String, json!("x"), true),
            (FieldType::String, json!(5), false),
            (FieldType::String, json!("x".repeat(256)), false),
            (FieldType::Text, json!("x".repeat(10_000)), true),
            (FieldType::Int, json!(5), true),
            (FieldType::Int, json!(5.5), false),
            (FieldType::Int, json!("5"), false),
            (FieldType::Float, json!(5), true),
            (FieldType::Float, json!("5"), false),
            (FieldType::Bool, json!(true), true),
            (FieldType::Bool, json!(1), false),
            (FieldType::Datetime, json!("2026-01-01"), true),
            (FieldType::Datetime, json!("soon"), false),
            (FieldType::Json, json!({"a": [1]}), true),
            (FieldType::String, json!("a\u{0}b"), false),
            (FieldType::Text, json!("\u{0}"), false),
            (FieldType::Json, json!({"k": ["\u{0}"]}), false),
            (FieldType::Json, json!({"\u{0}": 1}), false),
            (FieldType::Datetime, json!("-5000-01-01"), false),
            (FieldType::Datetime, json!("9999-12-31T23:59:59Z"), true),
            (FieldType::Datetime, json!("+10000-01-01T00:00:00Z"), false),
            (FieldType::User, json!(3), true),
            (FieldType::User, json!(0), false),
            (FieldType::Ref("lists".into()), json!(-1), false),
        ];
        for (ty, value, ok) in table {
            let got = field(ty.clone()).check_value(&value);
            assert_eq!(got.is_ok(), ok, "{ty:?} {value}: {got:?}");
        }
    }

    #[test]
    fn filters_take_numbers_as_text() {
        assert_eq!(
            field(FieldType::Int).coerce_filter_value(&json!("42")),
            Ok(SqlValue::Int(42))
        );
        assert_eq!(
            field(FieldType::Bool).coerce_filter_value(&json!("false")),
            Ok(SqlValue::Bool(false))
        );
        assert!(
            field(FieldType::Int)
                .coerce_filter_value(&json!("1 OR 1=1"))
                .is_err()
        );
    }
}
