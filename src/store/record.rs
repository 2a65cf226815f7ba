//! The durable form of one model's deployment (`DeploymentRecord`) and the deploy policy it
//! carries. The live deployment (`serving::DeploymentState`) is written and read back as this.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happens to a version that appears in the repository (on rescan and at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployPolicy {
    /// Loaded and left idle.
    #[default]
    Manual,
    /// Becomes a shadow at fraction 1.0.
    Shadow,
    /// Replaces the champion.
    Champion,
    /// Replaces the champion only if its highlight validation score beats the champion's.
    BestValidation,
}

impl std::fmt::Display for DeployPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeployPolicy::Manual => "manual",
            DeployPolicy::Shadow => "shadow",
            DeployPolicy::Champion => "champion",
            DeployPolicy::BestValidation => "best_validation",
        })
    }
}

/// Whether a shadow that the evidence shows better is promoted by vigil or left to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionMode {
    /// The evidence is shown; nothing changes by itself.
    #[default]
    Manual,
    /// A shadow decided better is promoted through the change path (actor `promotion`).
    Auto,
}

/// The promotion rule of one model: mode, level and the bounds on paired labelled rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionSettings {
    /// Manual or automatic promotion.
    pub mode: PromotionMode,
    /// Level of the sequential test: a shadow no better than the champion is decided better
    /// with probability at most `alpha`, however often the evidence is looked at.
    pub alpha: f64,
    /// No decision before this many paired labelled rows.
    pub min_labels: u64,
    /// After this many paired rows without a decision, the comparison ends undecided.
    pub max_labels: u64,
}

impl Default for PromotionSettings {
    fn default() -> Self {
        PromotionSettings {
            mode: PromotionMode::Manual,
            alpha: 0.05,
            min_labels: 200,
            max_labels: 20_000,
        }
    }
}

/// One model's deployment by version names: what is saved, what the audit log shows before and
/// after each change, and what a restart restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRecord {
    /// Changes made so far: +1 per change, never reused.
    pub revision: u64,
    /// Champion version.
    pub champion: Option<String>,
    /// Shadow versions and their mirror fractions.
    #[serde(default)]
    pub shadows: BTreeMap<String, f64>,
    /// Confidence threshold.
    pub threshold: f64,
    /// Deploy policy for new versions.
    pub policy: DeployPolicy,
    /// Previous champions, oldest first.
    #[serde(default)]
    pub history: Vec<String>,
    /// Versions already seen, so that only versions added later get the deploy policy.
    #[serde(default)]
    pub known_versions: Vec<String>,
    /// When a shadow is promoted on evidence.
    #[serde(default)]
    pub promotion: PromotionSettings,
}

impl DeploymentRecord {
    /// True when both name the same deployment, whatever their revisions.
    pub fn same_deployment(&self, other: &DeploymentRecord) -> bool {
        self.champion == other.champion
            && self.shadows == other.shadows
            && self.threshold.to_bits() == other.threshold.to_bits()
            && self.policy == other.policy
            && self.history == other.history
            && self.known_versions == other.known_versions
            && self.promotion == other.promotion
    }
}
