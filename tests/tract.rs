//! The tract engine behind a real gateway: versions marked `engine = "tract"` answer the
//! onnxruntime fixtures over HTTP, one plan serves any batch size, and versions using operators
//! tract lacks are listed as unavailable with the operator named and answer 503.

#![cfg(feature = "tract")]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, copy_version, expected_fixtures};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

const TRACT: &str = "engine = \"tract\"";

/// A repository where every version runs on tract: three that tract can run and two it cannot.
fn tract_repository() -> TempDir {
    let dir = tempfile::tempdir().expect("temporary repository");
    for (model, version) in [
        ("iris", "1"),
        ("iris", "3"),
        ("diabetes", "1"),
        ("breast_cancer", "1"),
        ("diabetes", "2"),
    ] {
        copy_version(dir.path(), model, version, TRACT);
    }
    dir
}

fn infer_path(model: &str, version: &str) -> String {
    format!("/v2/models/{model}/versions/{version}/infer")
}

fn fixture(model: &str, version: &str) -> Value {
    expected_fixtures()
        .into_iter()
        .find(|f| f["model"] == model && f["version"] == version)
        .unwrap_or_else(|| panic!("no fixture for {model}/{version}"))
}

fn fixture_rows(fixture: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(fixture["rows"].clone()).expect("fixture rows")
}

/// Asserts that `output` (a v2 response output for the first `rows` fixture rows) equals the
/// fixture's expected output cut to those rows: labels exactly, floats within 1e-5 (relative for
/// values above 1, such as the regression outputs).
fn assert_matches(context: &str, output: &Value, expected: &Value, rows: usize) {
    let mut want_shape: Vec<u64> =
        serde_json::from_value(expected["shape"].clone()).expect("expected shape");
    let full_rows = usize::try_from(want_shape[0]).expect("row count");
    want_shape[0] = u64::try_from(rows).expect("rows");
    let got_shape: Vec<u64> = serde_json::from_value(output["shape"].clone()).expect("shape");
    assert_eq!(got_shape, want_shape, "{context}: shape");
    let all = expected["data"].as_array().expect("expected data");
    let want = &all[..all.len() / full_rows * rows];
    let got = output["data"].as_array().expect("output data");
    assert_eq!(got.len(), want.len(), "{context}: element count");
    if expected["dtype"] == "int64" {
        assert_eq!(output["datatype"], "INT64", "{context}");
        assert_eq!(got.as_slice(), want, "{context}: labels must match exactly");
    } else {
        assert_eq!(expected["dtype"], "float32", "{context}");
        assert_eq!(output["datatype"], "FP32", "{context}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.as_f64().expect("number"), w.as_f64().expect("number"));
            let tolerance = 1e-5 * w.abs().max(1.0);
            assert!((g - w).abs() <= tolerance, "{context}[{i}]: {g} vs {w}");
        }
    }
}

/// Sends the first `rows` fixture rows to `model/version` and checks every output.
async fn check_against_fixture(gateway: &TestGateway, model: &str, version: &str, rows: usize) {
    let fixture = fixture(model, version);
    let input = fixture["input"].as_str().expect("input name");
    let all_rows = fixture_rows(&fixture);
    assert!(
        rows <= all_rows.len(),
        "the fixture has {} rows",
        all_rows.len()
    );
    let body = common::v2_body(input, &all_rows[..rows]);
    let (status, answer) = gateway.post_json(&infer_path(model, version), &body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{model}/{version} ({rows} rows): {answer}"
    );
    assert_eq!(answer["model_name"], model);
    assert_eq!(answer["model_version"], version);
    let outputs = common::model_outputs(&answer);
    let expected = fixture["outputs"].as_object().expect("expected outputs");
    assert_eq!(
        outputs.len(),
        expected.len(),
        "{model}/{version}: output count"
    );
    for output in outputs {
        let name = output["name"].as_str().expect("output name");
        let context = format!("{model}/{version}/{name} ({rows} rows)");
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("{context}: not in the fixture"));
        assert_matches(&context, output, want, rows);
    }
}

#[tokio::test]
async fn tract_versions_match_the_onnxruntime_fixtures() {
    let repo = tract_repository();
    let gateway = TestGateway::start(repo.path()).await;
    for (model, version) in [("iris", "1"), ("iris", "3"), ("diabetes", "1")] {
        let rows = fixture_rows(&fixture(model, version)).len();
        check_against_fixture(&gateway, model, version, rows).await;
    }
    gateway.stop().await;
}

#[tokio::test]
async fn one_tract_plan_serves_every_batch_size() {
    let repo = tract_repository();
    let gateway = TestGateway::start(repo.path()).await;
    for (model, version) in [("iris", "3"), ("diabetes", "1")] {
        for rows in [1, 7, 12, 1] {
            check_against_fixture(&gateway, model, version, rows).await;
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn operators_tract_lacks_make_the_version_unavailable() {
    let repo = tract_repository();
    let gateway = TestGateway::start(repo.path()).await;

    let (status, index) = gateway.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{index}");
    let index = index.as_array().expect("index list");
    assert_eq!(index.len(), 5, "{index:?}");
    let entry = |model: &str, version: &str| -> &Value {
        index
            .iter()
            .find(|e| e["name"] == model && e["version"] == version)
            .unwrap_or_else(|| panic!("{model}/{version} missing from the index: {index:?}"))
    };
    for (model, version) in [("iris", "1"), ("iris", "3"), ("diabetes", "1")] {
        assert_eq!(entry(model, version)["state"], "READY", "{model}/{version}");
    }
    for (model, version, op) in [
        ("breast_cancer", "1", "Scaler"),
        ("diabetes", "2", "TreeEnsembleRegressor"),
    ] {
        let entry = entry(model, version);
        assert_eq!(entry["state"], "UNAVAILABLE", "{model}/{version}: {entry}");
        let reason = entry["reason"].as_str().expect("reason");
        assert!(
            reason.contains(op),
            "{model}/{version}: reason must name {op}: {reason}"
        );
        assert!(
            reason.contains("tract"),
            "{model}/{version}: reason must name tract: {reason}"
        );

        let fixture = fixture(model, version);
        let rows = fixture_rows(&fixture);
        let body = common::v2_body(fixture["input"].as_str().expect("input"), &rows[..1]);
        let (status, answer) = gateway.post_json(&infer_path(model, version), &body).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{model}/{version}: {answer}"
        );
        let error = answer["error"].as_str().expect("JSON {\"error\": ...}");
        assert!(!error.is_empty(), "{model}/{version}: empty error");
    }

    let (status, ready_only) = gateway
        .post_json("/v2/repository/index", &json!({"ready": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ready_only.as_array().expect("index list").len(),
        3,
        "{ready_only}"
    );
    gateway.stop().await;
}
