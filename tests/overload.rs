//! Protection from overload and from slow or idle clients, over real sockets: a full queue gets
//! 429 with `Retry-After`, a request whose deadline (`parameters.timeout`) passes while waiting
//! gets 503 without running, load shedding refuses inferences (and only inferences) while the
//! scheduling delay is above its limit, and slow-loris connections, slow bodies, idle
//! connections and too many connections are all bounded.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, iris_rows_varied, metric_sum, models_dir, v2_body};
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil::config::Config;

/// A body of `rows` iris rows for the random forest (version 2).
fn heavy_body(rows: usize, timeout_us: Option<u64>) -> serde_json::Value {
    let mut body = v2_body("float_input", &iris_rows_varied(rows));
    if let Some(timeout) = timeout_us {
        body["parameters"] = serde_json::json!({"timeout": timeout});
    }
    body
}

async fn statuses(
    gateway: &TestGateway,
    concurrent: usize,
    timeout_us: Option<u64>,
) -> Vec<(StatusCode, Option<String>)> {
    let body = heavy_body(4096, timeout_us);
    let mut calls = Vec::new();
    for _ in 0..concurrent {
        let client = gateway.client.clone();
        let url = gateway.url("/v2/models/iris/versions/2/infer");
        let body = body.clone();
        calls.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.expect("sent");
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_string());
            (response.status(), retry)
        }));
    }
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.expect("joined"));
    }
    out
}

/// How many of `answers` have `status`.
fn count(answers: &[(StatusCode, Option<String>)], status: StatusCode) -> usize {
    answers.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_is_refused_at_once_with_retry_after() {
    let mut config = Config::for_models(models_dir());
    config.admission.max_in_flight = 1;
    config.admission.max_queue = Some(0);
    let gateway = TestGateway::start_with(config).await;
    let answers = statuses(&gateway, 32, None).await;
    let refused = count(&answers, StatusCode::TOO_MANY_REQUESTS);
    let served = count(&answers, StatusCode::OK);
    assert_eq!(
        refused + served,
        answers.len(),
        "only 200 or 429: {answers:?}"
    );
    assert!(
        served >= 1 && refused >= 1,
        "{served} served, {refused} refused"
    );
    assert!(
        answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
            .all(|(_, retry)| retry.as_deref() == Some("1")),
        "every 429 says when to retry: {answers:?}"
    );
    assert_eq!(
        refusals(&gateway, "queue_full").await,
        refused as f64,
        "every 429 is counted"
    );
    // Capacity comes back.
    let (status, _) = gateway
        .post_json("/v2/models/iris/versions/2/infer", &heavy_body(4, None))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_whose_deadline_passes_while_waiting_gets_503_without_running() {
    let mut config = Config::for_models(models_dir());
    config.admission.max_in_flight = 1;
    config.admission.max_queue = Some(1000);
    let gateway = TestGateway::start_with(config).await;
    let rows_before = rows_inferred(&gateway).await;
    // Each 4,096-row forest call takes milliseconds; a 1 ms deadline cannot wait for 31 of them.
    let answers = statuses(&gateway, 32, Some(1_000)).await;
    let expired = count(&answers, StatusCode::SERVICE_UNAVAILABLE);
    let served = count(&answers, StatusCode::OK);
    assert_eq!(
        expired + served,
        answers.len(),
        "only 200 or 503: {answers:?}"
    );
    assert!(expired >= 1, "no request expired: {answers:?}");
    let rows = rows_inferred(&gateway).await - rows_before;
    assert_eq!(rows, served as f64 * 4096.0, "expired requests never ran");
    assert_eq!(
        refusals(&gateway, "deadline").await,
        expired as f64,
        "every expiry is counted"
    );
    let (status, answer) = gateway
        .post_json(
            "/v2/models/iris/infer",
            &serde_json::json!({"parameters": {"timeout": "soon"},
                "inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("parameters.timeout")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inferences_are_shed_while_the_scheduling_delay_is_above_its_limit() {
    let mut config = Config::for_models(models_dir());
    // No yield comes back within a nanosecond: after three probes every inference is shed.
    config.admission.shed_delay = Some(Duration::from_nanos(1));
    let gateway = TestGateway::start_with(config).await;
    let body = v2_body("float_input", &[vec![5.1, 3.5, 1.4, 0.2]]);
    let since = Instant::now();
    let response = loop {
        let response = gateway
            .client
            .post(gateway.url("/v2/models/iris/infer"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        if response.status() != StatusCode::OK || since.elapsed() > Duration::from_secs(5) {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let answer: serde_json::Value = response.json().await.expect("json error");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("overloaded") && e.contains("shed_delay_ms")),
        "{answer}"
    );
    let (status, _) = gateway
        .post_json(
            "/v1/models/iris:predict",
            &serde_json::json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "v1 is shed too");
    // Health, metadata and the admin API are never shed.
    for path in [
        "/v2/health/ready",
        "/v2/models/iris",
        "/v2/models/iris/ready",
    ] {
        let (status, _) = gateway.get_json(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    assert!(refusals(&gateway, "pressure").await >= 2.0);
}

/// Rows inferred by iris version 2.
async fn rows_inferred(gateway: &TestGateway) -> f64 {
    metric_sum(
        gateway,
        "vigil_rows_total",
        &["model=\"iris\"", "version=\"2\""],
    )
    .await
}

/// Requests of iris refused by admission control for `reason`.
async fn refusals(gateway: &TestGateway, reason: &str) -> f64 {
    let reason = format!("reason=\"{reason}\"");
    metric_sum(
        gateway,
        "vigil_admission_refused_total",
        &["model=\"iris\"", &reason],
    )
    .await
}

/// A connection to `gateway` that has sent `bytes`.
async fn connect_sending(gateway: &TestGateway, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    stream
}

/// True when the server has closed `stream` (EOF or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn limits(config: &mut Config, header_ms: u64, body_ms: u64, idle_secs: u64) {
    config.connections.header_read_timeout = Duration::from_millis(header_ms);
    config.connections.body_read_timeout = Duration::from_millis(body_ms);
    config.connections.idle_timeout = Duration::from_secs(idle_secs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_loris_connections_are_closed_and_others_keep_being_served() {
    let mut config = Config::for_models(models_dir());
    limits(&mut config, 500, 30_000, 60);
    let gateway = TestGateway::start_with(config).await;
    let mut lorises = Vec::new();
    for _ in 0..300 {
        let stream = connect_sending(
            &gateway,
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Ty",
        )
        .await;
        lorises.push(stream);
    }
    let (status, _) = gateway.get_json("/v2/health/ready").await;
    assert_eq!(status, StatusCode::OK, "served while 300 connections stall");
    for stream in &mut lorises {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "a connection sending half a header is closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_body_gets_408_and_an_idle_connection_is_closed() {
    let mut config = Config::for_models(models_dir());
    limits(&mut config, 30_000, 500, 1);
    let gateway = TestGateway::start_with(config).await;

    let mut slow = connect_sending(
        &gateway,
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inputs\"",
    )
    .await;
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..read]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout_ms"), "{text}");

    // A keep-alive connection that goes quiet after a request is closed after the idle timeout.
    let mut idle =
        connect_sending(&gateway, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let read = idle.read(&mut answer).await.expect("answer");
    assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "idle connection closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the idle timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let mut config = Config::for_models(models_dir());
    config.connections.max_connections = 3;
    let gateway = TestGateway::start_with(config).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream =
            connect_sending(&gateway, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut answer = [0u8; 1024];
        let read = stream.read(&mut answer).await.expect("answer");
        assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 200"));
        open.push(stream);
    }
    let mut fourth =
        connect_sending(&gateway, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut answer = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut answer)).await;
    assert!(
        early.is_err(),
        "a fourth connection is not served while three are open: {:?}",
        early.map(|r| r.map(|n| String::from_utf8_lossy(&answer[..n]).to_string()))
    );
    drop(open.pop());
    let read = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut answer))
        .await
        .expect("served once a slot frees")
        .expect("read");
    assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 200"));
}
