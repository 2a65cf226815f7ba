//! Webhook signatures as MLflow (3.3 and later) writes them, for the webhooks vigil sends and
//! those it receives: `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{raw body}")), with
//! the timestamp in Unix seconds. Receivers compare in constant time and refuse timestamps more
//! than [`MAX_AGE_SECS`] away from their clock.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Oldest (and furthest in the future) timestamp a receiver accepts, in seconds.
pub const MAX_AGE_SECS: i64 = 300;

/// Why a signed delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature header is not `v1,<base64>`.
    #[error("the signature is not of the form v1,<base64 HMAC-SHA256>")]
    Malformed,
    /// The signature does not match the body.
    #[error("the signature does not match the body")]
    Mismatch,
    /// The timestamp is too old or too far ahead.
    #[error("the timestamp is {age} s from now; at most {MAX_AGE_SECS} s is accepted")]
    Stale {
        /// Seconds between the timestamp and now.
        age: i64,
    },
}

fn mac(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    #[expect(
        clippy::expect_used,
        reason = "HMAC takes keys of every length; new_from_slice cannot fail"
    )]
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header value of `body` sent as delivery `id` at `timestamp`.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, id, timestamp, body).finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Checks that `signature` signs `body` as delivery `id` at `timestamp`, and that `timestamp` is
/// within [`MAX_AGE_SECS`] of `now` (both Unix seconds).
///
/// # Errors
/// [`SignatureError`] saying what is wrong.
pub fn verify(
    secret: &[u8],
    id: &str,
    timestamp: i64,
    body: &[u8],
    signature: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let encoded = signature
        .trim()
        .strip_prefix("v1,")
        .ok_or(SignatureError::Malformed)?;
    let tag = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SignatureError::Malformed)?;
    mac(secret, id, timestamp, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)?;
    let age = now - timestamp;
    if age.abs() > MAX_AGE_SECS {
        return Err(SignatureError::Stale { age });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac_sha256() {
        // python3 -c "import hmac,hashlib,base64; print('v1,'+base64.b64encode(hmac.new(
        //   b'secret', b'evt_1.1700000000.{\"a\":1}', hashlib.sha256).digest()).decode())"
        assert_eq!(
            sign(b"secret", "evt_1", 1_700_000_000, br#"{"a":1}"#),
            "v1,YrKHdjs/ZmkKdPXXFLsyEwjK1O/KdKJA+gpL5VtDUsY="
        );
    }

    #[test]
    fn verification_refuses_tampering_staleness_and_garbage() {
        let body = br#"{"event":"x"}"#;
        let signature = sign(b"k", "d1", 1_000, body);
        assert_eq!(verify(b"k", "d1", 1_000, body, &signature, 1_100), Ok(()));
        assert_eq!(
            verify(b"k", "d1", 1_000, b"{}", &signature, 1_100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", "d1", 1_000, body, &signature, 1_100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", "d2", 1_000, body, &signature, 1_100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", "d1", 1_000, body, &signature, 1_301),
            Err(SignatureError::Stale { age: 301 })
        );
        assert_eq!(
            verify(b"k", "d1", 1_000, body, "v2,abc", 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", "d1", 1_000, body, "v1,***", 1_000),
            Err(SignatureError::Malformed)
        );
    }
}
