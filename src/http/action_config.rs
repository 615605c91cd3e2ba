//! `/1/action/config[/{id}]`: list (with `filter`), upload, replace and delete actions,
//! and `/1/action/config/compile`, a compile check that saves nothing. Admin or master
//! token only. Versions, logs and test runs have their own files (`action_versions`,
//! `action_logs`, `action_run`).

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::extract::{AdminCaller, Body, Params, parse_id};
use crate::actions::{Action, Source, Trigger, Upload, store};
use crate::error::ApiError;
use crate::records::wire;
use crate::schema::is_valid_identifier;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/1/action/config", get(list_actions).post(upload_action))
        .route(
            "/1/action/config/{id}",
            get(get_action).put(replace_action).delete(delete_action),
        )
        .route("/1/action/config/compile", post(compile_action))
}

async fn list_actions(
    State(state): State<AppState>,
    _: AdminCaller,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let filters = parse_filter(&params)?;
    let mut rows: Vec<Value> = state
        .actions
        .all()
        .iter()
        .map(|a| action_json(a))
        .filter(|row| filters.iter().all(|f| f.matches(row)))
        .collect();
    let total = rows.len();
    let page_size = number(&params, "pageSize", 20)?.clamp(1, state.config.max_page_size as usize);
    let page = number(&params, "pageNumber", 1)?.max(1);
    let data: Vec<Value> = rows
        .drain(..)
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .collect();
    Ok(Json(wire::page(total, data)))
}

async fn get_action(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let action = state.actions.get(id)?;
    Ok(Json(action_json(&action)))
}

async fn upload_action(
    State(state): State<AppState>,
    _: AdminCaller,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Body(Value::Object(fields)) = &body else {
        return Err(ApiError::bad("an action is {name, object, trigger, code}"));
    };
    for key in fields.keys() {
        if !["name", "object", "trigger", "code", "actionType", "source"].contains(&key.as_str()) {
            return Err(ApiError::bad(format!(
                "unknown field `{key}` for an action"
            )));
        }
    }
    let name = body.text("name")?.to_string();
    let object = body.text("object")?.to_string();
    let trigger_text = body.text("trigger")?;
    let code = body.text("code")?.to_string();
    let source = source(&body, Source::Upload)?;
    if !is_valid_identifier(&name) {
        return Err(ApiError::bad(format!(
            "action name `{}` must start with a letter and hold only letters, digits and _",
            name.escape_default()
        )));
    }
    let trigger = Trigger::parse(trigger_text).ok_or_else(|| {
        ApiError::bad(format!(
            "unknown trigger `{}`: use one of {}",
            trigger_text.escape_default(),
            Trigger::names()
        ))
    })?;
    store::check_object(&object, Some(state.records.schema()))
        .and_then(|()| store::check_trigger(&object, trigger))
        .map_err(ApiError::BadRequest)?;
    let action = state
        .actions
        .upload(Upload {
            name,
            object,
            trigger,
            code,
            source,
        })
        .await?;
    Ok(Json(action_json(&action)))
}

/// The body is `{code}`, optionally with the `version` the client read: then the save
/// is refused (409, nothing changed) if the action has been saved since. The action
/// record's other fields may come along (a client sending back what it read) and are
/// ignored: replacing changes only the code.
async fn replace_action(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let Body(Value::Object(fields)) = &body else {
        return Err(ApiError::bad("replacing an action takes {code}"));
    };
    for key in fields.keys() {
        if ![
            "code",
            "source",
            "id",
            "name",
            "object",
            "trigger",
            "version",
            "actionType",
            "file",
        ]
        .contains(&key.as_str())
        {
            return Err(ApiError::bad(format!(
                "unknown field `{}` for an action",
                key.escape_default()
            )));
        }
    }
    let code = body.text("code")?;
    let source = source(&body, Source::Replace)?;
    let expected = match fields.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().filter(|v| *v > 0).ok_or_else(|| {
            ApiError::bad(
                "`version` must be a positive integer: the version the action was read at",
            )
        })?),
    };
    let action = state.actions.replace(id, code, source, expected).await?;
    Ok(Json(action_json(&action)))
}

async fn delete_action(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    state.actions.remove(id).await?;
    Ok(Json(json!({})))
}

/// `{code}` → `{"ok": true}`, or 400 with `Message`, `line` and `column` (as an
/// upload would be refused). Nothing is saved.
async fn compile_action(
    State(state): State<AppState>,
    _: AdminCaller,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Body(Value::Object(fields)) = &body else {
        return Err(ApiError::bad("a compile check takes {code}"));
    };
    if let Some(key) = fields.keys().find(|k| k.as_str() != "code") {
        return Err(ApiError::bad(format!(
            "unknown field `{}` for a compile check: it takes {{code}}",
            key.escape_default()
        )));
    }
    let code = body.text("code")?;
    match state.actions.compile("action", code).await {
        Ok(_) => Ok(Json(json!({ "ok": true }))),
        Err(e) => Err(ApiError::Located {
            message: e.describe(),
            line: e.line,
            column: e.column,
        }),
    }
}

/// Who made a version: `default`, or `push` when `livebase actions push` says so.
fn source(body: &Body, default: Source) -> Result<Source, ApiError> {
    match body.opt_text("source")? {
        None => Ok(default),
        Some("push") => Ok(Source::Push),
        Some(other) => Err(ApiError::bad(format!(
            "`source` may only be `push` (what `livebase actions push` sends), not `{}`",
            other.escape_default()
        ))),
    }
}

/// An action as `/1/action/config` shows it.
pub(super) fn action_json(action: &Action) -> Value {
    json!({
        "id": action.id,
        "name": action.name,
        "object": action.object,
        "trigger": action.trigger.as_str(),
        "code": action.code,
        "version": action.version,
        "actionType": if action.object == store::GENERAL { "Function" } else { "Action" },
        "file": action.relative_file(),
    })
}

/// A non-negative integer query parameter, or `default` when absent.
pub(super) fn number(
    params: &HashMap<String, String>,
    key: &str,
    default: usize,
) -> Result<usize, ApiError> {
    match params.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad(format!("`{key}` must be a positive integer"))),
    }
}

/// One `{fieldName, operator, value}` over the action fields.
struct Filter {
    field: String,
    operator: String,
    value: Value,
}

const FIELDS: [&str; 6] = ["id", "name", "object", "trigger", "version", "actionType"];
const OPERATORS: [&str; 6] = [
    "equals",
    "notEquals",
    "contains",
    "startsWith",
    "endsWith",
    "in",
];

fn parse_filter(params: &HashMap<String, String>) -> Result<Vec<Filter>, ApiError> {
    let Some(text) = params.get("filter") else {
        return Ok(Vec::new());
    };
    let items: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| ApiError::bad(format!("`filter` must be a JSON array: {e}")))?;
    items
        .into_iter()
        .map(|item| {
            let field = item["fieldName"].as_str().unwrap_or_default().to_string();
            let operator = item["operator"].as_str().unwrap_or_default().to_string();
            if !FIELDS.contains(&field.as_str()) {
                return Err(ApiError::bad(format!(
                    "cannot filter actions by `{}`: use one of {}",
                    field.escape_default(),
                    FIELDS.join(", ")
                )));
            }
            if !OPERATORS.contains(&operator.as_str()) {
                return Err(ApiError::bad(format!(
                    "operator `{}` is not supported for actions: use one of {}",
                    operator.escape_default(),
                    OPERATORS.join(", ")
                )));
            }
            Ok(Filter {
                field,
                operator,
                value: item["value"].clone(),
            })
        })
        .collect()
}

impl Filter {
    fn matches(&self, row: &Value) -> bool {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let have = text(&row[&self.field]);
        let want = text(&self.value);
        match self.operator.as_str() {
            "equals" => have == want,
            "notEquals" => have != want,
            "contains" => have.contains(&want),
            "startsWith" => have.starts_with(&want),
            "endsWith" => have.ends_with(&want),
            _ => self
                .value
                .as_array()
                .is_some_and(|list| list.iter().any(|v| text(v) == have)),
        }
    }
}
