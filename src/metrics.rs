//! Every metric vigil exports: names, units, help, labels and buckets, the Prometheus recorder
//! of one gateway, and typed handles resolved once per version so the request path never looks a
//! metric up. Nothing else names a metric.
//!
//! Label sets are bounded: `model` and `version` come from the repository, `role` is
//! `champion`/`direct`/`shadow`, `protocol` is `v2`/`v1`/`grpc`, `status` is a status class,
//! `feature` and `class` come from a version's metadata.

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Requests answered, by model, version, role, protocol and status class.
pub const REQUESTS_TOTAL: &str = "vigil_requests_total";
/// Rows inferred.
pub const ROWS_TOTAL: &str = "vigil_rows_total";
/// Whole request time (decode, inference, encode), seconds.
pub const REQUEST_DURATION: &str = "vigil_request_duration_seconds";
/// Inference time alone, seconds.
pub const INFERENCE_DURATION: &str = "vigil_inference_duration_seconds";
/// Gateway overhead (whole request − inference), seconds.
pub const OVERHEAD_DURATION: &str = "vigil_overhead_duration_seconds";
/// Requests being served now.
pub const IN_FLIGHT: &str = "vigil_requests_in_flight";
/// Copies queued for a shadow.
pub const SHADOW_MIRRORED: &str = "vigil_shadow_mirrored_total";
/// Copies dropped because a shadow's queue was full.
pub const SHADOW_DROPPED: &str = "vigil_shadow_dropped_total";
/// Shadow runs that failed.
pub const SHADOW_FAILED: &str = "vigil_shadow_failed_total";
/// Shadow runs past the timeout.
pub const SHADOW_TIMED_OUT: &str = "vigil_shadow_timed_out_total";
/// Rows compared between shadow and champion.
pub const SHADOW_COMPARED_ROWS: &str = "vigil_shadow_compared_rows_total";
/// Compared classification rows where shadow and champion agree.
pub const SHADOW_AGREEING_ROWS: &str = "vigil_shadow_agreeing_rows_total";
/// Absolute difference between shadow and champion per compared row.
pub const SHADOW_ABS_DIFFERENCE: &str = "vigil_shadow_abs_difference";
/// Rows accepted / rejected by the confidence threshold.
pub const THRESHOLD_ROWS: &str = "vigil_threshold_rows_total";
/// Predictions by class.
pub const PREDICTIONS: &str = "vigil_predictions_total";
/// Time to load and warm a version, seconds.
pub const MODEL_LOAD_DURATION: &str = "vigil_model_load_seconds";
/// Versions loaded per model.
pub const VERSIONS_LOADED: &str = "vigil_versions_loaded";
/// Build information (always 1).
pub const BUILD_INFO: &str = "vigil_build_info";
/// KS statistic per feature (window vs reference).
pub const DRIFT_KS_STATISTIC: &str = "vigil_drift_ks_statistic";
/// KS p-value per feature.
pub const DRIFT_P_VALUE: &str = "vigil_drift_p_value";
/// Features whose p-value is below the Bonferroni threshold.
pub const DRIFT_DRIFTED_FEATURES: &str = "vigil_drift_drifted_features";
/// 1 when any feature drifted.
pub const DRIFT_DATASET: &str = "vigil_drift_dataset";
/// Rows in the drift window.
pub const DRIFT_WINDOW_ROWS: &str = "vigil_drift_window_rows";
/// The per-feature p-value threshold (alpha / features).
pub const DRIFT_THRESHOLD: &str = "vigil_drift_p_value_threshold";
/// KS statistic of the predictions (confidences or values) vs the reference predictions.
pub const PREDICTION_DRIFT_KS_STATISTIC: &str = "vigil_prediction_drift_ks_statistic";
/// KS p-value of the predictions.
pub const PREDICTION_DRIFT_P_VALUE: &str = "vigil_prediction_drift_p_value";
/// Time the drift evaluator took for one pass, seconds.
pub const DRIFT_EVALUATION_DURATION: &str = "vigil_drift_evaluation_seconds";
/// Outlier score per row.
pub const OUTLIER_SCORE: &str = "vigil_outlier_score";
/// Rows scoring at or above the outlier cut.
pub const OUTLIERS: &str = "vigil_outliers_total";

/// Inference-log records dropped because its queue was full or its store failed, by model.
pub const INFERENCE_LOG_DROPPED: &str = "vigil_inference_log_dropped_total";
/// Answered rows whose request id repeated one already logged for the model (the first is kept).
pub const INFERENCE_LOG_REPEATED: &str = "vigil_inference_log_repeated_rows_total";
/// Rows written to the inference log (answered and shadow rows).
pub const INFERENCE_LOG_ROWS: &str = "vigil_inference_log_rows_total";
/// Feedback items by model and status (`accepted`, `duplicate`, `conflict`, `not_found`,
/// `invalid`).
pub const FEEDBACK_TOTAL: &str = "vigil_feedback_total";
/// Labelled rows scored per version.
pub const LABELLED_ROWS: &str = "vigil_labelled_rows_total";
/// Labelled rows a classifier version got right.
pub const CORRECT_ROWS: &str = "vigil_correct_rows_total";
/// Sum of absolute errors of a regressor version on labelled rows.
pub const ABS_ERROR_SUM: &str = "vigil_abs_error_sum";
/// Sum of squared errors of a regressor version on labelled rows.
pub const SQUARED_ERROR_SUM: &str = "vigil_squared_error_sum";
/// Λ, the evidence that a shadow is better than the champion, by model, champion and shadow.
pub const PROMOTION_EVIDENCE: &str = "vigil_promotion_evidence";
/// The always-valid p-value of a shadow being no better than the champion.
pub const PROMOTION_P_VALUE: &str = "vigil_promotion_p_value";
/// Labelled rows both champion and shadow predicted.
pub const PROMOTION_PAIRED_ROWS: &str = "vigil_promotion_paired_rows";
/// Retraining events created, by model.
pub const RETRAIN_EVENTS: &str = "vigil_retrain_events_total";
/// Retraining event deliveries by model, channel (`command`, `webhook`) and outcome.
pub const RETRAIN_DELIVERIES: &str = "vigil_retrain_deliveries_total";
/// Batches run by a version's dynamic batcher.
pub const BATCHES: &str = "vigil_batches_total";
/// Requests answered through a version's dynamic batcher.
pub const BATCHED_REQUESTS: &str = "vigil_batched_requests_total";
/// Requests refused by a model's admission control, by model and reason (`queue_full`: 429,
/// `deadline`: 503 after waiting past the request's deadline, `pressure`: 429 while shedding).
pub const ADMISSION_REFUSED: &str = "vigil_admission_refused_total";
/// Failed registry syncs, by model and reason (`unreachable`, `missing_alias`, `download`, ...).
pub const REGISTRY_SYNC_ERRORS: &str = "vigil_registry_sync_errors_total";
/// When a model was last read from its registry and found served as it says, Unix seconds.
pub const REGISTRY_LAST_SYNC: &str = "vigil_registry_last_sync_timestamp_seconds";

/// Latency buckets: geometric ×1.5 from 25 µs to 10 s (33 bounds, each rounded to three
/// significant digits so the `le` labels read cleanly), fine enough to tell 50 µs from 100 µs.
pub fn latency_buckets() -> Vec<f64> {
    let mut buckets = Vec::new();
    let mut bound: f64 = 25e-6;
    while bound < 10.0 {
        let rounded = format!("{bound:.2e}").parse().unwrap_or(bound);
        buckets.push(rounded);
        bound *= 1.5;
    }
    buckets.push(10.0);
    buckets
}

/// Outlier score buckets over [0, 1], finer at the top.
pub const SCORE_BUCKETS: [f64; 14] = [
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999,
];
/// Absolute difference buckets (shadow vs champion).
pub const DIFFERENCE_BUCKETS: [f64; 12] = [
    1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0, 100.0,
];

/// The metrics of one gateway: its own recorder (not the process-global one, so several
/// gateways in one process keep separate figures) and the handle that renders it.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), ::metrics::Level::INFO, None);

type Labels<'a> = &'a [(&'static str, &'a str)];

fn key(name: &'static str, labels: Labels<'_>) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

impl Metrics {
    /// A fresh recorder with vigil's buckets and descriptions.
    pub fn new() -> Metrics {
        let latency = latency_buckets();
        let builder = PrometheusBuilder::new();
        let builder = [
            REQUEST_DURATION,
            INFERENCE_DURATION,
            OVERHEAD_DURATION,
            DRIFT_EVALUATION_DURATION,
        ]
        .into_iter()
        .try_fold(builder, |b, name| {
            b.set_buckets_for_metric(Matcher::Full(name.into()), &latency)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(OUTLIER_SCORE.into()), &SCORE_BUCKETS))
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(SHADOW_ABS_DIFFERENCE.into()),
                &DIFFERENCE_BUCKETS,
            )
        })
        .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics { recorder, handle };
        metrics.describe();
        metrics
            .gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        metrics
    }

    fn describe(&self) {
        let seconds = Some(Unit::Seconds);
        let described: [(&'static str, Option<Unit>, &'static str); 13] = [
            (
                REQUESTS_TOTAL,
                None,
                "Requests answered, by model, version, role, protocol and status class.",
            ),
            (ROWS_TOTAL, None, "Rows inferred."),
            (
                REQUEST_DURATION,
                seconds,
                "Whole request time: decode, inference, encode.",
            ),
            (INFERENCE_DURATION, seconds, "Inference time alone."),
            (
                OVERHEAD_DURATION,
                seconds,
                "Gateway overhead: whole request time minus inference time.",
            ),
            (IN_FLIGHT, None, "Requests being served now."),
            (
                ADMISSION_REFUSED,
                None,
                "Requests refused by admission control: queue full (429), deadline passed while waiting (503), or shed under pressure (429).",
            ),
            (
                SHADOW_MIRRORED,
                None,
                "Requests copied to a shadow's queue.",
            ),
            (
                SHADOW_DROPPED,
                None,
                "Copies dropped because a shadow's queue was full.",
            ),
            (
                THRESHOLD_ROWS,
                None,
                "Rows accepted or rejected by the confidence threshold.",
            ),
            (
                DRIFT_KS_STATISTIC,
                None,
                "Two-sample KS statistic of a feature: recent window vs reference.",
            ),
            (
                DRIFT_P_VALUE,
                None,
                "KS p-value of a feature (scipy ks_2samp method='asymp').",
            ),
            (
                OUTLIER_SCORE,
                None,
                "Outlier score per row: empirical CDF of held-out reference distances.",
            ),
        ];
        for (name, unit, help) in described {
            match name {
                REQUEST_DURATION | INFERENCE_DURATION | OVERHEAD_DURATION | OUTLIER_SCORE => {
                    self.recorder.describe_histogram(
                        name.into(),
                        unit,
                        SharedString::const_str(help),
                    );
                }
                IN_FLIGHT | DRIFT_KS_STATISTIC | DRIFT_P_VALUE => {
                    self.recorder
                        .describe_gauge(name.into(), unit, SharedString::const_str(help));
                }
                _ => {
                    self.recorder
                        .describe_counter(name.into(), unit, SharedString::const_str(help))
                }
            }
        }
    }

    /// Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram buffers; call periodically.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// A counter handle.
    pub fn counter(&self, name: &'static str, labels: Labels<'_>) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// A gauge handle.
    pub fn gauge(&self, name: &'static str, labels: Labels<'_>) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// A histogram handle.
    pub fn histogram(&self, name: &'static str, labels: Labels<'_>) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_resolve_50_from_100_microseconds() {
        let buckets = latency_buckets();
        assert_eq!(buckets[0], 25e-6);
        assert_eq!(buckets.last(), Some(&10.0));
        assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        let between = buckets.iter().filter(|&&b| b > 50e-6 && b < 100e-6).count();
        assert!(between >= 1, "a bucket bound lies between 50 µs and 100 µs");
    }

    #[test]
    fn recorders_are_independent_and_render_prometheus_text() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.counter(REQUESTS_TOTAL, &[("model", "iris")]).increment(3);
        a.histogram(REQUEST_DURATION, &[("model", "iris")])
            .record(60e-6);
        let text = a.render();
        assert!(
            text.contains("vigil_requests_total{model=\"iris\"} 3"),
            "{text}"
        );
        for (bound, count) in [("0.0000563", 0), ("0.0000844", 1)] {
            let line = format!(
                "vigil_request_duration_seconds_bucket{{model=\"iris\",le=\"{bound}\"}} {count}"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains("vigil_build_info"), "{text}");
        assert!(!b.render().contains("vigil_requests_total"));
    }
}
