//! Request accounting for inference routes (HTTP and gRPC): the in-flight gauge, and one outcome
//! recorded per request (status class, whole time, inference time, gateway overhead) in one place.

use super::{ApiError, AppState};
use crate::metrics;
use crate::monitor::{Protocol, TrafficRole};
use crate::serving::{LoadedVersion, Route, ServingError};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a successful inference handler reports back for accounting, with its answer `R` (an
/// HTTP response, a gRPC message).
pub struct Served<R = Response> {
    /// The answer to send.
    pub response: R,
    /// The version that answered.
    pub version: Arc<LoadedVersion>,
    /// How the request reached it.
    pub role: TrafficRole,
    /// Time spent in the engine.
    pub inference: Duration,
}

struct InFlight(::metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn status_class(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Runs an HTTP inference handler on `route` and records its outcome (see [`accounted`]).
pub async fn observed<F, Fut>(
    app: &AppState,
    protocol: Protocol,
    model: &str,
    route: Result<Route, ServingError>,
    handler: F,
) -> Response
where
    F: FnOnce(Route) -> Fut,
    Fut: Future<Output = Result<Served, ApiError>>,
{
    accounted(app, protocol, model, route, handler)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Runs an inference handler on `route` unless the gateway is draining or admission control
/// sheds it, and records its outcome: success on the version's handles, errors with the model
/// and version when known (empty labels otherwise, so unknown names never grow the label set).
pub async fn accounted<F, Fut, R>(
    app: &AppState,
    protocol: Protocol,
    model: &str,
    route: Result<Route, ServingError>,
    handler: F,
) -> Result<R, ApiError>
where
    F: FnOnce(Route) -> Fut,
    Fut: Future<Output = Result<Served<R>, ApiError>>,
{
    let started = Instant::now();
    let gauge = app.in_flight(protocol).clone();
    gauge.increment(1.0);
    let _in_flight = InFlight(gauge);
    let (version, role, outcome) = match route {
        Ok(_) if app.is_draining() => (None, TrafficRole::Champion, Err(ApiError::ShuttingDown)),
        Ok(route) => {
            let version = Arc::clone(&route.version);
            let role = route.role.traffic();
            let outcome = match app.registry().shed(&route) {
                Ok(()) => handler(route).await,
                Err(busy) => Err(ApiError::from(busy)),
            };
            (Some(version), role, outcome)
        }
        Err(error) => (None, TrafficRole::Champion, Err(ApiError::from(error))),
    };
    match outcome {
        Ok(served) => {
            served.version.monitor.record_request(
                served.role,
                protocol,
                started.elapsed(),
                served.inference,
            );
            Ok(served.response)
        }
        Err(error) => {
            let status = error.status();
            let known_model = app.registry().model(model).is_ok();
            let version_label = version.as_ref().map_or("", |v| &*v.version);
            if let Some(version) = &version {
                version.monitor.record_error();
            }
            app.registry()
                .metrics()
                .counter(
                    metrics::REQUESTS_TOTAL,
                    &[
                        ("model", if known_model { model } else { "" }),
                        ("version", version_label),
                        ("role", role.label()),
                        ("protocol", protocol.label()),
                        ("status", status_class(status)),
                    ],
                )
                .increment(1);
            Err(error)
        }
    }
}
