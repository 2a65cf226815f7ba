//! Open Inference Protocol conformance against a real gateway on the bundled models: server and
//! model metadata, readiness, every version's outputs against the onnxruntime fixtures, output
//! filtering, ids, the binary tensor extension, the repository index and concurrent load.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, expected_fixtures, models_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn infer_path(model: &str, version: &str) -> String {
    format!("/v2/models/{model}/versions/{version}/infer")
}

fn fixture_request(fixture: &Value) -> Value {
    let rows = fixture["rows"].as_array().expect("rows");
    json!({
        "inputs": [{
            "name": fixture["input"],
            "shape": [rows.len(), rows[0].as_array().expect("row").len()],
            "datatype": "FP32",
            "data": rows,
        }]
    })
}

/// Asserts that `output` (a v2 response output) equals the fixture's expected output.
fn assert_matches_fixture(context: &str, output: &Value, expected: &Value) {
    let want_shape: Vec<u64> = serde_json::from_value(expected["shape"].clone()).expect("shape");
    let got_shape: Vec<u64> = serde_json::from_value(output["shape"].clone()).expect("shape");
    assert_eq!(got_shape, want_shape, "{context}: shape");
    let want = expected["data"].as_array().expect("expected data");
    let got = output["data"].as_array().expect("output data");
    assert_eq!(got.len(), want.len(), "{context}: element count");
    if expected["dtype"] == "int64" {
        assert_eq!(output["datatype"], "INT64", "{context}");
        assert_eq!(got, want, "{context}: labels must match exactly");
    } else {
        assert_eq!(output["datatype"], "FP32", "{context}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.as_f64().expect("number"), w.as_f64().expect("number"));
            let tolerance = 1e-5 * w.abs().max(1.0);
            assert!((g - w).abs() <= tolerance, "{context}[{i}]: {g} vs {w}");
        }
    }
}

#[tokio::test]
async fn every_version_matches_the_onnxruntime_fixtures() {
    let gateway = TestGateway::start(&models_dir()).await;
    let fixtures = expected_fixtures();
    assert_eq!(fixtures.len(), 7, "one fixture per bundled version");
    for fixture in &fixtures {
        let model = fixture["model"].as_str().expect("model");
        let version = fixture["version"].as_str().expect("version");
        let (status, body) = gateway
            .post_json(&infer_path(model, version), &fixture_request(fixture))
            .await;
        assert_eq!(status, StatusCode::OK, "{model}/{version}: {body}");
        assert_eq!(body["model_name"], model);
        assert_eq!(body["model_version"], version);
        let outputs = common::model_outputs(&body);
        let expected = fixture["outputs"].as_object().expect("expected outputs");
        if expected.contains_key("probabilities") {
            common::assert_threshold_outputs(&body, 0.0);
        }
        assert_eq!(
            outputs.len(),
            expected.len(),
            "{model}/{version}: output count"
        );
        for output in outputs {
            let name = output["name"].as_str().expect("output name");
            let context = format!("{model}/{version}/{name}");
            assert_matches_fixture(&context, output, &expected[name]);
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn unversioned_routes_serve_the_highest_version() {
    let gateway = TestGateway::start(&models_dir()).await;
    let fixture = expected_fixtures()
        .into_iter()
        .find(|f| f["model"] == "iris" && f["version"] == "3")
        .expect("iris v3 fixture");
    let (status, body) = gateway
        .post_json("/v2/models/iris/infer", &fixture_request(&fixture))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], "3");
    assert_matches_fixture(
        "iris/default",
        &body["outputs"][1],
        &fixture["outputs"]["probabilities"],
    );
    gateway.stop().await;
}

#[tokio::test]
async fn metadata_readiness_and_index_describe_the_repository() {
    let gateway = TestGateway::start(&models_dir()).await;
    let (status, server) = gateway.get_json("/v2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server["name"], "vigil");
    assert!(
        server["extensions"]
            .as_array()
            .expect("extensions")
            .contains(&json!("binary_tensor_data"))
    );

    let (status, live) = gateway.get_json("/v2/health/live").await;
    assert_eq!((status, live), (StatusCode::OK, json!({"live": true})));

    let (status, meta) = gateway.get_json("/v2/models/breast_cancer").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["platform"], "onnx_onnxv1");
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "float_input", "datatype": "FP32", "shape": [-1, 30]}])
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "label", "datatype": "INT64", "shape": [-1]})
    );
    assert_eq!(
        meta["outputs"][1],
        json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]})
    );

    let (status, meta) = gateway.get_json("/v2/models/diabetes/versions/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["outputs"],
        json!([{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}])
    );

    let (status, ready) = gateway.get_json("/v2/models/iris/versions/2/ready").await;
    assert_eq!(
        (status, ready),
        (StatusCode::OK, json!({"name": "iris", "ready": true}))
    );
    let (status, _) = gateway.get_json("/v2/models/iris/versions/9/ready").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = gateway.get_json("/v2/models/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().expect("error").contains("nope"));

    let (status, index) = gateway.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let index = index.as_array().expect("index list");
    assert_eq!(index.len(), 7);
    assert!(index.iter().all(|v| v["state"] == "READY"), "{index:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn outputs_filter_ids_and_parameters() {
    let gateway = TestGateway::start(&models_dir()).await;
    let mut body = common::v2_body("float_input", &[vec![5.1, 3.5, 1.4, 0.2]]);
    body["id"] = json!("req-42");
    body["parameters"] = json!({"custom": 1, "priority": 0});
    body["outputs"] = json!([{"name": "probabilities"}]);
    let response = gateway
        .client
        .post(gateway.url("/v2/models/iris/versions/1/infer"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["id"], "req-42");
    let outputs = common::model_outputs(&answer);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], "probabilities");

    let plain = common::v2_body("float_input", &[vec![5.1, 3.5, 1.4, 0.2]]);
    let (_, first) = gateway.post_json("/v2/models/iris/infer", &plain).await;
    let (_, second) = gateway.post_json("/v2/models/iris/infer", &plain).await;
    let (a, b) = (
        first["id"].as_str().expect("id"),
        second["id"].as_str().expect("id"),
    );
    assert!(
        !a.is_empty() && a != b,
        "generated ids must be unique: {a} {b}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn other_datatypes_are_converted_to_the_model_type() {
    let gateway = TestGateway::start(&models_dir()).await;
    let reference = common::v2_body("float_input", &[vec![5.0, 3.0, 1.0, 0.0]]);
    let (_, want) = gateway
        .post_json(&infer_path("iris", "1"), &reference)
        .await;
    for (datatype, data) in [
        ("INT64", json!([[5, 3, 1, 0]])),
        ("INT32", json!([5, 3, 1, 0])),
        ("UINT8", json!([5, 3, 1, 0])),
        ("INT8", json!([5, 3, 1, 0])),
        ("UINT64", json!([5, 3, 1, 0])),
        ("FP64", json!([5.0, 3.0, 1.0, 0.0])),
        ("FP16", json!([5.0, 3.0, 1.0, 0.0])),
        ("BOOL", json!([true, true, true, false])),
    ] {
        let body = json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": datatype, "data": data}]});
        let (status, got) = gateway.post_json(&infer_path("iris", "1"), &body).await;
        assert_eq!(status, StatusCode::OK, "{datatype}: {got}");
        if datatype == "BOOL" {
            continue;
        }
        assert_eq!(got["outputs"], want["outputs"], "{datatype}");
    }
    gateway.stop().await;
}

fn binary_request(rows: &[[f32; 4]], binary_output: bool) -> (Vec<u8>, usize) {
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut header = json!({
        "inputs": [{
            "name": "float_input",
            "shape": [rows.len(), 4],
            "datatype": "FP32",
            "parameters": {"binary_data_size": data.len()}
        }]
    });
    if binary_output {
        header["parameters"] = json!({"binary_data_output": true});
    }
    let mut body = serde_json::to_vec(&header).expect("header");
    let json_len = body.len();
    body.extend_from_slice(&data);
    (body, json_len)
}

#[tokio::test]
async fn binary_tensor_extension_in_and_out() {
    let gateway = TestGateway::start(&models_dir()).await;
    let rows = [[5.1f32, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]];
    let json_rows: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let (_, want) = gateway
        .post_json(
            &infer_path("iris", "2"),
            &common::v2_body("float_input", &json_rows),
        )
        .await;

    // Binary in, JSON out.
    let (body, json_len) = binary_request(&rows, false);
    let length = json_len.to_string();
    let (status, got) = gateway
        .post_raw(
            &infer_path("iris", "2"),
            &[
                ("Inference-Header-Content-Length", &length),
                ("Content-Type", "application/octet-stream"),
            ],
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["outputs"], want["outputs"]);

    // Binary in, binary out.
    let (body, json_len) = binary_request(&rows, true);
    let response = gateway
        .client
        .post(gateway.url(&infer_path("iris", "2")))
        .header("Inference-Header-Content-Length", json_len.to_string())
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let header_len: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .expect("header text")
        .parse()
        .expect("length");
    let bytes = response.bytes().await.expect("body");
    let header: Value = serde_json::from_slice(&bytes[..header_len]).expect("json header");
    let mut offset = header_len;
    let labels_size = header["outputs"][0]["parameters"]["binary_data_size"]
        .as_u64()
        .expect("size") as usize;
    let labels: Vec<i64> = bytes[offset..offset + labels_size]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    offset += labels_size;
    let probs_size = header["outputs"][1]["parameters"]["binary_data_size"]
        .as_u64()
        .expect("size") as usize;
    let probs: Vec<f32> = bytes[offset..offset + probs_size]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let want_labels: Vec<i64> =
        serde_json::from_value(want["outputs"][0]["data"].clone()).expect("labels");
    let want_probs: Vec<f32> =
        serde_json::from_value(want["outputs"][1]["data"].clone()).expect("probs");
    assert_eq!(labels, want_labels);
    assert_eq!(probs, want_probs);
    gateway.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_mixed_requests_are_all_correct() {
    let gateway =
        std::sync::Arc::new(TestGateway::start_with(common::holding(&models_dir(), 200)).await);
    let fixtures = std::sync::Arc::new(expected_fixtures());
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let gateway = std::sync::Arc::clone(&gateway);
        let fixtures = std::sync::Arc::clone(&fixtures);
        tasks.push(tokio::spawn(async move {
            let fixture = &fixtures[i % fixtures.len()];
            let model = fixture["model"].as_str().expect("model");
            let version = fixture["version"].as_str().expect("version");
            let row = i % 12;
            let one_row = json!({"inputs": [{
                "name": fixture["input"],
                "shape": [1, fixture["rows"][row].as_array().expect("row").len()],
                "datatype": "FP32",
                "data": fixture["rows"][row],
            }]});
            let (status, body) = gateway
                .post_json(&infer_path(model, version), &one_row)
                .await;
            assert_eq!(status, StatusCode::OK, "{model}/{version}: {body}");
            assert_eq!(body["model_version"], version);
            for output in common::model_outputs(&body) {
                let name = output["name"].as_str().expect("name");
                let expected = &fixture["outputs"][name];
                let width: usize = expected["shape"]
                    .as_array()
                    .expect("shape")
                    .iter()
                    .skip(1)
                    .map(|d| d.as_u64().expect("dim") as usize)
                    .product();
                let slice =
                    &expected["data"].as_array().expect("data")[row * width..(row + 1) * width];
                let mut shape = expected["shape"].clone();
                shape[0] = json!(1);
                let one = json!({"shape": shape, "dtype": expected["dtype"], "data": slice});
                assert_matches_fixture(&format!("{model}/{version}/{name}#{i}"), output, &one);
            }
        }));
    }
    for task in tasks {
        task.await
            .expect("request task completed without panicking");
    }
    TestGateway::stop_shared(gateway).await;
}
