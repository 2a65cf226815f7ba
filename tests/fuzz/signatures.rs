//! The signatures the decoders are fuzzed and property-tested against: one numeric matrix (the
//! common case, with feature names for v1 objects), two inputs of other types (integers and
//! strings), and a three-dimensional input.

#![allow(dead_code, reason = "each target and test uses a subset")]

use vigil::engine::{DataType, Signature, TensorSpec};

fn spec(name: &str, dtype: DataType, shape: &[Option<usize>]) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
    }
}

/// Signature `index % 3`.
pub fn signature(index: u8) -> Signature {
    let inputs = match index % 3 {
        0 => vec![spec("float_input", DataType::F32, &[None, Some(4)])],
        1 => vec![
            spec("ids", DataType::I64, &[None, Some(3)]),
            spec("text", DataType::String, &[None]),
        ],
        _ => vec![spec("cube", DataType::F64, &[None, Some(2), Some(2)])],
    };
    Signature {
        inputs,
        outputs: vec![spec("y", DataType::F32, &[None])],
    }
}

/// The feature names of signature 0.
pub fn features() -> Vec<String> {
    ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        .map(String::from)
        .to_vec()
}
