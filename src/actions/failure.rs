//! An action's failure in words: the error its caller gets (`refusal`), the line its
//! log keeps (`describe`), and a compile error with its position.

use axum::http::StatusCode;

use super::sandbox::{CompileError, Failure};
use super::store::Action;
use crate::error::ApiError;

/// An action's failure as the client sees it.
pub(super) fn refusal(action: &Action, failure: Failure) -> ApiError {
    match failure {
        Failure::Thrown { message, status } => match status {
            Some(code) => ApiError::Status(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            ),
            None => ApiError::BadRequest(message),
        },
        Failure::Limit(_, message) => ApiError::Status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("action `{}` stopped: {message}", action.name),
        ),
        Failure::Internal(message) => {
            ApiError::Internal(anyhow::anyhow!("action `{}`: {message}", action.name))
        }
    }
}

/// Counts one run in `livebase_action_runs_total{outcome}` and a limit it hit in
/// `livebase_action_limit_hits_total{limit}`.
pub(super) fn count(result: &Result<serde_json::Value, Failure>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(Failure::Thrown { .. }) => "thrown",
        Err(Failure::Limit(kind, _)) => {
            metrics::counter!("livebase_action_limit_hits_total", "limit" => kind.label())
                .increment(1);
            "limit"
        }
        Err(Failure::Internal(_)) => "error",
    };
    metrics::counter!("livebase_action_runs_total", "outcome" => outcome).increment(1);
}

/// An action's failure as its log shows it.
pub(super) fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Thrown { message, status } => match status {
            Some(s) => format!("threw ({s}): {message}"),
            None => format!("threw: {message}"),
        },
        Failure::Limit(_, m) => format!("stopped: {m}"),
        Failure::Internal(m) => format!("could not run: {m}"),
    }
}

impl CompileError {
    /// `message (line L, column C)`.
    pub fn describe(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{} (line {l}, column {c})", self.message),
            _ => self.message.clone(),
        }
    }
}
