//! The filter and sort language, structured: `arbitrary` builds conditions from the
//! example objects' real field names, the real operators and JSON values of every
//! shape (plus arbitrary names and operators), so most inputs get past JSON syntax and
//! field lookup into value coercion and SQL building. The text is what a client would
//! send as `filter` and `sort`.
#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use livebase::records::query;
use livebase_fuzz::{check_list_query, example_objects};
use serde_json::{Map, Value, json};

const OPERATORS: [&str; 13] = [
    "equals",
    "notEquals",
    "greaterThan",
    "greaterThanOrEqualsTo",
    "lessThan",
    "lessThanOrEqualsTo",
    "startsWith",
    "endsWith",
    "contains",
    "notContains",
    "empty",
    "notEmpty",
    "in",
];

#[derive(Arbitrary, Debug)]
struct Input {
    object: u8,
    /// A single object instead of an array (the parser accepts both).
    single_filter: bool,
    filter: Option<Vec<RawCondition>>,
    sort: Option<Vec<RawSort>>,
    page_size: Option<Number>,
    page_number: Option<Number>,
    search: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct RawCondition {
    field: Name,
    operator: Operator,
    value: Option<Json>,
    /// An unknown key, which the parser must refuse.
    extra: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct RawSort {
    field: Name,
    order: Option<Order>,
}

#[derive(Arbitrary, Debug)]
enum Name {
    Field(u8),
    Id,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Operator {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Order {
    Asc,
    Desc,
    Upper,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Number {
    Small(u8),
    Any(i64),
    Text(String),
}

/// A JSON value of bounded depth (the query parser sees at most what serde_json's own
/// recursion limit lets through; `arbitrary` keeps it small).
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    NumberText(i32),
    Date(u16, u8, u8),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(i) => json!(i),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Text(s) => json!(s),
            Json::NumberText(i) => json!(i.to_string()),
            Json::Date(y, m, d) => json!(format!("{y:04}-{m:02}-{d:02}")),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

fn name(object: &livebase::schema::ObjectSchema, name: &Name) -> String {
    match name {
        Name::Field(i) if !object.fields.is_empty() => object.fields
            [usize::from(*i) % object.fields.len()]
        .name
        .clone(),
        Name::Field(_) | Name::Id => "id".into(),
        Name::Other(s) => s.clone(),
    }
}

fn number(n: &Number) -> String {
    match n {
        Number::Small(n) => n.to_string(),
        Number::Any(n) => n.to_string(),
        Number::Text(s) => s.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let objects = example_objects();
    let object = &objects[usize::from(input.object) % objects.len()];
    let mut params = HashMap::new();
    if let Some(conditions) = &input.filter {
        let mut items: Vec<Value> = conditions
            .iter()
            .map(|c| {
                let mut item = Map::new();
                item.insert("fieldName".into(), json!(name(object, &c.field)));
                let operator = match &c.operator {
                    Operator::Known(i) => OPERATORS[usize::from(*i) % OPERATORS.len()].into(),
                    Operator::Other(s) => s.clone(),
                };
                item.insert("operator".into(), json!(operator));
                if let Some(value) = &c.value {
                    item.insert("value".into(), value.to_value());
                }
                if let Some(extra) = &c.extra {
                    item.insert(extra.clone(), Value::Null);
                }
                Value::Object(item)
            })
            .collect();
        let filter = if input.single_filter && items.len() == 1 {
            items.remove(0)
        } else {
            Value::Array(items)
        };
        params.insert("filter".to_string(), filter.to_string());
    }
    if let Some(sort) = &input.sort {
        let items: Vec<Value> = sort
            .iter()
            .map(|s| {
                let mut item = Map::new();
                item.insert("fieldName".into(), json!(name(object, &s.field)));
                match &s.order {
                    None => {}
                    Some(Order::Asc) => {
                        item.insert("order".into(), json!("asc"));
                    }
                    Some(Order::Desc) => {
                        item.insert("order".into(), json!("desc"));
                    }
                    Some(Order::Upper) => {
                        item.insert("order".into(), json!("DESC"));
                    }
                    Some(Order::Other(o)) => {
                        item.insert("order".into(), json!(o));
                    }
                }
                Value::Object(item)
            })
            .collect();
        params.insert("sort".to_string(), Value::Array(items).to_string());
    }
    if let Some(n) = &input.page_size {
        params.insert("pageSize".to_string(), number(n));
    }
    if let Some(n) = &input.page_number {
        params.insert("pageNumber".to_string(), number(n));
    }
    if let Some(search) = &input.search {
        params.insert("search".to_string(), search.clone());
    }
    if let Ok(parsed) = query::parse(object, &params, 200) {
        check_list_query(object, &parsed, 200);
    }
});
