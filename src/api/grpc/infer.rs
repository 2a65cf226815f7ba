//! `ModelInfer`: a gRPC inference request decoded into named tensors (typed `contents`, or
//! `raw_input_contents` as tritonclient sends them), run through the same serving path as REST,
//! and answered the way it came: raw outputs for raw inputs, typed contents otherwise.

use super::proto::infer_parameter::ParameterChoice;
use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse};
use crate::api::observe::Served;
use crate::api::outputs::{self, OUTLIER_SCORE_OUTPUT, Selection};
use crate::api::request_id::request_id;
use crate::api::v2_types::{RequestedOutput, SharedParameters, tensor_header};
use crate::api::{ApiError, AppState, binary};
use crate::engine::{DataType, Tensor, TensorData};
use crate::serving::{NamedInput, PredictOptions, Prediction, Route};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// A `ModelInferRequest` decoded: everything but the model and version it names.
#[derive(Debug)]
pub struct DecodedInfer {
    /// The client's request id, when it gave one.
    pub id: Option<String>,
    /// The request parameters, as JSON values (so the rules REST applies to them apply).
    pub parameters: Map<String, Value>,
    /// The outputs asked for (all when absent).
    pub outputs: Option<Vec<RequestedOutput>>,
    /// The input tensors, in request order.
    pub inputs: Vec<NamedInput>,
    /// True when the inputs came as `raw_input_contents`: the answer then uses
    /// `raw_output_contents`.
    pub raw: bool,
}

/// A gRPC parameter as the JSON value REST would have received.
fn json_value(parameter: InferParameter) -> Value {
    match parameter.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Value::Bool(b),
        Some(ParameterChoice::Int64Param(i)) => Value::from(i),
        Some(ParameterChoice::Uint64Param(u)) => Value::from(u),
        Some(ParameterChoice::DoubleParam(x)) => {
            Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        Some(ParameterChoice::StringParam(s)) => Value::String(s),
        None => Value::Null,
    }
}

fn json_parameters(parameters: HashMap<String, InferParameter>) -> Map<String, Value> {
    parameters
        .into_iter()
        .map(|(name, value)| (name, json_value(value)))
        .collect()
}

/// Decodes a `ModelInferRequest` into named tensors in their sent datatypes.
///
/// # Errors
/// [`ApiError::BadRequest`] naming the field at fault (`inputs[0].contents.fp32_contents`,
/// `raw_input_contents`, ...).
pub fn decode_infer(request: ModelInferRequest) -> Result<DecodedInfer, ApiError> {
    if request.inputs.is_empty() {
        return Err(ApiError::bad_request(
            "inputs",
            "expected at least one input tensor",
        ));
    }
    let raw = !request.raw_input_contents.is_empty();
    if raw && request.raw_input_contents.len() != request.inputs.len() {
        return Err(ApiError::bad_request(
            "raw_input_contents",
            format!(
                "expected one entry per input ({}), got {}",
                request.inputs.len(),
                request.raw_input_contents.len()
            ),
        ));
    }
    let mut raw_contents = request.raw_input_contents.into_iter();
    let inputs = request
        .inputs
        .into_iter()
        .enumerate()
        .map(|(index, input)| decode_input(index, input, raw_contents.next()))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = (!request.outputs.is_empty()).then(|| {
        request
            .outputs
            .into_iter()
            .map(|output| RequestedOutput {
                name: output.name,
                parameters: None,
            })
            .collect()
    });
    Ok(DecodedInfer {
        id: (!request.id.is_empty()).then_some(request.id),
        parameters: json_parameters(request.parameters),
        outputs,
        inputs,
        raw,
    })
}

fn decode_input(
    index: usize,
    input: InferInputTensor,
    raw: Option<Bytes>,
) -> Result<NamedInput, ApiError> {
    let field = format!("inputs[{index}]");
    let (dtype, shape, count) = tensor_header(&input.datatype, &input.shape, &field)?;
    let data = match (raw, input.contents) {
        (Some(_), Some(contents)) if contents != InferTensorContents::default() => {
            return Err(ApiError::bad_request(
                format!("{field}.contents"),
                "raw_input_contents is set, so no input may carry typed contents",
            ));
        }
        (Some(bytes), _) => binary::decode(&bytes, dtype, count)
            .map_err(|why| ApiError::bad_request(format!("raw_input_contents[{index}]"), why))?,
        (None, contents) => typed_contents(contents.unwrap_or_default(), dtype, count, &field)?,
    };
    let tensor = Tensor::new(shape, data)
        .map_err(|e| ApiError::bad_request(format!("{field}.shape"), e.to_string()))?;
    Ok(NamedInput {
        name: input.name,
        field,
        tensor,
    })
}

/// The one `InferTensorContents` field each datatype travels in.
fn contents_field(dtype: DataType) -> Option<&'static str> {
    Some(match dtype {
        DataType::Bool => "bool_contents",
        DataType::I8 | DataType::I16 | DataType::I32 => "int_contents",
        DataType::I64 => "int64_contents",
        DataType::U8 | DataType::U16 | DataType::U32 => "uint_contents",
        DataType::U64 => "uint64_contents",
        DataType::F32 => "fp32_contents",
        DataType::F64 => "fp64_contents",
        DataType::String => "bytes_contents",
        DataType::F16 => return None,
    })
}

/// The names of the contents fields that hold values.
fn filled_fields(contents: &InferTensorContents) -> Vec<&'static str> {
    [
        ("bool_contents", contents.bool_contents.is_empty()),
        ("int_contents", contents.int_contents.is_empty()),
        ("int64_contents", contents.int64_contents.is_empty()),
        ("uint_contents", contents.uint_contents.is_empty()),
        ("uint64_contents", contents.uint64_contents.is_empty()),
        ("fp32_contents", contents.fp32_contents.is_empty()),
        ("fp64_contents", contents.fp64_contents.is_empty()),
        ("bytes_contents", contents.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, empty)| (!empty).then_some(name))
    .collect()
}

/// Narrows typed contents to `T`, naming the first element out of range.
fn narrowed<S: Copy + std::fmt::Display, T: TryFrom<S>>(
    values: Vec<S>,
    dtype: DataType,
    field: &str,
) -> Result<Vec<T>, ApiError> {
    values
        .into_iter()
        .enumerate()
        .map(|(position, value)| {
            T::try_from(value).map_err(|_| {
                ApiError::bad_request(
                    format!("{field}[{position}]"),
                    format!("expected integers in the range of {dtype}, got {value}"),
                )
            })
        })
        .collect()
}

fn no_typed_fp16(field: &str) -> ApiError {
    ApiError::bad_request(
        format!("{field}.datatype"),
        "FP16 tensors have no typed contents; send them in raw_input_contents",
    )
}

fn typed_contents(
    contents: InferTensorContents,
    dtype: DataType,
    count: usize,
    field: &str,
) -> Result<TensorData, ApiError> {
    let Some(expected) = contents_field(dtype) else {
        return Err(no_typed_fp16(field));
    };
    let filled = filled_fields(&contents);
    if let Some(other) = filled.iter().find(|&&name| name != expected) {
        return Err(ApiError::bad_request(
            format!("{field}.contents.{other}"),
            format!("datatype {dtype} takes its values in {expected}"),
        ));
    }
    let field = format!("{field}.contents.{expected}");
    let data = match dtype {
        DataType::Bool => TensorData::Bool(contents.bool_contents),
        DataType::I8 => TensorData::I8(narrowed(contents.int_contents, dtype, &field)?),
        DataType::I16 => TensorData::I16(narrowed(contents.int_contents, dtype, &field)?),
        DataType::I32 => TensorData::I32(contents.int_contents),
        DataType::I64 => TensorData::I64(contents.int64_contents),
        DataType::U8 => TensorData::U8(narrowed(contents.uint_contents, dtype, &field)?),
        DataType::U16 => TensorData::U16(narrowed(contents.uint_contents, dtype, &field)?),
        DataType::U32 => TensorData::U32(contents.uint_contents),
        DataType::U64 => TensorData::U64(contents.uint64_contents),
        DataType::F32 => TensorData::F32(contents.fp32_contents),
        DataType::F64 => TensorData::F64(contents.fp64_contents),
        DataType::String => TensorData::String(
            contents
                .bytes_contents
                .into_iter()
                .enumerate()
                .map(|(position, bytes)| {
                    String::from_utf8(bytes.to_vec()).map_err(|_| {
                        ApiError::bad_request(
                            format!("{field}[{position}]"),
                            "BYTES elements must be UTF-8 text for ONNX string inputs",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::F16 => return Err(no_typed_fp16(&field)),
    };
    if data.len() != count {
        return Err(ApiError::bad_request(
            field,
            format!("the shape needs {count} elements, got {}", data.len()),
        ));
    }
    Ok(data)
}

/// Typed contents of `data`, or `None` for FP16 (which has none).
fn contents_of(data: &TensorData) -> Option<InferTensorContents> {
    let mut contents = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => contents.bool_contents = v.clone(),
        TensorData::I8(v) => contents.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I16(v) => contents.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I32(v) => contents.int_contents = v.clone(),
        TensorData::I64(v) => contents.int64_contents = v.clone(),
        TensorData::U8(v) => contents.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::U16(v) => contents.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::U32(v) => contents.uint_contents = v.clone(),
        TensorData::U64(v) => contents.uint64_contents = v.clone(),
        TensorData::F32(v) => contents.fp32_contents = v.clone(),
        TensorData::F64(v) => contents.fp64_contents = v.clone(),
        TensorData::String(v) => {
            contents.bytes_contents = v
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect();
        }
        TensorData::F16(_) => return None,
    }
    Some(contents)
}

fn shape_of(tensor: &Tensor) -> Vec<i64> {
    tensor
        .shape()
        .iter()
        .map(|&dim| i64::try_from(dim).unwrap_or(i64::MAX))
        .collect()
}

/// The answer to a request: the selected outputs (and outlier scores when asked), raw when
/// `raw` or when an output has no typed contents (FP16), typed otherwise.
fn encode(
    prediction: &Prediction,
    id: &str,
    selection: &Selection,
    raw: bool,
) -> ModelInferResponse {
    let served = &prediction.version.served_outputs;
    let scores = prediction
        .outlier_scores
        .as_ref()
        .map(|scores| Tensor::vector(TensorData::F32(scores.clone())));
    let mut tensors: Vec<(&str, &Tensor)> = selection
        .outputs
        .iter()
        .map(|&(index, _)| (served[index].name.as_str(), &prediction.outputs[index]))
        .collect();
    if let Some(scores) = &scores {
        tensors.push((OUTLIER_SCORE_OUTPUT, scores));
    }
    let raw = raw || tensors.iter().any(|(_, t)| t.dtype() == DataType::F16);
    let mut outputs = Vec::with_capacity(tensors.len());
    let mut raw_output_contents = Vec::with_capacity(if raw { tensors.len() } else { 0 });
    for (name, tensor) in tensors {
        let contents = if raw {
            let mut bytes = Vec::new();
            binary::encode(tensor.data(), &mut bytes);
            raw_output_contents.push(Bytes::from(bytes));
            None
        } else {
            contents_of(tensor.data())
        };
        outputs.push(InferOutputTensor {
            name: name.to_string(),
            datatype: tensor.dtype().protocol_name().to_string(),
            shape: shape_of(tensor),
            parameters: HashMap::new(),
            contents,
        });
    }
    ModelInferResponse {
        model_name: prediction.version.model.to_string(),
        model_version: prediction.version.version.to_string(),
        id: id.to_string(),
        parameters: HashMap::new(),
        outputs,
        raw_output_contents,
    }
}

/// Runs a decoded request on `route` as REST does: request id (the message's, else
/// `x-request-id` metadata, else a new one), parameters, output selection, prediction.
pub(super) async fn run(
    app: &AppState,
    route: Route,
    headers: &HeaderMap,
    request: ModelInferRequest,
) -> Result<Served<ModelInferResponse>, ApiError> {
    let decoded = decode_infer(request)?;
    let id = request_id(app, decoded.id, headers)?;
    let parameters = SharedParameters(Some(&decoded.parameters));
    let scores_asked = parameters.asks_outlier_scores()?;
    let deadline = parameters.deadline()?;
    let selection = outputs::select(
        &route.version.served_outputs,
        decoded.outputs,
        scores_asked,
        decoded.raw,
    )?;
    let options = PredictOptions {
        outlier_scores: selection.outlier_scores,
        deadline,
    };
    let prediction = app
        .registry()
        .predict(route, decoded.inputs, options, &id)
        .await?;
    let response = encode(&prediction, &id, &selection, decoded.raw);
    Ok(Served {
        response,
        version: prediction.version,
        role: prediction.role,
        inference: prediction.inference,
    })
}
