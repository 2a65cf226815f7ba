//! Acceptance of the outlier scores: on rows from the reference distribution about 1 % score
//! ≥ 0.99; rows 6σ away score ≥ 0.99. Synthetic correlated Gaussian references (8 features, full
//! shrunk covariance; 300 features, diagonal) and the bundled example references.
//!
//! The calibration figures are printed (`cargo test --test outlier_calibration -- --nocapture`).
//! The per-row cost of scoring is measured in `benches/monitoring.rs`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

use std::path::Path;
use vigil::monitor::{OutlierError, OutlierModel};
use vigil::repository::Reference;

/// Standard normal by Box–Muller.
fn gaussian(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// x = mean + A·z, z standard normal, A lower triangular: Σ = A·Aᵀ and A is its Cholesky
/// factor, so the true Mahalanobis length of a shift δ is ‖A⁻¹δ‖ and the true standard deviation
/// along a unit direction v is ‖Aᵀv‖.
struct CorrelatedGaussian {
    mean: Vec<f64>,
    /// Row-major F×F, lower triangular.
    a: Vec<f64>,
    f: usize,
}

impl CorrelatedGaussian {
    /// From a mean and a covariance (row-major F×F, positive definite).
    fn new(mean: Vec<f64>, sigma: &[f64]) -> Self {
        let f = mean.len();
        let mut a = vec![0.0; f * f];
        for i in 0..f {
            for j in 0..=i {
                let s = sigma[i * f + j] - (0..j).map(|k| a[i * f + k] * a[j * f + k]).sum::<f64>();
                a[i * f + j] = if i == j { s.sqrt() } else { s / a[j * f + j] };
            }
        }
        CorrelatedGaussian { mean, a, f }
    }

    /// A fixed random correlation from a factor model, as in real tabular data: three latent
    /// factors with N(0, 1) loadings plus independent noise of variance 0.15 per feature; then
    /// very different units per feature and means far from 0.
    fn factor_model(rng: &mut fastrand::Rng, f: usize) -> Self {
        let loadings: Vec<[f64; 3]> = (0..f)
            .map(|_| [gaussian(rng), gaussian(rng), gaussian(rng)])
            .collect();
        let units: Vec<f64> = (0..f).map(|i| 10f64.powi(i as i32 % 5 - 2)).collect();
        let mut sigma = vec![0.0; f * f];
        for i in 0..f {
            for j in 0..f {
                let shared: f64 = loadings[i]
                    .iter()
                    .zip(&loadings[j])
                    .map(|(x, y)| x * y)
                    .sum();
                let noise = if i == j { 0.15 } else { 0.0 };
                sigma[i * f + j] = (shared + noise) * units[i] * units[j];
            }
        }
        let mean = (0..f).map(|_| 100.0 * gaussian(rng)).collect();
        Self::new(mean, &sigma)
    }

    /// Nearly collinear features: a lower-triangular factor with N(0, 1) off-diagonal loadings
    /// and a small diagonal in [0.3, 0.6], so each feature is mostly a mix of the previous ones
    /// and the smallest eigenvalue of the correlation matrix is tiny.
    fn near_collinear(rng: &mut fastrand::Rng, f: usize) -> Self {
        let mut a = vec![0.0; f * f];
        for i in 0..f {
            let units = 10f64.powi(i as i32 % 5 - 2);
            for j in 0..i {
                a[i * f + j] = gaussian(rng) * units;
            }
            a[i * f + i] = (0.3 + 0.3 * rng.f64()) * units;
        }
        let mean = (0..f).map(|_| 100.0 * gaussian(rng)).collect();
        CorrelatedGaussian { mean, a, f }
    }

    fn sample(&self, rng: &mut fastrand::Rng) -> Vec<f64> {
        let z: Vec<f64> = (0..self.f).map(|_| gaussian(rng)).collect();
        (0..self.f)
            .map(|i| self.mean[i] + (0..=i).map(|j| self.a[i * self.f + j] * z[j]).sum::<f64>())
            .collect()
    }

    fn sd(&self, i: usize) -> f64 {
        (0..=i)
            .map(|j| self.a[i * self.f + j].powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// A⁻¹·v by forward substitution.
    fn whiten(&self, v: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; self.f];
        for i in 0..self.f {
            let s: f64 = (0..i).map(|j| self.a[i * self.f + j] * y[j]).sum();
            y[i] = (v[i] - s) / self.a[i * self.f + i];
        }
        y
    }

    /// A⁻ᵀ·v by back substitution.
    fn whiten_transposed(&self, v: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; self.f];
        for i in (0..self.f).rev() {
            let s: f64 = (i + 1..self.f).map(|j| self.a[j * self.f + i] * y[j]).sum();
            y[i] = (v[i] - s) / self.a[i * self.f + i];
        }
        y
    }

    /// True Mahalanobis length of a shift.
    fn length(&self, shift: &[f64]) -> f64 {
        norm(&self.whiten(shift))
    }

    /// The unit direction of least variance (top eigenvector of Σ⁻¹ = A⁻ᵀA⁻¹, by power
    /// iteration) and the standard deviation along it.
    fn least_variance(&self) -> (Vec<f64>, f64) {
        let mut v = vec![1.0; self.f];
        for _ in 0..5000 {
            let w = self.whiten_transposed(&self.whiten(&v));
            let n = norm(&w);
            v = w.iter().map(|x| x / n).collect();
        }
        let sd = 1.0 / self.length(&v);
        (v, sd)
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn share_at_least(model: &OutlierModel, rows: &[Vec<f64>], cut: f64) -> f64 {
    rows.iter().filter(|r| model.score(r) >= cut).count() as f64 / rows.len() as f64
}

fn shifted(row: &[f64], shift: &[f64]) -> Vec<f64> {
    row.iter().zip(shift).map(|(x, s)| x + s).collect()
}

fn unit_shift(f: usize, feature: usize, amount: f64) -> Vec<f64> {
    let mut shift = vec![0.0; f];
    shift[feature] = amount;
    shift
}

/// Fits on 5 000 rows of `truth`; returns the model, 20 000 fresh rows and the share of them
/// scoring ≥ 0.99.
fn fit_and_score(
    truth: &CorrelatedGaussian,
    rng: &mut fastrand::Rng,
) -> (OutlierModel, Vec<Vec<f64>>, f64) {
    let reference: Vec<Vec<f64>> = (0..5000).map(|_| truth.sample(rng)).collect();
    let model = OutlierModel::fit(&reference).unwrap();
    assert_eq!(model.features(), truth.f);
    assert_eq!(model.calibration_rows(), 1250);
    let fresh: Vec<Vec<f64>> = (0..20_000).map(|_| truth.sample(rng)).collect();
    let rate = share_at_least(&model, &fresh, 0.99);
    (model, fresh, rate)
}

/// Mahalanobis length of a 6σ shift along each feature.
fn feature_shift_lengths(truth: &CorrelatedGaussian) -> Vec<f64> {
    (0..truth.f)
        .map(|j| truth.length(&unit_shift(truth.f, j, 6.0 * truth.sd(j))))
        .collect()
}

/// Every fresh row shifted 6σ along any single feature scores ≥ 0.99.
fn assert_feature_shifts_flagged(
    model: &OutlierModel,
    truth: &CorrelatedGaussian,
    fresh: &[Vec<f64>],
) {
    for j in 0..truth.f {
        for sign in [6.0, -6.0] {
            let shift = unit_shift(truth.f, j, sign * truth.sd(j));
            let moved: Vec<Vec<f64>> = fresh.iter().map(|r| shifted(r, &shift)).collect();
            assert_eq!(
                share_at_least(model, &moved, 0.99),
                1.0,
                "feature {j}, {sign}σ"
            );
        }
    }
}

#[test]
fn correlated_gaussian_8_features() {
    let mut rng = fastrand::Rng::with_seed(20_240_601);
    let truth = CorrelatedGaussian::factor_model(&mut rng, 8);
    let (model, fresh, rate) = fit_and_score(&truth, &mut rng);
    let rho = model.shrinkage().expect("full covariance at 8 features");
    println!(
        "8 features: ρ = {rho:.5}; fresh rows scoring ≥ 0.99: {:.3} %",
        100.0 * rate
    );
    assert!((0.005..=0.02).contains(&rate), "{rate}");

    // From the mean: 6σ along every feature (both ways) and along the least-variance direction
    // are all at Mahalanobis length ≥ 6, beyond the 99.997th percentile of χ₈.
    let (least, least_sd) = truth.least_variance();
    let mut shifts: Vec<Vec<f64>> = (0..truth.f)
        .flat_map(|j| [6.0, -6.0].map(|k| unit_shift(truth.f, j, k * truth.sd(j))))
        .collect();
    shifts.push(least.iter().map(|v| 6.0 * least_sd * v).collect());
    shifts.push(least.iter().map(|v| -6.0 * least_sd * v).collect());
    for shift in &shifts {
        let row = shifted(&truth.mean, shift);
        assert!(
            model.score(&row) >= 0.99,
            "{shift:?}: {}",
            model.score(&row)
        );
    }

    // Fresh rows shifted 6σ along a feature. With correlated features such a shift is longer
    // than 6 in Mahalanobis terms (6/√(1 − R²ⱼ): it breaks the relations between features);
    // the shortest here is checked to be ≥ 10, so every shifted row must be flagged.
    let lengths = feature_shift_lengths(&truth);
    println!("8 features: Mahalanobis length of a 6σ shift per feature: {lengths:.1?}");
    assert!(lengths.iter().all(|&l| l >= 10.0), "{lengths:?}");
    assert_feature_shifts_flagged(&model, &truth, &fresh);

    // Fresh rows shifted 6σ along the least-variance direction: Mahalanobis length exactly 6,
    // so d² ~ χ²₈ with non-centrality 36, and P(d² > 20.09, the χ²₈ 99th percentile) ≈ 0.94:
    // no whole-row distance can flag every such row. The share is checked against that.
    let shift: Vec<f64> = least.iter().map(|v| 6.0 * least_sd * v).collect();
    let moved: Vec<Vec<f64>> = fresh.iter().map(|r| shifted(r, &shift)).collect();
    let share = share_at_least(&model, &moved, 0.99);
    println!(
        "8 features: fresh rows + 6σ along the least-variance direction scoring ≥ 0.99: {:.2} %",
        100.0 * share
    );
    assert!(share >= 0.90, "{share}");
}

#[test]
fn nearly_collinear_8_features() {
    let mut rng = fastrand::Rng::with_seed(20_240_601);
    let truth = CorrelatedGaussian::near_collinear(&mut rng, 8);
    let (model, fresh, rate) = fit_and_score(&truth, &mut rng);
    let rho = model.shrinkage().expect("full covariance at 8 features");
    println!(
        "collinear: ρ = {rho:.5}; fresh rows scoring ≥ 0.99: {:.3} %",
        100.0 * rate
    );
    assert!((0.005..=0.02).contains(&rate), "{rate}");

    let lengths = feature_shift_lengths(&truth);
    println!("collinear: Mahalanobis length of a 6σ shift per feature: {lengths:.1?}");
    assert!(lengths.iter().all(|&l| l >= 10.0), "{lengths:?}");
    assert_feature_shifts_flagged(&model, &truth, &fresh);

    // For the record: the shrinkage raises every eigenvalue of the standardised covariance to at
    // least ρ, so a direction whose true variance is far below that (here a standardised
    // variance of ~1e-5) is under-weighted, and a 6σ shift along it from the mean goes unseen.
    let (least, least_sd) = truth.least_variance();
    let standardised: f64 = least
        .iter()
        .enumerate()
        .map(|(j, v)| (v * truth.sd(j)).powi(2))
        .sum::<f64>()
        .recip()
        * least_sd.powi(2);
    let shift: Vec<f64> = least.iter().map(|v| 6.0 * least_sd * v).collect();
    println!(
        "collinear: least standardised variance ≈ {standardised:.1e}; mean + 6σ along it: \
         distance {:.2}, score {:.3}",
        model.distance(&shifted(&truth.mean, &shift)),
        model.score(&shifted(&truth.mean, &shift))
    );
}

#[test]
fn correlated_gaussian_300_features_uses_the_diagonal() {
    const F: usize = 300;
    let mut rng = fastrand::Rng::with_seed(7);
    let units: Vec<f64> = (0..F).map(|j| 10f64.powi(j as i32 % 7 - 3)).collect();
    let centre: Vec<f64> = (0..F).map(|_| 50.0 * gaussian(&mut rng)).collect();
    // A shared factor correlates all features (sd of each: √1.25 units); the diagonal model
    // ignores it, which costs power but not calibration: held-out rows and fresh rows are
    // exchangeable whatever the distance.
    let sample = |rng: &mut fastrand::Rng| -> Vec<f64> {
        let shared = gaussian(rng);
        (0..F)
            .map(|j| centre[j] + units[j] * (gaussian(rng) + 0.5 * shared))
            .collect()
    };
    let sd: Vec<f64> = units.iter().map(|u| u * 1.25f64.sqrt()).collect();
    let reference: Vec<Vec<f64>> = (0..5000).map(|_| sample(&mut rng)).collect();
    let model = OutlierModel::fit(&reference).unwrap();
    assert_eq!(model.shrinkage(), None, "diagonal above 256 features");
    assert_eq!(model.features(), F);

    let fresh: Vec<Vec<f64>> = (0..20_000).map(|_| sample(&mut rng)).collect();
    let rate = share_at_least(&model, &fresh, 0.99);
    println!(
        "300 features: fresh rows scoring ≥ 0.99: {:.3} %",
        100.0 * rate
    );
    assert!((0.005..=0.02).contains(&rate), "{rate}");

    // 6σ on every feature, from the mean and from fresh rows; and 6σ on 30 of the 300.
    for sign in [6.0, -6.0] {
        let shift: Vec<f64> = sd.iter().map(|s| sign * s).collect();
        assert!(model.score(&shifted(&centre, &shift)) >= 0.99);
        let moved: Vec<Vec<f64>> = fresh
            .iter()
            .take(2000)
            .map(|r| shifted(r, &shift))
            .collect();
        assert_eq!(share_at_least(&model, &moved, 0.99), 1.0);
    }
    let some: Vec<f64> = (0..F)
        .map(|j| if j % 10 == 3 { 6.0 * sd[j] } else { 0.0 })
        .collect();
    let moved: Vec<Vec<f64>> = fresh.iter().take(2000).map(|r| shifted(r, &some)).collect();
    assert_eq!(share_at_least(&model, &moved, 0.99), 1.0);

    // For the record (not a requirement): a 6σ deviation on a single feature adds only ~36 to a
    // d² of ~300 and is mostly invisible to a whole-row distance in 300 dimensions.
    let one: Vec<Vec<f64>> = fresh
        .iter()
        .take(2000)
        .enumerate()
        .map(|(i, r)| shifted(r, &unit_shift(F, i % F, 6.0 * sd[i % F])))
        .collect();
    println!(
        "300 features: fresh rows + 6σ on one feature scoring ≥ 0.99: {:.1} %",
        100.0 * share_at_least(&model, &one, 0.99)
    );
}

#[test]
fn bundled_references() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for (name, features, max_own_share) in [
        ("iris", 4, 0.05),
        ("breast_cancer", 30, 0.05),
        ("diabetes", 10, 0.05),
    ] {
        let reference = Reference::read(&models.join(name).join("1/reference.csv")).unwrap();
        let rows = &reference.rows;
        let model = OutlierModel::fit(rows).unwrap();
        assert_eq!(model.features(), features, "{name}");
        assert_eq!(model.calibration_rows(), rows.len().div_ceil(4), "{name}");

        let own = share_at_least(&model, rows, 0.99);
        println!(
            "{name}: {} rows, {} held out, ρ = {:.4}; own rows scoring ≥ 0.99: {:.2} %",
            rows.len(),
            model.calibration_rows(),
            model.shrinkage().unwrap_or(f64::NAN),
            100.0 * own
        );
        assert!(own <= max_own_share, "{name}: {own}");

        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..features)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let sd: Vec<f64> = (0..features)
            .map(|j| (rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt())
            .collect();
        for sign in [6.0, -6.0] {
            let far: Vec<f64> = mean.iter().zip(&sd).map(|(m, s)| m + sign * s).collect();
            let score = model.score(&far);
            println!(
                "{name}: mean {sign:+}σ on every feature: distance {:.1}, score {score}",
                model.distance(&far)
            );
            assert!(score >= 0.99, "{name} {sign}: {score}");
        }
        // For the record: 6σ from the mean on one feature at a time.
        let single: Vec<Vec<f64>> = (0..features)
            .map(|j| shifted(&mean, &unit_shift(features, j, 6.0 * sd[j])))
            .collect();
        println!(
            "{name}: mean + 6σ on one feature scoring ≥ 0.99: {:.0} %",
            100.0 * share_at_least(&model, &single, 0.99)
        );
    }
}

#[test]
fn bad_references_are_refused() {
    assert!(matches!(
        OutlierModel::fit(&vec![vec![1.0, 2.0]; 5]),
        Err(OutlierError::TooFewRows { found: 5, .. })
    ));
    let mut rows = vec![vec![1.0, 2.0]; 50];
    rows[10][1] = f64::NAN;
    assert!(matches!(
        OutlierModel::fit(&rows),
        Err(OutlierError::NonFinite {
            row: 10,
            feature: 1
        })
    ));
}
