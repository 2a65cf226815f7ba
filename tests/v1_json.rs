//! The TF-Serving-style JSON API for humans, against a real gateway: row and named-feature
//! instances, class names and probabilities, regression values, versions and status.

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

fn fixture(model: &str, version: &str) -> Value {
    expected_fixtures()
        .into_iter()
        .find(|f| f["model"] == model && f["version"] == version)
        .expect("fixture exists")
}

fn labels(model: &str) -> Vec<String> {
    let path = models_dir().join(model).join("1/model.toml");
    let meta: toml::Value =
        toml::from_str(&std::fs::read_to_string(path).expect("toml")).expect("parse");
    meta.get("labels")
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("label").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn features(model: &str) -> Vec<String> {
    let path = models_dir().join(model).join("1/model.toml");
    let meta: toml::Value =
        toml::from_str(&std::fs::read_to_string(path).expect("toml")).expect("parse");
    meta["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|v| v.as_str().expect("feature").to_string())
        .collect()
}

#[tokio::test]
async fn classifiers_answer_with_class_names_and_probabilities() {
    let gateway = TestGateway::start(&models_dir()).await;
    for (model, version) in [
        ("iris", "1"),
        ("iris", "2"),
        ("iris", "3"),
        ("breast_cancer", "1"),
        ("breast_cancer", "2"),
    ] {
        let fixture = fixture(model, version);
        let names = labels(model);
        let (status, body) = gateway
            .post_json(
                &format!("/v1/models/{model}/versions/{version}:predict"),
                &json!({"instances": fixture["rows"]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{model}/{version}: {body}");
        assert_eq!(body["model_version"], version);
        let predictions = body["predictions"].as_array().expect("predictions");
        let expected_labels = fixture["outputs"]["label"]["data"]
            .as_array()
            .expect("labels");
        let expected_probs = fixture["outputs"]["probabilities"]["data"]
            .as_array()
            .expect("probs");
        assert_eq!(predictions.len(), expected_labels.len());
        for (row, prediction) in predictions.iter().enumerate() {
            let class = expected_labels[row].as_u64().expect("class index") as usize;
            assert_eq!(
                prediction["label"],
                names[class].as_str(),
                "{model}/{version} row {row}"
            );
            let probabilities = prediction["probabilities"]
                .as_object()
                .expect("probabilities");
            let keys: Vec<&String> = probabilities.keys().collect();
            let mut sorted_names: Vec<&String> = names.iter().collect();
            sorted_names.sort();
            let mut sorted_keys = keys.clone();
            sorted_keys.sort();
            assert_eq!(sorted_keys, sorted_names, "one probability per class name");
            for (index, name) in names.iter().enumerate() {
                let got = probabilities[name].as_f64().expect("probability");
                let want = expected_probs[row * names.len() + index]
                    .as_f64()
                    .expect("probability");
                assert!(
                    (got - want).abs() <= 1e-5,
                    "{model}/{version} row {row} {name}: {got} vs {want}"
                );
            }
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn named_features_give_the_same_answer_as_rows() {
    let gateway = TestGateway::start(&models_dir()).await;
    let fixture = fixture("breast_cancer", "2");
    let names = features("breast_cancer");
    let rows = fixture["rows"].as_array().expect("rows");
    let named: Vec<Value> = rows
        .iter()
        .map(|row| {
            let values = row.as_array().expect("row");
            // Object key order must not matter: insert the features in reverse.
            let mut object = serde_json::Map::new();
            for (name, value) in names.iter().zip(values).rev() {
                object.insert(name.clone(), value.clone());
            }
            Value::Object(object)
        })
        .collect();
    let (status, by_name) = gateway
        .post_json(
            "/v1/models/breast_cancer/versions/2:predict",
            &json!({"instances": named}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{by_name}");
    let (_, by_row) = gateway
        .post_json(
            "/v1/models/breast_cancer/versions/2:predict",
            &json!({"instances": rows}),
        )
        .await;
    assert_eq!(by_name["predictions"], by_row["predictions"]);
    gateway.stop().await;
}

#[tokio::test]
async fn regressors_answer_with_values() {
    let gateway = TestGateway::start(&models_dir()).await;
    for version in ["1", "2"] {
        let fixture = fixture("diabetes", version);
        let (status, body) = gateway
            .post_json(
                &format!("/v1/models/diabetes/versions/{version}:predict"),
                &json!({"instances": fixture["rows"], "signature_name": "serving_default"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let predictions = body["predictions"].as_array().expect("predictions");
        let expected = fixture["outputs"]["variable"]["data"]
            .as_array()
            .expect("values");
        assert_eq!(predictions.len(), expected.len());
        for (prediction, want) in predictions.iter().zip(expected) {
            let got = prediction["value"].as_f64().expect("value");
            let want = want.as_f64().expect("value");
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{got} vs {want}"
            );
            assert!(prediction.get("label").is_none());
        }
    }
    // Unversioned: the highest version answers.
    let (status, body) = gateway
        .post_json(
            "/v1/models/diabetes:predict",
            &json!({"instances": [vec![0.0; 10]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], "2");
    gateway.stop().await;
}

#[tokio::test]
async fn version_status_lists_versions() {
    let gateway = TestGateway::start(&models_dir()).await;
    let (status, body) = gateway.get_json("/v1/models/iris").await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&str> = body["model_version_status"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|s| s["version"].as_str().expect("version"))
        .collect();
    assert_eq!(versions, vec!["1", "2", "3"]);
    assert_eq!(body["model_version_status"][0]["state"], "AVAILABLE");
    let (status, body) = gateway.get_json("/v1/models/iris/versions/2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["model_version_status"].as_array().expect("list").len(),
        1
    );
    let (status, _) = gateway.get_json("/v1/models/iris/versions/7").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    gateway.stop().await;
}
