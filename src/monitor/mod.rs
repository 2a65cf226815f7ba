//! Monitoring of served versions: request and latency figures, windows of recent inputs and
//! predictions, KS drift against the reference sample, outlier scores, and the shadow-versus-
//! champion comparison. The request path only records (O(features) per row, O(features²) for the
//! outlier score); sorting and tests run in the background evaluator.

mod compare;
mod drift;
mod latency;
mod linalg;
mod observation;
mod outlier;
mod reference;
mod report;
mod version;
mod window;

pub use self::compare::{ShadowComparison, ShadowMetrics, ShadowStats};
pub use self::drift::{
    DriftDecision, KsTest, bonferroni, kolmogorov_sf, ks_statistic, ks_two_sample,
};
pub use self::latency::LatencyWindow;
pub use self::observation::{Observation, ThresholdOutcome};
pub use self::outlier::{OutlierError, OutlierModel};
pub use self::reference::ReferenceProfile;
pub use self::report::{
    ClassCounts, DriftReport, FeatureDrift, MonitorSummary, OutlierHistogram, PredictionSummary,
};
pub use self::version::{MonitorSettings, Protocol, TrafficRole, VersionMonitor};
pub use self::window::RowWindow;
