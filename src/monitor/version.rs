//! What vigil watches for one served version: its request and latency figures, a window of recent
//! input rows and predictions, outlier scores, predictions by class, and the latest drift report.
//! The request path calls [`VersionMonitor::record`] (O(features) per row) and
//! [`VersionMonitor::record_request`]; [`VersionMonitor::evaluate`] does the heavy part (sorting,
//! KS tests) and runs in the background.

use super::report::{
    ClassCounts, DriftReport, FeatureDrift, MonitorSummary, OutlierHistogram, PredictionSummary,
};
use super::{LatencyWindow, Observation, ReferenceProfile, RowWindow, bonferroni, ks_two_sample};
use crate::metrics::{self, Metrics};
use ::metrics::{Counter, Gauge, Histogram};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Monitoring settings shared by every version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorSettings {
    /// Record windows, outlier scores and metrics on the request path.
    pub enabled: bool,
    /// Rows kept in the drift window.
    pub window_rows: usize,
    /// Family-wise significance level; per feature the threshold is `alpha / features`.
    pub alpha: f64,
    /// Rows scoring at or above this are counted as outliers.
    pub outlier_cut: f64,
}

/// How a request reached a version, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficRole {
    /// The unversioned route: the champion.
    Champion,
    /// A `/versions/{v}` route.
    Direct,
    /// A mirrored copy run by a shadow worker.
    Shadow,
}

impl TrafficRole {
    /// The `role` label value.
    pub fn label(self) -> &'static str {
        match self {
            TrafficRole::Champion => "champion",
            TrafficRole::Direct => "direct",
            TrafficRole::Shadow => "shadow",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The API that answered, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Open Inference Protocol.
    V2,
    /// TF-Serving-style JSON.
    V1,
    /// Open Inference Protocol over gRPC.
    Grpc,
}

impl Protocol {
    /// Every protocol, in [`Protocol::index`] order.
    pub const ALL: [Protocol; 3] = [Protocol::V2, Protocol::V1, Protocol::Grpc];

    /// The `protocol` label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::V2 => "v2",
            Protocol::V1 => "v1",
            Protocol::Grpc => "grpc",
        }
    }

    /// Position in [`Protocol::ALL`], for per-protocol handle arrays.
    pub fn index(self) -> usize {
        match self {
            Protocol::V2 => 0,
            Protocol::V1 => 1,
            Protocol::Grpc => 2,
        }
    }
}

/// Request-path metric handles of one version, resolved once.
struct Handles {
    /// `[role][protocol]` for the champion and direct roles (shadow copies are not requests):
    /// requests answered 2xx, whole duration, overhead.
    requests: Vec<Vec<(Counter, Histogram, Histogram)>>,
    /// `[role]`: inference duration and rows.
    inference: Vec<(Histogram, Counter)>,
    accepted: Counter,
    rejected: Counter,
    classes: Vec<Counter>,
    outlier_score: Histogram,
    outliers: Counter,
    feature_statistic: Vec<Gauge>,
    feature_p_value: Vec<Gauge>,
    drifted_features: Gauge,
    dataset_drift: Gauge,
    window_rows: Gauge,
    threshold: Gauge,
    prediction_statistic: Gauge,
    prediction_p_value: Gauge,
}

/// Monitoring state of one loaded version.
pub struct VersionMonitor {
    settings: MonitorSettings,
    reference: ReferenceProfile,
    class_names: Vec<String>,
    inputs: RowWindow,
    predictions: RowWindow,
    latency: Mutex<LatencyWindow>,
    requests: AtomicU64,
    errors: AtomicU64,
    scored_rows: AtomicU64,
    outlier_rows: AtomicU64,
    /// Scored rows per outlier-score bucket (edges [`metrics::SCORE_BUCKETS`], one more bucket
    /// above the last edge).
    outlier_buckets: [AtomicU64; OUTLIER_BUCKETS],
    accepted_rows: AtomicU64,
    rejected_rows: AtomicU64,
    class_counts: Vec<AtomicU64>,
    value_sum: Mutex<(f64, f64, u64)>,
    latest: Mutex<Option<DriftReport>>,
    handles: Handles,
}

impl std::fmt::Debug for VersionMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionMonitor")
            .field("features", &self.reference.features.len())
            .finish_non_exhaustive()
    }
}

/// Latency samples kept per version for the monitoring view.
const LATENCY_SAMPLES: usize = 4096;
/// Outlier-score buckets: one per edge of [`metrics::SCORE_BUCKETS`], and one above the last.
const OUTLIER_BUCKETS: usize = metrics::SCORE_BUCKETS.len() + 1;

impl VersionMonitor {
    /// Monitoring for `model`/`version`: `reference` from load time, `class_names` for classifiers
    /// (empty for regressors); metric handles are registered in `metrics`.
    pub fn new(
        model: &str,
        version: &str,
        reference: ReferenceProfile,
        class_names: Vec<String>,
        load_time: Duration,
        metrics: &Metrics,
        settings: MonitorSettings,
    ) -> VersionMonitor {
        let base = [("model", model), ("version", version)];
        let roles = [
            TrafficRole::Champion,
            TrafficRole::Direct,
            TrafficRole::Shadow,
        ];
        let requests = [TrafficRole::Champion, TrafficRole::Direct]
            .iter()
            .map(|role| {
                Protocol::ALL
                    .iter()
                    .map(|protocol| {
                        let labels = [
                            base[0],
                            base[1],
                            ("role", role.label()),
                            ("protocol", protocol.label()),
                        ];
                        let mut with_status = labels.to_vec();
                        with_status.push(("status", "2xx"));
                        (
                            metrics.counter(metrics::REQUESTS_TOTAL, &with_status),
                            metrics.histogram(metrics::REQUEST_DURATION, &labels),
                            metrics.histogram(metrics::OVERHEAD_DURATION, &labels),
                        )
                    })
                    .collect()
            })
            .collect();
        let inference = roles
            .iter()
            .map(|role| {
                let labels = [base[0], base[1], ("role", role.label())];
                (
                    metrics.histogram(metrics::INFERENCE_DURATION, &labels),
                    metrics.counter(metrics::ROWS_TOTAL, &labels),
                )
            })
            .collect();
        // Drift gauges read NaN until the first evaluation: 0 would look like a p-value of drift.
        let feature = |name: &'static str| -> Vec<Gauge> {
            reference
                .features
                .iter()
                .map(|f| {
                    let gauge = metrics.gauge(name, &[base[0], base[1], ("feature", f.as_str())]);
                    gauge.set(f64::NAN);
                    gauge
                })
                .collect()
        };
        let handles = Handles {
            requests,
            inference,
            accepted: metrics.counter(
                metrics::THRESHOLD_ROWS,
                &[base[0], base[1], ("outcome", "accepted")],
            ),
            rejected: metrics.counter(
                metrics::THRESHOLD_ROWS,
                &[base[0], base[1], ("outcome", "rejected")],
            ),
            classes: class_names
                .iter()
                .map(|c| {
                    metrics.counter(
                        metrics::PREDICTIONS,
                        &[base[0], base[1], ("class", c.as_str())],
                    )
                })
                .collect(),
            outlier_score: metrics.histogram(metrics::OUTLIER_SCORE, &base),
            outliers: metrics.counter(metrics::OUTLIERS, &base),
            feature_statistic: feature(metrics::DRIFT_KS_STATISTIC),
            feature_p_value: feature(metrics::DRIFT_P_VALUE),
            drifted_features: metrics.gauge(metrics::DRIFT_DRIFTED_FEATURES, &base),
            dataset_drift: metrics.gauge(metrics::DRIFT_DATASET, &base),
            window_rows: metrics.gauge(metrics::DRIFT_WINDOW_ROWS, &base),
            threshold: metrics.gauge(metrics::DRIFT_THRESHOLD, &base),
            prediction_statistic: metrics.gauge(metrics::PREDICTION_DRIFT_KS_STATISTIC, &base),
            prediction_p_value: metrics.gauge(metrics::PREDICTION_DRIFT_P_VALUE, &base),
        };
        handles.prediction_statistic.set(f64::NAN);
        handles.prediction_p_value.set(f64::NAN);
        metrics
            .gauge(metrics::MODEL_LOAD_DURATION, &base)
            .set(load_time.as_secs_f64());
        let width = reference.features.len();
        VersionMonitor {
            settings,
            class_counts: class_names.iter().map(|_| AtomicU64::new(0)).collect(),
            class_names,
            inputs: RowWindow::new(width, settings.window_rows),
            predictions: RowWindow::new(1, settings.window_rows),
            latency: Mutex::new(LatencyWindow::new(LATENCY_SAMPLES)),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            scored_rows: AtomicU64::new(0),
            outlier_rows: AtomicU64::new(0),
            outlier_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            accepted_rows: AtomicU64::new(0),
            rejected_rows: AtomicU64::new(0),
            value_sum: Mutex::new((0.0, 0.0, 0)),
            latest: Mutex::new(None),
            reference,
            handles,
        }
    }

    /// True when request-path monitoring is on.
    pub fn is_enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Names of the features watched for drift (the reference's columns).
    pub fn features(&self) -> &[String] {
        &self.reference.features
    }

    /// Number of features watched for drift (0 when the version has no usable reference).
    pub fn width(&self) -> usize {
        self.reference.features.len()
    }

    /// True when outlier scores can be computed.
    pub fn scores_outliers(&self) -> bool {
        self.reference.outliers.is_some()
    }

    /// Outlier scores of `rows` (row-major, `width` values each), without recording anything.
    pub fn outlier_scores(&self, rows: &[f64]) -> Option<Vec<f32>> {
        let model = self.reference.outliers.as_ref()?;
        let width = model.features();
        if width == 0 || !rows.len().is_multiple_of(width) {
            return None;
        }
        Some(
            rows.chunks_exact(width)
                .map(|row| model.score(row) as f32)
                .collect(),
        )
    }

    /// Records one inference: Prometheus counters always; windows, outlier figures and the
    /// prediction distribution when request-path monitoring is on.
    pub fn record(&self, observation: &Observation) {
        let (histogram, rows_counter) = &self.handles.inference[observation.role.index()];
        histogram.record(observation.inference.as_secs_f64());
        rows_counter.increment(observation.rows as u64);
        if let Some(outcome) = observation.threshold {
            self.handles.accepted.increment(outcome.accepted as u64);
            self.handles.rejected.increment(outcome.rejected as u64);
            self.accepted_rows
                .fetch_add(outcome.accepted as u64, Ordering::Relaxed);
            self.rejected_rows
                .fetch_add(outcome.rejected as u64, Ordering::Relaxed);
        }
        if !self.settings.enabled {
            return;
        }
        if let Some(values) = &observation.inputs
            && self.width() > 0
        {
            self.inputs.push_rows(values.iter().copied());
        }
        if let Some(scores) = &observation.outlier_scores {
            let mut outliers = 0u64;
            for &score in scores {
                self.handles.outlier_score.record(f64::from(score));
                let bucket =
                    metrics::SCORE_BUCKETS.partition_point(|&edge| edge <= f64::from(score));
                self.outlier_buckets[bucket].fetch_add(1, Ordering::Relaxed);
                if f64::from(score) >= self.settings.outlier_cut {
                    outliers += 1;
                }
            }
            self.handles.outliers.increment(outliers);
            self.outlier_rows.fetch_add(outliers, Ordering::Relaxed);
            self.scored_rows
                .fetch_add(scores.len() as u64, Ordering::Relaxed);
        }
        if let Some(values) = &observation.predictions {
            self.predictions.push_rows(values.iter().copied());
            if self.class_names.is_empty()
                && let Ok(mut sums) = self.value_sum.lock()
            {
                for &v in values.iter().filter(|v| v.is_finite()) {
                    sums.0 += v;
                    sums.1 += v * v;
                    sums.2 += 1;
                }
            }
        }
        for &class in observation.classes.iter().flatten() {
            if let (Some(counter), Some(count)) = (
                self.handles.classes.get(class),
                self.class_counts.get(class),
            ) {
                counter.increment(1);
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `(accepted, rejected)` rows of the confidence threshold on this version so far.
    pub fn threshold_totals(&self) -> (u64, u64) {
        (
            self.accepted_rows.load(Ordering::Relaxed),
            self.rejected_rows.load(Ordering::Relaxed),
        )
    }

    /// Share of rows the confidence threshold accepted, once any row was judged.
    pub fn acceptance_rate(&self) -> Option<f64> {
        let (accepted, rejected) = self.threshold_totals();
        (accepted + rejected > 0).then(|| accepted as f64 / (accepted + rejected) as f64)
    }

    /// Records an answered request: status 2xx with its whole time and inference time.
    pub fn record_request(
        &self,
        role: TrafficRole,
        protocol: Protocol,
        whole: Duration,
        inference: Duration,
    ) {
        let Some((requests, duration, overhead)) = self
            .handles
            .requests
            .get(role.index())
            .and_then(|by_protocol| by_protocol.get(protocol.index()))
        else {
            return;
        };
        requests.increment(1);
        duration.record(whole.as_secs_f64());
        overhead.record(whole.saturating_sub(inference).as_secs_f64());
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.settings.enabled
            && let Ok(mut latency) = self.latency.lock()
        {
            latency.push(whole);
        }
    }

    /// Counts a request to this version that ended in an error.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs the drift tests on the current window (the heavy part: sorts and KS tests), updates
    /// the gauges and keeps the report. `None` when the version has no reference profile or no
    /// rows have been seen.
    pub fn evaluate(&self) -> Option<DriftReport> {
        let started = Instant::now();
        let width = self.width();
        let columns = self.inputs.columns();
        let window_rows = columns.first().map_or(0, Vec::len);
        self.handles.window_rows.set(window_rows as f64);
        if width == 0 || window_rows == 0 {
            return None;
        }
        let mut tests = Vec::with_capacity(width);
        for (reference, mut window) in self.reference.columns.iter().zip(columns) {
            window.retain(|v| v.is_finite());
            window.sort_by(f64::total_cmp);
            tests.push(ks_two_sample(reference, &window));
        }
        let p_values: Vec<f64> = tests
            .iter()
            .map(|t| t.map_or(f64::NAN, |t| t.p_value))
            .collect();
        let decision = bonferroni(&p_values, self.settings.alpha);
        let features: Vec<FeatureDrift> = self
            .reference
            .features
            .iter()
            .zip(&tests)
            .zip(&decision.drifted)
            .map(|((feature, test), &drifted)| FeatureDrift {
                feature: feature.clone(),
                statistic: test.map_or(f64::NAN, |t| t.statistic),
                p_value: test.map_or(f64::NAN, |t| t.p_value),
                drifted,
            })
            .collect();
        for (i, drift) in features.iter().enumerate() {
            self.handles.feature_statistic[i].set(drift.statistic);
            self.handles.feature_p_value[i].set(drift.p_value);
        }
        let drifted_features = decision.drifted.iter().filter(|&&d| d).count();
        self.handles.drifted_features.set(drifted_features as f64);
        self.handles
            .dataset_drift
            .set(f64::from(u8::from(decision.dataset_drift)));
        self.handles.threshold.set(decision.threshold);
        let prediction = self
            .predictions
            .columns()
            .into_iter()
            .next()
            .and_then(|mut window| {
                window.retain(|v| v.is_finite());
                window.sort_by(f64::total_cmp);
                ks_two_sample(&self.reference.predictions, &window)
            });
        if let Some(test) = prediction {
            self.handles.prediction_statistic.set(test.statistic);
            self.handles.prediction_p_value.set(test.p_value);
        }
        let report = DriftReport {
            window_rows,
            reference_rows: self.reference.columns.first().map_or(0, Vec::len),
            threshold: decision.threshold,
            features,
            drifted_features,
            dataset_drift: decision.dataset_drift,
            prediction_statistic: prediction.map(|t| t.statistic),
            prediction_p_value: prediction.map(|t| t.p_value),
            evaluated_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            duration_seconds: started.elapsed().as_secs_f64(),
        };
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(report.clone());
        }
        Some(report)
    }

    /// The monitoring view of this version.
    pub fn summary(&self) -> MonitorSummary {
        let (p50, p95, p99) = self.latency.lock().map_or((None, None, None), |w| {
            (w.quantile(0.5), w.quantile(0.95), w.quantile(0.99))
        });
        let scored = self.scored_rows.load(Ordering::Relaxed);
        let predictions = if self.class_names.is_empty() {
            let (sum, squares, count) = self.value_sum.lock().map_or((0.0, 0.0, 0), |s| *s);
            let mean = (count > 0).then(|| sum / count as f64);
            PredictionSummary::Values {
                count,
                mean,
                std: mean.map(|m| (squares / count as f64 - m * m).max(0.0).sqrt()),
            }
        } else {
            PredictionSummary::Classes(ClassCounts(
                self.class_names
                    .iter()
                    .zip(&self.class_counts)
                    .map(|(name, count)| (name.clone(), count.load(Ordering::Relaxed)))
                    .collect(),
            ))
        };
        MonitorSummary {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_p50: p50,
            latency_p95: p95,
            latency_p99: p99,
            predictions,
            outlier_rate: (scored > 0)
                .then(|| self.outlier_rows.load(Ordering::Relaxed) as f64 / scored as f64),
            outlier_histogram: self.scores_outliers().then(|| OutlierHistogram {
                edges: metrics::SCORE_BUCKETS.to_vec(),
                counts: self
                    .outlier_buckets
                    .iter()
                    .map(|count| count.load(Ordering::Relaxed))
                    .collect(),
            }),
            drift: self.latest.lock().ok().and_then(|d| d.clone()),
        }
    }
}
