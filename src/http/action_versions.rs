//! Every saved version of an action: `GET /1/action/config/{id}/versions` (newest
//! first, paged) and `POST /1/action/config/{id}/rollback {version}`, which saves that
//! version's code as the next version through the same path as a replace. Admin or
//! master token only. The versions themselves are `actions::versions`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::action_config::{action_json, number};
use super::extract::{AdminCaller, Body, Params, parse_id};
use crate::error::ApiError;
use crate::records::wire;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/1/action/config/{id}/versions", get(list_versions))
        .route("/1/action/config/{id}/rollback", post(roll_back))
}

async fn list_versions(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(id): Path<String>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let page_size = number(&params, "pageSize", 20)?.clamp(1, state.config.max_page_size as usize);
    let page = number(&params, "pageNumber", 1)?.max(1);
    let (total, versions) = state
        .actions
        .versions(id, page_size as i64, page.min(i64::MAX as usize) as i64)
        .await?;
    let data = versions
        .into_iter()
        .map(|v| {
            json!({
                "version": v.version,
                "code": v.code,
                "createdAt": v.created_at,
                "source": v.source,
            })
        })
        .collect();
    Ok(Json(wire::page(total, data)))
}

/// `{version}` → the action record, now at a new version holding that version's code.
async fn roll_back(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let Value::Object(fields) = &body else {
        return Err(ApiError::bad("a rollback takes {version}"));
    };
    if let Some(key) = fields.keys().find(|k| k.as_str() != "version") {
        return Err(ApiError::bad(format!(
            "unknown field `{}` for a rollback: it takes {{version}}",
            key.escape_default()
        )));
    }
    let version = match fields.get("version") {
        None => return Err(ApiError::bad("`version` is required")),
        Some(v) => v.as_i64().filter(|v| *v > 0).ok_or_else(|| {
            let got = match v {
                Value::Number(n) => n.to_string(),
                Value::String(_) => "a string".into(),
                other => other.to_string(),
            };
            ApiError::bad(format!(
                "`version` must be a positive integer (one listed by /versions), got {got}"
            ))
        })?,
    };
    let action = state.actions.roll_back(id, version).await?;
    Ok(Json(action_json(&action)))
}
