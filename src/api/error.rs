//! The API's one error type, mapped to HTTP once.
//!
//! Bodies are FastAPI-compatible: `{"detail": "..."}`. A client's mistake
//! passes its message through; a server fault answers a generic message and
//! logs the cause chain, so no database text ever reaches a client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::errors::error_chain;
use crate::job::{InvalidJobId, TransitionError};
use crate::ports::upstream::UpstreamError;
use crate::store::StoreError;

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
    Unprocessable(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub detail: String,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "internal error");
                "Internal Server Error".to_owned()
            }
            ApiError::Unavailable(message) => {
                tracing::warn!(%message, "service unavailable");
                message.clone()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { detail })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => ApiError::NotFound(format!("Job {id} not found")),
            StoreError::Conflict { id, .. } => ApiError::Conflict(format!(
                "Job {id} was changed concurrently; retry the request"
            )),
            StoreError::KeptChanging { id, .. } => ApiError::Conflict(format!(
                "Job {id} kept changing while the request was applied; retry it"
            )),
            StoreError::FileReplaced { path } => {
                tracing::error!(%path, "the database file was removed or replaced after start; refusing to write");
                ApiError::Unavailable(format!(
                    "The database file {path} was removed or replaced after start; put it back or restart Icarus"
                ))
            }
            StoreError::Unavailable { why, source } => {
                tracing::warn!(error = %error_chain(&source), database = %why, "database unavailable");
                ApiError::Unavailable(why.message().to_owned())
            }
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Refused(message) => ApiError::Unprocessable(message),
            UpstreamError::Missing(message) => ApiError::NotFound(message),
            UpstreamError::Unavailable(message) => ApiError::Unavailable(message),
        }
    }
}

/// A refused change of desired state: the caller may not make it (their
/// own job, under separation of duties), or the job's state forbids it now.
impl From<TransitionError> for ApiError {
    fn from(error: TransitionError) -> Self {
        match error {
            TransitionError::OwnSubmission { .. } => ApiError::Forbidden(error.to_string()),
            _ => ApiError::Conflict(error.to_string()),
        }
    }
}

impl From<InvalidJobId> for ApiError {
    fn from(error: InvalidJobId) -> Self {
        ApiError::Unprocessable(error.to_string())
    }
}
