//! One inference as monitoring sees it: built once per request (champion or direct) and once per
//! shadow copy by `serving`, then recorded by [`super::VersionMonitor::record`].

use super::TrafficRole;
use std::time::Duration;

/// Rows a confidence threshold accepted and rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThresholdOutcome {
    /// Rows at or above the threshold.
    pub accepted: usize,
    /// Rows below it.
    pub rejected: usize,
}

/// What one inference gives monitoring.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// How the request reached the version.
    pub role: TrafficRole,
    /// Rows predicted.
    pub rows: usize,
    /// Time spent in the engine.
    pub inference: Duration,
    /// Input rows, row-major, when the version watches its inputs (it has a reference profile).
    pub inputs: Option<Vec<f64>>,
    /// Outlier score per row, when computed.
    pub outlier_scores: Option<Vec<f32>>,
    /// Per-row prediction value (top-class confidence, or the regression value).
    pub predictions: Option<Vec<f64>>,
    /// Per-row class index (classifiers).
    pub classes: Option<Vec<usize>>,
    /// Threshold outcomes (classifiers answering a request).
    pub threshold: Option<ThresholdOutcome>,
}
