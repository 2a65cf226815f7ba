//! Serving: the registry of models, their versions and deployments; routing a request to the
//! champion or to a named version; running a prediction (inline when cheap, on the blocking pool
//! when not), adding confidence/accepted outputs, and mirroring copies to shadows.
//!
//! Deployment changes (promote, shadows, thresholds, rollback, rescan, load/unload) live in
//! `changes.rs`; the views the admin API returns in `report.rs`.

mod changes;
mod deployment;
mod error;
mod mirror;
mod monitoring;
mod outputs;
mod predict;
mod report;
mod threshold;
mod version;

pub use self::changes::ScanOutcome;
pub use self::deployment::{DeployPolicy, Deployment};
pub use self::error::ServingError;
use self::mirror::MirrorJob;
pub use self::mirror::{MirrorSettings, Shadow};
pub use self::monitoring::{ModelMonitoring, VersionMonitoring};
pub use self::outputs::{OutputRoles, RowPrediction, row_predictions};
pub use self::predict::{NamedInput, fit_inputs};
pub use self::report::{ModelReport, ShadowReport, VersionReport};
pub use self::threshold::{ACCEPTED_OUTPUT, CONFIDENCE_OUTPUT};
pub use self::version::{InferenceCost, LoadContext, LoadError, LoadedVersion};
use crate::engine::{Tensor, TensorData};
use crate::monitor::TrafficRole;
use crate::repository::{self, Metadata, RepositoryError, VersionDir};
use crate::state::StateStore;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Limits and choices that apply to every prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingOptions {
    /// Most rows accepted in one request.
    pub max_batch_rows: usize,
    /// Calls expected to take longer than this run on the blocking pool instead of the async
    /// worker that received the request.
    pub inline_budget: Duration,
}

/// Deployment settings for models the state does not know yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeploymentDefaults {
    /// Threshold when neither the state nor the champion's `model.toml` gives one.
    pub threshold: f64,
    /// Deploy policy for new versions.
    pub policy: DeployPolicy,
}

/// The state of one version.
#[derive(Debug, Clone)]
pub enum VersionStatus {
    /// Loaded, warmed and serving.
    Ready(Arc<LoadedVersion>),
    /// Failed to load, and why.
    Failed(String),
    /// Unloaded on request.
    Unloaded,
}

/// A version as the registry knows it.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    /// Version name.
    pub version: String,
    /// Its directory.
    pub dir: VersionDir,
    /// Its metadata, when `model.toml` could be read.
    pub metadata: Option<Metadata>,
    /// Loaded or why not.
    pub status: VersionStatus,
}

impl VersionEntry {
    fn load(dir: VersionDir, context: &LoadContext) -> VersionEntry {
        let status = match LoadedVersion::load(&dir, context) {
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
                VersionStatus::Failed(error.to_string())
            }
        };
        VersionEntry {
            version: dir.version.clone(),
            metadata: dir.read_metadata().ok(),
            dir,
            status,
        }
    }

    /// The loaded version, when ready.
    pub fn ready(&self) -> Option<&Arc<LoadedVersion>> {
        match &self.status {
            VersionStatus::Ready(loaded) => Some(loaded),
            _ => None,
        }
    }
}

/// A model: its versions (in version order) and its deployment.
#[derive(Debug)]
pub struct ModelState {
    /// Model name.
    pub name: String,
    versions: RwLock<Vec<VersionEntry>>,
    /// Champion, shadows, threshold, policy, history.
    pub deployment: Deployment,
}

impl ModelState {
    /// A snapshot of the versions, oldest first.
    pub fn versions(&self) -> Vec<VersionEntry> {
        self.versions.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// One version, loaded.
    ///
    /// # Errors
    /// [`ServingError::UnknownVersion`] or [`ServingError::Unavailable`].
    pub fn ready_version(&self, version: &str) -> Result<Arc<LoadedVersion>, ServingError> {
        let versions = self
            .versions
            .read()
            .map_err(|_| ServingError::Task("version table lock poisoned".into()))?;
        let entry = versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| ServingError::UnknownVersion {
                model: self.name.clone(),
                version: version.to_string(),
            })?;
        match &entry.status {
            VersionStatus::Ready(loaded) => Ok(Arc::clone(loaded)),
            VersionStatus::Failed(reason) => Err(ServingError::Unavailable {
                model: self.name.clone(),
                version: version.to_string(),
                reason: reason.clone(),
            }),
            VersionStatus::Unloaded => Err(ServingError::Unavailable {
                model: self.name.clone(),
                version: version.to_string(),
                reason: "unloaded".to_string(),
            }),
        }
    }

    fn with_versions<R>(&self, change: impl FnOnce(&mut Vec<VersionEntry>) -> R) -> Option<R> {
        self.versions.write().ok().map(|mut v| change(&mut v))
    }
}

/// How a request reached its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Through the unversioned route: the champion, mirrored to shadows.
    Champion,
    /// Through a `/versions/{v}` route: that version only.
    Direct,
}

/// A request's destination, fixed when the request is routed.
#[derive(Debug, Clone)]
pub struct Route {
    /// The model.
    pub model: Arc<ModelState>,
    /// The version that will answer.
    pub version: Arc<LoadedVersion>,
    /// How it was reached.
    pub role: Role,
}

/// The outcome of a prediction, tied to the version that produced it.
#[derive(Debug)]
pub struct Prediction {
    /// The version that ran.
    pub version: Arc<LoadedVersion>,
    /// Outputs in the order of `version.served_outputs`.
    pub outputs: Arc<Vec<Tensor>>,
    /// Rows predicted.
    pub rows: usize,
    /// How the request reached the version.
    pub role: TrafficRole,
    /// Time spent in the engine.
    pub inference: Duration,
    /// Outlier score per row, when asked for.
    pub outlier_scores: Option<Vec<f32>>,
}

/// Per-request choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PredictOptions {
    /// Return each row's outlier score.
    pub outlier_scores: bool,
}

/// Class index per row: the integer label when it is a valid class index, else the most probable
/// column.
fn class_indices(
    outputs: &[Tensor],
    roles: OutputRoles,
    classes: usize,
    rows: usize,
) -> Vec<usize> {
    let label = roles.label.map(|index| outputs[index].data());
    let probabilities = roles.probabilities.map(|index| &outputs[index]);
    (0..rows)
        .filter_map(|row| {
            if let Some(class) = label
                .filter(|data| !matches!(data, TensorData::String(_)))
                .and_then(|data| data.get_f64(row))
                .filter(|c| *c >= 0.0 && c.fract() == 0.0 && (*c as usize) < classes)
            {
                return Some(class as usize);
            }
            let tensor = probabilities?;
            (0..classes)
                .filter_map(|c| tensor.data().get_f64(row * classes + c).map(|p| (c, p)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(c, _)| c)
        })
        .collect()
}

/// Flat f64 copy of a `[rows, width]` input, for monitoring.
fn flat_values(tensor: &Tensor) -> Vec<f64> {
    let data = tensor.data();
    (0..data.len()).filter_map(|i| data.get_f64(i)).collect()
}

/// Every model the gateway serves, and their deployments.
pub struct Registry {
    root: PathBuf,
    loader: LoadContext,
    options: ServingOptions,
    mirror: MirrorSettings,
    defaults: DeploymentDefaults,
    models: ArcSwap<BTreeMap<String, Arc<ModelState>>>,
    changes: tokio::sync::Mutex<()>,
    store: Option<Arc<StateStore>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("root", &self.root)
            .field("models", &self.models.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Everything the registry needs besides the repository.
#[derive(Clone)]
pub struct RegistrySettings {
    /// Prediction limits.
    pub options: ServingOptions,
    /// Shadow queues and workers.
    pub mirror: MirrorSettings,
    /// Defaults for new deployments.
    pub defaults: DeploymentDefaults,
}

impl Registry {
    /// Discovers and loads every version under `root`; each model's highest ready version starts
    /// as champion until [`Registry::restore`] applies the saved state and policies. A version
    /// that fails to load is kept with its reason; it does not stop the others.
    ///
    /// # Errors
    /// [`RepositoryError`] when `root` itself cannot be read.
    pub fn load(
        root: &Path,
        loader: LoadContext,
        settings: RegistrySettings,
        store: Option<StateStore>,
    ) -> Result<Registry, RepositoryError> {
        let mut models = BTreeMap::new();
        for model in repository::discover(root)? {
            let state = new_model_state(
                model.name.clone(),
                model.versions,
                &loader,
                settings.defaults,
            );
            models.insert(model.name, Arc::new(state));
        }
        let registry = Registry {
            root: root.to_path_buf(),
            loader,
            options: settings.options,
            mirror: settings.mirror,
            defaults: settings.defaults,
            models: ArcSwap::from_pointee(models),
            changes: tokio::sync::Mutex::new(()),
            store: store.map(Arc::new),
        };
        for model in registry.models() {
            registry.publish_version_count(&model);
        }
        Ok(registry)
    }

    /// Every model, by name.
    pub fn models(&self) -> Vec<Arc<ModelState>> {
        self.models.load().values().cloned().collect()
    }

    /// The serving options in force.
    pub fn options(&self) -> ServingOptions {
        self.options
    }

    /// One model.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`].
    pub fn model(&self, name: &str) -> Result<Arc<ModelState>, ServingError> {
        self.models
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| ServingError::UnknownModel(name.to_string()))
    }

    /// Where a request goes: the named version, or the champion when none is named.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::UnknownVersion`], or
    /// [`ServingError::Unavailable`] for a version that is not loaded or a model with no champion.
    pub fn route(&self, model: &str, version: Option<&str>) -> Result<Route, ServingError> {
        let state = self.model(model)?;
        let (version, role) = match version {
            Some(version) => (state.ready_version(version)?, Role::Direct),
            None => (
                state
                    .deployment
                    .champion()
                    .ok_or_else(|| ServingError::Unavailable {
                        model: model.to_string(),
                        version: "(champion)".to_string(),
                        reason: "no version of this model is loaded".to_string(),
                    })?,
                Role::Champion,
            ),
        };
        Ok(Route {
            model: state,
            version,
            role,
        })
    }

    /// Validates `inputs` against the routed version and runs it; for classifiers adds the
    /// `confidence` and `accepted` outputs; records the monitoring figures; for champion requests
    /// queues copies for the shadows that take this request (never waiting on them).
    ///
    /// # Errors
    /// [`ServingError::InvalidInput`] / [`ServingError::TooManyRows`] for inputs that do not fit
    /// (or outlier scores asked of a version without reference data), [`ServingError::Engine`]
    /// when the runtime fails.
    pub async fn predict(
        &self,
        route: Route,
        inputs: Vec<NamedInput>,
        options: PredictOptions,
    ) -> Result<Prediction, ServingError> {
        let Route {
            model,
            version,
            role,
        } = route;
        let traffic = match role {
            Role::Champion => TrafficRole::Champion,
            Role::Direct => TrafficRole::Direct,
        };
        let monitor = &version.monitor;
        if options.outlier_scores && !monitor.scores_outliers() {
            return Err(ServingError::invalid(
                "parameters.outlier_score",
                format!(
                    "version {} of {} has no usable reference.csv, so it has no outlier scores",
                    version.version, version.model
                ),
            ));
        }
        let takers: Vec<Arc<Shadow>> = if role == Role::Champion && model.deployment.has_shadows() {
            model
                .deployment
                .shadows()
                .iter()
                .filter(|shadow| shadow.takes_request())
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let copies = (!takers.is_empty()).then(|| Arc::new(inputs.clone()));
        let (tensors, rows) = fit_inputs(version.signature(), inputs, self.options.max_batch_rows)?;
        let watched = (monitor.width() > 0 && (monitor.is_enabled() || options.outlier_scores))
            .then(|| flat_values(&tensors[0]));
        let scores = watched.as_deref().and_then(|values| {
            (monitor.is_enabled() || options.outlier_scores)
                .then(|| monitor.outlier_scores(values))
                .flatten()
        });
        let started = Instant::now();
        let mut outputs = if version.cost.estimate(rows) <= self.options.inline_budget {
            version.run(tensors)?
        } else {
            let worker = Arc::clone(&version);
            tokio::task::spawn_blocking(move || worker.run(tensors))
                .await
                .map_err(|e| ServingError::Task(e.to_string()))??
        };
        let latency = started.elapsed();
        let predictions = monitor
            .is_enabled()
            .then(|| version::prediction_values(&outputs, version.roles))
            .flatten();
        let classes = (monitor.is_enabled() && !version.monitor_classes().is_empty()).then(|| {
            class_indices(
                &outputs,
                version.roles,
                version.monitor_classes().len(),
                rows,
            )
        });
        let mut threshold_counts = None;
        if version.served_outputs.len() > outputs.len()
            && let Some(index) = version.roles.probabilities
        {
            let confidence = threshold::confidences(&outputs[index]);
            let (confidence, accepted, accepted_rows) =
                threshold::threshold_outputs(confidence, model.deployment.threshold());
            version
                .threshold_counts
                .record(accepted_rows, rows - accepted_rows);
            threshold_counts = Some((accepted_rows, rows - accepted_rows));
            outputs.push(confidence);
            outputs.push(accepted);
        }
        monitor.observe(
            traffic,
            watched.as_deref(),
            scores.as_deref(),
            predictions.as_deref(),
            classes.as_deref(),
            threshold_counts,
            rows,
            latency,
        );
        let outputs = Arc::new(outputs);
        if let Some(copies) = copies {
            for shadow in takers {
                shadow.offer(MirrorJob {
                    inputs: Arc::clone(&copies),
                    champion: Arc::clone(&version),
                    champion_outputs: Arc::clone(&outputs),
                    rows,
                    champion_latency: latency,
                });
            }
        }
        Ok(Prediction {
            version,
            outputs,
            rows,
            role: traffic,
            inference: latency,
            outlier_scores: scores.filter(|_| options.outlier_scores),
        })
    }
}

/// Loads every version of a model and makes its highest ready version champion.
fn new_model_state(
    name: String,
    dirs: Vec<VersionDir>,
    loader: &LoadContext,
    defaults: DeploymentDefaults,
) -> ModelState {
    let versions: Vec<VersionEntry> = dirs
        .into_iter()
        .map(|dir| VersionEntry::load(dir, loader))
        .collect();
    let champion = versions.iter().rev().find_map(|v| v.ready().cloned());
    let threshold = champion
        .as_ref()
        .and_then(|c| c.metadata.threshold)
        .unwrap_or(defaults.threshold);
    let deployment = Deployment::new(threshold, defaults.policy);
    if let Some(champion) = champion {
        deployment.set_champion_quietly(champion);
    }
    ModelState {
        name,
        versions: RwLock::new(versions),
        deployment,
    }
}
