#!/usr/bin/env python3
"""Builds the scipy golden values for `src/monitor/drift.rs` in `tests/fixtures/ks/`.

- `samples_*.json`: a pool of named float64 samples, `{"name": "v1 v2 ..."}`, each value printed
  with `repr` (shortest round-trip form), space-separated. Cases share samples (one reference of
  10 000 values serves many windows), which keeps the fixtures small; each file stays under
  ~450 KB.
- `cases.json`: two-sample cases `{"name", "a", "b", "statistic", "p_value", "en", "branch"}`,
  where `a` and `b` name pool samples and the numbers come from
  `scipy.stats.ks_2samp(a, b, alternative='two-sided', method='asymp')`. `en` is
  `round(m*n/(m+n))` and `branch` the `kstwo.sf` branch scipy took for the p-value.
- `kstwo_grid.json`: direct `scipy.stats.kstwo.sf(d, n)` values `{"n", "d", "sf", "branch"}` over
  every dispatch branch of `scipy/stats/_ksstats.py::_kolmogn`, down to p-values far below 1e-300.

Every float is written as a string (Python `repr`): Rust's `str::parse::<f64>` is correctly
rounded, serde_json's default float parsing is not guaranteed to be.

Run from anywhere with the project's pinned scipy: `.venv/bin/python scripts/make_ks_fixtures.py`.
"""

from pathlib import Path
import json

import numpy as np
import scipy
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "ks"
MAX_FILE_BYTES = 450_000


def branch(d, n):
    """The branch `_kolmogn(n, d, cdf=False)` takes (mirrors scipy 1.17's dispatch)."""
    if d >= 1.0:
        return "d>=1"
    if d <= 0.0:
        return "d<=0"
    t = n * d
    if t <= 1.0:
        return "t<=0.5" if t <= 0.5 else "ruben_gambino"
    if t >= n - 1:
        return "two_one_minus_d_pow_n"
    if d >= 0.5:
        return "smirnov_d>=0.5"
    nxsquared = t * d
    if n <= 140:
        if nxsquared <= 0.754693:
            return "durbin"
        if nxsquared <= 4:
            return "pomeranz"
        return "smirnov"
    if nxsquared >= 370.0:
        return "nx2>=370"
    if nxsquared >= 2.2:
        return "smirnov"
    if n <= 100000 and n * d**1.5 <= 1.4:
        return "durbin"
    return "pelz_good"


class Pool:
    """Named samples, stored once."""

    def __init__(self):
        self.samples = {}

    def add(self, name, values):
        values = np.asarray(values, dtype=np.float64)
        assert values.ndim == 1 and values.size > 0 and np.all(np.isfinite(values)), name
        assert name not in self.samples, name
        self.samples[name] = values
        return name


def main():
    assert scipy.__version__ == "1.17.1", scipy.__version__
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()

    pool = Pool()
    cases = []

    def case(name, a, b):
        x, y = pool.samples[a], pool.samples[b]
        res = stats.ks_2samp(x, y, alternative="two-sided", method="asymp")
        m, n = sorted([float(x.size), float(y.size)], reverse=True)
        en = int(np.round(m * n / (m + n)))
        d = float(res.statistic)
        p = float(res.pvalue)
        assert np.isfinite(p), name
        # Check the p-value really is kstwo.sf(D, round(en)) clipped.
        assert p == float(np.clip(stats.kstwo.sf(d, en), 0, 1)), name
        cases.append(
            {
                "name": name,
                "a": a,
                "b": b,
                "statistic": repr(d),
                "p_value": repr(p),
                "en": en,
                "branch": branch(d, en),
            }
        )

    # --- A fixed 10 000-value reference and 1 000-row windows shifted away from it: p from ~1
    # down to ~1e-12 and below (the shape vigil uses: reference 10 000 vs window 1 000).
    rng = np.random.default_rng(1)
    ref = pool.add("ref_normal_10000", rng.standard_normal(10_000))
    for shift in [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.35]:
        w = pool.add(f"win_normal_1000_shift_{shift}", rng.standard_normal(1000) + shift)
        case(f"ref10000_vs_win1000_shift_{shift}", ref, w)
        if shift in (0.0, 0.1, 0.3):
            case(f"win1000_shift_{shift}_vs_ref10000", w, ref)
    # Scale change instead of shift.
    w = pool.add("win_normal_1000_scale_1.15", rng.standard_normal(1000) * 1.15)
    case("ref10000_vs_win1000_scale_1.15", ref, w)
    # Smaller windows against the same reference.
    for size, shift in [(20, 0.0), (20, 0.8), (50, 0.3), (100, 0.0), (100, 0.25), (200, 0.2),
                        (500, 0.1), (2000, 0.05), (5000, 0.03)]:
        w = pool.add(f"win_normal_{size}_shift_{shift}", rng.standard_normal(size) + shift)
        case(f"ref10000_vs_win{size}_shift_{shift}", ref, w)
    # 10 000 vs 10 000 (en = 5000).
    rng = np.random.default_rng(2)
    ref2 = pool.add("ref_normal_10000_b", rng.standard_normal(10_000) + 0.03)
    case("ref10000_vs_ref10000_b", ref, ref2)

    # --- Equal sizes, continuous, several distributions and shifts.
    rng = np.random.default_rng(3)
    for size in [20, 30, 50, 100, 141, 300, 1000]:
        a = pool.add(f"eq_{size}_a", rng.standard_normal(size))
        for shift in [0.0, 0.5, 1.5]:
            b = pool.add(f"eq_{size}_b_shift_{shift}", rng.standard_normal(size) + shift)
            case(f"equal_{size}_shift_{shift}", a, b)
    # Unequal small sizes (en from 1 to 140).
    for m, n in [(20, 5000), (20, 40), (25, 100), (60, 90), (150, 400), (280, 280), (1, 3),
                 (2, 6), (5, 5), (7, 7), (3, 1000)]:
        a = pool.add(f"uneq_{m}_{n}_a", rng.exponential(1.0, m))
        b = pool.add(f"uneq_{m}_{n}_b", rng.exponential(1.3, n))
        case(f"unequal_{m}_vs_{n}_exponential", a, b)

    # --- Heavy ties.
    rng = np.random.default_rng(4)
    a = pool.add("ties_round1_5000", np.round(rng.standard_normal(5000), 1))
    b = pool.add("ties_round1_800", np.round(rng.standard_normal(800) + 0.05, 1))
    case("ties_rounded_0.1_5000_vs_800", a, b)
    a = pool.add("ties_int_poisson_3000", rng.poisson(4.0, 3000).astype(np.float64))
    b = pool.add("ties_int_poisson_700", rng.poisson(4.3, 700).astype(np.float64))
    case("ties_poisson_3000_vs_700", a, b)
    b2 = pool.add("ties_int_poisson_700_same", rng.poisson(4.0, 700).astype(np.float64))
    case("ties_poisson_3000_vs_700_same", a, b2)
    a = pool.add("ties_discrete3_1000", rng.choice([0.0, 1.0, 2.0], 1000, p=[0.2, 0.5, 0.3]))
    b = pool.add("ties_discrete3_300", rng.choice([0.0, 1.0, 2.0], 300, p=[0.3, 0.45, 0.25]))
    case("ties_discrete_3_values", a, b)
    a = pool.add("ties_binary_2000", (rng.random(2000) < 0.3).astype(np.float64))
    b = pool.add("ties_binary_150", (rng.random(150) < 0.45).astype(np.float64))
    case("ties_binary", a, b)
    a = pool.add("ties_round0_60", np.round(rng.standard_normal(60) * 2))
    b = pool.add("ties_round0_45", np.round(rng.standard_normal(45) * 2 + 0.5))
    case("ties_rounded_integers_small", a, b)
    # Values shared between the samples at the point of largest difference.
    a = pool.add("ties_shared_a", np.array([0.0] * 30 + [1.0] * 10 + [2.0] * 10))
    b = pool.add("ties_shared_b", np.array([0.0] * 5 + [1.0] * 30 + [2.0] * 15))
    case("ties_shared_values", a, b)

    # --- Identical samples and constant features: D = 0, p = 1.
    case("identical_normal_10000", ref, ref)
    case("identical_eq_50", "eq_50_a", "eq_50_a")
    const_a = pool.add("constant_3.5_1000", np.full(1000, 3.5))
    const_b = pool.add("constant_3.5_200", np.full(200, 3.5))
    case("constant_feature_same_value", const_a, const_b)
    const_c = pool.add("constant_4.5_200", np.full(200, 4.5))
    case("constant_feature_different_value", const_a, const_c)

    # --- Disjoint samples: D = 1.
    rng = np.random.default_rng(5)
    a = pool.add("disjoint_low_300", rng.uniform(0, 1, 300))
    b = pool.add("disjoint_high_40", rng.uniform(2, 3, 40))
    case("disjoint_300_vs_40", a, b)
    case("disjoint_40_vs_300", b, a)
    a = pool.add("disjoint_low_25", rng.uniform(0, 1, 25))
    b = pool.add("disjoint_high_25", rng.uniform(1, 2, 25))
    case("disjoint_25_vs_25", a, b)
    c = pool.add("disjoint_above_ref_1000", rng.uniform(10, 11, 1000))
    case("disjoint_ref10000_vs_1000", ref, c)

    # --- float64 data: tiny and huge magnitudes, mixed signs, values one ulp apart.
    rng = np.random.default_rng(6)
    base = rng.standard_normal(400)
    a = pool.add("f64_tiny_400", base * 1e-300)
    b = pool.add("f64_tiny_300", (rng.standard_normal(300) + 0.2) * 1e-300)
    case("float64_tiny_magnitudes", a, b)
    a = pool.add("f64_huge_400", base * 1e300)
    b = pool.add("f64_huge_300", (rng.standard_normal(300) - 0.2) * 1e300)
    case("float64_huge_magnitudes", a, b)
    x = 1.0 + np.arange(200) * np.finfo(np.float64).eps
    a = pool.add("f64_ulps_even", x[::2])
    b = pool.add("f64_ulps_odd", x[1::2])
    case("float64_one_ulp_apart", a, b)
    a = pool.add("f64_lognormal_2500", rng.lognormal(0, 2, 2500))
    b = pool.add("f64_lognormal_900", rng.lognormal(0.15, 2, 900))
    case("float64_lognormal_heavy_tail", a, b)
    a = pool.add("f64_t2_1500", rng.standard_t(2, 1500))
    b = pool.add("f64_t2_1500_b", rng.standard_t(2, 1500) * 1.3)
    case("float64_student_t2", a, b)
    a = pool.add("f64_mixed_sign_600", np.concatenate([-np.exp(rng.normal(0, 3, 300)),
                                                        np.exp(rng.normal(0, 3, 300))]))
    b = pool.add("f64_mixed_sign_350", np.concatenate([-np.exp(rng.normal(0.5, 3, 150)),
                                                        np.exp(rng.normal(0, 3, 200))]))
    case("float64_mixed_sign_wide_range", a, b)

    # --- Write the sample pool, split into files of at most MAX_FILE_BYTES.
    chunks, current, size = [], {}, 0
    for name, values in pool.samples.items():
        text = " ".join(repr(float(v)) for v in values)
        if current and size + len(text) > MAX_FILE_BYTES:
            chunks.append(current)
            current, size = {}, 0
        current[name] = text
        size += len(text) + len(name) + 8
    chunks.append(current)
    for i, chunk in enumerate(chunks):
        (OUT / f"samples_{i:02}.json").write_text(json.dumps(chunk, indent=0) + "\n")
    (OUT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")

    # --- kstwo.sf grid over every branch.
    grid = []
    ns = [1, 2, 3, 5, 10, 50, 100, 140, 141, 500, 909, 1000, 4097, 5000, 10000, 100000, 100001]
    for n in ns:
        ds = set()
        # Edges and Ruben-Gambino.
        for t in [0.25, 0.5, 0.5000001, 0.6, 0.75, 0.9, 0.99, 1.0, 1.0000001, 1.5, 2.0]:
            ds.add(t / n)
        # Near 1: 2(1-d)^n and the d >= 0.5 smirnov branch.
        for d in [0.5, 0.5000000001, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99,
                  1 - 1.0 / n, 1 - 1.0 / n - 1e-9, 1 - 0.5 / n, 1 - 1e-9]:
            ds.add(d)
        # n x^2 thresholds and spread over (0, 0.5).
        for s in [0.05, 0.2, 0.5, 0.754693, 0.76, 1.0, 1.5, 2.0, 2.2, 2.5, 3.0, 4.0, 4.1, 6.0,
                  10.0, 20.0, 50.0, 100.0, 200.0, 350.0, 369.9, 370.0, 400.0]:
            d0 = np.sqrt(s / n)
            for d in [d0, np.nextafter(d0, 0), np.nextafter(d0, 1)]:
                ds.add(float(d))
        # n x^1.5 = 1.4 (Durbin / Pelz-Good switch for n > 140).
        for c in [0.5, 1.0, 1.4, 1.41, 2.0]:
            d0 = (c / n) ** (2.0 / 3.0)
            ds.add(float(d0))
            ds.add(float(np.nextafter(d0, 1)))
        for d in np.linspace(0.0, 0.5, 41)[1:]:
            ds.add(float(d))
        for d in np.geomspace(1e-4, 0.5, 30):
            ds.add(float(d))
        # p-values near and below the smallest normal double (scipy returns subnormals).
        if n >= 500:
            for target in [1e-250, 1e-305, 1e-310, 1e-315, 1e-320]:
                lo, hi = 0.0, 1.0
                for _ in range(200):
                    mid = (lo + hi) / 2
                    if stats.kstwo.sf(mid, n) > target:
                        lo = mid
                    else:
                        hi = mid
                ds.add(float(lo))
        for d in sorted(ds):
            if not (0.0 < d < 1.0):
                continue
            sf = float(stats.kstwo.sf(d, n))
            assert np.isfinite(sf), (n, d)
            grid.append({"n": n, "d": repr(float(d)), "sf": repr(sf), "branch": branch(d, n)})
    (OUT / "kstwo_grid.json").write_text(json.dumps(grid, indent=0) + "\n")

    branches = {}
    for g in grid:
        branches[g["branch"]] = branches.get(g["branch"], 0) + 1
    case_branches = {}
    for c in cases:
        case_branches[c["branch"]] = case_branches.get(c["branch"], 0) + 1
    print(f"{len(cases)} two-sample cases, branches {case_branches}")
    print(f"{len(grid)} kstwo.sf grid points, branches {branches}")
    for f in sorted(OUT.glob("*.json")):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
