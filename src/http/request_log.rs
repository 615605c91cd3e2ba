//! One info line per request under the target `livebase::request`: method, path (never
//! the query string, which can carry parameters and tokens), status, milliseconds and
//! the caller's username (`-` when it is not known). `RUST_LOG=info,livebase::request=off`
//! silences it alone.
//!
//! The username is known only once a handler's `Caller` extractor has identified the
//! request, so `track` leaves an empty `Who` in the request's extensions for it to fill.
//! Nothing is allocated for this when the target is off. This module decides nothing
//! about who may do what and must never log a credential.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};

/// The target: silenced or raised on its own with `RUST_LOG`.
pub const TARGET: &str = "livebase::request";

/// Where the `Caller` extractor writes the username for the request's line.
#[derive(Clone, Default)]
pub struct Who(Arc<OnceLock<String>>);

impl Who {
    /// The username of the identified caller; the first identification wins.
    pub fn set(&self, username: &str) {
        let _ = self.0.set(username.to_string());
    }
}

/// A request whose line will be written when it is answered.
pub struct Pending {
    method: Method,
    path: String,
    who: Who,
}

/// Starts the line of `request` if the target is on.
pub fn begin(request: &mut Request) -> Option<Pending> {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return None;
    }
    let who = Who::default();
    request.extensions_mut().insert(who.clone());
    Some(Pending {
        method: request.method().clone(),
        path: request.uri().path().to_string(),
        who,
    })
}

impl Pending {
    pub fn finish(self, status: StatusCode, took: Duration) {
        let user = self.who.0.get().map_or("-", String::as_str);
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = %self.path,
            status = status.as_u16(),
            ms = took.as_millis() as u64,
            user = %user,
        );
    }
}
