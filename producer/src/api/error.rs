//! The API's one error shape, `{"error": {"code", "message", "field"}}`, and the status each
//! producer error answers with (503 with `Retry-After` for what a retry may cure).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use fleet_producer::{ProducerError, RequestError};

/// An error response: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault (a JSON path such as `options.max_attempts`), if any.
    pub field: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub(super) fn invalid(message: impl Into<String>, field: Option<String>) -> Self {
        Self {
            field,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "field": self.field,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fleet\""),
            );
        }
        response
    }
}

impl From<ProducerError> for ApiError {
    fn from(e: ProducerError) -> Self {
        let message = e.to_string();
        match e {
            ProducerError::Invalid(RequestError::Field { field, .. }) => {
                Self::invalid(message, Some(field))
            }
            ProducerError::Invalid(RequestError::Syntax(_)) => Self::invalid(message, None),
            ProducerError::Conflict { .. } => Self::new(StatusCode::CONFLICT, "conflict", message),
            ProducerError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            ProducerError::NotDone { .. } => Self::new(StatusCode::CONFLICT, "not_done", message),
            ProducerError::Cancelled { .. } => {
                Self::new(StatusCode::CONFLICT, "cancelled", message)
            }
            ProducerError::NotWindowed { .. } => {
                Self::new(StatusCode::CONFLICT, "not_windowed", message)
            }
            // A ledger that refuses for good (its table of another layout, an invalid item)
            // will not answer otherwise on a retry.
            ProducerError::Ledger(ref l)
                if l.class() == fleet_shared::error::ErrorClass::Permanent =>
            {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
            ProducerError::Ledger(_) | ProducerError::Queue(_) | ProducerError::Storage(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            ProducerError::NoDeadLetterQueue => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}
