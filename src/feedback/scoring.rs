//! What vigil knows of one model for the feedback loop, and how one labelled row moves it: every
//! version that predicted the row is scored (live quality), and when the answer came from the
//! champion, each shadow's prediction of the same row is paired with it (promotion evidence).
//! The same code scores a fresh label and replays stored ones, so a restart rebuilds the same
//! figures and the same decisions.

use super::evidence::{EvidenceState, Pair, PairedEvidence};
use super::quality::{Scored, VersionQuality};
use crate::repository::Task;
use crate::store::PromotionSettings;
use crate::store::feedback::{LoggedPrediction, LoggedRow, RetrainSettings, Truth};
use std::collections::BTreeMap;

/// What the feedback loop needs to know of one version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionFacts {
    /// Classifier or regressor.
    pub task: Task,
    /// Class names by index (classifiers).
    pub classes: Vec<String>,
    /// Feature names of the input columns, when known.
    pub features: Vec<String>,
}

/// One model's deployment as the feedback loop sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentFacts {
    /// The model.
    pub model: String,
    /// The champion now.
    pub champion: Option<String>,
    /// The shadows now.
    pub shadows: Vec<String>,
    /// The promotion rule.
    pub promotion: PromotionSettings,
    /// Every loaded version.
    pub versions: Vec<(String, VersionFacts)>,
}

/// A shadow the evidence has just shown better than the champion it was compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The model.
    pub model: String,
    /// The champion it was compared with.
    pub champion: String,
    /// The shadow.
    pub shadow: String,
    /// The evidence, as the audit log records it.
    pub evidence: serde_json::Value,
}

/// What scoring one labelled row did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scoring {
    /// Each version that predicted the row, with its score.
    pub scores: Vec<(String, Scored)>,
    /// (champion, shadow) comparisons that just reached a decision.
    pub decided: Vec<(String, String)>,
}

/// The feedback loop's state of one model.
#[derive(Debug, Clone, Default)]
pub struct ModelFeedback {
    /// Every version seen loaded (kept after unloading: old labels still refer to them).
    pub facts: BTreeMap<String, VersionFacts>,
    /// The champion now.
    pub champion: Option<String>,
    /// The shadows now.
    pub shadows: Vec<String>,
    /// The promotion rule.
    pub promotion: PromotionSettings,
    /// The model's own retraining settings, if set.
    pub retrain: Option<RetrainSettings>,
    /// Live quality per version.
    pub quality: BTreeMap<String, VersionQuality>,
    /// Evidence per (champion, shadow).
    pub evidence: BTreeMap<(String, String), PairedEvidence>,
}

fn scored(prediction: &LoggedPrediction, truth: Truth) -> Option<Scored> {
    match truth {
        Truth::Class(truth) => prediction
            .class
            .map(|predicted| Scored::Class { truth, predicted }),
        Truth::Value(truth) => prediction.value.map(|value| Scored::Value {
            error: value - truth,
        }),
    }
}

impl ModelFeedback {
    /// Takes a new view of the deployment; true when the promotion rule changed (the evidence
    /// must then be replayed under the new rule).
    pub fn update(&mut self, facts: DeploymentFacts) -> bool {
        let changed = self.promotion != facts.promotion;
        self.champion = facts.champion;
        self.shadows = facts.shadows;
        self.promotion = facts.promotion;
        self.facts.extend(facts.versions);
        changed
    }

    /// Forgets every score and comparison (before a replay).
    pub fn reset(&mut self) {
        self.quality.clear();
        self.evidence.clear();
    }

    /// Scores one labelled row: each version's score (for the Prometheus counters) and the
    /// comparisons that just reached a decision.
    pub fn score(&mut self, row: &LoggedRow, truth: Truth, window: usize) -> Scoring {
        let mut scores = Vec::new();
        for prediction in &row.predictions {
            let Some(score) = scored(&prediction.prediction, truth) else {
                continue;
            };
            let classes = self
                .facts
                .get(&prediction.version)
                .map(|f| f.classes.clone())
                .unwrap_or_default();
            self.quality
                .entry(prediction.version.clone())
                .or_insert_with(|| VersionQuality::new(classes, window))
                .add(score);
            scores.push((prediction.version.clone(), score));
        }
        let mut decided = Vec::new();
        let Some(served) = row.predictions.first().filter(|_| !row.direct) else {
            return Scoring { scores, decided };
        };
        let Some(champion) = scored(&served.prediction, truth) else {
            return Scoring { scores, decided };
        };
        for shadow in row.predictions.iter().skip(1).filter(|p| p.shadow) {
            let Some(theirs) = scored(&shadow.prediction, truth) else {
                continue;
            };
            let pair = match (champion, theirs) {
                (Scored::Class { truth, predicted }, Scored::Class { predicted: s, .. }) => {
                    Pair::Classes {
                        champion_right: predicted == truth,
                        shadow_right: s == truth,
                    }
                }
                (Scored::Value { error }, Scored::Value { error: s }) => Pair::Values {
                    champion_error: error.abs(),
                    shadow_error: s.abs(),
                },
                _ => continue,
            };
            let key = (served.version.clone(), shadow.version.clone());
            let evidence = self.evidence.entry(key.clone()).or_default();
            let before = evidence.state;
            evidence.observe(pair, &self.promotion);
            if before != evidence.state {
                decided.push(key);
            }
        }
        Scoring { scores, decided }
    }

    /// The comparisons of the current champion with its current shadows that have decided the
    /// shadow is better, when promotion is automatic.
    pub fn candidates(&self, model: &str) -> Vec<Candidate> {
        if self.promotion.mode != crate::store::PromotionMode::Auto {
            return Vec::new();
        }
        let Some(champion) = &self.champion else {
            return Vec::new();
        };
        self.shadows
            .iter()
            .filter_map(|shadow| {
                let evidence = self.evidence.get(&(champion.clone(), shadow.clone()))?;
                (evidence.state == EvidenceState::Better).then(|| Candidate {
                    model: model.to_string(),
                    champion: champion.clone(),
                    shadow: shadow.clone(),
                    evidence: serde_json::to_value(evidence.view(self.is_classifier(shadow)))
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// True when `version` is a classifier (as far as is known).
    pub fn is_classifier(&self, version: &str) -> bool {
        self.facts
            .get(version)
            .is_none_or(|f| f.task == Task::Classification)
    }
}
