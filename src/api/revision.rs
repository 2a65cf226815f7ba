//! Deployment revisions on the wire: the `ETag: "<revision>"` of every answer that shows one
//! model's deployment, and the `If-Match` precondition admin writes accept (RFC 9110 §13.1.1).

use super::ApiError;
use crate::serving::ModelReport;
use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The revision `If-Match` requires, if the request sends one.
///
/// Accepts one strong entity tag (`"7"`; a bare `7` is taken as `"7"`) and `*` (any current
/// deployment: no precondition).
///
/// # Errors
/// [`ApiError::BadRequest`] naming `If-Match` for anything else, such as a weak tag (`W/"7"`,
/// which `If-Match` never matches) or a tag that is not a revision number.
pub fn expected_revision(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = |what: &str| {
        ApiError::bad_request(
            "If-Match",
            format!(
                "{what}; expected the deployment's revision as a strong entity tag, e.g. \
                 If-Match: \"7\" (the ETag of GET /admin/models/{{model}})"
            ),
        )
    };
    let text = value.to_str().map_err(|_| bad("not text"))?.trim();
    if text == "*" {
        return Ok(None);
    }
    let mut revisions = Vec::new();
    for tag in text.split(',').map(str::trim) {
        if tag.starts_with("W/") {
            return Err(bad(&format!("weak tag {tag} never matches")));
        }
        let bare = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(tag);
        let revision = bare
            .parse::<u64>()
            .map_err(|_| bad(&format!("`{tag}` is not a revision")))?;
        revisions.push(revision);
    }
    match revisions.as_slice() {
        [revision] => Ok(Some(*revision)),
        _ => Err(bad("give exactly one revision")),
    }
}

/// The `ETag` header value of revision `revision`.
pub fn etag(revision: u64) -> HeaderValue {
    // Digits between quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// A model report as JSON, with its revision as the `ETag`.
pub fn deployment_response(report: ModelReport) -> Response {
    let tag = etag(report.revision);
    let mut response = Json(report).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<Option<u64>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_MATCH,
            HeaderValue::from_str(value).expect("header"),
        );
        expected_revision(&headers)
    }

    #[test]
    fn strong_tags_bare_numbers_and_star_are_understood() {
        assert_eq!(parse("\"7\"").ok(), Some(Some(7)));
        assert_eq!(parse(" 12 ").ok(), Some(Some(12)));
        assert_eq!(parse("*").ok(), Some(None));
        assert_eq!(expected_revision(&HeaderMap::new()).ok(), Some(None));
    }

    #[test]
    fn weak_or_unreadable_tags_name_the_header() {
        for bad in ["W/\"7\"", "\"seven\"", "\"1\", \"2\"", ""] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("If-Match: "), "{bad}: {err}");
        }
    }
}
