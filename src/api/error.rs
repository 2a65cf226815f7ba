//! `ApiError` and the one place errors become HTTP status codes and `{"error": ...}` bodies, and
//! gRPC status codes with the same messages.

use super::revision::etag;
use crate::feedback::{FeedbackError, ItemError};
use crate::mlflow::DeliveryError;
use crate::serving::{ModelReport, ServingError};
use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Anything a route can answer with instead of a result.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the serving layer (unknown model, invalid input, engine failure, ...).
    #[error(transparent)]
    Serving(#[from] ServingError),
    /// A malformed request, naming the field and what was expected.
    #[error("{field}: {expected}")]
    BadRequest {
        /// The field at fault.
        field: String,
        /// What was expected there.
        expected: String,
    },
    /// The body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes (--max-body-bytes)")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
        /// True when the rest of the body was read and discarded, so the connection can stay
        /// open; false when it is closed after the answer.
        drained: bool,
    },
    /// A body in a format the route does not take.
    #[error(
        "unsupported content type `{0}`; expected application/json, or \
         application/octet-stream with an Inference-Header-Content-Length header"
    )]
    UnsupportedMediaType(String),
    /// No such route.
    #[error("no route for {method} {path}")]
    NoRoute {
        /// The method used.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// The route exists but not for this method.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// `GET /admin/replicas` on a gateway that shares no database.
    #[error("this gateway shares no database with replicas: start it with --database-url")]
    NotReplicated,
    /// The admin API has no token configured: it is disabled, never open.
    #[error("admin API disabled: start the gateway with VIGIL_ADMIN_TOKEN (or admin_token) set")]
    AdminDisabled,
    /// The admin bearer token is missing or wrong.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A response could not be encoded.
    #[error("cannot encode the response: {0}")]
    Encode(String),
    /// The body could not be read from the connection.
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    /// The body did not arrive within the body read timeout.
    #[error(transparent)]
    BodyTimeout(#[from] crate::listener::BodyTimedOut),
    /// The gateway is shutting down and takes no new inferences.
    #[error("the gateway is shutting down; send the request to another replica")]
    ShuttingDown,
    /// From the feedback loop (its store, its settings).
    #[error(transparent)]
    Feedback(#[from] FeedbackError),
    /// One feedback item was refused (a single-item request).
    #[error(transparent)]
    Item(ItemError),
    /// The feedback API is not enabled, and why.
    #[error("{0}")]
    FeedbackDisabled(&'static str),
    /// A webhook delivery that is not signed right, too old, or seen before.
    #[error(transparent)]
    Webhook(#[from] DeliveryError),
    /// More feedback items than one request may carry.
    #[error("items: {items} items exceed the limit of {max} per request")]
    TooManyItems {
        /// Items sent.
        items: usize,
        /// The limit.
        max: usize,
    },
}

impl ApiError {
    /// Shorthand for [`ApiError::BadRequest`].
    pub fn bad_request(field: impl Into<String>, expected: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            field: field.into(),
            expected: expected.into(),
        }
    }

    /// The status code for this error. Client mistakes are never 5xx.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Serving(error) => match error {
                ServingError::UnknownModel(_) | ServingError::UnknownVersion { .. } => {
                    StatusCode::NOT_FOUND
                }
                ServingError::Unavailable { .. } | ServingError::DeadlineExceeded { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ServingError::Overloaded { .. } | ServingError::Busy { .. } => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                ServingError::InvalidInput { .. } => StatusCode::BAD_REQUEST,
                ServingError::TooManyRows { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ServingError::Conflict(_) => StatusCode::CONFLICT,
                ServingError::Stale { .. } | ServingError::State(StoreError::Conflict { .. }) => {
                    StatusCode::PRECONDITION_FAILED
                }
                ServingError::State(StoreError::Unavailable { .. }) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ServingError::Engine(_)
                | ServingError::State(_)
                | ServingError::Repository(_)
                | ServingError::Archive { .. }
                | ServingError::Interrupted { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::BadRequest { .. } | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NoRoute { .. } | ApiError::NotReplicated => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::AdminDisabled | ApiError::FeedbackDisabled(_) => StatusCode::FORBIDDEN,
            ApiError::Feedback(error) => match error {
                FeedbackError::Store(
                    StoreError::Database { .. } | StoreError::Unavailable { .. },
                )
                | FeedbackError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
                FeedbackError::Store(_) | FeedbackError::Unanswered { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                FeedbackError::UnknownModel(_) => StatusCode::NOT_FOUND,
                FeedbackError::InvalidSettings(_) => StatusCode::BAD_REQUEST,
            },
            ApiError::Item(error) => match error {
                ItemError::NotFound { .. } => StatusCode::NOT_FOUND,
                ItemError::Conflict { .. } => StatusCode::CONFLICT,
                ItemError::Invalid { .. } => StatusCode::BAD_REQUEST,
            },
            ApiError::TooManyItems { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Webhook(error) => match error {
                DeliveryError::Signature(_) => StatusCode::UNAUTHORIZED,
                DeliveryError::Header { .. }
                | DeliveryError::Stale(_)
                | DeliveryError::Replayed(_) => StatusCode::BAD_REQUEST,
            },
        }
    }
}

impl ApiError {
    /// The gRPC status code for this error: the HTTP status's counterpart, so both protocols
    /// answer a mistake the same way.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::Serving(ServingError::DeadlineExceeded { .. }) | ApiError::BodyTimeout(_) => {
                tonic::Code::DeadlineExceeded
            }
            ApiError::BodyTooLarge { .. } => tonic::Code::ResourceExhausted,
            _ => match self.status() {
                StatusCode::BAD_REQUEST
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument,
                StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
                StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
                StatusCode::NOT_FOUND => tonic::Code::NotFound,
                StatusCode::METHOD_NOT_ALLOWED => tonic::Code::Unimplemented,
                StatusCode::CONFLICT => tonic::Code::FailedPrecondition,
                StatusCode::PRECONDITION_FAILED => tonic::Code::Aborted,
                StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
                StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
                _ => tonic::Code::Internal,
            },
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> tonic::Status {
        let code = error.grpc_code();
        if code == tonic::Code::Internal {
            tracing::error!(error = %error, "request failed");
        }
        tonic::Status::new(code, error.to_string())
    }
}

/// The JSON body of every error: the message, and for a stale `If-Match` the deployment as it
/// is now (so the caller can decide and retry without another read).
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<&'a ModelReport>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let current = match &self {
            ApiError::Serving(ServingError::Stale { current, .. }) => Some(current.as_ref()),
            _ => None,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
                deployment: current,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(current) = current {
            headers.insert(header::ETAG, etag(current.revision));
        }
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Serving(ServingError::Overloaded { .. } | ServingError::Busy { .. }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::BodyTimeout(_) | ApiError::ShuttingDown => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::BodyTooLarge { drained: false, .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
