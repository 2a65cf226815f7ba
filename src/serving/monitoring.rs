//! Monitoring across a model's served versions (champion and shadows): running the drift
//! evaluation (in the background on an interval, or on demand) and the monitoring view.

use super::deployment::{DeploymentState, VersionRole};
use super::{LoadedVersion, Registry, ServingError};
use crate::feedback::{DeploymentFacts, VersionFacts};
use crate::metrics;
use crate::monitor::{MonitorSummary, ShadowComparison};
use crate::repository::Task;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// The monitoring view of one served version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionMonitoring {
    /// Version name.
    pub version: String,
    /// `champion` or `shadow`.
    pub role: VersionRole,
    /// Requests, errors, latency, predictions, outliers, drift.
    #[serde(flatten)]
    pub summary: MonitorSummary,
    /// Share of rows accepted by the confidence threshold (classifiers).
    pub acceptance_rate: Option<f64>,
    /// For a shadow: how it compares with the champion.
    pub shadow: Option<ShadowComparison>,
}

/// The monitoring view of a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelMonitoring {
    /// Model name.
    pub model: String,
    /// Confidence threshold in force.
    pub threshold: f64,
    /// Champion first, then shadows.
    pub versions: Vec<VersionMonitoring>,
}

/// A deployment as the feedback loop sees it.
fn facts(state: &DeploymentState) -> DeploymentFacts {
    DeploymentFacts {
        model: state.model.clone(),
        champion: state.champion.as_ref().map(|c| c.version.to_string()),
        shadows: state
            .shadows
            .iter()
            .map(|s| s.version().version.to_string())
            .collect(),
        promotion: state.promotion,
        versions: state
            .versions
            .iter()
            .filter_map(|entry| {
                let loaded = entry.ready()?;
                let features = if loaded.metadata.features.is_empty() {
                    loaded.monitor.features().to_vec()
                } else {
                    loaded.metadata.features.clone()
                };
                Some((
                    entry.version.clone(),
                    VersionFacts {
                        task: loaded.metadata.task,
                        classes: loaded.monitor_classes().to_vec(),
                        features,
                    },
                ))
            })
            .collect(),
    }
}

/// The champion and the shadows of a deployment, with their roles.
fn served(
    state: &DeploymentState,
) -> Vec<(Arc<LoadedVersion>, VersionRole, Option<ShadowComparison>)> {
    let mut versions = Vec::new();
    if let Some(champion) = &state.champion {
        versions.push((Arc::clone(champion), VersionRole::Champion, None));
    }
    for shadow in &state.shadows {
        let classification = shadow.version().metadata.task == Task::Classification;
        versions.push((
            Arc::clone(shadow.version()),
            VersionRole::Shadow,
            Some(shadow.mirror.stats.snapshot(classification)),
        ));
    }
    versions
}

impl Registry {
    /// Runs the drift evaluation of every served version of `model` (or of every model) on the
    /// blocking pool, and records how long it took. Each version keeps its report for the
    /// monitoring view and its gauges.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], or [`ServingError::Interrupted`] when the evaluation task
    /// does not complete.
    pub async fn evaluate_drift(&self, model: Option<&str>) -> Result<(), ServingError> {
        let deployments = match model {
            Some(name) => vec![self.deployment(name)?],
            None => self.deployments(),
        };
        let versions: Vec<Arc<LoadedVersion>> = deployments
            .iter()
            .flat_map(|state| served(state).into_iter().map(|(v, _, _)| v))
            .collect();
        let duration = self
            .loader
            .metrics
            .histogram(metrics::DRIFT_EVALUATION_DURATION, &[]);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            for version in &versions {
                version.monitor.evaluate();
            }
            duration.record(started.elapsed().as_secs_f64());
        })
        .await
        .map_err(|e| ServingError::interrupted("the drift evaluation", &e))?;
        self.loader.metrics.run_upkeep();
        Ok(())
    }

    /// The monitoring view of `model`'s served versions.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`].
    pub fn monitoring(&self, model: &str) -> Result<ModelMonitoring, ServingError> {
        let state = self.deployment(model)?;
        let versions = served(&state)
            .into_iter()
            .map(|(version, role, shadow)| VersionMonitoring {
                version: version.version.to_string(),
                role,
                summary: version.monitor.summary(),
                acceptance_rate: version.monitor.acceptance_rate(),
                shadow,
            })
            .collect();
        Ok(ModelMonitoring {
            model: state.model.clone(),
            threshold: state.threshold,
            versions,
        })
    }

    /// Tells what a published deployment means beyond serving: `vigil_versions_loaded`, and
    /// the feedback loop's view of the model (versions, champion, shadows, promotion rule).
    pub(super) async fn announce(&self, state: &DeploymentState) {
        let ready = state
            .versions
            .iter()
            .filter(|v| v.ready().is_some())
            .count();
        self.loader
            .metrics
            .gauge(metrics::VERSIONS_LOADED, &[("model", state.model.as_str())])
            .set(ready as f64);
        if let Some(feedback) = &self.feedback
            && let Err(error) = feedback.deployment_changed(facts(state)).await
        {
            tracing::warn!(model = %state.model, %error, "the feedback loop did not take the deployment");
        }
    }

    /// The gateway's metrics (for rendering `/metrics`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.loader.metrics
    }
}
