#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]
//! `vigil::monitor`'s KS drift test against scipy 1.17.1 golden values
//! (`scripts/make_ks_fixtures.py` → `tests/fixtures/ks/`):
//!
//! - two-sample cases = `scipy.stats.ks_2samp(a, b, alternative='two-sided', method='asymp')`:
//!   the statistic must be bit-for-bit scipy's (it is computed the same way, `i/m − j/n` in f64),
//!   the p-value within 1e-6 absolute and 1e-9 relative;
//! - a grid of `scipy.stats.kstwo.sf(d, n)` over every dispatch branch: within 1e-6 absolute,
//!   within 1e-9 relative wherever scipy's value is above 1e-300, 1e-6 relative down to the
//!   smallest normal double, and within 1e-321 where scipy's value is subnormal or 0.
//!
//! The fixtures store every float as a string (Python `repr`) and we parse it with
//! `str::parse::<f64>`, which is correctly rounded; serde_json's default float parser is not
//! guaranteed to be, and a one-ulp error would break the exact comparison of statistics.
//!
//! Errors seen (scipy 1.17.1, x86-64); each test prints its table with
//! `cargo test --test ks_scipy -- --nocapture`:
//!
//! | kstwo branch | p-value, 79 ks_2samp cases (abs / rel) | kstwo.sf grid, 2622 points (abs / rel) |
//! |---|---|---|
//! | statistic D | bit-identical in every case | |
//! | edges (d ≤ 0, t ≤ 0.5, d ≥ 1, n·d² ≥ 370), 2(1−d)ⁿ, Ruben–Gambino | 0 / 0 | 0 / 0 |
//! | Durbin matrix | 0 / 0 | 7.8e-16 / 1.9e-15 |
//! | Pomeranz | 3.1e-16 / 2.5e-14 | 1.4e-15 / 1.1e-12 |
//! | Pelz–Good | 0 / 0 | 3.3e-16 / 1.4e-14 |
//! | 2·smirnov, d < 0.5 | 3.0e-17 / 1.8e-14 | 1.9e-15 / 6.6e-13 (7.9e-13 below 1e-300) |
//! | 2·smirnov, d ≥ 0.5 | 2.6e-18 / 4.1e-14 | 1.9e-16 / 8.2e-14 |
//! | scipy p subnormal (< 2.2e-308) or 0 | | ≤ 5.4e-322 absolute (2 % relative at 1e-320, see below) |

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use vigil::monitor::{bonferroni, kolmogorov_sf, ks_statistic, ks_two_sample};

#[derive(Deserialize)]
struct Case {
    name: String,
    a: String,
    b: String,
    statistic: String,
    p_value: String,
    en: u64,
    branch: String,
}

#[derive(Deserialize)]
struct GridPoint {
    n: u64,
    d: String,
    sf: String,
    branch: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ks")
}

fn num(s: &str) -> f64 {
    s.parse::<f64>()
        .unwrap_or_else(|e| panic!("bad float {s:?}: {e}"))
}

fn load_samples() -> HashMap<String, Vec<f64>> {
    let mut pool = HashMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures/ks exists; run scripts/make_ks_fixtures.py")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("samples_") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no samples_*.json fixtures");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let chunk: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
        for (name, values) in chunk {
            let mut v: Vec<f64> = values.split_ascii_whitespace().map(num).collect();
            v.sort_by(f64::total_cmp);
            assert!(
                pool.insert(name.clone(), v).is_none(),
                "duplicate sample {name}"
            );
        }
    }
    pool
}

fn load<T: for<'de> Deserialize<'de>>(file: &str) -> Vec<T> {
    let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rel_err(ours: f64, theirs: f64) -> f64 {
    if ours == theirs {
        0.0
    } else {
        (ours - theirs).abs() / theirs.abs()
    }
}

#[derive(Default)]
struct Worst {
    count: usize,
    abs: f64,
    rel: f64,
    rel_where: String,
    abs_where: String,
}

impl Worst {
    fn add(&mut self, ours: f64, theirs: f64, rel_counts: bool, what: &str) {
        self.count += 1;
        if (ours - theirs).abs() > self.abs {
            self.abs = (ours - theirs).abs();
            self.abs_where = what.to_string();
        }
        let rel = rel_err(ours, theirs);
        if rel_counts && rel > self.rel {
            self.rel = rel;
            self.rel_where = what.to_string();
        }
    }
}

fn report(title: &str, worst: &BTreeMap<String, Worst>) {
    println!("{title}");
    for (branch, w) in worst {
        println!(
            "  {branch:<22} count {:<4} max abs {:.2e} max rel {:.2e}\n      worst abs at {}\n      worst rel at {}",
            w.count, w.abs, w.rel, w.abs_where, w.rel_where
        );
    }
}

#[test]
fn two_sample_matches_scipy_ks_2samp_asymp() {
    let pool = load_samples();
    let cases: Vec<Case> = load("cases.json");
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut worst: BTreeMap<String, Worst> = BTreeMap::new();
    for c in &cases {
        let a = &pool[&c.a];
        let b = &pool[&c.b];
        let want_d = num(&c.statistic);
        let want_p = num(&c.p_value);
        let got = ks_two_sample(a, b).unwrap();
        assert_eq!(
            got.statistic.to_bits(),
            want_d.to_bits(),
            "{}: D {} vs scipy {}",
            c.name,
            got.statistic,
            want_d
        );
        assert_eq!(ks_statistic(a, b).to_bits(), want_d.to_bits(), "{}", c.name);
        // The p-value is kstwo.sf at the rounded en: same as the grid.
        assert_eq!(got.p_value, kolmogorov_sf(want_d, c.en), "{}", c.name);
        assert!((0.0..=1.0).contains(&got.p_value), "{}", c.name);
        let abs = (got.p_value - want_p).abs();
        let rel = rel_err(got.p_value, want_p);
        assert!(
            abs <= 1e-6,
            "{}: p {:e} vs scipy {:e} (abs {abs:e})",
            c.name,
            got.p_value,
            want_p
        );
        assert!(
            rel <= 1e-9,
            "{} ({}): p {:e} vs scipy {:e} (rel {rel:e})",
            c.name,
            c.branch,
            got.p_value,
            want_p
        );
        worst.entry(c.branch.clone()).or_default().add(
            got.p_value,
            want_p,
            true,
            &format!("{} p={want_p:e}", c.name),
        );
    }
    report(
        &format!(
            "ks_2samp: {} cases, p-value error per kstwo branch",
            cases.len()
        ),
        &worst,
    );
}

#[test]
fn kolmogorov_sf_matches_scipy_kstwo_sf() {
    let grid: Vec<GridPoint> = load("kstwo_grid.json");
    assert!(grid.len() > 1000);
    let mut worst: BTreeMap<String, Worst> = BTreeMap::new();
    for g in &grid {
        let d = num(&g.d);
        let want = num(&g.sf);
        let got = kolmogorov_sf(d, g.n);
        let what = format!("n={} d={d:e} sf={want:e} ours={got:e}", g.n);
        assert!((0.0..=1.0).contains(&got), "{what}");
        assert!((got - want).abs() <= 1e-6, "{} abs: {what}", g.branch);
        let rel = rel_err(got, want);
        if want > 1e-300 {
            assert!(rel <= 1e-9, "{} rel {rel:e}: {what}", g.branch);
        } else if want >= f64::MIN_POSITIVE {
            assert!(rel <= 1e-6, "{} rel {rel:e}: {what}", g.branch);
        } else {
            // scipy's result is subnormal or 0. scipy rounds each of its ~n Birnbaum–Tingey terms
            // to the subnormal grid before summing, so it keeps only a few digits there (an
            // independent log-space sum at n = 100000, d = 0.0607 gives 1.024e-320, scipy
            // 1.001e-320, this crate 1.0237e-320) and returns 0 a little before the true value
            // underflows. Within 1e-321 (200 subnormal steps).
            assert!((got - want).abs() <= 1e-321, "{} tiny: {what}", g.branch);
        }
        let bucket = if want > 1e-300 || (want == 0.0 && got == 0.0) {
            g.branch.clone()
        } else if want >= f64::MIN_POSITIVE {
            format!("{} (sf<=1e-300)", g.branch)
        } else {
            format!("{} (subnormal or 0)", g.branch)
        };
        worst.entry(bucket).or_default().add(got, want, true, &what);
    }
    report(
        &format!(
            "kstwo.sf: {} grid points, error per branch (values at or below 1e-300 apart)",
            grid.len()
        ),
        &worst,
    );
}

#[test]
fn bonferroni_on_scipy_p_values() {
    // The decision alibi-detect's KSDrift makes with scipy's p-values for the 12 shifted windows.
    let cases: Vec<Case> = load("cases.json");
    let p: Vec<f64> = cases
        .iter()
        .filter(|c| c.name.starts_with("ref10000_vs_win1000_shift_"))
        .map(|c| num(&c.p_value))
        .collect();
    assert_eq!(p.len(), 12);
    let decision = bonferroni(&p, 0.05);
    assert_eq!(decision.threshold, 0.05 / 12.0);
    for (&pi, &drifted) in p.iter().zip(&decision.drifted) {
        assert_eq!(drifted, pi < 0.05 / 12.0);
    }
    assert!(decision.dataset_drift);
}
