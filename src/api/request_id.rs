//! Request ids: the client's (the v2 body's `id`, else an `X-Request-Id` header) or one the
//! gateway makes. The id is echoed in the response and the `X-Request-Id` header, logged with the
//! prediction, and is what ground-truth feedback refers to.

use super::{ApiError, AppState};
use axum::http::{HeaderMap, HeaderName};
use std::sync::Arc;

/// The request header (and response header) that carries the id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// The id of a request: `body_id` when the body gives one, else the `X-Request-Id` header, else a
/// new one.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `id` or `X-Request-Id` for an empty id or one longer than
/// [`MAX_ID_BYTES`], or a header that is not visible ASCII.
pub fn request_id(
    app: &AppState,
    body_id: Option<String>,
    headers: &HeaderMap,
) -> Result<Arc<str>, ApiError> {
    let check = |field: &str, id: &str| {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            Err(ApiError::bad_request(
                field,
                format!("expected a request id of 1 to {MAX_ID_BYTES} bytes"),
            ))
        } else {
            Ok(())
        }
    };
    if let Some(id) = body_id {
        check("id", &id)?;
        return Ok(Arc::from(id));
    }
    match headers.get(REQUEST_ID_HEADER) {
        Some(value) => {
            let id = value.to_str().map_err(|_| {
                ApiError::bad_request("X-Request-Id", "expected visible ASCII characters")
            })?;
            check("X-Request-Id", id)?;
            Ok(Arc::from(id))
        }
        None => Ok(app.next_request_id()),
    }
}
