//! Webhooks from other systems. `POST /hooks/mlflow`: a delivery from the MLflow Model Registry,
//! checked (signature over the raw body, timestamp, delivery id) and answered at once; it only
//! makes the registry sync look now, and nothing in its payload decides anything.

use super::{ApiError, AppState, body};
use crate::mlflow::Delivery;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `POST /hooks/mlflow`: 202 and an immediate sync for a genuine, new delivery; 404 when no
/// webhook secret is configured.
pub async fn mlflow(
    State(app): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(sync) = app.registry_sync() else {
        return Err(disabled(&uri));
    };
    let bytes = body::read_limited(&headers, body, app.max_body_bytes()).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = Delivery {
        id: header("x-mlflow-delivery-id"),
        timestamp: header("x-mlflow-timestamp"),
        signature: header("x-mlflow-signature"),
    };
    match sync.receive(delivery, &bytes) {
        None => Err(disabled(&uri)),
        Some(Err(error)) => {
            tracing::warn!(%error, "MLflow webhook refused");
            Err(error.into())
        }
        Some(Ok(())) => {
            let payload: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            tracing::info!(
                entity = payload["entity"].as_str().unwrap_or_default(),
                action = payload["action"].as_str().unwrap_or_default(),
                model = payload["data"]["name"].as_str().unwrap_or_default(),
                "MLflow webhook received; syncing with the registry"
            );
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(json!({"status": "accepted", "sync": "started"})),
            )
                .into_response())
        }
    }
}

/// The answer of a disabled webhook: no such route.
fn disabled(uri: &axum::http::Uri) -> ApiError {
    ApiError::NoRoute {
        method: "POST".into(),
        path: uri.path().to_string(),
    }
}
