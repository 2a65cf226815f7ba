//! Two-sample Kolmogorov–Smirnov drift test, equal to `scipy.stats.ks_2samp(a, b,
//! alternative='two-sided', method='asymp')`: the statistic, the exact null distribution of the
//! one-sample two-sided statistic (`scipy.stats.kstwo.sf`) and the Bonferroni decision. Pure
//! functions: no I/O, no metrics, no locks.
//!
//! `kolmogorov_sf(d, n)` follows Simard & L'Ecuyer (2011), "Computing the two-sided
//! Kolmogorov–Smirnov distribution", J. Stat. Softw. 39(11), with the dispatch of scipy's
//! `scipy/stats/_ksstats.py::_kolmogn` (branches and thresholds as scipy has them):
//!
//! | condition (t = n·d) | value |
//! |---|---|
//! | d ≥ 1 | 0 |
//! | d ≤ 0, or t ≤ 0.5 | 1 |
//! | t ≤ 1 | 1 − n!/nⁿ·(2t − 1)ⁿ (Ruben–Gambino) |
//! | t ≥ n − 1 | 2(1 − d)ⁿ (Ruben–Gambino) |
//! | d ≥ 0.5 | 2·smirnov(n, d) (Birnbaum–Tingey) |
//! | n ≤ 140 | t·d ≤ 0.754693: Durbin matrix; t·d ≤ 4: Pomeranz; else 2·smirnov |
//! | n > 140 | t·d ≥ 370: 0; t·d ≥ 2.2: 2·smirnov; n ≤ 100000 and n·d^1.5 ≤ 1.4: Durbin; else Pelz–Good |
//!
//! Every branch costs a bounded amount of work: the Durbin matrix is at most about 117 × 117
//! (n ≤ 100000), Pomeranz runs only for n ≤ 140, and the Birnbaum–Tingey sum has at most
//! min(n, 10⁶) terms (scipy's closed-form approximation above 10⁶).

use super::linalg::mat_mul;
use std::cmp::Ordering;
use std::f64::consts::{LN_2, PI};

/// Result of a two-sample Kolmogorov–Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsTest {
    /// `D = max |F_a − F_b|` over the pooled observations (right-continuous ECDFs).
    pub statistic: f64,
    /// Two-sided p-value: `kstwo.sf(D, round(m·n/(m+n)))`, in [0, 1].
    pub p_value: f64,
}

/// Per-feature and dataset drift decided with a Bonferroni-corrected threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftDecision {
    /// The corrected threshold `alpha / F` (F = number of features; `alpha` when F = 0).
    pub threshold: f64,
    /// Per feature: `p < threshold` (strict; a NaN p-value is not drift).
    pub drifted: Vec<bool>,
    /// Whether any feature drifted.
    pub dataset_drift: bool,
}

/// Two-sample KS statistic `D = max_x |F_a(x) − F_b(x)|` of two samples sorted ascending.
///
/// Both ECDFs are right-continuous (`F(x) = #{≤ x} / len`) and evaluated at every pooled
/// observation, so a value present in both samples moves both at once; each difference is computed
/// as `i/m − j/n` in f64, as scipy does, so the result is bit-for-bit scipy's. O(m + n), no
/// allocation. Returns 0 when either sample is empty.
pub fn ks_statistic(a_sorted: &[f64], b_sorted: &[f64]) -> f64 {
    let (m, n) = (a_sorted.len(), b_sorted.len());
    if m == 0 || n == 0 {
        return 0.0;
    }
    let (mf, nf) = (m as f64, n as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut above = 0.0f64; // max of F_a − F_b
    let mut below = 0.0f64; // max of F_b − F_a
    while i < m || j < n {
        let x = match (a_sorted.get(i), b_sorted.get(j)) {
            (Some(&u), Some(&v)) => {
                if u <= v {
                    u
                } else {
                    v
                }
            }
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => break,
        };
        // "not greater" rather than `<=`: the element `x` came from is always consumed, so the
        // loop ends even on NaN input.
        while i < m && a_sorted[i].partial_cmp(&x) != Some(Ordering::Greater) {
            i += 1;
        }
        while j < n && b_sorted[j].partial_cmp(&x) != Some(Ordering::Greater) {
            j += 1;
        }
        let diff = i as f64 / mf - j as f64 / nf;
        if diff > above {
            above = diff;
        }
        if -diff > below {
            below = -diff;
        }
    }
    below.min(1.0).max(above)
}

/// `scipy.stats.kstwo.sf(d, n)`: `P(D_n ≥ d)` for the one-sample two-sided Kolmogorov statistic of
/// a sample of size `n` (the exact distribution, not the limiting series).
///
/// Defined for every `d` and `n`, and in [0, 1] for every non-NaN `d` (a NaN `d` gives NaN):
/// `d ≤ 0` gives 1, `d ≥ 1` gives 0, `n = 0` (no sample; scipy answers NaN) gives 1. Never loops
/// without bound; the slowest case (n near 10⁵, n·d^1.5 ≤ 1.4) takes some tens of milliseconds.
pub fn kolmogorov_sf(d: f64, n: u64) -> f64 {
    if d.is_nan() {
        return f64::NAN;
    }
    if n == 0 {
        return 1.0;
    }
    if d >= 1.0 {
        return 0.0;
    }
    if d <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * d;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        return clip01(1.0 - ruben_gambino_cdf(n, t));
    }
    if t >= nf - 1.0 {
        return clip01(2.0 * (1.0 - d).powf(nf));
    }
    if d >= 0.5 {
        return clip01(2.0 * smirnov_sf(n, d));
    }
    let nxsquared = t * d;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return clip01(1.0 - durbin_cdf(n, d));
        }
        if nxsquared <= 4.0 {
            return clip01(1.0 - pomeranz_cdf(n, d));
        }
        return clip01(2.0 * smirnov_sf(n, d));
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return clip01(2.0 * smirnov_sf(n, d));
    }
    let cdf = if n <= 100_000 && nf * d.powf(1.5) <= 1.4 {
        durbin_cdf(n, d)
    } else {
        pelz_good_cdf(n, d)
    };
    clip01(1.0 - cdf)
}

/// `scipy.stats.ks_2samp(a, b, alternative='two-sided', method='asymp')` on two samples sorted
/// ascending: `D` from [`ks_statistic`] and `p = kstwo.sf(D, round(en))` with `en = m·n/(m+n)`
/// rounded half to even (numpy's `round`), clipped to [0, 1].
///
/// `None` when either sample is empty. With one value in each sample `en` rounds to 0, where scipy
/// answers NaN; this gives p = 1 (two single values carry no evidence of drift).
pub fn ks_two_sample(a_sorted: &[f64], b_sorted: &[f64]) -> Option<KsTest> {
    if a_sorted.is_empty() || b_sorted.is_empty() {
        return None;
    }
    let statistic = ks_statistic(a_sorted, b_sorted);
    let (m, n) = (a_sorted.len() as f64, b_sorted.len() as f64);
    let (big, small) = if m >= n { (m, n) } else { (n, m) };
    let en = big * small / (big + small);
    let n_eff = en.round_ties_even() as u64;
    Some(KsTest {
        statistic,
        p_value: clip01(kolmogorov_sf(statistic, n_eff)),
    })
}

/// alibi-detect's `KSDrift` rule: feature `f` drifted iff `p_f < alpha / F` (strict), F =
/// `p_values.len()`; dataset drift iff any feature drifted.
pub fn bonferroni(p_values: &[f64], alpha: f64) -> DriftDecision {
    let threshold = if p_values.is_empty() {
        alpha
    } else {
        alpha / p_values.len() as f64
    };
    let drifted: Vec<bool> = p_values.iter().map(|&p| p < threshold).collect();
    let dataset_drift = drifted.iter().any(|&d| d);
    DriftDecision {
        threshold,
        drifted,
        dataset_drift,
    }
}

fn clip01(p: f64) -> f64 {
    if p.is_nan() { p } else { p.clamp(0.0, 1.0) }
}

/// `x · 2^e`, exact unless the result under- or overflows.
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    const STEP: i64 = 1000;
    while e > STEP && x.is_finite() && x != 0.0 {
        x *= pow2(STEP);
        e -= STEP;
    }
    while e < -STEP && x.is_finite() && x != 0.0 {
        x *= pow2(-STEP);
        e += STEP;
    }
    if !(-STEP..=STEP).contains(&e) {
        return x;
    }
    x * pow2(e)
}

/// `2^e` for |e| ≤ 1022.
fn pow2(e: i64) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// The binary exponent of a positive normal `x` (`x = f · 2^e`, 1 ≤ f < 2).
fn exponent_of(x: f64) -> i64 {
    ((x.to_bits() >> 52) & 0x7ff) as i64 - 1023
}

/// `ln(n! / nⁿ)` by Stirling's series with `n·ln n` removed up front (scipy's
/// `_log_nfactorial_div_n_pow_n`). Accurate for the n > 140 it is used for.
fn ln_factorial_over_power(n: f64) -> f64 {
    // B_{2j} / (2j (2j − 1)) for j = 8, …, 1: Horner, highest power first.
    const STIRLING: [f64; 8] = [
        -3617.0 / 122_400.0,
        1.0 / 156.0,
        -691.0 / 360_360.0,
        1.0 / 1188.0,
        -1.0 / 1680.0,
        1.0 / 1260.0,
        -1.0 / 360.0,
        1.0 / 12.0,
    ];
    let rn = 1.0 / n;
    let y = rn / n;
    let series = STIRLING.iter().fold(0.0, |acc, &c| acc * y + c);
    n.ln() / 2.0 - n + (2.0 * PI).ln() / 2.0 + rn * series
}

/// Ruben–Gambino: `P(D_n ≤ d) = n!/nⁿ · (2nd − 1)ⁿ` for `1/(2n) ≤ d ≤ 1/n`, `t = n·d`.
fn ruben_gambino_cdf(n: u64, t: f64) -> f64 {
    let nf = n as f64;
    let base = 2.0 * t - 1.0;
    if n <= 140 {
        (1..=n).fold(1.0, |acc, i| acc * (i as f64 * (1.0 / nf) * base))
    } else {
        (ln_factorial_over_power(nf) + nf * base.ln()).exp()
    }
}

/// Birnbaum–Tingey / Smirnov: the exact one-sided tail `P(D⁺_n ≥ x)`, as scipy's
/// `scipy.special.smirnov(n, x)` for the arguments `kolmogorov_sf` passes (x > 1/n).
///
/// `x · Σ_{j=0}^{⌊n(1−x)⌋} C(n, j) (x + j/n)^{j−1} (1 − x − j/n)^{n−j}`: all terms positive, each
/// evaluated as a logarithm (the bases from the exact fractional part of `n·x`, so `1 − x − j/n`
/// keeps full precision near 0) and summed relative to the largest, so results far below 1e-300
/// keep their relative accuracy (~1e-12). Stops once the remaining terms cannot change the sum.
fn smirnov_sf(n: u64, x: f64) -> f64 {
    /// `ln(2^-1075)`: below `-2nx²` of this scipy returns 0.
    const MIN_LOG: f64 = -7.451_332_191_019_412e2;
    /// Above this scipy uses `exp(-(6nx+1)²/(18n))`.
    const MAX_COMPUTE_N: u64 = 1_000_000;

    if !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    // n·x = nx_floor + alpha exactly (up to one rounding of alpha), 0 ≤ alpha < 1.
    let prod = nf * x;
    let err = nf.mul_add(x, -prod);
    let mut floor = prod.floor();
    let mut alpha = (prod - floor) + err;
    if alpha < 0.0 {
        floor -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        floor += 1.0;
        alpha = 0.0;
    }
    let nx_floor = floor as u64;
    if nx_floor == 0 || (nx_floor == 1 && alpha == 0.0) {
        // x ≤ 1/n: cdf = x (1 + x)^{n−1}.
        return 1.0 - x * (1.0 + x).powf(nf - 1.0);
    }
    if -2.0 * nf * x * x < MIN_LOG {
        return 0.0;
    }
    if nx_floor >= n - 1 {
        return (1.0 - x).powf(nf);
    }
    if n > MAX_COMPUTE_N {
        let a = 6.0 * nf * x + 1.0;
        let logp = -(a * a) / 18.0 / nf;
        return if logp < -LN_2 {
            logp.exp()
        } else {
            1.0 + logp.exp_m1()
        };
    }

    // Terms j = 0 ..= n − nx_floor − 1 (when alpha = 0 the next term is exactly 0).
    let n_terms = n - nx_floor;
    // ln C(n, j), accumulated with Neumaier compensation (up to 10⁶ steps).
    let mut ln_binom = 0.0f64;
    let mut ln_binom_carry = 0.0f64;
    let mut ln_max = f64::NEG_INFINITY;
    let mut sum = 0.0f64; // Σ exp(ln T_j − ln_max)
    for j in 0..n_terms {
        let jf = j as f64;
        // x + j/n and 1 − x − j/n, both from integers and alpha.
        let up = ((nx_floor + j) as f64 + alpha) / nf;
        let down = ((n - j - nx_floor) as f64 - alpha) / nf;
        let ln_up = if up < 0.5 { up.ln() } else { (-down).ln_1p() };
        let ln_down = if down < 0.5 { down.ln() } else { (-up).ln_1p() };
        let ln_term = (ln_binom + ln_binom_carry) + (jf - 1.0) * ln_up + (nf - jf) * ln_down;
        if ln_term > ln_max {
            sum = sum * (ln_max - ln_term).exp() + 1.0;
            ln_max = ln_term;
        } else {
            let rel = (ln_term - ln_max).exp();
            sum += rel;
            let remaining = (n_terms - j) as f64;
            if j + 1 != n_terms && 4.0 * remaining * rel < f64::EPSILON * sum {
                break;
            }
        }
        let step = ((nf - jf) / (jf + 1.0)).ln();
        let next = ln_binom + step;
        ln_binom_carry += if ln_binom.abs() >= step.abs() {
            (ln_binom - next) + step
        } else {
            (step - next) + ln_binom
        };
        ln_binom = next;
    }
    (x.ln() + ln_max + sum.ln()).exp()
}

/// Durbin's matrix formula, evaluated as Marsaglia, Tsang & Wang (2003): `P(D_n ≤ d) = n!/nⁿ ·
/// (Hⁿ)_{kk}` with `d = (k − h)/n`, H of size (2k − 1)². Hⁿ by repeated squaring; both the
/// running power and the running product are kept normalised with a separate binary exponent, so
/// nothing overflows whatever the bits of n (scipy rescales only the squared matrix, and its
/// product overflows for some n, e.g. n = 65535, outside the two-sample sizes used here).
fn durbin_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;

    // v[j−1] = (1 − h^j)/j!, w[j−1] = 1/(j−1)!
    let mut v = vec![0.0f64; m];
    let mut w = vec![0.0f64; m];
    let mut fac = 1.0f64;
    for (j, (vj, wj)) in v.iter_mut().zip(w.iter_mut()).enumerate() {
        *wj = fac;
        fac /= (j + 1) as f64;
        *vj = (1.0 - h.powi((j + 1) as i32)) * fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    if let Some(last) = v.last_mut() {
        *last = (1.0 + tt) * fac;
    }
    let mut hm = vec![0.0f64; m * m];
    for col in 1..m {
        for row in (col - 1)..m {
            hm[row * m + col] = w[row + 1 - col];
        }
    }
    for (row, &vr) in v.iter().enumerate() {
        hm[row * m] = vr;
    }
    for col in 0..m {
        hm[(m - 1) * m + col] = v[m - 1 - col];
    }

    let mut power = vec![0.0f64; m * m];
    for i in 0..m {
        power[i * m + i] = 1.0;
    }
    let mut power_exp: i64 = 0;
    let mut base = hm;
    let mut base_exp: i64 = 0;
    let mut scratch = vec![0.0f64; m * m];
    let mut nn = n;
    while nn > 0 {
        if nn & 1 == 1 {
            mat_mul(&power, &base, &mut scratch, m);
            std::mem::swap(&mut power, &mut scratch);
            power_exp += base_exp + normalise(&mut power);
        }
        nn >>= 1;
        if nn > 0 {
            mat_mul(&base, &base, &mut scratch, m);
            std::mem::swap(&mut base, &mut scratch);
            base_exp = 2 * base_exp + normalise(&mut base);
        }
    }

    let mut p = power[(k - 1) * m + (k - 1)];
    // Multiply by n!/nⁿ, rescaling as it shrinks.
    let scale = pow2(128);
    let tiny = pow2(-128);
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < tiny && p != 0.0 {
            p *= scale;
            power_exp -= 128;
        }
    }
    ldexp(p, power_exp)
}

/// Scales `a` by a power of two so its largest magnitude lies in [1, 2); returns the exponent
/// removed (the true matrix is `a · 2^returned`).
fn normalise(a: &mut [f64]) -> i64 {
    let max = a.iter().fold(0.0f64, |acc, &x| acc.max(x.abs()));
    if max == 0.0 || !max.is_finite() || !max.is_normal() {
        return 0;
    }
    let e = exponent_of(max);
    if e == 0 {
        return 0;
    }
    let factor = pow2(-e);
    for x in a.iter_mut() {
        *x *= factor;
    }
    e
}

/// Endpoints of the non-zero stretch of row `i` in Pomeranz's recursion.
fn pomeranz_bounds(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let half = (i + 1) / 2;
        if (i + 1) % 2 == 0 {
            if half == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (half - 1 - ll - roundf - 1, half + ll - 1 + ceilf - 1)
            }
        } else {
            (half - 1 - ll - 1, half + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Pomeranz (1974): `P(D_n ≤ d)` by the recursion over 2n + 1 rows, each the convolution of the
/// previous one with one of three truncated Poisson weight vectors; rows rescaled by 2^128 when
/// they get small. Used for n ≤ 140 only.
fn pomeranz_cdf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let ni = n as i64;
    let t = nf * x;
    let ll_f = t.floor();
    let ll = ll_f as i64;
    let f = t - ll_f;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)).max(1) as usize;

    // (c/n)^m / m! for c = g, 2g, 1 − 2g.
    let powers = |c: f64| -> Vec<f64> {
        let mut out = vec![1.0f64; npwrs];
        let step = c / nf;
        for mi in 1..npwrs {
            out[mi] = out[mi - 1] * step / mi as f64;
        }
        out
    };
    let gpower = powers(g);
    let twogpower = powers(2.0 * g);
    let onem2gpower = powers(1.0 - 2.0 * g);

    let mut v0 = vec![0.0f64; npwrs];
    let mut v1 = vec![0.0f64; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt: i64 = 0;
    let (mut j1, _) = pomeranz_bounds(0, ni, ll, ceilf, roundf);
    let scale = pow2(128);
    let tiny = pow2(-128);
    for i in 1..=(2 * ni + 1) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.fill(0.0);
        let (nj1, j2) = pomeranz_bounds(i, ni, ll, ceilf, roundf);
        j1 = nj1;
        let pwrs = if i == 1 || i == 2 * ni + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let a_start = k1 - v0s;
            let conv_start = j1 - k1;
            let conv_len = j2 - j1 + 1;
            let a_at = |p: i64| -> f64 {
                if p < 0 || p >= ln2 {
                    return 0.0;
                }
                usize::try_from(a_start + p)
                    .ok()
                    .and_then(|idx| v0.get(idx))
                    .copied()
                    .unwrap_or(0.0)
            };
            for idx in 0..conv_len.max(0) {
                let kk = conv_start + idx;
                let lo = (kk - (ln2 - 1)).max(0);
                let hi = kk.min(ln2 - 1);
                let mut s = 0.0;
                let mut p = lo;
                while p <= hi {
                    let b = usize::try_from(kk - p)
                        .ok()
                        .and_then(|q| pwrs.get(q))
                        .copied()
                        .unwrap_or(0.0);
                    s += a_at(p) * b;
                    p += 1;
                }
                if let Some(slot) = usize::try_from(idx).ok().and_then(|q| v1.get_mut(q)) {
                    *slot = s;
                }
            }
            let max = v1.iter().fold(0.0f64, |acc, &y| acc.max(y));
            if max > 0.0 && max < tiny {
                for y in v1.iter_mut() {
                    *y *= scale;
                }
                expnt -= 128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = usize::try_from(ni - v1s)
        .ok()
        .and_then(|q| v1.get(q))
        .copied()
        .unwrap_or(0.0);
    for mi in 1..=n {
        if ans.abs() > scale {
            ans *= tiny;
            expnt += 128;
        }
        ans *= mi as f64;
    }
    ldexp(ans, expnt)
}

/// Pelz & Good (1976): the Li-Chien/Korolyuk expansion `K0 + K1/√n + K2/n + K3/n^1.5` of
/// `P(D_n ≤ x)` at `z = x√n`, rewritten with Jacobi theta identities for small z.
fn pelz_good_cdf(n: u64, x: f64) -> f64 {
    const MIN_LOG: f64 = -708.0;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let sqrt2pi = (2.0 * PI).sqrt();
    let nf = n as f64;
    let z = nf.sqrt() * x;
    let z2 = z * z;
    let z3 = z2 * z;
    let z4 = z2 * z2;
    let z6 = z4 * z2;

    let qlog = -pi2 / 8.0 / z2;
    if qlog < MIN_LOG {
        return 0.0;
    }
    let q = qlog.exp();

    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z4 * z4;

    // Horner over odd m = 2k − 1 of c_i(m) q^(m²).
    let maxk = (16.0 * z / PI).ceil().max(0.0) as u64;
    let mut kk = [0.0f64; 4];
    for k in (1..=maxk).rev() {
        let m = (2 * k - 1) as f64;
        let m2 = m * m;
        let m4 = m2 * m2;
        let m6 = m4 * m2;
        let qpower = q.powf(8.0 * k as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (acc, c) in kk.iter_mut().zip(coeffs) {
            *acc = *acc * qpower + c;
        }
    }
    let denominators = [z, 6.0 * z4, 72.0 * z6 * z, 6480.0 * z6 * z4];
    for (acc, den) in kk.iter_mut().zip(denominators) {
        *acc = *acc * q * sqrt2pi / den;
    }

    // The sums over all integers k for K2 and K3.
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3.0f64.sqrt() * z;
    let mut k2extra = 0.0;
    let mut k3extra = 0.0;
    for k in (1..=maxk).rev() {
        let kf = k as f64;
        let ksq = kf * kf;
        let qp = q.powf(ksq);
        let kpi = PI * kf;
        k2extra += ksq * qp;
        k3extra += (sqrt3z + kpi) * (sqrt3z - kpi) * ksq * qp;
    }
    kk[2] += k2extra * pi2 * sqrt2pi / (-36.0 * z3);
    kk[3] += k3extra * pi2 * sqrt2pi / (216.0 * z6);

    kk[0] + kk[1] / nf.sqrt() + kk[2] / nf + kk[3] / nf.powf(1.5)
}

#[cfg(test)]
mod tests;
