//! The admin API end to end on real gateways: authentication, the model and version reports,
//! promote and rollback, bad admin input (refused, with nothing changed), confidence thresholds,
//! version downloads, rescans under deploy policies, the OIP repository extension (load/unload),
//! the durable state and audit log, and the `vigil admin` command line.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{
    TestGateway, assert_threshold_outputs, copy_version, copy_version_as, expected_fixtures,
    model_outputs, models_dir, v2_body,
};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use vigil::config::Config;

const TOKEN: &str = "secret";

fn admin_config(models: &Path) -> Config {
    let mut config = Config::for_models(models);
    config.admin_token = Some(TOKEN.into());
    config
}

/// A gateway on `models` with the admin token set and a temporary state directory.
async fn admin_gateway(models: &Path) -> TestGateway {
    TestGateway::start_with(admin_config(models)).await
}

/// A gateway on `models` with the admin token set and the given state directory.
async fn admin_gateway_in(models: &Path, state: &Path) -> TestGateway {
    let mut config = admin_config(models);
    config.state = state.to_path_buf();
    TestGateway::start_in(config).await
}

/// An admin call with the right token and a raw body of the given content type.
async fn admin_raw(
    gateway: &TestGateway,
    method: Method,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (StatusCode, Value) {
    let response = gateway
        .client
        .request(method, gateway.url(path))
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("admin call sent");
    common::json_response(path, response).await
}

/// `GET /admin/models/{model}`, which must succeed.
async fn report(gateway: &TestGateway, model: &str) -> Value {
    let (status, report) = gateway
        .admin(Method::GET, &format!("/admin/models/{model}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

/// An admin call that must answer 200; returns the body.
async fn admin_ok(gateway: &TestGateway, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = gateway.admin(method.clone(), path, body).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {answer}");
    answer
}

/// The part of a model report that admin changes affect: champion, shadows and fractions,
/// threshold, policy, history, and every version's role and status.
fn deployment(report: &Value) -> Value {
    let shadows: Vec<Value> = report["shadows"]
        .as_array()
        .expect("shadows")
        .iter()
        .map(|s| json!([s["version"], s["fraction"]]))
        .collect();
    let versions: BTreeMap<String, Value> = report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().expect("version name").to_string(),
                json!([v["role"], v["status"]]),
            )
        })
        .collect();
    json!({
        "champion": report["champion"],
        "shadows": shadows,
        "threshold": report["threshold"],
        "policy": report["policy"],
        "history": report["history"],
        "versions": versions,
    })
}

/// The entry of `version` in a model report.
fn version_of<'a>(report: &'a Value, version: &str) -> &'a Value {
    report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("no version {version} in {report}"))
}

fn history(report: &Value) -> Vec<String> {
    report["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|v| v.as_str().expect("history entry").to_string())
        .collect()
}

/// The expected-output fixture of one version.
fn fixture(model: &str, version: &str) -> Value {
    expected_fixtures()
        .into_iter()
        .find(|f| f["model"] == model && f["version"] == version)
        .unwrap_or_else(|| panic!("no fixture for {model}/{version}"))
}

fn fixture_rows(fixture: &Value) -> Vec<Vec<f64>> {
    fixture["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect()
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Version directory names of `repo/model`, in the gateway's order (numbers numerically).
fn version_names(repo: &Path, model: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.join(model))
        .expect("model directory")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| {
        n.parse::<u64>()
            .expect("numeric version names in these repositories")
    });
    names
}

fn model_names(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo)
        .expect("repository")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn model_toml(repo: &Path, model: &str, version: &str) -> toml::Table {
    let path = repo.join(model).join(version).join("model.toml");
    let text = std::fs::read_to_string(&path).expect("model.toml readable");
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(highlight metric, validation score)` from a version's `model.toml`.
fn validation_score(repo: &Path, model: &str, version: &str) -> (String, f64) {
    let meta = model_toml(repo, model, version);
    let metric = meta["highlight"].as_str().expect("highlight").to_string();
    let score = meta["metrics"]["validation"][metric.as_str()]
        .as_float()
        .expect("validation score");
    (metric, score)
}

fn higher_is_better(metric: &str) -> bool {
    let metric = metric.to_ascii_lowercase();
    !["mse", "mae", "rmse", "loss", "error", "mape"]
        .iter()
        .any(|worse| metric.contains(worse))
}

/// The version with the best validation score, computed from the `model.toml` files (the first
/// one wins a tie).
fn best_by_validation(repo: &Path, model: &str) -> String {
    let mut best: Option<(String, f64)> = None;
    for version in version_names(repo, model) {
        let (metric, score) = validation_score(repo, model, &version);
        let better = match &best {
            None => true,
            Some((_, incumbent)) if higher_is_better(&metric) => score > *incumbent,
            Some((_, incumbent)) => score < *incumbent,
        };
        if better {
            best = Some((version, score));
        }
    }
    best.expect("at least one version").0
}

/// Rows of the iris champion fixture: a mix of confident and less confident predictions.
fn iris_rows() -> Vec<Vec<f64>> {
    fixture_rows(&fixture("iris", "3"))
}

#[tokio::test]
async fn admin_api_is_disabled_without_a_token_and_guarded_with_one() {
    let open = TestGateway::start(&models_dir()).await;
    for (method, path) in [
        (Method::GET, "/admin/models"),
        (Method::POST, "/v2/repository/models/iris/load"),
        (Method::PUT, "/admin/models/iris/champion"),
    ] {
        // Even a bearer token does not open a gateway that has none configured.
        for token in [None, Some(TOKEN)] {
            let mut request = open.client.request(method.clone(), open.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
            let body: Value = response.json().await.expect("JSON error");
            assert!(
                body["error"]
                    .as_str()
                    .expect("error text")
                    .starts_with("admin API disabled"),
                "{body}"
            );
        }
    }
    let (status, _) = open
        .post_json(
            "/v2/models/iris/infer",
            &v2_body("float_input", &iris_rows()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    open.stop().await;

    let gateway = admin_gateway(&models_dir()).await;
    for (method, path) in [
        (Method::GET, "/admin/models"),
        (Method::POST, "/v2/repository/models/iris/load"),
        (Method::POST, "/admin/models/iris/rollback"),
    ] {
        let cases: [(&str, Option<String>, &str); 4] = [
            ("missing header", None, "Authorization"),
            (
                "wrong token",
                Some(format!("Bearer {TOKEN}x")),
                "wrong admin token",
            ),
            (
                "token prefix",
                Some(format!("Bearer {}", &TOKEN[..3])),
                "wrong admin token",
            ),
            (
                "other scheme",
                Some(format!("Basic {TOKEN}")),
                "Authorization",
            ),
        ];
        for (case, authorization, fragment) in cases {
            let mut request = gateway.client.request(method.clone(), gateway.url(path));
            if let Some(authorization) = authorization {
                request = request.header(header::AUTHORIZATION, authorization);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{case}: {method} {path}"
            );
            assert_eq!(
                response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().expect("ascii")),
                Some("Bearer"),
                "{case}"
            );
            let body: Value = response.json().await.expect("JSON error");
            assert!(
                body["error"].as_str().expect("error").contains(fragment),
                "{case}: {body}"
            );
        }
    }
    // Nothing was rolled back by the refused calls.
    let iris = report(&gateway, "iris").await;
    assert_eq!(iris["champion"], "3");

    let (status, list) = gateway.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list["models"].is_array());
    let (status, _) = gateway
        .admin(Method::POST, "/v2/repository/models/iris/load", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Inference and the public routes stay open.
    let (status, body) = gateway
        .post_json(
            "/v2/models/iris/infer",
            &v2_body("float_input", &iris_rows()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = gateway
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = gateway.get_json("/v2/models/iris").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gateway.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    gateway.stop().await;
}

/// Checks one model report against the repository it was loaded from (fresh gateway: highest
/// version is champion, no shadows, manual policy).
async fn check_fresh_report(gateway: &TestGateway, repo: &Path, report: &Value) {
    let model = report["name"].as_str().expect("name");
    let names = version_names(repo, model);
    let champion = names.last().expect("versions").clone();
    assert_eq!(report["champion"], champion.as_str(), "{model}");
    assert_eq!(report["shadows"], json!([]), "{model}");
    assert_eq!(report["history"], json!([]), "{model}");
    assert_eq!(report["policy"], "manual", "{model}");
    let champion_threshold = model_toml(repo, model, &champion)
        .get("threshold")
        .and_then(toml::Value::as_float)
        .unwrap_or(0.0);
    assert_eq!(report["threshold"].as_f64(), Some(champion_threshold));
    assert_eq!(
        report["best_validation"],
        best_by_validation(repo, model).as_str(),
        "{model}"
    );
    let listed: Vec<&str> = report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_str().expect("version"))
        .collect();
    assert_eq!(listed, names, "{model}");

    for name in &names {
        let entry = version_of(report, name);
        let context = format!("{model}/{name}");
        let meta = model_toml(repo, model, name);
        let text = |key: &str| meta.get(key).and_then(toml::Value::as_str);
        assert_eq!(entry["status"], "ready", "{context}");
        assert!(entry.get("reason").is_none(), "{context}");
        assert_eq!(
            entry["role"],
            if *name == champion {
                "champion"
            } else {
                "idle"
            },
            "{context}"
        );
        assert_eq!(entry["task"].as_str(), text("task"), "{context}");
        assert_eq!(
            entry["created_at"].as_str(),
            text("created_at"),
            "{context}"
        );
        assert!(entry["created_at"].is_string(), "{context}");
        assert_eq!(entry["run"].as_str(), text("run"), "{context}");
        assert!(entry["run"].is_string(), "{context}");
        assert_eq!(
            entry["description"].as_str(),
            text("description"),
            "{context}"
        );
        assert_eq!(entry["highlight"].as_str(), text("highlight"), "{context}");

        let params: BTreeMap<String, Value> = meta
            .get("params")
            .and_then(toml::Value::as_table)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.clone(), json!(v.as_str().expect("string param"))))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !params.is_empty(),
            "{context}: the bundled versions have params"
        );
        assert_eq!(entry["params"], json!(params), "{context}");

        for split in ["validation", "test"] {
            let expected = meta["metrics"][split].as_table().expect("metrics table");
            let reported = entry["metrics"][split].as_object().expect("metrics object");
            assert_eq!(
                reported.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "{context} {split}"
            );
            for (metric, value) in expected {
                let value = value.as_float().expect("float metric");
                let got = reported[metric].as_f64().expect("number");
                assert!((got - value).abs() < 1e-12, "{context} {split}.{metric}");
            }
        }
        let (_, score) = validation_score(repo, model, name);
        assert_eq!(entry["highlight_score"].as_f64(), Some(score), "{context}");

        let onnx = repo.join(model).join(name).join("model.onnx");
        let size = std::fs::metadata(&onnx).expect("model.onnx").len();
        assert!(size > 0);
        assert_eq!(entry["file_size"].as_u64(), Some(size), "{context}");
        assert!(entry["load_time_ms"].as_f64().expect("load time") > 0.0);
        assert_eq!(entry["accepted_rows"], 0, "{context}");
        assert_eq!(entry["rejected_rows"], 0, "{context}");

        // Inputs and outputs are the ones the v2 metadata route serves.
        let (status, metadata) = gateway
            .get_json(&format!("/v2/models/{model}/versions/{name}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{metadata}");
        for side in ["inputs", "outputs"] {
            let reported = entry[side].as_array().expect(side);
            let served = metadata[side].as_array().expect(side);
            assert!(!reported.is_empty(), "{context} {side}");
            assert_eq!(reported.len(), served.len(), "{context} {side}");
            for (r, s) in reported.iter().zip(served) {
                for key in ["name", "datatype", "shape"] {
                    assert_eq!(r[key], s[key], "{context} {side} {key}");
                }
            }
        }
        let outputs: Vec<&str> = entry["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(|o| o["name"].as_str().expect("output name"))
            .collect();
        let classifier = text("task") == Some("classification");
        assert_eq!(
            outputs.contains(&"confidence") && outputs.contains(&"accepted"),
            classifier,
            "{context}: {outputs:?}"
        );
    }
}

#[tokio::test]
async fn models_report_every_version_with_its_metadata() {
    let repo = models_dir();
    let gateway = admin_gateway(&repo).await;
    let (status, list) = gateway.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let models = list["models"].as_array().expect("models");
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, model_names(&repo));
    assert_eq!(names, ["breast_cancer", "diabetes", "iris"]);
    for model in models {
        check_fresh_report(&gateway, &repo, model).await;
    }

    // The iris best by validation, computed from the toml files, and it is not simply the
    // highest version's metadata copied around.
    let iris_best = best_by_validation(&repo, "iris");
    let listed_iris = models
        .iter()
        .find(|m| m["name"] == "iris")
        .expect("iris listed");
    assert_eq!(listed_iris["best_validation"], iris_best.as_str());

    // One model: the same report as in the list.
    let one = report(&gateway, "iris").await;
    assert_eq!(&one, listed_iris);

    for path in [
        "/admin/models/nope",
        "/admin/models/nope/versions/1/download",
    ] {
        let (status, body) = gateway.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(
            body["error"].as_str().expect("error").contains("nope"),
            "{body}"
        );
    }
    gateway.stop().await;
}

/// Unversioned v2 and v1 calls on iris answer with this version.
async fn assert_champion_serves(gateway: &TestGateway, version: &str) {
    let (status, body) = gateway
        .post_json(
            "/v2/models/iris/infer",
            &v2_body("float_input", &iris_rows()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], version, "v2: {body}");
    let expected = fixture("iris", version);
    let labels = model_outputs(&body)
        .into_iter()
        .find(|o| o["name"] == "label")
        .expect("label output");
    assert_eq!(labels["data"], expected["outputs"]["label"]["data"]);
    let (status, body) = gateway
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], version, "v1: {body}");
}

#[tokio::test]
async fn promote_and_rollback_round_trip() {
    let gateway = admin_gateway(&models_dir()).await;
    let before = report(&gateway, "iris").await;
    assert_eq!(before["champion"], "3");
    assert_eq!(history(&before), Vec::<String>::new());
    assert_champion_serves(&gateway, "3").await;

    let promoted = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    assert_eq!(promoted["champion"], "1");
    assert_eq!(history(&promoted).last().map(String::as_str), Some("3"));
    assert_eq!(version_of(&promoted, "1")["role"], "champion");
    assert_eq!(version_of(&promoted, "3")["role"], "idle");
    assert_eq!(
        deployment(&report(&gateway, "iris").await),
        deployment(&promoted)
    );
    assert_champion_serves(&gateway, "1").await;

    // Promoting the champion again changes nothing (no self-entry in the history).
    let again = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    assert_eq!(deployment(&again), deployment(&promoted));

    // Rollback pops the history: 3 serves again and the history is empty, so a second rollback
    // has nothing to go back to (it is an undo stack, not a toggle between the last two).
    let rolled = admin_ok(&gateway, Method::POST, "/admin/models/iris/rollback", None).await;
    assert_eq!(rolled["champion"], "3");
    assert_eq!(history(&rolled), Vec::<String>::new());
    assert_champion_serves(&gateway, "3").await;
    let (status, body) = gateway
        .admin(Method::POST, "/admin/models/iris/rollback", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("no previous champion"),
        "{body}"
    );
    assert_eq!(
        deployment(&report(&gateway, "iris").await),
        deployment(&rolled)
    );

    // A longer chain unwinds in reverse order.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    let chained = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "2"})),
    )
    .await;
    assert_eq!(chained["champion"], "2");
    assert_eq!(history(&chained), ["3", "1"]);
    let first = admin_ok(&gateway, Method::POST, "/admin/models/iris/rollback", None).await;
    assert_eq!(first["champion"], "1");
    assert_eq!(history(&first), ["3"]);
    let second = admin_ok(&gateway, Method::POST, "/admin/models/iris/rollback", None).await;
    assert_eq!(second["champion"], "3");
    assert_eq!(history(&second), Vec::<String>::new());
    let (status, _) = gateway
        .admin(Method::POST, "/admin/models/iris/rollback", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_champion_serves(&gateway, "3").await;

    // Promoting a shadow makes it champion and no longer a shadow.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/shadows/2",
        Some(json!({"fraction": 0.5})),
    )
    .await;
    let shadow_promoted = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "2"})),
    )
    .await;
    assert_eq!(shadow_promoted["champion"], "2");
    assert_eq!(shadow_promoted["shadows"], json!([]));
    assert_eq!(version_of(&shadow_promoted, "2")["role"], "champion");
    gateway.stop().await;
}

fn audit_lines(state: &Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("audit.jsonl"))
        .expect("audit log")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

/// One admin request of the bad-input table.
struct Call {
    method: Method,
    path: String,
    content_type: &'static str,
    body: String,
}

fn put(path: &str, body: Value) -> Call {
    Call {
        method: Method::PUT,
        path: path.to_string(),
        content_type: JSON,
        body: body.to_string(),
    }
}

fn post(path: &str, body: Value) -> Call {
    Call {
        method: Method::POST,
        ..put(path, body)
    }
}

fn empty(method: Method, path: &str) -> Call {
    Call {
        method,
        body: String::new(),
        ..put(path, Value::Null)
    }
}

fn raw(path: &str, content_type: &'static str, body: &str) -> Call {
    Call {
        content_type,
        body: body.to_string(),
        ..put(path, Value::Null)
    }
}

#[tokio::test]
async fn bad_admin_input_is_refused_and_changes_nothing() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = admin_gateway_in(&models_dir(), state.path()).await;
    // A deployment with something in every field, so that any stray change shows.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/shadows/2",
        Some(json!({"fraction": 0.5})),
    )
    .await;
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/threshold",
        Some(json!({"threshold": 0.3})),
    )
    .await;
    let baseline = deployment(&report(&gateway, "iris").await);
    let others: Vec<Value> = {
        let mut reports = Vec::new();
        for model in ["breast_cancer", "diabetes"] {
            reports.push(deployment(&report(&gateway, model).await));
        }
        reports
    };
    let audit_before = audit_lines(state.path()).len();
    let state_before = std::fs::read(state.path().join("deployments.json")).expect("state file");

    let champion = "/admin/models/iris/champion";
    let shadow = |version: &str| format!("/admin/models/iris/shadows/{version}");
    let threshold = "/admin/models/iris/threshold";
    let unload = "/v2/repository/models/iris/unload";
    let (bad, conflict, missing) = (
        StatusCode::BAD_REQUEST,
        StatusCode::CONFLICT,
        StatusCode::NOT_FOUND,
    );
    let unsupported = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    let cases = vec![
        (
            "unknown version",
            put(champion, json!({"version": "9"})),
            missing,
            "version `9`",
        ),
        (
            "unknown model",
            put("/admin/models/nope/champion", json!({"version": "1"})),
            missing,
            "nope",
        ),
        (
            "negative fraction",
            put(&shadow("1"), json!({"fraction": -0.1})),
            bad,
            "fraction",
        ),
        (
            "fraction above one",
            put(&shadow("1"), json!({"fraction": 1.5})),
            bad,
            "fraction",
        ),
        (
            "shadow, bad fraction",
            put(&shadow("2"), json!({"fraction": 1.5})),
            bad,
            "fraction",
        ),
        (
            "fraction as text",
            put(&shadow("1"), json!({"fraction": "0.5"})),
            bad,
            "fraction",
        ),
        (
            "threshold above one",
            put(threshold, json!({"threshold": 2})),
            bad,
            "threshold",
        ),
        (
            "negative threshold",
            put(threshold, json!({"threshold": -0.5})),
            bad,
            "threshold",
        ),
        (
            "malformed JSON",
            raw(champion, JSON, "{\"version\": "),
            bad,
            "malformed JSON",
        ),
        ("empty body", raw(champion, JSON, ""), bad, "malformed JSON"),
        (
            "unknown field",
            put(champion, json!({"versoin": "1"})),
            bad,
            "versoin",
        ),
        (
            "extra field",
            put(champion, json!({"version": "1", "force": true})),
            bad,
            "force",
        ),
        ("missing field", put(champion, json!({})), bad, "version"),
        (
            "version as number",
            put(champion, json!({"version": 1})),
            bad,
            "version",
        ),
        (
            "unknown policy",
            put("/admin/models/iris/policy", json!({"policy": "x"})),
            bad,
            "`x`",
        ),
        (
            "shadow the champion",
            put(&shadow("3"), json!({"fraction": 0.5})),
            conflict,
            "champion",
        ),
        (
            "shadow unknown version",
            put(&shadow("9"), json!({"fraction": 0.5})),
            missing,
            "`9`",
        ),
        (
            "remove a non-shadow",
            empty(Method::DELETE, &shadow("1")),
            conflict,
            "not a shadow",
        ),
        (
            "rollback, no history",
            empty(Method::POST, "/admin/models/iris/rollback"),
            conflict,
            "no previous champion",
        ),
        (
            "unload the champion",
            post(unload, json!({"parameters": {"version": "3"}})),
            conflict,
            "champion",
        ),
        (
            "unload a shadow",
            post(unload, json!({"parameters": {"version": "2"}})),
            conflict,
            "shadow",
        ),
        (
            "text/plain",
            raw(champion, "text/plain", "{\"version\": \"1\"}"),
            unsupported,
            "text/plain",
        ),
        (
            "form",
            raw(threshold, FORM, "threshold=0.5"),
            unsupported,
            FORM,
        ),
    ];
    for (name, call, status, fragment) in cases {
        let (got, answer) = admin_raw(
            &gateway,
            call.method,
            &call.path,
            call.content_type,
            call.body.as_bytes(),
        )
        .await;
        assert_eq!(got, status, "{name}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error text in {answer}"));
        assert!(
            error.contains(fragment),
            "{name}: `{fragment}` not in {error}"
        );
        assert_eq!(
            deployment(&report(&gateway, "iris").await),
            baseline,
            "{name} changed the deployment"
        );
    }
    for (model, expected) in ["breast_cancer", "diabetes"].into_iter().zip(&others) {
        assert_eq!(&deployment(&report(&gateway, model).await), expected);
    }
    assert_eq!(
        audit_lines(state.path()).len(),
        audit_before,
        "refused changes are not audited"
    );
    assert_eq!(
        std::fs::read(state.path().join("deployments.json")).expect("state file"),
        state_before,
        "refused changes leave the state file alone"
    );
    // The gateway still serves and still takes good changes.
    assert_champion_serves(&gateway, "3").await;
    let fixed = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/shadows/2",
        Some(json!({"fraction": 1.0})),
    )
    .await;
    assert_eq!(fixed["shadows"][0]["fraction"], 1.0);
    gateway.stop().await;
}

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

#[tokio::test]
async fn download_returns_the_version_directory_as_tar_gz() {
    let gateway = admin_gateway(&models_dir()).await;
    let response = gateway
        .client
        .get(gateway.url("/admin/models/iris/versions/2/download"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/gzip");
    let disposition = response.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(disposition.contains("iris-2.tar.gz"), "{disposition}");
    let archive = response.bytes().await.expect("body");

    let mut files: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
    for entry in tar.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("entry path").into_owned();
        assert!(
            path.starts_with("iris-2"),
            "everything under iris-2/: {}",
            path.display()
        );
        if entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("entry bytes");
            files.insert(path, bytes);
        }
    }
    let source = models_dir().join("iris/2");
    let mut expected: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for entry in std::fs::read_dir(&source).expect("version directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name").to_owned();
        expected.insert(
            Path::new("iris-2").join(name),
            std::fs::read(&path).expect("file"),
        );
    }
    for required in ["model.onnx", "model.toml", "reference.csv"] {
        assert!(
            files.contains_key(&Path::new("iris-2").join(required)),
            "{required} in {:?}",
            files.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &expected {
        assert!(files[path] == *bytes, "{} differs", path.display());
    }

    let (status, body) = gateway
        .admin(Method::GET, "/admin/models/iris/versions/9/download", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let response = gateway
        .client
        .get(gateway.url("/admin/models/iris/versions/2/download"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    gateway.stop().await;
}

/// `POST /admin/repository/rescan`, returning `found`.
async fn rescan(gateway: &TestGateway) -> Vec<Value> {
    let answer = admin_ok(gateway, Method::POST, "/admin/repository/rescan", None).await;
    answer["found"].as_array().expect("found").clone()
}

#[tokio::test]
async fn rescan_applies_the_deploy_policy_and_finds_new_models() {
    let source = models_dir();
    let repo = tempfile::tempdir().expect("repository");
    copy_version(repo.path(), "iris", "1", "");
    copy_version(repo.path(), "iris", "2", "");
    let gateway = admin_gateway(repo.path()).await;
    let start = report(&gateway, "iris").await;
    assert_eq!(start["champion"], "2");
    assert_eq!(rescan(&gateway).await, Vec::<Value>::new());

    // Policy shadow: a new version mirrors all of the champion's traffic.
    let set = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/policy",
        Some(json!({"policy": "shadow"})),
    )
    .await;
    assert_eq!(set["policy"], "shadow");
    copy_version(repo.path(), "iris", "3", "");
    let found = rescan(&gateway).await;
    assert_eq!(
        found,
        vec![json!({"model": "iris", "version": "3", "status": "ready", "deployed_as": "shadow"})]
    );
    let shadowed = report(&gateway, "iris").await;
    assert_eq!(shadowed["champion"], "2");
    assert_eq!(shadowed["shadows"].as_array().expect("shadows").len(), 1);
    assert_eq!(shadowed["shadows"][0]["version"], "3");
    assert_eq!(shadowed["shadows"][0]["fraction"], 1.0);
    assert_eq!(version_of(&shadowed, "3")["role"], "shadow");
    assert_eq!(version_of(&shadowed, "3")["status"], "ready");
    // Rescanning again finds nothing new and changes nothing.
    assert_eq!(rescan(&gateway).await, Vec::<Value>::new());
    assert_eq!(
        deployment(&report(&gateway, "iris").await),
        deployment(&shadowed)
    );

    // Policy best_validation: a new version becomes champion only if it beats the champion's
    // validation score. Which bundled versions are better or worse is read from the toml files.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/policy",
        Some(json!({"policy": "best_validation"})),
    )
    .await;
    let (metric, champion_score) = validation_score(repo.path(), "iris", "2");
    assert!(higher_is_better(&metric));
    let scores: Vec<(String, f64)> = version_names(&source, "iris")
        .into_iter()
        .map(|v| {
            let (_, score) = validation_score(&source, "iris", &v);
            (v, score)
        })
        .collect();
    let (better, better_score) = scores
        .iter()
        .filter(|(_, s)| *s > champion_score)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .cloned()
        .expect("a bundled iris version beats version 2 on validation");
    copy_version_as(&source, "iris", &better, repo.path(), "iris", "4", "");
    let found = rescan(&gateway).await;
    assert_eq!(
        found,
        vec![
            json!({"model": "iris", "version": "4", "status": "ready", "deployed_as": "champion"})
        ],
        "iris/{better} ({metric} {better_score}) beats 2 ({champion_score})"
    );
    let promoted = report(&gateway, "iris").await;
    assert_eq!(promoted["champion"], "4");
    assert_eq!(history(&promoted).last().map(String::as_str), Some("2"));
    assert_eq!(promoted["shadows"][0]["version"], "3", "the shadow stays");
    assert_champion_like(&gateway, "4", &better).await;

    let (worse, worse_score) = scores
        .iter()
        .find(|(_, s)| *s < better_score)
        .cloned()
        .expect("a bundled iris version is worse than the new champion");
    copy_version_as(&source, "iris", &worse, repo.path(), "iris", "5", "");
    let found = rescan(&gateway).await;
    assert_eq!(
        found,
        vec![json!({"model": "iris", "version": "5", "status": "ready", "deployed_as": "idle"})],
        "iris/{worse} ({worse_score}) does not beat the champion ({better_score})"
    );
    let kept = report(&gateway, "iris").await;
    assert_eq!(kept["champion"], "4");
    assert_eq!(version_of(&kept, "5")["role"], "idle");
    assert_eq!(version_of(&kept, "5")["status"], "ready");
    assert_eq!(history(&kept), history(&promoted));
    // Idle but servable by name.
    let (status, body) = gateway
        .post_json(
            "/v2/models/iris/versions/5/infer",
            &v2_body("float_input", &iris_rows()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A new model directory is found, loaded and served.
    copy_version_as(
        &source,
        "diabetes",
        "1",
        repo.path(),
        "diabetes_copy",
        "1",
        "",
    );
    let found = rescan(&gateway).await;
    assert_eq!(
        found,
        vec![
            json!({"model": "diabetes_copy", "version": "1", "status": "ready", "deployed_as": "champion"})
        ]
    );
    let copy = report(&gateway, "diabetes_copy").await;
    assert_eq!(copy["champion"], "1");
    let (status, list) = gateway.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["diabetes_copy", "iris"]);
    let expected = fixture("diabetes", "1");
    let (status, body) = gateway
        .post_json(
            "/v2/models/diabetes_copy/infer",
            &v2_body("float_input", &fixture_rows(&expected)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_name"], "diabetes_copy");
    assert_eq!(body["model_version"], "1");
    let outputs = model_outputs(&body);
    assert_eq!(outputs.len(), 1, "{body}");
    let got = numbers(&outputs[0]["data"]);
    let want = numbers(&expected["outputs"]["variable"]["data"]);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-3 * w.abs().max(1.0), "{g} vs {w}");
    }
    assert_eq!(rescan(&gateway).await, Vec::<Value>::new());
    gateway.stop().await;
}

/// The unversioned iris route answers as `version`, with the labels of bundled version `source`.
async fn assert_champion_like(gateway: &TestGateway, version: &str, source: &str) {
    let (status, body) = gateway
        .post_json(
            "/v2/models/iris/infer",
            &v2_body("float_input", &iris_rows()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], version);
    let labels = model_outputs(&body)
        .into_iter()
        .find(|o| o["name"] == "label")
        .expect("label");
    assert_eq!(
        labels["data"],
        fixture("iris", source)["outputs"]["label"]["data"]
    );
}

/// The repository index entry of `iris/version`.
async fn index_entry(gateway: &TestGateway, version: &str) -> Value {
    let (status, index) = gateway.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{index}");
    index
        .as_array()
        .expect("index")
        .iter()
        .find(|e| e["name"] == "iris" && e["version"] == version)
        .cloned()
        .unwrap_or_else(|| panic!("iris/{version} not in {index}"))
}

#[tokio::test]
async fn repository_extension_loads_and_unloads_versions() {
    let gateway = admin_gateway(&models_dir()).await;
    let unload = "/v2/repository/models/iris/unload";
    let load = "/v2/repository/models/iris/load";
    let baseline = deployment(&report(&gateway, "iris").await);

    let (status, body) = gateway.admin(Method::POST, unload, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("champion"),
        "{body}"
    );
    let (status, body) = gateway
        .admin(
            Method::POST,
            unload,
            Some(json!({"parameters": {"version": "3"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = gateway
        .admin(
            Method::POST,
            unload,
            Some(json!({"parameters": {"version": "9"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(deployment(&report(&gateway, "iris").await), baseline);

    let unloaded = admin_ok(
        &gateway,
        Method::POST,
        unload,
        Some(json!({"parameters": {"version": "2"}})),
    )
    .await;
    assert_eq!(version_of(&unloaded, "2")["status"], "unloaded");
    assert_eq!(version_of(&unloaded, "2")["role"], "idle");
    assert_eq!(unloaded["champion"], "3");
    let entry = index_entry(&gateway, "2").await;
    assert_eq!(entry["state"], "UNAVAILABLE", "{entry}");
    assert_eq!(entry["reason"], "unloaded", "{entry}");
    let (_, ready_only) = gateway
        .post_json("/v2/repository/index", &json!({"ready": true}))
        .await;
    assert!(
        !ready_only
            .as_array()
            .expect("index")
            .iter()
            .any(|e| e["name"] == "iris" && e["version"] == "2"),
        "{ready_only}"
    );
    let rows = v2_body("float_input", &iris_rows());
    let (status, body) = gateway
        .post_json("/v2/models/iris/versions/2/infer", &rows)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("unloaded"),
        "{body}"
    );
    let (status, _) = gateway.get_json("/v2/models/iris/versions/2/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The champion keeps serving.
    assert_champion_serves(&gateway, "3").await;

    let loaded = admin_ok(
        &gateway,
        Method::POST,
        load,
        Some(json!({"parameters": {"version": "2"}})),
    )
    .await;
    assert_eq!(version_of(&loaded, "2")["status"], "ready");
    let entry = index_entry(&gateway, "2").await;
    assert_eq!(entry["state"], "READY", "{entry}");
    assert!(entry.get("reason").is_none(), "{entry}");
    let (status, body) = gateway
        .post_json("/v2/models/iris/versions/2/infer", &rows)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], "2");
    let labels = model_outputs(&body)
        .into_iter()
        .find(|o| o["name"] == "label")
        .expect("label");
    assert_eq!(
        labels["data"],
        fixture("iris", "2")["outputs"]["label"]["data"]
    );

    // Unload, then load with no version named: every version that is not ready is retried.
    admin_ok(
        &gateway,
        Method::POST,
        unload,
        Some(json!({"parameters": {"version": "1"}})),
    )
    .await;
    let all = admin_ok(&gateway, Method::POST, load, None).await;
    for version in ["1", "2", "3"] {
        assert_eq!(version_of(&all, version)["status"], "ready", "{version}");
    }
    assert_eq!(deployment(&all), baseline);
    let (status, body) = gateway
        .admin(
            Method::POST,
            load,
            Some(json!({"parameters": {"version": "9"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    gateway.stop().await;
}

#[tokio::test]
async fn changes_are_saved_and_audited() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = admin_gateway_in(&models_dir(), state.path()).await;
    let startup = audit_lines(state.path());
    assert!(
        startup.iter().all(|e| e["actor"] == "startup"),
        "{startup:?}"
    );

    let changes = [
        (
            Method::PUT,
            "/admin/models/iris/champion",
            Some(json!({"version": "1"})),
            "promote",
        ),
        (
            Method::PUT,
            "/admin/models/iris/threshold",
            Some(json!({"threshold": 0.5})),
            "threshold",
        ),
        (
            Method::PUT,
            "/admin/models/iris/shadows/2",
            Some(json!({"fraction": 0.25})),
            "shadow",
        ),
        (
            Method::PUT,
            "/admin/models/breast_cancer/policy",
            Some(json!({"policy": "best_validation"})),
            "policy",
        ),
    ];
    for (method, path, body, _) in &changes {
        admin_ok(&gateway, method.clone(), path, body.clone()).await;
    }
    let iris = report(&gateway, "iris").await;

    let saved: Value = serde_json::from_slice(
        &std::fs::read(state.path().join("deployments.json")).expect("deployments.json"),
    )
    .expect("state is JSON");
    let saved_iris = &saved["models"]["iris"];
    assert_eq!(saved_iris["champion"], "1");
    assert_eq!(saved_iris["threshold"], 0.5);
    assert_eq!(saved_iris["shadows"], json!({"2": 0.25}));
    assert_eq!(saved_iris["history"], json!(["3"]));
    assert_eq!(saved_iris["policy"], "manual");
    assert_eq!(saved_iris["known_versions"], json!(["1", "2", "3"]));
    assert_eq!(
        saved["models"]["breast_cancer"]["policy"],
        "best_validation"
    );
    assert_eq!(saved["models"]["diabetes"]["champion"], "2");

    let lines = audit_lines(state.path());
    assert_eq!(
        lines.len(),
        startup.len() + changes.len(),
        "one line per change: {lines:?}"
    );
    let added = &lines[startup.len()..];
    for (entry, (_, path, _, action)) in added.iter().zip(&changes) {
        for field in ["time", "actor", "action", "model", "before", "after"] {
            assert!(entry.get(field).is_some(), "{field} missing in {entry}");
        }
        assert!(entry["time"].as_f64().expect("time") > 1.0e9, "{entry}");
        assert_eq!(entry["actor"], "admin", "{entry}");
        assert_eq!(entry["action"], *action, "{entry}");
        let model = path.split('/').nth(3).expect("model in path");
        assert_eq!(entry["model"], model, "{entry}");
        assert_ne!(entry["before"], entry["after"], "{entry}");
    }
    assert_eq!(added[0]["before"]["champion"], "3");
    assert_eq!(added[0]["after"]["champion"], "1");
    assert_eq!(added[0]["after"]["history"], json!(["3"]));
    // Each iris entry starts where the previous one ended.
    assert_eq!(added[1]["before"], added[0]["after"]);
    assert_eq!(added[2]["before"], added[1]["after"]);
    assert_eq!(added[1]["after"]["threshold"], 0.5);
    assert_eq!(added[2]["after"]["shadows"], json!({"2": 0.25}));
    assert_eq!(added[3]["before"]["policy"], "manual");
    assert_eq!(added[3]["after"]["policy"], "best_validation");
    let times: Vec<f64> = lines
        .iter()
        .map(|e| e["time"].as_f64().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // A restart on the same state directory brings the same deployment back.
    gateway.stop().await;
    let restarted = admin_gateway_in(&models_dir(), state.path()).await;
    assert_eq!(
        deployment(&report(&restarted, "iris").await),
        deployment(&iris)
    );
    assert_eq!(
        report(&restarted, "breast_cancer").await["policy"],
        "best_validation"
    );
    assert_champion_serves(&restarted, "1").await;
    restarted.stop().await;
}

/// Runs `vigil admin --url <gateway> [--token token] args...`.
async fn vigil_admin(
    gateway: &TestGateway,
    token: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .env_remove("VIGIL_URL")
        .env_remove("VIGIL_ADMIN_TOKEN")
        .arg("admin")
        .arg("--url")
        .arg(format!("http://{}", gateway.addr));
    if let Some(token) = token {
        command.arg("--token").arg(token);
    }
    command.args(args);
    tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("vigil admin finishes within 60 s")
        .expect("vigil runs")
}

/// Runs a `vigil admin` command that must succeed; returns its stdout.
async fn vigil_admin_ok(gateway: &TestGateway, args: &[&str]) -> String {
    let output = vigil_admin(gateway, Some(TOKEN), args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "vigil admin {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn admin_command_line_operates_a_running_gateway() {
    let gateway = admin_gateway(&models_dir()).await;

    let table = vigil_admin_ok(&gateway, &["models"]).await;
    let header = table.lines().next().expect("header line");
    for column in ["MODEL", "VERSION", "ROLE", "STATUS", "HIGHLIGHT"] {
        assert!(header.contains(column), "{header}");
    }
    for model in ["breast_cancer", "diabetes", "iris"] {
        assert!(
            table.lines().skip(1).any(|l| l.starts_with(model)),
            "{model} in\n{table}"
        );
        assert!(
            table.contains(&format!("{model}: champion ")),
            "{model} summary in\n{table}"
        );
    }
    let champion_rows: Vec<&str> = table.lines().filter(|l| l.contains("champion  ")).collect();
    assert_eq!(champion_rows.len(), 3, "one champion per model:\n{table}");
    assert!(table.contains("iris: champion 3"), "{table}");
    assert!(table.contains("(best)"), "{table}");

    let one = vigil_admin_ok(&gateway, &["models", "iris"]).await;
    assert!(
        one.lines().skip(1).all(|l| !l.starts_with("diabetes")),
        "{one}"
    );
    assert!(one.contains("iris: champion 3"), "{one}");

    let promoted = vigil_admin_ok(&gateway, &["promote", "iris", "2"]).await;
    assert!(promoted.contains("iris: champion 2"), "{promoted}");
    assert_eq!(report(&gateway, "iris").await["champion"], "2");

    vigil_admin_ok(&gateway, &["threshold", "iris", "0.5"]).await;
    assert_eq!(report(&gateway, "iris").await["threshold"], 0.5);

    let shadowed = vigil_admin_ok(&gateway, &["shadow", "iris", "1", "--fraction", "0.25"]).await;
    assert!(shadowed.contains("SHADOW"), "{shadowed}");
    let iris = report(&gateway, "iris").await;
    assert_eq!(iris["shadows"][0]["version"], "1");
    assert_eq!(iris["shadows"][0]["fraction"], 0.25);

    vigil_admin_ok(&gateway, &["unshadow", "iris", "1"]).await;
    assert_eq!(report(&gateway, "iris").await["shadows"], json!([]));

    let rolled = vigil_admin_ok(&gateway, &["rollback", "iris"]).await;
    assert!(rolled.contains("iris: champion 3"), "{rolled}");
    let iris = report(&gateway, "iris").await;
    assert_eq!(iris["champion"], "3");
    assert_eq!(iris["threshold"], 0.5);

    let rescanned = vigil_admin_ok(&gateway, &["rescan"]).await;
    assert_eq!(rescanned.trim(), "no new versions");

    // Refusals: non-zero exit, the gateway's message on stderr, nothing on stdout.
    for (token, args, fragment) in [
        (Some("wrong"), vec!["models"], "wrong admin token"),
        (None, vec!["models"], "Authorization"),
        (
            Some(TOKEN),
            vec!["rollback", "iris"],
            "no previous champion",
        ),
        (Some(TOKEN), vec!["promote", "iris", "9"], "version `9`"),
        (Some(TOKEN), vec!["threshold", "iris", "2"], "threshold"),
    ] {
        let output = vigil_admin(&gateway, token, &args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(fragment), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let iris = report(&gateway, "iris").await;
    assert_eq!(iris["champion"], "3");
    assert_eq!(iris["threshold"], 0.5);
    gateway.stop().await;
}

#[tokio::test]
async fn a_rollback_whose_target_cannot_load_keeps_the_history() {
    let repo = tempfile::tempdir().expect("repository");
    for version in ["1", "2", "3"] {
        copy_version(repo.path(), "iris", version, "");
    }
    let gateway = admin_gateway(repo.path()).await;
    let promoted = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    assert_eq!(history(&promoted), ["3"]);

    // Version 3 is unloaded and its file breaks: the rollback cannot load it.
    let onnx = repo.path().join("iris/3/model.onnx");
    let good = std::fs::read(&onnx).expect("model.onnx");
    admin_ok(
        &gateway,
        Method::POST,
        "/v2/repository/models/iris/unload",
        Some(json!({"parameters": {"version": "3"}})),
    )
    .await;
    std::fs::write(&onnx, b"not an onnx file").expect("break model.onnx");
    let (status, body) = gateway
        .admin(Method::POST, "/admin/models/iris/rollback", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let after = report(&gateway, "iris").await;
    assert_eq!(after["champion"], "1");
    assert_eq!(version_of(&after, "3")["status"], "failed");
    // A refused rollback changes nothing: the previous champion is still remembered
    // (`Deployment::restore_history` exists for this), so it can be rolled back to once fixed.
    assert_eq!(
        history(&after),
        ["3"],
        "a failed rollback must not drop the history"
    );

    std::fs::write(&onnx, good).expect("repair model.onnx");
    let rolled = admin_ok(&gateway, Method::POST, "/admin/models/iris/rollback", None).await;
    assert_eq!(rolled["champion"], "3");
    gateway.stop().await;
}

#[tokio::test]
async fn a_policy_applied_at_start_is_audited_with_the_deployment_before_it() {
    let repo = tempfile::tempdir().expect("repository");
    let state = tempfile::tempdir().expect("state dir");
    copy_version(repo.path(), "iris", "1", "");
    copy_version(repo.path(), "iris", "2", "");
    let gateway = admin_gateway_in(repo.path(), state.path()).await;
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/policy",
        Some(json!({"policy": "champion"})),
    )
    .await;
    gateway.stop().await;

    copy_version(repo.path(), "iris", "3", "");
    let restarted = admin_gateway_in(repo.path(), state.path()).await;
    let iris = report(&restarted, "iris").await;
    assert_eq!(iris["champion"], "3");
    assert_eq!(history(&iris), ["2"]);
    let lines = audit_lines(state.path());
    let entry = lines
        .iter()
        .find(|e| e["action"] == "new version 3: champion")
        .unwrap_or_else(|| panic!("no audit line for the new version: {lines:?}"));
    assert_eq!(entry["actor"], "policy");
    assert_eq!(entry["model"], "iris");
    assert_eq!(entry["after"]["champion"], "3", "{entry}");
    assert_eq!(
        entry["before"]["champion"], "2",
        "`before` must be the deployment before the policy applied: {entry}"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn a_new_model_found_by_rescan_gets_the_configured_policy_like_at_start() {
    let source = models_dir();
    let best = best_by_validation(&source, "breast_cancer");
    let highest = version_names(&source, "breast_cancer")
        .last()
        .expect("versions")
        .clone();
    assert_ne!(
        best, highest,
        "the bundled breast_cancer versions rank differently by validation and by number"
    );
    let policy = vigil::serving::DeployPolicy::BestValidation;

    // At start, a model the state does not know gets its best validation version.
    let mut config = admin_config(&source);
    config.deploy_policy = policy;
    let at_start = TestGateway::start_with(config).await;
    let started = report(&at_start, "breast_cancer").await;
    assert_eq!(started["policy"], "best_validation");
    assert_eq!(started["champion"], best.as_str());
    at_start.stop().await;

    // The same model appearing on rescan gets the same treatment.
    let repo = tempfile::tempdir().expect("repository");
    copy_version(repo.path(), "iris", "1", "");
    let mut config = admin_config(repo.path());
    config.deploy_policy = policy;
    let gateway = TestGateway::start_with(config).await;
    for version in version_names(&source, "breast_cancer") {
        copy_version(repo.path(), "breast_cancer", &version, "");
    }
    let found = rescan(&gateway).await;
    assert_eq!(found.len(), 2, "{found:?}");
    let found = report(&gateway, "breast_cancer").await;
    assert_eq!(found["policy"], "best_validation");
    assert_eq!(
        found["champion"],
        best.as_str(),
        "best_validation picks the best version of a new model on rescan too"
    );
    gateway.stop().await;
}
