//! The MLflow Model Registry drives what vigil serves, against a real MLflow server
//! (`tests/common/mlflow.rs`) with versions logged by `mlflow.onnx.log_model`, one of them with
//! an external-data file: aliases followed under load with no failed request, shadows from the
//! `challenger` alias, signed webhooks (and forged ones refused), outages and deleted versions
//! that never change what serves, refused and forced admin changes, two gateways converging.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::TestGateway;
use common::mlflow::MlflowServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vigil::config::Config;
use vigil::mlflow::MlflowSettings;

const TOKEN: &str = "registry-secret";
const HOOK_SECRET: &str = "hook-secret";

/// A gateway following `uri`, polling every `poll`, serving the repository at `models` too.
async fn gateway(uri: &str, poll: Duration, models: &std::path::Path) -> TestGateway {
    TestGateway::start_with(registry_config(uri, poll, models)).await
}

/// Settings of a gateway following `uri`.
fn registry_config(uri: &str, poll: Duration, models: &std::path::Path) -> Config {
    let mut config = Config::for_models(models);
    config.admin_token = Some(TOKEN.into());
    config.mlflow = Some(MlflowSettings {
        uri: uri.to_string(),
        credentials: None,
        models: Vec::new(),
        aliases: MlflowSettings::default_aliases(),
        poll,
        webhook_secret: Some(HOOK_SECRET.into()),
    });
    config
}

/// The version that answers one inference of `model`, or the error status.
async fn answered_by(gateway: &TestGateway, model: &str) -> Result<String, StatusCode> {
    let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [6.1, 2.8, 4.7, 1.2]}]});
    let (status, answer) = gateway
        .post_json(&format!("/v2/models/{model}/infer"), &body)
        .await;
    if status == StatusCode::OK {
        Ok(answer["model_version"]
            .as_str()
            .expect("model_version")
            .to_string())
    } else {
        Err(status)
    }
}

/// Waits up to `limit` for `check`; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

async fn board(gateway: &TestGateway, model: &str) -> Value {
    let (status, body) = gateway
        .admin(Method::GET, &format!("/admin/models/{model}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn shadows(board: &Value) -> Vec<(String, f64)> {
    board["shadows"]
        .as_array()
        .expect("shadows")
        .iter()
        .map(|s| {
            (
                s["version"].as_str().expect("version").to_string(),
                s["fraction"].as_f64().expect("fraction"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_the_champion_alias_swaps_with_no_failed_request_and_replicas_converge() {
    let server = MlflowServer::start().await;
    let v1 = server.register("iris-a", "logreg", &[]).await;
    let v2 = server.register("iris-a", "mlp", &[]).await;
    assert_eq!((v1.version.as_str(), v2.version.as_str()), ("1", "2"));
    server.set_alias("iris-a", "champion", "1").await;
    let models = tempfile::tempdir().expect("empty repository");
    let poll = Duration::from_secs(3);
    let first = gateway(&server.uri(), poll, models.path()).await;
    let second = gateway(&server.uri(), poll, models.path()).await;
    for gw in [&first, &second] {
        within(Duration::from_secs(60), "version 1 served", || async {
            answered_by(gw, "iris-a").await == Ok("1".into())
        })
        .await;
    }

    // The board shows what the registry and the run say.
    let shown = board(&first, "iris-a").await;
    let version = &shown["versions"][0];
    assert_eq!(version["version"], "1");
    assert_eq!(version["task"], "classification");
    assert_eq!(version["run"], v1.run_name.as_str());
    assert_eq!(version["source"]["run_id"], v1.run_id.as_str());
    assert_eq!(version["source"]["run_name"], v1.run_name.as_str());
    assert_eq!(version["highlight"], "accuracy");
    assert!(
        version["metrics"]["validation"]["accuracy"]
            .as_f64()
            .is_some(),
        "{version}"
    );
    assert!(
        version["metrics"]["test"]["accuracy"].as_f64().is_some(),
        "{version}"
    );
    assert_eq!(version["params"]["C"], "1.0", "{version}");
    assert!(
        version["created_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("20"))
    );
    let files = version["source"]["files"].as_object().expect("files");
    for name in ["MLmodel", "model.onnx", "reference.csv"] {
        let hash = files.get(name).and_then(Value::as_str).unwrap_or_default();
        assert_eq!(hash.len(), 64, "sha256 of {name}: {files:?}");
    }
    assert_eq!(shown["registry"]["aliases"]["champion"], "1");
    assert_eq!(shown["registry"]["in_sync"], true);
    assert!(shown["registry"]["last_error"].is_null(), "{shown}");
    let (_, monitoring) = first
        .admin(Method::GET, "/admin/models/iris-a/monitoring", None)
        .await;
    assert!(
        monitoring["versions"][0]["outlier_rate"].is_f64(),
        "reference.csv turns outlier scoring (and drift) on: {monitoring}"
    );
    let audit = common::admin::audit_lines(first.state_dir().expect("state directory"));
    let entry = audit.last().expect("an entry").clone();
    assert_eq!(entry["actor"], "mlflow");
    assert_eq!(
        entry["evidence"]["versions"][0]["run_id"],
        v1.run_id.as_str()
    );
    assert_eq!(
        entry["evidence"]["versions"][0]["files"]["model.onnx"],
        files["model.onnx"]
    );

    // Four clients per gateway while the alias moves: no failed request, and v2 everywhere
    // within poll + 5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let first = Arc::new(first);
    let second = Arc::new(second);
    let mut clients = Vec::new();
    for gw in [&first, &second] {
        for _ in 0..4 {
            let gw = Arc::clone(gw);
            let stop = Arc::clone(&stop);
            clients.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer = answered_by(&gw, "iris-a").await;
                    seen.push((Instant::now(), answer));
                }
                seen
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.set_alias("iris-a", "champion", "2").await;
    let moved = Instant::now();
    let deadline = poll + Duration::from_secs(5);
    tokio::time::sleep(deadline + Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = 0;
    let mut last_v1 = Duration::ZERO;
    for client in clients {
        for (at, answer) in client.await.expect("client") {
            answers += 1;
            let version = answer.unwrap_or_else(|status| panic!("a request failed: {status}"));
            if at > moved + deadline {
                assert_eq!(
                    version,
                    "2",
                    "version {version} answered {:?} after the move",
                    at - moved
                );
            }
            if version == "1" {
                last_v1 = last_v1.max(at.saturating_duration_since(moved));
            }
        }
    }
    assert!(answers > 100, "only {answers} requests");
    println!(
        "{answers} requests, none failed; the last one answered by version 1 came {last_v1:?} after the move (poll {poll:?})"
    );
    for gw in [&first, &second] {
        let shown = board(gw, "iris-a").await;
        assert_eq!(shown["champion"], "2");
        assert_eq!(shown["history"], json!(["1"]));
        let files = shown["versions"][1]["source"]["files"]
            .as_object()
            .expect("files");
        assert!(
            files.keys().any(|f| f.ends_with(".data")),
            "version 2 keeps its weights in an external-data file: {files:?}"
        );
    }

    // challenger → 1 makes it a shadow at fraction 1.0; removing the alias removes it.
    server.set_alias("iris-a", "challenger", "1").await;
    within(deadline, "challenger shadowed", || async {
        shadows(&board(&first, "iris-a").await) == [("1".to_string(), 1.0)]
    })
    .await;
    server.delete_alias("iris-a", "challenger").await;
    within(deadline, "shadow removed", || async {
        shadows(&board(&first, "iris-a").await).is_empty()
    })
    .await;
    for gw in [&first, &second] {
        within(deadline, "replicas converge", || async {
            let shown = board(gw, "iris-a").await;
            shown["champion"] == "2" && shadows(&shown).is_empty()
        })
        .await;
    }
}

/// A delivery signed with `secret` as MLflow signs it.
fn signed(secret: &str, id: &str, timestamp: i64, body: &str) -> Vec<(String, String)> {
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("X-MLflow-Delivery-Id".into(), id.into()),
        ("X-MLflow-Timestamp".into(), timestamp.to_string()),
        (
            "X-MLflow-Signature".into(),
            vigil::signature::sign(secret.as_bytes(), id, timestamp, body.as_bytes()),
        ),
    ]
}

async fn deliver(gateway: &TestGateway, headers: &[(String, String)], body: &str) -> StatusCode {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    gateway
        .post_raw("/hooks/mlflow", &headers, body.as_bytes().to_vec())
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_trigger_a_sync_and_forged_ones_change_nothing() {
    let mut server = MlflowServer::start().await;
    server.register("iris-b", "logreg", &[]).await;
    server
        .register("iris-b", "logreg", &["--tag", "note=second"])
        .await;
    server.set_alias("iris-b", "champion", "1").await;
    let models = tempfile::tempdir().expect("empty repository");
    // A poll interval far beyond the test: only webhooks make it look again.
    let gw = gateway(&server.uri(), Duration::from_secs(600), models.path()).await;
    within(Duration::from_secs(60), "version 1 served", || async {
        answered_by(&gw, "iris-b").await == Ok("1".into())
    })
    .await;

    // The alias moves, but only forged deliveries arrive: nothing happens.
    server.set_alias("iris-b", "champion", "2").await;
    let body = r#"{"entity": "model_version_alias", "action": "created", "timestamp": "2026-11-30T00:00:00+00:00", "data": {"name": "iris-b", "alias": "champion", "version": "2"}}"#;
    let now = vigil::clock::now_ms() / 1000;
    assert_eq!(
        deliver(&gw, &signed("wrong-secret", "d-1", now, body), body).await,
        StatusCode::UNAUTHORIZED
    );
    let mut tampered = signed(HOOK_SECRET, "d-2", now, body);
    tampered[3].1 = signed(HOOK_SECRET, "d-2", now, "{}")[3].1.clone();
    assert_eq!(
        deliver(&gw, &tampered, body).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        deliver(&gw, &signed(HOOK_SECRET, "d-3", now - 301, body), body).await,
        StatusCode::BAD_REQUEST,
        "a timestamp over 5 minutes old"
    );
    assert_eq!(
        deliver(&gw, &signed(HOOK_SECRET, "d-4", now, body)[..3], body).await,
        StatusCode::BAD_REQUEST,
        "no signature"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        answered_by(&gw, "iris-b").await,
        Ok("1".into()),
        "no sync after forged deliveries"
    );

    // A genuine delivery starts a sync at once; the same delivery again is refused.
    let genuine = signed(HOOK_SECRET, "d-5", vigil::clock::now_ms() / 1000, body);
    assert_eq!(deliver(&gw, &genuine, body).await, StatusCode::ACCEPTED);
    let took = within(Duration::from_secs(2), "webhook-triggered swap", || async {
        answered_by(&gw, "iris-b").await == Ok("2".into())
    })
    .await;
    println!("self-signed delivery → version 2 served in {took:?}");
    server.set_alias("iris-b", "champion", "1").await;
    assert_eq!(
        deliver(&gw, &genuine, body).await,
        StatusCode::BAD_REQUEST,
        "replayed delivery id"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        answered_by(&gw, "iris-b").await,
        Ok("2".into()),
        "no sync after a replay"
    );

    // MLflow's own webhook: an alias move is served within 2 s.
    let url = gw.url("/hooks/mlflow");
    let hook = server
        .create_webhook(
            &url,
            HOOK_SECRET,
            &[
                ("MODEL_VERSION_ALIAS", "CREATED"),
                ("MODEL_VERSION_ALIAS", "DELETED"),
            ],
        )
        .await;
    let result = server.test_webhook(&hook).await;
    assert_eq!(result["success"], true, "MLflow's test delivery: {result}");
    within(
        Duration::from_secs(2),
        "sync after MLflow's test delivery",
        || async { answered_by(&gw, "iris-b").await == Ok("1".into()) },
    )
    .await;
    server.set_alias("iris-b", "champion", "2").await;
    let took = within(Duration::from_secs(2), "MLflow webhook swap", || async {
        answered_by(&gw, "iris-b").await == Ok("2".into())
    })
    .await;
    println!("MLflow webhook → version 2 served {took:?} after the alias moved");
    let text = gw.metrics_text().await;
    assert!(
        text.contains("vigil_registry_last_sync_timestamp_seconds{model=\"iris-b\"}"),
        "{text}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_or_a_deleted_version_never_changes_what_serves() {
    let mut server = MlflowServer::start().await;
    server.register("iris-c", "logreg", &[]).await;
    server.register("iris-c", "mlp", &[]).await;
    server.set_alias("iris-c", "champion", "1").await;
    let models = tempfile::tempdir().expect("empty repository");
    let state = tempfile::tempdir().expect("state directory");
    let poll = Duration::from_secs(2);
    let uri = server.uri();
    let config = || {
        let mut config = registry_config(&uri, poll, models.path());
        config.state = state.path().to_path_buf();
        config
    };
    let gw = TestGateway::start_in(config()).await;
    within(Duration::from_secs(60), "version 1 served", || async {
        answered_by(&gw, "iris-c").await == Ok("1".into())
    })
    .await;

    // The registry goes away: version 1 keeps serving, also after a restart (from the versions
    // downloaded before); the error is on the board and counted.
    server.stop();
    gw.stop().await;
    let gw = TestGateway::start_in(config()).await;
    assert_eq!(
        answered_by(&gw, "iris-c").await,
        Ok("1".into()),
        "served at once after a restart, with the registry down"
    );
    let staging = state.path().join("mlflow/staging");
    assert!(
        !staging.exists()
            || std::fs::read_dir(&staging)
                .expect("staging")
                .next()
                .is_none(),
        "no partial download is left behind"
    );
    within(Duration::from_secs(10), "outage reported", || async {
        board(&gw, "iris-c").await["registry"]["last_error"]["reason"] == "unreachable"
    })
    .await;
    for _ in 0..20 {
        assert_eq!(answered_by(&gw, "iris-c").await, Ok("1".into()));
    }
    let text = gw.metrics_text().await;
    assert!(
        text.contains("vigil_registry_sync_errors_total{model=\"iris-c\",reason=\"unreachable\"}"),
        "{text}"
    );

    // It comes back: the next move is followed.
    server.restart().await;
    server.set_alias("iris-c", "champion", "2").await;
    within(
        poll + Duration::from_secs(5) + Duration::from_secs(30),
        "move after the outage",
        || async { answered_by(&gw, "iris-c").await == Ok("2".into()) },
    )
    .await;
    within(Duration::from_secs(10), "error cleared", || async {
        board(&gw, "iris-c").await["registry"]["last_error"].is_null()
    })
    .await;

    // Operators are sent to the registry; with force the change is made and shown as drift.
    let (status, body) = gw
        .admin(
            Method::PUT,
            "/admin/models/iris-c/champion",
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("alias")),
        "{body}"
    );
    let (status, body) = gw
        .admin(Method::POST, "/admin/models/iris-c/rollback", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = gw
        .admin(
            Method::PUT,
            "/admin/models/iris-c/champion",
            Some(json!({"version": "1", "force": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(poll * 2).await;
    let shown = board(&gw, "iris-c").await;
    assert_eq!(
        shown["champion"], "1",
        "a forced change stays until the aliases move"
    );
    assert_eq!(shown["registry"]["drift"], true, "{shown}");
    assert_eq!(shown["registry"]["desired_champion"], "2");

    // The next alias move ends the drift: the aliases decide again.
    server.set_alias("iris-c", "champion", "1").await;
    within(
        poll + Duration::from_secs(5),
        "drift ended by an alias move",
        || async {
            let shown = board(&gw, "iris-c").await;
            shown["registry"]["in_sync"] == true && shown["registry"]["drift"] == false
        },
    )
    .await;
    server.set_alias("iris-c", "champion", "2").await;
    within(
        poll + Duration::from_secs(5),
        "alias followed again",
        || async { answered_by(&gw, "iris-c").await == Ok("2".into()) },
    )
    .await;

    // The aliased version is deleted (MLflow drops the alias silently): the champion stays,
    // the error says why.
    server.delete_version("iris-c", "2").await;
    within(
        poll + Duration::from_secs(5),
        "missing alias reported",
        || async {
            board(&gw, "iris-c").await["registry"]["last_error"]["reason"] == "missing_alias"
        },
    )
    .await;
    for _ in 0..20 {
        assert_eq!(answered_by(&gw, "iris-c").await, Ok("2".into()));
    }
}
