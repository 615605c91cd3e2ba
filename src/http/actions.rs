//! On-demand actions: `GET|POST /1/objects/action/{object}[/{id}]?name=…&parameters={json}`
//! and `GET|POST /1/function/general/{name}`. The action's return value is the answer;
//! what it throws is a 4xx with its message. `?name=files` on an object is the built-in
//! files action (`files`) unless the app has its own action of that name there; it
//! alone also answers `DELETE`.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Caller, Params, parameters, parse_id, read_limited};
use super::files;
use crate::actions::OnDemand;
use crate::actions::store::GENERAL;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::records::wire;
use crate::schema::Operation;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/1/objects/action/{object}",
            get(call_object_action)
                .post(call_object_action)
                .delete(call_object_action),
        )
        .route(
            "/1/objects/action/{object}/{id}",
            get(call_row_action).post(call_row_action),
        )
        .route(
            "/1/function/general/{name}",
            get(call_function).post(call_function),
        )
}

async fn call_object_action(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(object): Path<String>,
    Params(params): Params,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let name = params.get("name").map(String::as_str);
    if files::is_builtin(&state, &object, name) {
        let query_filename = params.get("filename").map(String::as_str);
        return files::run_action(
            &state,
            &who,
            &object,
            &method,
            &headers,
            query_filename,
            body,
        )
        .await;
    }
    if method == Method::DELETE && name != Some(files::ACTION_NAME) {
        return Err(ApiError::Status(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "DELETE on an on-demand action is only for the `{}` action (name={0}); \
                 run other actions with GET or POST",
                files::ACTION_NAME
            ),
        ));
    }
    let db_row = checked_row(&state, &who, &object, None).await?;
    let body = read_limited(body, state.config.max_body_bytes).await?;
    run(&state, &who, &object, db_row, &params, &body).await
}

async fn call_row_action(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((object, id)): Path<(String, String)>,
    Params(params): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let db_row = checked_row(&state, &who, &object, Some(id)).await?;
    run(&state, &who, &object, db_row, &params, &body).await
}

/// What must hold before `who` runs an action of `object` (on row `id`), and the
/// `dbRow` it gets: running an object's actions needs read permission on it, as REST
/// reads do, and on a row, that `who` may read that row (403/404 otherwise).
/// `/1/action/run` asks the same. (Functions, `general`, need nothing.)
pub(super) async fn checked_row(
    state: &AppState,
    who: &Identity,
    object: &str,
    id: Option<i64>,
) -> Result<Value, ApiError> {
    match id {
        None => {
            state.records.check(who, object, Operation::Read)?;
            Ok(Value::Null)
        }
        Some(id) => Ok(wire::row(&state.records.get(who, object, id).await?)),
    }
}

async fn call_function(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Params(mut params): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    params.insert("name".into(), name);
    run(&state, &who, GENERAL, Value::Null, &params, &body).await
}

/// The action named by `?name=`, with `?parameters=` and the body as `userInput`.
async fn run(
    state: &AppState,
    who: &Identity,
    object: &str,
    db_row: Value,
    params: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = action_name(params)?;
    let answer = state
        .actions
        .call(
            &state.records,
            who,
            OnDemand {
                object,
                name,
                db_row,
                parameters: parameters(params)?,
                user_input: user_input(body)?,
            },
        )
        .await?;
    Ok(Json(answer))
}

fn action_name(params: &HashMap<String, String>) -> Result<&str, ApiError> {
    params
        .get("name")
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad("the query parameter `name` names the action to run"))
}

fn user_input(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))
}
