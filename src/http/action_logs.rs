//! Action logs for live viewing: `GET /1/action/config/{id}/logs?last=N&after=SEQ` (one
//! action) and `GET /1/action/logs?last=N&after=SEQ` (every action, each line with its
//! `actionId`). Lines carry a `seq` increasing across all actions: a page polls with
//! `after` set to the last `seq` it holds and gets only newer lines. Admin or master
//! token only. The lines themselves are kept by `actions::logs`.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::Value;

use super::AppState;
use super::action_config::number;
use super::extract::{AdminCaller, Params, parse_id};
use crate::actions::LogQuery;
use crate::error::ApiError;
use crate::records::wire;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/1/action/config/{id}/logs", get(action_logs))
        .route("/1/action/logs", get(all_action_logs))
}

async fn action_logs(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(id): Path<String>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    state.actions.get(id)?;
    let lines = state.actions.logs(id, query(&params)?);
    Ok(Json(wire::page(lines.len(), lines)))
}

async fn all_action_logs(
    State(state): State<AppState>,
    _: AdminCaller,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let lines = state.actions.all_logs(query(&params)?);
    Ok(Json(wire::page(lines.len(), lines)))
}

/// `last` (default 100; an action keeps `actions::LOG_LINES`, one read of every action's log
/// answers at most `actions::ALL_LOGS_PAGE`) and `after`.
fn query(params: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let last = number(params, "last", 100)?;
    let after = match params.get("after") {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad("`after` must be the `seq` of a log line (a non-negative integer)")
        })?),
    };
    Ok(LogQuery { after, last })
}
