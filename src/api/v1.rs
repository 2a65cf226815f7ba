//! TF-Serving-style JSON for humans: `POST /v1/models/{m}[/versions/{v}]:predict` with
//! `{"instances": [[...], ...]}` or `{"instances": [{"<feature>": value, ...}]}`,
//! `GET /v1/models/{m}[/versions/{v}]` for version status, and `POST /v1/models/{m}/feedback`
//! (handled in `feedback.rs`).

use super::observe::{Served, observed};
use super::request_id::{REQUEST_ID_HEADER, request_id};
use super::{ApiError, AppState, body};
use crate::engine::DataType;
use crate::monitor::Protocol;
use crate::serving::{
    ACCEPTED_OUTPUT, CONFIDENCE_OUTPUT, PredictOptions, Route, RowPrediction, row_predictions,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::sync::Arc;

/// A `/v1/models/...` path, split into its parts.
#[derive(Debug, PartialEq, Eq)]
struct V1Path {
    model: String,
    version: Option<String>,
    verb: Option<String>,
}

fn parse_path(rest: &str) -> Option<V1Path> {
    let (path, verb) = match rest.rsplit_once(':') {
        Some((path, verb)) => (path, Some(verb.to_string())),
        None => (rest, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (model, version) = match parts.as_slice() {
        [model] => (*model, None),
        [model, "versions", version] => (*model, Some(version.to_string())),
        _ => return None,
    };
    if model.is_empty() || version.as_deref() == Some("") {
        return None;
    }
    Some(V1Path {
        model: model.to_string(),
        version,
        verb,
    })
}

/// `/v1/models/{*rest}`: dispatches `:predict` (POST) and status (GET).
pub async fn dispatch(
    State(app): State<AppState>,
    method: Method,
    Path(rest): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // The request is taken whole so that its headers are borrowed, not copied.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let no_route = || ApiError::NoRoute {
        method: method.to_string(),
        path: format!("/v1/models/{rest}"),
    };
    if let Some(model) = rest.strip_suffix("/feedback").filter(|m| !m.contains('/')) {
        return match method {
            Method::POST => super::feedback::submit(&app, model, headers, body).await,
            _ => Err(ApiError::MethodNotAllowed(method.to_string())),
        };
    }
    let path = parse_path(&rest).ok_or_else(no_route)?;
    match (path.verb.as_deref(), &method) {
        (Some("predict"), &Method::POST) => {
            let route = app.registry().route(&path.model, path.version.as_deref());
            Ok(observed(&app, Protocol::V1, &path.model, route, |route| {
                predict(&app, route, headers, body)
            })
            .await)
        }
        (Some("predict"), _) => Err(ApiError::MethodNotAllowed(method.to_string())),
        (None, &Method::GET) => status(&app, &path),
        (None, _) => Err(ApiError::MethodNotAllowed(method.to_string())),
        (Some(_), _) => Err(no_route()),
    }
}

#[derive(Serialize)]
struct VersionStatusBody<'a> {
    version: &'a str,
    state: &'static str,
    status: StatusDetail<'a>,
}

#[derive(Serialize)]
struct StatusDetail<'a> {
    error_code: &'static str,
    error_message: &'a str,
}

#[derive(Serialize)]
struct StatusResponse<'a> {
    model_version_status: Vec<VersionStatusBody<'a>>,
}

fn status(app: &AppState, path: &V1Path) -> Result<Response, ApiError> {
    let deployment = app.registry().deployment(&path.model)?;
    if let Some(version) = &path.version
        && deployment.entry(version).is_none()
    {
        return Err(crate::serving::ServingError::UnknownVersion {
            model: path.model.clone(),
            version: version.clone(),
        }
        .into());
    }
    let statuses = deployment
        .versions
        .iter()
        .filter(|v| {
            path.version
                .as_ref()
                .is_none_or(|wanted| &v.version == wanted)
        })
        .map(|v| {
            let reason = v.status.reason();
            VersionStatusBody {
                version: &v.version,
                state: if reason.is_none() { "AVAILABLE" } else { "END" },
                status: StatusDetail {
                    error_code: if reason.is_none() {
                        "OK"
                    } else {
                        "UNAVAILABLE"
                    },
                    error_message: reason.unwrap_or_default(),
                },
            }
        })
        .collect();
    Ok(Json(StatusResponse {
        model_version_status: statuses,
    })
    .into_response())
}

/// One prediction, serialized as `{"label", "probabilities": {class: p}}` or `{"value"}`.
/// Values from FP32 outputs are printed at f32 precision (`151.2`, not `151.1999969482422`).
struct PredictionBody<'a> {
    prediction: &'a RowPrediction,
    single_precision: bool,
    /// `(confidence, accepted)` for classifiers with a threshold output.
    threshold: Option<(f64, bool)>,
}

impl Serialize for PredictionBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Probabilities<'a>(&'a [(String, f64)]);
        impl Serialize for Probabilities<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (class, p) in self.0 {
                    // Probabilities come from f32 outputs: print them at that precision.
                    map.serialize_entry(class, &(*p as f32))?;
                }
                map.end()
            }
        }
        match self.prediction {
            RowPrediction::Class {
                label,
                probabilities,
            } => {
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("label", label)?;
                if !probabilities.is_empty() {
                    map.serialize_entry("probabilities", &Probabilities(probabilities))?;
                }
                if let Some((confidence, accepted)) = self.threshold {
                    map.serialize_entry("confidence", &(confidence as f32))?;
                    map.serialize_entry("accepted", &accepted)?;
                }
                map.end()
            }
            RowPrediction::Value(value) => {
                let mut map = serializer.serialize_map(Some(1))?;
                if self.single_precision {
                    map.serialize_entry("value", &(*value as f32))?;
                } else {
                    map.serialize_entry("value", value)?;
                }
                map.end()
            }
        }
    }
}

#[derive(Serialize)]
struct PredictResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    /// The request id (also in `X-Request-Id`): feedback refers to it.
    id: &'a str,
    predictions: Vec<PredictionBody<'a>>,
}

async fn predict(
    app: &AppState,
    route: Route,
    headers: &HeaderMap,
    body: Body,
) -> Result<Served, ApiError> {
    body::json_format(headers)?;
    let bytes = body::read_limited(headers, body, app.max_body_bytes()).await?;
    let input = super::decode::v1_instances(
        &bytes,
        route.version.signature(),
        &route.version.metadata.features,
    )?;
    let id = request_id(app, None, headers)?;
    let prediction = app
        .registry()
        .predict(route, vec![input], PredictOptions::default(), &id)
        .await?;
    let version = &prediction.version;
    let rows = row_predictions(
        &prediction.outputs,
        version.roles,
        &version.metadata,
        prediction.rows,
    );
    let single_precision = version
        .roles
        .value
        .is_some_and(|index| version.signature().outputs[index].dtype == DataType::F32);
    let position = |name: &str| version.served_outputs.iter().position(|o| o.name == name);
    let threshold_outputs = position(CONFIDENCE_OUTPUT)
        .zip(position(ACCEPTED_OUTPUT))
        .filter(|&(c, _)| c >= version.signature().outputs.len())
        .map(|(c, a)| (&prediction.outputs[c], &prediction.outputs[a]));
    let mut response = Json(PredictResponse {
        model_name: &version.model,
        model_version: &version.version,
        id: &id,
        predictions: rows
            .iter()
            .enumerate()
            .map(|(row, prediction)| PredictionBody {
                prediction,
                single_precision,
                threshold: threshold_outputs.and_then(|(c, a)| {
                    let confidence = c.data().get_f64(row)?;
                    let accepted = a.data().get_f64(row)? != 0.0;
                    Some((confidence, accepted))
                }),
            })
            .collect(),
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(Served {
        response,
        version: Arc::clone(&prediction.version),
        role: prediction.role,
        inference: prediction.inference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_model_version_and_verb() {
        assert_eq!(
            parse_path("iris:predict"),
            Some(V1Path {
                model: "iris".into(),
                version: None,
                verb: Some("predict".into())
            })
        );
        assert_eq!(
            parse_path("iris/versions/2:predict").and_then(|p| p.version),
            Some("2".into())
        );
        assert_eq!(parse_path("iris").and_then(|p| p.verb), None);
        assert_eq!(parse_path("iris/labels/x:predict"), None);
        assert_eq!(parse_path("iris/versions/:predict"), None);
    }
}
