//! The HTTP surface: one router built from per-resource routers, with body limits,
//! tracing and metrics around it (CORS wraps it and Socket.IO together, in `server`).
//! `app()` is what the server serves and what the Socket.IO request bridge
//! (`realtime::sails`) calls, so there is one implementation.

pub mod account;
pub mod action_config;
pub mod action_logs;
pub mod action_run;
pub mod action_versions;
pub mod actions;
pub mod admin;
pub mod bulk;
pub mod client_script;
pub mod dashboard;
pub mod extract;
pub mod files;
pub mod limits;
pub mod objects;
pub mod queries;
pub mod request_log;
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
use crate::files::Files;
use crate::queries::Queries;
use crate::realtime::Realtime;
use crate::records::Records;
use crate::store::Store;
use crate::store::nodes::Node;
use crate::users::Users;

/// Everything a handler may need. Cloning is shallow: each field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub records: Records,
    pub auth: Auth,
    pub users: Users,
    pub store: Store,
    pub metrics: PrometheusHandle,
    pub realtime: Realtime,
    pub actions: Actions,
    pub files: Files,
    pub queries: Queries,
    pub config: Arc<Config>,
    /// This process among the nodes sharing the database: answers that say which node
    /// served them name its id.
    pub node: Arc<Node>,
}

pub fn app(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let limits = BodyLimits {
        default: max_body,
        file_upload: files::upload_body_limit(&state.config),
    };
    let routes = Router::new()
        .merge(objects::router())
        .merge(bulk::router())
        .merge(actions::router())
        .merge(files::router())
        .merge(queries::router())
        .merge(action_config::router())
        .merge(action_versions::router())
        .merge(action_logs::router())
        .merge(action_run::router())
        .merge(admin::router())
        .merge(account::router(&state.config))
        .merge(system::router())
        .merge(dashboard::router())
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(axum::middleware::map_response(errors_as_json))
        .layer(axum::middleware::from_fn(system::track))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    // Routing happens inside: a layer on the routes themselves would run too late.
    Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .map_request(collapse_slashes)
            .service(routes),
    )
}

/// `//1/action/config` is `/1/action/config`: the Backand SDK joins its `apiUrl` and a
/// path that already starts with `/`, and Backand's server answered both the same.
fn collapse_slashes(mut request: axum::extract::Request) -> axum::extract::Request {
    let uri = request.uri();
    if !uri.path().contains("//") {
        return request;
    }
    let mut path = String::with_capacity(uri.path().len());
    for c in uri.path().chars() {
        if !(c == '/' && path.ends_with('/')) {
            path.push(c);
        }
    }
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = path.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(collapsed) = Uri::from_parts(parts) {
            *request.uri_mut() = collapsed;
        }
    }
    request
}

/// Most bytes of a refused body read and thrown away so its sender sees the 413.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// Longest time spent doing so.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest body a request may declare: `--max-body-bytes`, or more for an upload to
/// the `files` action (a file of `--max-file-bytes` in base64).
#[derive(Clone, Copy)]
struct BodyLimits {
    default: usize,
    file_upload: usize,
}

/// A body declared larger than its limit is refused before any handler runs.
/// Its sender is usually still sending: closing then would reset the connection and
/// many clients would report a broken pipe instead of the 413, so a bounded amount is
/// read and discarded first (past that, or after `DRAIN_TIME`, the connection closes).
async fn refuse_oversized(
    axum::extract::State(limits): axum::extract::State<BodyLimits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let max = if files::is_upload_url(request.method(), request.uri()) {
        limits.file_upload
    } else {
        limits.default
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|n| *n > max as u64) else {
        return next.run(request).await;
    };
    if declared <= DRAIN_BYTES.max(4 * max as u64) {
        use http_body_util::BodyExt;
        let mut body = request.into_body();
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
    }
    ApiError::PayloadTooLarge(format!(
        "the request body ({declared} bytes) is larger than the limit of {max} bytes"
    ))
    .into_response()
}

/// Longest text of a non-JSON error kept as its `Message`.
const MAX_ERROR_TEXT: usize = 4096;

/// Every failure a client sees is `{"Message": …}`: axum's own extractor rejections
/// (a path segment that is not UTF-8, a body over the limit, …) answer plain text, so
/// they are rewritten here, in the one place every response passes, keeping the status
/// and headers (`Retry-After`, `Allow`) and taking the text as the message.
async fn errors_as_json(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let fixed = ApiError::Status(status, text).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    let (fixed_parts, body) = fixed.into_parts();
    parts.headers.extend(fixed_parts.headers);
    axum::response::Response::from_parts(parts, body)
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
///
/// An allowed origin is reflected with `Access-Control-Allow-Credentials: true` (and
/// `Vary: Origin`): socket.io 2.x browser builds poll with credentials, and browsers
/// refuse `*` for those. livebase reads no cookie and never asks a browser for Basic
/// credentials, so credentials mode gives a page nothing its tokens do not.
pub fn cors_layer(origins: &str) -> CorsLayer {
    let headers = [
        "authorization",
        "anonymoustoken",
        "signuptoken",
        "appname",
        "content-type",
        // `@staticbackend/js` sends its public key on every request.
        "sb-public-key",
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
        .allow_headers(headers)
        .allow_credentials(true);
    let origins = origins.trim();
    if origins == "*" || origins.is_empty() {
        return layer.allow_origin(AllowOrigin::mirror_request());
    }
    let list: Vec<HeaderValue> = origins
        .split(',')
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    layer.allow_origin(list)
}
