//! The whole loop with the real binary: a weak champion serves; labels from a known dataset come
//! back by request id; after 500 labels a retraining event runs `scripts/retrain.py`, which
//! writes the next version and rescans; the deploy policy makes it a shadow; feedback on new
//! requests pairs the two; the evidence decides, and the shadow is promoted automatically, with
//! the evidence in the audit log.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::process::ServingProcess;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TOKEN: &str = "loop-secret";
/// Rows per request (and feedback items per batch).
const CHUNK: usize = 25;

async fn call(
    client: &reqwest::Client,
    method: Method,
    url: String,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, &url).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("JSON answer"))
}

/// The dataset: feature rows and their class names.
fn stream() -> (Vec<String>, Vec<Vec<f64>>, Vec<String>) {
    let text = std::fs::read_to_string(common::root().join("tests/fixtures/feedback/stream.csv"))
        .expect("stream.csv");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split(',')
        .map(str::to_string)
        .collect();
    let features = header[..header.len() - 1].to_vec();
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let (values, label) = cells.split_at(cells.len() - 1);
        rows.push(values.iter().map(|v| v.parse().expect("number")).collect());
        labels.push(label[0].to_string());
    }
    (features, rows, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_retrain_a_better_version_that_is_promoted_on_evidence() {
    let repo = tempfile::tempdir().expect("repository");
    let state = tempfile::tempdir().expect("state dir");
    common::copy_version_as(
        &common::fixture_models_dir(),
        "churn",
        "1",
        repo.path(),
        "churn",
        "1",
        "",
    );
    let gateway = ServingProcess::start(&[
        "--models".as_ref(),
        repo.path().as_os_str(),
        "--state".as_ref(),
        state.path().as_os_str(),
        "--admin-token".as_ref(),
        TOKEN.as_ref(),
        "--deploy-policy".as_ref(),
        "shadow".as_ref(),
    ]);
    let client = reqwest::Client::new();
    let python = common::root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup-dev` (pip installs scripts/requirements.txt)",
        python.display()
    );
    let command = json!([
        python,
        common::root().join("scripts/retrain.py"),
        "--models",
        repo.path(),
        "--url",
        format!("http://{}", gateway.address),
        "--token",
        TOKEN,
    ]);
    for (path, body) in [
        (
            "/admin/models/churn/retrain",
            json!({"every_labels": 500, "command": command}),
        ),
        (
            "/admin/models/churn/promotion",
            json!({"mode": "auto", "min_labels": 100, "max_labels": 5000}),
        ),
    ] {
        let (status, answer) = call(&client, Method::PUT, gateway.url(path), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }

    let (features, rows, labels) = stream();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sent = 0;
    let mut champion = "1".to_string();
    for (chunk, (rows, labels)) in rows.chunks(CHUNK).zip(labels.chunks(CHUNK)).enumerate() {
        let id = format!("c{chunk}");
        let body = json!({
            "id": id,
            "inputs": [{"name": "float_input", "shape": [rows.len(), features.len()],
                        "datatype": "FP32", "data": rows}]
        });
        let (status, answer) = call(
            &client,
            Method::POST,
            gateway.url("/v2/models/churn/infer"),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let items: Vec<Value> = labels
            .iter()
            .enumerate()
            .map(|(row, label)| json!({"id": id, "row": row, "label": label}))
            .collect();
        let (status, answer) = call(
            &client,
            Method::POST,
            gateway.url("/v1/models/churn/feedback"),
            Some(json!({"items": items})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["counts"]["accepted"], rows.len(), "{answer}");
        sent += rows.len();
        let (_, report) = call(
            &client,
            Method::GET,
            gateway.url("/admin/models/churn"),
            None,
        )
        .await;
        champion = report["champion"].as_str().unwrap_or_default().to_string();
        if champion != "1" || Instant::now() > deadline {
            break;
        }
        if sent >= 500 && report["versions"].as_array().is_some_and(|v| v.len() < 2) {
            // The retraining command is running: let it write the new version.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        champion,
        "2",
        "version 2 promoted after {sent} labels:\n{}",
        gateway.log()
    );

    let audit: Vec<Value> = std::fs::read_to_string(state.path().join("audit.jsonl"))
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line"))
        .collect();
    let shadowed = audit
        .iter()
        .find(|e| e["action"] == "new version 2: shadow")
        .expect("the retrained version became a shadow");
    assert_eq!(shadowed["actor"], "rescan");
    let promoted = audit
        .iter()
        .find(|e| e["actor"] == "promotion")
        .expect("the promotion, audited");
    assert_eq!(promoted["after"]["champion"], "2");
    assert_eq!(promoted["evidence"]["state"], "better");
    assert!(promoted["evidence"]["shadow_only"].as_u64().expect("b") > 0);
    assert!(promoted["evidence"]["p_value"].as_f64().expect("p") <= 0.05);
    // The retrained version carries a real validation score.
    let toml = std::fs::read_to_string(repo.path().join("churn/2/model.toml")).expect("model.toml");
    assert!(
        toml.contains("[metrics.validation]") && toml.contains("accuracy"),
        "{toml}"
    );
    // The export behind it holds the first 500 labelled rows, features by name.
    let exports = state.path().join("exports/churn");
    let first: Vec<Value> = std::fs::read_dir(&exports)
        .expect("exports")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("export")
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("line"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(first.len() >= 500);
    assert!(
        first[0]["features"].get(&features[0]).is_some(),
        "{}",
        first[0]
    );
}
