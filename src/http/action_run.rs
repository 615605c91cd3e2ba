//! `POST /1/action/run`: an Admin runs an on-demand action as a chosen identity, to test
//! it from the dashboard, and sees everything the run did.
//!
//! The run is the real thing: the same permission checks as
//! `/1/objects/action/{object}[/{id}]` or `/1/function/general/{name}` for that identity
//! (built as sign-in builds it for that user), the action's log, and its emits sent once
//! it returns. A refusal or failure of the run is the answer's `error` (status 200):
//! only a request that names nothing runnable is an HTTP error. Admin or master token
//! only; the chosen identity's credentials are never needed, nor handed out.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::AppState;
use super::actions::checked_row;
use super::extract::{AdminCaller, Body};
use crate::actions::store::GENERAL;
use crate::actions::{OnDemand, Report};
use crate::auth::Identity;
use crate::auth::credentials::{self, Lookup};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/1/action/run", post(run_action))
}

const FIELDS: [&str; 6] = ["object", "name", "id", "parameters", "userInput", "as"];

/// `{object, name, id?, parameters?, userInput?, as?}` →
/// `{ok, result | error, logs, emits, durationMs}`.
async fn run_action(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::bad(
            "a run takes {object, name, id?, parameters?, userInput?, as?}",
        ));
    };
    if let Some(key) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown field `{}` for a run: use {}",
            key.escape_default(),
            FIELDS.join(", ")
        )));
    }
    let object = text(&fields, "object")?;
    let name = text(&fields, "name")?;
    let id = match fields.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|id| *id > 0)
                .ok_or_else(|| ApiError::bad("`id` must be a positive integer (a row id)"))?,
        ),
    };
    if object == GENERAL && id.is_some() {
        return Err(ApiError::bad(
            "functions (`general`) run on no row: drop `id`",
        ));
    }
    let given = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => json!({}),
        Some(v) => v.clone(),
    };
    let (parameters, user_input) = (given("parameters"), given("userInput"));
    let who = match fields.get("as") {
        None | Some(Value::Null) => caller,
        Some(target) => identity(&state, target).await?,
    };
    if !state.actions.has_on_demand(object, name) {
        return Err(ApiError::NotFound(format!(
            "no on-demand action `{}` on `{}`",
            name.escape_default(),
            object.escape_default()
        )));
    }

    let started = Instant::now();
    let report = match run(&state, &who, object, id, name, parameters, user_input).await {
        Ok(report) => report,
        Err(refused) => Report::failed(refused),
    };
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let logs: Vec<Value> = report.logs.iter().map(|l| l.to_json()).collect();
    let emits: Vec<Value> = report.emits.iter().map(|e| e.to_json()).collect();
    Ok(Json(match report.result {
        Ok(result) => json!({
            "ok": true, "result": result, "logs": logs, "emits": emits,
            "durationMs": duration_ms,
        }),
        Err(error) => {
            if let ApiError::Internal(e) = &error {
                tracing::error!(error = %e, details = ?e, "action run");
            }
            json!({
                "ok": false,
                "error": { "status": error.status().as_u16(), "Message": error.to_string() },
                "logs": logs, "emits": emits, "durationMs": duration_ms,
            })
        }
    }))
}

/// The run as the on-demand routes would make it for `who`.
async fn run(
    state: &AppState,
    who: &Identity,
    object: &str,
    id: Option<i64>,
    name: &str,
    parameters: Value,
    user_input: Value,
) -> Result<Report, ApiError> {
    let db_row = if object == GENERAL {
        Value::Null
    } else {
        checked_row(state, who, object, id).await?
    };
    let on_demand = OnDemand {
        object,
        name,
        db_row,
        parameters,
        user_input,
    };
    state
        .actions
        .call_reported(&state.records, who, on_demand)
        .await
}

/// `as`: `{"userId": 5}`, `{"email": "…"}` or `{"anonymous": true}`; the user as an
/// access token of theirs would identify them. 400 for anything else or no such user.
async fn identity(state: &AppState, target: &Value) -> Result<Identity, ApiError> {
    let shape = "`as` is one of {\"userId\": n}, {\"email\": \"…\"}, {\"anonymous\": true}";
    let Some((key, value)) = target
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    else {
        return Err(ApiError::bad(shape));
    };
    let found = match (key.as_str(), value) {
        ("anonymous", Value::Bool(true)) => return Ok(Identity::guest()),
        ("userId", v) => {
            let id = v
                .as_i64()
                .filter(|id| *id > 0)
                .ok_or_else(|| ApiError::bad(format!("{shape}: `userId` is a positive integer")))?;
            credentials::find(&state.store, Lookup::Id(id))
                .await?
                .ok_or_else(|| ApiError::bad(format!("`as`: no user with id {id}")))?
        }
        ("email", Value::String(email)) => credentials::find(&state.store, Lookup::Email(email))
            .await?
            .ok_or_else(|| {
                let shown: String = email.chars().take(200).collect();
                ApiError::bad(format!(
                    "`as`: no user with email `{}`",
                    shown.escape_default()
                ))
            })?,
        _ => return Err(ApiError::bad(shape)),
    };
    Ok(Identity::of_user(&found.0, false))
}

fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match fields.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::Null) => Err(ApiError::bad(format!("`{key}` is required"))),
        Some(_) => Err(ApiError::bad(format!("`{key}` must be a non-empty string"))),
    }
}
