//! Reading a list request's parameters (`pageSize`, `pageNumber`, `filter`, `sort`,
//! `search`) into a checked `ListQuery`. Field names are looked up in the schema and
//! values typed by their field, so nothing a client writes reaches SQL as text.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::schema::value::SqlValue;
use crate::schema::{Field, FieldType, ObjectSchema, json_has_nul};
use crate::store::statements::{Condition, FilterOp, ListQuery};

pub const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_CONDITIONS: usize = 50;
const MAX_IN_VALUES: usize = 1000;
const MAX_SEARCH_CHARS: usize = 200;
/// Longest value of `startsWith`, `endsWith`, `contains` and `notContains`. On SQLite
/// these become a Unicode case-insensitive regex, which the regex crate refuses past
/// its compiled-size limit (about 44,000 characters of `k`): past it a query fails
/// with a 500, and each such value costs a large compile per query.
const MAX_MATCH_CHARS: usize = 1000;
const MAX_PAGE_NUMBER: u32 = 1_000_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(rename = "fieldName")]
    field_name: String,
    operator: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSort {
    #[serde(rename = "fieldName")]
    field_name: String,
    #[serde(default)]
    order: Option<String>,
}

pub fn parse(
    object: &ObjectSchema,
    params: &HashMap<String, String>,
    max_page_size: u32,
) -> Result<ListQuery, ApiError> {
    let page_size = match params.get("pageSize") {
        // A server configured with `--max-page-size` below the default never answers
        // more rows than that limit, asked or not.
        None => DEFAULT_PAGE_SIZE.min(max_page_size),
        Some(s) => parse_bounded("pageSize", s, max_page_size)?,
    };
    let page_number = match params.get("pageNumber") {
        None => 1,
        Some(s) => parse_bounded("pageNumber", s, MAX_PAGE_NUMBER)?,
    };
    let mut matches_nothing = false;
    let conditions = match params
        .get("filter")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => Vec::new(),
        Some(text) => parse_filter(object, text, &mut matches_nothing)?,
    };
    let sort = match params
        .get("sort")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => Vec::new(),
        Some(text) => parse_sort(object, text)?,
    };
    let search = match params
        .get("search")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(s) if s.chars().count() > MAX_SEARCH_CHARS => {
            return Err(ApiError::bad(format!(
                "search is longer than {MAX_SEARCH_CHARS} characters"
            )));
        }
        // No stored text holds a NUL, so such a search matches nothing.
        Some(s) if s.contains('\0') => {
            matches_nothing = true;
            None
        }
        Some(s) => Some(s.to_string()),
    };
    Ok(ListQuery {
        conditions,
        search,
        sort,
        page_size,
        page_number,
        owner: None,
        matches_nothing,
    })
}

fn parse_bounded(name: &str, text: &str, max: u32) -> Result<u32, ApiError> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(format!(
            "{name} must be a whole number from 1 to {max}, got `{text}`"
        ))),
    }
}

/// `id` is filterable and sortable like a field though no schema file lists it.
fn lookup_field(object: &ObjectSchema, name: &str) -> Result<Field, ApiError> {
    if name == "id" {
        return Ok(Field {
            name: "id".into(),
            ty: FieldType::Int,
            required: true,
            unique: true,
            default: None,
            max_length: None,
        });
    }
    object.field(name).cloned().ok_or_else(|| {
        ApiError::bad(format!(
            "unknown field `{name}` for object `{}`",
            object.name
        ))
    })
}

fn one_or_many<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<Vec<T>, ApiError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad(format!("{what} is not valid JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        single @ Value::Object(_) => vec![single],
        _ => {
            return Err(ApiError::bad(format!(
                "{what} must be a JSON array of objects"
            )));
        }
    };
    items
        .into_iter()
        .map(|item| serde_json::from_value(item).map_err(|e| ApiError::bad(format!("{what}: {e}"))))
        .collect()
}

/// Conditions whose value holds a NUL character compare against something no row can
/// store: a positive one makes the whole list empty, a negated one is always true and
/// is dropped. Either way the NUL never reaches the database.
fn parse_filter(
    object: &ObjectSchema,
    text: &str,
    matches_nothing: &mut bool,
) -> Result<Vec<Condition>, ApiError> {
    let raws: Vec<RawCondition> = one_or_many("filter", text)?;
    if raws.len() > MAX_CONDITIONS {
        return Err(ApiError::bad(format!(
            "filter has more than {MAX_CONDITIONS} conditions"
        )));
    }
    let mut conditions = Vec::with_capacity(raws.len());
    for mut raw in raws {
        let negated = matches!(raw.operator.as_str(), "notEquals" | "notContains");
        if raw.operator == "in"
            && let Value::Array(items) = &mut raw.value
        {
            items.retain(|v| !json_has_nul(v));
        } else if json_has_nul(&raw.value) {
            // Still check the field and operator, so typos are reported.
            condition(
                object,
                RawCondition {
                    value: Value::String(String::new()),
                    ..raw
                },
            )?;
            *matches_nothing |= !negated;
            continue;
        }
        conditions.push(condition(object, raw)?);
    }
    Ok(conditions)
}

fn condition(object: &ObjectSchema, raw: RawCondition) -> Result<Condition, ApiError> {
    let field = lookup_field(object, &raw.field_name)?;
    let op = match raw.operator.as_str() {
        "equals" => FilterOp::Equals,
        "notEquals" => FilterOp::NotEquals,
        "greaterThan" => FilterOp::GreaterThan,
        "greaterThanOrEqualsTo" => FilterOp::GreaterThanOrEqualsTo,
        "lessThan" => FilterOp::LessThan,
        "lessThanOrEqualsTo" => FilterOp::LessThanOrEqualsTo,
        "startsWith" => FilterOp::StartsWith,
        "endsWith" => FilterOp::EndsWith,
        "contains" => FilterOp::Contains,
        "notContains" => FilterOp::NotContains,
        "empty" => FilterOp::Empty,
        "notEmpty" => FilterOp::NotEmpty,
        "in" => FilterOp::In,
        other => {
            return Err(ApiError::bad(format!(
                "unknown filter operator `{other}` (expected equals, notEquals, greaterThan, greaterThanOrEqualsTo, lessThan, lessThanOrEqualsTo, startsWith, endsWith, contains, notContains, empty, notEmpty, in)"
            )));
        }
    };
    let value_of = |v: &Value| {
        field
            .coerce_filter_value(v)
            .map_err(|m| ApiError::bad(format!("filter on `{}`: {m}", field.name)))
    };
    let values = match op {
        FilterOp::Empty | FilterOp::NotEmpty => Vec::new(),
        FilterOp::StartsWith | FilterOp::EndsWith | FilterOp::Contains | FilterOp::NotContains => {
            if !field.ty.is_textual() {
                return Err(ApiError::bad(format!(
                    "operator `{}` applies to string and text fields; `{}` is {}",
                    raw.operator,
                    field.name,
                    field.ty.describe()
                )));
            }
            let text = match &raw.value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(ApiError::bad(format!(
                        "operator `{}` needs a string value",
                        raw.operator
                    )));
                }
            };
            if text.chars().count() > MAX_MATCH_CHARS {
                return Err(ApiError::bad(format!(
                    "filter on `{}`: `{}` takes at most {MAX_MATCH_CHARS} characters",
                    field.name, raw.operator
                )));
            }
            vec![SqlValue::Text(text)]
        }
        FilterOp::In => {
            let items: Vec<Value> = match &raw.value {
                Value::Array(items) => items.clone(),
                Value::String(s) => s
                    .split(',')
                    .map(|p| Value::String(p.trim().to_string()))
                    .collect(),
                other => vec![other.clone()],
            };
            if items.len() > MAX_IN_VALUES {
                return Err(ApiError::bad(format!(
                    "`in` takes at most {MAX_IN_VALUES} values"
                )));
            }
            items.iter().map(value_of).collect::<Result<_, _>>()?
        }
        _ => {
            if field.ty == FieldType::Json && op != FilterOp::Equals && op != FilterOp::NotEquals {
                return Err(ApiError::bad(format!(
                    "json field `{}` can only be compared with equals or notEquals",
                    field.name
                )));
            }
            if matches!(raw.value, Value::Array(_) | Value::Object(_))
                && field.ty != FieldType::Json
            {
                return Err(ApiError::bad(format!(
                    "filter on `{}`: operator `{}` needs a single value",
                    field.name, raw.operator
                )));
            }
            vec![value_of(&raw.value)?]
        }
    };
    Ok(Condition {
        field: field.name,
        ty: field.ty,
        op,
        values,
    })
}

fn parse_sort(object: &ObjectSchema, text: &str) -> Result<Vec<(String, bool)>, ApiError> {
    let raws: Vec<RawSort> = one_or_many("sort", text)?;
    if raws.len() > MAX_CONDITIONS {
        return Err(ApiError::bad("sort has too many fields"));
    }
    raws.into_iter()
        .map(|raw| {
            let field = lookup_field(object, &raw.field_name)?;
            if field.ty == FieldType::Json {
                return Err(ApiError::bad(format!(
                    "json field `{}` cannot be sorted",
                    field.name
                )));
            }
            let desc = match raw.order.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => {
                    return Err(ApiError::bad(format!(
                        "sort order `{other}` is not asc or desc"
                    )));
                }
            };
            Ok((field.name, desc))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::load_files;
    use std::path::Path;

    fn items() -> std::sync::Arc<ObjectSchema> {
        let text = r#"{"name":"items","fields":{"name":{"type":"string"},"body":{"type":"text"}}}"#;
        let dir = Path::new("schema");
        let schema = load_files(dir, [(dir.join("items.json"), text.to_string())]).unwrap();
        schema.object("items").unwrap().clone()
    }

    fn params(pairs: &[(&str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// With `--max-page-size` below the default 20, a list that names no page size
    /// answers at most that maximum.
    #[test]
    fn the_default_page_size_respects_the_configured_maximum() {
        let query = parse(&items(), &HashMap::new(), 5).unwrap();
        assert_eq!(query.page_size, 5);
        let query = parse(&items(), &HashMap::new(), 1000).unwrap();
        assert_eq!(query.page_size, DEFAULT_PAGE_SIZE);
    }

    /// A text-match value past `MAX_MATCH_CHARS` is a 400 naming the limit, not a REGEXP
    /// failure (500) on SQLite.
    #[test]
    fn text_match_values_are_bounded() {
        for op in ["startsWith", "endsWith", "contains", "notContains"] {
            let filter = |n: usize| {
                let value = "k".repeat(n);
                params(&[(
                    "filter",
                    serde_json::json!([{"fieldName": "body", "operator": op, "value": value}])
                        .to_string(),
                )])
            };
            assert!(
                parse(&items(), &filter(MAX_MATCH_CHARS), 20).is_ok(),
                "{op}"
            );
            let e = parse(&items(), &filter(44_431), 20).expect_err(op);
            assert!(matches!(e, ApiError::BadRequest(_)), "{op}: {e:?}");
            assert!(e.to_string().contains("at most 1000 characters"), "{e}");
        }
    }
}
