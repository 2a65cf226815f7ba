use super::*;
use std::time::{Duration, Instant};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn smirnov_known_value() {
    // 0.5 · (0.5^-1·0.5^5 + 5·0.3^4 + 10·0.9·0.1^3) = 0.056
    assert!(close(smirnov_sf(5, 0.5), 0.056, 1e-15));
    assert!(close(kolmogorov_sf(0.5, 5), 0.112, 1e-15));
}

#[test]
fn one_sided_small_cases() {
    // n = 1: D⁺ = 1 − U.
    assert!(close(smirnov_sf(1, 0.3), 0.7, 1e-15));
    // n = 2, x = 0.6 (> 1/2, ⌊n(1−x)⌋ = 0): x · (1−x)^2 / x = 0.16.
    assert!(close(smirnov_sf(2, 0.6), 0.16, 1e-15));
}

#[test]
fn kolmogorov_sf_edges() {
    for n in [1, 2, 5, 141, 10_000, 1_000_001] {
        assert_eq!(kolmogorov_sf(0.0, n), 1.0);
        assert_eq!(kolmogorov_sf(-1.0, n), 1.0);
        assert_eq!(kolmogorov_sf(1.0, n), 0.0);
        assert_eq!(kolmogorov_sf(2.0, n), 0.0);
        assert_eq!(kolmogorov_sf(0.5 / n as f64, n), 1.0);
    }
    assert!(kolmogorov_sf(f64::NAN, 10).is_nan());
    assert_eq!(kolmogorov_sf(0.3, 0), 1.0);
    // n = 1: D = max(U, 1 − U), P(D ≥ d) = 2(1 − d) for d ≥ 1/2.
    assert!(close(kolmogorov_sf(0.8, 1), 0.4, 1e-15));
    // n = 2, d ≥ 1/2: 2(1 − d)².
    assert!(close(kolmogorov_sf(0.7, 2), 2.0 * 0.09, 1e-15));
}

#[test]
fn durbin_does_not_overflow_where_scipy_does() {
    // scipy 1.17.1's `_kolmogn_DMTW` overflows its running product for n = 2^k − 1 and
    // returns kstwo.sf = 0 at these points; the true value is 1 − O(1e-100) (Pelz–Good agrees).
    for (d, n) in [
        (0.00027569695362781167, 65_535u64),
        (0.000694719857716795, 32_767),
    ] {
        let p = kolmogorov_sf(d, n);
        assert!(close(p, 1.0 - pelz_good_cdf(n, d), 1e-12), "{p}");
        assert!(p > 0.999_999, "{p}");
    }
}

#[test]
fn limiting_distribution_for_large_n() {
    // √n·D_n → Kolmogorov: Q(1) = 0.26999967; at n = 10⁷ the finite-n offset is ~1e-4.
    let n = 10_000_000u64;
    let p = kolmogorov_sf(1.0 / (n as f64).sqrt(), n);
    assert!(close(p, 0.26999967, 1e-3), "{p}");
}

#[test]
fn monotone_and_in_range_across_branches() {
    for n in [1u64, 2, 3, 5, 10, 50, 140, 141, 500, 1000, 10_000, 100_001] {
        let mut prev = 1.0;
        for i in 0..=400 {
            let d = i as f64 / 400.0;
            let p = kolmogorov_sf(d, n);
            assert!((0.0..=1.0).contains(&p), "n={n} d={d} p={p}");
            assert!(p <= prev + 1e-9, "n={n} d={d} p={p} prev={prev}");
            prev = p;
        }
    }
}

#[test]
fn fast_for_large_n_and_extreme_d() {
    let started = Instant::now();
    for n in [
        10_000u64,
        99_999,
        100_000,
        100_001,
        1_000_000,
        1_000_001,
        u64::MAX,
    ] {
        for d in [
            1e-300,
            1e-9,
            0.5 / n as f64,
            1.0 / n as f64,
            1.5 / n as f64,
            1e-4,
            2e-4,
            0.001,
            0.01,
            0.02,
            0.1,
            0.49,
            0.5,
            0.9,
            1.0 - 1e-12,
            1.0 - 1.0 / n as f64,
        ] {
            let p = kolmogorov_sf(d, n);
            assert!((0.0..=1.0).contains(&p), "n={n} d={d} p={p}");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn statistic_identical_and_disjoint() {
    let a = [1.0, 2.0, 2.0, 3.0, 5.0];
    let t = ks_two_sample(&a, &a).unwrap();
    assert_eq!(t.statistic, 0.0);
    assert_eq!(t.p_value, 1.0);

    let b = [6.0, 7.0, 8.0];
    let t = ks_two_sample(&a, &b).unwrap();
    assert_eq!(t.statistic, 1.0);
    assert_eq!(ks_statistic(&b, &a), 1.0);
    // en = 15/8 → 2; kstwo.sf(1, 2) = 0.
    assert_eq!(t.p_value, 0.0);
    assert!(ks_two_sample(&[], &a).is_none());
    assert!(ks_two_sample(&a, &[]).is_none());
    assert_eq!(ks_statistic(&[], &a), 0.0);
}

#[test]
fn statistic_with_ties() {
    // F_a jumps 1/2 at 1 and 2; F_b jumps 1/4 at 1, 1/2 at 2, 1/4 at 3.
    // At 1: 1/2 − 1/4; at 2: 1 − 3/4; at 3: 0.
    let a = [1.0, 2.0];
    let b = [1.0, 2.0, 2.0, 3.0];
    assert_eq!(ks_statistic(&a, &b), 0.25);
    // The same value in both samples moves both CDFs at once: D = 0 here.
    assert_eq!(
        ks_statistic(&[0.0, 0.0, 1.0], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
        0.0
    );
}

#[test]
fn statistic_never_hangs_on_nan() {
    let a = [1.0, f64::NAN];
    let b = [f64::NAN, f64::NAN];
    let d = ks_statistic(&a, &b);
    assert!((0.0..=1.0).contains(&d));
}

#[test]
fn single_values_give_p_one() {
    let t = ks_two_sample(&[0.0], &[1.0]).unwrap();
    assert_eq!(t.statistic, 1.0);
    assert_eq!(t.p_value, 1.0);
}

#[test]
fn bonferroni_rule() {
    let d = bonferroni(&[0.02, 0.01, 0.5, f64::NAN, 0.0125], 0.05);
    assert_eq!(d.threshold, 0.01);
    assert_eq!(d.drifted, vec![false, false, false, false, false]);
    assert!(!d.dataset_drift);
    let d = bonferroni(&[0.02, 0.0099], 0.05);
    assert_eq!(d.threshold, 0.025);
    assert_eq!(d.drifted, vec![true, true]);
    assert!(d.dataset_drift);
    let d = bonferroni(&[], 0.05);
    assert_eq!(d.threshold, 0.05);
    assert!(d.drifted.is_empty());
    assert!(!d.dataset_drift);
}
