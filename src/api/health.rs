//! Server metadata, liveness, readiness and the Prometheus endpoint.

use super::AppState;
use super::catalog::{MODEL_REPOSITORY_EXTENSION, SERVER_NAME};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Serialize)]
struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    extensions: [&'static str; 2],
}

/// `GET /v2`: server name, version and protocol extensions.
pub async fn server_metadata() -> Response {
    Json(ServerMetadata {
        name: SERVER_NAME,
        version: env!("CARGO_PKG_VERSION"),
        extensions: ["binary_tensor_data", MODEL_REPOSITORY_EXTENSION],
    })
    .into_response()
}

#[derive(Serialize)]
struct Live {
    live: bool,
}

/// `GET /v2/health/live`: 200 while the process serves HTTP.
pub async fn live() -> Response {
    Json(Live { live: true }).into_response()
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
}

/// `GET /v2/health/ready`: 200 once every version of the start-up set has been loaded (or
/// marked unavailable) and the gateway is not draining; 503 otherwise.
pub async fn ready(State(app): State<AppState>) -> Response {
    let ready = !app.is_draining();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Ready { ready })).into_response()
}

/// `GET /metrics`: Prometheus text exposition of the gateway's metrics.
pub async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.registry().metrics().render(),
    )
        .into_response()
}
