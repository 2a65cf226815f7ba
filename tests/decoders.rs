//! Property tests of the request decoders (the fuzz targets' functions, `tests/fuzz/`): valid
//! v2 JSON, v2 binary, gRPC (raw and typed contents) and v1 requests decode to exactly the values
//! sent, and arbitrary bytes or corrupted valid requests give an error, never a panic.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

#[path = "fuzz/signatures.rs"]
mod signatures;

use proptest::prelude::*;
use prost::Message;
use serde_json::json;
use vigil::api::decode::{grpc_request, v1_instances, v2_request};
use vigil::api::grpc::proto::model_infer_request::InferInputTensor;
use vigil::api::grpc::proto::{InferTensorContents, ModelInferRequest};
use vigil::engine::TensorData;

fn rows_strategy() -> impl Strategy<Value = Vec<[f32; 4]>> {
    prop::collection::vec(prop::array::uniform4(-1.0e6f32..1.0e6f32), 1..20)
}

fn flat(rows: &[[f32; 4]]) -> Vec<f32> {
    rows.iter().flatten().copied().collect()
}

/// `rows` as a gRPC `ModelInferRequest` for signature 0, in raw or typed contents.
fn grpc_message(rows: &[[f32; 4]], raw: bool) -> Vec<u8> {
    let values = flat(rows);
    let mut input = InferInputTensor {
        name: "float_input".into(),
        datatype: "FP32".into(),
        shape: vec![rows.len() as i64, 4],
        ..InferInputTensor::default()
    };
    let mut request = ModelInferRequest {
        model_name: "iris".into(),
        ..ModelInferRequest::default()
    };
    if raw {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        request.raw_input_contents = vec![bytes.into()];
    } else {
        input.contents = Some(InferTensorContents {
            fp32_contents: values,
            ..InferTensorContents::default()
        });
    }
    request.inputs = vec![input];
    request.encode_to_vec()
}

fn decoded_f32(body: &[u8], json_len: Option<usize>) -> (Vec<usize>, Vec<f32>) {
    let decoded = v2_request(body, json_len, &signatures::signature(0), 64).expect("decodes");
    f32_tensor(&decoded.tensors[0])
}

fn f32_tensor(tensor: &vigil::engine::Tensor) -> (Vec<usize>, Vec<f32>) {
    match tensor.data() {
        TensorData::F32(values) => (tensor.shape().to_vec(), values.clone()),
        other => panic!("expected FP32, got {other:?}"),
    }
}

/// Applies `edits` (position, byte) to `bytes`: replace, insert or delete, by the byte's value.
fn corrupt(mut bytes: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    for &(at, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match byte % 3 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn v2_json_rows_decode_exactly(rows in rows_strategy(), nested in any::<bool>()) {
        let data = if nested { json!(rows) } else { json!(flat(&rows)) };
        let body = json!({"inputs": [{"name": "float_input", "shape": [rows.len(), 4],
                                      "datatype": "FP32", "data": data}]});
        let (shape, values) = decoded_f32(body.to_string().as_bytes(), None);
        prop_assert_eq!(shape, vec![rows.len(), 4]);
        prop_assert_eq!(values, flat(&rows));
    }

    #[test]
    fn v2_binary_rows_decode_exactly(rows in rows_strategy()) {
        let values = flat(&rows);
        let binary: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = json!({"inputs": [{"name": "float_input", "shape": [rows.len(), 4],
            "datatype": "FP32", "parameters": {"binary_data_size": binary.len()}}]}).to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&binary);
        let (shape, decoded) = decoded_f32(&body, Some(header.len()));
        prop_assert_eq!(shape, vec![rows.len(), 4]);
        prop_assert_eq!(decoded, values);
        // One byte short of the declared size is an error, not a panic.
        prop_assert!(v2_request(&body[..body.len() - 1], Some(header.len()), &signatures::signature(0), 64).is_err());
    }

    #[test]
    fn grpc_raw_and_typed_rows_decode_exactly(rows in rows_strategy(), raw in any::<bool>()) {
        let message = grpc_message(&rows, raw);
        let decoded = grpc_request(&message, &signatures::signature(0), 64).expect("decodes");
        let (shape, values) = f32_tensor(&decoded.tensors[0]);
        prop_assert_eq!(shape, vec![rows.len(), 4]);
        prop_assert_eq!(values, flat(&rows));
    }

    #[test]
    fn v1_arrays_and_objects_decode_exactly(rows in rows_strategy(), objects in any::<bool>()) {
        let features = signatures::features();
        let instances: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                if objects {
                    json!(features.iter().zip(row).map(|(f, v)| (f.clone(), json!(v))).collect::<serde_json::Map<_, _>>())
                } else {
                    json!(row)
                }
            })
            .collect();
        let body = json!({"instances": instances}).to_string();
        let input = v1_instances(body.as_bytes(), &signatures::signature(0), &features).expect("decodes");
        prop_assert_eq!(input.tensor.shape(), &[rows.len(), 4][..]);
        let TensorData::F64(values) = input.tensor.data() else {
            panic!("v1 decodes to FP64 before the signature's type");
        };
        // The JSON text carries each f32 in its shortest form: exact again at f32 precision.
        let as_f32: Vec<f32> = values.iter().map(|v| *v as f32).collect();
        prop_assert_eq!(as_f32, flat(&rows));
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        pick in any::<u8>(),
        json_len in any::<u16>(),
    ) {
        let signature = signatures::signature(pick);
        let _ = v2_request(&bytes, None, &signature, 64);
        let _ = v2_request(&bytes, Some(usize::from(json_len)), &signature, 64);
        let _ = v1_instances(&bytes, &signatures::signature(0), &signatures::features());
        let _ = grpc_request(&bytes, &signature, 64);
    }

    #[test]
    fn corrupted_valid_requests_are_refused_or_decoded_without_panicking(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        pick in 0u8..3,
    ) {
        let seeds = [
            json!({"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32",
                               "data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}]}),
            json!({"inputs": [{"name": "ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
                              {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}),
            json!({"inputs": [{"name": "cube", "shape": [1, 2, 2], "datatype": "FP64",
                               "data": [1.0, 2.0, 3.0, 4.0]}], "parameters": {"timeout": 5}}),
        ];
        let seed = seeds[usize::from(pick)].to_string().into_bytes();
        let body = corrupt(seed, &edits);
        let _ = v2_request(&body, None, &signatures::signature(pick), 64);
        let v1 = corrupt(br#"{"instances": [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4}]}"#.to_vec(), &edits);
        let _ = v1_instances(&v1, &signatures::signature(0), &signatures::features());
        let grpc = corrupt(grpc_message(&[[5.1, 3.5, 1.4, 0.2]], pick == 0), &edits);
        let _ = grpc_request(&grpc, &signatures::signature(0), 64);
    }
}

/// Runs `input` through the fuzz target of `target`, as the fuzzer does.
fn fuzz_once(target: &str, input: &[u8]) {
    match target {
        "v2_json" => {
            if let Some((pick, body)) = input.split_first() {
                let _ = v2_request(body, None, &signatures::signature(*pick), 64);
            }
        }
        "v2_binary" => {
            if let [pick, high, low, body @ ..] = input {
                let json_len = usize::from(u16::from_be_bytes([*high, *low]));
                let _ = v2_request(body, Some(json_len), &signatures::signature(*pick), 64);
            }
        }
        "grpc_infer" => {
            if let Some((pick, message)) = input.split_first() {
                let _ = grpc_request(message, &signatures::signature(*pick), 64);
            }
        }
        _ => {
            let _ = v1_instances(input, &signatures::signature(0), &signatures::features());
        }
    }
}

#[test]
fn the_seeds_decode_and_the_fuzz_corpora_replay_without_panicking() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let read = |target: &str, name: &str| {
        std::fs::read(fuzz.join("seeds").join(target).join(name)).expect("seed")
    };
    for name in ["iris", "ids_text", "cube"] {
        let seed = read("v2_json", name);
        let (pick, body) = seed.split_first().expect("pick byte");
        v2_request(body, None, &signatures::signature(*pick), 64)
            .unwrap_or_else(|e| panic!("v2_json/{name}: {e}"));
    }
    for name in ["iris", "ids_text"] {
        let seed = read("v2_binary", name);
        let json_len = usize::from(u16::from_be_bytes([seed[1], seed[2]]));
        v2_request(
            &seed[3..],
            Some(json_len),
            &signatures::signature(seed[0]),
            64,
        )
        .unwrap_or_else(|e| panic!("v2_binary/{name}: {e}"));
    }
    for name in ["iris_raw", "ids_text_typed", "cube_typed"] {
        let seed = read("grpc_infer", name);
        let (pick, message) = seed.split_first().expect("pick byte");
        grpc_request(message, &signatures::signature(*pick), 64)
            .unwrap_or_else(|e| panic!("grpc_infer/{name}: {e}"));
    }
    for name in ["rows", "objects"] {
        v1_instances(
            &read("v1_instances", name),
            &signatures::signature(0),
            &signatures::features(),
        )
        .unwrap_or_else(|e| panic!("v1_instances/{name}: {e}"));
    }
    let mut replayed = 0;
    for target in ["v2_json", "v2_binary", "grpc_infer", "v1_instances"] {
        for kind in ["seeds", "corpus"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
                continue;
            };
            for entry in entries {
                let input = std::fs::read(entry.expect("entry").path()).expect("input");
                fuzz_once(target, &input);
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 10, "only {replayed} inputs replayed");
}
