//! Views of models, versions and deployments for the admin API and the audit log.

use super::{ModelState, VersionEntry, VersionStatus};
use crate::engine::TensorSpec;
use crate::monitor::ShadowComparison;
use crate::repository::{Metadata, Scores};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One input or output of a version.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// Name.
    pub name: String,
    /// Protocol datatype.
    pub datatype: &'static str,
    /// Shape, `-1` for dynamic dimensions.
    pub shape: Vec<i64>,
}

impl From<&TensorSpec> for TensorReport {
    fn from(spec: &TensorSpec) -> Self {
        TensorReport {
            name: spec.name.clone(),
            datatype: spec.dtype.protocol_name(),
            shape: spec.protocol_shape(),
        }
    }
}

/// One version: metadata, status and role.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    /// Version name.
    pub version: String,
    /// `ready`, `failed` or `unloaded`.
    pub status: &'static str,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `champion`, `shadow` or `idle`.
    pub role: &'static str,
    /// `classification` or `regression`, when known.
    pub task: Option<String>,
    /// Engine named in `model.toml`.
    pub engine: Option<String>,
    /// When it was produced.
    pub created_at: Option<String>,
    /// The run that produced it.
    pub run: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Hyperparameters.
    pub params: BTreeMap<String, String>,
    /// Validation and test scores.
    pub metrics: Scores,
    /// The ranking metric.
    pub highlight: Option<String>,
    /// Its validation score.
    pub highlight_score: Option<f64>,
    /// Model inputs (when loaded).
    pub inputs: Vec<TensorReport>,
    /// Response outputs (when loaded).
    pub outputs: Vec<TensorReport>,
    /// Size of `model.onnx` in bytes.
    pub file_size: Option<u64>,
    /// Load and warm-up time, milliseconds.
    pub load_time_ms: Option<f64>,
    /// Rows at or above the confidence threshold.
    pub accepted_rows: u64,
    /// Rows below the confidence threshold.
    pub rejected_rows: u64,
}

/// One shadow and how it compares with the champion.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// Shadow version.
    pub version: String,
    /// Mirror fraction.
    pub fraction: f64,
    /// Comparison figures.
    pub comparison: ShadowComparison,
}

/// A model: deployment and versions.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Model name.
    pub name: String,
    /// Champion version.
    pub champion: Option<String>,
    /// Shadows.
    pub shadows: Vec<ShadowReport>,
    /// Confidence threshold.
    pub threshold: f64,
    /// Deploy policy for new versions.
    pub policy: String,
    /// Previous champions, oldest first.
    pub history: Vec<String>,
    /// The version with the best highlight validation score.
    pub best_validation: Option<String>,
    /// Every version.
    pub versions: Vec<VersionReport>,
}

/// True when a larger value of `metric` is better (errors and losses are smaller-is-better).
pub fn higher_is_better(metric: &str) -> bool {
    let name = metric.to_ascii_lowercase();
    !["mse", "mae", "rmse", "loss", "error", "mape"]
        .iter()
        .any(|worse| name.contains(worse))
}

/// True when `candidate`'s highlight validation score beats `incumbent`'s (same metric).
pub fn beats(candidate: &Metadata, incumbent: Option<&Metadata>) -> bool {
    let Some((metric, score)) = candidate.highlight_score() else {
        return false;
    };
    let Some(incumbent) = incumbent else {
        return true;
    };
    match incumbent.highlight_score() {
        Some((other_metric, other)) if other_metric == metric => {
            if higher_is_better(metric) {
                score > other
            } else {
                score < other
            }
        }
        _ => false,
    }
}

/// The ready version with the best highlight validation score.
pub fn best_validation(versions: &[VersionEntry]) -> Option<&VersionEntry> {
    let mut best: Option<&VersionEntry> = None;
    for entry in versions.iter().filter(|v| v.ready().is_some()) {
        let Some(meta) = entry.metadata.as_ref() else {
            continue;
        };
        if meta.highlight_score().is_none() {
            continue;
        }
        if best.is_none_or(|b| beats(meta, b.metadata.as_ref())) {
            best = Some(entry);
        }
    }
    best
}

fn version_report(entry: &VersionEntry, role: &'static str) -> VersionReport {
    let meta = entry.metadata.as_ref();
    let (status, reason) = match &entry.status {
        VersionStatus::Ready(_) => ("ready", None),
        VersionStatus::Failed(reason) => ("failed", Some(reason.clone())),
        VersionStatus::Unloaded => ("unloaded", None),
    };
    let loaded = entry.ready();
    let (accepted_rows, rejected_rows) = loaded.map_or((0, 0), |l| l.threshold_counts.totals());
    VersionReport {
        version: entry.version.clone(),
        status,
        reason,
        role,
        task: meta.map(|m| m.task.to_string()),
        engine: meta.map(|m| m.engine.to_string()),
        created_at: meta.and_then(|m| m.created_at.clone()),
        run: meta.and_then(|m| m.run.clone()),
        description: meta.and_then(|m| m.description.clone()),
        params: meta.map(|m| m.params.clone()).unwrap_or_default(),
        metrics: meta.map(|m| m.metrics.clone()).unwrap_or_default(),
        highlight: meta.and_then(|m| m.highlight.clone()),
        highlight_score: meta.and_then(|m| m.highlight_score()).map(|(_, s)| s),
        inputs: loaded.map_or_else(Vec::new, |l| {
            l.signature()
                .inputs
                .iter()
                .map(TensorReport::from)
                .collect()
        }),
        outputs: loaded.map_or_else(Vec::new, |l| {
            l.served_outputs.iter().map(TensorReport::from).collect()
        }),
        file_size: std::fs::metadata(entry.dir.onnx_path())
            .ok()
            .map(|m| m.len()),
        load_time_ms: loaded.map(|l| l.load_time.as_secs_f64() * 1e3),
        accepted_rows,
        rejected_rows,
    }
}

impl ModelReport {
    /// The report of one model, as it is now.
    pub fn of(model: &ModelState) -> ModelReport {
        let deployment = &model.deployment;
        let champion = deployment.champion().map(|c| c.version.clone());
        let shadows = deployment.shadows();
        let versions = model.versions();
        let classification = |version: &str| {
            versions
                .iter()
                .find(|v| v.version == version)
                .and_then(|v| v.metadata.as_ref())
                .is_some_and(|m| m.task == crate::repository::Task::Classification)
        };
        ModelReport {
            name: model.name.clone(),
            champion: champion.clone(),
            shadows: shadows
                .iter()
                .map(|s| ShadowReport {
                    version: s.version.version.clone(),
                    fraction: s.fraction,
                    comparison: s.stats.snapshot(classification(&s.version.version)),
                })
                .collect(),
            threshold: deployment.threshold(),
            policy: deployment.policy().to_string(),
            history: deployment.history(),
            best_validation: best_validation(&versions).map(|v| v.version.clone()),
            versions: versions
                .iter()
                .map(|entry| {
                    let role = if champion.as_deref() == Some(entry.version.as_str()) {
                        "champion"
                    } else if shadows.iter().any(|s| s.version.version == entry.version) {
                        "shadow"
                    } else {
                        "idle"
                    };
                    version_report(entry, role)
                })
                .collect(),
        }
    }
}

/// The deployment of `model` as a small JSON value (audit log before/after).
pub fn deployment_value(model: &ModelState) -> Value {
    let deployment = &model.deployment;
    let shadows: BTreeMap<String, f64> = deployment
        .shadows()
        .iter()
        .map(|s| (s.version.version.clone(), s.fraction))
        .collect();
    json!({
        "champion": deployment.champion().map(|c| c.version.clone()),
        "shadows": shadows,
        "threshold": deployment.threshold(),
        "policy": deployment.policy(),
        "history": deployment.history(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_metrics_rank_smaller_first() {
        assert!(higher_is_better("accuracy"));
        assert!(higher_is_better("r2"));
        assert!(!higher_is_better("rmse"));
        assert!(!higher_is_better("log_loss"));
    }

    #[test]
    fn beats_compares_the_same_metric_only() {
        let meta = |text: &str| -> Metadata { toml::from_str(text).expect("metadata") };
        let better =
            meta("task = \"regression\"\nhighlight = \"rmse\"\n[metrics.validation]\nrmse = 1.0\n");
        let worse =
            meta("task = \"regression\"\nhighlight = \"rmse\"\n[metrics.validation]\nrmse = 2.0\n");
        let other =
            meta("task = \"regression\"\nhighlight = \"r2\"\n[metrics.validation]\nr2 = 0.5\n");
        assert!(beats(&better, Some(&worse)));
        assert!(!beats(&worse, Some(&better)));
        assert!(!beats(&better, Some(&other)));
        assert!(beats(&other, None));
    }
}
