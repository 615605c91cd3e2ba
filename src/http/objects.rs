//! `/1/objects/{object}[/{id}]`: Backand-shaped CRUD over the write path.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Body, Caller, Params, parse_id};
use crate::error::ApiError;
use crate::records::wire;
use crate::store::Record;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/1/objects/{object}", get(list_rows).post(create_row))
        .route(
            "/1/objects/{object}/{id}",
            get(get_row).put(update_row).delete(delete_row),
        )
}

/// What a create, update or delete answers (`whole`: `returnObject=true`); bulk steps
/// answer the same.
pub(super) fn answer(record: &Record, whole: bool) -> Json<Value> {
    if whole {
        Json(wire::row(record))
    } else {
        Json(json!({ "__metadata": { "id": record.id.to_string() } }))
    }
}

async fn list_rows(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(object): Path<String>,
    Params(params): Params,
) -> Result<Json<Value>, ApiError> {
    let (total, rows) = state.records.list(&who, &object, &params).await?;
    Ok(Json(wire::page(
        total,
        rows.iter().map(wire::row).collect(),
    )))
}

async fn create_row(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(object): Path<String>,
    params: Params,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let record = state.records.create(&who, &object, body).await?;
    Ok(answer(&record, params.flag("returnObject")))
}

async fn get_row(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((object, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let record = state.records.get(&who, &object, parse_id(&id)?).await?;
    Ok(Json(wire::row(&record)))
}

async fn update_row(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((object, id)): Path<(String, String)>,
    params: Params,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let record = state
        .records
        .update(&who, &object, parse_id(&id)?, body)
        .await?;
    Ok(answer(&record, params.flag("returnObject")))
}

async fn delete_row(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((object, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let record = state.records.delete(&who, &object, parse_id(&id)?).await?;
    Ok(answer(&record, false))
}
