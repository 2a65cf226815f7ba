//! One model's deployment as one immutable value: [`DeploymentState`] (champion, shadows with
//! their fractions, threshold, policy, champion history, the version table and the revision).
//!
//! A model holds its state in one `ArcSwap`. A request loads it once and takes its champion,
//! threshold and shadows from that one snapshot, so it never mixes two deployments; a change
//! builds a whole new value (`plan.rs`), saves it, and publishes it with one store
//! (`commit.rs`). Nothing here changes in place.

use super::entry::{VersionEntry, VersionStatus};
use super::mirror::Mirror;
use super::{LoadedVersion, ServingError};
use crate::repository::compare_versions;
use crate::store::{DeployPolicy, DeploymentRecord, PromotionSettings};
use serde::Serialize;
use std::sync::Arc;

/// Most previous champions remembered for rollback.
pub const HISTORY_LIMIT: usize = 100;

/// What a version does in its model's deployment, derived from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionRole {
    /// Answers the model's unversioned requests.
    Champion,
    /// Receives copies of a fraction of the champion's requests.
    Shadow,
    /// Loaded (or not) and serving only requests addressed to it.
    Idle,
}

impl std::fmt::Display for VersionRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VersionRole::Champion => "champion",
            VersionRole::Shadow => "shadow",
            VersionRole::Idle => "idle",
        })
    }
}

/// A shadow: its mirror (queue, workers, comparison figures) and the share of champion requests
/// copied to it. A fraction change keeps the mirror and its figures.
#[derive(Debug, Clone)]
pub struct Shadow {
    /// Share of champion requests copied to it (0–1).
    pub fraction: f64,
    /// Its queue and workers.
    pub mirror: Arc<Mirror>,
}

impl Shadow {
    /// The shadow version.
    pub fn version(&self) -> &Arc<LoadedVersion> {
        &self.mirror.version
    }

    /// True for the share of requests this shadow should see.
    pub fn takes_request(&self) -> bool {
        self.fraction >= 1.0 || (self.fraction > 0.0 && fastrand::f64() < self.fraction)
    }
}

/// One model's whole deployment. Immutable: a change makes a new value.
#[derive(Debug, Clone)]
pub struct DeploymentState {
    /// The model.
    pub model: String,
    /// Changes made so far (+1 per change; a restart keeps it).
    pub revision: u64,
    /// The version answering unversioned requests.
    pub champion: Option<Arc<LoadedVersion>>,
    /// Shadows, in version order.
    pub shadows: Vec<Shadow>,
    /// Confidence threshold (0 accepts everything).
    pub threshold: f64,
    /// What happens to versions added later.
    pub policy: DeployPolicy,
    /// Previous champions, oldest first (at most [`HISTORY_LIMIT`]).
    pub history: Vec<String>,
    /// When a shadow is promoted on evidence.
    pub promotion: PromotionSettings,
    /// Every version, in version order.
    pub versions: Vec<VersionEntry>,
}

impl DeploymentState {
    /// A model with no versions and nothing deployed yet, at revision 0.
    pub fn empty(model: &str, threshold: f64, policy: DeployPolicy) -> DeploymentState {
        DeploymentState {
            model: model.to_string(),
            revision: 0,
            champion: None,
            shadows: Vec::new(),
            threshold,
            policy,
            history: Vec::new(),
            promotion: PromotionSettings::default(),
            versions: Vec::new(),
        }
    }

    /// The role of `version`.
    pub fn role(&self, version: &str) -> VersionRole {
        if self
            .champion
            .as_ref()
            .is_some_and(|c| &*c.version == version)
        {
            VersionRole::Champion
        } else if self.shadow(version).is_some() {
            VersionRole::Shadow
        } else {
            VersionRole::Idle
        }
    }

    /// The shadow of that version, if it is one.
    pub fn shadow(&self, version: &str) -> Option<&Shadow> {
        self.shadows
            .iter()
            .find(|s| &*s.version().version == version)
    }

    /// The entry of `version`.
    pub fn entry(&self, version: &str) -> Option<&VersionEntry> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// `version`, loaded.
    ///
    /// # Errors
    /// [`ServingError::UnknownVersion`], or [`ServingError::Unavailable`] with the reason it is
    /// not loaded.
    pub fn ready(&self, version: &str) -> Result<Arc<LoadedVersion>, ServingError> {
        let entry = self
            .entry(version)
            .ok_or_else(|| ServingError::UnknownVersion {
                model: self.model.clone(),
                version: version.to_string(),
            })?;
        match &entry.status {
            VersionStatus::Ready(loaded) => Ok(Arc::clone(loaded)),
            status => Err(ServingError::Unavailable {
                model: self.model.clone(),
                version: version.to_string(),
                reason: status.reason().unwrap_or_default().to_string(),
            }),
        }
    }

    /// The ready version with the best highlight validation score.
    pub fn best_validation(&self) -> Option<&VersionEntry> {
        let mut best: Option<&VersionEntry> = None;
        for entry in self.versions.iter().filter(|v| v.ready().is_some()) {
            let Some(meta) = entry.metadata.as_ref() else {
                continue;
            };
            if meta.highlight_score().is_none() {
                continue;
            }
            if best.is_none_or(|b| meta.beats(b.metadata.as_ref())) {
                best = Some(entry);
            }
        }
        best
    }

    /// The highest ready version.
    pub fn highest_ready(&self) -> Option<&Arc<LoadedVersion>> {
        self.versions.iter().rev().find_map(VersionEntry::ready)
    }

    /// The durable form: version names instead of loaded versions.
    pub fn record(&self) -> DeploymentRecord {
        DeploymentRecord {
            revision: self.revision,
            champion: self.champion.as_ref().map(|c| c.version.to_string()),
            shadows: self
                .shadows
                .iter()
                .map(|s| (s.version().version.to_string(), s.fraction))
                .collect(),
            threshold: self.threshold,
            policy: self.policy,
            history: self.history.clone(),
            known_versions: self.versions.iter().map(|v| v.version.clone()).collect(),
            promotion: self.promotion,
        }
    }

    /// True when `other` is the same deployment with the same version statuses (whatever the
    /// revisions): a change that leads back to it changes nothing.
    pub fn is_same_as(&self, other: &DeploymentState) -> bool {
        self.record().same_deployment(&other.record())
            && self.versions.len() == other.versions.len()
            && self
                .versions
                .iter()
                .zip(&other.versions)
                .all(|(a, b)| a.version == b.version && a.status.is_same(&b.status))
    }
}

/// A saved deployment applied to the versions found at start.
#[derive(Debug)]
pub struct Restored {
    /// The deployment to publish.
    pub state: DeploymentState,
    /// What could not be restored as saved, in words; empty when the state is the saved one.
    pub substitutions: Vec<String>,
}

/// The deployment `saved` describes, over `versions` (the known versions found on disk) and
/// `mirrors` (started for the saved shadows that are ready). A champion that is not available is
/// replaced by the best available version (best validation score, else the highest ready); a
/// shadow that is not available is dropped. Each such substitution is a change: the revision is
/// one past the saved one and [`Restored::substitutions`] says what changed. Otherwise the saved
/// revision is kept: a restart is not a change.
pub fn restore(
    model: &str,
    saved: &DeploymentRecord,
    versions: Vec<VersionEntry>,
    mirrors: &[Arc<Mirror>],
) -> Restored {
    let mut state = DeploymentState {
        model: model.to_string(),
        revision: saved.revision,
        champion: None,
        shadows: Vec::new(),
        threshold: saved.threshold,
        policy: saved.policy,
        history: saved.history.clone(),
        promotion: saved.promotion,
        versions,
    };
    let mut substitutions = Vec::new();
    if let Some(name) = &saved.champion {
        state.champion = state.ready(name).ok();
        if state.champion.is_none() {
            let fallback = state
                .best_validation()
                .and_then(VersionEntry::ready)
                .or_else(|| state.highest_ready())
                .cloned();
            tracing::warn!(model, champion = %name, "remembered champion is not available");
            substitutions.push(match &fallback {
                Some(v) => format!(
                    "champion {name} unavailable; best available version serves ({})",
                    v.version
                ),
                None => format!("champion {name} unavailable; no version is ready"),
            });
            state.champion = fallback;
        }
    }
    for (name, &fraction) in &saved.shadows {
        let mirror = mirrors.iter().find(|m| *m.version.version == **name);
        match mirror {
            Some(mirror) if state.role(name) != VersionRole::Champion => {
                state.shadows.push(Shadow {
                    fraction,
                    mirror: Arc::clone(mirror),
                });
            }
            _ => {
                tracing::warn!(model, shadow = %name, "remembered shadow is not available");
                substitutions.push(format!("shadow {name} unavailable; removed"));
            }
        }
    }
    state
        .shadows
        .sort_by(|a, b| compare_versions(&a.version().version, &b.version().version));
    if !substitutions.is_empty() {
        state.revision += 1;
    }
    Restored {
        state,
        substitutions,
    }
}
