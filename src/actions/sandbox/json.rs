//! JS values to JSON for everything that leaves the engine, optionally charged to the
//! invocation's budget.

use rquickjs::{Ctx, Value};
use serde_json::Value as Json;

use super::{Invocation, own_errors};

/// `to_json`, first taking the JSON text's size from the invocation's budget.
pub(super) fn to_json_spent<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    invocation: &Invocation,
    what: &str,
) -> rquickjs::Result<Json> {
    json_of(ctx, value, Some((invocation, what)))
}

pub(super) fn to_json<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Json> {
    json_of(ctx, value, None)
}

/// A JS value as JSON (`undefined` and functions as null), its text size optionally
/// charged to a budget. Never silently `null`: nesting past 128 levels or a lone
/// surrogate is an error.
fn json_of<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    budget: Option<(&Invocation, &str)>,
) -> rquickjs::Result<Json> {
    if value.is_undefined() || value.is_function() {
        return Ok(Json::Null);
    }
    let text = ctx
        .json_stringify(value)
        .map_err(|e| own_errors::refused_as(ctx, e, "the value cannot be sent as JSON"))?;
    let Some(text) = text else {
        return Ok(Json::Null);
    };
    let text = text.to_string()?;
    if let Some((invocation, what)) = budget {
        invocation.spend(ctx, text.len(), what)?;
    }
    serde_json::from_str(&text).map_err(|e| {
        let error =
            rquickjs::Exception::throw_type(ctx, &format!("the value cannot be sent as JSON: {e}"));
        own_errors::refused(ctx, error)
    })
}
