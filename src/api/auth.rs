//! Admin authentication: `Authorization: Bearer <token>`, compared in constant time. With no
//! token configured every admin route answers 403; the admin API is never open.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let length_differs = u8::from(a.len() != b.len());
    let longest = a.len().max(b.len());
    let mut difference = length_differs;
    for i in 0..longest {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= x ^ y;
    }
    difference == 0
}

/// Middleware on every admin route.
///
/// # Errors
/// [`ApiError::AdminDisabled`] (403) without a configured token, [`ApiError::Unauthorized`]
/// (401) for a missing or wrong token.
pub async fn require_admin(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require_admin_token(&app, request.headers())?;
    Ok(next.run(request).await)
}

/// Checks that `headers` (HTTP headers or gRPC metadata) carry the admin token.
///
/// # Errors
/// [`ApiError::AdminDisabled`] without a configured token, [`ApiError::Unauthorized`] for a
/// missing or wrong one.
pub fn require_admin_token(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = app.admin_token() else {
        return Err(ApiError::AdminDisabled);
    };
    bearer_matches(headers, &[expected], "wrong admin token")
}

/// Checks that `headers` carry `Authorization: Bearer <t>` with `t` one of `tokens` (each compared
/// in constant time).
///
/// # Errors
/// [`ApiError::Unauthorized`] (401) for a missing token, or with `wrong` for a wrong one.
pub fn bearer_matches(
    headers: &HeaderMap,
    tokens: &[&str],
    wrong: &'static str,
) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(given) = given else {
        return Err(ApiError::Unauthorized(
            "missing `Authorization: Bearer <token>` header",
        ));
    };
    // Compare against every token, so the time taken does not tell which one matched.
    let matched = tokens.iter().fold(false, |any, t| {
        constant_time_eq(given.as_bytes(), t.as_bytes()) | any
    });
    if matched {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(wrong))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_bytes_and_lengths_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
