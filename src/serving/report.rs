//! The admin API's view of a model: its deployment (with the revision) and every version with
//! its metadata, status, role and threshold figures.

use super::deployment::{DeploymentState, VersionRole};
use super::entry::VersionEntry;
use crate::engine::TensorSpec;
use crate::monitor::ShadowComparison;
use crate::repository::{Scores, Source, Task};
use crate::store::{DeployPolicy, PromotionSettings};
use serde::Serialize;
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
    /// What it does in the deployment.
    pub role: VersionRole,
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
    /// Where the version came from, for a version taken from a model registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
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
    /// The deployment's revision (also the `ETag` of admin answers).
    pub revision: u64,
    /// Champion version.
    pub champion: Option<String>,
    /// Shadows.
    pub shadows: Vec<ShadowReport>,
    /// Confidence threshold.
    pub threshold: f64,
    /// Deploy policy for new versions.
    pub policy: DeployPolicy,
    /// Previous champions, oldest first.
    pub history: Vec<String>,
    /// When a shadow is promoted on evidence.
    pub promotion: PromotionSettings,
    /// The version with the best highlight validation score.
    pub best_validation: Option<String>,
    /// Every version.
    pub versions: Vec<VersionReport>,
}

fn version_report(entry: &VersionEntry, role: VersionRole) -> VersionReport {
    let meta = entry.metadata.as_ref();
    let loaded = entry.ready();
    let (accepted_rows, rejected_rows) = loaded.map_or((0, 0), |l| l.monitor.threshold_totals());
    VersionReport {
        version: entry.version.clone(),
        status: entry.status.label(),
        reason: entry.status.reason().map(str::to_string),
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
        source: meta.and_then(|m| m.source.clone()),
    }
}

impl ModelReport {
    /// The report of one model's deployment.
    pub fn of(state: &DeploymentState) -> ModelReport {
        ModelReport {
            name: state.model.clone(),
            revision: state.revision,
            champion: state.champion.as_ref().map(|c| c.version.to_string()),
            shadows: state
                .shadows
                .iter()
                .map(|s| ShadowReport {
                    version: s.version().version.to_string(),
                    fraction: s.fraction,
                    comparison: s
                        .mirror
                        .stats
                        .snapshot(s.version().metadata.task == Task::Classification),
                })
                .collect(),
            threshold: state.threshold,
            policy: state.policy,
            history: state.history.clone(),
            promotion: state.promotion,
            best_validation: state.best_validation().map(|v| v.version.clone()),
            versions: state
                .versions
                .iter()
                .map(|entry| version_report(entry, state.role(&entry.version)))
                .collect(),
        }
    }
}
