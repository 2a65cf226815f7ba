//! Monitoring end to end on a real gateway: drift decided from a window of real requests against
//! the reference sample (none for rows drawn from it, exactly the shifted feature for rows moved by
//! one standard deviation), outlier scores on requests, the monitoring view, and the Prometheus
//! text at `/metrics`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vigil::config::Config;
use vigil::repository::Reference;

const TOKEN: &str = "monitor-secret";

async fn start(monitoring: bool) -> TestGateway {
    let mut config = Config::for_models(models_dir());
    config.admin_token = Some(TOKEN.into());
    config.monitoring = monitoring;
    config.drift_window = 1000;
    TestGateway::start_with(config).await
}

fn reference(model: &str, version: &str) -> Reference {
    Reference::read(&models_dir().join(model).join(version).join("reference.csv"))
        .expect("reference")
}

/// `n` rows drawn (with replacement, fixed seed) from the reference sample.
fn resample(reference: &Reference, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| reference.rows[rng.usize(..reference.rows.len())].clone())
        .collect()
}

fn std_dev(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    (values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

async fn send_rows(gateway: &TestGateway, path: &str, rows: &[Vec<f64>]) {
    for batch in rows.chunks(100) {
        let (status, body) = gateway
            .post_json(path, &v2_body("float_input", batch))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn evaluate(gateway: &TestGateway, model: &str) -> Value {
    let (status, view) = gateway
        .admin(
            Method::POST,
            &format!("/admin/models/{model}/monitoring/evaluate"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

#[tokio::test]
async fn drift_is_found_on_the_shifted_feature_only() {
    let gateway = start(true).await;
    let (status, _) = gateway
        .admin(
            Method::PUT,
            "/admin/models/breast_cancer/champion",
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let reference = reference("breast_cancer", "1");
    let features = reference.features.len();

    send_rows(
        &gateway,
        "/v2/models/breast_cancer/infer",
        &resample(&reference, 1000, 7),
    )
    .await;
    let view = evaluate(&gateway, "breast_cancer").await;
    let drift = &view["versions"][0]["drift"];
    assert_eq!(view["versions"][0]["version"], "1");
    assert_eq!(drift["window_rows"], 1000);
    assert_eq!(drift["reference_rows"], reference.rows.len());
    assert_eq!(
        drift["dataset_drift"], false,
        "rows drawn from the reference: {drift}"
    );
    assert_eq!(drift["drifted_features"], 0);
    let threshold = drift["threshold"].as_f64().expect("threshold");
    assert!(
        (threshold - 0.05 / features as f64).abs() < 1e-15,
        "Bonferroni threshold"
    );

    let shifted_feature = 3;
    let sd = std_dev(reference.rows.iter().map(|r| r[shifted_feature]));
    let mut shifted = resample(&reference, 1000, 11);
    for row in &mut shifted {
        row[shifted_feature] += sd;
    }
    send_rows(&gateway, "/v2/models/breast_cancer/infer", &shifted).await;
    let view = evaluate(&gateway, "breast_cancer").await;
    let drift = &view["versions"][0]["drift"];
    assert_eq!(
        drift["window_rows"], 1000,
        "the window holds only the latest rows"
    );
    assert_eq!(drift["dataset_drift"], true, "{drift}");
    assert_eq!(drift["drifted_features"], 1, "{drift}");
    for (index, feature) in drift["features"]
        .as_array()
        .expect("features")
        .iter()
        .enumerate()
    {
        assert_eq!(feature["feature"], reference.features[index].as_str());
        let p = feature["p_value"].as_f64().expect("p");
        assert_eq!(feature["drifted"], index == shifted_feature, "{feature}");
        assert_eq!(p < threshold, index == shifted_feature, "{feature}");
    }

    let metrics = gateway.metrics_text().await;
    let name = &reference.features[shifted_feature];
    assert!(
        metrics.contains("vigil_drift_dataset{model=\"breast_cancer\",version=\"1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_drift_drifted_features{model=\"breast_cancer\",version=\"1\"} 1")
    );
    assert!(metrics.contains(&format!(
        "vigil_drift_ks_statistic{{model=\"breast_cancer\",version=\"1\",feature=\"{name}\"}}"
    )));
    assert!(
        metrics.contains("vigil_drift_window_rows{model=\"breast_cancer\",version=\"1\"} 1000")
    );
    assert!(metrics.contains("vigil_drift_evaluation_seconds_count"));
    gateway.stop().await;
}

#[tokio::test]
async fn outlier_scores_are_returned_on_request_and_counted() {
    let gateway = start(true).await;
    let reference = reference("diabetes", "2");
    let sds: Vec<f64> = (0..reference.features.len())
        .map(|f| std_dev(reference.rows.iter().map(|r| r[f])))
        .collect();
    let means: Vec<f64> = (0..reference.features.len())
        .map(|f| reference.rows.iter().map(|r| r[f]).sum::<f64>() / reference.rows.len() as f64)
        .collect();
    let far: Vec<Vec<f64>> = (0..5)
        .map(|k| {
            means
                .iter()
                .zip(&sds)
                .map(|(m, s)| m + (6.0 + f64::from(k)) * s)
                .collect()
        })
        .collect();
    let mut body = v2_body("float_input", &far);
    body["parameters"] = json!({"outlier_score": true});
    let (status, answer) = gateway.post_json("/v2/models/diabetes/infer", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let scores = answer["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|o| o["name"] == "outlier_score")
        .expect("outlier_score output");
    assert_eq!(scores["datatype"], "FP32");
    assert_eq!(scores["shape"], json!([5]));
    for score in scores["data"].as_array().expect("scores") {
        assert!(
            score.as_f64().expect("score") >= 0.99,
            "6σ away scores ≥ 0.99: {scores}"
        );
    }

    let typical = resample(&reference, 200, 5);
    let mut body = v2_body("float_input", &typical);
    body["outputs"] = json!([{"name": "variable"}, {"name": "outlier_score"}]);
    let (status, answer) = gateway.post_json("/v2/models/diabetes/infer", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outputs"].as_array().expect("outputs").len(), 2);
    let high = answer["outputs"][1]["data"]
        .as_array()
        .expect("scores")
        .iter()
        .filter(|s| s.as_f64().expect("score") >= 0.99)
        .count();
    assert!(
        high <= 20,
        "reference rows rarely score ≥ 0.99: {high} of 200"
    );

    let view = gateway
        .admin(Method::GET, "/admin/models/diabetes/monitoring", None)
        .await
        .1;
    let rate = view["versions"][0]["outlier_rate"]
        .as_f64()
        .expect("outlier rate");
    let expected = (5 + high) as f64 / 205.0;
    assert!((rate - expected).abs() < 1e-12, "{rate} vs {expected}");
    let metrics = gateway.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            "vigil_outliers_total{{model=\"diabetes\",version=\"2\"}} {}",
            5 + high
        )),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("vigil_outlier_score_bucket{model=\"diabetes\",version=\"2\",le=\"0.99\"}")
    );

    let (status, refused) = gateway
        .post_json(
            "/v2/models/iris/infer",
            &json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                    "parameters": {"outlier_score": "yes"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        refused["error"]
            .as_str()
            .expect("error")
            .contains("parameters.outlier_score")
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_monitoring_view_and_metrics_follow_the_traffic() {
    let gateway = start(true).await;
    for (path, body) in [
        ("/admin/models/iris/threshold", json!({"threshold": 0.9})),
        ("/admin/models/iris/shadows/2", json!({"fraction": 1.0})),
    ] {
        let (status, report) = gateway.admin(Method::PUT, path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{report}");
    }
    let rows = resample(&reference("iris", "3"), 40, 3);
    for row in &rows {
        let (status, _) = gateway
            .post_json(
                "/v2/models/iris/infer",
                &v2_body("float_input", std::slice::from_ref(row)),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = gateway
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [rows[0].clone(), rows[1].clone()]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gateway
        .post_json(
            "/v2/models/iris/infer",
            &v2_body("float_input", &[vec![1.0; 5]]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = gateway
        .post_json(
            "/v2/models/nope/infer",
            &v2_body("float_input", &[vec![1.0; 4]]),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let view = evaluate(&gateway, "iris").await;
    assert_eq!(view["threshold"], 0.9);
    let champion = &view["versions"][0];
    assert_eq!(champion["role"], "champion");
    assert_eq!(champion["version"], "3");
    assert_eq!(champion["requests"], 41);
    assert_eq!(champion["errors"], 1);
    let (p50, p95, p99) = (
        champion["latency_p50"].as_f64().expect("p50"),
        champion["latency_p95"].as_f64().expect("p95"),
        champion["latency_p99"].as_f64().expect("p99"),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{champion}");
    let classes: u64 = champion["predictions"]
        .as_object()
        .expect("by class")
        .values()
        .map(|c| c.as_u64().expect("count"))
        .sum();
    assert_eq!(classes, 42, "one prediction per row: {champion}");
    let acceptance = champion["acceptance_rate"].as_f64().expect("acceptance");
    assert!((0.0..=1.0).contains(&acceptance));
    assert_eq!(champion["drift"]["window_rows"], 42);
    let shadow = &view["versions"][1];
    assert_eq!(shadow["role"], "shadow");
    assert_eq!(shadow["version"], "2");
    assert!(
        shadow["shadow"]["mirrored"].as_u64().expect("mirrored")
            + shadow["shadow"]["dropped"].as_u64().expect("dropped")
            == 41
    );

    let metrics = gateway.metrics_text().await;
    for expected in [
        "vigil_requests_total{model=\"iris\",version=\"3\",role=\"champion\",protocol=\"v2\",status=\"2xx\"} 40",
        "vigil_requests_total{model=\"iris\",version=\"3\",role=\"champion\",protocol=\"v1\",status=\"2xx\"} 1",
        "vigil_requests_total{model=\"iris\",version=\"3\",role=\"champion\",protocol=\"v2\",status=\"4xx\"} 1",
        "vigil_requests_total{model=\"\",version=\"\",role=\"champion\",protocol=\"v2\",status=\"4xx\"} 1",
        "vigil_rows_total{model=\"iris\",version=\"3\",role=\"champion\"} 42",
        "vigil_request_duration_seconds_count{model=\"iris\",version=\"3\",role=\"champion\",protocol=\"v2\"} 40",
        "vigil_overhead_duration_seconds_count{model=\"iris\",version=\"3\",role=\"champion\",protocol=\"v2\"} 40",
        "vigil_inference_duration_seconds_count{model=\"iris\",version=\"3\",role=\"champion\"} 41",
        "vigil_requests_in_flight{protocol=\"v2\"} 0",
        "vigil_shadow_mirrored_total{model=\"iris\",version=\"2\"}",
        "vigil_threshold_rows_total{model=\"iris\",version=\"3\",outcome=\"accepted\"}",
        "vigil_predictions_total{model=\"iris\",version=\"3\",class=\"setosa\"}",
        "vigil_model_load_seconds{model=\"iris\",version=\"3\"}",
        "vigil_build_info{version=",
        "vigil_versions_loaded{model=\"iris\"} 3",
    ] {
        assert!(
            metrics.contains(expected),
            "missing `{expected}` in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("model=\"nope\""),
        "unknown names never become labels"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn monitoring_off_records_no_windows_but_still_counts_requests() {
    let gateway = start(false).await;
    send_rows(
        &gateway,
        "/v2/models/iris/infer",
        &resample(&reference("iris", "3"), 100, 1),
    )
    .await;
    let view = evaluate(&gateway, "iris").await;
    let champion = &view["versions"][0];
    assert_eq!(champion["requests"], 1);
    assert!(champion["drift"].is_null(), "{champion}");
    assert!(champion["outlier_rate"].is_null());
    gateway.stop().await;
}
