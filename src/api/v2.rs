//! Open Inference Protocol (v2) handlers: model metadata and readiness, inference (JSON and the
//! binary tensor extension), and the repository index.

use super::body::{self, BodyFormat, INFERENCE_HEADER_CONTENT_LENGTH};
use super::catalog::{PLATFORM, index_entries, ready_versions};
use super::observe::{Served, observed};
use super::outputs::{self, OUTLIER_SCORE_OUTPUT, Selection};
use super::request_id::{REQUEST_ID_HEADER, request_id};
use super::v2_types::{InferResponse, JsonElements, OutputParameters, OutputTensor, parse_request};
use super::{ApiError, AppState, binary};
use crate::engine::{Tensor, TensorData, TensorSpec};
use crate::monitor::Protocol;
use crate::serving::{PredictOptions, Prediction, Route};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct TensorMetadata<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: Vec<i64>,
}

impl<'a> From<&'a TensorSpec> for TensorMetadata<'a> {
    fn from(spec: &'a TensorSpec) -> Self {
        TensorMetadata {
            name: &spec.name,
            datatype: spec.dtype.protocol_name(),
            shape: spec.protocol_shape(),
        }
    }
}

#[derive(Serialize)]
struct ModelMetadata<'a> {
    name: &'a str,
    versions: Vec<&'a str>,
    platform: &'static str,
    inputs: Vec<TensorMetadata<'a>>,
    outputs: Vec<TensorMetadata<'a>>,
}

fn metadata_response(name: &str, versions: Vec<&str>, route: &Route) -> Response {
    Json(ModelMetadata {
        name,
        versions,
        platform: PLATFORM,
        inputs: route
            .version
            .signature()
            .inputs
            .iter()
            .map(TensorMetadata::from)
            .collect(),
        outputs: route
            .version
            .served_outputs
            .iter()
            .map(TensorMetadata::from)
            .collect(),
    })
    .into_response()
}

/// `GET /v2/models/{model}`: the champion's signature and every ready version.
pub async fn model_metadata(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let route = app.registry().route(&model, None)?;
    let ready = ready_versions(&route.deployment);
    Ok(metadata_response(&model, ready, &route))
}

/// `GET /v2/models/{model}/versions/{version}`.
pub async fn version_metadata(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let route = app.registry().route(&model, Some(&version))?;
    Ok(metadata_response(&model, vec![version.as_str()], &route))
}

#[derive(Serialize)]
struct ModelReady<'a> {
    name: &'a str,
    ready: bool,
}

/// `GET /v2/models/{model}/ready`: 200 when a version serves, 503 when none does.
pub async fn model_ready(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    app.registry().route(&model, None)?;
    Ok(Json(ModelReady {
        name: &model,
        ready: true,
    })
    .into_response())
}

/// `GET /v2/models/{model}/versions/{version}/ready`.
pub async fn version_ready(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    app.registry().route(&model, Some(&version))?;
    Ok(Json(ModelReady {
        name: &model,
        ready: true,
    })
    .into_response())
}

/// `POST /v2/models/{model}/infer`: inference on the model's champion.
pub async fn infer(
    State(app): State<AppState>,
    Path(model): Path<String>,
    request: Request,
) -> Response {
    // The request is taken whole so that its headers are borrowed, not copied.
    let (parts, body) = request.into_parts();
    let route = app.registry().route(&model, None);
    observed(&app, Protocol::V2, &model, route, |route| {
        run_infer(&app, route, &parts.headers, body)
    })
    .await
}

/// `POST /v2/models/{model}/versions/{version}/infer`.
pub async fn infer_version(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    // The request is taken whole so that its headers are borrowed, not copied.
    let (parts, body) = request.into_parts();
    let route = app.registry().route(&model, Some(&version));
    observed(&app, Protocol::V2, &model, route, |route| {
        run_infer(&app, route, &parts.headers, body)
    })
    .await
}

async fn run_infer(
    app: &AppState,
    route: Route,
    headers: &HeaderMap,
    body: Body,
) -> Result<Served, ApiError> {
    let format = body::inference_format(headers)?;
    let bytes = body::read_limited(headers, body, app.max_body_bytes()).await?;
    let json_len = match format {
        BodyFormat::Json => None,
        BodyFormat::JsonWithBinary { json_len } => Some(json_len),
    };
    let (json, binary) = super::decode::split_body(&bytes, json_len)?;
    let mut request = parse_request(json)?;
    let id = request_id(app, request.id.take(), headers)?;
    let parameters = request.shared_parameters();
    let binary_by_default = parameters.binary_outputs_by_default();
    let scores_asked = parameters.asks_outlier_scores()?;
    let deadline = parameters.deadline()?;
    let selection = outputs::select(
        &route.version.served_outputs,
        request.outputs.take(),
        scores_asked,
        binary_by_default,
    )?;
    let options = PredictOptions {
        outlier_scores: selection.outlier_scores,
        deadline,
    };
    let inputs = request.into_inputs(binary)?;
    let prediction = app.registry().predict(route, inputs, options, &id).await?;
    let response = encode_response(&prediction, &id, &selection, binary_by_default);
    Ok(Served {
        response,
        version: prediction.version,
        role: prediction.role,
        inference: prediction.inference,
    })
}

fn encode_response(
    prediction: &Prediction,
    id: &str,
    selection: &Selection,
    binary_scores: bool,
) -> Response {
    let served = &prediction.version.served_outputs;
    let mut binary_part = Vec::new();
    let scores = prediction
        .outlier_scores
        .as_ref()
        .map(|scores| Tensor::vector(TensorData::F32(scores.clone())));
    let mut outputs: Vec<OutputTensor<'_>> = selection
        .outputs
        .iter()
        .map(|&(index, binary)| {
            let tensor = &prediction.outputs[index];
            let (parameters, data) = if binary {
                let before = binary_part.len();
                binary::encode(tensor.data(), &mut binary_part);
                let size = binary_part.len() - before;
                (
                    Some(OutputParameters {
                        binary_data_size: size,
                    }),
                    None,
                )
            } else {
                (None, Some(JsonElements(tensor.data())))
            };
            OutputTensor {
                name: &served[index].name,
                datatype: tensor.dtype().protocol_name(),
                shape: tensor.shape(),
                parameters,
                data,
            }
        })
        .collect();
    if let Some(scores) = &scores {
        let (parameters, data) = if binary_scores {
            let before = binary_part.len();
            binary::encode(scores.data(), &mut binary_part);
            let size = binary_part.len() - before;
            (
                Some(OutputParameters {
                    binary_data_size: size,
                }),
                None,
            )
        } else {
            (None, Some(JsonElements(scores.data())))
        };
        outputs.push(OutputTensor {
            name: OUTLIER_SCORE_OUTPUT,
            datatype: scores.dtype().protocol_name(),
            shape: scores.shape(),
            parameters,
            data,
        });
    }
    let response = InferResponse {
        model_name: &prediction.version.model,
        model_version: &prediction.version.version,
        id,
        outputs,
    };
    // Sized for the usual answer (names, shapes, ~24 bytes per element) so that writing it
    // rarely grows the buffer.
    let elements: usize = response
        .outputs
        .iter()
        .map(|o| o.shape.iter().product::<usize>())
        .sum();
    let mut json = Vec::with_capacity(256 + 24 * elements + binary_part.len());
    if let Err(error) = serde_json::to_writer(&mut json, &response) {
        return ApiError::Encode(error.to_string()).into_response();
    }
    let json_len = json.len();
    let binary =
        selection.outputs.iter().any(|&(_, binary)| binary) || (scores.is_some() && binary_scores);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    if binary {
        json.extend_from_slice(&binary_part);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(json_len));
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    (headers, json).into_response()
}

#[derive(Deserialize, Default)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

/// `POST /v2/repository/index`: every version with `READY`/`UNAVAILABLE` and the reason
/// (`{"ready": true}` lists only ready ones).
pub async fn repository_index(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    body::json_format(&headers)?;
    let bytes = body::read_limited(&headers, body, app.max_body_bytes()).await?;
    let filter: IndexRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| super::v2_types::json_error("body".into(), &e))?
    };
    let deployments = app.registry().deployments();
    Ok(Json(index_entries(&deployments, filter.ready)).into_response())
}
