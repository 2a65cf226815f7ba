//! The `model.toml` schema: what a version says about itself (task, labels, features, scores).

use crate::engine::EngineKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a version predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Class labels and per-class probabilities.
    Classification,
    /// One number per row.
    Regression,
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        })
    }
}

/// Scores of a version on its validation and test sets, metric name → value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    /// Scores on the validation set (used to rank versions).
    #[serde(default)]
    pub validation: BTreeMap<String, f64>,
    /// Scores on the held-out test set.
    #[serde(default)]
    pub test: BTreeMap<String, f64>,
}

/// A version's `model.toml`. Only `task` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Classification or regression.
    pub task: Task,
    /// When the version was produced (free text, usually RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// The training run or recipe that produced it.
    #[serde(default)]
    pub run: Option<String>,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Class names by class index.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Feature names, in the column order of the model's input.
    #[serde(default)]
    pub features: Vec<String>,
    /// The score used to rank versions (a key of `metrics.validation`).
    #[serde(default)]
    pub highlight: Option<String>,
    /// The engine that runs this version.
    #[serde(default)]
    pub engine: EngineKind,
    /// Default confidence threshold (0–1) when this version becomes a model's first champion.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Hyperparameters, as text.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Validation and test scores.
    #[serde(default)]
    pub metrics: Scores,
    /// Dynamic batching (Triton's dynamic batcher semantics); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// Where the version came from, for versions taken from a model registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// `[batching]`: concurrent requests to a version run as one batch, which runs when it holds
/// `max_rows` rows or when its oldest request has waited `max_queue_delay_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Most rows in one batch.
    pub max_rows: usize,
    /// Longest time the oldest request of a batch waits for more, in microseconds.
    pub max_queue_delay_us: u64,
}

/// A version taken from a model registry: which one, and what was downloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The registry's kind (`mlflow`).
    pub registry: String,
    /// The registry's address.
    pub uri: String,
    /// The registered model's name.
    pub name: String,
    /// The registry's version number.
    pub version: String,
    /// The run that produced the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The run's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_name: Option<String>,
    /// The version's artifact location, as the registry gives it.
    pub artifact_uri: String,
    /// The version's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Every downloaded file (path relative to the version directory) and its SHA-256, hex.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

impl Metadata {
    /// The highlight metric's validation score, when both are present.
    pub fn highlight_score(&self) -> Option<(&str, f64)> {
        let name = self.highlight.as_deref()?;
        self.metrics
            .validation
            .get(name)
            .map(|&score| (name, score))
    }

    /// True when this version's highlight validation score beats `incumbent`'s on the same
    /// metric (any score beats no incumbent; different metrics never compare).
    pub fn beats(&self, incumbent: Option<&Metadata>) -> bool {
        let Some((metric, score)) = self.highlight_score() else {
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

    /// The name of class `index`: its label from `labels`, else the index itself.
    pub fn class_name(&self, index: usize) -> String {
        self.labels
            .get(index)
            .cloned()
            .unwrap_or_else(|| index.to_string())
    }
}

/// True when a larger value of `metric` is better (errors and losses are smaller-is-better).
pub fn higher_is_better(metric: &str) -> bool {
    let name = metric.to_ascii_lowercase();
    !["mse", "mae", "rmse", "loss", "error", "mape"]
        .iter()
        .any(|worse| name.contains(worse))
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
        assert!(better.beats(Some(&worse)));
        assert!(!worse.beats(Some(&better)));
        assert!(!better.beats(Some(&other)));
        assert!(other.beats(None));
    }

    #[test]
    fn only_task_is_required() {
        let meta: Metadata = toml::from_str("task = \"regression\"").expect("minimal metadata");
        assert_eq!(meta.task, Task::Regression);
        assert_eq!(meta.engine, EngineKind::Ort);
        assert!(meta.highlight_score().is_none());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Metadata>("task = \"regression\"\nfeaturez = []").unwrap_err();
        assert!(err.to_string().contains("featurez"), "{err}");
    }

    #[test]
    fn highlight_reads_the_validation_score() {
        let meta: Metadata = toml::from_str(
            "task = \"classification\"\nhighlight = \"accuracy\"\nengine = \"tract\"\n\
             [metrics.validation]\naccuracy = 0.9\n",
        )
        .expect("metadata");
        assert_eq!(meta.highlight_score(), Some(("accuracy", 0.9)));
        assert_eq!(meta.engine, EngineKind::Tract);
        assert_eq!(meta.class_name(4), "4");
    }
}
