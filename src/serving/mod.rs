//! Serving: the registry of models and their loaded versions, resolving a request to a version,
//! and running a prediction (inline for cheap calls, on the blocking pool for expensive ones).

mod error;
mod outputs;
mod predict;
mod version;

pub use self::error::ServingError;
pub use self::outputs::{OutputRoles, RowPrediction, row_predictions};
pub use self::predict::{NamedInput, fit_inputs};
pub use self::version::{InferenceCost, LoadError, LoadedVersion};
use crate::engine::{Engines, Tensor};
use crate::repository::{self, Metadata, RepositoryError, VersionDir};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Limits and choices that apply to every prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingOptions {
    /// Most rows accepted in one request.
    pub max_batch_rows: usize,
    /// Calls expected to take longer than this run on the blocking pool instead of the async
    /// worker that received the request.
    pub inline_budget: Duration,
}

/// The state of one version.
#[derive(Debug, Clone)]
pub enum VersionStatus {
    /// Loaded, warmed and serving.
    Ready(Arc<LoadedVersion>),
    /// Not serving, and why.
    Unavailable(String),
}

/// A version as the registry knows it: loaded or not.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    /// Version name.
    pub version: String,
    /// Its metadata, when `model.toml` could be read.
    pub metadata: Option<Metadata>,
    /// Loaded or why not.
    pub status: VersionStatus,
}

/// A model and all its versions, in version order.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Model name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<VersionEntry>,
}

impl ModelEntry {
    /// The version unversioned requests go to: the highest ready version.
    pub fn default_version(&self) -> Option<&Arc<LoadedVersion>> {
        self.versions.iter().rev().find_map(|v| match &v.status {
            VersionStatus::Ready(loaded) => Some(loaded),
            VersionStatus::Unavailable(_) => None,
        })
    }
}

/// The outcome of a prediction, tied to the version that produced it.
#[derive(Debug)]
pub struct Prediction {
    /// The version that ran.
    pub version: Arc<LoadedVersion>,
    /// Outputs in signature order.
    pub outputs: Vec<Tensor>,
    /// Rows predicted.
    pub rows: usize,
}

/// Every model the gateway serves. Built once at start-up.
#[derive(Debug)]
pub struct Registry {
    models: BTreeMap<String, ModelEntry>,
    options: ServingOptions,
}

fn load_entry(dir: &VersionDir, engines: &Engines) -> VersionEntry {
    let status = match LoadedVersion::load(dir, engines) {
        Ok(loaded) => {
            tracing::info!(
                model = %dir.model,
                version = %dir.version,
                engine = %loaded.metadata.engine,
                task = %loaded.metadata.task,
                load_ms = loaded.load_time.as_secs_f64() * 1e3,
                one_row_us = loaded.cost.fixed.as_secs_f64() * 1e6,
                per_row_us = loaded.cost.per_row.as_secs_f64() * 1e6,
                "version loaded"
            );
            VersionStatus::Ready(Arc::new(loaded))
        }
        Err(error) => {
            tracing::warn!(model = %dir.model, version = %dir.version, %error, "version unavailable");
            VersionStatus::Unavailable(error.to_string())
        }
    };
    VersionEntry {
        version: dir.version.clone(),
        metadata: dir.read_metadata().ok(),
        status,
    }
}

impl Registry {
    /// Discovers and loads every version under `root`. A version that fails to load is kept as
    /// unavailable with its reason; it does not stop the others.
    ///
    /// # Errors
    /// [`RepositoryError`] when `root` itself cannot be read.
    pub fn load(
        root: &Path,
        engines: &Engines,
        options: ServingOptions,
    ) -> Result<Registry, RepositoryError> {
        let mut models = BTreeMap::new();
        for model in repository::discover(root)? {
            let versions = model
                .versions
                .iter()
                .map(|dir| load_entry(dir, engines))
                .collect();
            models.insert(
                model.name.clone(),
                ModelEntry {
                    name: model.name,
                    versions,
                },
            );
        }
        Ok(Registry { models, options })
    }

    /// Every model, by name.
    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// The serving options in force.
    pub fn options(&self) -> ServingOptions {
        self.options
    }

    /// One model.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`].
    pub fn model(&self, name: &str) -> Result<&ModelEntry, ServingError> {
        self.models
            .get(name)
            .ok_or_else(|| ServingError::UnknownModel(name.to_string()))
    }

    /// The version a request goes to: `version` when given, else the model's default.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::UnknownVersion`], or
    /// [`ServingError::Unavailable`] for a version that is not loaded.
    pub fn resolve(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<LoadedVersion>, ServingError> {
        let entry = self.model(model)?;
        let Some(version) = version else {
            return entry
                .default_version()
                .cloned()
                .ok_or_else(|| ServingError::Unavailable {
                    model: model.to_string(),
                    version: "(any)".to_string(),
                    reason: "no version of this model loaded".to_string(),
                });
        };
        let found = entry
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| ServingError::UnknownVersion {
                model: model.to_string(),
                version: version.to_string(),
            })?;
        match &found.status {
            VersionStatus::Ready(loaded) => Ok(Arc::clone(loaded)),
            VersionStatus::Unavailable(reason) => Err(ServingError::Unavailable {
                model: model.to_string(),
                version: version.to_string(),
                reason: reason.clone(),
            }),
        }
    }

    /// Validates `inputs` against `version` and runs it. The call runs inline when its measured
    /// cost is within the inline budget, else on the blocking pool so the async workers keep
    /// serving other connections.
    ///
    /// # Errors
    /// [`ServingError::InvalidInput`] / [`ServingError::TooManyRows`] for inputs that do not fit,
    /// [`ServingError::Engine`] when the runtime fails.
    pub async fn predict(
        &self,
        version: Arc<LoadedVersion>,
        inputs: Vec<NamedInput>,
    ) -> Result<Prediction, ServingError> {
        let (tensors, rows) = fit_inputs(version.signature(), inputs, self.options.max_batch_rows)?;
        let outputs = if version.cost.estimate(rows) <= self.options.inline_budget {
            version.run(tensors)?
        } else {
            let worker = Arc::clone(&version);
            tokio::task::spawn_blocking(move || worker.run(tensors))
                .await
                .map_err(|e| ServingError::Task(e.to_string()))??
        };
        Ok(Prediction {
            version,
            outputs,
            rows,
        })
    }
}
