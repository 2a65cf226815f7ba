//! Confidence thresholds on real gateways: `confidence` and `accepted` outputs on every classifier
//! response, threshold changes taking effect, and the per-version counts.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{
    admin_gateway, admin_ok, fixture, fixture_rows, iris_rows, report, version_of,
};
use common::{assert_threshold_outputs, models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Accepted and rejected row counts of `version` in a report.
fn counts(report: &Value, version: &str) -> (u64, u64) {
    let entry = version_of(report, version);
    (
        entry["accepted_rows"].as_u64().expect("accepted_rows"),
        entry["rejected_rows"].as_u64().expect("rejected_rows"),
    )
}

/// `(accepted, rejected)` rows of a v2 response.
fn accepted_in(response: &Value) -> (u64, u64) {
    let accepted = response["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|o| o["name"] == "accepted")
        .unwrap_or_else(|| panic!("no accepted output in {response}"));
    let flags: Vec<bool> = accepted["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|a| a.as_bool().expect("bool"))
        .collect();
    let yes = flags.iter().filter(|&&a| a).count() as u64;
    (yes, flags.len() as u64 - yes)
}

#[tokio::test]
async fn thresholds_add_confidence_and_accepted_and_are_counted() {
    const THRESHOLD: f64 = 0.99;
    let gateway = admin_gateway(&models_dir()).await;
    let before = report(&gateway, "iris").await;
    assert_eq!(counts(&before, "3"), (0, 0));
    let set = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/threshold",
        Some(json!({"threshold": THRESHOLD})),
    )
    .await;
    assert_eq!(set["threshold"], THRESHOLD);

    let rows = iris_rows();
    let body = v2_body("float_input", &rows);
    let (status, champion) = gateway.post_json("/v2/models/iris/infer", &body).await;
    assert_eq!(status, StatusCode::OK, "{champion}");
    assert_eq!(champion["model_version"], "3");
    assert_threshold_outputs(&champion, THRESHOLD);
    let (champion_yes, champion_no) = accepted_in(&champion);
    assert_eq!(champion_yes + champion_no, rows.len() as u64);
    assert!(
        champion_yes > 0 && champion_no > 0,
        "the fixture rows straddle {THRESHOLD}: {champion}"
    );
    let outputs = champion["outputs"].as_array().expect("outputs");
    let confidence = outputs
        .iter()
        .find(|o| o["name"] == "confidence")
        .expect("confidence");
    assert_eq!(confidence["shape"], json!([rows.len()]));

    // A named version uses the model's threshold too, and counts on its own version.
    let (status, direct) = gateway
        .post_json("/v2/models/iris/versions/1/infer", &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{direct}");
    assert_threshold_outputs(&direct, THRESHOLD);
    let (direct_yes, direct_no) = accepted_in(&direct);

    // The v1 API carries the same per row.
    let (status, v1) = gateway
        .post_json("/v1/models/iris:predict", &json!({"instances": rows}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v1}");
    let predictions = v1["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), rows.len());
    let mut v1_yes = 0;
    for (row, prediction) in predictions.iter().enumerate() {
        let confidence = prediction["confidence"]
            .as_f64()
            .unwrap_or_else(|| panic!("row {row}: no confidence in {prediction}"));
        let top = prediction["probabilities"]
            .as_object()
            .expect("probabilities")
            .values()
            .map(|p| p.as_f64().expect("p"))
            .fold(f64::NEG_INFINITY, f64::max);
        assert!((confidence - top).abs() < 1e-6, "row {row}");
        let accepted = prediction["accepted"].as_bool().expect("accepted");
        assert_eq!(accepted, confidence >= THRESHOLD, "row {row}: {prediction}");
        v1_yes += u64::from(accepted);
    }
    assert_eq!(
        v1_yes, champion_yes,
        "same rows, same version, same answers"
    );

    let after = report(&gateway, "iris").await;
    assert_eq!(
        counts(&after, "3"),
        (
            champion_yes + v1_yes,
            champion_no + rows.len() as u64 - v1_yes
        )
    );
    assert_eq!(counts(&after, "1"), (direct_yes, direct_no));
    assert_eq!(counts(&after, "2"), (0, 0));

    // Threshold 0 accepts every row.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/threshold",
        Some(json!({"threshold": 0.0})),
    )
    .await;
    let (_, open) = gateway.post_json("/v2/models/iris/infer", &body).await;
    assert_threshold_outputs(&open, 0.0);
    assert_eq!(accepted_in(&open), (rows.len() as u64, 0));

    // Regression models have no confidence: no extra outputs, whatever the threshold.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/diabetes/threshold",
        Some(json!({"threshold": 0.5})),
    )
    .await;
    let diabetes = fixture("diabetes", "2");
    let (status, regression) = gateway
        .post_json(
            "/v2/models/diabetes/infer",
            &v2_body("float_input", &fixture_rows(&diabetes)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{regression}");
    let names: Vec<&Value> = regression["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| &o["name"])
        .collect();
    assert!(
        !names.iter().any(|n| *n == "confidence" || *n == "accepted"),
        "{names:?}"
    );
    let (status, v1) = gateway
        .post_json(
            "/v1/models/diabetes:predict",
            &json!({"instances": fixture_rows(&diabetes)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v1}");
    for prediction in v1["predictions"].as_array().expect("predictions") {
        assert!(prediction.get("confidence").is_none(), "{prediction}");
        assert!(prediction.get("accepted").is_none(), "{prediction}");
        assert!(prediction["value"].is_number(), "{prediction}");
    }
    let diabetes_report = report(&gateway, "diabetes").await;
    assert_eq!(counts(&diabetes_report, "2"), (0, 0));
    gateway.stop().await;
}
