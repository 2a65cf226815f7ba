//! Reading request bodies: the size limit (413 before reading when `Content-Length` is too
//! large, after draining a bounded amount so every client can read it) and the content types
//! each protocol accepts (415 otherwise).

use super::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use std::time::Duration;

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

/// The media type of the body (`Content-Type` without parameters), as sent; compare it with
/// [`is_media`] (media types are case-insensitive).
fn media_type(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::UnsupportedMediaType("(not text)".into()))?;
    Ok(Some(text.split(';').next().unwrap_or("").trim()))
}

/// True when `media` is `expected`, ignoring case.
fn is_media(media: &str, expected: &str) -> bool {
    media.eq_ignore_ascii_case(expected)
}

/// True for `application/json` and structured `…+json` types.
fn is_json(media: &str) -> bool {
    is_media(media, "application/json")
        || media
            .len()
            .checked_sub(5)
            .and_then(|at| media.get(at..))
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
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
        return match media {
            None => Ok(BodyFormat::JsonWithBinary { json_len }),
            Some(media)
                if is_media(media, "application/octet-stream")
                    || is_media(media, "application/json") =>
            {
                Ok(BodyFormat::JsonWithBinary { json_len })
            }
            Some(other) => Err(ApiError::UnsupportedMediaType(other.to_ascii_lowercase())),
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
    match media_type(headers)? {
        None => Ok(()),
        Some(media) if is_json(media) => Ok(()),
        Some(other) => Err(ApiError::UnsupportedMediaType(other.to_ascii_lowercase())),
    }
}

/// Most bytes of a too-large body read and thrown away before the 413 is sent, so that a client
/// that writes its whole body before it reads (Python's `http.client`, curl without
/// `Expect: 100-continue`) reads the 413 instead of a reset connection.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// Longest time spent throwing a too-large body away.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// A body read failure: a timeout (408) or a broken body (400).
fn body_error(error: axum::Error) -> ApiError {
    let inner = error.into_inner();
    match inner.downcast_ref::<crate::listener::BodyTimedOut>() {
        Some(timed_out) => ApiError::BodyTimeout(*timed_out),
        None => ApiError::BodyRead(inner.to_string()),
    }
}

/// Reads the whole body, refusing more than `limit` bytes. A body declared larger than the limit
/// is refused before any of it is read; either way, up to [`DRAIN_MAX_BYTES`] of the rest is read
/// and discarded so the client can read the answer, and a connection whose body could not be
/// drained is closed after it.
///
/// # Errors
/// [`ApiError::BodyTooLarge`] past the limit, [`ApiError::BodyRead`] when the connection fails, [`ApiError::BodyTimeout`] when the
/// body read timeout passes.
pub async fn read_limited(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        let drained =
            declared.is_some_and(|len| len <= DRAIN_MAX_BYTES) && discard(&mut body).await;
        return Err(ApiError::BodyTooLarge { limit, drained });
    }
    let mut whole = Collected::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(body_error)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if whole.len() + data.len() > limit {
            let drained = discard(&mut body).await;
            return Err(ApiError::BodyTooLarge { limit, drained });
        }
        whole.push(data);
    }
    Ok(whole.into_bytes())
}

/// Reads and drops the rest of `body`, up to [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`]. True
/// when the body ended within those bounds.
async fn discard(body: &mut Body) -> bool {
    let drain = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > DRAIN_MAX_BYTES {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_MAX_TIME, drain)
        .await
        .unwrap_or(false)
}

/// Body chunks, copied together only when there is more than one.
#[derive(Default)]
struct Collected {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Collected {
    fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    fn push(&mut self, data: Bytes) {
        match &mut self.more {
            Some(more) => more.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None => {
                let mut more = BytesMut::with_capacity(self.first.len() + data.len());
                more.extend_from_slice(&self.first);
                more.extend_from_slice(&data);
                self.more = Some(more);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        self.more.map_or(self.first, BytesMut::freeze)
    }
}

/// A JSON body of at most `limit` bytes, decoded into `T` (the field at fault is named).
///
/// # Errors
/// 415 for a content type that is not JSON, 413 over `limit`, 400 for JSON that does not fit.
pub async fn json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    json_format(headers)?;
    let bytes = read_limited(headers, body, limit).await?;
    super::v2_types::parse_json(&bytes)
}
