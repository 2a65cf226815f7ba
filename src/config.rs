//! Settings, settled once at start-up: the config file (`vigil.toml`), then `VIGIL_*` environment
//! variables and flags (flags win over env, both over the file, the file over defaults). The
//! result is a validated [`Config`]; nothing else reads the environment.

use crate::listener::ConnectionLimits;
use crate::mlflow::{AliasRole, Credentials, MlflowSettings};
use crate::serving::AdmissionSettings;
use crate::store::DeployPolicy;
use crate::store::feedback::RetrainSettings;
pub use crate::store::{DatabaseSettings, redact_url};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default model repository.
pub const DEFAULT_MODELS: &str = "./models";
/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:8081";
/// Default state directory.
pub const DEFAULT_STATE: &str = "./state";
/// Default request body limit: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Default limit on rows per request.
pub const DEFAULT_MAX_BATCH_ROWS: usize = 4096;
/// Default inline budget: calls expected to take longer run on the blocking pool.
pub const DEFAULT_INLINE_BUDGET: Duration = Duration::from_micros(200);
/// Default time allowed for in-flight requests to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default capacity of each shadow's mirror queue.
pub const DEFAULT_SHADOW_QUEUE: usize = 1024;
/// Default number of workers per shadow.
pub const DEFAULT_SHADOW_WORKERS: usize = 1;
/// Default time a shadow run may take before it counts as timed out.
pub const DEFAULT_SHADOW_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of recent rows in each version's drift window.
pub const DEFAULT_DRIFT_WINDOW: usize = 1000;
/// Default interval of the background drift evaluator.
pub const DEFAULT_DRIFT_INTERVAL: Duration = Duration::from_secs(10);
/// Default interval between points of the monitoring history.
pub const DEFAULT_HISTORY_INTERVAL: Duration = Duration::from_secs(10);
/// Default points kept per served version in the monitoring history (an hour at 10 s).
pub const DEFAULT_HISTORY_POINTS: usize = 360;
/// Default family-wise significance level of the drift test.
pub const DEFAULT_DRIFT_ALPHA: f64 = 0.05;
/// Default outlier cut: rows scoring at or above it count as outliers.
pub const DEFAULT_OUTLIER_CUT: f64 = 0.99;
/// Default age after which logged predictions are deleted: 14 days.
pub const DEFAULT_INFERENCE_LOG_TTL: Duration = Duration::from_secs(14 * 24 * 3600);
/// Default most answered rows kept in the inference log.
pub const DEFAULT_INFERENCE_LOG_MAX_ROWS: u64 = 1_000_000;
/// Default requests waiting to be logged before new ones are dropped.
pub const DEFAULT_INFERENCE_LOG_QUEUE: usize = 65_536;
/// Default deadline of requests that name none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a connection may stay idle.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of most recent labels live quality is also computed over.
pub const DEFAULT_QUALITY_WINDOW: usize = 1_000;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Flags of `vigil serve` (each also read from its `VIGIL_*` environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Model repository: `<dir>/<model>/<version>/model.onnx` [default: ./models]
    #[arg(long, env = "VIGIL_MODELS")]
    pub models: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "VIGIL_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Address of the Open Inference Protocol gRPC service, or `off` [default: 127.0.0.1:8081]
    #[arg(long, env = "VIGIL_GRPC_ADDR")]
    pub grpc_addr: Option<GrpcAddr>,
    /// Directory for durable gateway state (created if missing) [default: ./state]
    #[arg(long, env = "VIGIL_STATE")]
    pub state: Option<PathBuf>,
    /// Config file (TOML, same keys as the flags with underscores)
    #[arg(long, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// ONNX Runtime shared library (libonnxruntime.so); also ORT_DYLIB_PATH. Without it, the
    /// `onnxruntime` Python package in ./.venv or of `python3` is used
    #[arg(long, env = "VIGIL_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// Log format [default: human]
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest request body accepted, in bytes; larger bodies get 413 [default: 8388608]
    #[arg(long, env = "VIGIL_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most rows accepted in one request; more get 413 [default: 4096]
    #[arg(long, env = "VIGIL_MAX_BATCH_ROWS")]
    pub max_batch_rows: Option<usize>,
    /// ONNX Runtime sessions per version (concurrent calls per version) [default: CPU count]
    #[arg(long, env = "VIGIL_SESSIONS_PER_VERSION")]
    pub sessions_per_version: Option<usize>,
    /// Calls whose measured cost exceeds this many microseconds run on the blocking pool instead
    /// of the async worker [default: 200]
    #[arg(long, env = "VIGIL_INLINE_BUDGET_US")]
    pub inline_budget_us: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM [default: 30]
    #[arg(long, env = "VIGIL_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Bearer token of the admin API; without one the admin API answers 403 [default: none]
    #[arg(long, env = "VIGIL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PostgreSQL shared by replicas (`postgres://user@host:port/db`): deployments, audit,
    /// inference log, feedback and events live there instead of under --state [default: none]
    #[arg(long, env = "VIGIL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the database password (else the URL's, else PGPASSWORD) [default: none]
    #[arg(long, env = "VIGIL_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
    /// Milliseconds to connect to the database or get a connection before answering 503
    /// [default: 2000]
    #[arg(long, env = "VIGIL_DATABASE_TIMEOUT_MS")]
    pub database_timeout_ms: Option<u64>,
    /// Seconds between checks for deployment changes made by other replicas, besides the
    /// database's notifications [default: 5]
    #[arg(long, env = "VIGIL_STATE_POLL_SECS")]
    pub state_poll_secs: Option<u64>,
    /// Follow other replicas' changes as the database notifies them (LISTEN/NOTIFY); `false`
    /// leaves only the poll [default: true]
    #[arg(long, env = "VIGIL_STATE_NOTIFICATIONS")]
    pub state_notifications: Option<bool>,
    /// Address other replicas and operators reach this one at, as listed by
    /// GET /admin/replicas [default: the listen address]
    #[arg(long, env = "VIGIL_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// Copies waiting per shadow before new ones are dropped [default: 1024]
    #[arg(long, env = "VIGIL_SHADOW_QUEUE")]
    pub shadow_queue: Option<usize>,
    /// Workers per shadow [default: 1]
    #[arg(long, env = "VIGIL_SHADOW_WORKERS")]
    pub shadow_workers: Option<usize>,
    /// Milliseconds a shadow run may take before it counts as timed out [default: 1000]
    #[arg(long, env = "VIGIL_SHADOW_TIMEOUT_MS")]
    pub shadow_timeout_ms: Option<u64>,
    /// Confidence threshold for models whose champion's model.toml sets none (0 = accept all)
    /// [default: 0]
    #[arg(long, env = "VIGIL_DEFAULT_THRESHOLD")]
    pub default_threshold: Option<f64>,
    /// Deploy policy for new versions of models the state does not know: manual, shadow,
    /// champion or best_validation [default: manual]
    #[arg(long, env = "VIGIL_DEPLOY_POLICY", value_parser = parse_policy)]
    pub deploy_policy: Option<DeployPolicy>,
    /// Record drift windows, outlier scores and per-version figures on the request path
    /// (`--monitoring false` turns it off) [default: true]
    #[arg(long, env = "VIGIL_MONITORING")]
    pub monitoring: Option<bool>,
    /// Recent input rows per version compared with the reference [default: 1000]
    #[arg(long, env = "VIGIL_DRIFT_WINDOW")]
    pub drift_window: Option<usize>,
    /// Seconds between background drift evaluations [default: 10]
    #[arg(long, env = "VIGIL_DRIFT_INTERVAL_SECS")]
    pub drift_interval_secs: Option<u64>,
    /// Milliseconds between points of the monitoring history the console charts [default: 10000]
    #[arg(long, env = "VIGIL_HISTORY_INTERVAL_MS")]
    pub history_interval_ms: Option<u64>,
    /// Points kept per served version in the monitoring history [default: 360]
    #[arg(long, env = "VIGIL_HISTORY_POINTS")]
    pub history_points: Option<usize>,
    /// Significance level of the drift test, Bonferroni-corrected per feature [default: 0.05]
    #[arg(long, env = "VIGIL_DRIFT_ALPHA")]
    pub drift_alpha: Option<f64>,
    /// Rows whose outlier score is at or above this count as outliers [default: 0.99]
    #[arg(long, env = "VIGIL_OUTLIER_CUT")]
    pub outlier_cut: Option<f64>,
    /// Log every answered row (and each shadow's prediction of it) under --state, so that
    /// feedback can refer to it (`--inference-log false` turns it off) [default: true]
    #[arg(long, env = "VIGIL_INFERENCE_LOG")]
    pub inference_log: Option<bool>,
    /// Logged rows older than this are deleted: a number with a unit, s, m, h or d [default: 14d]
    #[arg(long, env = "VIGIL_INFERENCE_LOG_TTL", value_parser = parse_duration)]
    pub inference_log_ttl: Option<Duration>,
    /// Most answered rows kept in the inference log, oldest deleted first [default: 1000000]
    #[arg(long, env = "VIGIL_INFERENCE_LOG_MAX_ROWS")]
    pub inference_log_max_rows: Option<u64>,
    /// Requests waiting to be logged before new ones are dropped and counted [default: 65536]
    #[arg(long, env = "VIGIL_INFERENCE_LOG_QUEUE")]
    pub inference_log_queue: Option<usize>,
    /// Bearer token of the feedback API (the admin token also works); without either the
    /// feedback API answers 403 [default: none]
    #[arg(long, env = "VIGIL_FEEDBACK_TOKEN", hide_env_values = true)]
    pub feedback_token: Option<String>,
    /// Live quality is also computed over this many most recent labels [default: 1000]
    #[arg(long, env = "VIGIL_QUALITY_WINDOW")]
    pub quality_window: Option<usize>,
    /// Default for models without retraining settings: an event every this many labels
    /// [default: none]
    #[arg(long, env = "VIGIL_RETRAIN_EVERY_LABELS")]
    pub retrain_every_labels: Option<u64>,
    /// Default retraining webhook (events are POSTed to it, signed) [default: none]
    #[arg(long, env = "VIGIL_RETRAIN_WEBHOOK")]
    pub retrain_webhook: Option<String>,
    /// Default secret that signs retraining webhooks [default: none]
    #[arg(long, env = "VIGIL_RETRAIN_SECRET", hide_env_values = true)]
    pub retrain_secret: Option<String>,
    /// Deadline in milliseconds of inference requests that set none (OIP
    /// `parameters.timeout`); a request still waiting to run then gets 503 [default: 10000]
    #[arg(long, env = "VIGIL_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Inferences of one model running at once [default: 4 × CPU count]
    #[arg(long, env = "VIGIL_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Requests of one model waiting to run; more get 429 [default: what the cores work off in
    /// 1 ms or 10 × the champion's measured cost, minus max_in_flight; 1 per core to 4096]
    #[arg(long, env = "VIGIL_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// Milliseconds requests may wait to be read (the runtime's scheduling delay) before new
    /// inferences get 429; 0 or unset: no shedding [default: off]
    #[arg(long, env = "VIGIL_SHED_DELAY_MS")]
    pub shed_delay_ms: Option<u64>,
    /// Most connections open at once on each listener (HTTP, gRPC); more wait in the listen
    /// backlog [default: 4096]
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Milliseconds a client has to send a request's headers [default: 10000]
    #[arg(long, env = "VIGIL_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Milliseconds a client has to send a request's body; later gets 408 [default: 30000]
    #[arg(long, env = "VIGIL_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Seconds a connection (HTTP or gRPC) may stay idle before it is closed [default: 60]
    #[arg(long, env = "VIGIL_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// MLflow tracking server whose Model Registry decides what is served (also read from
    /// MLFLOW_TRACKING_URI; credentials from MLFLOW_TRACKING_TOKEN or
    /// MLFLOW_TRACKING_USERNAME/PASSWORD) [default: none]
    #[arg(long, env = "VIGIL_MLFLOW_URI")]
    pub mlflow_uri: Option<String>,
    /// Registered models to serve, comma-separated [default: every model tagged
    /// vigil.serve = true]
    #[arg(long, env = "VIGIL_MLFLOW_MODELS", value_delimiter = ',')]
    pub mlflow_models: Option<Vec<String>>,
    /// Aliases and the role of the version they name, comma-separated `alias=role` with role
    /// champion, shadow or shadow:FRACTION [default: champion=champion,challenger=shadow]
    #[arg(long, env = "VIGIL_MLFLOW_ALIASES", value_delimiter = ',')]
    pub mlflow_aliases: Option<Vec<String>>,
    /// Seconds between reads of the registry's aliases [default: 15]
    #[arg(long, env = "VIGIL_MLFLOW_POLL_SECS")]
    pub mlflow_poll_secs: Option<u64>,
    /// Secret of the MLflow webhook that triggers an immediate sync at POST /hooks/mlflow;
    /// without one that route answers 404 [default: none]
    #[arg(long, env = "VIGIL_MLFLOW_WEBHOOK_SECRET", hide_env_values = true)]
    pub mlflow_webhook_secret: Option<String>,
}

/// Variables of other tools' environments that vigil honours, read once by the binary.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `ORT_DYLIB_PATH`: the ONNX Runtime library, when no `--ort-lib` is given.
    pub ort_dylib_path: Option<PathBuf>,
    /// `MLFLOW_TRACKING_URI`, when no `mlflow_uri` is given.
    pub mlflow_tracking_uri: Option<String>,
    /// `MLFLOW_TRACKING_TOKEN`: bearer token for the tracking server.
    pub mlflow_tracking_token: Option<String>,
    /// `MLFLOW_TRACKING_USERNAME`: basic-auth user.
    pub mlflow_tracking_username: Option<String>,
    /// `MLFLOW_TRACKING_PASSWORD`: basic-auth password.
    pub mlflow_tracking_password: Option<String>,
    /// `PGPASSWORD`: the database password, when neither the URL nor a password file gives one.
    pub pgpassword: Option<String>,
}

impl Environment {
    /// The tracking server credentials MLflow's clients would use: the token, else user and
    /// password.
    fn mlflow_credentials(&self) -> Option<Credentials> {
        let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        nonempty(&self.mlflow_tracking_token)
            .map(Credentials::Token)
            .or_else(|| {
                nonempty(&self.mlflow_tracking_username).map(|username| Credentials::Basic {
                    username,
                    password: self.mlflow_tracking_password.clone().unwrap_or_default(),
                })
            })
    }
}

/// A duration: a number with a unit (`90s`, `15m`, `36h`, `14d`); a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let seconds_per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}`: expected a number with s, m, h or d, e.g. 14d"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per))
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}`: expected a positive number with s, m, h or d, e.g. 14d"))
}

/// A duration in the config file: `"14d"` or a number of seconds.
fn file_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Seconds(u64),
        Text(String),
    }
    match Option::<Given>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Given::Seconds(seconds)) => Ok(Some(Duration::from_secs(seconds))),
        Some(Given::Text(text)) => parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn parse_policy(text: &str) -> Result<DeployPolicy, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        format!("`{text}` is not a policy; expected manual, shadow, champion or best_validation")
    })
}

/// Where the gRPC service listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcAddr(pub Option<SocketAddr>);

impl std::str::FromStr for GrpcAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<GrpcAddr, String> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(GrpcAddr(None));
        }
        text.parse()
            .map(|addr| GrpcAddr(Some(addr)))
            .map_err(|_| format!("`{text}` is not a listen address (host:port) or `off`"))
    }
}

impl<'de> Deserialize<'de> for GrpcAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<GrpcAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The config file's keys (all optional; unknown keys are an error).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    models: Option<PathBuf>,
    addr: Option<SocketAddr>,
    grpc_addr: Option<GrpcAddr>,
    state: Option<PathBuf>,
    ort_lib: Option<PathBuf>,
    log_format: Option<LogFormat>,
    max_body_bytes: Option<usize>,
    max_batch_rows: Option<usize>,
    sessions_per_version: Option<usize>,
    inline_budget_us: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    admin_token: Option<String>,
    database_url: Option<String>,
    database_password_file: Option<PathBuf>,
    database_timeout_ms: Option<u64>,
    state_poll_secs: Option<u64>,
    state_notifications: Option<bool>,
    advertise_address: Option<String>,
    shadow_queue: Option<usize>,
    shadow_workers: Option<usize>,
    shadow_timeout_ms: Option<u64>,
    default_threshold: Option<f64>,
    deploy_policy: Option<DeployPolicy>,
    monitoring: Option<bool>,
    drift_window: Option<usize>,
    drift_interval_secs: Option<u64>,
    history_interval_ms: Option<u64>,
    history_points: Option<usize>,
    drift_alpha: Option<f64>,
    outlier_cut: Option<f64>,
    inference_log: Option<bool>,
    #[serde(default, deserialize_with = "file_duration")]
    inference_log_ttl: Option<Duration>,
    inference_log_max_rows: Option<u64>,
    inference_log_queue: Option<usize>,
    feedback_token: Option<String>,
    quality_window: Option<usize>,
    retrain_every_labels: Option<u64>,
    retrain_command: Option<Vec<String>>,
    retrain_webhook: Option<String>,
    retrain_secret: Option<String>,
    request_timeout_ms: Option<u64>,
    max_in_flight: Option<usize>,
    max_queue: Option<usize>,
    shed_delay_ms: Option<u64>,
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    idle_timeout_secs: Option<u64>,
    mlflow_uri: Option<String>,
    mlflow_models: Option<Vec<String>>,
    mlflow_aliases: Option<BTreeMap<String, String>>,
    mlflow_poll_secs: Option<u64>,
    mlflow_webhook_secret: Option<String>,
}

/// Validated settings of a gateway. `Debug` redacts the admin token.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Model repository root.
    pub models: PathBuf,
    /// Listen address (the CLI binds it; tests pass their own listener).
    pub addr: SocketAddr,
    /// The gRPC service's listen address; `None` when it is off.
    pub grpc_addr: Option<SocketAddr>,
    /// Durable state directory.
    pub state: PathBuf,
    /// ONNX Runtime library, when given explicitly.
    pub ort_lib: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most rows per request.
    pub max_batch_rows: usize,
    /// ONNX Runtime sessions per version.
    pub sessions_per_version: usize,
    /// Calls expected to take longer run on the blocking pool.
    pub inline_budget: Duration,
    /// Time allowed for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Admin API bearer token; `None` disables the admin API.
    pub admin_token: Option<String>,
    /// Capacity of each shadow's queue.
    pub shadow_queue: usize,
    /// Workers per shadow.
    pub shadow_workers: usize,
    /// Shadow run timeout.
    pub shadow_timeout: Duration,
    /// Threshold for models without one.
    pub default_threshold: f64,
    /// Deploy policy for models the state does not know.
    pub deploy_policy: DeployPolicy,
    /// Request-path monitoring on or off.
    pub monitoring: bool,
    /// Rows per drift window.
    pub drift_window: usize,
    /// Background drift evaluation interval.
    pub drift_interval: Duration,
    /// Interval between monitoring history points.
    pub history_interval: Duration,
    /// Monitoring history points kept per served version.
    pub history_points: usize,
    /// Drift significance level.
    pub drift_alpha: f64,
    /// Outlier cut.
    pub outlier_cut: f64,
    /// Inference log on or off.
    pub inference_log: bool,
    /// Age after which logged rows are deleted.
    pub inference_log_ttl: Duration,
    /// Most answered rows kept in the inference log.
    pub inference_log_max_rows: u64,
    /// Requests waiting to be logged before new ones are dropped.
    pub inference_log_queue: usize,
    /// Feedback API bearer token (the admin token also works).
    pub feedback_token: Option<String>,
    /// Most recent labels the windowed quality covers.
    pub quality_window: usize,
    /// Retraining settings for models that have none of their own.
    pub retrain: Option<RetrainSettings>,
    /// The MLflow Model Registry followed, when one is.
    pub mlflow: Option<MlflowSettings>,
    /// The PostgreSQL database replicas share, when one is given.
    pub database: Option<DatabaseSettings>,
    /// How much each model admits.
    pub admission: AdmissionSettings,
    /// Limits on connections and slow clients.
    pub connections: ConnectionLimits,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("models", &self.models)
            .field("addr", &self.addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("state", &self.state)
            .field("ort_lib", &self.ort_lib)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch_rows", &self.max_batch_rows)
            .field("sessions_per_version", &self.sessions_per_version)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("deploy_policy", &self.deploy_policy)
            .field(
                "feedback_token",
                &self.feedback_token.as_ref().map(|_| "<redacted>"),
            )
            .field("inference_log", &self.inference_log)
            .field("mlflow", &self.mlflow.as_ref().map(|m| &m.uri))
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Configuration problems, all of them at once.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

fn default_sessions() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

impl Config {
    /// Settings for a repository at `models` with every other setting at its default.
    pub fn for_models(models: impl Into<PathBuf>) -> Config {
        Config {
            models: models.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
            state: PathBuf::from(DEFAULT_STATE),
            ort_lib: None,
            log_format: LogFormat::Human,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_rows: DEFAULT_MAX_BATCH_ROWS,
            sessions_per_version: default_sessions(),
            inline_budget: DEFAULT_INLINE_BUDGET,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            admin_token: None,
            shadow_queue: DEFAULT_SHADOW_QUEUE,
            shadow_workers: DEFAULT_SHADOW_WORKERS,
            shadow_timeout: DEFAULT_SHADOW_TIMEOUT,
            default_threshold: 0.0,
            deploy_policy: DeployPolicy::Manual,
            monitoring: true,
            drift_window: DEFAULT_DRIFT_WINDOW,
            drift_interval: DEFAULT_DRIFT_INTERVAL,
            history_interval: DEFAULT_HISTORY_INTERVAL,
            history_points: DEFAULT_HISTORY_POINTS,
            drift_alpha: DEFAULT_DRIFT_ALPHA,
            outlier_cut: DEFAULT_OUTLIER_CUT,
            inference_log: true,
            inference_log_ttl: DEFAULT_INFERENCE_LOG_TTL,
            inference_log_max_rows: DEFAULT_INFERENCE_LOG_MAX_ROWS,
            inference_log_queue: DEFAULT_INFERENCE_LOG_QUEUE,
            feedback_token: None,
            quality_window: DEFAULT_QUALITY_WINDOW,
            retrain: None,
            mlflow: None,
            database: None,
            admission: AdmissionSettings {
                max_in_flight: 4 * default_sessions(),
                max_queue: None,
                default_timeout: DEFAULT_REQUEST_TIMEOUT,
                cores: default_sessions(),
                shed_delay: None,
            },
            connections: ConnectionLimits {
                max_connections: DEFAULT_MAX_CONNECTIONS,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
            },
        }
    }

    /// Merges flags/env (`args`), the config file they name, and defaults, then validates.
    /// `environment` holds other tools' variables (`ORT_DYLIB_PATH`, `MLFLOW_TRACKING_*`),
    /// used when vigil's own settings do not say.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem found.
    pub fn resolve(args: ServeArgs, environment: Environment) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let file = match &args.config {
            Some(path) => read_file(path).unwrap_or_else(|problem| {
                problems.push(problem);
                FileConfig::default()
            }),
            None => FileConfig::default(),
        };
        let defaults = Config::for_models(DEFAULT_MODELS);
        let mut config = Config {
            models: args.models.or(file.models).unwrap_or(defaults.models),
            addr: args.addr.or(file.addr).unwrap_or(defaults.addr),
            grpc_addr: args
                .grpc_addr
                .or(file.grpc_addr)
                .map_or(defaults.grpc_addr, |given| given.0),
            state: args.state.or(file.state).unwrap_or(defaults.state),
            ort_lib: args
                .ort_lib
                .or(file.ort_lib)
                .or(environment.ort_dylib_path.clone()),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(defaults.max_body_bytes),
            max_batch_rows: args
                .max_batch_rows
                .or(file.max_batch_rows)
                .unwrap_or(defaults.max_batch_rows),
            sessions_per_version: args
                .sessions_per_version
                .or(file.sessions_per_version)
                .unwrap_or(defaults.sessions_per_version),
            inline_budget: args
                .inline_budget_us
                .or(file.inline_budget_us)
                .map_or(defaults.inline_budget, Duration::from_micros),
            shutdown_grace: args
                .shutdown_grace_secs
                .or(file.shutdown_grace_secs)
                .map_or(defaults.shutdown_grace, Duration::from_secs),
            admin_token: args
                .admin_token
                .or(file.admin_token)
                .filter(|t| !t.is_empty()),
            shadow_queue: args
                .shadow_queue
                .or(file.shadow_queue)
                .unwrap_or(defaults.shadow_queue),
            shadow_workers: args
                .shadow_workers
                .or(file.shadow_workers)
                .unwrap_or(defaults.shadow_workers),
            shadow_timeout: args
                .shadow_timeout_ms
                .or(file.shadow_timeout_ms)
                .map_or(defaults.shadow_timeout, Duration::from_millis),
            default_threshold: args
                .default_threshold
                .or(file.default_threshold)
                .unwrap_or(defaults.default_threshold),
            deploy_policy: args
                .deploy_policy
                .or(file.deploy_policy)
                .unwrap_or(defaults.deploy_policy),
            monitoring: args
                .monitoring
                .or(file.monitoring)
                .unwrap_or(defaults.monitoring),
            drift_window: args
                .drift_window
                .or(file.drift_window)
                .unwrap_or(defaults.drift_window),
            drift_interval: args
                .drift_interval_secs
                .or(file.drift_interval_secs)
                .map_or(defaults.drift_interval, Duration::from_secs),
            history_interval: args
                .history_interval_ms
                .or(file.history_interval_ms)
                .map_or(defaults.history_interval, Duration::from_millis),
            history_points: args
                .history_points
                .or(file.history_points)
                .unwrap_or(defaults.history_points),
            drift_alpha: args
                .drift_alpha
                .or(file.drift_alpha)
                .unwrap_or(defaults.drift_alpha),
            outlier_cut: args
                .outlier_cut
                .or(file.outlier_cut)
                .unwrap_or(defaults.outlier_cut),
            inference_log: args
                .inference_log
                .or(file.inference_log)
                .unwrap_or(defaults.inference_log),
            inference_log_ttl: args
                .inference_log_ttl
                .or(file.inference_log_ttl)
                .unwrap_or(defaults.inference_log_ttl),
            inference_log_max_rows: args
                .inference_log_max_rows
                .or(file.inference_log_max_rows)
                .unwrap_or(defaults.inference_log_max_rows),
            inference_log_queue: args
                .inference_log_queue
                .or(file.inference_log_queue)
                .unwrap_or(defaults.inference_log_queue),
            feedback_token: args
                .feedback_token
                .or(file.feedback_token)
                .filter(|t| !t.is_empty()),
            quality_window: args
                .quality_window
                .or(file.quality_window)
                .unwrap_or(defaults.quality_window),
            retrain: args
                .retrain_every_labels
                .or(file.retrain_every_labels)
                .map(|every_labels| RetrainSettings {
                    every_labels,
                    command: file.retrain_command,
                    webhook: args.retrain_webhook.or(file.retrain_webhook),
                    secret: args.retrain_secret.or(file.retrain_secret),
                }),
            mlflow: None,
            database: None,
            admission: AdmissionSettings {
                max_in_flight: args
                    .max_in_flight
                    .or(file.max_in_flight)
                    .unwrap_or(defaults.admission.max_in_flight),
                max_queue: args.max_queue.or(file.max_queue),
                default_timeout: args
                    .request_timeout_ms
                    .or(file.request_timeout_ms)
                    .map_or(defaults.admission.default_timeout, Duration::from_millis),
                cores: defaults.admission.cores,
                shed_delay: match args.shed_delay_ms.or(file.shed_delay_ms) {
                    None => defaults.admission.shed_delay,
                    Some(0) => None,
                    Some(ms) => Some(Duration::from_millis(ms)),
                },
            },
            connections: ConnectionLimits {
                max_connections: args
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(defaults.connections.max_connections),
                header_read_timeout: args
                    .header_read_timeout_ms
                    .or(file.header_read_timeout_ms)
                    .map_or(
                        defaults.connections.header_read_timeout,
                        Duration::from_millis,
                    ),
                body_read_timeout: args
                    .body_read_timeout_ms
                    .or(file.body_read_timeout_ms)
                    .map_or(
                        defaults.connections.body_read_timeout,
                        Duration::from_millis,
                    ),
                idle_timeout: args
                    .idle_timeout_secs
                    .or(file.idle_timeout_secs)
                    .map_or(defaults.connections.idle_timeout, Duration::from_secs),
            },
        };
        let given = MlflowGiven {
            uri: args.mlflow_uri.or(file.mlflow_uri),
            models: args.mlflow_models.or(file.mlflow_models),
            alias_flags: args.mlflow_aliases,
            alias_table: file.mlflow_aliases,
            poll_secs: args.mlflow_poll_secs.or(file.mlflow_poll_secs),
            webhook_secret: args.mlflow_webhook_secret.or(file.mlflow_webhook_secret),
        };
        match given.settle(&environment) {
            Ok(mlflow) => config.mlflow = mlflow,
            Err(problem) => problems.push(problem),
        }
        let database = DatabaseGiven {
            url: args.database_url.or(file.database_url),
            password_file: args.database_password_file.or(file.database_password_file),
            timeout_ms: args.database_timeout_ms.or(file.database_timeout_ms),
            poll_secs: args.state_poll_secs.or(file.state_poll_secs),
            notifications: args.state_notifications.or(file.state_notifications),
            advertise_address: args.advertise_address.or(file.advertise_address),
        };
        match database.settle(&environment) {
            Ok(database) => config.database = database,
            Err(problem) => problems.push(problem),
        }
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Every rule the settings break.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.models.is_dir() {
            problems.push(format!(
                "models: {} is not a directory",
                self.models.display()
            ));
        }
        if self.grpc_addr == Some(self.addr) && self.addr.port() != 0 {
            problems.push(format!(
                "grpc_addr: {} is also the HTTP address (addr); give gRPC its own port or `off`",
                self.addr
            ));
        }
        if self.max_body_bytes < 1024 {
            problems.push("max_body_bytes: must be at least 1024".into());
        }
        if self.max_batch_rows == 0 {
            problems.push("max_batch_rows: must be at least 1".into());
        }
        if !(1..=64).contains(&self.sessions_per_version) {
            problems.push("sessions_per_version: must be between 1 and 64".into());
        }
        if self.shadow_queue == 0 {
            problems.push("shadow_queue: must be at least 1".into());
        }
        if !(1..=64).contains(&self.shadow_workers) {
            problems.push("shadow_workers: must be between 1 and 64".into());
        }
        if self.shadow_timeout.is_zero() {
            problems.push("shadow_timeout_ms: must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.default_threshold) {
            problems.push("default_threshold: must be between 0 and 1".into());
        }
        if self.drift_window < 2 {
            problems.push("drift_window: must be at least 2".into());
        }
        if self.drift_interval.is_zero() {
            problems.push("drift_interval_secs: must be at least 1".into());
        }
        if self.history_interval < Duration::from_millis(10) {
            problems.push("history_interval_ms: must be at least 10".into());
        }
        if !(1..=100_000).contains(&self.history_points) {
            problems.push("history_points: must be between 1 and 100000".into());
        }
        if !(self.drift_alpha > 0.0 && self.drift_alpha < 1.0) {
            problems.push("drift_alpha: must be between 0 and 1 (exclusive)".into());
        }
        if !(0.0..=1.0).contains(&self.outlier_cut) {
            problems.push("outlier_cut: must be between 0 and 1".into());
        }
        if self.inference_log_max_rows == 0 {
            problems.push("inference_log_max_rows: must be at least 1".into());
        }
        if self.inference_log_queue == 0 {
            problems.push("inference_log_queue: must be at least 1".into());
        }
        if self.quality_window == 0 {
            problems.push("quality_window: must be at least 1".into());
        }
        if let Some(retrain) = &self.retrain {
            problems.extend(
                retrain
                    .problems()
                    .into_iter()
                    .map(|p| format!("retrain_{p}")),
            );
        }
        if let Some(mlflow) = &self.mlflow {
            problems.extend(mlflow.problems());
        }
        if self.admission.max_in_flight == 0 {
            problems.push("max_in_flight: must be at least 1".into());
        }
        if self.admission.default_timeout.is_zero() {
            problems.push("request_timeout_ms: must be at least 1".into());
        }
        let limits = &self.connections;
        if limits.max_connections == 0 {
            problems.push("max_connections: must be at least 1".into());
        }
        for (key, value) in [
            ("header_read_timeout_ms", limits.header_read_timeout),
            ("body_read_timeout_ms", limits.body_read_timeout),
            ("idle_timeout_secs", limits.idle_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        problems
    }
}

/// Default bound on connecting to the database and on waiting for a pooled connection.
pub const DEFAULT_DATABASE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default interval of the check for deployment changes made by other replicas.
pub const DEFAULT_STATE_POLL: Duration = Duration::from_secs(5);

/// The `database_*` settings as given by flags, env and file, before they are checked.
struct DatabaseGiven {
    url: Option<String>,
    password_file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    poll_secs: Option<u64>,
    notifications: Option<bool>,
    advertise_address: Option<String>,
}

impl DatabaseGiven {
    /// The database settings, or `None` without a URL.
    fn settle(self, environment: &Environment) -> Result<Option<DatabaseSettings>, String> {
        let Some(url) = self.url.filter(|u| !u.trim().is_empty()) else {
            return match self.password_file {
                Some(_) => Err("database_password_file: set database_url too".into()),
                None => Ok(None),
            };
        };
        let password = match &self.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("database_password_file {}: {e}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => environment.pgpassword.clone(),
        };
        let timeout = self
            .timeout_ms
            .map_or(DEFAULT_DATABASE_TIMEOUT, Duration::from_millis);
        let poll = self
            .poll_secs
            .map_or(DEFAULT_STATE_POLL, Duration::from_secs);
        if timeout.is_zero() {
            return Err("database_timeout_ms: must be at least 1".into());
        }
        if poll.is_zero() {
            return Err("state_poll_secs: must be at least 1".into());
        }
        Ok(Some(DatabaseSettings {
            url,
            password,
            timeout,
            poll,
            notifications: self.notifications.unwrap_or(true),
            advertise_address: self.advertise_address.filter(|a| !a.is_empty()),
        }))
    }
}

/// The `mlflow_*` settings as given by flags, env and file, before they are checked.
struct MlflowGiven {
    uri: Option<String>,
    models: Option<Vec<String>>,
    alias_flags: Option<Vec<String>>,
    alias_table: Option<BTreeMap<String, String>>,
    poll_secs: Option<u64>,
    webhook_secret: Option<String>,
}

impl MlflowGiven {
    /// The registry settings, or `None` when no tracking URI is given (here or in
    /// `MLFLOW_TRACKING_URI`).
    fn settle(self, environment: &Environment) -> Result<Option<MlflowSettings>, String> {
        let webhook_secret = self.webhook_secret.filter(|s| !s.is_empty());
        let uri = self
            .uri
            .or(environment.mlflow_tracking_uri.clone())
            .filter(|u| !u.is_empty());
        let Some(uri) = uri else {
            return match webhook_secret {
                Some(_) => Err("mlflow_webhook_secret: set mlflow_uri (or MLFLOW_TRACKING_URI) too; webhooks only trigger a registry sync".into()),
                None => Ok(None),
            };
        };
        let pairs: Vec<(String, String)> = match (self.alias_flags, self.alias_table) {
            (Some(flags), _) => flags
                .iter()
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(alias, role)| (alias.trim().to_string(), role.to_string()))
                        .ok_or_else(|| format!("mlflow_aliases: `{pair}`: expected alias=role"))
                })
                .collect::<Result<_, _>>()?,
            (None, Some(table)) => table.into_iter().collect(),
            (None, None) => Vec::new(),
        };
        let aliases = if pairs.is_empty() {
            MlflowSettings::default_aliases()
        } else {
            pairs
                .into_iter()
                .map(|(alias, role)| {
                    AliasRole::parse(&role)
                        .map(|role| (alias, role))
                        .map_err(|e| format!("mlflow_aliases: {e}"))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Some(MlflowSettings {
            uri,
            credentials: environment.mlflow_credentials(),
            models: self
                .models
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect(),
            aliases,
            poll: self
                .poll_secs
                .map_or(crate::mlflow::DEFAULT_POLL, Duration::from_secs),
            webhook_secret,
        }))
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let place = e.span().map_or_else(String::new, |span| {
            let line = text[..span.start].matches('\n').count() + 1;
            let shown = text.lines().nth(line - 1).unwrap_or_default().trim();
            format!(" line {line} (`{shown}`):")
        });
        format!("config file {}:{place} {}", path.display(), e.message())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
    }

    #[test]
    fn database_passwords_never_reach_what_is_shown() {
        assert_eq!(
            redact_url("postgres://vigil:s3cret@db.internal:5432/vigil?sslmode=disable"),
            "postgres://vigil:***@db.internal:5432/vigil?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://vigil@db:5432/vigil"),
            "postgresql://vigil@db:5432/vigil"
        );
        assert_eq!(redact_url("postgres://db"), "postgres://db");
        assert_eq!(
            redact_url("host=db user=vigil password=s3cret dbname=vigil"),
            "host=db user=vigil password=*** dbname=vigil"
        );
    }

    #[test]
    fn the_database_password_comes_from_its_file_else_pgpassword() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").expect("write");
        let resolve = |password_file: Option<PathBuf>, pgpassword: Option<&str>| {
            Config::resolve(
                ServeArgs {
                    models: Some(models_dir()),
                    database_url: Some("postgres://vigil@db/vigil".into()),
                    database_password_file: password_file,
                    state_poll_secs: Some(2),
                    ..ServeArgs::default()
                },
                Environment {
                    pgpassword: pgpassword.map(str::to_string),
                    ..Environment::default()
                },
            )
        };
        let config = resolve(Some(file.clone()), Some("from-env")).expect("valid");
        let database = config.database.expect("database settings");
        assert_eq!(database.password.as_deref(), Some("from-file"));
        assert_eq!(database.poll, Duration::from_secs(2));
        assert!(database.notifications);
        assert!(!format!("{database:?}").contains("from-file"));
        let config = resolve(None, Some("from-env")).expect("valid");
        assert_eq!(
            config.database.and_then(|d| d.password).as_deref(),
            Some("from-env")
        );
        let missing = resolve(Some(dir.path().join("absent")), None)
            .expect_err("an unreadable password file is refused");
        assert!(
            missing.to_string().contains("database_password_file"),
            "{missing}"
        );
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vigil.toml");
        std::fs::write(
            &file,
            format!(
                "models = {:?}\nmax_batch_rows = 7\nmax_body_bytes = 2048\n",
                models_dir()
            ),
        )
        .expect("write config");
        let args = ServeArgs {
            config: Some(file),
            max_batch_rows: Some(9),
            ..ServeArgs::default()
        };
        let config = Config::resolve(
            args,
            Environment {
                ort_dylib_path: Some(PathBuf::from("/lib/ort.so")),
                ..Environment::default()
            },
        )
        .expect("valid");
        assert_eq!(config.max_batch_rows, 9);
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.models, models_dir());
        assert_eq!(config.ort_lib, Some(PathBuf::from("/lib/ort.so")));
        assert_eq!(config.addr, DEFAULT_ADDR.parse().expect("address"));
        assert_eq!(
            config.grpc_addr,
            Some(DEFAULT_GRPC_ADDR.parse().expect("address"))
        );
    }

    #[test]
    fn grpc_addr_takes_an_address_or_off_and_must_not_share_the_http_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vigil.toml");
        std::fs::write(
            &file,
            format!("models = {:?}\ngrpc_addr = \"off\"\n", models_dir()),
        )
        .expect("write config");
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let config = Config::resolve(from_file, Environment::default()).expect("valid");
        assert_eq!(config.grpc_addr, None);
        let flag = ServeArgs {
            config: Some(file.clone()),
            grpc_addr: Some("0.0.0.0:9001".parse().expect("address")),
            ..ServeArgs::default()
        };
        let config = Config::resolve(flag, Environment::default()).expect("valid");
        assert_eq!(
            config.grpc_addr,
            Some("0.0.0.0:9001".parse().expect("addr"))
        );
        let err = "nowhere".parse::<GrpcAddr>().unwrap_err();
        assert!(err.contains("`nowhere` is not a listen address"), "{err}");
        let clash = ServeArgs {
            config: Some(file),
            addr: Some("127.0.0.1:9002".parse().expect("address")),
            grpc_addr: Some("127.0.0.1:9002".parse().expect("address")),
            ..ServeArgs::default()
        };
        let err = Config::resolve(clash, Environment::default()).unwrap_err();
        assert!(
            err.to_string().contains("grpc_addr: 127.0.0.1:9002"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vigil.toml");
        std::fs::write(&file, "max_rows = 3\n").expect("write config");
        let args = ServeArgs {
            config: Some(file),
            models: Some(dir.path().join("missing")),
            sessions_per_version: Some(0),
            ..ServeArgs::default()
        };
        let err = Config::resolve(args, Environment::default()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 3, "{text}");
        assert!(text.contains("max_rows"), "{text}");
        assert!(text.contains("is not a directory"), "{text}");
        assert!(text.contains("sessions_per_version"), "{text}");
    }

    #[test]
    fn durations_take_a_unit_and_refuse_zero_and_overflow() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_duration(" 14d "), Ok(Duration::from_secs(1_209_600)));
        for bad in ["0d", "", "d", "1.5h", "-3d", "3w", "99999999999999999999d"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("s, m, h or d"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_file_takes_durations_as_text_or_seconds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vigil.toml");
        let resolve = |text: &str| {
            std::fs::write(&file, format!("models = {:?}\n{text}", models_dir())).expect("write");
            Config::resolve(
                ServeArgs {
                    config: Some(file.clone()),
                    ..ServeArgs::default()
                },
                Environment::default(),
            )
        };
        let text = resolve("inference_log_ttl = \"2h\"\n").expect("valid");
        assert_eq!(text.inference_log_ttl, Duration::from_secs(7_200));
        let seconds = resolve("inference_log_ttl = 60\n").expect("valid");
        assert_eq!(seconds.inference_log_ttl, Duration::from_secs(60));
        let defaulted = resolve("").expect("valid");
        assert_eq!(defaulted.inference_log_ttl, DEFAULT_INFERENCE_LOG_TTL);
        let error = resolve("inference_log_ttl = \"2 weeks\"\n").unwrap_err();
        assert!(error.to_string().contains("inference_log_ttl"), "{error}");
    }

    #[test]
    fn registry_settings_come_from_flags_file_and_mlflows_own_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vigil.toml");
        std::fs::write(
            &file,
            format!(
                "models = {:?}\nmlflow_models = [\"fraud\"]\nmlflow_poll_secs = 5\n[mlflow_aliases]\nprod = \"champion\"\ncanary = \"shadow:0.1\"\n",
                models_dir()
            ),
        )
        .expect("write config");
        let environment = Environment {
            mlflow_tracking_uri: Some("http://mlflow.internal:5000".into()),
            mlflow_tracking_username: Some("svc".into()),
            mlflow_tracking_password: Some("pw".into()),
            ..Environment::default()
        };
        let args = || ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let config = Config::resolve(args(), environment.clone()).expect("valid");
        let mlflow = config.mlflow.expect("registry followed");
        assert_eq!(mlflow.uri, "http://mlflow.internal:5000");
        assert_eq!(mlflow.models, ["fraud"]);
        assert_eq!(mlflow.poll, Duration::from_secs(5));
        assert_eq!(mlflow.aliases.get("prod"), Some(&AliasRole::Champion));
        assert_eq!(mlflow.aliases.get("canary"), Some(&AliasRole::Shadow(0.1)));
        assert_eq!(
            mlflow.credentials,
            Some(Credentials::Basic {
                username: "svc".into(),
                password: "pw".into()
            })
        );
        let flagged = ServeArgs {
            mlflow_uri: Some("https://registry.example".into()),
            mlflow_aliases: Some(vec!["live=champion".into()]),
            ..args()
        };
        let mlflow = Config::resolve(flagged, environment)
            .expect("valid")
            .mlflow
            .expect("registry followed");
        assert_eq!(mlflow.uri, "https://registry.example");
        assert_eq!(mlflow.aliases.len(), 1);
        let defaulted = Config::resolve(args(), Environment::default()).expect("valid");
        assert!(defaulted.mlflow.is_none(), "no URI, no registry");
        let secret_only = ServeArgs {
            mlflow_webhook_secret: Some("s".into()),
            ..args()
        };
        let error = Config::resolve(secret_only, Environment::default()).unwrap_err();
        assert!(
            error.to_string().contains("mlflow_webhook_secret"),
            "{error}"
        );
        let bad_role = ServeArgs {
            mlflow_uri: Some("http://127.0.0.1:5000".into()),
            mlflow_aliases: Some(vec!["champion=leader".into()]),
            ..args()
        };
        let error = Config::resolve(bad_role, Environment::default()).unwrap_err();
        assert!(error.to_string().contains("mlflow_aliases"), "{error}");
    }
}
