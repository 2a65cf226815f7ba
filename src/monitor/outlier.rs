//! Outlier scores of single rows against a version's reference sample: the Mahalanobis distance
//! to the reference mean under a Ledoit–Wolf shrunk covariance, turned into a score in [0, 1] by
//! the empirical CDF of the distances of held-out reference rows. Pure: no I/O, metrics or locks.
//!
//! # Choices
//!
//! - **Split.** The reference rows are permuted by a Fisher–Yates shuffle driven by SplitMix64
//!   with a fixed seed (`SPLIT_SEED`); the first ⌈n/4⌉ rows of the permutation are held out for
//!   calibration, the rest fit the mean and covariance. The split is reproducible from the rows
//!   alone (no global RNG, independent of crate versions) and, unlike "every k-th row", immune
//!   to files sorted by class or time and to periodic structure. At least
//!   [`OutlierModel::MIN_ROWS`] = 20 rows are needed, so at least 5 are held out and 15 fit.
//! - **Standardisation.** Each feature is centred by its fit-part mean and divided by its
//!   fit-part standard deviation (1/n) before the covariance is estimated, so the shrinkage
//!   target treats all features alike whatever their units.
//! - **Variance floor.** A feature whose standard deviation is at most `1e-6 · max(|mean|, 1)`
//!   (`SD_FLOOR_RELATIVE`) counts as constant: it is left out of the covariance estimate and
//!   measured on its own, independent of the others, with that floor as its standard deviation.
//!   Distances stay finite; a value that differs from a constant only by float32 rounding
//!   (relative 6e-8) adds next to nothing, and a genuinely different value (a one-hot column
//!   never set in the reference, now set) is far out, as it should be.
//! - **Covariance (at most [`OutlierModel::MAX_FULL_FEATURES`] = 256 features).** Ledoit–Wolf
//!   shrinkage of the sample covariance `S` of the standardised fit rows `z₁ … zₙ` (p
//!   non-constant features) towards `μ·I`:
//!
//!   ```text
//!   S  = (1/n) Σₖ zₖ zₖᵀ              μ = tr(S) / p   (= 1 after standardisation)
//!   δ² = ‖S − μI‖²_F                   how far S is from the target
//!   β̄² = (1/n²) Σₖ ‖zₖ zₖᵀ − S‖²_F   = (Σₖ ‖zₖ‖⁴ − n·‖S‖²_F) / n²   how noisy S is
//!   ρ  = min(β̄², δ²) / δ²  ∈ [0, 1]   (0 when δ² = 0)
//!   Σ  = (1 − ρ)·S + ρ·μ·I
//!   ```
//!
//!   (Ledoit & Wolf 2004, "A well-conditioned estimator for large-dimensional covariance
//!   matrices", J. Multivariate Anal. 88; scikit-learn's `ledoit_wolf` divides both norms by p,
//!   which leaves ρ unchanged.) `Σ` is factored by Cholesky, `Σ = L·Lᵀ`; should a pivot not come
//!   out clearly positive (only possible when ρ ≈ 0 and `S` is singular) a ridge of 1e-10,
//!   1e-8, …, 1 is added to the diagonal until it factors. The distance is `d(x) = ‖W·(x − m)‖`
//!   with `W = L⁻¹·diag(1/σ)` precomputed as a packed lower triangle.
//!   Consequence of the shrinkage: every eigenvalue of the standardised covariance is at least
//!   ρ·μ, so a direction whose true standardised variance is far below ρ (nearly collinear
//!   features, e.g. radius, perimeter and area) is weighted as if its variance were ρ. A 6σ
//!   shift along a single feature breaks the relations between correlated features and is seen
//!   (it is longer than 6 in Mahalanobis terms); a 6σ shift along a direction of variance ~1e-5
//!   with ρ ≈ 2e-3 is not. This also keeps float32 rounding of inputs from raising scores.
//! - **Diagonal (more than 256 features).** Per-feature variances only (with the same floor):
//!   `d(x)² = Σⱼ ((xⱼ − mⱼ)/σⱼ)²`. With hundreds of features a full covariance needs far more
//!   rows than a reference holds (10 000 at most), and O(F²) per row becomes a real cost on the
//!   request path. Calibration stays exact (it does not depend on the distance being the right
//!   one), only power is lost. Caveat: in 300 dimensions a whole-row distance cannot see a 6σ
//!   deviation on a single feature (+36 against a χ² of mean 300, sd 24); the per-feature drift
//!   tests can.
//! - **Score.** `score(x) = #{c ∈ C : c < d(x)} / |C|`, C the sorted held-out distances, found by
//!   binary search. For a row from the reference distribution (exchangeable with the held-out
//!   rows, no ties) the rank `#{c < d(x)}` is uniform on {0, …, |C|}, so
//!   `P(score ≥ 0.99) = (|C| − ⌈0.99·|C|⌉ + 1) / (|C| + 1)`: 1.04 % for 1 250 held-out rows
//!   (5 000 reference rows), from 2 % down to 1 % for 100 … 199 held-out rows, and `1/(|C| + 1)`
//!   below 100 held-out rows (4.2 % for iris' 23): a small reference cannot resolve a 1 % tail.
//!   That is the average over references; for one given reference the rate is itself random
//!   (Beta(|C| − ⌈0.99·|C|⌉ + 1, ⌈0.99·|C|⌉): sd ≈ 0.29 % at 1 250 held-out rows). The strict
//!   `<` means ties (a request equal to a reference row, discrete features) never raise a score,
//!   and a held-out row itself scores at most `(|C| − 1)/|C|`. Held-out rows are used because
//!   in-sample distances are systematically smaller than a new row's.
//! - **Bad rows.** A row of the wrong length, or with a NaN or infinite value, has distance +∞
//!   and score 1: nothing in the reference is like it.
//!
//! # Cost
//!
//! Fitting: O(n·F²) for the covariance plus O(F³) for the factor and its inverse (F ≤ 256),
//! once when a version loads (30 features, 10 000 rows: about 5 ms in release). Per row:
//! F(F+1)/2 subtract-multiply-adds (465 for 30 features), the centring done on the fly, plus
//! one binary search over |C| values; no allocation and no buffer (30 features: about 0.25 µs
//! for `distance`, 0.3 µs for `score`, release build). The diagonal form costs O(F).

use super::linalg::{cholesky, dot_centred, inverse_factor};
use thiserror::Error;

const MIN_ROWS: usize = OutlierModel::MIN_ROWS;
const MAX_FULL_FEATURES: usize = OutlierModel::MAX_FULL_FEATURES;

/// Standard deviations at most this times `max(|mean|, 1)` count as zero and are floored to it.
const SD_FLOOR_RELATIVE: f64 = 1e-6;

/// Seed of the deterministic shuffle that picks the held-out rows.
const SPLIT_SEED: u64 = 0x7A3D_5EED_0F0D_71E2;

/// Largest accepted magnitude of a reference value (squares of larger values would overflow).
const MAX_MAGNITUDE: f64 = 1e150;

/// Ridges tried, in order, when the shrunk covariance does not factor.
const RIDGES: [f64; 7] = [0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0];

/// Why an outlier model could not be fitted.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OutlierError {
    /// Fewer rows than [`OutlierModel::MIN_ROWS`].
    #[error("{found} reference rows, at least {needed} are needed for outlier scores")]
    TooFewRows {
        /// Rows given.
        found: usize,
        /// Rows needed.
        needed: usize,
    },
    /// The rows have no values.
    #[error("the reference rows have no features")]
    NoFeatures,
    /// A row has a different number of values than the first.
    #[error("reference row {row} has {found} values, the first row has {expected}")]
    Ragged {
        /// Index of the row (0-based).
        row: usize,
        /// Values in that row.
        found: usize,
        /// Values in the first row.
        expected: usize,
    },
    /// A value is NaN or infinite.
    #[error("reference row {row}, feature {feature}: the value is not finite")]
    NonFinite {
        /// Index of the row (0-based).
        row: usize,
        /// Index of the feature (0-based).
        feature: usize,
    },
    /// A value is too large in magnitude (above 1e150) for the statistics.
    #[error("reference row {row}, feature {feature}: the value is too large (|x| > 1e150)")]
    TooLarge {
        /// Index of the row (0-based).
        row: usize,
        /// Index of the feature (0-based).
        feature: usize,
    },
}

/// How centred rows are whitened.
#[derive(Clone)]
enum Whitening {
    /// `W = L⁻¹·diag(1/σ)`, lower triangular, packed by rows (row i holds i + 1 values).
    Full {
        packed: Vec<f64>,
        shrinkage: f64,
        ridge: f64,
    },
    /// `1/σⱼ` per feature.
    Diagonal { inverse_scale: Vec<f64> },
}

/// A fitted outlier model: distances and scores of rows against one reference sample.
#[derive(Clone)]
pub struct OutlierModel {
    mean: Vec<f64>,
    whitening: Whitening,
    /// Distances of the held-out rows, ascending.
    calibration: Vec<f64>,
    fit_rows: usize,
    constant_features: usize,
}

impl std::fmt::Debug for OutlierModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("OutlierModel");
        s.field("features", &self.mean.len())
            .field("fit_rows", &self.fit_rows)
            .field("calibration_rows", &self.calibration.len())
            .field("constant_features", &self.constant_features);
        match &self.whitening {
            Whitening::Full {
                shrinkage, ridge, ..
            } => s.field("shrinkage", shrinkage).field("ridge", ridge),
            Whitening::Diagonal { .. } => s.field("covariance", &"diagonal"),
        };
        s.finish()
    }
}

impl OutlierModel {
    /// Fewest reference rows a model is fitted on (so at least 5 are held out, 15 fit).
    pub const MIN_ROWS: usize = 20;

    /// Most features for which the full (shrunk) covariance is used; above, the diagonal.
    pub const MAX_FULL_FEATURES: usize = 256;

    /// Fits a model on reference rows (row-major, one value per feature).
    ///
    /// # Errors
    /// [`OutlierError`] when there are fewer than [`OutlierModel::MIN_ROWS`] rows, no features,
    /// rows of different lengths, or a value that is not finite or above 1e150 in magnitude.
    pub fn fit(rows: &[Vec<f64>]) -> Result<OutlierModel, OutlierError> {
        let features = validate(rows)?;
        let (held_out, fit) = split(rows.len());
        let (mean, sd) = moments(rows, &fit, features);
        let floor: Vec<f64> = mean
            .iter()
            .map(|m| SD_FLOOR_RELATIVE * m.abs().max(1.0))
            .collect();
        let active: Vec<bool> = sd.iter().zip(&floor).map(|(s, fl)| s > fl).collect();
        let scale: Vec<f64> = sd.iter().zip(&floor).map(|(s, fl)| s.max(*fl)).collect();
        let constant_features = active.iter().filter(|a| !**a).count();

        let whitening = if features > MAX_FULL_FEATURES {
            Whitening::Diagonal {
                inverse_scale: scale.iter().map(|s| 1.0 / s).collect(),
            }
        } else {
            let (sigma, shrinkage) = shrunk_covariance(rows, &fit, &mean, &scale, &active);
            match RIDGES
                .iter()
                .find_map(|&ridge| cholesky(&sigma, features, ridge).map(|l| (l, ridge)))
            {
                Some((factor, ridge)) => Whitening::Full {
                    packed: inverse_factor(&factor, features, &scale),
                    shrinkage,
                    ridge,
                },
                // Not reached with validated data: Σ has a unit diagonal and entries bounded by
                // 1, so adding a ridge of 1 leaves it clearly positive definite. The diagonal is
                // the safe answer regardless.
                None => Whitening::Diagonal {
                    inverse_scale: scale.iter().map(|s| 1.0 / s).collect(),
                },
            }
        };

        let mut model = OutlierModel {
            mean,
            whitening,
            calibration: Vec::new(),
            fit_rows: fit.len(),
            constant_features,
        };
        let mut calibration: Vec<f64> = held_out
            .iter()
            .filter_map(|&i| rows.get(i))
            .map(|row| model.distance(row))
            .collect();
        calibration.sort_by(f64::total_cmp);
        model.calibration = calibration;
        Ok(model)
    }

    /// Mahalanobis distance of a row to the reference mean (in units of standard deviations of
    /// the shrunk covariance). +∞ for a row of the wrong length or with a NaN or infinite value.
    ///
    /// Cost: F(F+1)/2 multiply-adds with the full covariance, F with the diagonal; no
    /// allocation.
    pub fn distance(&self, row: &[f64]) -> f64 {
        if row.len() != self.mean.len() {
            return f64::INFINITY;
        }
        let squared = match &self.whitening {
            Whitening::Diagonal { inverse_scale } => {
                let mut sums = [0.0_f64; 4];
                for (i, ((x, m), w)) in row.iter().zip(&self.mean).zip(inverse_scale).enumerate() {
                    let z = (x - m) * w;
                    if let Some(s) = sums.get_mut(i % 4) {
                        *s += z * z;
                    }
                }
                (sums[0] + sums[1]) + (sums[2] + sums[3])
            }
            Whitening::Full { packed, .. } => {
                let mut squared = 0.0;
                let mut rest: &[f64] = packed;
                for i in 0..row.len() {
                    let (Some((w, tail)), Some(x), Some(m)) = (
                        rest.split_at_checked(i + 1),
                        row.get(..=i),
                        self.mean.get(..=i),
                    ) else {
                        return f64::INFINITY;
                    };
                    let y = dot_centred(w, x, m);
                    squared += y * y;
                    rest = tail;
                }
                squared
            }
        };
        if squared.is_nan() {
            f64::INFINITY
        } else {
            squared.sqrt()
        }
    }

    /// Outlier score in [0, 1]: the share of held-out reference rows whose distance is strictly
    /// below this row's. About 1 % of rows from the reference distribution score ≥ 0.99 when
    /// at least a few hundred rows are held out (see the module docs for small references).
    pub fn score(&self, row: &[f64]) -> f64 {
        self.score_distance(self.distance(row))
    }

    /// The score of a distance returned by [`OutlierModel::distance`].
    pub fn score_distance(&self, distance: f64) -> f64 {
        if self.calibration.is_empty() {
            return 0.0;
        }
        if distance.is_nan() {
            return 1.0;
        }
        let below = self.calibration.partition_point(|&c| c < distance);
        below as f64 / self.calibration.len() as f64
    }

    /// Number of features a row must have.
    pub fn features(&self) -> usize {
        self.mean.len()
    }

    /// Number of held-out reference rows the score is calibrated on.
    pub fn calibration_rows(&self) -> usize {
        self.calibration.len()
    }

    /// The Ledoit–Wolf shrinkage intensity ρ in [0, 1], or `None` when the diagonal covariance
    /// is used (more than [`OutlierModel::MAX_FULL_FEATURES`] features).
    pub fn shrinkage(&self) -> Option<f64> {
        match &self.whitening {
            Whitening::Full { shrinkage, .. } => Some(*shrinkage),
            Whitening::Diagonal { .. } => None,
        }
    }
}

/// Checks the rows; returns the number of features.
fn validate(rows: &[Vec<f64>]) -> Result<usize, OutlierError> {
    if rows.len() < MIN_ROWS {
        return Err(OutlierError::TooFewRows {
            found: rows.len(),
            needed: MIN_ROWS,
        });
    }
    let features = rows.first().map_or(0, Vec::len);
    if features == 0 {
        return Err(OutlierError::NoFeatures);
    }
    for (row, values) in rows.iter().enumerate() {
        if values.len() != features {
            return Err(OutlierError::Ragged {
                row,
                found: values.len(),
                expected: features,
            });
        }
        for (feature, value) in values.iter().enumerate() {
            if !value.is_finite() {
                return Err(OutlierError::NonFinite { row, feature });
            }
            if value.abs() > MAX_MAGNITUDE {
                return Err(OutlierError::TooLarge { row, feature });
            }
        }
    }
    Ok(features)
}

/// SplitMix64 step (Steele, Lea & Flood 2014).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic split of `0..n`: (held out, ⌈n/4⌉ indices; fit, the rest), each ascending.
fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = SPLIT_SEED;
    for i in (1..n).rev() {
        // Multiply-shift maps 64 random bits onto 0..=i with negligible bias.
        let j = ((u128::from(splitmix64(&mut state)) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    let held = n.div_ceil(4);
    let (held_out, fit) = order.split_at(held.min(n));
    let (mut held_out, mut fit) = (held_out.to_vec(), fit.to_vec());
    held_out.sort_unstable();
    fit.sort_unstable();
    (held_out, fit)
}

/// Per-feature mean and standard deviation (1/n) of the rows at `indices` (two passes).
fn moments(rows: &[Vec<f64>], indices: &[usize], features: usize) -> (Vec<f64>, Vec<f64>) {
    let n = indices.len().max(1) as f64;
    let mut mean = vec![0.0; features];
    for row in indices.iter().filter_map(|&i| rows.get(i)) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut variance = vec![0.0; features];
    for row in indices.iter().filter_map(|&i| rows.get(i)) {
        for ((v, x), m) in variance.iter_mut().zip(row).zip(&mean) {
            *v += (x - m) * (x - m);
        }
    }
    let sd = variance.iter().map(|v| (v / n).sqrt()).collect();
    (mean, sd)
}

/// The Ledoit–Wolf shrunk covariance of the standardised active features, embedded in an F×F
/// row-major matrix with 1 on the diagonal (and 0 elsewhere) for constant features; and ρ.
fn shrunk_covariance(
    rows: &[Vec<f64>],
    indices: &[usize],
    mean: &[f64],
    scale: &[f64],
    active: &[bool],
) -> (Vec<f64>, f64) {
    let features = mean.len();
    let columns: Vec<usize> = (0..features)
        .filter(|&j| active.get(j).copied().unwrap_or(false))
        .collect();
    let p = columns.len();
    let n = indices.len();
    let mut s = vec![0.0; p * p];
    let mut sum_norm4 = 0.0;
    let mut z = vec![0.0; p];
    for row in indices.iter().filter_map(|&i| rows.get(i)) {
        for (zj, &j) in z.iter_mut().zip(&columns) {
            *zj = match (row.get(j), mean.get(j), scale.get(j)) {
                (Some(x), Some(m), Some(sc)) => (x - m) / sc,
                _ => 0.0,
            };
        }
        let norm2: f64 = z.iter().map(|v| v * v).sum();
        sum_norm4 += norm2 * norm2;
        // Upper triangle only; mirrored below.
        for (a, s_row) in s.chunks_exact_mut(p).enumerate() {
            let za = z.get(a).copied().unwrap_or(0.0);
            for (s_ab, zb) in s_row.iter_mut().zip(&z).skip(a) {
                *s_ab += za * zb;
            }
        }
    }
    let inv_n = 1.0 / n.max(1) as f64;
    s.iter_mut().for_each(|v| *v *= inv_n);
    for a in 0..p {
        for b in 0..a {
            if let Some(&upper) = s.get(b * p + a)
                && let Some(lower) = s.get_mut(a * p + b)
            {
                *lower = upper;
            }
        }
    }
    let shrinkage = ledoit_wolf_intensity(&s, p, sum_norm4, n);
    let mu = if p == 0 {
        1.0
    } else {
        (0..p).filter_map(|a| s.get(a * p + a)).sum::<f64>() / p as f64
    };

    let mut sigma = vec![0.0; features * features];
    for j in 0..features {
        if !active.get(j).copied().unwrap_or(false)
            && let Some(d) = sigma.get_mut(j * features + j)
        {
            *d = 1.0;
        }
    }
    for (a, &ja) in columns.iter().enumerate() {
        for (b, &jb) in columns.iter().enumerate() {
            let target = if a == b { mu } else { 0.0 };
            if let (Some(&value), Some(cell)) =
                (s.get(a * p + b), sigma.get_mut(ja * features + jb))
            {
                *cell = (1.0 - shrinkage) * value + shrinkage * target;
            }
        }
    }
    (sigma, shrinkage)
}

/// The Ledoit–Wolf intensity ρ = min(β̄², δ²)/δ² from the 1/n sample covariance `s` (p×p) of
/// n centred rows whose squared norms squared sum to `sum_norm4` (see the module docs).
fn ledoit_wolf_intensity(s: &[f64], p: usize, sum_norm4: f64, n: usize) -> f64 {
    if p == 0 || n == 0 {
        return 0.0;
    }
    let frobenius2: f64 = s.iter().map(|v| v * v).sum();
    let trace: f64 = (0..p).filter_map(|a| s.get(a * p + a)).sum();
    let mu = trace / p as f64;
    let delta2 = frobenius2 - p as f64 * mu * mu;
    let n = n as f64;
    let beta2 = ((sum_norm4 - n * frobenius2) / (n * n)).max(0.0);
    if delta2 <= 0.0 || !delta2.is_finite() || !beta2.is_finite() {
        return 0.0;
    }
    (beta2.min(delta2) / delta2).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests;
