//! Dynamic batching (`[batching]` in `model.toml`): concurrent requests of different sizes to a
//! batched copy of a version get exactly the outputs the unbatched version gives, and requests
//! did share batches.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, models_dir, v2_body};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;

/// A repository with iris version 2 (the random forest) twice: `plain` as it is, `batched` with
/// `[batching]` added.
fn repository(dir: &Path) {
    for (name, batching) in [
        ("plain", ""),
        (
            "batched",
            "\n[batching]\nmax_rows = 64\nmax_queue_delay_us = 20000\n",
        ),
    ] {
        let version = dir.join(name).join("1");
        std::fs::create_dir_all(&version).expect("version directory");
        let source = models_dir().join("iris/2");
        for file in ["model.onnx", "reference.csv"] {
            std::fs::copy(source.join(file), version.join(file)).expect("copy");
        }
        let toml = std::fs::read_to_string(source.join("model.toml")).expect("model.toml");
        std::fs::write(version.join("model.toml"), format!("{toml}{batching}")).expect("write");
    }
}

fn rows(request: usize) -> Vec<Vec<f64>> {
    (0..1 + request % 7)
        .map(|r| {
            let x = (request * 7 + r) as f64;
            vec![
                4.5 + (x % 35.0) / 10.0,
                2.0 + (x % 22.0) / 10.0,
                1.0 + (x % 59.0) / 10.0,
                0.1 + (x % 24.0) / 10.0,
            ]
        })
        .collect()
}

async fn outputs(gateway: &TestGateway, model: &str, request: usize) -> Value {
    let (status, answer) = gateway
        .post_json(
            &format!("/v2/models/{model}/infer"),
            &v2_body("float_input", &rows(request)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["outputs"].clone()
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains("model=\"batched\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_requests_get_exactly_the_unbatched_outputs() {
    let dir = tempfile::tempdir().expect("repository");
    repository(dir.path());
    let gateway =
        std::sync::Arc::new(TestGateway::start_with(common::holding(dir.path(), 48)).await);
    let mut calls = Vec::new();
    for request in 0..48 {
        let gateway = std::sync::Arc::clone(&gateway);
        calls.push(tokio::spawn(async move {
            (request, outputs(&gateway, "batched", request).await)
        }));
    }
    for call in calls {
        let (request, batched) = call.await.expect("joined");
        let plain = outputs(&gateway, "plain", request).await;
        assert_eq!(batched, plain, "request {request}: every output equal");
    }
    let text = gateway.metrics_text().await;
    let batches = counter(&text, "vigil_batches_total");
    let requests = counter(&text, "vigil_batched_requests_total");
    assert_eq!(requests, 48.0, "every request went through the batcher");
    assert!(
        batches < requests,
        "requests shared batches: {batches} batches for {requests} requests"
    );
}
