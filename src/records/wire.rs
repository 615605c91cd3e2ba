//! The JSON wire form of records, as every surface sends it: REST answers, socket
//! events, Sails acks and what actions see. One shape, made here, for all of them.

use serde_json::{Value, json};

use crate::store::Record;

/// A row: its fields plus Backand's `__metadata` (the id as a string).
pub fn row(record: &Record) -> Value {
    let mut value = record.to_json();
    if let Value::Object(map) = &mut value {
        map.insert("__metadata".into(), json!({ "id": record.id.to_string() }));
    }
    value
}

/// A page of a list: `{totalRows, data}`, `total` counting every match, not the page.
pub fn page(total: impl Into<Value>, data: Vec<Value>) -> Value {
    json!({ "totalRows": total.into(), "data": data })
}
