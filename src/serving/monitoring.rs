//! Monitoring across a model's served versions (champion and shadows): running the drift
//! evaluation (in the background on an interval, or on demand) and the monitoring view.

use super::{LoadedVersion, ModelState, Registry, ServingError};
use crate::metrics;
use crate::monitor::{DriftReport, MonitorSummary, ShadowComparison};
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
    pub role: &'static str,
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

/// The champion and the shadows of a model, with their roles.
fn served(model: &ModelState) -> Vec<(Arc<LoadedVersion>, &'static str, Option<ShadowComparison>)> {
    let mut versions = Vec::new();
    if let Some(champion) = model.deployment.champion() {
        versions.push((champion, "champion", None));
    }
    for shadow in model.deployment.shadows().iter() {
        let classification = shadow.version.metadata.task == Task::Classification;
        versions.push((
            Arc::clone(&shadow.version),
            "shadow",
            Some(shadow.stats.snapshot(classification)),
        ));
    }
    versions
}

impl Registry {
    /// Runs the drift evaluation of every served version of `model` (or of every model) on the
    /// blocking pool, and records how long it took.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], or [`ServingError::Task`] when the evaluation task fails.
    pub async fn evaluate_drift(
        &self,
        model: Option<&str>,
    ) -> Result<Vec<(String, String, Option<DriftReport>)>, ServingError> {
        let models = match model {
            Some(name) => vec![self.model(name)?],
            None => self.models(),
        };
        let versions: Vec<Arc<LoadedVersion>> = models
            .iter()
            .flat_map(|m| served(m).into_iter().map(|(v, _, _)| v))
            .collect();
        let duration = self
            .loader
            .metrics
            .histogram(metrics::DRIFT_EVALUATION_DURATION, &[]);
        let reports = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let reports: Vec<(String, String, Option<DriftReport>)> = versions
                .iter()
                .map(|v| (v.model.clone(), v.version.clone(), v.monitor.evaluate()))
                .collect();
            duration.record(started.elapsed().as_secs_f64());
            reports
        })
        .await
        .map_err(|e| ServingError::Task(e.to_string()))?;
        self.loader.metrics.run_upkeep();
        Ok(reports)
    }

    /// The monitoring view of `model`'s served versions.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`].
    pub fn monitoring(&self, model: &str) -> Result<ModelMonitoring, ServingError> {
        let state = self.model(model)?;
        let versions = served(&state)
            .into_iter()
            .map(|(version, role, shadow)| {
                let (accepted, rejected) = version.threshold_counts.totals();
                VersionMonitoring {
                    version: version.version.clone(),
                    role,
                    summary: version.monitor.summary(),
                    acceptance_rate: (accepted + rejected > 0)
                        .then(|| accepted as f64 / (accepted + rejected) as f64),
                    shadow,
                }
            })
            .collect();
        Ok(ModelMonitoring {
            model: state.name.clone(),
            threshold: state.deployment.threshold(),
            versions,
        })
    }

    /// Sets `vigil_versions_loaded` for `model` to its number of ready versions.
    pub(super) fn publish_version_count(&self, model: &ModelState) {
        let ready = model
            .versions()
            .iter()
            .filter(|v| v.ready().is_some())
            .count();
        self.loader
            .metrics
            .gauge(metrics::VERSIONS_LOADED, &[("model", model.name.as_str())])
            .set(ready as f64);
    }

    /// The gateway's metrics (for rendering `/metrics`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.loader.metrics
    }
}
