//! Rate limits on the credential routes — `/token`, sign-up, the password-reset pair
//! and the password change — per client address, with tower_governor: guessing passwords, or creating
//! accounts in bulk, costs an attacker time (and argon2 CPU it cannot multiply), while
//! other clients and every other route are unaffected. `--auth-rate-per-minute 0`
//! turns it off.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use tower_governor::GovernorLayer;
use tower_governor::errors::GovernorError;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

use super::AppState;
use crate::config::Config;
use crate::error::ApiError;

/// The client's IP address, as the listener saw it. Virtual requests over a socket
/// carry the socket's own (see `realtime::sails`). Forwarded-for headers are not
/// trusted: behind a proxy, every client shares the proxy's budget.
#[derive(Clone, Copy)]
pub struct ClientAddress;

impl KeyExtractor for ClientAddress {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        Ok(req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()))
    }
}

/// `routes` behind the per-address limit, or unchanged when the limit is off.
pub fn limit_credentials(routes: Router<AppState>, config: &Config) -> Router<AppState> {
    let per_minute = config.auth_rate_per_minute;
    if per_minute == 0 {
        return routes;
    }
    let Some(governor) = GovernorConfigBuilder::default()
        .key_extractor(ClientAddress)
        .period(Duration::from_micros(60_000_000 / u64::from(per_minute)))
        .burst_size(config.auth_rate_burst.max(1))
        .finish()
    else {
        // Only a zero period or burst fails, and neither can be reached from here.
        return routes;
    };
    // Addresses seen once would stay in the limiter's map for good; forget those whose
    // budget is full again. The thread ends with the router that owns the limiter.
    let limiter = Arc::downgrade(governor.limiter());
    std::thread::Builder::new()
        .name("livebase-rate-limit-gc".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(60));
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                limiter.retain_recent();
            }
        })
        .expect("a thread for the rate limiter's upkeep");
    routes.layer(GovernorLayer::new(Arc::new(governor)).error_handler(refusal))
}

/// 429 in livebase's error shape, keeping the `Retry-After` header governor computed.
fn refusal(error: GovernorError) -> Response<Body> {
    match error {
        GovernorError::TooManyRequests { wait_time, headers } => {
            let mut response = ApiError::Status(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many sign-in or sign-up attempts from this address; retry in {} s",
                    wait_time.max(1)
                ),
            )
            .into_response();
            if let Some(headers) = headers {
                response.headers_mut().extend(headers);
            }
            response
        }
        other => ApiError::Internal(anyhow::anyhow!("rate limiter: {other}")).into_response(),
    }
}
