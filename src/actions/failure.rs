//! An action's failure in words: the error its caller gets (`refusal`), the line its
//! log keeps (`describe`, at the level `level` gives), and a compile error with its
//! position.
//!
//! A deliberate throw is the action refusing the request: a 4xx with its message. A bug
//! (an error the engine raised in the action's code, see `sandbox::own_errors`) is a 500
//! naming the action and the line and column: the text is not hidden as
//! `ApiError::Internal` would hide it, because the action's author needs the location.
//! The file the code came from is a path on the server, so it is only in the logs (the
//! server's and the action's own, which only an Admin reads), never in the answer.

use std::path::Path;

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
        Failure::Bug {
            message,
            line,
            column,
        } => ApiError::Status(
            StatusCode::INTERNAL_SERVER_ERROR,
            bug(action, &message, (line, column), None),
        ),
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
        Err(Failure::Bug { .. }) => "bug",
        Err(Failure::Internal(_)) => "error",
    };
    metrics::counter!("livebase_action_runs_total", "outcome" => outcome).increment(1);
}

/// An action's failure as its log (and the server log) shows it; for a bug, the text
/// the client gets with the action's file added to its place.
pub(super) fn describe(action: &Action, failure: &Failure) -> String {
    match failure {
        Failure::Thrown { message, status } => match status {
            Some(s) => format!("threw ({s}): {message}"),
            None => format!("threw: {message}"),
        },
        Failure::Bug {
            message,
            line,
            column,
        } => bug(action, message, (*line, *column), action.file.as_deref()),
        Failure::Limit(_, m) => format!("stopped: {m}"),
        Failure::Internal(m) => format!("could not run: {m}"),
    }
}

/// `action <object>/<trigger>/<name> failed: <message> (<file>, line L, column C)`,
/// each part of the place there when known.
fn bug(
    action: &Action,
    message: &str,
    (line, column): (Option<u32>, Option<u32>),
    file: Option<&Path>,
) -> String {
    let mut place: Vec<String> = Vec::new();
    if let Some(file) = file {
        place.push(file.display().to_string());
    }
    if let (Some(l), Some(c)) = (line, column) {
        place.push(format!("line {l}, column {c}"));
    }
    let place = match place.is_empty() {
        true => String::new(),
        false => format!(" ({})", place.join(", ")),
    };
    format!(
        "action {}/{}/{} failed: {message}{place}",
        action.object,
        action.trigger.as_str(),
        action.name
    )
}

/// How loud a failure is in the server log: a refusal is the action working as meant,
/// a limit is the action misbehaving, a bug or livebase failing to run it is an error.
pub(super) fn level(failure: &Failure) -> tracing::Level {
    match failure {
        Failure::Thrown { .. } => tracing::Level::INFO,
        Failure::Limit(..) => tracing::Level::WARN,
        Failure::Bug { .. } | Failure::Internal(_) => tracing::Level::ERROR,
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
