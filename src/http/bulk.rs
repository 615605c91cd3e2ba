//! `POST /1/bulk`: Backand's bulk request, an array of `{method, url, data, headers}`
//! steps that create, update or delete rows. All steps are one `Records::write_all`:
//! they commit together or not at all, and their events leave only after the commit.
//! Each step is checked as the single request would be (permissions, row security,
//! validation, before actions) and answers what the single request answers; a failing
//! step answers its own status with a message naming it.
//!
//! Steps run as the bulk's caller. A step's `headers` may repeat the caller's
//! credentials (SDK users often copy them in) but never name another identity; other
//! headers mean nothing to a row write and are ignored.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::AppState;
use super::extract::{Body, Caller, parse_id};
use super::objects::answer;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::records::{StepError, Verb, Write};

/// Most steps one bulk may carry (its body is also held to `--max-body-bytes`): the
/// whole bulk is staged in memory and written in one transaction, which on SQLite
/// holds the only writer for its length.
pub const MAX_STEPS: usize = 1000;

/// The keys a step may have.
const STEP_KEYS: [&str; 4] = ["method", "url", "data", "headers"];

pub fn router() -> Router<AppState> {
    Router::new().route("/1/bulk", post(run_bulk))
}

/// One parsed step: the write, how it reads in messages, and whether its answer is the
/// whole row.
struct Step {
    write: Write,
    label: String,
    whole: bool,
}

async fn run_bulk(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(body): Body,
) -> Result<Json<Value>, Response> {
    let Value::Array(items) = body else {
        return Err(
            ApiError::bad("a bulk body is a JSON array of {method, url, data, headers}")
                .into_response(),
        );
    };
    if items.len() > MAX_STEPS {
        return Err(ApiError::PayloadTooLarge(format!(
            "a bulk has at most {MAX_STEPS} steps, this one has {}",
            items.len()
        ))
        .into_response());
    }
    let mut writes = Vec::with_capacity(items.len());
    let mut shapes = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let (step, headers) = parse_step(item).map_err(|e| refusal(i, None, e))?;
        check_headers(&state, &who, &headers)
            .await
            .map_err(|e| refusal(i, Some(&step.label), e))?;
        shapes.push((step.label, step.whole && step.write.verb != Verb::Deleted));
        writes.push(step.write);
    }
    match state.records.write_all(&who, writes).await {
        Ok(rows) => Ok(Json(Value::Array(
            rows.iter()
                .zip(&shapes)
                .map(|(row, (_, whole))| answer(row, *whole).0)
                .collect(),
        ))),
        Err(StepError {
            step: Some(i),
            error,
        }) => Err(refusal(i, shapes.get(i).map(|s| s.0.as_str()), error)),
        Err(StepError { step: None, error }) => Err(error.into_response()),
    }
}

/// The failing step's own status, with `Message` naming it ("step 3 (PUT …): …") and
/// `step` its number, counted from 1 as the message counts.
fn refusal(index: usize, label: Option<&str>, error: ApiError) -> Response {
    let status = error.status();
    if let ApiError::Internal(e) = &error {
        tracing::error!(error = %e, details = ?e, step = index + 1, "internal error in a bulk step");
    }
    let number = index + 1;
    let message = match label {
        Some(label) => format!("step {number} ({label}): {error}"),
        None => format!("step {number}: {error}"),
    };
    (status, Json(json!({ "Message": message, "step": number }))).into_response()
}

/// A step as written, and its `headers` (checked separately, against the caller).
fn parse_step(item: Value) -> Result<(Step, Map<String, Value>), ApiError> {
    let Value::Object(mut item) = item else {
        return Err(ApiError::bad(
            "a step is an object {method, url, data, headers}",
        ));
    };
    if let Some(key) = item.keys().find(|k| !STEP_KEYS.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown key `{key}`: a step has method, url, data and headers"
        )));
    }
    let method = match item.remove("method") {
        Some(Value::String(m)) => m.to_ascii_uppercase(),
        Some(_) => return Err(ApiError::bad("`method` must be a string")),
        None => return Err(ApiError::bad("`method` is required")),
    };
    let url = match item.remove("url") {
        Some(Value::String(u)) => u,
        Some(_) => return Err(ApiError::bad("`url` must be a string")),
        None => return Err(ApiError::bad("`url` is required")),
    };
    let headers = match item.remove("headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(h)) => h,
        Some(_) => return Err(ApiError::bad("`headers` must be an object")),
    };
    let data = item.remove("data").unwrap_or(Value::Null);
    let (path, query) = split_url(&url);
    let label = format!("{method} {path}");
    let refused = || {
        ApiError::bad(format!(
            "bulk steps create, update or delete rows: POST /1/objects/{{object}}, \
             PUT or DELETE /1/objects/{{object}}/{{id}}, not {label}"
        ))
    };
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let (object, id) = match segments.as_slice() {
        [one, objects, object] if one == "1" && objects == "objects" => (object, None),
        [one, objects, object, id] if one == "1" && objects == "objects" => (object, Some(id)),
        _ => return Err(refused()),
    };
    if object == "action" {
        return Err(refused());
    }
    let write = match (method.as_str(), id) {
        ("POST", None) => Write::create(object, data),
        ("PUT", Some(id)) => Write::update(object, parse_id(id)?, data),
        ("DELETE", Some(id)) => Write::delete(object, parse_id(id)?),
        _ => return Err(refused()),
    };
    let whole = query.is_some_and(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .unwrap_or_default()
            .iter()
            .any(|(k, v)| k == "returnObject" && (v.eq_ignore_ascii_case("true") || v == "1"))
    });
    Ok((
        Step {
            write,
            label: format!("{method} /{}", segments.join("/")),
            whole,
        },
        headers,
    ))
}

/// `https://host/1/objects/items/5?x` or `/1/objects/items/5?x` → (path, query); the
/// Backand SDK's users write steps with the API's absolute URL.
fn split_url(url: &str) -> (&str, Option<&str>) {
    let url = url.split('#').next().unwrap_or("");
    let rest = ["https://", "http://"]
        .iter()
        .find_map(|scheme| {
            url.get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &url[scheme.len()..])
        })
        .map(|rest| rest.find('/').map_or("", |i| &rest[i..]));
    let url = rest.unwrap_or(url);
    match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    }
}

/// A step's credential headers must name the caller; anything else is refused (403).
async fn check_headers(
    state: &AppState,
    who: &Identity,
    headers: &Map<String, Value>,
) -> Result<(), ApiError> {
    let mut credentials = HeaderMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower != "authorization" && lower != "anonymoustoken" {
            continue;
        }
        let (Value::String(text), Ok(name)) = (value, HeaderName::from_bytes(lower.as_bytes()))
        else {
            return Err(ApiError::bad(format!("header `{name}` must be a string")));
        };
        let value = HeaderValue::from_str(text).map_err(|_| {
            ApiError::bad(format!(
                "header `{name}` has characters a header cannot carry"
            ))
        })?;
        credentials.insert(name, value);
    }
    if credentials.is_empty() {
        return Ok(());
    }
    let switch = || {
        ApiError::Forbidden(
            "a step runs as the bulk's caller: its headers may not name another identity".into(),
        )
    };
    let named = state
        .auth
        .identify(&credentials)
        .await
        .map_err(|_| switch())?;
    let same = named.user_id == who.user_id
        && named.username == who.username
        && named.role == who.role
        && named.master == who.master;
    if same { Ok(()) } else { Err(switch()) }
}
