//! The retraining trigger on real gateways: exactly one event per crossing of `every_labels`
//! under concurrent feedback, each with an export of exactly the rows labelled since the last one;
//! a command and a signed webhook as deliveries, the webhook retried under the same event id
//! until it answers 2xx; and a restart between crossings neither repeating nor losing an event.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{TestGateway, models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil::config::Config;

const ADMIN: &str = "retrain-admin";
const SECRET: &str = "webhook-secret";

fn config(state: &Path) -> Config {
    let mut config = Config::for_models(models_dir());
    config.admin_token = Some(ADMIN.into());
    config.state = state.to_path_buf();
    config
}

/// `rows` iris rows answered under `id` (one request).
async fn predict(gateway: &TestGateway, id: &str, rows: usize) {
    let mut body = v2_body("float_input", &vec![vec![5.9, 3.0, 4.2, 1.5]; rows]);
    body["id"] = json!(id);
    let (status, answer) = gateway.post_json("/v2/models/iris/infer", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// Labels rows `rows` of `id` one item per request, all `versicolor`.
async fn label(gateway: &TestGateway, id: &str, rows: std::ops::Range<usize>) {
    for row in rows {
        let body = json!({"id": id, "row": row, "label": "versicolor"});
        let response = gateway
            .client
            .post(gateway.url("/v1/models/iris/feedback"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .expect("feedback sent");
        assert_eq!(response.status(), StatusCode::OK, "{body}");
    }
}

async fn set_retrain(gateway: &TestGateway, settings: Value) {
    let (status, answer) = gateway
        .admin(Method::PUT, "/admin/models/iris/retrain", Some(settings))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer.get("secret").is_none(),
        "the secret is never shown: {answer}"
    );
}

/// A command that appends each event (one JSON object) as a line of `file`.
fn appending_command(file: &Path) -> Value {
    json!([
        "sh",
        "-c",
        format!("cat >> '{}'; echo >> '{}'", file.display(), file.display())
    ])
}

/// The events the command has received so far.
fn events_now(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an event per line"))
        .collect()
}

/// The events the command received, waiting until there are `count` (at most 20 s).
async fn events_in(file: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = events_now(file);
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn export_lines(event: &Value) -> Vec<Value> {
    let path = PathBuf::from(event["export"].as_str().expect("export path"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("an export line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_feedback_crosses_every_labels_exactly_once_per_crossing() {
    let state = tempfile::tempdir().expect("state dir");
    let events = state.path().join("events.jsonl");
    let gateway = Arc::new(TestGateway::start_in(config(state.path())).await);
    set_retrain(
        &gateway,
        json!({"every_labels": 500, "command": appending_command(&events)}),
    )
    .await;
    let mut clients = Vec::new();
    for client in 0..8 {
        let gateway = Arc::clone(&gateway);
        clients.push(tokio::spawn(async move {
            let id = format!("client-{client}");
            predict(&gateway, &id, 125).await;
            label(&gateway, &id, 0..125).await;
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    let received = events_in(&events, 2).await;
    assert_eq!(
        received.len(),
        2,
        "1,000 labels cross 500 twice: {received:?}"
    );
    let mut exported = std::collections::BTreeSet::new();
    for (n, event) in received.iter().enumerate() {
        assert_eq!(event["model"], "iris");
        assert_eq!(event["champion"], "3");
        assert_eq!(event["labels_since_last"], 500);
        assert_eq!(event["labels_total"], 500 * (n + 1));
        let lines = export_lines(event);
        assert_eq!(
            lines.len(),
            500,
            "the export holds exactly the rows of its crossing"
        );
        for line in &lines {
            assert_eq!(line["label"], "versicolor");
            assert_eq!(line["version"], "3");
            assert_eq!(line["features"]["petal_length"], 4.2);
            assert!(line["prediction"]["label"].is_string());
            let key = (line["id"].to_string(), line["row"].as_u64().expect("row"));
            assert!(exported.insert(key), "a row is in one export only");
        }
    }
    assert_ne!(received[0]["event_id"], received[1]["event_id"]);
    // Delivered: nothing is delivered again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events_now(&events).len(), 2);
    let metrics = gateway.metrics_text().await;
    assert!(
        metrics.contains("vigil_retrain_events_total{model=\"iris\"} 2"),
        "{metrics}"
    );
    TestGateway::stop_shared(gateway).await;
}

/// A webhook receiver that answers 500 to its first `failures` deliveries, then 200, and keeps
/// every delivery it got.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let mut kept = kept.lock().unwrap();
                kept.push((headers, body));
                if kept.len() <= failures {
                    AxumStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxumStatus::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn a_failing_webhook_gets_the_same_signed_event_until_it_accepts() {
    let state = tempfile::tempdir().expect("state dir");
    let (url, received) = receiver(2).await;
    let gateway = TestGateway::start_in(config(state.path())).await;
    set_retrain(
        &gateway,
        json!({"every_labels": 3, "webhook": url, "secret": SECRET}),
    )
    .await;
    predict(&gateway, "w", 3).await;
    label(&gateway, "w", 0..3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "three deliveries within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deliveries = received.lock().unwrap().clone();
    assert_eq!(
        deliveries.len(),
        3,
        "delivered until accepted, then never again"
    );
    let now = vigil::clock::now_ms() / 1000;
    let mut ids = std::collections::BTreeSet::new();
    for (headers, body) in &deliveries {
        let header = |name: &str| {
            headers
                .get(name)
                .unwrap_or_else(|| panic!("{name} header"))
                .to_str()
                .expect("text")
                .to_string()
        };
        let id = header("x-vigil-event-id");
        let timestamp: i64 = header("x-vigil-timestamp").parse().expect("seconds");
        vigil::signature::verify(
            SECRET.as_bytes(),
            &id,
            timestamp,
            body,
            &header("x-vigil-signature"),
            now,
        )
        .expect("a valid signature");
        let event: Value = serde_json::from_slice(body).expect("JSON event");
        assert_eq!(event["event_id"], id);
        assert_eq!(event["labels_since_last"], 3);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "one event, the same id each time: {ids:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_restart_between_crossings_neither_repeats_nor_loses_an_event() {
    let state = tempfile::tempdir().expect("state dir");
    let events = state.path().join("events.jsonl");
    let gateway = TestGateway::start_in(config(state.path())).await;
    set_retrain(
        &gateway,
        json!({"every_labels": 50, "command": appending_command(&events)}),
    )
    .await;
    predict(&gateway, "a", 80).await;
    label(&gateway, "a", 0..80).await;
    assert_eq!(events_in(&events, 1).await.len(), 1);
    gateway.stop().await;

    // 30 labels counted towards the next event survive the restart: 20 more cross it.
    let gateway = TestGateway::start_in(config(state.path())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events_now(&events).len(), 1, "nothing delivered twice");
    predict(&gateway, "b", 20).await;
    label(&gateway, "b", 0..19).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        events_now(&events).len(),
        1,
        "49 labels since the last event"
    );
    label(&gateway, "b", 19..20).await;
    let received = events_in(&events, 2).await;
    assert_eq!(received.len(), 2);
    assert_eq!(received[1]["labels_since_last"], 50);
    assert_eq!(received[1]["labels_total"], 100);
    let lines = export_lines(&received[1]);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.iter().filter(|&&id| id == "a").count(), 30);
    assert_eq!(ids.iter().filter(|&&id| id == "b").count(), 20);
    gateway.stop().await;
}
