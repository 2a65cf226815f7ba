//! vigil: a low-latency inference gateway for ONNX models.
//!
//! # Request path
//!
//! ```text
//! client ──HTTP──▶ api (decode + validate) ──▶ serving::Registry::resolve (model → version)
//!                                              └─▶ serving::Registry::predict
//!                                                    ├─ fit inputs to the signature (names, shapes, types)
//!                                                    └─ engine::Model::run (ort session pool / tract plan),
//!                                                       inline when cheap, on the blocking pool when not
//! client ◀──HTTP── api (encode: v2 JSON or binary tensors, or v1 predictions)
//! ```
//!
//! # Layout
//!
//! - [`config`]: settings from file, env and flags, validated once.
//! - [`repository`]: the model repository on disk and each version's metadata.
//! - [`engine`]: the `Model` trait, ONNX Runtime and tract backends, tensors.
//! - [`serving`]: loaded versions, resolving requests, running predictions.
//! - [`api`]: HTTP routes and the one mapping from errors to status codes.
//! - [`shutdown`]: the SIGINT/SIGTERM signal.

pub mod api;
pub mod config;
pub mod engine;
pub mod repository;
pub mod serving;
pub mod shutdown;

use crate::config::Config;
use crate::engine::{EngineError, Engines};
use crate::repository::RepositoryError;
use crate::serving::{Registry, ServingOptions};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the gateway could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// ONNX Runtime could not be found or loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The model repository could not be read.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// A file-system or socket operation failed.
    #[error("{0}")]
    Io(String),
}

/// Finds and loads ONNX Runtime as `config` says, then loads every version of the repository.
///
/// # Errors
/// [`StartupError`] when the runtime or the repository cannot be used. A single version that
/// fails to load does not fail start-up; it is reported as unavailable.
pub async fn load(config: &Config) -> Result<(Engines, Registry), StartupError> {
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
    let options = ServingOptions {
        max_batch_rows: config.max_batch_rows,
        inline_budget: config.inline_budget,
    };
    let models = config.models.clone();
    let loader = engines.clone();
    let registry = tokio::task::spawn_blocking(move || Registry::load(&models, &loader, options))
        .await
        .map_err(|e| StartupError::Io(e.to_string()))??;
    Ok((engines, registry))
}

/// Runs the gateway on `listener` until `shutdown` completes, then stops accepting connections,
/// lets in-flight requests finish (within `config.shutdown_grace`) and returns.
///
/// # Errors
/// [`StartupError`] when start-up fails or the server stops with an I/O error.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    std::fs::create_dir_all(&config.state).map_err(|e| {
        StartupError::Io(format!(
            "cannot create state directory {}: {e}",
            config.state.display()
        ))
    })?;
    let (_engines, registry) = load(&config).await?;
    let state = api::AppState::new(Arc::new(registry), config.max_body_bytes);
    let app = api::router(state.clone());
    let address = listener
        .local_addr()
        .map_err(|e| StartupError::Io(e.to_string()))?;
    tracing::info!(%address, "serving");

    // Shutdown: (1) the signal fires, (2) readiness turns false and the listener stops accepting,
    // (3) in-flight requests finish, bounded by the grace period.
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = state.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        draining.start_draining();
        tracing::info!("shutdown signal received; draining in-flight requests");
        let _ = signalled_tx.send(());
    });
    let grace = config.shutdown_grace;
    let deadline = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.map_err(|e| StartupError::Io(e.to_string()))?,
        () = deadline => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
    tracing::info!("stopped");
    Ok(())
}
