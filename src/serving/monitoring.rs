//! Monitoring across a model's served versions (champion and shadows): running the drift
//! evaluation (in the background on an interval, or on demand) and the monitoring view.

use super::deployment::{DeploymentState, VersionRole};
use super::{LoadedVersion, Registry, ServingError};
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
            None => self.models().iter().map(|m| m.deployment()).collect(),
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
                version: version.version.clone(),
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

    /// Sets `vigil_versions_loaded` of a model to its number of ready versions.
    pub(super) fn publish_version_count(&self, state: &DeploymentState) {
        let ready = state
            .versions
            .iter()
            .filter(|v| v.ready().is_some())
            .count();
        self.loader
            .metrics
            .gauge(metrics::VERSIONS_LOADED, &[("model", state.model.as_str())])
            .set(ready as f64);
    }

    /// The gateway's metrics (for rendering `/metrics`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.loader.metrics
    }
}
