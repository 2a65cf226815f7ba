//! Shadows against real gateways: a slow shadow at fraction 1.0 never changes or fails champion
//! responses, its queue overflows into counted drops and its comparison figures add up; a shadow
//! that times out or fails is counted and the champion still answers; fractions are honoured.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, copy_version, copy_version_as, fixture_models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil::config::Config;

/// iris 1 and 2 from the bundled models; the slow and failing fixtures as iris 8 and 9.
fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("repo");
    copy_version(repo.path(), "iris", "1", "");
    copy_version(repo.path(), "iris", "2", "");
    copy_version_as(
        &fixture_models_dir(),
        "iris_slow",
        "1",
        repo.path(),
        "iris",
        "8",
        "",
    );
    copy_version_as(
        &fixture_models_dir(),
        "iris_failing",
        "1",
        repo.path(),
        "iris",
        "9",
        "",
    );
    repo
}

async fn start(repo: &tempfile::TempDir, queue: usize, timeout: Duration) -> TestGateway {
    let mut config = Config::for_models(repo.path());
    config.admin_token = Some("shadow-secret".into());
    config.shadow_queue = queue;
    config.shadow_workers = 1;
    config.shadow_timeout = timeout;
    let gateway = TestGateway::start_with(config).await;
    let (status, report) = gateway
        .admin(
            Method::PUT,
            "/admin/models/iris/champion",
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    gateway
}

async fn deploy_shadow(gateway: &TestGateway, version: &str, fraction: f64) {
    let (status, report) = gateway
        .admin(
            Method::PUT,
            &format!("/admin/models/iris/shadows/{version}"),
            Some(json!({"fraction": fraction})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
}

async fn comparison(gateway: &TestGateway, version: &str) -> Value {
    let (_, report) = gateway.admin(Method::GET, "/admin/models/iris", None).await;
    report["shadows"]
        .as_array()
        .expect("shadows")
        .iter()
        .find(|s| s["version"] == version)
        .unwrap_or_else(|| panic!("shadow {version} in {report}"))["comparison"]
        .clone()
}

/// Polls the shadow's figures until `done` holds (bounded).
async fn wait_for(gateway: &TestGateway, version: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let figures = comparison(gateway, version).await;
        if done(&figures) {
            return figures;
        }
        assert!(
            Instant::now() < deadline,
            "shadow figures never settled: {figures}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(figures: &Value, key: &str) -> u64 {
    figures[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {figures}"))
}

fn rows(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            vec![
                4.5 + (i % 30) as f64 * 0.1,
                3.0,
                1.0 + (i % 50) as f64 * 0.1,
                (i % 25) as f64 * 0.1,
            ]
        })
        .collect()
}

#[tokio::test]
async fn a_slow_shadow_never_changes_the_champion_and_overflow_is_counted() {
    let repo = repository();
    let gateway = Arc::new(start(&repo, 2, Duration::from_secs(5)).await);
    let rows = rows(240);
    // What version 1 answers without any shadow involved.
    let mut expected = Vec::new();
    for row in &rows {
        let (_, body) = gateway
            .post_json(
                "/v2/models/iris/versions/1/infer",
                &v2_body("float_input", std::slice::from_ref(row)),
            )
            .await;
        expected.push(body["outputs"].clone());
    }
    deploy_shadow(&gateway, "8", 1.0).await;

    let mut clients = Vec::new();
    for client in 0..8 {
        let gateway = Arc::clone(&gateway);
        let rows = rows.clone();
        let expected = expected.clone();
        clients.push(tokio::spawn(async move {
            for index in (client..rows.len()).step_by(8) {
                let body = v2_body("float_input", &[rows[index].clone()]);
                let (status, answer) = gateway.post_json("/v2/models/iris/infer", &body).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                assert_eq!(answer["model_version"], "1");
                assert_eq!(
                    answer["outputs"], expected[index],
                    "row {index}: champion answer changed"
                );
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }

    let sent = rows.len() as u64;
    let figures = wait_for(&gateway, "8", |f| {
        f["mirrored"].as_u64()
            == Some(
                f["compared_rows"].as_u64().unwrap_or(0)
                    + f["failed"].as_u64().unwrap_or(0)
                    + f["timed_out"].as_u64().unwrap_or(0),
            )
    })
    .await;
    assert_eq!(
        count(&figures, "mirrored") + count(&figures, "dropped"),
        sent,
        "{figures}"
    );
    assert!(
        count(&figures, "dropped") > 0,
        "a queue of 2 behind a slow shadow overflows: {figures}"
    );
    assert!(count(&figures, "mirrored") > 0, "{figures}");
    assert_eq!(count(&figures, "failed"), 0, "{figures}");
    let agreement = figures["agreement_rate"].as_f64().expect("agreement");
    assert!((0.0..=1.0).contains(&agreement), "{figures}");
    let mean = figures["mean_abs_difference"]
        .as_f64()
        .expect("mean difference");
    let max = figures["max_abs_difference"]
        .as_f64()
        .expect("max difference");
    assert!(
        (0.0..=1.0).contains(&mean) && mean <= max && max <= 1.0,
        "{figures}"
    );
    let shadow_p50 = figures["shadow_latency_p50"].as_f64().expect("shadow p50");
    let champion_p50 = figures["champion_latency_p50"]
        .as_f64()
        .expect("champion p50");
    assert!(
        shadow_p50 > champion_p50,
        "the slow shadow is slower: {figures}"
    );
    assert!(figures["shadow_latency_p99"].as_f64().expect("p99") >= shadow_p50);
    TestGateway::stop_shared(gateway).await;
}

#[tokio::test]
async fn a_shadow_past_its_timeout_is_counted_and_the_champion_answers() {
    let repo = repository();
    let gateway = start(&repo, 1024, Duration::from_millis(1)).await;
    deploy_shadow(&gateway, "8", 1.0).await;
    for row in rows(10) {
        let (status, body) = gateway
            .post_json("/v2/models/iris/infer", &v2_body("float_input", &[row]))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["model_version"], "1");
    }
    let figures = wait_for(&gateway, "8", |f| {
        f["timed_out"].as_u64().unwrap_or(0) + f["compared_rows"].as_u64().unwrap_or(0) == 10
    })
    .await;
    assert!(count(&figures, "timed_out") > 0, "{figures}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_failing_shadow_is_counted_and_the_champion_answers() {
    let repo = repository();
    let gateway = start(&repo, 1024, Duration::from_secs(5)).await;
    deploy_shadow(&gateway, "9", 1.0).await;
    // The failing fixture refuses rows whose first feature is above 100; the champion does not.
    for i in 0..12 {
        let (status, body) = gateway
            .post_json(
                "/v2/models/iris/infer",
                &v2_body("float_input", &[vec![150.0 + f64::from(i), 3.0, 1.4, 0.2]]),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["model_version"], "1");
    }
    for row in rows(3) {
        let (status, _) = gateway
            .post_json("/v2/models/iris/infer", &v2_body("float_input", &[row]))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let figures = wait_for(&gateway, "9", |f| {
        f["failed"].as_u64().unwrap_or(0) + f["compared_rows"].as_u64().unwrap_or(0) == 15
    })
    .await;
    assert_eq!(count(&figures, "failed"), 12, "{figures}");
    assert_eq!(count(&figures, "compared_rows"), 3, "{figures}");
    gateway.stop().await;
}

#[tokio::test]
async fn fractions_sample_champion_traffic_and_direct_requests_are_not_mirrored() {
    let repo = repository();
    let gateway = start(&repo, 4096, Duration::from_secs(5)).await;
    deploy_shadow(&gateway, "2", 0.5).await;
    let sent = 400;
    for row in rows(sent) {
        let (status, _) = gateway
            .post_json("/v2/models/iris/infer", &v2_body("float_input", &[row]))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    for row in rows(20) {
        let (status, _) = gateway
            .post_json(
                "/v2/models/iris/versions/1/infer",
                &v2_body("float_input", &[row]),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let figures = comparison(&gateway, "2").await;
    let taken = count(&figures, "mirrored") + count(&figures, "dropped");
    // Binomial(400, 0.5): the mean is 200 and the standard deviation 10.
    assert!(
        (120..=280).contains(&taken),
        "about half of {sent} mirrored: {figures}"
    );
    deploy_shadow(&gateway, "2", 0.0).await;
    let before = taken;
    for row in rows(50) {
        gateway
            .post_json("/v2/models/iris/infer", &v2_body("float_input", &[row]))
            .await;
    }
    let figures = comparison(&gateway, "2").await;
    assert_eq!(
        count(&figures, "mirrored") + count(&figures, "dropped"),
        before,
        "fraction 0 mirrors nothing; figures kept"
    );
    gateway.stop().await;
}
