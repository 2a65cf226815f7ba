//! The request decoders as pure functions of the body's bytes and the version's signature:
//! v2 JSON (with or without the binary tensor extension), gRPC `ModelInferRequest` messages and
//! v1 `instances`, through to the tensors the engine runs. The handlers use them, and so do the
//! fuzz targets (`tests/fuzz/`) and the property tests: no input may make them panic.

use super::ApiError;
use super::grpc::decode_infer;
use super::grpc::proto::ModelInferRequest;
use super::v2_types::{SharedParameters, parse_json, parse_request};
use crate::engine::{DataType, Signature, Tensor, TensorData};
use crate::serving::{NamedInput, fit_inputs};
use serde::Deserialize;
use serde_json::Value;

/// A v2 request decoded and fitted to a signature.
#[derive(Debug)]
pub struct Decoded {
    /// One tensor per signature input, in signature order.
    pub tensors: Vec<Tensor>,
    /// Rows in the batch.
    pub rows: usize,
}

/// Decodes a v2 inference body: the JSON header is `body[..json_len]` and the binary tensor
/// data follows it (`json_len` is `Inference-Header-Content-Length`; `None`: all JSON), then fits
/// the inputs to `signature` with at most `max_rows` rows.
///
/// # Errors
/// [`ApiError`] naming the field at fault.
pub fn v2_request(
    body: &[u8],
    json_len: Option<usize>,
    signature: &Signature,
    max_rows: usize,
) -> Result<Decoded, ApiError> {
    let (json, binary) = split_body(body, json_len)?;
    let request = parse_request(json)?;
    request.shared_parameters().asks_outlier_scores()?;
    request.shared_parameters().deadline()?;
    let inputs = request.into_inputs(binary)?;
    let (tensors, rows) = fit_inputs(signature, inputs, max_rows)?;
    Ok(Decoded { tensors, rows })
}

/// Decodes a gRPC `ModelInferRequest` message (protobuf bytes, as the gRPC transport hands
/// them over) and fits its inputs to `signature` with at most `max_rows` rows.
///
/// # Errors
/// [`ApiError`] naming the field at fault; `body` for bytes that are not such a message.
pub fn grpc_request(
    message: &[u8],
    signature: &Signature,
    max_rows: usize,
) -> Result<Decoded, ApiError> {
    let request = <ModelInferRequest as prost::Message>::decode(message)
        .map_err(|e| ApiError::bad_request("body", format!("malformed ModelInferRequest: {e}")))?;
    let decoded = decode_infer(request)?;
    let parameters = SharedParameters(Some(&decoded.parameters));
    parameters.asks_outlier_scores()?;
    parameters.deadline()?;
    let (tensors, rows) = fit_inputs(signature, decoded.inputs, max_rows)?;
    Ok(Decoded { tensors, rows })
}

/// The JSON header and the binary tensor data of a v2 body whose header is `json_len` bytes
/// (`None`: all JSON).
///
/// # Errors
/// [`ApiError::BadRequest`] naming `Inference-Header-Content-Length` when the body is shorter.
pub fn split_body(body: &[u8], json_len: Option<usize>) -> Result<(&[u8], &[u8]), ApiError> {
    match json_len {
        None => Ok((body, &[][..])),
        Some(len) if len <= body.len() => Ok(body.split_at(len)),
        Some(len) => Err(ApiError::bad_request(
            "Inference-Header-Content-Length",
            format!(
                "the JSON header is said to be {len} bytes but the body has {}",
                body.len()
            ),
        )),
    }
}

/// A TF-Serving-style `:predict` body.
#[derive(Deserialize)]
struct PredictRequest {
    instances: Vec<Value>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted for TF-Serving compatibility; vigil models have one signature"
    )]
    signature_name: Option<String>,
}

/// Decodes a v1 `:predict` body for a single-input model whose columns are named `features`.
///
/// # Errors
/// [`ApiError`] naming the field at fault.
pub fn v1_instances(
    body: &[u8],
    signature: &Signature,
    features: &[String],
) -> Result<NamedInput, ApiError> {
    let request: PredictRequest = parse_json(body)?;
    instances_tensor(signature, features, &request.instances)
}

/// Builds the `[rows, width]` input from row-format instances (arrays, or objects keyed by the
/// version's feature names).
fn instances_tensor(
    signature: &Signature,
    features: &[String],
    instances: &[Value],
) -> Result<NamedInput, ApiError> {
    let [input] = signature.inputs.as_slice() else {
        return Err(ApiError::bad_request(
            "instances",
            format!(
                "this model has {} inputs; the simple JSON API serves single-input models, use \
                 the v2 API",
                signature.inputs.len()
            ),
        ));
    };
    if input.shape.len() != 2 || input.dtype == DataType::String {
        return Err(ApiError::bad_request(
            "instances",
            "the model's input is not a numeric [rows, features] matrix; use the v2 API",
        ));
    }
    let width = input.shape[1].unwrap_or(features.len());
    if instances.is_empty() {
        return Err(ApiError::bad_request(
            "instances",
            "expected at least one instance",
        ));
    }
    let mut values = Vec::with_capacity(instances.len() * width);
    for (row, instance) in instances.iter().enumerate() {
        let field = format!("instances[{row}]");
        match instance {
            Value::Array(cells) => {
                if cells.len() != width {
                    return Err(ApiError::bad_request(
                        field,
                        format!("expected {width} numbers, got {}", cells.len()),
                    ));
                }
                for (column, cell) in cells.iter().enumerate() {
                    values.push(cell.as_f64().ok_or_else(|| {
                        ApiError::bad_request(
                            format!("{field}[{column}]"),
                            format!("expected a number, got {cell}"),
                        )
                    })?);
                }
            }
            Value::Object(map) => {
                if features.len() != width {
                    return Err(ApiError::bad_request(
                        field,
                        "this version's model.toml names no features; send each instance as an \
                         array",
                    ));
                }
                if let Some(unknown) = map.keys().find(|k| !features.contains(k)) {
                    return Err(ApiError::bad_request(
                        format!("{field}.{unknown}"),
                        format!(
                            "unknown feature; expected the features [{}]",
                            features.join(", ")
                        ),
                    ));
                }
                for feature in features {
                    let cell = map.get(feature).ok_or_else(|| {
                        ApiError::bad_request(format!("{field}.{feature}"), "missing feature")
                    })?;
                    values.push(cell.as_f64().ok_or_else(|| {
                        ApiError::bad_request(
                            format!("{field}.{feature}"),
                            format!("expected a number, got {cell}"),
                        )
                    })?);
                }
            }
            Value::Number(number) if width == 1 => values.push(number.as_f64().unwrap_or(f64::NAN)),
            other => {
                return Err(ApiError::bad_request(
                    field,
                    format!(
                        "expected an array of {width} numbers or an object keyed by feature name, \
                         got {other}"
                    ),
                ));
            }
        }
    }
    let tensor = Tensor::new(vec![instances.len(), width], TensorData::F64(values))
        .map_err(|e| ApiError::bad_request("instances", e.to_string()))?;
    Ok(NamedInput {
        name: input.name.clone(),
        field: "instances".to_string(),
        tensor,
    })
}
