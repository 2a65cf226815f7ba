//! The Open Inference Protocol over gRPC against real gateways, with a client generated from the
//! same `.proto`: every bundled version answers as the fixtures say in raw and typed contents,
//! the bad-input table maps to status codes with REST's own messages, requests are counted with
//! `protocol="grpc"` and their ids take feedback, admission control refuses with
//! RESOURCE_EXHAUSTED, the repository RPCs follow the admin token, 200 concurrent mixed gRPC and
//! REST requests are all right, and a champion swap under gRPC load fails no request.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{TOKEN, admin_config, admin_ok};
use common::{TestGateway, expected_fixtures, iris_rows_varied, metric_sum, models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use vigil::api::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use vigil::api::grpc::proto::infer_parameter::ParameterChoice;
use vigil::api::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use vigil::api::grpc::proto::model_infer_response::InferOutputTensor;
use vigil::api::grpc::proto::model_repository_parameter::ParameterChoice as RepositoryChoice;
use vigil::api::grpc::proto::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelMetadataRequest, ModelReadyRequest, ModelRepositoryParameter, RepositoryIndexRequest,
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerMetadataRequest,
    ServerReadyRequest,
};
use vigil::config::Config;

type Client = GrpcInferenceServiceClient<Channel>;

async fn connect(gateway: &TestGateway) -> Client {
    let addr = gateway.grpc_addr.expect("the gateway serves gRPC");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connects");
    GrpcInferenceServiceClient::new(channel)
}

/// An FP32 input tensor of `rows` (shape `[rows, width]`), without its values.
fn fp32_input(name: &str, rows: &[Vec<f64>]) -> InferInputTensor {
    InferInputTensor {
        name: name.to_string(),
        datatype: "FP32".to_string(),
        shape: vec![rows.len() as i64, rows.first().map_or(0, Vec::len) as i64],
        ..InferInputTensor::default()
    }
}

fn fp32_values(rows: &[Vec<f64>]) -> Vec<f32> {
    rows.iter().flatten().map(|&x| x as f32).collect()
}

/// `rows` as `raw_input_contents`, as tritonclient sends them.
fn raw_request(model: &str, version: &str, input: &str, rows: &[Vec<f64>]) -> ModelInferRequest {
    let bytes: Vec<u8> = fp32_values(rows)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.to_string(),
        inputs: vec![fp32_input(input, rows)],
        raw_input_contents: vec![bytes.into()],
        ..ModelInferRequest::default()
    }
}

/// `rows` as typed `fp32_contents`.
fn typed_request(model: &str, version: &str, input: &str, rows: &[Vec<f64>]) -> ModelInferRequest {
    let mut tensor = fp32_input(input, rows);
    tensor.contents = Some(InferTensorContents {
        fp32_contents: fp32_values(rows),
        ..InferTensorContents::default()
    });
    ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.to_string(),
        inputs: vec![tensor],
        ..ModelInferRequest::default()
    }
}

fn parameter(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
}

/// An answer's output `name` and its values as f64, from raw or typed contents.
fn output_values(response: &ModelInferResponse, name: &str) -> (InferOutputTensor, Vec<f64>) {
    let index = response
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name}: {response:?}"));
    let output = response.outputs[index].clone();
    let values = if response.raw_output_contents.is_empty() {
        let contents = output.contents.clone().expect("typed contents");
        match output.datatype.as_str() {
            "INT64" => contents.int64_contents.iter().map(|&x| x as f64).collect(),
            "FP32" => contents
                .fp32_contents
                .iter()
                .map(|&x| f64::from(x))
                .collect(),
            "BOOL" => contents
                .bool_contents
                .iter()
                .map(|&b| f64::from(u8::from(b)))
                .collect(),
            other => panic!("unexpected datatype {other}"),
        }
    } else {
        let bytes = &response.raw_output_contents[index];
        match output.datatype.as_str() {
            "INT64" => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            "FP32" => bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            "BOOL" => bytes.iter().map(|&b| f64::from(b)).collect(),
            other => panic!("unexpected datatype {other}"),
        }
    };
    (output, values)
}

/// Checks an answer against a fixture: integer outputs exactly, floats within 1e-5.
fn assert_matches_fixture(response: &ModelInferResponse, fixture: &Value, rows: usize) {
    let outputs = fixture["outputs"].as_object().expect("fixture outputs");
    for (name, expected) in outputs {
        let (output, got) = output_values(response, name);
        let shape: Vec<i64> = expected["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_i64().expect("dim"))
            .collect();
        let per_row: i64 = shape[1..].iter().product();
        assert_eq!(output.shape[0], rows as i64, "{name} rows");
        assert_eq!(&output.shape[1..], &shape[1..], "{name} shape");
        let want: Vec<f64> = expected["data"]
            .as_array()
            .expect("data")
            .iter()
            .flat_map(|v| match v {
                Value::Array(inner) => inner.iter().map(|x| x.as_f64().unwrap()).collect(),
                other => vec![other.as_f64().unwrap()],
            })
            .take(rows * per_row as usize)
            .collect();
        assert_eq!(got.len(), want.len(), "{name} element count");
        for (position, (g, w)) in got.iter().zip(&want).enumerate() {
            if expected["dtype"] == "int64" {
                assert_eq!(g, w, "{name}[{position}]");
            } else {
                assert!((g - w).abs() <= 1e-5, "{name}[{position}]: {g} vs {w}");
            }
        }
    }
}

fn fixture_rows(fixture: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(fixture["rows"].clone()).expect("fixture rows")
}

#[tokio::test]
async fn every_bundled_version_answers_as_the_fixtures_in_raw_and_typed_contents() {
    let gateway = TestGateway::start(&models_dir()).await;
    let mut client = connect(&gateway).await;
    for fixture in expected_fixtures() {
        let model = fixture["model"].as_str().unwrap();
        let version = fixture["version"].as_str().unwrap();
        let input = fixture["input"].as_str().unwrap();
        let rows = fixture_rows(&fixture);
        let raw = client
            .model_infer(raw_request(model, version, input, &rows))
            .await
            .unwrap_or_else(|e| panic!("{model}/{version}: {e}"))
            .into_inner();
        assert_eq!(raw.model_name, model);
        assert_eq!(raw.model_version, version);
        assert_eq!(raw.raw_output_contents.len(), raw.outputs.len());
        assert!(raw.outputs.iter().all(|o| o.contents.is_none()));
        assert_matches_fixture(&raw, &fixture, rows.len());

        let typed = client
            .model_infer(typed_request(model, version, input, &rows))
            .await
            .unwrap_or_else(|e| panic!("{model}/{version} typed: {e}"))
            .into_inner();
        assert!(typed.raw_output_contents.is_empty(), "typed in, typed out");
        assert_matches_fixture(&typed, &fixture, rows.len());
    }

    // Classifiers carry the threshold's outputs; outlier scores come when asked.
    let rows = vec![vec![5.1, 3.5, 1.4, 0.2], vec![6.7, 3.0, 5.2, 2.3]];
    let mut request = raw_request("iris", "", "float_input", &rows);
    request.parameters.insert(
        "outlier_score".into(),
        parameter(ParameterChoice::BoolParam(true)),
    );
    let answer = client.model_infer(request).await.unwrap().into_inner();
    let names: Vec<&str> = answer.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "label",
            "probabilities",
            "confidence",
            "accepted",
            "outlier_score"
        ]
    );
    let (scores, values) = output_values(&answer, "outlier_score");
    assert_eq!(
        (scores.datatype.as_str(), scores.shape.as_slice()),
        ("FP32", &[2][..])
    );
    assert!(
        values.iter().all(|s| s.is_finite() && *s >= 0.0),
        "{values:?}"
    );
    // Named outputs come in the order asked.
    let mut request = typed_request("iris", "1", "float_input", &rows);
    request.outputs = ["probabilities", "label"]
        .iter()
        .map(|name| InferRequestedOutputTensor {
            name: name.to_string(),
            ..InferRequestedOutputTensor::default()
        })
        .collect();
    let answer = client.model_infer(request).await.unwrap().into_inner();
    let names: Vec<&str> = answer.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["probabilities", "label"]);
    gateway.stop().await;
}

#[tokio::test]
async fn metadata_and_readiness_come_from_each_version() {
    let gateway = TestGateway::start(&models_dir()).await;
    let mut client = connect(&gateway).await;
    let server = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.name, "vigil");
    assert_eq!(server.extensions, ["model_repository"]);
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, rest) = gateway.get_json("/v2/models/iris").await;
    assert_eq!(metadata.versions, ["1", "2", "3"]);
    assert_eq!(metadata.platform, rest["platform"]);
    assert_eq!(metadata.inputs.len(), 1);
    assert_eq!(metadata.inputs[0].name, rest["inputs"][0]["name"]);
    assert_eq!(metadata.inputs[0].datatype, "FP32");
    assert_eq!(metadata.inputs[0].shape, [-1, 4]);
    let outputs: Vec<&str> = metadata.outputs.iter().map(|o| o.name.as_str()).collect();
    let rest_outputs: Vec<&str> = rest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, rest_outputs);
    let diabetes = client
        .model_metadata(ModelMetadataRequest {
            name: "diabetes".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(diabetes.versions, ["1"]);
    assert_eq!(diabetes.inputs[0].shape, [-1, 10]);

    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        client
            .model_ready(ready("iris", "2"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let unknown = client.model_ready(ready("nope", "")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let unknown = client.model_ready(ready("iris", "9")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    gateway.stop().await;
}

/// One row of the bad-input table: a gRPC request, the code and message it must get, and the
/// REST request (path, body) that must get the very same message, when REST can say it.
struct BadInput {
    what: &'static str,
    request: ModelInferRequest,
    code: Code,
    message: &'static str,
    rest: Option<(&'static str, Value)>,
}

fn bad_inputs() -> Vec<BadInput> {
    let row = vec![vec![5.1, 3.5, 1.4, 0.2]];
    let good = || raw_request("iris", "", "float_input", &row);
    let with = |change: &dyn Fn(&mut ModelInferRequest)| {
        let mut request = good();
        change(&mut request);
        request
    };
    let typed = |change: &dyn Fn(&mut ModelInferRequest)| {
        let mut request = typed_request("iris", "", "float_input", &row);
        change(&mut request);
        request
    };
    let rest_body = v2_body("float_input", &row);
    let rest_with = |change: &dyn Fn(&mut Value)| {
        let mut body = rest_body.clone();
        change(&mut body);
        body
    };
    vec![
        BadInput {
            what: "unknown model",
            request: with(&|r| r.model_name = "nope".into()),
            code: Code::NotFound,
            message: "unknown model `nope`",
            rest: Some(("/v2/models/nope/infer", rest_body.clone())),
        },
        BadInput {
            what: "unknown version",
            request: with(&|r| r.model_version = "9".into()),
            code: Code::NotFound,
            message: "9",
            rest: Some(("/v2/models/iris/versions/9/infer", rest_body.clone())),
        },
        BadInput {
            what: "no model name",
            request: with(&|r| r.model_name.clear()),
            code: Code::InvalidArgument,
            message: "model_name: expected a model name",
            rest: None,
        },
        BadInput {
            what: "no inputs",
            request: with(&|r| {
                r.inputs.clear();
                r.raw_input_contents.clear();
            }),
            code: Code::InvalidArgument,
            message: "inputs: expected at least one input tensor",
            rest: Some(("/v2/models/iris/infer", json!({"inputs": []}))),
        },
        BadInput {
            what: "unknown datatype",
            request: with(&|r| r.inputs[0].datatype = "FP99".into()),
            code: Code::InvalidArgument,
            message: "inputs[0].datatype: unknown datatype `FP99`",
            rest: Some((
                "/v2/models/iris/infer",
                rest_with(&|b| b["inputs"][0]["datatype"] = json!("FP99")),
            )),
        },
        BadInput {
            what: "negative dimension",
            request: with(&|r| r.inputs[0].shape = vec![-1, 4]),
            code: Code::InvalidArgument,
            message: "inputs[0].shape[0]: expected a non-negative size, got -1",
            rest: Some((
                "/v2/models/iris/infer",
                rest_with(&|b| b["inputs"][0]["shape"] = json!([-1, 4])),
            )),
        },
        BadInput {
            what: "three features for four",
            request: raw_request("iris", "", "float_input", &[vec![5.1, 3.5, 1.4]]),
            code: Code::InvalidArgument,
            message: "inputs[0]",
            rest: Some((
                "/v2/models/iris/infer",
                v2_body("float_input", &[vec![5.1, 3.5, 1.4]]),
            )),
        },
        BadInput {
            what: "unknown input name",
            request: with(&|r| r.inputs[0].name = "nope".into()),
            code: Code::InvalidArgument,
            message: "nope",
            rest: Some((
                "/v2/models/iris/infer",
                rest_with(&|b| b["inputs"][0]["name"] = json!("nope")),
            )),
        },
        BadInput {
            what: "unknown output",
            request: with(&|r| {
                r.outputs = vec![InferRequestedOutputTensor {
                    name: "nope".into(),
                    ..InferRequestedOutputTensor::default()
                }];
            }),
            code: Code::InvalidArgument,
            message: "outputs[0].name: the model has no output `nope`",
            rest: Some((
                "/v2/models/iris/infer",
                rest_with(&|b| b["outputs"] = json!([{"name": "nope"}])),
            )),
        },
        BadInput {
            what: "outlier_score not a boolean",
            request: with(&|r| {
                r.parameters.insert(
                    "outlier_score".into(),
                    parameter(ParameterChoice::StringParam("yes".into())),
                );
            }),
            code: Code::InvalidArgument,
            message: "parameters.outlier_score: expected true or false",
            rest: Some((
                "/v2/models/iris/infer",
                rest_with(&|b| b["parameters"] = json!({"outlier_score": "yes"})),
            )),
        },
        BadInput {
            what: "timeout not a whole number",
            request: with(&|r| {
                r.parameters.insert(
                    "timeout".into(),
                    parameter(ParameterChoice::DoubleParam(1.5)),
                );
            }),
            code: Code::InvalidArgument,
            message: "parameters.timeout: expected a whole number of microseconds",
            rest: Some((
                "/v2/models/iris/infer",
                rest_with(&|b| b["parameters"] = json!({"timeout": 1.5})),
            )),
        },
        BadInput {
            what: "request id too long",
            request: with(&|r| r.id = "x".repeat(300)),
            code: Code::InvalidArgument,
            message: "id: expected a request id of 1 to 256 bytes",
            rest: Some((
                "/v2/models/iris/infer",
                rest_with(&|b| b["id"] = json!("x".repeat(300))),
            )),
        },
        BadInput {
            what: "raw contents for two inputs, one declared",
            request: with(&|r| r.raw_input_contents.push(vec![0u8; 16].into())),
            code: Code::InvalidArgument,
            message: "raw_input_contents: expected one entry per input (1), got 2",
            rest: None,
        },
        BadInput {
            what: "raw contents a byte short",
            request: with(&|r| r.raw_input_contents[0] = vec![0u8; 15].into()),
            code: Code::InvalidArgument,
            message: "raw_input_contents[0]: 4 FP32 elements need 16 bytes, got 15",
            rest: None,
        },
        BadInput {
            what: "raw and typed contents together",
            request: with(&|r| {
                r.inputs[0].contents = Some(InferTensorContents {
                    fp32_contents: vec![1.0; 4],
                    ..InferTensorContents::default()
                });
            }),
            code: Code::InvalidArgument,
            message: "inputs[0].contents: raw_input_contents is set",
            rest: None,
        },
        BadInput {
            what: "values in the wrong contents field",
            request: typed(&|r| {
                r.inputs[0].contents = Some(InferTensorContents {
                    int64_contents: vec![1, 2, 3, 4],
                    ..InferTensorContents::default()
                });
            }),
            code: Code::InvalidArgument,
            message: "inputs[0].contents.int64_contents: datatype FP32 takes its values in fp32_contents",
            rest: None,
        },
        BadInput {
            what: "too few typed values",
            request: typed(&|r| {
                if let Some(contents) = r.inputs[0].contents.as_mut() {
                    contents.fp32_contents.pop();
                }
            }),
            code: Code::InvalidArgument,
            message: "inputs[0].contents.fp32_contents: the shape needs 4 elements, got 3",
            rest: None,
        },
        BadInput {
            what: "typed FP16",
            request: typed(&|r| r.inputs[0].datatype = "FP16".into()),
            code: Code::InvalidArgument,
            message: "inputs[0].datatype: FP16 tensors have no typed contents",
            rest: None,
        },
        BadInput {
            what: "INT8 out of range",
            request: typed(&|r| {
                r.inputs[0].datatype = "INT8".into();
                r.inputs[0].contents = Some(InferTensorContents {
                    int_contents: vec![1, 2, 300, 4],
                    ..InferTensorContents::default()
                });
            }),
            code: Code::InvalidArgument,
            message: "inputs[0].contents.int_contents[2]: expected integers in the range of INT8, got 300",
            rest: None,
        },
    ]
}

#[tokio::test]
async fn bad_input_gets_the_status_code_and_the_message_rest_gives() {
    let mut config = Config::for_models(models_dir());
    config.max_body_bytes = 64 * 1024;
    let gateway = TestGateway::start_with(config).await;
    let mut client = connect(&gateway).await;
    for case in bad_inputs() {
        let status = client
            .model_infer(case.request)
            .await
            .map(|_| ())
            .expect_err(case.what);
        assert_eq!(status.code(), case.code, "{}: {status:?}", case.what);
        assert!(
            status.message().contains(case.message),
            "{}: {:?} does not say {:?}",
            case.what,
            status.message(),
            case.message
        );
        if let Some((path, body)) = case.rest {
            let (rest_status, answer) = gateway.post_json(path, &body).await;
            assert!(
                rest_status.is_client_error(),
                "{}: {rest_status}",
                case.what
            );
            assert_eq!(
                answer["error"].as_str(),
                Some(status.message()),
                "{}: REST and gRPC say the same",
                case.what
            );
        }
    }
    // A message over --max-body-bytes is refused before it is read, as REST refuses the body.
    let rows: Vec<Vec<f64>> = (0..8192).map(|_| vec![5.1, 3.5, 1.4, 0.2]).collect();
    let too_large = client
        .model_infer(raw_request("iris", "", "float_input", &rows))
        .await
        .unwrap_err();
    assert_eq!(too_large.code(), Code::ResourceExhausted, "{too_large:?}");
    assert_eq!(
        too_large.message(),
        "request body exceeds the limit of 65536 bytes (--max-body-bytes)"
    );
    // Compressed messages are taken, and the limit holds for what they decompress to.
    let mut gzip = client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let bomb = gzip
        .model_infer(raw_request("iris", "", "float_input", &rows))
        .await
        .unwrap_err();
    assert_eq!(bomb.code(), Code::ResourceExhausted, "{bomb:?}");
    assert_eq!(
        bomb.message(),
        "request body exceeds the limit of 65536 bytes (--max-body-bytes)"
    );
    let small = vec![vec![6.7, 3.0, 5.2, 2.3]];
    let answer = gzip
        .model_infer(raw_request("iris", "", "float_input", &small))
        .await
        .expect("a compressed request")
        .into_inner();
    assert_eq!(output_values(&answer, "label").1, [2.0]);
    // The gateway still serves, on the same connection.
    let rows = vec![vec![5.1, 3.5, 1.4, 0.2]];
    let answer = client
        .model_infer(raw_request("iris", "", "float_input", &rows))
        .await
        .expect("a good request after the bad ones")
        .into_inner();
    assert_eq!(output_values(&answer, "label").1, [0.0]);
    gateway.stop().await;
}

#[tokio::test]
async fn grpc_requests_are_counted_and_their_ids_take_feedback() {
    let mut config = admin_config(&models_dir());
    config.feedback_token = Some("feedback-secret".into());
    let gateway = TestGateway::start_with(config).await;
    let mut client = connect(&gateway).await;
    let rows = vec![vec![5.1, 3.5, 1.4, 0.2], vec![6.7, 3.0, 5.2, 2.3]];

    let mut request = raw_request("iris", "", "float_input", &rows);
    request.id = "g-1".into();
    let answer = client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.id, "g-1");
    let mut from_metadata = tonic::Request::new(raw_request("iris", "", "float_input", &rows));
    from_metadata
        .metadata_mut()
        .insert("x-request-id", "g-2".parse().unwrap());
    let answer = client
        .model_infer(from_metadata)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.id, "g-2",
        "the x-request-id metadata names the request"
    );
    let answer = client
        .model_infer(raw_request("iris", "", "float_input", &rows))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.id.is_empty(), "the gateway names unnamed requests");
    let generated = answer.id.clone();

    // Ground truth by the ids gRPC answered with.
    for (id, label) in [("g-1", "setosa"), (generated.as_str(), "virginica")] {
        let response = gateway
            .client
            .post(gateway.url("/v1/models/iris/feedback"))
            .bearer_auth("feedback-secret")
            .json(&json!({"id": id, "row": 0, "label": label}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(body["status"], "accepted", "{id}: {body}");
    }

    let error = client
        .model_infer(ModelInferRequest {
            model_name: "iris".into(),
            ..ModelInferRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let grpc = "protocol=\"grpc\"";
    let served = metric_sum(
        &gateway,
        "vigil_requests_total",
        &["model=\"iris\"", grpc, "status=\"2xx\""],
    )
    .await;
    assert_eq!(served, 3.0);
    let refused = metric_sum(
        &gateway,
        "vigil_requests_total",
        &["model=\"iris\"", grpc, "status=\"4xx\""],
    )
    .await;
    assert_eq!(refused, 1.0);
    let rest = metric_sum(&gateway, "vigil_requests_total", &["protocol=\"v2\""]).await;
    assert_eq!(rest, 0.0, "gRPC requests are not counted as REST");
    let text = gateway.metrics_text().await;
    assert!(
        text.contains("vigil_requests_in_flight{protocol=\"grpc\"} 0"),
        "in-flight gauge per protocol"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("vigil_request_duration_seconds_count")
                && l.contains(grpc)
                && l.ends_with(" 3")),
        "durations are recorded for gRPC"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_control_refuses_grpc_with_resource_exhausted() {
    let mut config = Config::for_models(models_dir());
    config.admission.max_in_flight = 1;
    config.admission.max_queue = Some(0);
    let gateway = TestGateway::start_with(config).await;
    let client = connect(&gateway).await;
    // Each 4,096-row call of the random forest (version 2) takes milliseconds.
    let request = raw_request("iris", "2", "float_input", &iris_rows_varied(4096));
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let mut client = client.clone();
            let request = request.clone();
            tokio::spawn(async move { client.model_infer(request).await.map(|_| ()) })
        })
        .collect();
    let mut served = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(
        served >= 1 && refused >= 1,
        "{served} served, {refused} refused"
    );
    let counted = metric_sum(
        &gateway,
        "vigil_admission_refused_total",
        &["model=\"iris\"", "reason=\"queue_full\""],
    )
    .await;
    assert_eq!(counted, f64::from(refused), "every refusal is counted");
    gateway.stop().await;
}

fn repository_parameters(
    entries: &[(&str, RepositoryChoice)],
) -> HashMap<String, ModelRepositoryParameter> {
    entries
        .iter()
        .map(|(name, choice)| {
            (
                (*name).to_string(),
                ModelRepositoryParameter {
                    parameter_choice: Some(choice.clone()),
                },
            )
        })
        .collect()
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn the_repository_rpcs_follow_the_admin_token() {
    let open = TestGateway::start(&models_dir()).await;
    let mut client = connect(&open).await;
    let load = |token: Option<&str>, parameters| {
        with_token(
            RepositoryModelLoadRequest {
                model_name: "iris".into(),
                parameters,
                ..RepositoryModelLoadRequest::default()
            },
            token,
        )
    };
    let denied = client
        .repository_model_load(load(Some(TOKEN), HashMap::new()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("admin API disabled"),
        "{denied:?}"
    );
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("the index needs no token")
        .into_inner();
    assert_eq!(index.models.len(), 7);
    open.stop().await;

    let gateway = TestGateway::start_with(admin_config(&models_dir())).await;
    let mut client = connect(&gateway).await;
    for (token, message) in [
        (None, "missing `Authorization: Bearer <token>` header"),
        (Some("wrong"), "wrong admin token"),
    ] {
        let status = client
            .repository_model_load(load(token, HashMap::new()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(status.message(), message);
    }
    let unload = |version: RepositoryChoice| {
        with_token(
            RepositoryModelUnloadRequest {
                model_name: "iris".into(),
                parameters: repository_parameters(&[("version", version)]),
                ..RepositoryModelUnloadRequest::default()
            },
            Some(TOKEN),
        )
    };
    // The champion serves: unloading it is refused, as over REST.
    let champion = client
        .repository_model_unload(unload(RepositoryChoice::StringParam("3".into())))
        .await
        .unwrap_err();
    assert_eq!(champion.code(), Code::FailedPrecondition, "{champion:?}");
    client
        .repository_model_unload(unload(RepositoryChoice::StringParam("1".into())))
        .await
        .expect("an idle version unloads");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    let one = index
        .models
        .iter()
        .find(|m| m.name == "iris" && m.version == "1")
        .unwrap();
    assert_eq!(one.state, "UNAVAILABLE");
    assert!(!one.reason.is_empty());
    let ready_only = client
        .repository_index(RepositoryIndexRequest {
            ready: true,
            ..RepositoryIndexRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ready_only.models.len(), 6);
    let ready = client
        .model_ready(ModelReadyRequest {
            name: "iris".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ready.ready);
    let rows = vec![vec![5.1, 3.5, 1.4, 0.2]];
    let unavailable = client
        .model_infer(raw_request("iris", "1", "float_input", &rows))
        .await
        .unwrap_err();
    assert_eq!(unavailable.code(), Code::Unavailable, "{unavailable:?}");

    let bad = client
        .repository_model_load(load(
            Some(TOKEN),
            repository_parameters(&[("config", RepositoryChoice::StringParam("{}".into()))]),
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().starts_with("parameters.config:"), "{bad:?}");
    client
        .repository_model_load(load(
            Some(TOKEN),
            repository_parameters(&[("version", RepositoryChoice::Int64Param(1))]),
        ))
        .await
        .expect("loads again");
    let answer = client
        .model_infer(raw_request("iris", "1", "float_input", &rows))
        .await
        .expect("serves again")
        .into_inner();
    assert_eq!(answer.model_version, "1");
    let audit = admin_ok(&gateway, Method::GET, "/admin/models/iris/audit", None).await;
    let text = audit.to_string();
    assert!(
        text.contains("unload 1") && text.contains("\"load\""),
        "both changes are audited: {audit}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_grpc_and_rest_requests_are_all_right() {
    let gateway = Arc::new(TestGateway::start_with(common::holding(&models_dir(), 200)).await);
    let client = connect(&gateway).await;
    let fixture = expected_fixtures()
        .into_iter()
        .find(|f| f["model"] == "iris" && f["version"] == "3")
        .expect("iris 3 fixture (the champion)");
    let rows = fixture_rows(&fixture);
    let labels: Vec<f64> = serde_json::from_value(fixture["outputs"]["label"]["data"].clone())
        .expect("fixture labels");
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let gateway = Arc::clone(&gateway);
            let mut client = client.clone();
            let row = rows[i % rows.len()].clone();
            let label = labels[i % rows.len()];
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let mut request = raw_request("iris", "", "float_input", &[row]);
                    request.id = format!("grpc-{i}");
                    let answer = client.model_infer(request).await.unwrap().into_inner();
                    assert_eq!(answer.id, format!("grpc-{i}"));
                    assert_eq!(output_values(&answer, "label").1, [label], "request {i}");
                } else {
                    let mut body = v2_body("float_input", &[row]);
                    body["id"] = json!(format!("rest-{i}"));
                    let (status, answer) = gateway.post_json("/v2/models/iris/infer", &body).await;
                    assert_eq!(status, StatusCode::OK, "{answer}");
                    assert_eq!(answer["id"], format!("rest-{i}"));
                    assert_eq!(
                        answer["outputs"][0]["data"],
                        json!([label as i64]),
                        "request {i}"
                    );
                }
            })
        })
        .collect();
    for call in calls {
        call.await.expect("every request answered right");
    }
    TestGateway::stop_shared(gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_champion_swap_under_grpc_load_fails_no_request() {
    let gateway = TestGateway::start_with(admin_config(&models_dir())).await;
    let client = connect(&gateway).await;
    let stop = Arc::new(AtomicBool::new(false));
    let rows = vec![vec![5.1, 3.5, 1.4, 0.2], vec![6.7, 3.0, 5.2, 2.3]];
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            let stop = Arc::clone(&stop);
            let request = raw_request("iris", "", "float_input", &rows);
            tokio::spawn(async move {
                let mut versions = BTreeSet::new();
                let mut errors = Vec::new();
                let mut answered = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match client.model_infer(request.clone()).await {
                        Ok(answer) => {
                            let answer = answer.into_inner();
                            assert_eq!(output_values(&answer, "label").1, [0.0, 2.0]);
                            versions.insert(answer.model_version);
                            answered += 1;
                        }
                        Err(status) => errors.push(status),
                    }
                }
                (versions, errors, answered)
            })
        })
        .collect();
    for swap in 0..10 {
        let version = if swap % 2 == 0 { "1" } else { "3" };
        admin_ok(
            &gateway,
            Method::PUT,
            "/admin/models/iris/champion",
            Some(json!({"version": version})),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = BTreeSet::new();
    let mut answered = 0;
    for worker in workers {
        let (versions, errors, count) = worker.await.expect("worker");
        assert!(
            errors.is_empty(),
            "no request fails during swaps: {errors:?}"
        );
        seen.extend(versions);
        answered += count;
    }
    assert!(answered > 0);
    assert_eq!(
        seen,
        BTreeSet::from(["1".to_string(), "3".to_string()]),
        "both champions answered"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_accepted_grpc_calls_finish_and_exits_zero() {
    let state = tempfile::tempdir().expect("state");
    let mut gateway = common::process::ServingProcess::start(&[
        "--state".as_ref(),
        state.path().as_os_str(),
        "--max-in-flight".as_ref(),
        "1".as_ref(),
        "--max-batch-rows".as_ref(),
        "65536".as_ref(),
    ]);
    let channel = Channel::from_shared(format!("http://{}", gateway.grpc_address))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connects");
    let client = GrpcInferenceServiceClient::new(channel);
    // Calls of tens of milliseconds each (the random forest on 50,000 rows), one at a time.
    let request = raw_request("iris", "2", "float_input", &iris_rows_varied(50_000));
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut client = client.clone();
            let request = request.clone();
            tokio::spawn(async move { client.model_infer(request).await })
        })
        .collect();
    // Signal once at least three calls are accepted (one running, the others queued).
    let metrics = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let accepted = loop {
        let text = metrics
            .get(gateway.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let in_flight = text
            .lines()
            .find_map(|l| l.strip_prefix("vigil_requests_in_flight{protocol=\"grpc\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if in_flight >= 3.0 {
            break in_flight as usize;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the calls never were in flight together"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let pid = gateway.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    // Accepted calls are answered; a call that reached the gateway after the signal is refused
    // with UNAVAILABLE (and may be sent elsewhere). None is cut off.
    let mut answered = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(answer) => {
                assert_eq!(answer.into_inner().model_version, "2");
                answered += 1;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
    }
    assert!(
        answered >= accepted,
        "{answered} answered, {accepted} were accepted before the signal"
    );
    let status = gateway.child.wait().expect("vigil exits");
    assert_eq!(status.code(), Some(0), "{}", gateway.log());
    assert!(
        std::net::TcpStream::connect(&gateway.grpc_address).is_err(),
        "no longer accepting gRPC connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadows_see_grpc_traffic_and_are_compared() {
    let gateway = TestGateway::start_with(admin_config(&models_dir())).await;
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/shadows/1",
        Some(json!({"fraction": 1.0})),
    )
    .await;
    let mut client = connect(&gateway).await;
    let rows = vec![vec![5.1, 3.5, 1.4, 0.2], vec![6.7, 3.0, 5.2, 2.3]];
    for _ in 0..5 {
        let answer = client
            .model_infer(raw_request("iris", "", "float_input", &rows))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.model_version, "3", "the champion answers");
    }
    let shadow = ["model=\"iris\"", "version=\"1\""];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric_sum(&gateway, "vigil_shadow_compared_rows_total", &shadow).await < 10.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the shadow never compared the mirrored rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mirrored = metric_sum(&gateway, "vigil_shadow_mirrored_total", &shadow).await;
    assert_eq!(mirrored, 5.0, "every gRPC request is mirrored");
    gateway.stop().await;
}

/// A gRPC client's first bytes: the HTTP/2 preface and an empty SETTINGS frame.
const HTTP2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A socket to `addr` that has sent `first`.
async fn opened(addr: std::net::SocketAddr, first: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(first).await.expect("send");
    stream
}

/// Whether the server's first bytes arrive within `limit`.
async fn answered_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut buffer)).await,
        Ok(Ok(read)) if read > 0
    )
}

/// Whether the server closes `stream` within `limit` (whatever it sends first is read).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_connections_beyond_the_cap_wait_and_idle_ones_close() {
    let idle = Duration::from_secs(2);
    let mut config = Config::for_models(models_dir());
    config.connections.max_connections = 2;
    config.connections.idle_timeout = idle;
    let gateway = TestGateway::start_with(config).await;
    let grpc = gateway.grpc_addr.expect("gRPC listener");

    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = opened(grpc, HTTP2_PREFACE).await;
        assert!(
            answered_within(&mut stream, Duration::from_secs(5)).await,
            "gRPC connection"
        );
        open.push(stream);
    }
    // Two are open: a third waits in the backlog, unserved; HTTP has its own budget.
    let mut third = opened(grpc, HTTP2_PREFACE).await;
    assert!(
        !answered_within(&mut third, Duration::from_millis(500)).await,
        "a gRPC connection beyond max_connections is not served"
    );
    let (status, _) = gateway.get_json("/v2/health/live").await;
    assert_eq!(status, StatusCode::OK, "HTTP is served meanwhile");
    drop(open.pop());
    assert!(
        answered_within(&mut third, Duration::from_secs(5)).await,
        "served once one closes"
    );

    // Quiet since its SETTINGS exchange, it is closed after the idle timeout, not before.
    let quiet = tokio::time::Instant::now();
    assert!(
        closed_within(&mut third, Duration::from_secs(10)).await,
        "an idle gRPC connection is closed"
    );
    assert!(
        quiet.elapsed() >= idle - Duration::from_millis(300),
        "not before idle_timeout: {:?}",
        quiet.elapsed()
    );
    gateway.stop().await;
}
