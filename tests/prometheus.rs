//! The Grafana dashboard against a real Prometheus: a gateway in this process gets a shadow, a
//! threshold, mixed v2/v1 traffic (with errors and outlier scores), ground-truth labels for the
//! champion's rows (with a retraining command) and drift evaluations; the
//! Debian `prometheus` binary scrapes it every second; then every query of
//! `grafana/dashboards/vigil.json` (Grafana variables substituted) must return at least one series.
//! Also checks that every metric the dashboard names is declared in `src/metrics.rs` and that the
//! dashboard's datasource uid is the provisioned one.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, models_dir, root, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil::config::Config;

/// The bundled models, as the dashboard's `$model` regex when every model is selected.
const MODELS: [&str; 3] = ["iris", "breast_cancer", "diabetes"];
/// Prometheus's scrape interval in this test.
const SCRAPE: Duration = Duration::from_secs(1);
/// What `$__rate_interval` / `$__interval` / `$__range` become: many scrapes wide.
const RATE_WINDOW: &str = "30s";
/// The uid the provisioned datasource has and the dashboard refers to.
const DATASOURCE_UID: &str = "vigil-prometheus";

const INSTALL_HINT: &str = "the `prometheus` binary is needed by this test and was not found on \
PATH (nor in $PROMETHEUS). Install it with `apt-get update && apt-get install -y prometheus` \
(Debian/Ubuntu; only the binary is used, not the service), or point PROMETHEUS at a prometheus \
binary. `bash .ci/run` installs it.";

/// The `prometheus` binary: `$PROMETHEUS`, else the first on `PATH`.
fn prometheus_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMETHEUS").map(PathBuf::from) {
        assert!(
            path.is_file(),
            "PROMETHEUS={} is not a file. {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{INSTALL_HINT}"))
}

/// A loopback port free right now (bound, then released for Prometheus to take).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local address").port()
}

/// A Prometheus child process, killed and reaped on drop.
struct PrometheusServer {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts `prometheus` scraping `target` (host:port) every [`SCRAPE`], with its storage in a
    /// temporary directory, listening on a free loopback port.
    fn start(target: &str) -> PrometheusServer {
        let binary = prometheus_binary();
        let dir = tempfile::tempdir().expect("prometheus directory");
        let config = dir.path().join("prometheus.yml");
        let scrape = format!("{}s", SCRAPE.as_secs());
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {scrape}\n  scrape_timeout: {scrape}\n  \
                 evaluation_interval: {scrape}\n\
                 scrape_configs:\n  - job_name: vigil\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let storage = dir.path().join("data");
        let log = dir.path().join("prometheus.log");
        let port = free_port();
        let output = std::fs::File::create(&log).expect("prometheus log");
        let child = Command::new(&binary)
            .current_dir(dir.path())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log handle"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}. {INSTALL_HINT}", binary.display()));
        PrometheusServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// The end of Prometheus's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Panics with the log when the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", self.log_tail());
        }
    }

    /// Waits (bounded) until `/-/ready` answers 200.
    async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.assert_running();
            if let Ok(response) = client.get(format!("{}/-/ready", self.url)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query at now: the `data.result` array.
    async fn query(&self, client: &reqwest::Client, expr: &str) -> Result<Vec<Value>, String> {
        let response = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("{status}: body is not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        body["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no result array: {body}"))
    }

    /// The value of the first series `expr` returns, if any.
    async fn scalar(&self, client: &reqwest::Client, expr: &str) -> Option<f64> {
        let result = self.query(client, expr).await.ok()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `targets[].expr` of the dashboard, with the title of its panel, including panels inside
/// rows (collapsed rows nest them).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every Prometheus datasource uid the dashboard refers to (panels, targets, variables; the
/// built-in annotation source is Grafana's own).
fn datasource_uids(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(source) = map.get("datasource")
                && source["type"] != "grafana"
            {
                out.insert(source["uid"].as_str().unwrap_or("<no uid>").to_string());
            }
            for child in map.values() {
                datasource_uids(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|child| datasource_uids(child, out)),
        _ => {}
    }
}

/// Grafana's variables replaced the way Grafana expands them with "All" selected.
fn substitute(expr: &str) -> String {
    expr.replace("$model", &MODELS.join("|"))
        .replace("$version", ".*")
        .replace("$__rate_interval", RATE_WINDOW)
        .replace("$__interval", RATE_WINDOW)
        .replace("$__range", RATE_WINDOW)
}

/// The metric names `src/metrics.rs` declares (`pub const X: &str = "vigil_…";`).
fn declared_metrics() -> BTreeSet<String> {
    let source =
        std::fs::read_to_string(root().join("src/metrics.rs")).expect("src/metrics.rs readable");
    source
        .lines()
        .filter(|line| line.trim_start().starts_with("pub const") && line.contains("&str"))
        .filter_map(|line| line.split('"').nth(1))
        .map(str::to_string)
        .collect()
}

/// The `vigil_*` metric names an expression mentions.
fn mentioned_metrics(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("vigil_"))
        .map(str::to_string)
        .collect()
}

/// Checks the dashboard's static promises: metric names come from `src/metrics.rs`, variables
/// are matched with `=~` (they are multi-value), the datasource is the provisioned one.
fn check_dashboard(dashboard: &Value, queries: &[(String, String)]) {
    let declared = declared_metrics();
    assert!(
        declared.len() > 20,
        "metric names parsed from src/metrics.rs: {declared:?}"
    );
    for (title, expr) in queries {
        for metric in mentioned_metrics(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| metric.strip_suffix(suffix))
                .filter(|base| declared.contains(*base));
            assert!(
                declared.contains(&metric) || base.is_some(),
                "panel `{title}` uses {metric}, which src/metrics.rs does not declare: {expr}"
            );
        }
        for variable in ["$model", "$version"] {
            for (at, _) in expr.match_indices(variable) {
                assert!(
                    expr[..at].ends_with("=~\""),
                    "panel `{title}`: {variable} is multi-value and must be matched with =~: {expr}"
                );
            }
        }
    }
    let mut uids = BTreeSet::new();
    datasource_uids(dashboard, &mut uids);
    assert_eq!(
        uids,
        BTreeSet::from([DATASOURCE_UID.to_string()]),
        "datasource uids in the dashboard"
    );
    let provisioning =
        std::fs::read_to_string(root().join("grafana/provisioning/datasources/prometheus.yml"))
            .expect("datasource provisioning file");
    assert!(
        provisioning
            .lines()
            .any(|line| line.trim() == format!("uid: {DATASOURCE_UID}")),
        "the provisioned datasource has uid {DATASOURCE_UID}"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["model", "version"]);
}

/// The reference rows of `model` version 1 (what training inputs look like).
fn reference_rows(model: &str) -> Vec<Vec<f64>> {
    let path = models_dir().join(model).join("1").join("reference.csv");
    let text = std::fs::read_to_string(&path).expect("reference.csv");
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.split(',')
                .map(|v| v.trim().parse().expect("number in reference.csv"))
                .collect()
        })
        .collect()
}

/// What a model takes: its v2 input name and some rows.
struct Workload {
    model: &'static str,
    input: String,
    rows: Vec<Vec<f64>>,
    classifier: bool,
}

async fn workloads(gateway: &TestGateway) -> Vec<Workload> {
    let mut out = Vec::new();
    for model in MODELS {
        let (status, metadata) = gateway.get_json(&format!("/v2/models/{model}")).await;
        assert_eq!(status, StatusCode::OK, "{metadata}");
        let input = metadata["inputs"][0]["name"]
            .as_str()
            .expect("input name")
            .to_string();
        let mut rows = reference_rows(model);
        // Shifted copies of a few rows: some drift and some outliers for the gauges to show.
        let shifted: Vec<Vec<f64>> = rows
            .iter()
            .take(10)
            .map(|row| row.iter().map(|v| v * 3.0 + 1.0).collect())
            .collect();
        rows.extend(shifted);
        let (status, report) = gateway
            .admin(Method::GET, &format!("/admin/models/{model}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let classifier = report["versions"][0]["task"] == "classification";
        out.push(Workload {
            model,
            input,
            rows,
            classifier,
        });
    }
    out
}

async fn post(gateway: &TestGateway, path: &str, body: &Value) -> StatusCode {
    gateway
        .client
        .post(gateway.url(path))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
        .status()
}

/// One round of traffic: per model, v2 champion (half asking for outlier scores) followed by a
/// label for each of its rows, v2 on version 1 (direct), v1 champion, plus three kinds of 4xx.
/// Returns the number of requests sent.
async fn traffic(gateway: &TestGateway, workloads: &[Workload], round: usize) -> usize {
    let mut sent = 0;
    for work in workloads {
        let start = (round * 3) % work.rows.len();
        let batch: Vec<Vec<f64>> = work
            .rows
            .iter()
            .cycle()
            .skip(start)
            .take(3)
            .cloned()
            .collect();
        let mut body = v2_body(&work.input, &batch);
        if round.is_multiple_of(2) {
            body["parameters"] = json!({"outlier_score": true});
        }
        let model = work.model;
        let id = format!("round{round}-{model}");
        body["id"] = json!(id);
        let cases = [
            (format!("/v2/models/{model}/infer"), body.clone()),
            (
                format!("/v2/models/{model}/versions/1/infer"),
                v2_body(&work.input, &batch[..1]),
            ),
            (
                format!("/v1/models/{model}:predict"),
                json!({"instances": batch}),
            ),
        ];
        for (path, body) in &cases {
            let status = post(gateway, path, body).await;
            assert_eq!(status, StatusCode::OK, "POST {path}");
            sent += 1;
        }
        // Ground truth for the champion's rows: some right, some wrong.
        let items: Vec<Value> = (0..batch.len())
            .map(|row| {
                if work.classifier {
                    json!({"id": id, "row": row, "label": (round + row) % 2})
                } else {
                    json!({"id": id, "row": row, "value": 100.0 + 10.0 * row as f64})
                }
            })
            .collect();
        let (status, answer) = gateway
            .admin(
                Method::POST,
                &format!("/v1/models/{model}/feedback"),
                Some(json!({"items": items})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["counts"]["accepted"], batch.len(), "{answer}");
    }
    // Errors: a malformed body, an unknown version, a wrong input shape.
    let iris = &workloads[0];
    let errors = [
        ("/v2/models/iris/infer".to_string(), json!({"inputs": "no"})),
        (
            "/v2/models/iris/versions/99/infer".to_string(),
            v2_body(&iris.input, &iris.rows[..1]),
        ),
        (
            "/v1/models/iris:predict".to_string(),
            json!({"instances": [[1.0, 2.0]]}),
        ),
    ];
    for (path, body) in &errors {
        let status = post(gateway, path, body).await;
        assert!(status.is_client_error(), "POST {path}: {status}");
        sent += 1;
    }
    sent
}

async fn admin_ok(gateway: &TestGateway, method: Method, path: &str, body: Option<Value>) {
    let (status, report) = gateway.admin(method, path, body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {report}");
}

async fn evaluate_drift(gateway: &TestGateway) {
    for model in MODELS {
        admin_ok(
            gateway,
            Method::POST,
            &format!("/admin/models/{model}/monitoring/evaluate"),
            None,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    // Fail before any work when the binary is missing.
    prometheus_binary();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("grafana/dashboards/vigil.json"))
            .expect("grafana/dashboards/vigil.json readable"),
    )
    .expect("dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "dashboard queries: {queries:?}");
    check_dashboard(&dashboard, &queries);

    let mut config = Config::for_models(models_dir());
    config.admin_token = Some("prometheus-secret".into());
    config.drift_interval = Duration::from_secs(1);
    let gateway = TestGateway::start_with(config).await;
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/shadows/2",
        Some(json!({"fraction": 1.0})),
    )
    .await;
    for model in ["iris", "breast_cancer"] {
        admin_ok(
            &gateway,
            Method::PUT,
            &format!("/admin/models/{model}/threshold"),
            Some(json!({"threshold": 0.9})),
        )
        .await;
    }
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/retrain",
        Some(json!({"every_labels": 30, "command": ["sh", "-c", "cat > /dev/null"]})),
    )
    .await;
    let work = workloads(&gateway).await;
    let mut sent = 0;
    let mut round = 0;
    while sent < 300 {
        sent += traffic(&gateway, &work, round).await;
        round += 1;
    }
    evaluate_drift(&gateway).await;

    let client = reqwest::Client::new();
    let mut prometheus = PrometheusServer::start(&gateway.addr.to_string());
    prometheus.wait_ready(&client).await;

    // Until the target is up and scraped a few times, with traffic between scrapes so every
    // rate() window holds at least two samples of moving counters.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        prometheus.assert_running();
        round += 1;
        traffic(&gateway, &work, round).await;
        let up = prometheus.scalar(&client, r#"up{job="vigil"}"#).await;
        let scrapes = prometheus
            .scalar(
                &client,
                &format!(r#"count_over_time(up{{job="vigil"}}[{RATE_WINDOW}])"#),
            )
            .await;
        if up == Some(1.0) && scrapes.is_some_and(|n| n >= 4.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the gateway 4 times (up = {up:?}, scrapes = {scrapes:?}):\n{}",
            prometheus.log_tail()
        );
        tokio::time::sleep(SCRAPE / 4).await;
    }
    // Two more scrapes of fresh traffic and drift evaluations.
    let until = Instant::now() + SCRAPE * 2 + Duration::from_millis(500);
    while Instant::now() < until {
        round += 1;
        traffic(&gateway, &work, round).await;
        tokio::time::sleep(SCRAPE / 4).await;
    }
    evaluate_drift(&gateway).await;
    tokio::time::sleep(SCRAPE + Duration::from_millis(500)).await;

    let mut failures = Vec::new();
    for (title, expr) in &queries {
        let query = substitute(expr);
        match prometheus.query(&client, &query).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => failures.push(format!("panel `{title}`: no series for\n    {query}")),
            Err(error) => failures.push(format!("panel `{title}`: {error}\n    {query}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed against Prometheus:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    drop(prometheus);
    gateway.stop().await;
}

/// The checked-in Prometheus config scrapes the default gateway address.
#[test]
fn the_checked_in_prometheus_config_scrapes_the_default_address() {
    let path: &Path = &root().join("grafana/prometheus.yml");
    let text = std::fs::read_to_string(path).expect("grafana/prometheus.yml");
    for needle in [
        "job_name: vigil",
        "\"127.0.0.1:8080\"",
        "scrape_interval: 5s",
        "metrics_path: /metrics",
    ] {
        assert!(text.contains(needle), "{needle} in {}", path.display());
    }
}
