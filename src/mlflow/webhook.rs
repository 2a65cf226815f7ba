//! MLflow's webhook deliveries, as a trigger only: the signature (`X-MLflow-Signature` over the
//! raw body, constant time), the timestamp's age and the delivery id (each accepted once) are
//! checked; what the payload says is used for nothing but a log line.

use crate::signature::{self, MAX_AGE_SECS, SignatureError};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most delivery ids remembered; older ones are forgotten first (their timestamps are refused
/// anyway once [`MAX_AGE_SECS`] old).
const REMEMBERED_DELIVERIES: usize = 100_000;

/// Why a delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// A header is missing or unreadable.
    #[error("{header}: {expected}")]
    Header {
        /// The header.
        header: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// The signature is malformed or does not match.
    #[error("X-MLflow-Signature: {0}")]
    Signature(SignatureError),
    /// The timestamp is too old or too far ahead.
    #[error("X-MLflow-Timestamp: {0}")]
    Stale(SignatureError),
    /// This delivery id was accepted before.
    #[error("X-MLflow-Delivery-Id: delivery {0} was already received")]
    Replayed(String),
}

/// One delivery's headers.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// `X-MLflow-Delivery-Id`.
    pub id: Option<&'a str>,
    /// `X-MLflow-Timestamp` (Unix seconds).
    pub timestamp: Option<&'a str>,
    /// `X-MLflow-Signature`.
    pub signature: Option<&'a str>,
}

/// Verifies deliveries signed with one secret, and remembers the ids it accepted.
#[derive(Debug)]
pub struct WebhookReceiver {
    secret: Vec<u8>,
    accepted: Mutex<HashMap<String, i64>>,
}

impl WebhookReceiver {
    /// A receiver for deliveries signed with `secret`.
    pub fn new(secret: &str) -> WebhookReceiver {
        WebhookReceiver {
            secret: secret.as_bytes().to_vec(),
            accepted: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts `delivery` of `body` at `now` (Unix seconds), once.
    ///
    /// # Errors
    /// [`DeliveryError`] saying which header is wrong.
    pub fn accept(
        &self,
        delivery: Delivery<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<(), DeliveryError> {
        let id = delivery
            .id
            .filter(|id| !id.is_empty() && id.len() <= 200)
            .ok_or(DeliveryError::Header {
                header: "X-MLflow-Delivery-Id",
                expected: "the delivery id MLflow sends (1 to 200 characters)",
            })?;
        let timestamp = delivery
            .timestamp
            .and_then(|t| t.trim().parse::<i64>().ok())
            .ok_or(DeliveryError::Header {
                header: "X-MLflow-Timestamp",
                expected: "Unix seconds",
            })?;
        let sent = delivery.signature.ok_or(DeliveryError::Header {
            header: "X-MLflow-Signature",
            expected: "v1,<base64 HMAC-SHA256> (configure the webhook with a secret)",
        })?;
        signature::verify(&self.secret, id, timestamp, body, sent, now).map_err(|e| match e {
            SignatureError::Stale { .. } => DeliveryError::Stale(e),
            other => DeliveryError::Signature(other),
        })?;
        let mut accepted = self
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if accepted.contains_key(id) {
            return Err(DeliveryError::Replayed(id.to_string()));
        }
        if accepted.len() >= REMEMBERED_DELIVERIES {
            accepted.retain(|_, seen| now - *seen <= MAX_AGE_SECS);
        }
        if accepted.len() < REMEMBERED_DELIVERIES {
            accepted.insert(id.to_string(), timestamp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery captured from MLflow 3.17.2 (secret `s3cr3t`).
    const BODY: &str = r#"{"entity": "model_version_alias", "action": "created", "timestamp": "2026-11-23T17:29:59.542602+00:00", "data": {"name": "iris-onnx", "alias": "champion", "version": "1"}}"#;
    const ID: &str = "edf2387b-a251-4f8a-bcd6-cc22da729398";
    const SIGNATURE: &str = "v1,zoaB+qftfHEclnwr2Hq12vMQdeUpEnia3MhXdLiBZFY=";
    const TIMESTAMP: i64 = 1_795_454_999;

    fn delivery<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> Delivery<'a> {
        Delivery {
            id: Some(id),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn a_captured_delivery_is_accepted_once() {
        let receiver = WebhookReceiver::new("s3cr3t");
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            receiver.accept(delivery(ID, &ts, SIGNATURE), BODY.as_bytes(), TIMESTAMP + 3),
            Ok(())
        );
        assert_eq!(
            receiver.accept(delivery(ID, &ts, SIGNATURE), BODY.as_bytes(), TIMESTAMP + 4),
            Err(DeliveryError::Replayed(ID.into()))
        );
    }

    #[test]
    fn a_changed_body_a_wrong_secret_or_an_old_timestamp_is_refused() {
        let ts = TIMESTAMP.to_string();
        let receiver = WebhookReceiver::new("s3cr3t");
        let altered = BODY.replace("\"1\"", "\"2\"");
        assert!(matches!(
            receiver.accept(delivery(ID, &ts, SIGNATURE), altered.as_bytes(), TIMESTAMP),
            Err(DeliveryError::Signature(SignatureError::Mismatch))
        ));
        let other = WebhookReceiver::new("other");
        assert!(matches!(
            other.accept(delivery(ID, &ts, SIGNATURE), BODY.as_bytes(), TIMESTAMP),
            Err(DeliveryError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            receiver.accept(
                delivery(ID, &ts, SIGNATURE),
                BODY.as_bytes(),
                TIMESTAMP + MAX_AGE_SECS + 1
            ),
            Err(DeliveryError::Stale(_))
        ));
        // A refused delivery is not remembered: the genuine one is still accepted.
        assert_eq!(
            receiver.accept(delivery(ID, &ts, SIGNATURE), BODY.as_bytes(), TIMESTAMP),
            Ok(())
        );
        let missing = Delivery {
            id: Some(ID),
            timestamp: None,
            signature: Some(SIGNATURE),
        };
        assert!(matches!(
            receiver.accept(missing, BODY.as_bytes(), TIMESTAMP),
            Err(DeliveryError::Header {
                header: "X-MLflow-Timestamp",
                ..
            })
        ));
    }
}
