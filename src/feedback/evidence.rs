//! Champion versus one shadow on the same labelled rows, and the promotion rule: the running
//! evidence (`statistics.rs`) and the decision it leads to. A decision, once made, stays made;
//! replaying the same pairs in the same order gives the same decision (so it is rebuilt from the
//! store at start).

use super::statistics::{
    Estimate, PRIOR_A, accuracy_difference, always_valid_p_value, discordant_log_evidence,
    gaussian_log_evidence, mixing_variance,
};
use crate::store::PromotionSettings;
use serde::Serialize;

/// Where the comparison stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceState {
    /// Not enough evidence yet either way.
    Collecting,
    /// The shadow is better: Λ ≥ 1/α after at least `min_labels` paired rows.
    Better,
    /// The shadow is worse: the mirror statistic reached 1/α.
    Worse,
    /// `max_labels` paired rows without a decision.
    NoEvidence,
}

/// One labelled row both versions predicted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pair {
    /// Classifiers: whether each version's label was right.
    Classes {
        /// The champion was right.
        champion_right: bool,
        /// The shadow was right.
        shadow_right: bool,
    },
    /// Regressors: each version's absolute error.
    Values {
        /// |champion − truth|.
        champion_error: f64,
        /// |shadow − truth|.
        shadow_error: f64,
    },
}

/// Running comparison of one shadow with one champion.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedEvidence {
    /// Paired labelled rows.
    pub paired: u64,
    /// Rows only the shadow got right (classifiers).
    pub shadow_only: u64,
    /// Rows only the champion got right (classifiers).
    pub champion_only: u64,
    /// Mean of |e_champion| − |e_shadow| (regressors; positive: the shadow is closer).
    mean_difference: f64,
    /// Sum of squared deviations of those differences (Welford).
    squared_deviations: f64,
    /// ln Λ now, for the shadow being better.
    pub log_evidence: f64,
    /// ln Λ now, for the shadow being worse.
    pub log_evidence_worse: f64,
    /// The largest ln Λ (better) seen so far, for the always-valid p-value.
    pub max_log_evidence: f64,
    /// The decision.
    pub state: EvidenceState,
    /// Paired rows when the decision was made.
    pub decided_at: Option<u64>,
}

impl Default for PairedEvidence {
    fn default() -> Self {
        PairedEvidence {
            paired: 0,
            shadow_only: 0,
            champion_only: 0,
            mean_difference: 0.0,
            squared_deviations: 0.0,
            log_evidence: 0.0,
            log_evidence_worse: 0.0,
            max_log_evidence: 0.0,
            state: EvidenceState::Collecting,
            decided_at: None,
        }
    }
}

impl PairedEvidence {
    /// Adds one pair and applies the promotion rule of `settings`.
    pub fn observe(&mut self, pair: Pair, settings: &PromotionSettings) {
        self.paired += 1;
        match pair {
            Pair::Classes {
                champion_right,
                shadow_right,
            } => {
                if champion_right != shadow_right {
                    if shadow_right {
                        self.shadow_only += 1;
                    } else {
                        self.champion_only += 1;
                    }
                    self.log_evidence =
                        discordant_log_evidence(self.shadow_only, self.champion_only, PRIOR_A);
                    self.log_evidence_worse =
                        discordant_log_evidence(self.champion_only, self.shadow_only, PRIOR_A);
                }
            }
            Pair::Values {
                champion_error,
                shadow_error,
            } => {
                let d = champion_error.abs() - shadow_error.abs();
                let delta = d - self.mean_difference;
                self.mean_difference += delta / self.paired as f64;
                self.squared_deviations += delta * (d - self.mean_difference);
                let variance = self.variance();
                // calcTau in units of the differences' own standard deviation, then back:
                // calcTau's b = 2 ln(1/α)/√(M V) is not unit-free, so on the raw V the power
                // would depend on whether errors are in metres or millimetres.
                let tau2 = variance * mixing_variance(settings.alpha, settings.max_labels, 1.0);
                let log_evidence =
                    gaussian_log_evidence(self.paired, self.mean_difference, variance, tau2);
                let (better, worse) = if self.mean_difference > 0.0 {
                    (log_evidence, 0.0)
                } else if self.mean_difference < 0.0 {
                    (0.0, log_evidence)
                } else {
                    (0.0, 0.0)
                };
                self.log_evidence = better;
                self.log_evidence_worse = worse;
            }
        }
        // From min_labels on, as the decision: before, the plug-in variance of a handful of
        // regression differences can be near 0 and Λ huge by chance.
        if self.paired >= settings.min_labels {
            self.max_log_evidence = self.max_log_evidence.max(self.log_evidence);
        }
        if self.state != EvidenceState::Collecting {
            return;
        }
        let bar = (1.0 / settings.alpha).ln();
        let decided = if self.paired >= settings.min_labels && self.log_evidence >= bar {
            Some(EvidenceState::Better)
        } else if self.paired >= settings.min_labels && self.log_evidence_worse >= bar {
            Some(EvidenceState::Worse)
        } else if self.paired >= settings.max_labels {
            Some(EvidenceState::NoEvidence)
        } else {
            None
        };
        if let Some(state) = decided {
            self.state = state;
            self.decided_at = Some(self.paired);
        }
    }

    /// Sample variance of the regression differences (0 before two pairs).
    fn variance(&self) -> f64 {
        if self.paired > 1 {
            self.squared_deviations / (self.paired - 1) as f64
        } else {
            0.0
        }
    }

    /// The view of the admin API.
    pub fn view(&self, classification: bool) -> EvidenceView {
        EvidenceView {
            paired: self.paired,
            shadow_only: classification.then_some(self.shadow_only),
            champion_only: classification.then_some(self.champion_only),
            accuracy_difference: classification
                .then(|| accuracy_difference(self.shadow_only, self.champion_only, self.paired))
                .flatten(),
            error_difference: (!classification && self.paired > 0).then(|| {
                let half = super::statistics::Z95 * (self.variance() / self.paired as f64).sqrt();
                Estimate {
                    value: self.mean_difference,
                    low: self.mean_difference - half,
                    high: self.mean_difference + half,
                }
            }),
            evidence: self.log_evidence.exp(),
            evidence_worse: self.log_evidence_worse.exp(),
            p_value: always_valid_p_value(self.max_log_evidence),
            state: self.state,
            decided_at: self.decided_at,
        }
    }
}

/// Champion versus shadow, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceView {
    /// Paired labelled rows.
    pub paired: u64,
    /// b: rows only the shadow got right (classifiers).
    pub shadow_only: Option<u64>,
    /// c: rows only the champion got right (classifiers).
    pub champion_only: Option<u64>,
    /// Shadow accuracy minus champion accuracy on the paired rows (classifiers).
    pub accuracy_difference: Option<Estimate>,
    /// Mean of |e_champion| − |e_shadow| on the paired rows (regressors; positive: the shadow is
    /// closer).
    pub error_difference: Option<Estimate>,
    /// Λ, the evidence that the shadow is better.
    pub evidence: f64,
    /// The evidence that the shadow is worse.
    pub evidence_worse: f64,
    /// Always-valid p-value: min(1, 1 / max Λ so far).
    pub p_value: f64,
    /// The decision.
    pub state: EvidenceState,
    /// Paired rows when it was made.
    pub decided_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PromotionMode;

    fn settings(min_labels: u64, max_labels: u64) -> PromotionSettings {
        PromotionSettings {
            mode: PromotionMode::Manual,
            alpha: 0.05,
            min_labels,
            max_labels,
        }
    }

    fn classes(champion_right: bool, shadow_right: bool) -> Pair {
        Pair::Classes {
            champion_right,
            shadow_right,
        }
    }

    #[test]
    fn a_clearly_better_shadow_is_decided_after_min_labels_and_stays_decided() {
        let rule = settings(30, 1000);
        let mut evidence = PairedEvidence::default();
        for _ in 0..29 {
            evidence.observe(classes(false, true), &rule);
        }
        assert!(evidence.log_evidence > (20.0f64).ln(), "Λ is already large");
        assert_eq!(
            evidence.state,
            EvidenceState::Collecting,
            "before min_labels"
        );
        evidence.observe(classes(true, true), &rule);
        assert_eq!(evidence.state, EvidenceState::Better);
        assert_eq!(evidence.decided_at, Some(30));
        for _ in 0..200 {
            evidence.observe(classes(true, false), &rule);
        }
        assert_eq!(
            evidence.state,
            EvidenceState::Better,
            "a decision stays made"
        );
        let view = evidence.view(true);
        assert_eq!(
            (view.shadow_only, view.champion_only),
            (Some(29), Some(200))
        );
        assert!(view.p_value < 0.05);
    }

    #[test]
    fn concordant_rows_carry_no_evidence_and_max_labels_ends_collecting() {
        let rule = settings(10, 50);
        let mut evidence = PairedEvidence::default();
        for _ in 0..49 {
            evidence.observe(classes(true, true), &rule);
        }
        assert_eq!(evidence.log_evidence, 0.0);
        assert_eq!(evidence.state, EvidenceState::Collecting);
        evidence.observe(classes(false, false), &rule);
        assert_eq!(evidence.state, EvidenceState::NoEvidence);
        assert_eq!(evidence.view(true).p_value, 1.0);
    }

    #[test]
    fn a_worse_shadow_is_decided_worse() {
        let rule = settings(10, 1000);
        let mut evidence = PairedEvidence::default();
        for _ in 0..40 {
            evidence.observe(classes(true, false), &rule);
        }
        assert_eq!(evidence.state, EvidenceState::Worse);
    }

    #[test]
    fn regressors_compare_absolute_errors() {
        let rule = settings(20, 2000);
        let mut better = PairedEvidence::default();
        let mut worse = PairedEvidence::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut differences = Vec::new();
        for _ in 0..400 {
            let (champion, shadow) = (2.0 + rng.f64(), 1.0 + rng.f64());
            differences.push(champion - shadow);
            better.observe(
                Pair::Values {
                    champion_error: champion,
                    shadow_error: shadow,
                },
                &rule,
            );
            worse.observe(
                Pair::Values {
                    champion_error: shadow,
                    shadow_error: champion,
                },
                &rule,
            );
        }
        assert_eq!(better.state, EvidenceState::Better);
        assert_eq!(worse.state, EvidenceState::Worse);
        let view = better.view(false);
        let difference = view.error_difference.expect("a difference");
        let mean = differences.iter().sum::<f64>() / differences.len() as f64;
        assert!(
            (difference.value - mean).abs() < 1e-9,
            "{difference:?} vs {mean}"
        );
        assert!(difference.low < mean && mean < difference.high);
        assert!(view.accuracy_difference.is_none());
    }
}
