//! vigil: a low-latency inference gateway for ONNX models.
//!
//! # Request path
//!
//! ```text
//! client ──HTTP/gRPC──▶ api (decode + validate; observe.rs counts the outcome)
//!                        └─▶ serving::Registry::route: one load of the model's DeploymentState
//!                              → champion (or the named version), threshold and shadows of that snapshot
//!                        └─▶ serving::Registry::predict
//!                              ├─ fit inputs to the signature (names, shapes, types)
//!                              ├─ engine::Model::run (ort session pool / tract plan),
//!                              │    inline when cheap, on the blocking pool when not
//!                              ├─ confidence + accepted outputs (the snapshot's threshold)
//!                              ├─ monitor::VersionMonitor::record(Observation): O(features) per row
//!                              └─ mirror queues of the snapshot's shadows (try_send; full ⇒ dropped,
//!                                   counted) ──▶ shadow worker threads (off the path)
//! client ◀──HTTP/gRPC── api (encode: v2 JSON or binary tensors, v1 predictions, gRPC messages)
//! ```
//!
//! # Change path
//!
//! ```text
//! admin API / start-up / deploy policy / rescan / promotion / mlflow registry sync
//!   └─▶ serving::commit: per-model lock + If-Match → prepare (load, warm, mirrors; blocking pool)
//!         → plan (pure) → store::DeploymentStore::commit (audit entry, then state file)
//!         → one ArcSwap store (infallible)
//! ```
//!
//! # Layout
//!
//! - [`config`]: settings from file, env and flags, validated once.
//! - [`repository`]: the model repository on disk and each version's metadata.
//! - [`engine`]: the `Model` trait, ONNX Runtime and tract backends, tensors.
//! - [`serving`]: loaded versions, each model's deployment value and its one change path,
//!   routing and predictions, shadow mirrors.
//! - [`monitor`]: latency and request figures, drift windows and KS tests, outlier scores,
//!   shadow comparison, the views of them.
//! - [`feedback`]: ground truth by request id, live quality, promotion evidence, retraining.
//! - [`metrics`]: every metric name, label and bucket; the Prometheus recorder.
//! - [`store`]: durable deployments (one state file per model), the audit log, the inference
//!   log and feedback.
//! - [`mlflow`]: the MLflow Model Registry followed: aliases decide champions and shadows.
//! - [`api`]: HTTP routes and the OIP gRPC service, admin auth, revisions (`ETag`/`If-Match`),
//!   and the one mapping from errors to status codes.
//! - [`client`]: the admin API client behind `vigil admin`.
//! - [`clock`]: wall-clock time as recorded (epoch milliseconds, RFC 3339).
//! - [`shutdown`]: the SIGINT/SIGTERM signal.
//! - [`signature`]: webhook signatures (HMAC-SHA256, as MLflow writes them).

pub mod api;
pub mod client;
pub mod clock;
pub mod config;
pub mod engine;
pub mod feedback;
pub mod listener;
pub mod metrics;
pub mod mlflow;
pub mod monitor;
pub mod replication;
pub mod repository;
pub mod serving;
pub mod shutdown;
pub mod signature;
pub mod store;

use crate::config::Config;
use crate::engine::{EngineError, Engines};
use crate::feedback::log::LogSettings;
use crate::feedback::{Candidate, Feedback, FeedbackSettings, InferenceLog};
use crate::mlflow::RegistrySync;
use crate::monitor::MonitorSettings;
use crate::replication::Replication;
use crate::serving::{
    DeploymentDefaults, HistorySettings, LoadContext, MirrorSettings, Registry, RegistrySettings,
    ServingError, ServingOptions,
};
use crate::store::{
    DeploymentFiles, DeploymentStore, FeedbackStore, PostgresStore, SqliteFeedbackStore,
    StoreError, redact_url,
};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The directory under `--state` that holds what the registry sync downloads and remembers.
const MLFLOW_DIR: &str = "mlflow";

/// Why the gateway could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// ONNX Runtime could not be found or loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The deployment state could not be read or written.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The repository could not be read, or the saved deployments could not be applied.
    #[error(transparent)]
    Deployments(#[from] ServingError),
    /// A file-system or socket operation failed.
    #[error("{0}")]
    Io(String),
    /// The database named by `--database-url` cannot be used: start-up is refused.
    #[error("{0}")]
    Database(String),
}

/// A loaded gateway: engines, the registry of models, and the feedback loop when the state
/// directory is used and the inference log is on.
pub struct Loaded {
    /// The engines.
    pub engines: Engines,
    /// Every model and its deployment.
    pub registry: Registry,
    /// The feedback loop and the receiver of its promotion candidates.
    pub feedback: Option<(
        Arc<Feedback>,
        tokio::sync::mpsc::UnboundedReceiver<Candidate>,
    )>,
    /// The database shared with other replicas, when `--database-url` names one.
    pub database: Option<PostgresStore>,
}

/// Finds and loads ONNX Runtime as `config` says, loads every version of the repository, and,
/// when `with_state` is set, applies the deployments saved under `config.state` and starts the
/// feedback loop (when the inference log is on).
///
/// # Errors
/// [`StartupError`] when the runtime, the repository or the state cannot be used. A single
/// version that fails to load does not fail start-up; it is reported as unavailable.
pub async fn load(config: &Config, with_state: bool) -> Result<Loaded, StartupError> {
    let library = engine::locate_library(config.ort_lib.as_deref())?;
    let sessions = config.sessions_per_version;
    let engines = tokio::task::spawn_blocking(move || Engines::new(&library, sessions))
        .await
        .map_err(|e| StartupError::Io(e.to_string()))??;
    tracing::info!(
        library = %engines.ort().path().display(),
        version = engines.ort().version(),
        "ONNX Runtime loaded"
    );
    let metrics = Arc::new(metrics::Metrics::new());
    let database = match (&config.database, with_state) {
        (Some(settings), true) => {
            Some(PostgresStore::connect(settings).await.map_err(|error| {
                StartupError::Database(format!(
                    "cannot use the database {}: {error}",
                    redact_url(&settings.url)
                ))
            })?)
        }
        _ => None,
    };
    let store: Option<Arc<dyn DeploymentStore>> = if let Some(database) = &database {
        Some(Arc::new(database.clone()))
    } else if with_state {
        let dir = config.state.clone();
        Some(Arc::new(
            tokio::task::spawn_blocking(move || DeploymentFiles::open(&dir))
                .await
                .map_err(|e| StartupError::Io(e.to_string()))??,
        ))
    } else {
        None
    };
    let feedback = if with_state && config.inference_log {
        Some(start_feedback(config, database.as_ref(), Arc::clone(&metrics)).await?)
    } else {
        None
    };
    let settings = RegistrySettings {
        options: ServingOptions {
            max_batch_rows: config.max_batch_rows,
            inline_budget: config.inline_budget,
        },
        mirror: MirrorSettings {
            queue_capacity: config.shadow_queue,
            workers: config.shadow_workers,
            timeout: config.shadow_timeout,
            max_batch_rows: config.max_batch_rows,
        },
        defaults: DeploymentDefaults {
            threshold: config.default_threshold,
            policy: config.deploy_policy,
        },
        log: feedback.as_ref().map(|(f, _)| Arc::clone(f.log())),
        feedback: feedback.as_ref().map(|(f, _)| Arc::clone(f)),
        registry_versions: config
            .mlflow
            .as_ref()
            .filter(|_| with_state)
            .map(|_| RegistrySync::versions_dir(&config.state.join(MLFLOW_DIR))),
        admission: config.admission,
        history: HistorySettings {
            interval: config.history_interval,
            points: config.history_points,
        },
    };
    let models = config.models.clone();
    let loader = LoadContext {
        engines: engines.clone(),
        metrics,
        monitor: MonitorSettings {
            enabled: config.monitoring,
            window_rows: config.drift_window,
            alpha: config.drift_alpha,
            outlier_cut: config.outlier_cut,
        },
    };
    let registry = Registry::start(&models, loader, settings, store).await?;
    if let Some((feedback, _)) = &feedback {
        feedback
            .restore()
            .await
            .map_err(|e| StartupError::Io(e.to_string()))?;
    }
    Ok(Loaded {
        engines,
        registry,
        feedback,
        database,
    })
}

/// Opens the feedback store (the shared `database`, else SQLite under `config.state`) and
/// starts the inference log and the feedback loop.
async fn start_feedback(
    config: &Config,
    database: Option<&PostgresStore>,
    metrics: Arc<metrics::Metrics>,
) -> Result<
    (
        Arc<Feedback>,
        tokio::sync::mpsc::UnboundedReceiver<Candidate>,
    ),
    StartupError,
> {
    let store: Arc<dyn FeedbackStore> = match database {
        Some(database) => Arc::new(database.clone()),
        None => Arc::new(SqliteFeedbackStore::open(&config.state).await?),
    };
    let log = InferenceLog::start(
        Arc::clone(&store),
        LogSettings {
            queue: config.inference_log_queue,
            ttl: config.inference_log_ttl,
            max_rows: config.inference_log_max_rows,
        },
        Arc::clone(&metrics),
    );
    Ok(Feedback::start(
        store,
        log,
        metrics,
        FeedbackSettings {
            quality_window: config.quality_window,
            exports: config.state.join("exports"),
            retrain: config.retrain.clone(),
            shared: database
                .and(config.database.as_ref())
                .map(|settings| settings.poll),
        },
    ))
}

/// The sockets a gateway serves on: HTTP, and gRPC unless it is off.
pub struct Listeners {
    /// The HTTP listener (REST, admin API, metrics, console).
    pub http: TcpListener,
    /// The Open Inference Protocol gRPC listener.
    pub grpc: Option<TcpListener>,
}

impl Listeners {
    /// Binds `config.addr` and, unless it is off, `config.grpc_addr`.
    ///
    /// # Errors
    /// [`StartupError::Io`] naming the address that cannot be bound.
    pub async fn bind(config: &Config) -> Result<Listeners, StartupError> {
        let bind = |addr: std::net::SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| StartupError::Io(format!("cannot listen on {addr}: {e}")))
        };
        let http = bind(config.addr).await?;
        let grpc = match config.grpc_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Listeners { http, grpc })
    }
}

/// Runs the gateway on `listeners` until `shutdown` completes, then stops accepting connections,
/// lets in-flight requests finish (within `config.shutdown_grace`) and returns.
///
/// # Errors
/// [`StartupError`] when start-up fails or the server stops with an I/O error.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let Listeners {
        http: listener,
        grpc: grpc_listener,
    } = listeners;
    let Loaded {
        registry,
        feedback,
        database,
        ..
    } = load(&config, true).await?;
    for model in registry.models() {
        let state = model.deployment();
        if let Some(champion) = &state.champion {
            tracing::info!(
                model = %state.model,
                revision = state.revision,
                champion = %champion.version,
                threshold = state.threshold,
                policy = %state.policy,
                "deployment"
            );
        }
    }
    let registry = Arc::new(registry);
    let (feedback, promoter) = match feedback {
        Some((feedback, candidates)) => (
            Some(feedback),
            Some(tokio::spawn(promote_on_evidence(
                Arc::clone(&registry),
                candidates,
            ))),
        ),
        None => (None, None),
    };
    let sync = match &config.mlflow {
        Some(settings) => Some(Arc::new(
            RegistrySync::new(
                settings.clone(),
                Arc::clone(&registry),
                config.state.join(MLFLOW_DIR),
            )
            .map_err(|e| StartupError::Io(e.to_string()))?,
        )),
        None => None,
    };
    let syncing = sync.clone().map(|sync| tokio::spawn(sync.run()));
    let address = listener
        .local_addr()
        .map_err(|e| StartupError::Io(e.to_string()))?;
    let replication = match (database, &config.database) {
        (Some(store), Some(settings)) => Some(Replication::new(
            Arc::clone(&registry),
            store,
            settings,
            address.to_string(),
        )),
        _ => None,
    };
    let replicating = replication
        .clone()
        .map(|replication| tokio::spawn(replication.run()));
    let state = api::AppState::new(
        Arc::clone(&registry),
        api::Access {
            max_body_bytes: config.max_body_bytes,
            admin_token: config.admin_token.clone(),
            feedback_token: config.feedback_token.clone(),
        },
        feedback.clone(),
        sync,
        replication,
    );
    let history = tokio::spawn(Arc::clone(&registry).record_history());
    let evaluator = tokio::spawn(evaluate_periodically(registry, config.drift_interval));
    let app = api::router(state.clone());
    let grpc_address = grpc_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(|e| StartupError::Io(e.to_string()))?;
    match grpc_address {
        Some(grpc_address) => tracing::info!(%address, %grpc_address, "serving"),
        None => tracing::info!(%address, "serving"),
    }

    // Shutdown: (1) the signal fires, (2) readiness turns false (new inferences get 503) and the
    // listeners stop accepting, (3) in-flight requests finish, bounded by the grace period.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let acceptor = |listener| listener::Acceptor::new(listener, &config.connections);
    let grpc = grpc_listener.map(|grpc_listener| {
        tokio::spawn(api::grpc::serve(
            acceptor(grpc_listener),
            state.clone(),
            stop,
            config.shutdown_grace,
        ))
    });
    let draining = state.clone();
    let signalled = async move {
        shutdown.await;
        draining.start_draining();
        stopping.send_replace(true);
        tracing::info!("shutdown signal received; draining in-flight requests");
    };
    listener::serve(
        acceptor(listener),
        app,
        config.connections,
        signalled,
        config.shutdown_grace,
    )
    .await;
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the gRPC service stopped with an error"),
            Err(error) => tracing::error!(%error, "the gRPC service failed"),
        }
    }
    // (4) Background work stops: the evaluator, the history and the promoter at once; the
    // feedback intake takes no more, and the inference log writes what it has queued.
    evaluator.abort();
    history.abort();
    if let Some(replicating) = replicating {
        replicating.abort();
    }
    if let Some(syncing) = syncing {
        syncing.abort();
    }
    if let Some(promoter) = promoter {
        promoter.abort();
    }
    if let Some(feedback) = feedback {
        feedback.close();
        feedback.log().close().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Promotes the shadows the feedback loop's evidence shows better (automatic promotion), one at
/// a time, through the deployment change path.
async fn promote_on_evidence(
    registry: Arc<Registry>,
    mut candidates: tokio::sync::mpsc::UnboundedReceiver<Candidate>,
) {
    while let Some(candidate) = candidates.recv().await {
        let (model, shadow) = (candidate.model.clone(), candidate.shadow.clone());
        match registry.promote_on_evidence(candidate).await {
            Ok(Some(report)) => tracing::info!(
                %model, %shadow, revision = report.revision, "shadow promoted on evidence"
            ),
            Ok(None) => {}
            Err(error) => tracing::warn!(%model, %shadow, %error, "promotion on evidence failed"),
        }
    }
}

/// The background drift evaluator: every `interval`, every served version's window against its
/// reference. Runs until aborted at shutdown.
async fn evaluate_periodically(registry: Arc<Registry>, interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(error) = registry.evaluate_drift(None).await {
            tracing::warn!(%error, "drift evaluation failed");
        }
    }
}
