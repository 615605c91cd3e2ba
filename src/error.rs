//! The one error type at the client boundary.
//!
//! Every failure a client can see is an `ApiError`; its `IntoResponse` picks the status
//! and answers `{"Message": "…"}` as Backand did. Internal errors are logged in full and
//! shown to the client only as a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A 400 about a place in code the client sent (an action that does not compile):
    /// the answer carries `line` and `column` beside `Message`.
    #[error("{message}")]
    Located {
        message: String,
        line: Option<u32>,
        column: Option<u32>,
    },
    /// A refusal with a status chosen by user code (a before-hook), e.g. 409 or 422.
    #[error("{1}")]
    Status(StatusCode, String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// The message an expired or unverifiable bearer token gets; the Backand SDK refreshes
/// its token on exactly this text.
pub const INVALID_TOKEN: &str = "invalid or expired token";

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Located { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Status(s, _) => *s,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn invalid_token() -> Self {
        ApiError::Unauthorized(INVALID_TOKEN.into())
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, details = ?e, "internal error");
        }
        let body = match &self {
            ApiError::Located { line, column, .. } => {
                json!({ "Message": self.to_string(), "line": line, "column": column })
            }
            _ => json!({ "Message": self.to_string() }),
        };
        (status, axum::Json(body)).into_response()
    }
}
