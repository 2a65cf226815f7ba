//! Helpers of the admin tests: gateways with the admin token, admin calls that must succeed,
//! the parts of a report a change affects, and facts computed from the repository files.

use super::{TestGateway, expected_fixtures, json_response, model_outputs, v2_body};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use vigil::config::Config;

pub const TOKEN: &str = "secret";

pub fn admin_config(models: &Path) -> Config {
    let mut config = Config::for_models(models);
    config.admin_token = Some(TOKEN.into());
    config
}

/// A gateway on `models` with the admin token set and a temporary state directory.
pub async fn admin_gateway(models: &Path) -> TestGateway {
    TestGateway::start_with(admin_config(models)).await
}

/// A gateway on `models` with the admin token set and the given state directory.
pub async fn admin_gateway_in(models: &Path, state: &Path) -> TestGateway {
    let mut config = admin_config(models);
    config.state = state.to_path_buf();
    TestGateway::start_in(config).await
}

/// An admin call with the right token and a raw body of the given content type.
pub async fn admin_raw(
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
    json_response(path, response).await
}

/// `GET /admin/models/{model}`, which must succeed.
pub async fn report(gateway: &TestGateway, model: &str) -> Value {
    let (status, report) = gateway
        .admin(Method::GET, &format!("/admin/models/{model}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

/// An admin call that must answer 200; returns the body.
pub async fn admin_ok(
    gateway: &TestGateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (status, answer) = gateway.admin(method.clone(), path, body).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {answer}");
    answer
}

/// The part of a model report that admin changes affect: champion, shadows and fractions,
/// threshold, policy, history, and every version's role and status.
pub fn deployment(report: &Value) -> Value {
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
pub fn version_of<'a>(report: &'a Value, version: &str) -> &'a Value {
    report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("no version {version} in {report}"))
}

pub fn history(report: &Value) -> Vec<String> {
    report["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|v| v.as_str().expect("history entry").to_string())
        .collect()
}

/// The expected-output fixture of one version.
pub fn fixture(model: &str, version: &str) -> Value {
    expected_fixtures()
        .into_iter()
        .find(|f| f["model"] == model && f["version"] == version)
        .unwrap_or_else(|| panic!("no fixture for {model}/{version}"))
}

pub fn fixture_rows(fixture: &Value) -> Vec<Vec<f64>> {
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

pub fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Version directory names of `repo/model`, in the gateway's order (numbers numerically).
pub fn version_names(repo: &Path, model: &str) -> Vec<String> {
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

pub fn model_names(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo)
        .expect("repository")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn model_toml(repo: &Path, model: &str, version: &str) -> toml::Table {
    let path = repo.join(model).join(version).join("model.toml");
    let text = std::fs::read_to_string(&path).expect("model.toml readable");
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(highlight metric, validation score)` from a version's `model.toml`.
pub fn validation_score(repo: &Path, model: &str, version: &str) -> (String, f64) {
    let meta = model_toml(repo, model, version);
    let metric = meta["highlight"].as_str().expect("highlight").to_string();
    let score = meta["metrics"]["validation"][metric.as_str()]
        .as_float()
        .expect("validation score");
    (metric, score)
}

pub fn higher_is_better(metric: &str) -> bool {
    let metric = metric.to_ascii_lowercase();
    !["mse", "mae", "rmse", "loss", "error", "mape"]
        .iter()
        .any(|worse| metric.contains(worse))
}

/// The version with the best validation score, computed from the `model.toml` files (the first
/// one wins a tie).
pub fn best_by_validation(repo: &Path, model: &str) -> String {
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
pub fn iris_rows() -> Vec<Vec<f64>> {
    fixture_rows(&fixture("iris", "3"))
}

/// Unversioned v2 and v1 calls on iris answer with this version.
pub async fn assert_champion_serves(gateway: &TestGateway, version: &str) {
    assert_champion_like(gateway, version, version).await;
    let (status, body) = gateway
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], version, "v1: {body}");
}

/// Every entry of the audit log under `state` (or in the gateway's database when the suite runs
/// on PostgreSQL), oldest first, parsed.
pub fn audit_lines(state: &Path) -> Vec<Value> {
    if super::on_postgres() {
        let text = super::postgres::query(
            &super::postgres::database_for(state),
            "SELECT entry FROM audit ORDER BY seq",
        );
        return text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect();
    }
    std::fs::read_to_string(state.join("audit.jsonl"))
        .expect("audit log")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// `POST /admin/repository/rescan`, returning `found`.
pub async fn rescan(gateway: &TestGateway) -> Vec<Value> {
    let answer = admin_ok(gateway, Method::POST, "/admin/repository/rescan", None).await;
    answer["found"].as_array().expect("found").clone()
}

/// The unversioned iris route answers as `version`, with the labels of bundled version `source`.
pub async fn assert_champion_like(gateway: &TestGateway, version: &str, source: &str) {
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
pub async fn index_entry(gateway: &TestGateway, version: &str) -> Value {
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
