//! A real MLflow tracking server (the `mlflow` of the project venv, `make setup-dev`) on a free
//! loopback port, with a sqlite backend store and proxied artifacts in a temporary directory,
//! plus helpers to register model versions (`tests/fixtures/mlflow/register.py`) and to call its
//! registry and webhook REST API.
//!
//! The server runs in its own process group, so that stopping it also stops the uvicorn worker it
//! starts. Webhooks are usable at once: http and loopback URLs are allowed, secrets are encrypted
//! with a fixed key (shared by every worker and kept across restarts), and the per-worker cache
//! of subscribed webhooks is off.

use serde::Deserialize;
use serde_json::{Value, json};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The Fernet key MLflow encrypts webhook secrets with (32 bytes, URL-safe base64). Fixed, so
/// that every worker and every restart can decrypt the secrets stored in the database.
pub const WEBHOOK_ENCRYPTION_KEY: &str = "dmlnaWwgaW50ZWdyYXRpb24gdGVzdHMgZmVybmV0ISE=";

/// How long the server may take to answer `GET /health` after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A version registered by `register.py`.
#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    /// The registry version number, e.g. `"1"`.
    pub version: String,
    /// The MLflow run that logged it.
    pub run_id: String,
    /// That run's name, e.g. `iris-mlp-128`.
    pub run_name: String,
}

/// A running `mlflow server`; stopped (its whole process group) when dropped.
pub struct MlflowServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The write end of the watchdog's stdin; see [`MlflowServer::spawn`].
    lifeline: Option<ChildStdin>,
    client: reqwest::Client,
    webhooks: AtomicUsize,
}

impl MlflowServer {
    /// Starts a server with an empty store and waits (up to 60 s) until it is healthy.
    ///
    /// Panics, naming `make setup-dev`, when the project venv has no `mlflow`.
    pub async fn start() -> MlflowServer {
        let mlflow = venv_bin("mlflow");
        assert!(
            mlflow.is_file(),
            "{} not found: install MLflow into the project venv with `make setup-dev`",
            mlflow.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("vigil-mlflow-")
            .tempdir()
            .expect("temporary MLflow directory");
        std::fs::create_dir(dir.path().join("tmp")).expect("MLflow TMPDIR");
        let mut server = MlflowServer {
            port: free_port(),
            dir,
            child: None,
            lifeline: None,
            client: reqwest::Client::new(),
            webhooks: AtomicUsize::new(0),
        };
        server.spawn().await;
        server
    }

    /// `http://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding the database (`mlflow.db`), the artifacts and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged (stdout and stderr), across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server: SIGTERM to its process group, then SIGKILL if it has not exited within
    /// 10 s. Does nothing when it is not running.
    pub fn stop(&mut self) {
        let _lifeline = self.lifeline.take();
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = child.id();
        signal_group("TERM", group);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut leader_done = false;
        loop {
            leader_done = leader_done || matches!(child.try_wait(), Ok(Some(_)));
            if leader_done && !group_alive(group) {
                return;
            }
            if Instant::now() >= deadline {
                signal_group("KILL", group);
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server and starts it again on the same port with the same store and artifacts:
    /// everything registered so far survives.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Registers a new version of `model` with `register.py --kind <kind> <extra_args>` (e.g.
    /// `--tag k=v`, `--no-vigil-tags`); returns once the version is READY.
    pub async fn register(&self, model: &str, kind: &str, extra_args: &[&str]) -> Registered {
        let script = super::root().join("tests/fixtures/mlflow/register.py");
        let output = tokio::process::Command::new(venv_bin("python"))
            .arg(&script)
            .args([
                "--tracking-uri",
                &self.uri(),
                "--model",
                model,
                "--kind",
                kind,
            ])
            .args(extra_args)
            .current_dir(self.dir())
            .env("TMPDIR", self.dir().join("tmp"))
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("register.py runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "register.py {model} {kind} failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("register.py printed no result line ({e}):\n{stdout}"))
    }

    /// GET `/api/2.0/mlflow/<path>` with `query`; panics unless the answer is 2xx.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let request = self.client.get(self.api(path)).query(query);
        checked(&format!("GET {path}"), request).await
    }

    /// `registered-models/get` of `model`: its `registered_model` object.
    pub async fn registered_model(&self, model: &str) -> Value {
        let body = self.get("registered-models/get", &[("name", model)]).await;
        body["registered_model"].clone()
    }

    /// The alias → version map of `model`, sorted by alias.
    pub async fn aliases(&self, model: &str) -> Vec<(String, String)> {
        let model = self.registered_model(model).await;
        let mut aliases: Vec<(String, String)> = model["aliases"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let field = |k: &str| a[k].as_str().expect("alias field").to_string();
                (field("alias"), field("version"))
            })
            .collect();
        aliases.sort();
        aliases
    }

    /// The artifact path of a version in the proxied store: `get-download-uri` without its
    /// `mlflow-artifacts:/` prefix, e.g. `1/models/m-…/artifacts`.
    pub async fn artifact_path(&self, model: &str, version: &str) -> String {
        let body = self
            .get(
                "model-versions/get-download-uri",
                &[("name", model), ("version", version)],
            )
            .await;
        let uri = body["artifact_uri"].as_str().expect("artifact_uri");
        uri.strip_prefix("mlflow-artifacts:/")
            .unwrap_or_else(|| panic!("artifacts are not proxied by the server: {uri}"))
            .to_string()
    }

    /// The file names in a version's artifact directory (`mlflow-artifacts/artifacts?path=`),
    /// sorted.
    pub async fn artifact_files(&self, model: &str, version: &str) -> Vec<String> {
        let path = self.artifact_path(model, version).await;
        let request = self
            .client
            .get(format!("{}/api/2.0/mlflow-artifacts/artifacts", self.uri()))
            .query(&[("path", path.as_str())]);
        let body = checked("GET mlflow-artifacts/artifacts", request).await;
        let mut files: Vec<String> = body["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f["path"].as_str().expect("path").to_string())
            .collect();
        files.sort();
        files
    }

    /// Points `alias` of `model` at `version` (creating or moving it).
    pub async fn set_alias(&self, model: &str, alias: &str, version: &str) {
        let body = json!({"name": model, "alias": alias, "version": version});
        self.send(reqwest::Method::POST, "registered-models/alias", body)
            .await;
    }

    /// Deletes `alias` of `model`.
    pub async fn delete_alias(&self, model: &str, alias: &str) {
        let body = json!({"name": model, "alias": alias});
        self.send(reqwest::Method::DELETE, "registered-models/alias", body)
            .await;
    }

    /// Deletes `version` of `model` (which silently drops its aliases).
    pub async fn delete_version(&self, model: &str, version: &str) {
        let body = json!({"name": model, "version": version});
        self.send(reqwest::Method::DELETE, "model-versions/delete", body)
            .await;
    }

    /// Sets the registered-model tag `key` of `model`.
    pub async fn set_model_tag(&self, model: &str, key: &str, value: &str) {
        let body = json!({"name": model, "key": key, "value": value});
        self.send(reqwest::Method::POST, "registered-models/set-tag", body)
            .await;
    }

    /// Sets the model-version tag `key` of `version` of `model`.
    pub async fn set_version_tag(&self, model: &str, version: &str, key: &str, value: &str) {
        let body = json!({"name": model, "version": version, "key": key, "value": value});
        self.send(reqwest::Method::POST, "model-versions/set-tag", body)
            .await;
    }

    /// Creates an active webhook posting to `url`, signed with `secret` (none when empty), for
    /// `events` given as upper-case `(entity, action)` pairs, e.g.
    /// `("MODEL_VERSION_ALIAS", "CREATED")`. Returns its id.
    pub async fn create_webhook(&self, url: &str, secret: &str, events: &[(&str, &str)]) -> String {
        let number = self.webhooks.fetch_add(1, Ordering::Relaxed) + 1;
        let events: Vec<Value> = events
            .iter()
            .map(|(entity, action)| json!({"entity": entity, "action": action}))
            .collect();
        let mut body = json!({
            "name": format!("vigil-tests-{number}"),
            "url": url,
            "events": events,
            "status": "ACTIVE",
        });
        if !secret.is_empty() {
            body["secret"] = json!(secret);
        }
        let answer = self.send(reqwest::Method::POST, "webhooks", body).await;
        answer["webhook"]["webhook_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no webhook_id in {answer}"))
            .to_string()
    }

    /// Asks the server to send a test delivery of webhook `id`; returns its `result`
    /// (`success`, `response_status`, `response_body`, `error_message`).
    pub async fn test_webhook(&self, id: &str) -> Value {
        let answer = self
            .send(
                reqwest::Method::POST,
                &format!("webhooks/{id}/test"),
                json!({}),
            )
            .await;
        answer["result"].clone()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let what = format!("{method} {path}");
        checked(
            &what,
            self.client.request(method, self.api(path)).json(&body),
        )
        .await
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.uri())
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("mlflow-server.log")
    }

    /// Spawns `mlflow server` in a new process group and waits until it is healthy.
    ///
    /// The group leader is a small shell that runs the server in the background and then waits
    /// on its stdin, a pipe held by this process: when this process ends in any way (even
    /// SIGKILL, or Ctrl-C, which does not reach another process group), the pipe closes and the
    /// shell sends SIGTERM to the whole group, so no server outlives the tests. When the server
    /// exits on its own, the group is ended too, so that a failed start is noticed at once.
    async fn spawn(&mut self) {
        let dir = self.dir();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("MLflow log file");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"("$@"; kill -TERM 0) & read -r _; kill -TERM 0"#)
            .arg("mlflow-watchdog")
            .arg(venv_bin("mlflow"))
            .arg("server")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .args(["--workers", "1"])
            .current_dir(dir)
            .env("TMPDIR", dir.join("tmp"))
            .env(
                "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
                WEBHOOK_ENCRYPTION_KEY,
            )
            .env("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
            .env("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
            // 0 turns the per-worker cache of subscribed webhooks off (default 60 s).
            .env("MLFLOW_WEBHOOK_CACHE_TTL", "0")
            // The job runner (GenAI jobs) is not needed, and leaves a directory in /dev/shm.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env_remove("MLFLOW_TRACKING_URI")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("mlflow server spawns");
        self.lifeline = child.stdin.take();
        self.child = Some(child);
        self.wait_healthy().await;
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let health = format!("{}/health", self.uri());
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!("mlflow server exited ({status}):\n{}", self.log_tail());
            }
            let answer = self
                .client
                .get(&health)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                return;
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail();
                self.stop();
                panic!(
                    "mlflow server not healthy within {} s:\n{tail}",
                    START_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `.venv/bin/<name>` under the repository root.
fn venv_bin(name: &str) -> PathBuf {
    super::root().join(".venv/bin").join(name)
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local address").port()
}

/// `kill -<signal> -- -<group>`.
fn signal_group(signal: &str, group: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{group}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether any process of `group` is left (`kill -0`).
fn group_alive(group: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{group}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `request`; panics with the body unless the answer is 2xx. Returns the JSON body (`null`
/// when empty).
async fn checked(what: &str, request: reqwest::RequestBuilder) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{what}: {status}: {text}");
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}
