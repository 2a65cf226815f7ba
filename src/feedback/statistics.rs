//! The statistics of live quality and promotion, as pure functions: the discordant-pair mixture
//! SPRT for classifiers, the Gaussian mixture SPRT for regressors, and the 95% intervals of the
//! quality figures. No I/O, no state.
//!
//! # Classifiers: discordant-pair mixture SPRT (a sequential exact McNemar test)
//!
//! On rows labelled while both versions were live, `b` = #(shadow right, champion wrong) and
//! `c` = #(champion right, shadow wrong); concordant rows carry no information. With
//! p = P(shadow right | discordant), H0: p ≤ ½, and a Beta(a, a) prior restricted to p > ½:
//!
//! ```text
//! Λ(b, c) = 2^(b+c+1) · B(a+b, a+c) / B(a, a) · I_{1/2}(a+c, a+b)        (Λ(0, 0) = 1)
//! ```
//!
//! (I is the regularised incomplete beta function). Λ is a non-negative supermartingale under
//! H0, so P(Λ ever ≥ 1/α) ≤ α whatever the peeking (Ville's inequality). Everything is computed
//! in logs: 2^n overflows an f64 near n = 1024, and for c ≫ b, I_{1/2} underflows long before
//! Λ does (at b = 0, c ≈ 1 100), so I is never formed: its continued fraction is combined with
//! the other factors in logs. statrs's `beta_reg` is not used: it returns I itself, and stops
//! after 140 terms, short of the ≈ √(b + c) the fraction needs near b = c for b + c ≳ 10⁵.
//!
//! # Regressors: Gaussian mixture SPRT on paired error differences
//!
//! With dᵢ = |e_champion,i| − |e_shadow,i| (positive: the shadow is closer), mean d̄ₙ and
//! variance V (plug-in), and mixing variance τ² (Johari, Pekelis & Walsh, "Always valid
//! inference", Oper. Res. 2022):
//!
//! ```text
//! Λₙ = √(V / (V + nτ²)) · exp( n²τ²d̄ₙ² / (2V(V + nτ²)) )
//! ```
//!
//! τ² is chosen for a horizon of M rows as the R package mixtureSPRT's `calcTau` does:
//! b = 2 ln(1/α) / √(M V), τ² = V Φ(−b) / (φ(b)/b − Φ(−b)).

use statrs::function::beta::ln_beta;
use statrs::function::erf::erfc;
use std::f64::consts::{LN_2, PI};

/// The Beta(a, a) prior of the discordant-pair test (a = 4: mass spread over p in ½…1 with
/// most of it on modest improvements, the prior the measured error rates were simulated with).
pub const PRIOR_A: f64 = 4.0;

/// The two-sided 95% normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// ln Λ(b, c) of the discordant-pair mixture SPRT with a Beta(a, a) prior on p > ½. Large for
/// `b ≫ c`; swap the counts for the evidence that the shadow is worse.
pub fn discordant_log_evidence(b: u64, c: u64, a: f64) -> f64 {
    if b == 0 && c == 0 {
        return 0.0;
    }
    let (b, c) = (b as f64, c as f64);
    // Λ = 2^(b+c+1) B(q, p)/B(a, a) · I_{1/2}(p, q) with p = a + c, q = a + b. The continued
    // fraction h(p, q) gives I_{1/2}(p, q) = 2^−(p+q) h(p, q) / (p B(p, q)), which converges
    // fast for p ≥ q (c ≥ b); for p < q use I = 1 − I_{1/2}(q, p). In the first case B(p, q)
    // cancels and nothing underflows, however lopsided the counts.
    let (p, q) = (a + c, a + b);
    if c >= b {
        (1.0 - 2.0 * a) * LN_2 - ln_beta(a, a) - p.ln() + beta_fraction(p, q).ln()
    } else {
        let ln_scale = (b + c + 1.0) * LN_2 + ln_beta(q, p) - ln_beta(a, a);
        let other = (-(p + q) * LN_2 - ln_beta(q, p) - q.ln() + beta_fraction(q, p).ln()).exp();
        ln_scale + (-other).ln_1p()
    }
}

/// The continued fraction of I_{1/2}(p, q) (Lentz's method, as Numerical Recipes' `betacf`),
/// run to convergence: about √max(p, q) terms where p ≈ q, a few dozen otherwise.
fn beta_fraction(p: f64, q: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let x = 0.5;
    let mut c = 1.0;
    let mut d = 1.0 - (p + q) * x / (p + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..100_000u32 {
        let m = f64::from(m);
        let even = m * (q - m) * x / ((p + 2.0 * m - 1.0) * (p + 2.0 * m));
        d = 1.0 + even * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + even / c;
        if c.abs() < TINY {
            c = TINY;
        }
        h *= d * c;
        let odd = -(p + m) * (p + q + m) * x / ((p + 2.0 * m) * (p + 2.0 * m + 1.0));
        d = 1.0 + odd * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + odd / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() <= f64::EPSILON / 2.0 {
            break;
        }
    }
    h
}

/// ln Λ of the Gaussian mixture SPRT after `n` paired differences of mean `mean` and variance
/// `variance`, with mixing variance `tau2`. 0 (no evidence) when the variance is not positive.
pub fn gaussian_log_evidence(n: u64, mean: f64, variance: f64, tau2: f64) -> f64 {
    if n == 0 || !(variance > 0.0 && tau2 > 0.0) || !variance.is_finite() {
        return 0.0;
    }
    let n = n as f64;
    let spread = variance + n * tau2;
    0.5 * (variance / spread).ln() + n * n * tau2 * mean * mean / (2.0 * variance * spread)
}

/// The mixing variance τ² that makes the Gaussian mixture SPRT most sensitive around a horizon
/// of `horizon` rows, for differences of variance `variance` at level `alpha` (mixtureSPRT's
/// `calcTau`).
pub fn mixing_variance(alpha: f64, horizon: u64, variance: f64) -> f64 {
    let b = 2.0 * (1.0 / alpha).ln() / (horizon as f64 * variance).sqrt();
    // Φ(−b)/φ(b), the Mills ratio: from Φ and φ while they are far from underflow (b < 3), by
    // its continued fraction 1/(b + 1/(b + 2/(b + 3/(b + …)))) beyond.
    let mills = if b < 3.0 {
        normal_cdf(-b) / normal_density(b)
    } else if b.is_finite() {
        1.0 / (1..=100).rev().fold(b, |tail, j| b + f64::from(j) / tail)
    } else {
        return 0.0;
    };
    variance * mills / (1.0 / b - mills)
}

/// Φ(x), the standard normal distribution function.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// φ(x), the standard normal density.
pub fn normal_density(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// The always-valid p-value from the largest Λ seen so far: min(1, 1 / max Λ).
pub fn always_valid_p_value(max_log_evidence: f64) -> f64 {
    (-max_log_evidence).exp().min(1.0)
}

/// A point estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
}

/// The share `successes / n` with its Wilson score 95% interval. `None` for `n = 0`.
pub fn wilson(successes: u64, n: u64) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let (k, n) = (successes as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Estimate {
        value: p,
        low: (centre - half).clamp(0.0, p),
        high: (centre + half).clamp(p, 1.0),
    })
}

/// The mean of `n` values with sum `sum` and sum of squares `squares`, with a 95% normal
/// interval (sample standard deviation). `None` for `n = 0`.
pub fn mean_estimate(n: u64, sum: f64, squares: f64) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let count = n as f64;
    let mean = sum / count;
    let variance = if n > 1 {
        ((squares - count * mean * mean) / (count - 1.0)).max(0.0)
    } else {
        0.0
    };
    let half = Z95 * (variance / count).sqrt();
    Some(Estimate {
        value: mean,
        low: mean - half,
        high: mean + half,
    })
}

/// The difference in accuracy between shadow and champion on `n` paired rows with `b`
/// shadow-only and `c` champion-only correct rows: Δ = (b − c)/n with the 95% interval of
/// SE = √(b + c − (b − c)²/n) / n. `None` for `n = 0`.
pub fn accuracy_difference(b: u64, c: u64, n: u64) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let (b, c, n) = (b as f64, c as f64, n as f64);
    let delta = (b - c) / n;
    let se = (b + c - (b - c) * (b - c) / n).max(0.0).sqrt() / n;
    Some(Estimate {
        value: delta,
        low: delta - Z95 * se,
        high: delta + Z95 * se,
    })
}

#[cfg(test)]
mod tests;
