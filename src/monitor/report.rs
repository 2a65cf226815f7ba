//! The monitoring views the admin API returns: a version's latest drift report, its request,
//! latency, prediction and outlier summary.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Drift of one feature.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureDrift {
    /// Feature name.
    pub feature: String,
    /// KS statistic.
    pub statistic: f64,
    /// p-value (scipy `ks_2samp(..., method='asymp')`).
    pub p_value: f64,
    /// `p_value < threshold`.
    pub drifted: bool,
}

/// The latest drift evaluation of a version.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// Rows in the window when evaluated.
    pub window_rows: usize,
    /// Rows in the reference sample.
    pub reference_rows: usize,
    /// Per-feature threshold `alpha / features`.
    pub threshold: f64,
    /// Per feature.
    pub features: Vec<FeatureDrift>,
    /// Features that drifted.
    pub drifted_features: usize,
    /// Any feature drifted.
    pub dataset_drift: bool,
    /// KS statistic of the predictions against the reference predictions.
    pub prediction_statistic: Option<f64>,
    /// Its p-value.
    pub prediction_p_value: Option<f64>,
    /// Seconds since the Unix epoch when evaluated.
    pub evaluated_at: f64,
    /// Time the evaluation took, seconds.
    pub duration_seconds: f64,
}

/// Predictions per class name, serialized as an object in class order.
#[derive(Debug, Clone)]
pub struct ClassCounts(pub Vec<(String, u64)>);

impl Serialize for ClassCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (class, count) in &self.0 {
            map.serialize_entry(class, count)?;
        }
        map.end()
    }
}

/// Prediction distribution of a version.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PredictionSummary {
    /// Classifier: predictions per class name, in class order.
    Classes(ClassCounts),
    /// Regressor: count, mean and standard deviation of the values.
    Values {
        /// Values seen.
        count: u64,
        /// Their mean.
        mean: Option<f64>,
        /// Their standard deviation.
        std: Option<f64>,
    },
}

/// The monitoring view of one version.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorSummary {
    /// Requests answered.
    pub requests: u64,
    /// Requests that ended in an error after reaching this version.
    pub errors: u64,
    /// Whole-request latency p50, seconds.
    pub latency_p50: Option<f64>,
    /// p95, seconds.
    pub latency_p95: Option<f64>,
    /// p99, seconds.
    pub latency_p99: Option<f64>,
    /// Prediction distribution.
    pub predictions: PredictionSummary,
    /// Share of scored rows at or above the outlier cut.
    pub outlier_rate: Option<f64>,
    /// Scored rows by outlier score (versions with reference data).
    pub outlier_histogram: Option<OutlierHistogram>,
    /// Latest drift evaluation.
    pub drift: Option<DriftReport>,
}

/// Rows counted by outlier score since the version was loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierHistogram {
    /// Bucket edges: `counts[0]` is below `edges[0]`, `counts[i]` in `[edges[i-1], edges[i])`,
    /// the last count at or above the last edge.
    pub edges: Vec<f64>,
    /// Rows per bucket (one more than `edges`).
    pub counts: Vec<u64>,
}
