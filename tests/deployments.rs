//! Deployments against real gateways: hot swaps under load, durable state across restarts
//! (restored, refused when corrupt, champion fallback when a version disappears), and deploy
//! policies applied at start.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, copy_version, models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use vigil::config::Config;
use vigil::serving::DeployPolicy;

const TOKEN: &str = "deploy-secret";

fn config(models: &Path, state: &Path) -> Config {
    let mut config = Config::for_models(models);
    config.admin_token = Some(TOKEN.into());
    config.state = state.to_path_buf();
    config
}

fn iris_row() -> Value {
    v2_body("float_input", &[vec![6.1, 2.8, 4.7, 1.2]])
}

async fn champion(gateway: &TestGateway, model: &str) -> Value {
    let (status, report) = gateway
        .admin(Method::GET, &format!("/admin/models/{model}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

#[tokio::test]
async fn swap_under_load_fails_no_request() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = Arc::new(TestGateway::start_in(config(&models_dir(), state.path())).await);
    // The first swap is answered before the clients start: from then on only 1 and 2 serve.
    let (status, report) = gateway
        .admin(
            Method::PUT,
            "/admin/models/iris/champion",
            Some(json!({"version": "2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let gateway = Arc::clone(&gateway);
        let stop = Arc::clone(&stop);
        let served = Arc::clone(&served);
        clients.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let (status, body) = gateway
                    .post_json("/v2/models/iris/infer", &iris_row())
                    .await;
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "request failed during a swap: {body}"
                );
                let version = body["model_version"].as_str().expect("version").to_string();
                assert!(
                    version == "1" || version == "2",
                    "unexpected version {version}"
                );
                versions.push(version);
                served.fetch_add(1, Ordering::Relaxed);
            }
            versions
        }));
    }
    for swap in 0..200 {
        let version = if swap % 2 == 0 { "1" } else { "2" };
        let (status, report) = gateway
            .admin(
                Method::PUT,
                "/admin/models/iris/champion",
                Some(json!({"version": version})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["champion"], version);
    }
    // The last swap made "2" champion: every request sent from now on is answered by it.
    for _ in 0..20 {
        let (status, body) = gateway
            .post_json("/v2/models/iris/infer", &iris_row())
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["model_version"], "2");
    }
    stop.store(true, Ordering::Release);
    let mut seen = std::collections::BTreeSet::new();
    for client in clients {
        seen.extend(client.await.expect("client task"));
    }
    assert!(served.load(Ordering::Relaxed) > 0, "clients sent requests");
    assert!(
        seen.contains("1") && seen.contains("2"),
        "both versions served: {seen:?}"
    );
    let report = champion(&gateway, "iris").await;
    assert_eq!(
        report["history"].as_array().expect("history").len(),
        100,
        "history is bounded"
    );
    TestGateway::stop_shared(gateway).await;
}

#[tokio::test]
async fn deployments_survive_a_restart() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = TestGateway::start_in(config(&models_dir(), state.path())).await;
    for (method, path, body) in [
        (
            Method::PUT,
            "/admin/models/iris/champion",
            json!({"version": "2"}),
        ),
        (
            Method::PUT,
            "/admin/models/iris/shadows/1",
            json!({"fraction": 0.25}),
        ),
        (
            Method::PUT,
            "/admin/models/iris/threshold",
            json!({"threshold": 0.8}),
        ),
        (
            Method::PUT,
            "/admin/models/breast_cancer/policy",
            json!({"policy": "best_validation"}),
        ),
    ] {
        let (status, report) = gateway.admin(method, path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {report}");
    }
    let before = champion(&gateway, "iris").await;
    gateway.stop().await;

    let actions: Vec<String> = common::admin::audit_lines(state.path())
        .iter()
        .map(|entry| entry["action"].as_str().expect("action").to_string())
        .collect();
    for action in ["promote", "shadow", "threshold", "policy"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} audited: {actions:?}"
        );
    }

    let gateway = TestGateway::start_in(config(&models_dir(), state.path())).await;
    let after = champion(&gateway, "iris").await;
    assert_eq!(after["champion"], "2");
    assert_eq!(after["threshold"], 0.8);
    assert_eq!(after["history"], before["history"]);
    assert_eq!(after["shadows"][0]["version"], "1");
    assert_eq!(after["shadows"][0]["fraction"], 0.25);
    assert_eq!(
        champion(&gateway, "breast_cancer").await["policy"],
        "best_validation"
    );
    let (_, body) = gateway
        .post_json("/v2/models/iris/infer", &iris_row())
        .await;
    assert_eq!(body["model_version"], "2");
    common::assert_threshold_outputs(&body, 0.8);
    gateway.stop().await;
}

#[tokio::test]
async fn a_corrupt_state_file_refuses_start_up() {
    common::embedded_store_only();
    let state = tempfile::tempdir().expect("state dir");
    let file = common::state_file(state.path(), "iris");
    std::fs::create_dir_all(file.parent().expect("deployments dir")).expect("mkdir");
    let broken = "{\"format\": 2, \"model\": \"iris\", \"deployment\": ";
    std::fs::write(&file, broken).expect("write");
    let error = TestGateway::start_expecting_failure(config(&models_dir(), state.path())).await;
    let message = error.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("move it away"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        broken,
        "the file is never replaced silently"
    );

    // The single state file of earlier releases is checked as strictly before it is migrated.
    let legacy_state = tempfile::tempdir().expect("state dir");
    let legacy = legacy_state.path().join("deployments.json");
    std::fs::write(&legacy, "{\"format\": 1, \"models\": {\"iris\": ").expect("write");
    let error =
        TestGateway::start_expecting_failure(config(&models_dir(), legacy_state.path())).await;
    let message = error.to_string();
    assert!(message.contains("deployments.json"), "{message}");
    assert!(message.contains("move it away"), "{message}");
    assert!(legacy.exists(), "the file is never replaced silently");
}

#[tokio::test]
async fn a_missing_champion_falls_back_to_the_best_version_and_is_audited() {
    let repo = tempfile::tempdir().expect("repo");
    for version in ["1", "2", "3"] {
        copy_version(repo.path(), "iris", version, "");
    }
    let state = tempfile::tempdir().expect("state dir");
    let gateway = TestGateway::start_in(config(repo.path(), state.path())).await;
    let (status, _) = gateway
        .admin(
            Method::PUT,
            "/admin/models/iris/champion",
            Some(json!({"version": "2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let best = champion(&gateway, "iris").await["best_validation"]
        .as_str()
        .expect("best")
        .to_string();
    gateway.stop().await;

    std::fs::remove_dir_all(repo.path().join("iris/2")).expect("remove the champion");
    let gateway = TestGateway::start_in(config(repo.path(), state.path())).await;
    let report = champion(&gateway, "iris").await;
    let expected = if best == "2" { "3".to_string() } else { best };
    assert_eq!(report["champion"], expected.as_str(), "{report}");
    let warning = common::admin::audit_lines(state.path())
        .into_iter()
        .find(|entry| {
            entry["action"]
                .as_str()
                .is_some_and(|a| a.contains("champion 2 unavailable"))
        })
        .expect("a warning about the missing champion in the audit log");
    assert_eq!(warning["actor"], "startup");
    assert_eq!(warning["model"], "iris");
    gateway.stop().await;
}

#[tokio::test]
async fn deploy_policies_apply_to_versions_added_while_stopped() {
    let repo = tempfile::tempdir().expect("repo");
    copy_version(repo.path(), "iris", "1", "");
    let state = tempfile::tempdir().expect("state dir");
    let mut first = config(repo.path(), state.path());
    first.deploy_policy = DeployPolicy::Champion;
    let gateway = TestGateway::start_in(first.clone()).await;
    assert_eq!(champion(&gateway, "iris").await["champion"], "1");
    gateway.stop().await;

    // Added while stopped: the saved policy (champion) promotes it at the next start.
    copy_version(repo.path(), "iris", "2", "");
    let gateway = TestGateway::start_in(first.clone()).await;
    let report = champion(&gateway, "iris").await;
    assert_eq!(report["champion"], "2", "{report}");
    assert_eq!(report["history"], json!(["1"]));
    let (status, _) = gateway
        .admin(
            Method::PUT,
            "/admin/models/iris/policy",
            Some(json!({"policy": "shadow"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    gateway.stop().await;

    copy_version(repo.path(), "iris", "3", "");
    let gateway = TestGateway::start_in(first).await;
    let report = champion(&gateway, "iris").await;
    assert_eq!(report["champion"], "2");
    assert_eq!(report["shadows"][0]["version"], "3");
    assert_eq!(report["shadows"][0]["fraction"], 1.0);
    gateway.stop().await;
}

#[tokio::test]
async fn unversioned_requests_name_the_champion_and_versioned_ones_their_version() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = TestGateway::start_in(config(&models_dir(), state.path())).await;
    let (status, _) = gateway
        .admin(
            Method::PUT,
            "/admin/models/diabetes/champion",
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let row = v2_body("float_input", &[vec![0.0; 10]]);
    let (_, body) = gateway.post_json("/v2/models/diabetes/infer", &row).await;
    assert_eq!(body["model_version"], "1");
    let (_, body) = gateway
        .post_json("/v2/models/diabetes/versions/2/infer", &row)
        .await;
    assert_eq!(body["model_version"], "2");
    let (_, body) = gateway
        .post_json(
            "/v1/models/diabetes:predict",
            &json!({"instances": [vec![0.0; 10]]}),
        )
        .await;
    assert_eq!(body["model_version"], "1");
    let outputs: Vec<&str> = body["predictions"][0]
        .as_object()
        .expect("prediction")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(outputs, vec!["value"], "regressors get no confidence");
    gateway.stop().await;
}

/// Makes a file immutable (`chattr +i`) until dropped: even root cannot replace it, so a save
/// that must rename over it fails for real.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(path: &Path) -> Immutable {
        let output = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .expect("chattr runs (install it with `apt-get install e2fsprogs`)");
        assert!(
            output.status.success(),
            "chattr +i {} failed: {}; this test needs root (CAP_LINUX_IMMUTABLE) on a file system \
             with immutable files (ext4, xfs, btrfs)",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_change_that_cannot_be_saved_is_never_served() {
    common::embedded_store_only();
    let state = tempfile::tempdir().expect("state dir");
    let gateway = Arc::new(TestGateway::start_in(config(&models_dir(), state.path())).await);
    let before = champion(&gateway, "iris").await;
    let audit_before = std::fs::read(state.path().join("audit.jsonl")).expect("audit log");
    let file = common::state_file(state.path(), "iris");
    let immutable = Immutable::new(&file);

    // A reader polls the champion, through inference and the admin report, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let gateway = Arc::clone(&gateway);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            let mut polls = 0;
            while !stop.load(Ordering::Acquire) || polls < 10 {
                let (status, body) = gateway
                    .post_json("/v2/models/iris/infer", &iris_row())
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                seen.insert(body["model_version"].to_string());
                let report = champion(&gateway, "iris").await;
                seen.insert(
                    json!([report["champion"], report["threshold"], report["revision"]])
                        .to_string(),
                );
                polls += 1;
            }
            seen
        })
    };
    for (method, path, body) in [
        (
            Method::PUT,
            "/admin/models/iris/threshold",
            Some(json!({"threshold": 0.7})),
        ),
        (
            Method::PUT,
            "/admin/models/iris/champion",
            Some(json!({"version": "1"})),
        ),
        (
            Method::PUT,
            "/admin/models/iris/shadows/2",
            Some(json!({"fraction": 0.5})),
        ),
        (
            Method::PUT,
            "/admin/models/iris/policy",
            Some(json!({"policy": "champion"})),
        ),
    ] {
        let (status, body) = gateway.admin(method, path, body).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {body}");
        let error = body["error"].as_str().expect("error");
        assert!(
            error.contains(&file.display().to_string()),
            "{path}: the error names the file: {error}"
        );
        let now = champion(&gateway, "iris").await;
        for key in [
            "champion",
            "shadows",
            "threshold",
            "history",
            "policy",
            "revision",
        ] {
            assert_eq!(now[key], before[key], "{path} left `{key}` changed");
        }
    }
    stop.store(true, Ordering::Release);
    let seen = reader.await.expect("reader");
    let expected = std::collections::BTreeSet::from([
        json!("3").to_string(),
        json!([before["champion"], before["threshold"], before["revision"]]).to_string(),
    ]);
    assert_eq!(
        seen, expected,
        "readers only ever saw the deployment before the changes"
    );
    assert_eq!(
        std::fs::read(state.path().join("audit.jsonl")).expect("audit log"),
        audit_before,
        "a change that was not saved leaves no audit line"
    );

    drop(immutable);
    let (status, report) = gateway
        .admin(
            Method::PUT,
            "/admin/models/iris/threshold",
            Some(json!({"threshold": 0.7})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["threshold"], 0.7);
    assert_eq!(
        report["revision"],
        before["revision"].as_u64().expect("revision") + 1,
        "refused changes used no revision"
    );
    TestGateway::stop_shared(gateway).await;
}
