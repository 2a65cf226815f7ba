//! HTTP API (and the gRPC service beside it). Routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /v2` | server metadata |
//! | `GET /v2/health/live`, `GET /v2/health/ready` | liveness, readiness |
//! | `GET /v2/models/{m}[/versions/{v}]` | model metadata (platform, inputs, outputs) |
//! | `GET /v2/models/{m}[/versions/{v}]/ready` | model readiness |
//! | `POST /v2/models/{m}[/versions/{v}]/infer` | OIP inference, JSON or binary tensors |
//! | `POST /v2/repository/index` | every version with `READY`/`UNAVAILABLE` and reason |
//! | `POST /v1/models/{m}[/versions/{v}]:predict` | TF-Serving-style JSON |
//! | `GET /v1/models/{m}[/versions/{v}]` | TF-Serving-style version status |
//! | `GET /metrics` | Prometheus text |
//! | `GET /admin/models`, `GET /admin/models/{m}` | models, versions, deployments (admin) |
//! | `PUT /admin/models/{m}/champion` | promote a version (admin) |
//! | `PUT`/`DELETE /admin/models/{m}/shadows/{v}` | add/change or remove a shadow (admin) |
//! | `PUT /admin/models/{m}/threshold`, `PUT /admin/models/{m}/policy` | threshold, deploy policy (admin) |
//! | `POST /admin/models/{m}/rollback` | previous champion back (admin) |
//! | `GET /admin/models/{m}/versions/{v}/download` | the version directory as `.tar.gz` (admin) |
//! | `POST /admin/repository/rescan` | load new version directories (admin) |
//! | `GET /admin/models/{m}/monitoring` | latency, errors, acceptance, predictions, drift, outliers, shadows (admin) |
//! | `POST /admin/models/{m}/monitoring/evaluate` | run the drift evaluation now (admin) |
//! | `GET /admin/models/{m}/monitoring/history` | figures over time per served version (admin) |
//! | `GET /admin/replicas` | the replicas sharing the database: what each serves, lag, heartbeat (admin) |
//! | `GET /admin/models/{m}/audit` | the model's audited deployment changes, newest first (admin) |
//! | `POST /v2/repository/models/{m}/load`, `/unload` | OIP repository extension (admin) |
//! | `POST /v1/models/{m}/feedback` | ground truth by request id (feedback or admin token) |
//! | `GET /admin/models/{m}/quality` | live quality per version, promotion evidence (admin) |
//! | `PUT /admin/models/{m}/promotion` | promotion rule: mode, alpha, min/max labels (admin) |
//! | `GET`/`PUT /admin/models/{m}/retrain` | retraining trigger settings (admin) |
//! | `POST /hooks/mlflow` | signed MLflow webhook: sync with the registry now (404 without a secret) |
//! | `GET /console/` | the web console (static files; its data calls use the admin API) |
//!
//! The same protocol over gRPC (`inference.GRPCInferenceService`) is served by [`grpc`] on its
//! own listener.
//!
//! Admin routes require `Authorization: Bearer <token>` (`auth.rs`); with no token configured
//! they answer 403. Handlers are thin: decode, call `serving`, encode. Errors become responses in
//! `error.rs`.

mod admin;
mod auth;
mod binary;
mod body;
mod catalog;
mod console;
pub mod decode;
mod error;
mod feedback;
pub mod grpc;
mod health;
mod hooks;
mod observe;
mod outputs;
mod registry_guard;
mod request_id;
mod revision;
mod v1;
mod v2;
pub mod v2_types;

pub use self::error::ApiError;
use crate::feedback::Feedback;
use crate::mlflow::RegistrySync;
use crate::monitor::Protocol;
use crate::replication::Replication;
use crate::serving::Registry;
use axum::Router;
use axum::http::{Method, Uri};
use axum::routing::{any, get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared state of every handler: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Who may call what, and how much they may send.
#[derive(Clone, Default)]
pub struct Access {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The admin API's bearer token; `None` disables the admin API.
    pub admin_token: Option<String>,
    /// The feedback API's bearer token (the admin token also works).
    pub feedback_token: Option<String>,
}

struct Inner {
    registry: Arc<Registry>,
    feedback: Option<Arc<Feedback>>,
    registry_sync: Option<Arc<RegistrySync>>,
    replication: Option<Arc<Replication>>,
    max_body_bytes: usize,
    admin_token: Option<String>,
    feedback_token: Option<String>,
    draining: AtomicBool,
    /// `vigil_requests_in_flight` per protocol (in [`Protocol::ALL`] order), resolved once.
    in_flight: [::metrics::Gauge; 3],
    request_prefix: u64,
    request_counter: AtomicU64,
}

impl AppState {
    /// State over a loaded registry, its feedback loop, model registry sync and replication
    /// (each when there is one).
    pub fn new(
        registry: Arc<Registry>,
        access: Access,
        feedback: Option<Arc<Feedback>>,
        registry_sync: Option<Arc<RegistrySync>>,
        replication: Option<Arc<Replication>>,
    ) -> AppState {
        let request_prefix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            & 0xffff_ffff;
        let in_flight = Protocol::ALL.map(|protocol| {
            registry
                .metrics()
                .gauge(crate::metrics::IN_FLIGHT, &[("protocol", protocol.label())])
        });
        AppState(Arc::new(Inner {
            registry,
            feedback,
            registry_sync,
            replication,
            max_body_bytes: access.max_body_bytes,
            admin_token: access.admin_token,
            feedback_token: access.feedback_token,
            draining: AtomicBool::new(false),
            in_flight,
            request_prefix,
            request_counter: AtomicU64::new(0),
        }))
    }

    /// The in-flight gauge of `protocol`.
    pub fn in_flight(&self, protocol: Protocol) -> &::metrics::Gauge {
        &self.0.in_flight[protocol.index()]
    }

    /// The model registry.
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// Largest body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.0.max_body_bytes
    }

    /// The admin token, when the admin API is enabled.
    pub fn admin_token(&self) -> Option<&str> {
        self.0.admin_token.as_deref()
    }

    /// The feedback API's own token, when one is configured.
    pub fn feedback_token(&self) -> Option<&str> {
        self.0.feedback_token.as_deref()
    }

    /// The feedback loop, when the gateway has one.
    pub fn feedback(&self) -> Option<&Arc<Feedback>> {
        self.0.feedback.as_ref()
    }

    /// The model registry sync, when a registry is followed.
    pub fn registry_sync(&self) -> Option<&Arc<RegistrySync>> {
        self.0.registry_sync.as_ref()
    }

    /// This replica's part in a fleet sharing a database, when there is one.
    pub fn replication(&self) -> Option<&Arc<Replication>> {
        self.0.replication.as_ref()
    }

    /// Marks the gateway as draining: readiness turns false, in-flight requests still finish.
    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Release);
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    /// A request id unique within this process and unlikely to repeat across restarts.
    pub fn next_request_id(&self) -> std::sync::Arc<str> {
        use std::io::Write;
        let n = self.0.request_counter.fetch_add(1, Ordering::Relaxed);
        // `{prefix:08x}-{n:x}` is at most 8 + 1 + 16 bytes: written on the stack, so the id
        // costs one allocation (the `Arc`).
        let mut text = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        let _ = write!(cursor, "{:08x}-{n:x}", self.0.request_prefix);
        let written = usize::try_from(cursor.position()).unwrap_or(0);
        std::sync::Arc::from(std::str::from_utf8(&text[..written]).unwrap_or_default())
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// Every route, with `state` attached.
pub fn router(state: AppState) -> Router {
    let admin = admin::routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    Router::new()
        .merge(admin)
        .route("/v2", get(health::server_metadata))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2/models/{model}", get(v2::model_metadata))
        .route("/v2/models/{model}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(v2::version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(v2::version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(v2::infer_version),
        )
        .route("/v2/repository/index", post(v2::repository_index))
        .route("/v1/models/{*rest}", any(v1::dispatch))
        .route("/metrics", get(health::metrics))
        .route("/hooks/mlflow", post(hooks::mlflow))
        .merge(console::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}
