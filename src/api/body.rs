//! Reading request bodies: the size limit (413 before reading when `Content-Length` is too
//! large) and the content types each protocol accepts (415 otherwise).

use super::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;

/// The header that marks a body as a JSON header followed by binary tensors.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// How an inference body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// The whole body is JSON.
    Json,
    /// The first `json_len` bytes are JSON, the rest are binary tensors.
    JsonWithBinary {
        /// Length of the JSON part.
        json_len: usize,
    },
}

fn media_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::UnsupportedMediaType("(not text)".into()))?;
    let media = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(Some(media))
}

fn check_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str()) {
        None => Ok(()),
        Some(Ok(encoding)) if encoding.eq_ignore_ascii_case("identity") => Ok(()),
        Some(Ok(encoding)) => Err(ApiError::UnsupportedMediaType(format!(
            "{encoding} (content encoding)"
        ))),
        Some(Err(_)) => Err(ApiError::UnsupportedMediaType("(content encoding)".into())),
    }
}

/// Decides the layout of an inference body from its headers. A body without a content type is
/// taken as JSON (tritonclient sends none).
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`] for other content types or encodings,
/// [`ApiError::BadRequest`] for an unreadable `Inference-Header-Content-Length`.
pub fn inference_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    check_encoding(headers)?;
    let media = media_type(headers)?;
    if let Some(value) = headers.get(INFERENCE_HEADER_CONTENT_LENGTH) {
        let json_len = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Inference-Header-Content-Length",
                    "expected the byte length of the JSON header as a non-negative integer",
                )
            })?;
        return match media.as_deref() {
            None | Some("application/octet-stream") | Some("application/json") => {
                Ok(BodyFormat::JsonWithBinary { json_len })
            }
            Some(other) => Err(ApiError::UnsupportedMediaType(other.to_string())),
        };
    }
    json_format(headers).map(|()| BodyFormat::Json)
}

/// Accepts only JSON bodies (or bodies without a content type).
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`] for anything else.
pub fn json_format(headers: &HeaderMap) -> Result<(), ApiError> {
    check_encoding(headers)?;
    match media_type(headers)?.as_deref() {
        None | Some("application/json") => Ok(()),
        Some(other) if other.ends_with("+json") => Ok(()),
        Some(other) => Err(ApiError::UnsupportedMediaType(other.to_string())),
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
///
/// # Errors
/// [`ApiError::BodyTooLarge`] past the limit, [`ApiError::BodyRead`] when the connection fails.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BodyRead(e.to_string())
        }
    })
}
