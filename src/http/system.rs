//! `/healthz` and `/metrics`, plus the request-metrics middleware.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/__getcookie", get(sails_get_cookie))
        .route("/metrics", get(render_metrics))
}

/// The process-wide Prometheus recorder. `metrics` allows one global recorder, so every
/// server in a process (tests start many) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            // Histogram samples pile up in the recorder until something drains them; with
            // `install_recorder` that is our job: else a server nobody scrapes grows by
            // one sample per request.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("livebase-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("a thread for metrics upkeep");
            handle
        })
        .clone()
}

/// sails.io.js in a browser on another origin first loads `/__getcookie` as a JSONP
/// script (a Sails server sets its session cookie there) and connects only once that
/// script has called it back. livebase keeps no cookie session, so the answer is the
/// callback alone.
async fn sails_get_cookie() -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        "_sailsIoJSConnect();",
    )
        .into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let mut sql = state.store.sql();
    sql.push("SELECT COUNT(*) FROM lb_schema");
    match state
        .store
        .fetch(&sql, &[crate::schema::FieldType::Int])
        .await
    {
        // Redis away is not unavailability: this node still serves its own sockets and
        // every request, only its emits miss the other nodes (`realtime::cluster`).
        Ok(_) => {
            let node = &state.node.id;
            axum::Json(match state.realtime.redis_up() {
                None => json!({ "status": "ok", "node": node }),
                Some(true) => json!({ "status": "ok", "node": node, "redis": "up" }),
                Some(false) => json!({ "status": "degraded", "node": node, "redis": "down" }),
            })
            .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "unavailable", "Message": "database unreachable" })),
            )
                .into_response()
        }
    }
}

async fn render_metrics(State(state): State<AppState>) -> String {
    let (open, idle) = state.store.pool_stats();
    metrics::gauge!("livebase_db_pool_connections").set(f64::from(open));
    metrics::gauge!("livebase_db_pool_idle_connections").set(idle as f64);
    state.metrics.render()
}

/// Counts and times every request by method, matched route and status, and writes its
/// line to the request log (`request_log`).
pub async fn track(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let line = super::request_log::begin(&mut request);
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    if let Some(line) = line {
        line.finish(response.status(), started.elapsed());
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("livebase_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("livebase_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
