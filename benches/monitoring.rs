//! Monitoring costs: the background evaluator's time for one window (1 000 rows × 30 features
//! against a 10 000-row reference: sorting plus 30 KS tests and p-values), and the request-path
//! cost of recording one row (window push and outlier score).
//!
//! Run with `cargo bench --bench monitoring`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use vigil::metrics::Metrics;
use vigil::monitor::{MonitorSettings, Observation, ReferenceProfile, TrafficRole, VersionMonitor};
use vigil::repository::Reference;

const FEATURES: usize = 30;
const REFERENCE_ROWS: usize = 10_000;
const WINDOW_ROWS: usize = 1_000;

/// Standard normal draws (Box–Muller) from a seeded generator.
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn rows(rng: &mut fastrand::Rng, n: usize, shift: f64) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| (0..FEATURES).map(|_| normal(rng) + shift).collect())
        .collect()
}

fn monitor(reference: Vec<Vec<f64>>) -> VersionMonitor {
    let reference = Reference {
        features: (0..FEATURES).map(|f| format!("f{f}")).collect(),
        rows: reference,
    };
    let profile = ReferenceProfile::build(&reference, Vec::new());
    VersionMonitor::new(
        "bench",
        "1",
        profile,
        Vec::new(),
        Duration::ZERO,
        &Metrics::new(),
        MonitorSettings {
            enabled: true,
            window_rows: WINDOW_ROWS,
            alpha: 0.05,
            outlier_cut: 0.99,
        },
    )
}

/// A champion observation of `rows` input rows with their outlier `scores`.
fn observation(inputs: Vec<f64>, scores: Option<Vec<f32>>, rows: usize) -> Observation {
    Observation {
        role: TrafficRole::Champion,
        rows,
        inference: Duration::ZERO,
        inputs: Some(inputs),
        outlier_scores: scores,
        predictions: None,
        classes: None,
        threshold: None,
    }
}

fn monitoring(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(42);
    let monitor = monitor(rows(&mut rng, REFERENCE_ROWS, 0.0));
    let window: Vec<f64> = rows(&mut rng, WINDOW_ROWS, 0.1)
        .into_iter()
        .flatten()
        .collect();
    let row: Vec<f64> = window[..FEATURES].to_vec();
    monitor.record(&observation(window, None, WINDOW_ROWS));
    c.bench_function("evaluate_window_1000x30_vs_10000", |b| {
        b.iter(|| black_box(monitor.evaluate()))
    });
    c.bench_function("record_one_row_30_features", |b| {
        b.iter(|| {
            let scores = monitor.outlier_scores(black_box(&row));
            monitor.record(&observation(row.clone(), scores, 1));
        })
    });
}

mod group {
    use super::*;
    criterion_group!(benches, monitoring);
}
criterion_main!(group::benches);
