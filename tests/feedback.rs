//! Ground truth by request id on real gateways: every answer of the feedback API (accepted,
//! duplicate, conflict, not found, invalid), its tokens, batches of 1,000, live quality equal to
//! what the responses and labels give, champion-versus-shadow evidence, automatic promotion on
//! evidence (audited with it), and the inference log's own counts.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::audit_lines;
use common::{TestGateway, models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use vigil::config::Config;

const ADMIN: &str = "admin-secret";
const FEEDBACK: &str = "feedback-secret";

fn config(state: &Path) -> Config {
    let mut config = Config::for_models(models_dir());
    config.admin_token = Some(ADMIN.into());
    config.feedback_token = Some(FEEDBACK.into());
    config.state = state.to_path_buf();
    config
}

/// `POST /v1/models/{model}/feedback` with `token`.
async fn feedback(
    gateway: &TestGateway,
    model: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let path = format!("/v1/models/{model}/feedback");
    let mut request = gateway.client.post(gateway.url(&path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    common::json_response(&path, request.send().await.expect("feedback sent")).await
}

/// A v2 inference on the unversioned iris route with `id`; returns the labels it answered.
async fn iris(gateway: &TestGateway, id: &str, rows: &[Vec<f64>]) -> Vec<u64> {
    let mut body = v2_body("float_input", rows);
    body["id"] = json!(id);
    let (status, answer) = gateway.post_json("/v2/models/iris/infer", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["id"], id);
    answer["outputs"][0]["data"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_u64().expect("label index"))
        .collect()
}

async fn quality(gateway: &TestGateway, model: &str) -> Value {
    let (status, quality) = gateway
        .admin(Method::GET, &format!("/admin/models/{model}/quality"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{quality}");
    quality
}

fn version<'a>(quality: &'a Value, version: &str) -> &'a Value {
    quality["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("no quality of version {version}: {quality}"))
}

/// Rows spread over (and beyond) the iris measurements, so that versions disagree on some.
fn spread_rows(seed: u64, n: usize) -> Vec<Vec<f64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            vec![
                4.0 + 4.0 * rng.f64(),
                2.0 + 2.5 * rng.f64(),
                1.0 + 6.0 * rng.f64(),
                0.1 + 2.5 * rng.f64(),
            ]
        })
        .collect()
}

#[tokio::test]
async fn the_feedback_api_answers_every_status_and_asks_for_a_token() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = TestGateway::start_in(config(state.path())).await;
    let labels = iris(
        &gateway,
        "r1",
        &[vec![5.1, 3.5, 1.4, 0.2], vec![6.7, 3.0, 5.2, 2.3]],
    )
    .await;
    assert_eq!(labels, [0, 2]);
    // Right after the answer: the log is written in batches, the label waits for it.
    let item = json!({"id": "r1", "label": "setosa"});
    let (status, answer) = feedback(&gateway, "iris", Some(FEEDBACK), &item).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"id": "r1", "row": 0, "status": "accepted"}));

    let cases = [
        (
            Some(ADMIN),
            json!({"id": "r1", "row": 1, "label": 2}),
            StatusCode::OK,
            "accepted",
        ),
        (Some(FEEDBACK), item.clone(), StatusCode::OK, "duplicate"),
        (
            Some(FEEDBACK),
            json!({"id": "r1", "label": 0}),
            StatusCode::OK,
            "duplicate",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "r1", "label": "virginica"}),
            StatusCode::CONFLICT,
            "already has the label setosa",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "nope", "label": "setosa"}),
            StatusCode::NOT_FOUND,
            "`nope`",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "r1", "row": 2, "label": "setosa"}),
            StatusCode::NOT_FOUND,
            "row 2",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "r1", "label": "rose"}),
            StatusCode::BAD_REQUEST,
            "label: `rose` is not a class",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "r1", "label": 3}),
            StatusCode::BAD_REQUEST,
            "label: class index 3",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "r1", "value": 1.5}),
            StatusCode::BAD_REQUEST,
            "value: the version that answered is a classifier",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "r1"}),
            StatusCode::BAD_REQUEST,
            "label: missing",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "r1", "label": "setosa", "value": 1}),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            Some(FEEDBACK),
            json!({"id": 5, "label": "setosa"}),
            StatusCode::BAD_REQUEST,
            "id",
        ),
        (
            Some(FEEDBACK),
            json!({"id": "r1", "label": "setosa", "colour": 1}),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            None,
            item.clone(),
            StatusCode::UNAUTHORIZED,
            "missing `Authorization",
        ),
        (
            Some("nope"),
            item.clone(),
            StatusCode::UNAUTHORIZED,
            "wrong feedback token",
        ),
    ];
    for (token, body, status, fragment) in cases {
        let (got, answer) = feedback(&gateway, "iris", token, &body).await;
        assert_eq!(got, status, "{body}: {answer}");
        let text = answer["status"]
            .as_str()
            .or_else(|| answer["error"].as_str())
            .unwrap_or_default();
        assert!(
            text.contains(fragment),
            "{body}: `{fragment}` not in {answer}"
        );
    }
    // A different label with "replace": true replaces it.
    let replace = json!({"id": "r1", "label": "virginica", "replace": true});
    let (status, answer) = feedback(&gateway, "iris", Some(FEEDBACK), &replace).await;
    assert_eq!(
        (status, answer["status"].clone()),
        (StatusCode::OK, json!("accepted"))
    );
    let report = quality(&gateway, "iris").await;
    let figures = &version(&report, "3")["all"];
    assert_eq!(figures["labelled"], 2);
    assert_eq!(
        figures["accuracy"]["value"], 0.5,
        "row 0 is now labelled virginica"
    );

    // Regressors take values.
    let (status, answer) = gateway
        .post_json(
            "/v1/models/diabetes:predict",
            &json!({"instances": [vec![0.01; 10]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["id"]
        .as_str()
        .expect("v1 answers carry the id")
        .to_string();
    let (status, answer) = feedback(
        &gateway,
        "diabetes",
        Some(FEEDBACK),
        &json!({"id": id, "label": "high"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = feedback(
        &gateway,
        "diabetes",
        Some(FEEDBACK),
        &json!({"id": id, "value": 151.2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let metrics = gateway.metrics_text().await;
    for (status, count) in [
        ("accepted", 3),
        ("duplicate", 2),
        ("conflict", 1),
        ("not_found", 2),
        ("invalid", 3),
    ] {
        let line = format!("vigil_feedback_total{{model=\"iris\",status=\"{status}\"}} {count}");
        assert!(
            metrics.contains(&line),
            "{line} in\n{}",
            metrics
                .lines()
                .filter(|l| l.starts_with("vigil_feedback_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    gateway.stop().await;

    // Without a feedback or admin token the feedback API is disabled.
    let closed = TestGateway::start(&models_dir()).await;
    let (status, answer) = feedback(&closed, "iris", Some(FEEDBACK), &item).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("feedback API disabled")
    );
    closed.stop().await;
}

#[tokio::test]
async fn a_batch_of_a_thousand_labels_and_quality_equal_to_the_recomputed_figures() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = TestGateway::start_in(config(state.path())).await;
    let rows = spread_rows(11, 1000);
    let answered = iris(&gateway, "batch", &rows).await;
    // Truth: a labelling the champion gets right about two times in three.
    let mut rng = fastrand::Rng::with_seed(5);
    let truth: Vec<u64> = answered
        .iter()
        .map(|&a| if rng.f64() < 0.67 { a } else { (a + 1) % 3 })
        .collect();
    let items: Vec<Value> = truth
        .iter()
        .enumerate()
        .map(|(row, label)| json!({"id": "batch", "row": row, "label": label}))
        .collect();
    let started = std::time::Instant::now();
    let (status, answer) =
        feedback(&gateway, "iris", Some(FEEDBACK), &json!({"items": items})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["counts"],
        json!({"accepted": 1000, "duplicate": 0, "error": 0})
    );
    assert_eq!(answer["results"].as_array().expect("results").len(), 1000);
    eprintln!("1,000-item batch answered in {:?}", started.elapsed());

    let quality = quality(&gateway, "iris").await;
    let champion = version(&quality, "3");
    let correct = answered.iter().zip(&truth).filter(|(a, t)| a == t).count();
    let accuracy = correct as f64 / 1000.0;
    let measured = &champion["all"]["accuracy"];
    assert!((measured["value"].as_f64().expect("accuracy") - accuracy).abs() < 1e-12);
    // Wilson 95% interval, computed here independently.
    let (z, n, p) = (1.959_963_984_540_054_f64, 1000.0, accuracy);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    assert!((measured["low"].as_f64().expect("low") - (centre - half)).abs() < 1e-12);
    assert!((measured["high"].as_f64().expect("high") - (centre + half)).abs() < 1e-12);
    let mut confusion = vec![vec![0u64; 3]; 3];
    for (&a, &t) in answered.iter().zip(&truth) {
        confusion[t as usize][a as usize] += 1;
    }
    assert_eq!(champion["all"]["confusion"], json!(confusion));
    for class in 0..3 {
        let predicted: u64 = (0..3).map(|t| confusion[t][class]).sum();
        let precision = confusion[class][class] as f64 / predicted as f64;
        assert_eq!(
            champion["all"]["classes"][class]["precision"],
            json!(precision)
        );
    }

    // The window of the most recent 1,000 labels holds them all; Prometheus has the counts.
    assert_eq!(champion["recent"]["labelled"], 1000);
    let metrics = gateway.metrics_text().await;
    assert!(metrics.contains("vigil_labelled_rows_total{model=\"iris\",version=\"3\"} 1000"));
    assert!(metrics.contains(&format!(
        "vigil_correct_rows_total{{model=\"iris\",version=\"3\"}} {correct}"
    )));

    // More than 1,000 items is refused whole.
    let too_many: Vec<Value> = (0..1001)
        .map(|row| json!({"id": "batch", "row": row % 1000, "label": 0}))
        .collect();
    let (status, answer) = feedback(
        &gateway,
        "iris",
        Some(FEEDBACK),
        &json!({"items": too_many}),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    // A batch answers each item, errors included.
    let mixed = json!({"items": [
        {"id": "batch", "row": 0, "label": truth[0]},
        {"id": "batch", "row": 1, "label": (truth[1] + 1) % 3},
        {"id": "gone", "label": 0},
        {"id": "batch", "row": 2, "label": "tulip"},
        {"row": 3, "label": 0},
    ]});
    let (status, answer) = feedback(&gateway, "iris", Some(FEEDBACK), &mixed).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["duplicate", "error", "error", "error", "error"]);
    assert!(
        answer["results"][3]["error"]
            .as_str()
            .expect("error")
            .starts_with("items[3].label")
    );
    assert!(
        answer["results"][4]["error"]
            .as_str()
            .expect("error")
            .contains("items[4]")
    );
    assert_eq!(
        answer["counts"],
        json!({"accepted": 0, "duplicate": 1, "error": 4})
    );
    gateway.stop().await;
}

#[tokio::test]
async fn shadow_evidence_pairs_rows_and_a_better_shadow_is_promoted_with_it() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = TestGateway::start_in(config(state.path())).await;
    for (path, body) in [
        ("/admin/models/iris/shadows/1", json!({"fraction": 1.0})),
        (
            "/admin/models/iris/promotion",
            json!({"mode": "auto", "min_labels": 60, "max_labels": 5000}),
        ),
    ] {
        let (status, answer) = gateway.admin(Method::PUT, path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }
    // Truth is what version 1 answers: the shadow is always right, the champion only where the
    // two agree.
    let rows = spread_rows(3, 400);
    let mut paired = 0;
    let mut b = 0u64;
    for (chunk_index, chunk) in rows.chunks(20).enumerate() {
        let id = format!("s{chunk_index}");
        let champion = iris(&gateway, &id, chunk).await;
        let mut body = v2_body("float_input", chunk);
        body["id"] = json!(format!("direct-{id}"));
        let (_, shadow) = gateway
            .post_json("/v2/models/iris/versions/1/infer", &body)
            .await;
        let shadow: Vec<u64> = shadow["outputs"][0]["data"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| l.as_u64().expect("index"))
            .collect();
        let items: Vec<Value> = shadow
            .iter()
            .enumerate()
            .map(|(row, label)| json!({"id": id, "row": row, "label": label}))
            .collect();
        let (status, answer) =
            feedback(&gateway, "iris", Some(FEEDBACK), &json!({"items": items})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        paired += chunk.len();
        b += champion.iter().zip(&shadow).filter(|(a, s)| a != s).count() as u64;
        let quality = quality(&gateway, "iris").await;
        let evidence = &quality["evidence"][0];
        if evidence["champion"] != "3" {
            // Promoted on evidence meanwhile (the promotion runs in the background).
            break;
        }
        assert_eq!(evidence["shadow"], "1");
        assert_eq!(evidence["paired"], paired);
        assert_eq!(evidence["shadow_only"], b);
        assert_eq!(
            evidence["champion_only"], 0,
            "the shadow is never wrong here"
        );
    }
    assert!(b > 0, "the versions disagree on some rows");
    // The shadow was promoted on evidence: audited by `promotion`, with the evidence.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let report = loop {
        let report = common::admin::report(&gateway, "iris").await;
        if report["champion"] == "1" || std::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(report["champion"], "1", "{report}");
    assert_eq!(report["history"], json!(["3"]));
    let entry = audit_lines(state.path())
        .into_iter()
        .rfind(|e| e["actor"] == "promotion")
        .expect("an audit entry by the promotion rule");
    assert_eq!(entry["action"], "promote");
    assert_eq!(entry["before"]["champion"], "3");
    assert_eq!(entry["after"]["champion"], "1");
    assert_eq!(entry["evidence"]["state"], "better");
    assert!(
        entry["evidence"]["evidence"].as_f64().expect("Λ") >= 20.0,
        "{entry}"
    );
    assert!(entry["evidence"]["paired"].as_u64().expect("paired") >= 60);
    // The old champion stays loaded and idle: one rollback brings it back.
    let (status, back) = gateway
        .admin(Method::POST, "/admin/models/iris/rollback", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["champion"], "3");
    gateway.stop().await;
}

#[tokio::test]
async fn every_logged_record_is_written_or_counted_as_dropped() {
    let state = tempfile::tempdir().expect("state dir");
    let mut config = config(state.path());
    config.inference_log_queue = 1;
    let gateway = std::sync::Arc::new(TestGateway::start_in(config).await);
    let mut clients = Vec::new();
    for client in 0..8 {
        let gateway = std::sync::Arc::clone(&gateway);
        clients.push(tokio::spawn(async move {
            for request in 0..25 {
                iris(
                    &gateway,
                    &format!("c{client}-{request}"),
                    &[vec![5.1, 3.5, 1.4, 0.2]],
                )
                .await;
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    // The same id again: the first record is kept, the repeat counted.
    iris(&gateway, "c0-0", &[vec![6.7, 3.0, 5.2, 2.3]]).await;
    let counter = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = gateway.metrics_text().await;
        let written = counter(&metrics, "vigil_inference_log_rows_total");
        let dropped = counter(&metrics, "vigil_inference_log_dropped_total");
        let repeated = counter(&metrics, "vigil_inference_log_repeated_rows_total");
        if written + dropped == 201 {
            assert!(repeated <= 1, "{repeated}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "written {written} + dropped {dropped} != 201"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    TestGateway::stop_shared(gateway).await;
}

/// Labels racing the inference log's writer: clients that each infer and then label what they
/// were answered, at once, with a shadow logging too. Both write to the store concurrently;
/// every label must be accepted (none refused because the other writer held the database) and
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_sent_while_the_log_writes_are_all_accepted() {
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 60;
    let state = tempfile::tempdir().expect("state dir");
    let gateway = std::sync::Arc::new(TestGateway::start_in(config(state.path())).await);
    let (status, answer) = gateway
        .admin(
            Method::PUT,
            "/admin/models/iris/shadows/2",
            Some(json!({"fraction": 1.0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let gateway = std::sync::Arc::clone(&gateway);
        clients.push(tokio::spawn(async move {
            let rows = spread_rows(100 + client as u64, REQUESTS);
            for (n, row) in rows.iter().enumerate() {
                let id = format!("race-{client}-{n}");
                let labels = iris(&gateway, &id, std::slice::from_ref(row)).await;
                let item = json!({"id": id, "label": labels[0]});
                let (status, answer) = feedback(&gateway, "iris", Some(FEEDBACK), &item).await;
                assert_eq!(status, StatusCode::OK, "{id}: {answer}");
                assert_eq!(answer["status"], "accepted", "{id}: {answer}");
            }
        }));
    }
    for client in clients {
        client.await.expect("client finished");
    }
    let quality = quality(&gateway, "iris").await;
    let champion = quality["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["role"] == "champion")
        .expect("the champion's quality");
    assert_eq!(champion["all"]["labelled"], CLIENTS * REQUESTS, "{quality}");
    assert_eq!(champion["all"]["accuracy"]["value"], 1.0, "{quality}");
}
