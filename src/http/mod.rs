//! The HTTP surface: one router built from per-resource routers, with body limits,
//! tracing and metrics around it (CORS wraps it and Socket.IO together, in `server`).
//! `app()` is what the server serves and what the Socket.IO request bridge
//! (`realtime::sails`) calls, so there is one implementation.

pub mod account;
pub mod action_config;
pub mod actions;
pub mod extract;
pub mod limits;
pub mod objects;
pub mod system;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::actions::Actions;
use crate::auth::Auth;
use crate::config::Config;
use crate::error::ApiError;
use crate::realtime::Realtime;
use crate::records::Records;
use crate::store::Store;

/// Everything a handler may need. Cloning is shallow: each field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub records: Records,
    pub auth: Auth,
    pub store: Store,
    pub metrics: PrometheusHandle,
    pub realtime: Realtime,
    pub actions: Actions,
    pub config: Arc<Config>,
}

pub fn app(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .merge(objects::router())
        .merge(actions::router())
        .merge(action_config::router())
        .merge(account::router(&state.config))
        .merge(system::router())
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(axum::middleware::from_fn(system::track))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> impl IntoResponse {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// A bug must not cost the client its connection or leak the panic text.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

async fn no_method(method: Method, uri: Uri) -> impl IntoResponse {
    ApiError::Status(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Browser apps live on other origins; the Backand SDK sends these headers. The server
/// puts this around Socket.IO as well (long-polling is plain cross-origin HTTP), so it
/// is not part of `app()`: applied twice, it would answer with duplicate headers.
pub fn cors_layer(origins: &str) -> CorsLayer {
    let headers = [
        "authorization",
        "anonymoustoken",
        "signuptoken",
        "appname",
        "content-type",
    ]
    .map(HeaderName::from_static);
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(headers);
    let origins = origins.trim();
    if origins == "*" || origins.is_empty() {
        return layer.allow_origin(AllowOrigin::any());
    }
    let list: Vec<HeaderValue> = origins
        .split(',')
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    layer.allow_origin(list)
}
