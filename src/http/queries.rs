//! Named queries: `GET|POST /1/query/data/{name}?parameters={json}`, as the Backand
//! SDK's `query.get(name, parameters)` and `query.post(name, parameters)` send them
//! (POST puts `{"parameters": {…}}` in the body). The answer is the array of rows.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::Value;

use super::AppState;
use super::extract::{Body, Caller, Params, parameters};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/1/query/data/{name}", get(run_query).post(run_query))
}

async fn run_query(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Params(params): Params,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let in_query = params.contains_key("parameters");
    let parameters = match body_parameters(body)? {
        Some(_) if in_query => {
            return Err(ApiError::bad(
                "`parameters` is given both in the query string and in the body: give it once",
            ));
        }
        Some(from_body) => from_body,
        None => parameters(&params)?,
    };
    let rows = state.queries.run(&who, &name, &parameters).await?;
    Ok(Json(rows))
}

/// `{"parameters": …}` of a POST body, read by the shared body extractor (absent when
/// the body is empty). A string value is taken as JSON text, as in the query string.
fn body_parameters(body: Value) -> Result<Option<Value>, ApiError> {
    if body.is_null() {
        return Ok(None);
    }
    let Value::Object(mut map) = body else {
        return Err(ApiError::bad(
            "the body of a query is {\"parameters\": {…}}",
        ));
    };
    if let Some(key) = map.keys().find(|k| *k != "parameters") {
        return Err(ApiError::bad(format!(
            "unknown body key `{key}`: the body of a query is {{\"parameters\": {{…}}}}"
        )));
    }
    Ok(match map.remove("parameters") {
        None => None,
        Some(Value::String(text)) => Some(
            serde_json::from_str(&text)
                .map_err(|e| ApiError::bad(format!("`parameters` is not JSON: {e}")))?,
        ),
        Some(value) => Some(value),
    })
}
