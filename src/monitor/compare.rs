//! Shadow versus champion, per shadow: how many requests were mirrored, dropped, failed or timed
//! out, how often the shadow agrees with the champion, how far apart their values are, and the
//! latencies of both on the same requests.

use super::LatencyWindow;
use crate::metrics::{self, Metrics};
use ::metrics::{Counter, Histogram};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency samples kept per shadow for percentiles.
const LATENCY_SAMPLES: usize = 2048;

#[derive(Debug, Default)]
struct Agreement {
    compared_rows: u64,
    agreeing_rows: u64,
    valued_rows: u64,
    sum_abs_difference: f64,
    max_abs_difference: f64,
}

/// Prometheus handles of one shadow.
#[derive(Debug)]
pub struct ShadowMetrics {
    mirrored: Counter,
    dropped: Counter,
    failed: Counter,
    timed_out: Counter,
    compared: Counter,
    agreeing: Counter,
    difference: Histogram,
}

impl ShadowMetrics {
    /// Handles for shadow `version` of `model`.
    pub fn new(metrics: &Metrics, model: &str, version: &str) -> ShadowMetrics {
        let labels = [("model", model), ("version", version)];
        ShadowMetrics {
            mirrored: metrics.counter(metrics::SHADOW_MIRRORED, &labels),
            dropped: metrics.counter(metrics::SHADOW_DROPPED, &labels),
            failed: metrics.counter(metrics::SHADOW_FAILED, &labels),
            timed_out: metrics.counter(metrics::SHADOW_TIMED_OUT, &labels),
            compared: metrics.counter(metrics::SHADOW_COMPARED_ROWS, &labels),
            agreeing: metrics.counter(metrics::SHADOW_AGREEING_ROWS, &labels),
            difference: metrics.histogram(metrics::SHADOW_ABS_DIFFERENCE, &labels),
        }
    }
}

/// Counters and comparison figures of one shadow. Written by its workers, read by the admin API
/// and exported to Prometheus when built with [`ShadowStats::with_metrics`].
#[derive(Debug)]
pub struct ShadowStats {
    metrics: Option<ShadowMetrics>,
    mirrored: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    agreement: Mutex<Agreement>,
    shadow_latency: Mutex<LatencyWindow>,
    champion_latency: Mutex<LatencyWindow>,
}

impl Default for ShadowStats {
    fn default() -> Self {
        ShadowStats {
            metrics: None,
            mirrored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            agreement: Mutex::new(Agreement::default()),
            shadow_latency: Mutex::new(LatencyWindow::new(LATENCY_SAMPLES)),
            champion_latency: Mutex::new(LatencyWindow::new(LATENCY_SAMPLES)),
        }
    }
}

/// A snapshot of [`ShadowStats`], as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowComparison {
    /// Requests copied to the shadow's queue.
    pub mirrored: u64,
    /// Copies dropped because the queue was full.
    pub dropped: u64,
    /// Shadow runs that failed.
    pub failed: u64,
    /// Shadow runs that exceeded the timeout.
    pub timed_out: u64,
    /// Rows compared (classification: labels; regression: values).
    pub compared_rows: u64,
    /// Share of compared classification rows where both gave the same label.
    pub agreement_rate: Option<f64>,
    /// Mean absolute difference of regression values (or of the top-class probability).
    pub mean_abs_difference: Option<f64>,
    /// Largest absolute difference seen.
    pub max_abs_difference: Option<f64>,
    /// Shadow inference latency p50, seconds.
    pub shadow_latency_p50: Option<f64>,
    /// Shadow inference latency p99, seconds.
    pub shadow_latency_p99: Option<f64>,
    /// Champion inference latency p50 on the same requests, seconds.
    pub champion_latency_p50: Option<f64>,
    /// Champion inference latency p99 on the same requests, seconds.
    pub champion_latency_p99: Option<f64>,
}

impl ShadowStats {
    /// Figures that are also exported through `metrics`.
    pub fn with_metrics(metrics: ShadowMetrics) -> ShadowStats {
        ShadowStats {
            metrics: Some(metrics),
            ..ShadowStats::default()
        }
    }

    /// A copy was queued.
    pub fn record_mirrored(&self) {
        self.mirrored.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.mirrored.increment(1);
        }
    }

    /// A copy was dropped (queue full).
    pub fn record_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.dropped.increment(1);
        }
    }

    /// The shadow failed on a copy.
    pub fn record_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.failed.increment(1);
        }
    }

    /// The shadow did not answer within the timeout.
    pub fn record_timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.timed_out.increment(1);
        }
    }

    /// A completed comparison: per row, whether the labels agree (classification) and the
    /// absolute difference of the compared values; plus both latencies.
    pub fn record_comparison(
        &self,
        labels_agree: &[bool],
        abs_differences: &[f64],
        shadow_latency: Duration,
        champion_latency: Duration,
    ) {
        if let Some(m) = &self.metrics {
            m.compared
                .increment(labels_agree.len().max(abs_differences.len()) as u64);
            m.agreeing
                .increment(labels_agree.iter().filter(|&&same| same).count() as u64);
            for &difference in abs_differences.iter().filter(|d| d.is_finite()) {
                m.difference.record(difference);
            }
        }
        if let Ok(mut agreement) = self.agreement.lock() {
            agreement.compared_rows += labels_agree.len().max(abs_differences.len()) as u64;
            agreement.agreeing_rows += labels_agree.iter().filter(|&&same| same).count() as u64;
            for &difference in abs_differences.iter().filter(|d| d.is_finite()) {
                agreement.valued_rows += 1;
                agreement.sum_abs_difference += difference;
                agreement.max_abs_difference = agreement.max_abs_difference.max(difference);
            }
        }
        if let Ok(mut window) = self.shadow_latency.lock() {
            window.push(shadow_latency);
        }
        if let Ok(mut window) = self.champion_latency.lock() {
            window.push(champion_latency);
        }
    }

    /// The figures so far.
    pub fn snapshot(&self, classification: bool) -> ShadowComparison {
        let (compared_rows, agreement_rate, mean, max) = match self.agreement.lock() {
            Ok(a) => (
                a.compared_rows,
                (classification && a.compared_rows > 0)
                    .then(|| a.agreeing_rows as f64 / a.compared_rows as f64),
                (a.valued_rows > 0).then(|| a.sum_abs_difference / a.valued_rows as f64),
                (a.valued_rows > 0).then_some(a.max_abs_difference),
            ),
            Err(_) => (0, None, None, None),
        };
        let quantiles = |window: &Mutex<LatencyWindow>| match window.lock() {
            Ok(w) => (w.quantile(0.5), w.quantile(0.99)),
            Err(_) => (None, None),
        };
        let (shadow_p50, shadow_p99) = quantiles(&self.shadow_latency);
        let (champion_p50, champion_p99) = quantiles(&self.champion_latency);
        ShadowComparison {
            mirrored: self.mirrored.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            compared_rows,
            agreement_rate,
            mean_abs_difference: mean,
            max_abs_difference: max,
            shadow_latency_p50: shadow_p50,
            shadow_latency_p99: shadow_p99,
            champion_latency_p50: champion_p50,
            champion_latency_p99: champion_p99,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_and_differences_accumulate() {
        let stats = ShadowStats::default();
        stats.record_mirrored();
        stats.record_mirrored();
        stats.record_dropped();
        stats.record_comparison(
            &[true, false, true, true],
            &[0.0, 0.5, 0.1, 0.2],
            Duration::from_millis(4),
            Duration::from_millis(1),
        );
        let snapshot = stats.snapshot(true);
        assert_eq!(
            (snapshot.mirrored, snapshot.dropped, snapshot.compared_rows),
            (2, 1, 4)
        );
        assert_eq!(snapshot.agreement_rate, Some(0.75));
        assert_eq!(snapshot.max_abs_difference, Some(0.5));
        assert!((snapshot.mean_abs_difference.unwrap_or(0.0) - 0.2).abs() < 1e-12);
        assert_eq!(snapshot.shadow_latency_p50, Some(0.004));
        assert_eq!(stats.snapshot(false).agreement_rate, None);
    }
}
