//! Monitoring preparation, in one place for champion, direct and shadow inferences: from a
//! version, the tensors it ran on and the outputs it gave, the [`Observation`] its monitor
//! records (and the outlier scores a client may have asked for).

use super::LoadedVersion;
use super::outputs::{class_indices, prediction_values};
use crate::engine::Tensor;
use crate::monitor::{Observation, TrafficRole};
use std::time::Duration;

/// What one inference needs computed besides monitoring's own figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Per-row outlier scores (the client asked for them).
    pub outlier_scores: bool,
    /// Per-row prediction values and classes (the inference log records them).
    pub predictions: bool,
}

/// What monitoring needs of one inference. Outlier scores are computed when monitoring is on or
/// when they are wanted; prediction values and classes likewise; input windows only when
/// monitoring is on. The threshold outcome is left for the caller that applied the threshold.
pub fn observe(
    version: &LoadedVersion,
    role: TrafficRole,
    inputs: &[Tensor],
    outputs: &[Tensor],
    rows: usize,
    inference: Duration,
    wanted: Wanted,
) -> Observation {
    let monitor = &version.monitor;
    let enabled = monitor.is_enabled();
    let scores_wanted = wanted.outlier_scores;
    let predicted = enabled || wanted.predictions;
    let watched = (monitor.width() > 0 && (enabled || scores_wanted))
        .then(|| inputs.first().map(flat_values))
        .flatten();
    let outlier_scores = watched
        .as_deref()
        .and_then(|values| monitor.outlier_scores(values));
    let classes = version.monitor_classes().len();
    Observation {
        role,
        rows,
        inference,
        inputs: watched.filter(|_| enabled),
        outlier_scores,
        predictions: predicted
            .then(|| prediction_values(outputs, version.roles))
            .flatten(),
        classes: (predicted && classes > 0)
            .then(|| class_indices(outputs, version.roles, classes, rows)),
        threshold: None,
    }
}

/// Row-major f64 copy of a `[rows, width]` input.
fn flat_values(tensor: &Tensor) -> Vec<f64> {
    let data = tensor.data();
    (0..data.len()).filter_map(|i| data.get_f64(i)).collect()
}
