//! Open Inference Protocol (v2) wire types: decoding inference requests (JSON, nested or flat
//! `data`, or the binary tensor extension) into named tensors, and encoding responses.

use super::ApiError;
use super::binary;
use crate::engine::{DataType, Tensor, TensorData, element_count};
use crate::serving::NamedInput;
use half::f16;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// Deepest nesting accepted in a tensor's `data`.
pub const MAX_DATA_DEPTH: usize = 32;

/// `POST .../infer` body (the JSON part).
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Client request id, echoed in the response (a string, as the protocol says).
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters (`binary_data_output`, ...); unknown ones are accepted and ignored.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors.
    pub inputs: Vec<InputTensor>,
    /// Outputs to return (all when absent).
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One input tensor as sent.
#[derive(Debug, Deserialize)]
pub struct InputTensor {
    /// Input name.
    pub name: String,
    /// Shape; negative sizes are rejected with a clear error.
    pub shape: Vec<i64>,
    /// Datatype name (`FP32`, `INT64`, ...).
    pub datatype: String,
    /// Tensor parameters (`binary_data_size`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Elements, nested or flat, when not sent as binary.
    #[serde(default)]
    pub data: Option<JsonData>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Output parameters (`binary_data`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// One JSON element of a tensor's `data`, before the datatype is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonScalar {
    /// `true` / `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A string.
    Text(String),
}

/// A tensor's `data`, flattened row-major while parsing (nested arrays are accepted to
/// [`MAX_DATA_DEPTH`] levels).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonData(pub Vec<JsonScalar>);

struct FlattenSeed<'a> {
    out: &'a mut Vec<JsonScalar>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for FlattenSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FlattenSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("numbers, booleans or strings, in (nested) arrays")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.out.push(JsonScalar::Bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.out.push(if v >= 0 {
            JsonScalar::UInt(v.unsigned_abs())
        } else {
            JsonScalar::Int(v)
        });
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.out.push(JsonScalar::UInt(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.out.push(JsonScalar::Float(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.out.push(JsonScalar::Text(v.to_string()));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom("null is not a tensor element"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(
            "objects are not tensor elements; expected numbers, booleans or strings",
        ))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DATA_DEPTH {
            return Err(de::Error::custom(format!(
                "nested deeper than {MAX_DATA_DEPTH} levels"
            )));
        }
        while seq
            .next_element_seed(FlattenSeed {
                out: self.out,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }
}

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonData, D::Error> {
        let mut out = Vec::new();
        FlattenSeed {
            out: &mut out,
            depth: 0,
        }
        .deserialize(deserializer)?;
        Ok(JsonData(out))
    }
}

/// Parses the JSON part of an inference request, naming the field of any syntax or type error.
///
/// # Errors
/// [`ApiError::BadRequest`] with the JSON path of the problem.
pub fn parse_request(json: &[u8]) -> Result<InferRequest, ApiError> {
    parse_json(json)
}

/// Parses a JSON body into `T`. The fast path parses once; only a body that fails is parsed
/// again with path tracking, so the error names the field (`inputs[0].shape`).
///
/// # Errors
/// [`ApiError::BadRequest`] with the JSON path of the problem.
pub fn parse_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, ApiError> {
    if let Ok(value) = serde_json::from_slice(json) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let value: T = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| json_error(e.path().to_string(), e.inner()))?;
    deserializer
        .end()
        .map_err(|e| json_error(".".to_string(), &e))?;
    Ok(value)
}

/// Turns a serde_json error at `path` into a 400 naming the field.
pub fn json_error(path: String, error: &serde_json::Error) -> ApiError {
    let field = if path.is_empty() || path == "." {
        "body".to_string()
    } else {
        path
    };
    let expected = if error.is_syntax() || error.is_eof() {
        format!("malformed JSON: {error}")
    } else {
        error.to_string()
    };
    ApiError::bad_request(field, expected)
}

/// The request parameters every protocol shares, read from a request's parameter map (the v2
/// JSON `parameters`, or the gRPC request's converted to JSON values).
#[derive(Clone, Copy)]
pub struct SharedParameters<'a>(pub Option<&'a Map<String, Value>>);

impl SharedParameters<'_> {
    /// True when the client asked for binary outputs unless an output says otherwise
    /// (`"binary_data_output": true`).
    pub fn binary_outputs_by_default(self) -> bool {
        self.0
            .and_then(|p| p.get("binary_data_output"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// True when the client asked for per-row outlier scores (`"outlier_score": true`).
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] when the parameter is not a boolean.
    pub fn asks_outlier_scores(self) -> Result<bool, ApiError> {
        match self.0.and_then(|p| p.get("outlier_score")) {
            None => Ok(false),
            Some(Value::Bool(asked)) => Ok(*asked),
            Some(_) => Err(ApiError::bad_request(
                "parameters.outlier_score",
                "expected true or false",
            )),
        }
    }

    /// The deadline `timeout` (microseconds, as Triton takes it) sets from now; `None` when it
    /// is absent or 0 (the default timeout applies).
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] naming `parameters.timeout` when it is not a whole number.
    pub fn deadline(self) -> Result<Option<tokio::time::Instant>, ApiError> {
        match self.0.and_then(|p| p.get("timeout")) {
            None => Ok(None),
            Some(value) => match value.as_u64() {
                Some(0) => Ok(None),
                Some(micros) => Ok(Some(
                    tokio::time::Instant::now() + std::time::Duration::from_micros(micros),
                )),
                None => Err(ApiError::bad_request(
                    "parameters.timeout",
                    "expected a whole number of microseconds",
                )),
            },
        }
    }
}

/// The datatype, shape and element count an input tensor declares, checked.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `{field}.datatype` or `{field}.shape`.
pub fn tensor_header(
    datatype: &str,
    shape: &[i64],
    field: &str,
) -> Result<(DataType, Vec<usize>, usize), ApiError> {
    let dtype = DataType::from_protocol_name(datatype).ok_or_else(|| {
        ApiError::bad_request(
            format!("{field}.datatype"),
            format!(
                "unknown datatype `{datatype}`; expected one of BOOL, UINT8, UINT16, UINT32, \
                 UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"
            ),
        )
    })?;
    let shape = checked_shape(shape, field)?;
    let count = element_count(&shape).ok_or_else(|| {
        ApiError::bad_request(
            format!("{field}.shape"),
            "the shape's element count overflows",
        )
    })?;
    Ok((dtype, shape, count))
}

impl InferRequest {
    /// The parameters every protocol shares.
    pub fn shared_parameters(&self) -> SharedParameters<'_> {
        SharedParameters(self.parameters.as_ref())
    }

    /// Turns the inputs into named tensors in their sent datatypes, taking binary data from
    /// `binary` (the bytes after the JSON header) in input order.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] naming the input field at fault.
    pub fn into_inputs(self, binary: &[u8]) -> Result<Vec<NamedInput>, ApiError> {
        if self.inputs.is_empty() {
            return Err(ApiError::bad_request(
                "inputs",
                "expected at least one input tensor",
            ));
        }
        let mut offset = 0usize;
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (index, input) in self.inputs.into_iter().enumerate() {
            let field = format!("inputs[{index}]");
            let (dtype, shape, count) = tensor_header(&input.datatype, &input.shape, &field)?;
            let binary_size = binary_data_size(input.parameters.as_ref(), &field)?;
            let data = match (binary_size, input.data) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        format!("{field}.data"),
                        "give either `data` or the binary_data_size parameter, not both",
                    ));
                }
                (Some(size), None) => {
                    let end = offset.checked_add(size).filter(|&end| end <= binary.len());
                    let Some(end) = end else {
                        return Err(ApiError::bad_request(
                            format!("{field}.parameters.binary_data_size"),
                            format!(
                                "{size} bytes declared but only {} binary bytes remain",
                                binary.len().saturating_sub(offset)
                            ),
                        ));
                    };
                    let bytes = &binary[offset..end];
                    offset = end;
                    binary::decode(bytes, dtype, count).map_err(|why| {
                        ApiError::bad_request(format!("{field}.parameters.binary_data_size"), why)
                    })?
                }
                (None, Some(data)) => {
                    if data.0.len() != count {
                        return Err(ApiError::bad_request(
                            format!("{field}.data"),
                            format!(
                                "shape {:?} needs {count} elements, got {}",
                                shape,
                                data.0.len()
                            ),
                        ));
                    }
                    typed_data(data.0, dtype).map_err(|(position, why)| {
                        ApiError::bad_request(format!("{field}.data[{position}]"), why)
                    })?
                }
                (None, None) => {
                    return Err(ApiError::bad_request(
                        format!("{field}.data"),
                        "missing: expected `data` or the binary_data_size parameter",
                    ));
                }
            };
            let tensor = Tensor::new(shape, data)
                .map_err(|e| ApiError::bad_request(format!("{field}.shape"), e.to_string()))?;
            inputs.push(NamedInput {
                name: input.name,
                field,
                tensor,
            });
        }
        if offset != binary.len() {
            return Err(ApiError::bad_request(
                "body",
                format!(
                    "{} binary bytes follow the JSON header but the inputs declare {offset}",
                    binary.len()
                ),
            ));
        }
        Ok(inputs)
    }
}

fn checked_shape(shape: &[i64], field: &str) -> Result<Vec<usize>, ApiError> {
    shape
        .iter()
        .enumerate()
        .map(|(axis, &dim)| {
            usize::try_from(dim).map_err(|_| {
                ApiError::bad_request(
                    format!("{field}.shape[{axis}]"),
                    format!("expected a non-negative size, got {dim}"),
                )
            })
        })
        .collect()
}

fn binary_data_size(
    parameters: Option<&Map<String, Value>>,
    field: &str,
) -> Result<Option<usize>, ApiError> {
    match parameters.and_then(|p| p.get("binary_data_size")) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("{field}.parameters.binary_data_size"),
                    "expected a non-negative integer byte count",
                )
            }),
    }
}

/// Applies the declared datatype to parsed JSON elements. On failure returns the position and
/// what was expected.
fn typed_data(values: Vec<JsonScalar>, dtype: DataType) -> Result<TensorData, (usize, String)> {
    let expected = |position: usize, value: &JsonScalar| {
        let shown = match value {
            JsonScalar::Bool(b) => b.to_string(),
            JsonScalar::Int(i) => i.to_string(),
            JsonScalar::UInt(u) => u.to_string(),
            JsonScalar::Float(x) => x.to_string(),
            JsonScalar::Text(t) => format!("\"{t}\""),
        };
        let what = match dtype {
            DataType::Bool => "true or false",
            DataType::String => "strings",
            DataType::F16 | DataType::F32 | DataType::F64 => "numbers",
            _ => "integers in the datatype's range",
        };
        (
            position,
            format!("expected {what} for datatype {dtype}, got {shown}"),
        )
    };
    macro_rules! integers {
        ($variant:ident, $ty:ty) => {{
            let mut out: Vec<$ty> = Vec::with_capacity(values.len());
            for (position, value) in values.iter().enumerate() {
                let converted = match value {
                    JsonScalar::Int(i) => <$ty>::try_from(*i).ok(),
                    JsonScalar::UInt(u) => <$ty>::try_from(*u).ok(),
                    _ => None,
                };
                out.push(converted.ok_or_else(|| expected(position, value))?);
            }
            Ok(TensorData::$variant(out))
        }};
    }
    macro_rules! floats {
        ($variant:ident, $conv:expr) => {{
            let mut out = Vec::with_capacity(values.len());
            for (position, value) in values.iter().enumerate() {
                let x = match value {
                    JsonScalar::Int(i) => *i as f64,
                    JsonScalar::UInt(u) => *u as f64,
                    JsonScalar::Float(x) => *x,
                    _ => return Err(expected(position, value)),
                };
                out.push($conv(x));
            }
            Ok(TensorData::$variant(out))
        }};
    }
    match dtype {
        DataType::F32 => floats!(F32, |x: f64| x as f32),
        DataType::F64 => floats!(F64, |x: f64| x),
        DataType::F16 => floats!(F16, f16::from_f64),
        DataType::I8 => integers!(I8, i8),
        DataType::I16 => integers!(I16, i16),
        DataType::I32 => integers!(I32, i32),
        DataType::I64 => integers!(I64, i64),
        DataType::U8 => integers!(U8, u8),
        DataType::U16 => integers!(U16, u16),
        DataType::U32 => integers!(U32, u32),
        DataType::U64 => integers!(U64, u64),
        DataType::Bool => values
            .iter()
            .enumerate()
            .map(|(position, value)| match value {
                JsonScalar::Bool(b) => Ok(*b),
                other => Err(expected(position, other)),
            })
            .collect::<Result<Vec<bool>, _>>()
            .map(TensorData::Bool),
        DataType::String => values
            .into_iter()
            .enumerate()
            .map(|(position, value)| match value {
                JsonScalar::Text(t) => Ok(t),
                other => Err(expected(position, &other)),
            })
            .collect::<Result<Vec<String>, _>>()
            .map(TensorData::String),
    }
}

/// Serializes tensor elements as a flat JSON array (FP16 as numbers).
pub struct JsonElements<'a>(pub &'a TensorData);

impl Serialize for JsonElements<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Bool(v) => serializer.collect_seq(v),
            TensorData::U8(v) => serializer.collect_seq(v),
            TensorData::U16(v) => serializer.collect_seq(v),
            TensorData::U32(v) => serializer.collect_seq(v),
            TensorData::U64(v) => serializer.collect_seq(v),
            TensorData::I8(v) => serializer.collect_seq(v),
            TensorData::I16(v) => serializer.collect_seq(v),
            TensorData::I32(v) => serializer.collect_seq(v),
            TensorData::I64(v) => serializer.collect_seq(v),
            TensorData::F16(v) => serializer.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::F32(v) => serializer.collect_seq(v),
            TensorData::F64(v) => serializer.collect_seq(v),
            TensorData::String(v) => serializer.collect_seq(v),
        }
    }
}

/// Output tensor parameters in a response.
#[derive(Debug, Serialize)]
pub struct OutputParameters {
    /// Size of this output's binary data, when sent as binary.
    pub binary_data_size: usize,
}

/// One output tensor in a response.
#[derive(Serialize)]
pub struct OutputTensor<'a> {
    /// Output name.
    pub name: &'a str,
    /// Datatype name.
    pub datatype: &'static str,
    /// Shape.
    pub shape: &'a [usize],
    /// Present for binary outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<OutputParameters>,
    /// Elements, for JSON outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonElements<'a>>,
}

/// An inference response (the JSON part).
#[derive(Serialize)]
pub struct InferResponse<'a> {
    /// Model name.
    pub model_name: &'a str,
    /// The version that produced the outputs.
    pub model_version: &'a str,
    /// The request id.
    pub id: &'a str,
    /// Outputs, in the order requested (signature order when none were named).
    pub outputs: Vec<OutputTensor<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_flatten_the_same() {
        let nested: JsonData = serde_json::from_str("[[1, 2], [3.5, -4]]").expect("nested");
        let flat: JsonData = serde_json::from_str("[1, 2, 3.5, -4]").expect("flat");
        assert_eq!(nested, flat);
        assert_eq!(nested.0[3], JsonScalar::Int(-4));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let err = serde_json::from_str::<JsonData>(&deep).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn datatypes_are_applied_strictly() {
        let ints = vec![JsonScalar::UInt(1), JsonScalar::Int(-2)];
        assert_eq!(
            typed_data(ints.clone(), DataType::I32),
            Ok(TensorData::I32(vec![1, -2]))
        );
        assert!(typed_data(ints.clone(), DataType::U8).is_err());
        assert_eq!(
            typed_data(ints, DataType::F64),
            Ok(TensorData::F64(vec![1.0, -2.0]))
        );
        let err = typed_data(vec![JsonScalar::Float(1.5)], DataType::I64).unwrap_err();
        assert_eq!(err.0, 0);
        assert!(typed_data(vec![JsonScalar::Text("x".into())], DataType::F32).is_err());
        assert!(typed_data(vec![JsonScalar::UInt(1)], DataType::Bool).is_err());
    }

    #[test]
    fn json_errors_name_the_path() {
        let err =
            parse_request(br#"{"inputs":[{"name":"x","shape":[1],"datatype":5}]}"#).unwrap_err();
        assert!(err.to_string().starts_with("inputs[0].datatype"), "{err}");
        let err = parse_request(b"{\"inputs\": [").unwrap_err();
        assert!(err.to_string().contains("malformed JSON"), "{err}");
    }
}
