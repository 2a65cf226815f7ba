#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

use super::*;

fn gaussian(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n` rows of `f` correlated features: x = z + 0.7·(shared factor), varied scales.
fn correlated(rng: &mut fastrand::Rng, n: usize, f: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| {
            let shared = gaussian(rng);
            (0..f)
                .map(|j| (gaussian(rng) + 0.7 * shared) * (1.0 + j as f64) + 10.0 * j as f64)
                .collect()
        })
        .collect()
}

#[test]
fn the_mean_is_at_distance_zero() {
    let mut rng = fastrand::Rng::with_seed(1);
    for f in [1, 3, 12, 300] {
        let model = OutlierModel::fit(&correlated(&mut rng, 200, f)).unwrap();
        let mean = model.mean.clone();
        assert_eq!(model.distance(&mean), 0.0, "{f} features");
        assert_eq!(model.score(&mean), 0.0);
        assert_eq!(model.features(), f);
    }
}

#[test]
fn distance_is_the_mahalanobis_distance_under_the_shrunk_covariance() {
    let mut rng = fastrand::Rng::with_seed(2);
    let rows = correlated(&mut rng, 100, 2);
    let model = OutlierModel::fit(&rows).unwrap();
    let (_, fit) = split(rows.len());
    let (mean, sd) = moments(&rows, &fit, 2);
    let (sigma, rho) = shrunk_covariance(&rows, &fit, &mean, &sd, &[true, true]);
    assert_eq!(model.shrinkage(), Some(rho));
    // Σ in original units, inverted by hand.
    let (a, b, d) = (
        sigma[0] * sd[0] * sd[0],
        sigma[1] * sd[0] * sd[1],
        sigma[3] * sd[1] * sd[1],
    );
    let det = a * d - b * b;
    for row in rows.iter().take(10) {
        let (x, y) = (row[0] - mean[0], row[1] - mean[1]);
        let expected = ((d * x * x - 2.0 * b * x * y + a * y * y) / det).sqrt();
        let got = model.distance(row);
        assert!(
            (got - expected).abs() < 1e-9 * expected.max(1.0),
            "{got} vs {expected}"
        );
    }
}

#[test]
fn ledoit_wolf_intensity_matches_its_definition_and_lies_in_0_1() {
    let mut rng = fastrand::Rng::with_seed(3);
    // n > p, n ≈ p and n < p (singular sample covariance).
    for (n, f) in [(400, 5), (40, 30), (20, 60)] {
        let rows = correlated(&mut rng, n, f);
        let model = OutlierModel::fit(&rows).unwrap();
        let rho = model.shrinkage().unwrap();
        assert!((0.0..=1.0).contains(&rho), "ρ = {rho}");

        // Naive definition on the fit rows: β̄² = (1/n²) Σₖ ‖zₖzₖᵀ − S‖²_F.
        let (_, fit) = split(n);
        let (mean, sd) = moments(&rows, &fit, f);
        let z: Vec<Vec<f64>> = fit
            .iter()
            .map(|&i| (0..f).map(|j| (rows[i][j] - mean[j]) / sd[j]).collect())
            .collect();
        let m = z.len() as f64;
        let s: Vec<f64> = (0..f * f)
            .map(|ab| z.iter().map(|r| r[ab / f] * r[ab % f]).sum::<f64>() / m)
            .collect();
        let mu = (0..f).map(|a| s[a * f + a]).sum::<f64>() / f as f64;
        let delta2: f64 = (0..f * f)
            .map(|ab| s[ab] - if ab / f == ab % f { mu } else { 0.0 })
            .map(|v| v * v)
            .sum();
        let beta2: f64 = z
            .iter()
            .map(|r| {
                (0..f * f)
                    .map(|ab| (r[ab / f] * r[ab % f] - s[ab]).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / (m * m);
        let expected = beta2.min(delta2) / delta2;
        assert!(
            (rho - expected).abs() < 1e-9,
            "n={n} f={f}: {rho} vs {expected}"
        );
    }
    // Independent features, many rows: little to shrink towards but little noise either.
    let rows: Vec<Vec<f64>> = (0..4000)
        .map(|_| (0..4).map(|_| gaussian(&mut rng)).collect())
        .collect();
    let rho = OutlierModel::fit(&rows).unwrap().shrinkage().unwrap();
    assert!((0.0..=1.0).contains(&rho), "ρ = {rho}");
}

#[test]
fn diagonal_above_256_features() {
    let mut rng = fastrand::Rng::with_seed(4);
    let full = OutlierModel::fit(&correlated(&mut rng, 60, MAX_FULL_FEATURES)).unwrap();
    assert!(full.shrinkage().is_some());
    let rows = correlated(&mut rng, 60, MAX_FULL_FEATURES + 1);
    let diagonal = OutlierModel::fit(&rows).unwrap();
    assert_eq!(diagonal.shrinkage(), None);
    assert_eq!(diagonal.features(), MAX_FULL_FEATURES + 1);
    // The diagonal distance is the root sum of squared z-scores.
    let (_, fit) = split(rows.len());
    let (mean, sd) = moments(&rows, &fit, rows[0].len());
    let expected: f64 = rows[0]
        .iter()
        .zip(&mean)
        .zip(&sd)
        .map(|((x, m), s)| ((x - m) / s).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((diagonal.distance(&rows[0]) - expected).abs() < 1e-9 * expected);
    assert!(format!("{diagonal:?}").contains("diagonal"));
}

#[test]
fn bad_input_is_refused() {
    let row = || vec![1.0, 2.0];
    let rows =
        |n: usize| -> Vec<Vec<f64>> { (0..n).map(|i| vec![i as f64, (i * i) as f64]).collect() };
    assert_eq!(
        OutlierModel::fit(&rows(MIN_ROWS - 1)).unwrap_err(),
        OutlierError::TooFewRows {
            found: MIN_ROWS - 1,
            needed: MIN_ROWS
        }
    );
    assert_eq!(
        OutlierModel::fit(&[]).unwrap_err(),
        OutlierError::TooFewRows {
            found: 0,
            needed: MIN_ROWS
        }
    );
    assert_eq!(
        OutlierModel::fit(&vec![Vec::new(); 30]).unwrap_err(),
        OutlierError::NoFeatures
    );
    let mut ragged = rows(30);
    ragged[7] = vec![1.0];
    assert_eq!(
        OutlierModel::fit(&ragged).unwrap_err(),
        OutlierError::Ragged {
            row: 7,
            found: 1,
            expected: 2
        }
    );
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut rows = rows(30);
        rows[4][1] = bad;
        assert_eq!(
            OutlierModel::fit(&rows).unwrap_err(),
            OutlierError::NonFinite { row: 4, feature: 1 }
        );
    }
    let mut huge = rows(30);
    huge[3][0] = -1e200;
    assert_eq!(
        OutlierModel::fit(&huge).unwrap_err(),
        OutlierError::TooLarge { row: 3, feature: 0 }
    );
    let message = OutlierModel::fit(&[row()]).unwrap_err().to_string();
    assert!(message.contains("at least 20"), "{message}");
}

#[test]
fn bad_rows_are_infinitely_far() {
    let mut rng = fastrand::Rng::with_seed(5);
    let model = OutlierModel::fit(&correlated(&mut rng, 100, 3)).unwrap();
    for row in [
        vec![1.0, 2.0],
        vec![1.0, 2.0, 3.0, 4.0],
        vec![f64::NAN, 0.0, 0.0],
        vec![0.0, f64::INFINITY, 0.0],
    ] {
        assert_eq!(model.distance(&row), f64::INFINITY, "{row:?}");
        assert_eq!(model.score(&row), 1.0);
    }
}

#[test]
fn constant_features_are_floored_not_exploded() {
    let mut rng = fastrand::Rng::with_seed(6);
    for f in [4, 300] {
        let mut rows = correlated(&mut rng, 200, f);
        for row in &mut rows {
            row[1] = 0.1;
            row[2] = 0.0;
        }
        let model = OutlierModel::fit(&rows).unwrap();
        assert_eq!(model.constant_features, 2);
        assert!(model.calibration.iter().all(|d| d.is_finite()));
        let mut row = model.mean.clone();
        // Float32 rounding of the constant: negligible.
        row[1] = f64::from(0.1_f32);
        assert!(model.distance(&row) < 0.01, "{}", model.distance(&row));
        // A one-hot column that was never set, now set: far out, but finite.
        row[2] = 1.0;
        let d = model.distance(&row);
        assert!(d.is_finite() && d > 1e5, "{d}");
        assert_eq!(model.score(&row), 1.0);
    }
}

#[test]
fn the_split_is_deterministic_and_holds_out_a_quarter() {
    for n in [20, 21, 90, 341, 10_000] {
        let (held, fit) = split(n);
        assert_eq!(held.len(), n.div_ceil(4));
        assert_eq!(held.len() + fit.len(), n);
        let mut all: Vec<usize> = held.iter().chain(&fit).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        assert_eq!(split(n), (held, fit));
    }
    // Not a block or a stride: both halves of the file are held out.
    let (held, _) = split(1000);
    assert!(held.iter().any(|&i| i < 500) && held.iter().any(|&i| i >= 500));
}

#[test]
fn scores_are_an_ecdf_in_0_1() {
    let mut rng = fastrand::Rng::with_seed(7);
    let model = OutlierModel::fit(&correlated(&mut rng, 400, 5)).unwrap();
    assert_eq!(model.calibration_rows(), 100);
    assert_eq!(model.score_distance(0.0), 0.0);
    assert_eq!(model.score_distance(f64::INFINITY), 1.0);
    assert_eq!(model.score_distance(f64::NAN), 1.0);
    let c = &model.calibration;
    // Strictly below: a held-out distance itself does not count.
    assert_eq!(model.score_distance(c[0]), 0.0);
    assert_eq!(model.score_distance(c[99]), 0.99);
    assert_eq!(model.score_distance(c[99] * 1.000_001), 1.0);
    let mut last = 0.0;
    for k in 0..200 {
        let s = model.score_distance(k as f64 * 0.05);
        assert!((0.0..=1.0).contains(&s) && s >= last);
        last = s;
    }
}

#[test]
fn collinear_features_still_factor() {
    // Duplicated and exactly collinear columns: S is singular; shrinkage (or the ridge)
    // keeps the factor finite.
    let mut rng = fastrand::Rng::with_seed(8);
    let rows: Vec<Vec<f64>> = (0..300)
        .map(|_| {
            let a = gaussian(&mut rng);
            let b = gaussian(&mut rng);
            vec![a, a, 2.0 * a + 3.0, b, a + b]
        })
        .collect();
    let model = OutlierModel::fit(&rows).unwrap();
    assert!(model.calibration.iter().all(|d| d.is_finite()));
    let mut row = model.mean.clone();
    row[0] += 3.0; // breaks the a = a identity
    assert_eq!(model.score(&row), 1.0);
}
