//! Test gateways: a real vigil on an ephemeral loopback port, started in-process, plus small
//! HTTP helpers and access to the bundled models and expected-output fixtures.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

pub mod admin;
pub mod mlflow;
pub mod postgres;
pub mod process;

use reqwest::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vigil::StartupError;
use vigil::config::Config;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled example models.
pub fn models_dir() -> PathBuf {
    root().join("models")
}

/// Settings for `models` whose queues hold `simultaneous` requests, for tests that send that
/// many at once to check answers, not admission: the derived queue bound follows each model's
/// measured cost, which on a busy machine can leave fewer places.
pub fn holding(models: &Path, simultaneous: usize) -> Config {
    let mut config = Config::for_models(models);
    config.admission.max_queue = Some(simultaneous);
    config
}

/// Every `(model, version)` pair with an expected-output fixture.
pub fn expected_fixtures() -> Vec<Value> {
    let dir = root().join("tests/fixtures/expected");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures directory exists")
        .map(|e| e.expect("fixture entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("fixture readable");
            serde_json::from_str(&text).expect("fixture is JSON")
        })
        .collect()
}

/// `VIGIL_TEST_STORE=postgres` runs every in-process test gateway on the PostgreSQL store (a
/// database of its own on a server shared by the test binary) instead of the embedded one.
pub const STORE_VARIABLE: &str = "VIGIL_TEST_STORE";

/// A gateway running in this process on 127.0.0.1 with an ephemeral port.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// Where its gRPC service listens (`None` when `grpc_addr` is off).
    pub grpc_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    /// The admin token the gateway was started with.
    pub admin_token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StartupError>>>,
    _state: Option<tempfile::TempDir>,
}

impl TestGateway {
    /// Starts a gateway on `models` with default settings.
    pub async fn start(models: &Path) -> TestGateway {
        TestGateway::start_with(Config::for_models(models)).await
    }

    /// Starts a gateway with `config` (its state directory is replaced by a temporary one).
    pub async fn start_with(mut config: Config) -> TestGateway {
        let state = tempfile::tempdir().expect("temporary state directory");
        config.state = state.path().to_path_buf();
        let mut gateway = TestGateway::start_in(config).await;
        gateway._state = Some(state);
        gateway
    }

    /// Starts a gateway with `config` as given (the caller owns `config.state`).
    pub async fn start_in(config: Config) -> TestGateway {
        let (gateway, _) = TestGateway::spawn(config).await;
        gateway.wait_ready().await;
        gateway
    }

    /// Starts a gateway and waits for its task to end, returning the start-up error it stopped
    /// with (for configurations that must be refused).
    pub async fn start_expecting_failure(config: Config) -> StartupError {
        let (mut gateway, _) = TestGateway::spawn(config).await;
        let task = gateway.task.take().expect("task");
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(Ok(Err(error))) => error,
            Ok(Ok(Ok(()))) => panic!("gateway started although it should have refused"),
            Ok(Err(join)) => panic!("gateway task panicked: {join}"),
            Err(_) => panic!("gateway neither failed nor stopped within 60 s"),
        }
    }

    async fn spawn(mut config: Config) -> (TestGateway, ()) {
        if on_postgres() && config.database.is_none() {
            config.database = Some(postgres::settings(postgres::database_for(&config.state)));
        }
        let admin_token = config.admin_token.clone();
        let loopback = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback")
        };
        let http = loopback().await;
        let addr = http.local_addr().expect("listener address");
        let grpc = match config.grpc_addr {
            Some(_) => Some(loopback().await),
            None => None,
        };
        let grpc_addr = grpc
            .as_ref()
            .map(|listener| listener.local_addr().expect("gRPC listener address"));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let listeners = vigil::Listeners { http, grpc };
        let task = tokio::spawn(vigil::run(config, listeners, async move {
            let _ = stop_rx.await;
        }));
        let gateway = TestGateway {
            addr,
            grpc_addr,
            client: reqwest::Client::new(),
            admin_token,
            stop: Some(stop_tx),
            task: Some(task),
            _state: None,
        };
        (gateway, ())
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(task) = &self.task {
                assert!(!task.is_finished(), "gateway stopped during start-up");
            }
            // `Connection: close`: a gateway starts its test with no connection open.
            if let Ok(response) = self
                .client
                .get(self.url("/v2/health/ready"))
                .header(reqwest::header::CONNECTION, "close")
                .send()
                .await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(Instant::now() < deadline, "gateway not ready within 60 s");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The temporary state directory of a gateway started by [`TestGateway::start_with`].
    pub fn state_dir(&self) -> Option<&Path> {
        self._state.as_ref().map(tempfile::TempDir::path)
    }

    /// GET `path`, returning status and JSON body.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("GET sent");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    /// POST `body` as JSON to `path`, returning status and JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST sent");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    /// An admin call with the gateway's token: `method path` with an optional JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = &self.admin_token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin call sent");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    /// POST raw bytes with the given headers, returning status and JSON body.
    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        json_response(path, request.send().await.expect("POST sent")).await
    }

    /// The Prometheus text at `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await;
        response.expect("metrics").text().await.expect("text")
    }

    /// Stops a gateway shared between tasks, once every task has let go of it.
    pub async fn stop_shared(gateway: std::sync::Arc<TestGateway>) {
        std::sync::Arc::try_unwrap(gateway)
            .ok()
            .expect("sole owner")
            .stop()
            .await;
    }

    /// Signals shutdown and waits for the gateway to stop; panics if it stopped with an error.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("gateway task joined")
                .expect("gateway stopped cleanly");
        }
    }
}

/// The sum of the `/metrics` series named `name` whose labels include all of `labels`.
pub async fn metric_sum(gateway: &TestGateway, name: &str, labels: &[&str]) -> f64 {
    let text = gateway.metrics_text().await;
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `rows` iris rows that vary (so tree models walk different paths).
pub fn iris_rows_varied(rows: usize) -> Vec<Vec<f64>> {
    (0..rows)
        .map(|i| {
            vec![
                5.0 + (i % 30) as f64 / 10.0,
                3.0,
                1.5 + (i % 40) as f64 / 10.0,
                0.2,
            ]
        })
        .collect()
}

/// A v2 inference body with one FP32 input.
pub fn v2_body(input: &str, rows: &[Vec<f64>]) -> Value {
    let width = rows.first().map_or(0, Vec::len);
    serde_json::json!({
        "inputs": [{
            "name": input,
            "shape": [rows.len(), width],
            "datatype": "FP32",
            "data": rows,
        }]
    })
}

/// Copies `models/<model>/<version>` into `dest/<model>/<version>`, appending `extra` to its
/// `model.toml`.
pub fn copy_version(dest: &Path, model: &str, version: &str, extra: &str) {
    copy_version_as(&models_dir(), model, version, dest, model, version, extra);
}

/// The test-only models (`tests/fixtures/models`: `iris_slow`, `iris_failing`).
pub fn fixture_models_dir() -> PathBuf {
    root().join("tests/fixtures/models")
}

/// Copies `<source>/<model>/<version>` to `dest/<as_model>/<as_version>`, adding `extra` as
/// top-level keys of its `model.toml`.
pub fn copy_version_as(
    source: &Path,
    model: &str,
    version: &str,
    dest: &Path,
    as_model: &str,
    as_version: &str,
    extra: &str,
) {
    let from = source.join(model).join(version);
    let to = dest.join(as_model).join(as_version);
    std::fs::create_dir_all(&to).expect("create version directory");
    for entry in std::fs::read_dir(&from).expect("version directory") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("file name"));
        std::fs::copy(&path, &target).expect("copy file");
    }
    if !extra.is_empty() {
        let toml = to.join("model.toml");
        let mut text = std::fs::read_to_string(&toml).expect("model.toml");
        // Top-level keys must come before the first [table].
        let split = text.find("\n[").map_or(text.len(), |i| i + 1);
        text.insert_str(split, &format!("{extra}\n"));
        std::fs::write(&toml, text).expect("write model.toml");
    }
}

/// The outputs a v2 response carries from the model itself (without the gateway's `confidence`
/// and `accepted`).
pub fn model_outputs(response: &Value) -> Vec<&Value> {
    response["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .filter(|o| o["name"] != "confidence" && o["name"] != "accepted")
        .collect()
}

/// Checks a classifier response's `confidence` (max class probability per row) and `accepted`
/// (confidence ≥ threshold) outputs against its `probabilities`.
pub fn assert_threshold_outputs(response: &Value, threshold: f64) {
    let outputs = response["outputs"].as_array().expect("outputs");
    let find = |name: &str| {
        outputs
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` output in {response}"))
    };
    let probabilities = find("probabilities");
    let confidence = find("confidence");
    let accepted = find("accepted");
    assert_eq!(confidence["datatype"], "FP32");
    assert_eq!(accepted["datatype"], "BOOL");
    let classes = probabilities["shape"][1].as_u64().expect("classes") as usize;
    let probs: Vec<f64> = probabilities["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p.as_f64().expect("number"))
        .collect();
    let confidences = confidence["data"].as_array().expect("confidence data");
    let accepted = accepted["data"].as_array().expect("accepted data");
    assert_eq!(confidences.len(), probs.len() / classes);
    for (row, (c, a)) in confidences.iter().zip(accepted).enumerate() {
        let top = probs[row * classes..(row + 1) * classes]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let c = c.as_f64().expect("confidence");
        assert!(
            (c - top).abs() < 1e-6,
            "row {row}: confidence {c} vs top {top}"
        );
        assert_eq!(
            a.as_bool(),
            Some(c >= threshold),
            "row {row}: accepted at {threshold}"
        );
    }
}

/// Status and JSON body of a response; panics with the body when it is not JSON.
pub async fn json_response(path: &str, response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{path}: response is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

/// The state file of `model` under a gateway's state directory.
pub fn state_file(state: &Path, model: &str) -> PathBuf {
    state.join("deployments").join(format!("{model}.json"))
}

thread_local! {
    /// Set by a test about the embedded store itself (its files): its gateways use it even when
    /// the suite runs on PostgreSQL.
    static EMBEDDED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes the gateways this test starts (on this thread) use the embedded store, files and
/// SQLite under the state directory, whatever [`STORE_VARIABLE`] says: for tests of those files.
pub fn embedded_store_only() {
    EMBEDDED_ONLY.with(|only| only.set(true));
}

/// True when test gateways run on the PostgreSQL store (see [`STORE_VARIABLE`]).
pub fn on_postgres() -> bool {
    std::env::var(STORE_VARIABLE).as_deref() == Ok("postgres")
        && !EMBEDDED_ONLY.with(std::cell::Cell::get)
}

/// The deployment saved for `model` (revision, champion, shadows, ...): in its state file, or in
/// the gateway's database when the suite runs on PostgreSQL.
pub fn saved_deployment(state: &Path, model: &str) -> Value {
    if on_postgres() {
        let text = postgres::query(
            &postgres::database_for(state),
            &format!("SELECT record FROM deployments WHERE model = '{model}'"),
        );
        return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{model}: {text}: {e}"));
    }
    let path = state_file(state, model);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: Value = serde_json::from_str(&text).expect("state file is JSON");
    assert_eq!(file["model"], model, "{}", path.display());
    file["deployment"].clone()
}
