//! The operator's dashboard at `/_/`: static files compiled into the binary (no npm
//! step) and `GET /1/admin/schema`, the one thing the page needs that no other API
//! answered. The page holds no data and no secret; everything it shows comes from the
//! public APIs with the Admin credentials the operator signs in with, so every API it
//! calls refuses anyone else. It must never gain a route of its own that skips them.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::extract::AdminCaller;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_", get(|| async { Redirect::permanent("/_/") }))
        .route("/_/", get(|| async { asset("index.html") }))
        .route(
            "/_/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
        .route("/1/admin/schema", get(describe_schema))
}

/// Every file of the page, with its content type.
const FILES: [(&str, &str, &str); 9] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/ui.js"),
    ),
    (
        "data.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/data.js"),
    ),
    (
        "actions.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/actions.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/live.js"),
    ),
    (
        "sockets.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/sockets.js"),
    ),
    (
        "health.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/health.js"),
    ),
];

/// The page renders rows other people wrote while holding an Admin token, so it runs
/// no inline script, loads nothing from elsewhere, and cannot be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn asset(name: &str) -> Response {
    let Some((_, content_type, text)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::NotFound(format!("no dashboard file `{}`", name.escape_default()))
            .into_response();
    };
    let mut response = (StatusCode::OK, *text).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary; a stale page against a new API is worse than a
    // re-fetch of a few kilobytes.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Every object with its fields, permissions and row security, as the schema files
/// declare them (plus `users`' built-in fields), and the roles.
async fn describe_schema(State(state): State<AppState>, _: AdminCaller) -> Json<Value> {
    let schema = state.records.schema();
    let objects: Vec<Value> = schema.objects.values().map(|o| o.describe()).collect();
    Json(json!({ "objects": objects, "roles": schema.roles }))
}
