//! Serving: the registry of models and their deployments; routing a request to the champion or
//! to a named version; running a prediction (inline when cheap, on the blocking pool when not),
//! adding confidence/accepted outputs, recording monitoring, and mirroring copies to shadows.
//!
//! Each model's deployment is one immutable [`DeploymentState`] in one `ArcSwap`
//! (`deployment.rs`). Changes are planned purely (`plan.rs`), prepared and requested by the
//! writers (`changes.rs` for the admin API, `scan.rs` for start-up and rescans) and saved then
//! published by the one change path (`commit.rs`).

mod admission;
mod batcher;
mod catch_up;
mod changes;
mod commit;
mod deployment;
mod entry;
mod error;
mod follow;
mod history;
mod mirror;
mod monitoring;
mod observation;
mod outputs;
mod plan;
mod predict;
mod pressure;
mod report;
mod scan;
mod threshold;
mod version;

pub use self::admission::{Admission, AdmissionSettings, Admitted};
pub use self::deployment::{DeploymentState, HISTORY_LIMIT, Shadow, VersionRole};
pub use self::entry::{VersionEntry, VersionStatus};
pub use self::error::ServingError;
pub use self::follow::Target;
pub use self::history::{
    HistoryPoint, HistorySettings, HistoryWindow, ModelHistory, MonitoringHistory, VersionHistory,
};
use self::mirror::MirrorJob;
pub use self::mirror::{Mirror, MirrorSettings};
pub use self::monitoring::{ModelMonitoring, VersionMonitoring};
use self::observation::Wanted;
pub use self::outputs::{OutputRoles, RowPrediction, row_predictions};
pub use self::plan::{Change, needs_mirror, plan};
pub use self::predict::{NamedInput, fit_inputs};
pub use self::pressure::Pressure;
pub use self::report::{ModelReport, ShadowReport, VersionReport};
pub use self::scan::ScanOutcome;
pub use self::threshold::{ACCEPTED_OUTPUT, CONFIDENCE_OUTPUT};
pub use self::version::{InferenceCost, LoadContext, LoadError, LoadedVersion};
use crate::engine::Tensor;
use crate::feedback::Feedback;
use crate::feedback::log::{InferenceLog, RowPredictions, Served};
use crate::monitor::{ThresholdOutcome, TrafficRole};
pub use crate::store::DeployPolicy;
use crate::store::DeploymentStore;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
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

/// Where a model's versions come from, and so who decides its deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSource {
    /// The model repository (`--models`): operators and the deploy policy decide.
    Repository,
    /// A model registry: its aliases decide; operators' changes need `force`.
    Registry,
}

/// A model: its name, its deployment (one value, swapped whole) and the lock that serialises
/// changes to it.
#[derive(Debug)]
pub struct ModelState {
    /// Model name.
    pub name: String,
    /// Where its versions come from.
    pub source: ModelSource,
    /// Its inferences in flight and requests waiting for one.
    pub admission: Arc<Admission>,
    /// The published deployment.
    deployment: ArcSwap<DeploymentState>,
    /// Held from the start of a change until it is published.
    changes: Arc<tokio::sync::Mutex<()>>,
}

impl ModelState {
    fn new(
        state: DeploymentState,
        source: ModelSource,
        admission: &AdmissionSettings,
        metrics: &crate::metrics::Metrics,
    ) -> ModelState {
        ModelState {
            name: state.model.clone(),
            source,
            admission: Arc::new(Admission::new(
                &state.model,
                admission.max_in_flight,
                metrics,
            )),
            deployment: ArcSwap::from_pointee(state),
            changes: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The deployment as published now (one atomic load).
    pub fn deployment(&self) -> Arc<DeploymentState> {
        self.deployment.load_full()
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

impl Role {
    /// The metrics role of a request routed this way.
    pub fn traffic(self) -> TrafficRole {
        match self {
            Role::Champion => TrafficRole::Champion,
            Role::Direct => TrafficRole::Direct,
        }
    }
}

/// A request's destination, fixed when the request is routed: the deployment snapshot it was
/// routed by (its threshold and shadows apply) and the version that will answer.
#[derive(Debug, Clone)]
pub struct Route {
    /// The deployment the request was routed by.
    pub deployment: Arc<DeploymentState>,
    /// The version that will answer.
    pub version: Arc<LoadedVersion>,
    /// How it was reached.
    pub role: Role,
    /// The model's admission control.
    pub admission: Arc<Admission>,
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
    /// When the request must have started running (default: now + the default timeout).
    pub deadline: Option<tokio::time::Instant>,
}

/// Every model the gateway serves, and their deployments.
pub struct Registry {
    root: PathBuf,
    /// How much each model admits.
    admission: AdmissionSettings,
    /// The scheduling delay, and whether requests are being shed.
    pressure: Arc<Pressure>,
    /// Versions downloaded from a model registry, `<dir>/<model>/<version>/`, when one is followed.
    registry_versions: Option<PathBuf>,
    loader: LoadContext,
    options: ServingOptions,
    mirror: MirrorSettings,
    defaults: DeploymentDefaults,
    models: ArcSwap<BTreeMap<String, Arc<ModelState>>>,
    /// Serialises rescans (a rescan adds models to the map).
    rescans: tokio::sync::Mutex<()>,
    store: Option<Arc<dyn DeploymentStore>>,
    /// Where answered rows and shadow predictions are recorded, when the log is on.
    log: Option<Arc<InferenceLog>>,
    /// The feedback loop, told of every published deployment.
    feedback: Option<Arc<Feedback>>,
    /// Figures over time per served version.
    history: MonitoringHistory,
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
    /// The inference log, when it is on.
    pub log: Option<Arc<InferenceLog>>,
    /// The feedback loop, when there is one.
    pub feedback: Option<Arc<Feedback>>,
    /// Versions downloaded from a model registry (restored at start for models the state
    /// knows), when one is followed.
    pub registry_versions: Option<PathBuf>,
    /// How much each model admits.
    pub admission: AdmissionSettings,
    /// The monitoring history's interval and length.
    pub history: HistorySettings,
}

impl Registry {
    /// Every model, by name.
    pub fn models(&self) -> Vec<Arc<ModelState>> {
        self.models.load().values().cloned().collect()
    }

    /// Every model's deployment as it is now, by model name.
    pub fn deployments(&self) -> Vec<Arc<DeploymentState>> {
        self.models().iter().map(|m| m.deployment()).collect()
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

    /// The published deployment of one model.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`].
    pub fn deployment(&self, name: &str) -> Result<Arc<DeploymentState>, ServingError> {
        self.models
            .load()
            .get(name)
            .map(|model| model.deployment())
            .ok_or_else(|| ServingError::UnknownModel(name.to_string()))
    }

    /// Refuses an inference request at once while the gateway sheds load (see [`Pressure`]).
    ///
    /// # Errors
    /// [`ServingError::Busy`], counted on the model's admission.
    pub fn shed(&self, route: &Route) -> Result<(), ServingError> {
        if self.pressure.shedding() {
            return Err(route.admission.shed(&route.version.model, &self.pressure));
        }
        Ok(())
    }

    /// Where a request goes: the named version, or the champion when none is named, from one
    /// snapshot of the model's deployment.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::UnknownVersion`], or
    /// [`ServingError::Unavailable`] for a version that is not loaded or a model with no champion.
    pub fn route(&self, model: &str, version: Option<&str>) -> Result<Route, ServingError> {
        let state = self.model(model)?;
        let deployment = state.deployment();
        let (version, role) = match version {
            Some(version) => (deployment.ready(version)?, Role::Direct),
            None => (
                deployment
                    .champion
                    .clone()
                    .ok_or_else(|| ServingError::Unavailable {
                        model: model.to_string(),
                        version: "(champion)".to_string(),
                        reason: "no version of this model is loaded".to_string(),
                    })?,
                Role::Champion,
            ),
        };
        Ok(Route {
            deployment,
            version,
            role,
            admission: Arc::clone(&state.admission),
        })
    }

    /// Validates `inputs` against the routed version and runs it; for classifiers adds the
    /// `confidence` and `accepted` outputs (with the threshold of the routed deployment); records
    /// the monitoring figures; for champion requests queues copies for the shadows of that
    /// deployment that take this request (never waiting on them).
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
        request_id: &Arc<str>,
    ) -> Result<Prediction, ServingError> {
        let Route {
            deployment,
            version,
            role,
            admission,
        } = route;
        if options.outlier_scores && !version.monitor.scores_outliers() {
            return Err(ServingError::invalid(
                "parameters.outlier_score",
                format!(
                    "version {} of {} has no usable reference.csv, so it has no outlier scores",
                    version.version, version.model
                ),
            ));
        }
        let takers: Vec<&Shadow> = if role == Role::Champion {
            deployment
                .shadows
                .iter()
                .filter(|shadow| shadow.takes_request())
                .collect()
        } else {
            Vec::new()
        };
        let deadline = options
            .deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + self.admission.default_timeout);
        let _admitted = admission
            .admit(
                &version.model,
                self.admission.queue_for(&version.cost),
                deadline,
            )
            .await?;
        let copies = (!takers.is_empty()).then(|| Arc::new(inputs.clone()));
        let (tensors, rows) = fit_inputs(version.signature(), inputs, self.options.max_batch_rows)?;
        let started = Instant::now();
        let (tensors, mut outputs) = if let Some(batcher) = &version.batcher {
            let (tensors, outputs) = batcher.run(tensors, rows).await?;
            (tensors, outputs?)
        } else if version.cost.estimate(rows) <= self.options.inline_budget {
            let outputs = version.run(&tensors)?;
            (tensors, outputs)
        } else {
            let worker = Arc::clone(&version);
            tokio::task::spawn_blocking(move || {
                let outputs = worker.run(&tensors);
                (tensors, outputs)
            })
            .await
            .map_err(|e| ServingError::interrupted("inference", &e))
            .and_then(|(tensors, outputs)| Ok((tensors, outputs?)))?
        };
        let latency = started.elapsed();
        let wanted = Wanted {
            outlier_scores: options.outlier_scores,
            predictions: self.log.is_some(),
        };
        let mut observation = observation::observe(
            &version,
            role.traffic(),
            &tensors,
            &outputs,
            rows,
            latency,
            wanted,
        );
        if version.served_outputs.len() > outputs.len()
            && let Some(index) = version.roles.probabilities
        {
            let confidence = threshold::confidences(&outputs[index]);
            let (confidence, accepted, accepted_rows) =
                threshold::threshold_outputs(confidence, deployment.threshold);
            observation.threshold = Some(ThresholdOutcome {
                accepted: accepted_rows,
                rejected: rows - accepted_rows,
            });
            outputs.push(confidence);
            outputs.push(accepted);
        }
        version.monitor.record(&observation);
        let outputs = Arc::new(outputs);
        let mut mirrored = Vec::new();
        if let Some(copies) = copies {
            for shadow in takers {
                let queued = shadow.mirror.offer(MirrorJob {
                    inputs: Arc::clone(&copies),
                    champion: Arc::clone(&version),
                    champion_outputs: Arc::clone(&outputs),
                    rows,
                    champion_latency: latency,
                    request_id: Arc::clone(request_id),
                });
                if queued {
                    mirrored.push(Arc::clone(&shadow.version().version));
                }
            }
        }
        if let Some(log) = &self.log {
            log.served(Served {
                model: Arc::clone(&version.model),
                version: Arc::clone(&version.version),
                request_id: Arc::clone(request_id),
                direct: role == Role::Direct,
                inputs: tensors,
                rows,
                predictions: RowPredictions {
                    classes: observation.classes.take(),
                    values: observation.predictions.take(),
                    classifier: version.roles.probabilities.is_some(),
                },
                shadows: mirrored,
            });
        }
        Ok(Prediction {
            version,
            outputs,
            rows,
            role: role.traffic(),
            inference: latency,
            outlier_scores: observation
                .outlier_scores
                .filter(|_| options.outlier_scores),
        })
    }
}
