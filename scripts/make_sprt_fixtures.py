#!/usr/bin/env python3
"""Builds the reference values for `src/feedback/statistics.rs` in `tests/fixtures/sprt/cases.json`.

Every value is computed independently of the closed forms the crate uses:

- `discordant`: ln Λ(b, c) of the discordant-pair mixture SPRT as the mixture integral itself,

      Λ(b, c) = ∫_{1/2}^{1} (2p)^b (2(1 − p))^c · 2 · p^(a−1) (1 − p)^(a−1) / B(a, a) dp,

  by adaptive quadrature (`scipy.integrate.quad`) of the log-space integrand, scaled by its peak
  so nothing overflows (b + c up to 2·10⁵ here). Checked against a second quadrature
  (composite 30-point Gauss–Legendre) and, for integer a, against the exact value of the
  polynomial integral (Python integers; integration by parts turns ∫ p^m (1 − p)^k over (½, 1)
  into a finite sum of binomial coefficients). The script fails unless the three agree to 1e-11
  in ln Λ (= 1e-11 relative in Λ). `ln_lambda` is the quadrature value, `ln_lambda_exact` the
  exact one (null for non-integer a).
- `gaussian`: ln Λ of the Gaussian mixture SPRT as ∫ exp(nθd̄/V − nθ²/(2V)) N(θ; 0, τ²) dθ
  (the likelihood ratio of n normal differences of variance V against mean 0 depends on the data
  only through n and d̄), by `quad` and Gauss–Legendre; the closed form is not used.
- `mixing_variance`: mixtureSPRT's `calcTau`, τ² = V Φ(−b)/(φ(b)/b − Φ(−b)) with
  b = 2 ln(1/α)/√(M V), from `scipy.stats.norm` where that is accurate (b < 8) and from the Mills
  ratio Φ(−b)/φ(b) (continued fraction in 60-digit decimals) beyond, where φ and Φ underflow;
  both checked against `scipy.special.erfcx`.
- `normal`: `scipy.stats.norm.cdf` and `.pdf`.
- `wilson`: the textbook Wilson score interval (k + z²/2 ± z √(k(n − k)/n + z²/4)) / (n + z²),
  cross-checked with `scipy.stats.binomtest(k, n).proportion_ci(method='wilson')`.
- `mean_estimate`: samples drawn here; mean and sample standard deviation by numpy (two-pass),
  `sum` and `squares` by `math.fsum`.
- `accuracy_difference`: Δ = (b − c)/n and the standard error of the mean of the per-row
  differences (+1, −1, 0), √(((b + c)/n − Δ²)/n).

Floats are written as strings (Python `repr`): Rust's `str::parse::<f64>` is correctly rounded,
serde_json's default float parser is not guaranteed to be.

Run with the project's pinned scipy: `.venv/bin/python scripts/make_sprt_fixtures.py` (about
35 s, nearly all of it the exact binomial sums at b + c = 2·10⁵).
"""

from decimal import Decimal, getcontext
from pathlib import Path
import json
import math

import numpy as np
import scipy
from scipy import integrate, optimize, special, stats

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "sprt"
Z95 = 1.959963984540054
# Below this the scaled integrand is under e^-800: nothing it adds is visible in a double.
CUTOFF = 800.0
AGREEMENT = 1e-11

getcontext().prec = 60
LN2 = Decimal(2).ln()

GL_NODES, GL_WEIGHTS = np.polynomial.legendre.leggauss(30)


def r(x) -> str:
    """The shortest string that parses back to the double `x`."""
    return repr(float(x))


def log_of_int(x: int) -> Decimal:
    """ln x for a positive integer, to ~50 digits (keeps the leading 200 bits of x)."""
    assert x > 0
    shift = max(x.bit_length() - 200, 0)
    return Decimal(x >> shift).ln() + shift * LN2 if shift else Decimal(x).ln()


def quadratures(f, lo, hi, peak):
    """∫ f over [lo, hi] by adaptive quad (split at the peak) and by composite Gauss–Legendre."""
    points = [x for x in (peak,) if lo < x < hi]
    value, _ = integrate.quad(f, lo, hi, points=points or None, epsabs=0.0, epsrel=2e-14,
                              limit=1000)
    panels = np.linspace(lo, hi, 129)
    if points:
        panels = np.unique(np.concatenate([panels, points]))
    parts = []
    for x0, x1 in zip(panels[:-1], panels[1:]):
        half, mid = (x1 - x0) / 2, (x1 + x0) / 2
        parts.extend(GL_WEIGHTS * half * np.array([f(mid + half * t) for t in GL_NODES]))
    return value, math.fsum(parts)


def window(g, peak, lo, hi):
    """The interval around `peak` (in [lo, hi]) where g > g(peak) − CUTOFF; g(peak) = 0."""
    left = lo if g(lo) > -CUTOFF else optimize.brentq(lambda x: g(x) + CUTOFF, lo, peak,
                                                         xtol=1e-300, rtol=1e-12)
    right = hi if g(hi) > -CUTOFF else optimize.brentq(lambda x: g(x) + CUTOFF, peak, hi,
                                                          xtol=1e-300, rtol=1e-12)
    return left, right


def discordant_exact(b: int, c: int, a: int) -> Decimal:
    """ln Λ, exactly, for integer a: the polynomial integral in integer arithmetic.

    With m = a − 1 + b, k = a − 1 + c, N = m + k + 1, integrating by parts k times,
    ∫_{1/2}^{1} p^m (1 − p)^k dp = m! k! / N! · 2^(−N) · Σ_{j = k+1}^{N} C(N, j),
    and m! k! / N! = 1 / (N · C(N − 1, m)).
    """
    m, k = a - 1 + b, a - 1 + c
    big_n = m + k + 1
    tail, coefficient = 0, 1  # C(N, 0)
    for j in range(big_n + 1):
        if j > k:
            tail += coefficient
        coefficient = coefficient * (big_n - j) // (j + 1)
    # ln B(a, a) = ln((a − 1)!² / (2a − 1)!).
    ln_beta_aa = 2 * log_of_int(math.factorial(a - 1)) - log_of_int(math.factorial(2 * a - 1))
    # Λ = 2^(b+c+1) / B(a, a) · tail / (N · C(N − 1, m) · 2^N), and 2^(b+c+1−N) = 2^(2−2a).
    return ((2 - 2 * a) * LN2 - ln_beta_aa + log_of_int(tail) - log_of_int(big_n)
            - log_of_int(math.comb(big_n - 1, m)))


def discordant_quadrature(b: int, c: int, a: float):
    """ln Λ by quad and by Gauss–Legendre, the integrand scaled by its peak on [½, 1]."""
    m, k = a - 1.0 + b, a - 1.0 + c
    assert m >= 0 and k >= 0, "a < 1 with a zero count is singular at an end point"
    if m + k == 0:
        peak = 0.5
    else:
        peak = min(max(m / (m + k), 0.5), 1.0)

    def log_ratio(p):
        """ℓ(p) − ℓ(peak), ℓ = m ln p + k ln(1 − p), without cancelling large logs."""
        u = p - peak
        out = 0.0
        if m > 0:
            out += m * math.log1p(u / peak)
        if k > 0:
            out += -math.inf if p >= 1.0 else k * math.log1p(-u / (1.0 - peak))
        return out

    # ℓ = −∞ at p = 1 when k > 0: stop one ulp short of it.
    lo, hi = window(log_ratio, peak, 0.5, 1.0 if k == 0 else math.nextafter(1.0, 0.0))

    def f(p):
        return math.exp(log_ratio(p))

    quad, legendre = quadratures(f, lo, hi, peak)
    # ln Λ = (b + c + 1) ln 2 − ln B(a, a) + ℓ(peak) + ln ∫, the constant in 60-digit decimals.
    dpeak = Decimal(peak)
    log_peak = Decimal(0)
    if m > 0:
        log_peak += Decimal(m) * dpeak.ln()
    if k > 0:
        log_peak += Decimal(k) * (1 - dpeak).ln()
    if float(a).is_integer():
        ln_beta_aa = (2 * log_of_int(math.factorial(int(a) - 1))
                      - log_of_int(math.factorial(2 * int(a) - 1)))
    else:
        ln_beta_aa = Decimal(r(float(special.betaln(a, a))))
    constant = (b + c + 1) * LN2 - ln_beta_aa + log_peak
    return (float(constant + Decimal(math.log(quad))),
            float(constant + Decimal(math.log(legendre))))


def gaussian_quadrature(n: int, mean: float, variance: float, tau2: float):
    """ln ∫ exp(nθd̄/V − nθ²/(2V)) N(θ; 0, τ²) dθ by quad and by Gauss–Legendre."""

    def g(theta):
        return n * theta * mean / variance - n * theta * theta / (2 * variance) \
            - theta * theta / (2 * tau2)

    # Where the integrand peaks (g is a concave parabola), to centre the quadrature.
    peak = (n * mean / variance) / (n / variance + 1.0 / tau2)
    g_peak = g(peak)
    scale = 1.0 / math.sqrt(n / variance + 1.0 / tau2)

    def log_ratio(theta):
        """g(θ) − g(peak), factored as (θ − peak)·(…) so large g do not cancel."""
        return (theta - peak) * (n * mean / variance
                                 - (n / (2 * variance) + 1 / (2 * tau2)) * (theta + peak))

    lo, hi = window(log_ratio, peak, peak - 80 * scale, peak + 80 * scale)

    def f(theta):
        return math.exp(log_ratio(theta))

    quad, legendre = quadratures(f, lo, hi, peak)
    constant = g_peak - 0.5 * math.log(2 * math.pi * tau2)
    return constant + math.log(quad), constant + math.log(legendre)


def mills_decimal(b: float) -> Decimal:
    """Φ(−b)/φ(b) for b ≥ 8, by its continued fraction 1/(b + 1/(b + 2/(b + 3/(b + …))))."""
    db = Decimal(b)
    value = db
    for j in range(400, 0, -1):
        value = db + j / value
    return 1 / value


def mixing_variance_reference(alpha: float, horizon: int, variance: float):
    b = 2.0 * math.log(1.0 / alpha) / math.sqrt(horizon * variance)
    # Mills ratio from erfcx: Φ(−b)/φ(b) = √(π/2) erfcx(b/√2).
    mills = math.sqrt(math.pi / 2) * special.erfcx(b / math.sqrt(2))
    by_erfcx = variance * mills / (1 / b - mills)
    if b < 8:
        tail = stats.norm.cdf(-b)
        value = variance * tail / (stats.norm.pdf(b) / b - tail)
    else:
        r = mills_decimal(b)
        value = float(Decimal(variance) * r / (1 / Decimal(b) - r))
    rel = abs(by_erfcx - value) / value
    assert rel < 1e-11 * max(1.0, b * b), (alpha, horizon, variance, b, value, by_erfcx)
    return b, value


def wilson_reference(k: int, n: int):
    z2 = Z95 * Z95
    centre = (k + z2 / 2) / (n + z2)
    half = Z95 / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4)
    low, high = max(centre - half, 0.0), min(centre + half, 1.0)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    for ours, theirs in ((low, float(ci.low)), (high, float(ci.high))):
        assert abs(ours - theirs) <= 1e-15 + 1e-12 * abs(theirs), (k, n, ours, theirs)
    return k / n, low, high


def main():
    assert scipy.__version__ == "1.17.1", scipy.__version__
    OUT.mkdir(parents=True, exist_ok=True)
    worst = {}

    def note(family, err):
        worst[family] = max(worst.get(family, 0.0), err)

    # --- Discordant-pair mixture SPRT.
    counts = [
        # small
        (0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 1), (1, 3), (5, 5), (10, 0), (0, 10),
        (10, 3), (3, 10), (7, 9),
        # moderate
        (20, 5), (5, 20), (60, 40), (40, 60), (150, 100), (100, 150), (120, 60), (300, 0),
        # large
        (1000, 950), (950, 1000), (3000, 2900), (2900, 3000), (10000, 10000), (15000, 5000),
        (5000, 15000), (1500, 100), (100, 1500), (0, 2000), (20000, 0),
        # beyond the default max_labels (20 000): longer comparisons
        (100000, 100000), (100000, 98000), (98000, 100000),
    ]
    discordant = []
    for a in (1, 4):
        for b, c in counts:
            quad, legendre = discordant_quadrature(b, c, float(a))
            exact = float(discordant_exact(b, c, a))
            err = max(abs(quad - exact), abs(legendre - exact))
            note("discordant ln Λ (quad or Gauss–Legendre vs exact)", err)
            assert err <= AGREEMENT, (b, c, a, quad, legendre, exact)
            assert math.isfinite(quad)
            discordant.append({"b": b, "c": c, "a": r(a), "ln_lambda": r(quad),
                               "ln_lambda_exact": r(exact)})
    for b, c in [(0, 0), (1, 0), (0, 1), (20, 5), (5, 20), (60, 40), (1000, 950), (3000, 2900)]:
        a = 2.5
        quad, legendre = discordant_quadrature(b, c, a)
        err = abs(quad - legendre)
        note("discordant ln Λ a = 2.5 (quad vs Gauss–Legendre)", err)
        assert err <= AGREEMENT, (b, c, a, quad, legendre)
        discordant.append({"b": b, "c": c, "a": r(a), "ln_lambda": r(quad),
                           "ln_lambda_exact": None})
    # The published check value.
    check = next(d for d in discordant if (d["b"], d["c"], d["a"]) == (20, 5, "1.0"))
    assert abs(math.exp(float(check["ln_lambda"])) - 48.5204520) < 1e-6, check

    # --- Gaussian mixture SPRT.
    tau_default = mixing_variance_reference(0.05, 20000, 0.3)[1]
    gaussian_grid = [
        (1, 0.5, 1.0, 1.0), (2, 0.0, 0.3, tau_default), (2, 0.3, 1e-4, 0.05),
        (10, 0.2, 0.5, 0.1), (10, -0.2, 0.5, 0.1), (200, 0.0, 0.3, tau_default),
        (200, 0.05, 0.3, tau_default), (200, -0.05, 0.3, tau_default),
        (1000, 0.08, 0.4, tau_default), (1000, 0.01, 0.4, 1e-3), (1000, 1.0, 4.0, 1.0),
        (5000, 0.02, 0.3, tau_default), (20000, 0.0, 0.3, tau_default),
        (20000, 0.01, 0.3, tau_default), (20000, -0.3, 1.0, 0.01),
        (100000, 0.5, 2.0, 0.2), (1000000, 0.001, 1.0, 1e-4), (1000000, 0.2, 1.0, 1e-2),
        (50, 3.0, 1e-6, 1e-7), (300, 1e-3, 1e-6, 1e-6),
    ]
    gaussian = []
    for n, mean, variance, tau2 in gaussian_grid:
        quad, legendre = gaussian_quadrature(n, mean, variance, tau2)
        err = abs(quad - legendre)
        note("gaussian ln Λ (quad vs Gauss–Legendre)", err)
        assert err <= AGREEMENT, (n, mean, variance, tau2, quad, legendre)
        gaussian.append({"n": n, "mean": r(mean), "variance": r(variance),
                         "tau2": r(tau2), "ln_lambda": r(quad)})

    # --- Mixing variance (mixtureSPRT's calcTau, without its rounding to 2 decimals).
    mixing = []
    for alpha, horizon, variance in [
        (0.05, 20000, 0.3), (0.05, 20000, 1.0), (0.05, 20000, 100.0), (0.05, 1000, 0.3),
        (0.05, 200, 0.01), (0.01, 5000, 2.0), (0.1, 1000000, 1.0), (0.05, 20000, 1e-4),
        (0.05, 20000, 1e-5), (0.05, 20000, 2e-6), (0.05, 20000, 1e-6), (0.05, 20000, 1e-8),
    ]:
        b, tau2 = mixing_variance_reference(alpha, horizon, variance)
        mixing.append({"alpha": r(alpha), "horizon": horizon, "variance": r(variance),
                       "b": r(b), "tau2": r(tau2)})

    # --- Normal distribution function and density.
    normal = []
    # Down to −37.5: scipy's ndtr returns 0 from about −37.6 on (Φ(−38) = 2.9e-316 is subnormal).
    for x in [-37.5, -30.0, -20.0, -10.0, -6.0, -5.0, -4.2366052104988405, -3.0, -2.5,
              -1.959963984540054, -1.0, -0.1, 0.0, 0.5, 1.0, 1.959963984540054, 3.0, 5.0, 8.0]:
        assert stats.norm.cdf(x) >= 2.2250738585072014e-308, x
        normal.append({"x": r(x), "cdf": r(stats.norm.cdf(x)),
                       "density": r(stats.norm.pdf(x))})

    # --- Wilson score intervals.
    wilson = []
    for k, n in [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (50, 100), (850, 1000), (1, 1000),
                 (999, 1000), (17, 20000), (1, 1000000), (999999, 1000000), (0, 1000000),
                 (123456, 200000)]:
        value, low, high = wilson_reference(k, n)
        wilson.append({"k": k, "n": n, "value": r(value), "low": r(low),
                       "high": r(high)})

    # --- Means with a normal interval.
    rng = np.random.default_rng(11)
    samples = [
        ("one value", np.array([2.5])),
        ("two values", np.array([1.0, 4.0])),
        ("normal 30", rng.normal(0.3, 1.2, 30)),
        ("absolute errors 1000", np.abs(rng.normal(0.0, 2.0, 1000))),
        ("lognormal 100000", rng.lognormal(0.0, 1.0, 100_000)),
        ("offset 100 sd 1, 5000", rng.normal(100.0, 1.0, 5000)),
        ("negative 400", rng.normal(-7.0, 3.0, 400)),
        ("constant 50", np.full(50, 0.25)),
    ]
    means = []
    for name, x in samples:
        n = x.size
        mean = float(np.mean(x))
        sd = float(np.std(x, ddof=1)) if n > 1 else 0.0
        half = Z95 * sd / math.sqrt(n)
        means.append({"name": name, "n": n, "sum": r(math.fsum(x)),
                      "squares": r(math.fsum(x * x)), "value": r(mean),
                      "half_width": r(half), "low": r(mean - half),
                      "high": r(mean + half)})

    # --- Paired accuracy difference.
    differences = []
    for b, c, n in [(0, 0, 10), (60, 30, 1000), (30, 60, 1000), (5, 0, 5), (0, 5, 5),
                    (45, 45, 1000), (1200, 600, 20000), (1, 0, 1000000), (7, 3, 10)]:
        delta = (b - c) / n
        se = math.sqrt(max((b + c) / n - delta * delta, 0.0) / n)
        differences.append({"b": b, "c": c, "n": n, "value": r(delta),
                            "low": r(delta - Z95 * se), "high": r(delta + Z95 * se)})

    fixture = {
        "generator": "scripts/make_sprt_fixtures.py",
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "discordant": discordant,
        "gaussian": gaussian,
        "mixing_variance": mixing,
        "normal": normal,
        "wilson": wilson,
        "mean_estimate": means,
        "accuracy_difference": differences,
    }
    path = OUT / "cases.json"
    path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes, "
          f"{len(discordant)} discordant, {len(gaussian)} gaussian, {len(mixing)} mixing, "
          f"{len(normal)} normal, {len(wilson)} wilson, {len(means)} means, "
          f"{len(differences)} differences")
    print("largest disagreement between independent computations (absolute, in ln Λ):")
    for family, err in worst.items():
        print(f"  {family}: {err:.2e}")


if __name__ == "__main__":
    main()
