//! Planning a deployment change. [`plan`] is pure: from the current [`DeploymentState`] and a
//! [`Change`] whose versions are already loaded and whose shadow mirrors are already started
//! (prepared in `changes.rs`), it builds the next state, one revision up, or refuses the change
//! and leaves nothing changed. Every writer plans through here; `commit.rs` saves and publishes.

use super::deployment::{DeploymentState, HISTORY_LIMIT, Shadow, VersionRole};
use super::entry::{VersionEntry, VersionStatus};
use super::mirror::Mirror;
use super::{LoadedVersion, ServingError};
use crate::repository::compare_versions;
use crate::store::{DeployPolicy, PromotionSettings};
use std::sync::Arc;

/// A change to one model's deployment, with what it needs already prepared.
#[derive(Debug, Clone)]
pub enum Change {
    /// A model's first deployment, over its versions: the champion is the best validation
    /// version under the `best_validation` policy, else the highest ready one; the threshold is
    /// the champion's own (`model.toml`), else the state's default.
    Deploy(Vec<VersionEntry>),
    /// Make a version champion; the previous one goes to the history, a shadow of the same
    /// version stops being a shadow.
    Promote(Arc<LoadedVersion>),
    /// Add a shadow, or change its fraction.
    Shadow {
        /// The shadow's mirror (the current one when only the fraction changes).
        mirror: Arc<Mirror>,
        /// Share of champion requests copied to it.
        fraction: f64,
    },
    /// Stop mirroring to a version.
    Unshadow(String),
    /// Set the confidence threshold.
    Threshold(f64),
    /// Set the deploy policy for versions added later.
    Policy(DeployPolicy),
    /// Set the promotion rule.
    Promotion(PromotionSettings),
    /// Bring back a previous champion: the history is cut at its last occurrence.
    Rollback(Arc<LoadedVersion>),
    /// Versions (re)loaded on request; a model without a champion gets its highest ready one.
    Load(Vec<VersionEntry>),
    /// Unload an idle version.
    Unload(String),
    /// The deployment a model registry names: its champion and exactly these shadows, with
    /// versions the model does not have yet added to its table.
    Follow {
        /// Versions downloaded for this change (ready ones only).
        added: Vec<VersionEntry>,
        /// The champion.
        champion: Arc<LoadedVersion>,
        /// Every shadow, with its mirror and fraction.
        shadows: Vec<(Arc<Mirror>, f64)>,
    },
    /// A version found after the first deployment, deployed as the policy says.
    AddVersion {
        /// The new version.
        entry: Box<VersionEntry>,
        /// Its mirror, when the policy makes it a shadow ([`needs_mirror`]).
        mirror: Option<Arc<Mirror>>,
    },
}

impl Change {
    /// The audit log's words for this change, once planned into `next`.
    pub fn action(&self, next: &DeploymentState) -> String {
        match self {
            Change::Deploy(_) => "deploy".into(),
            Change::Promote(_) => "promote".into(),
            Change::Shadow { .. } => "shadow".into(),
            Change::Unshadow(_) => "unshadow".into(),
            Change::Threshold(_) => "threshold".into(),
            Change::Policy(_) => "policy".into(),
            Change::Promotion(_) => "promotion settings".into(),
            Change::Rollback(_) => "rollback".into(),
            Change::Load(_) => "load".into(),
            Change::Unload(version) => format!("unload {version}"),
            Change::Follow { .. } => {
                let shadows: Vec<String> = next
                    .shadows
                    .iter()
                    .map(|s| s.version().version.to_string())
                    .collect();
                format!(
                    "follow registry: champion {}, shadows [{}]",
                    next.champion
                        .as_ref()
                        .map_or_else(String::new, |c| c.version.to_string()),
                    shadows.join(", ")
                )
            }
            Change::AddVersion { entry, .. } => {
                format!(
                    "new version {}: {}",
                    entry.version,
                    next.role(&entry.version)
                )
            }
        }
    }
}

/// Checks a fraction or threshold: a finite number from 0 to 1.
///
/// # Errors
/// [`ServingError::InvalidInput`] naming `field`.
pub fn check_unit_interval(field: &str, value: f64) -> Result<(), ServingError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ServingError::invalid(
            field,
            format!("expected a number from 0 to 1, got {value}"),
        ))
    }
}

/// Checks a promotion rule: α strictly between 0 and 1, at least one paired row before a
/// decision, and `max_labels` not below `min_labels`.
///
/// # Errors
/// [`ServingError::InvalidInput`] naming the field.
pub fn check_promotion(settings: &PromotionSettings) -> Result<(), ServingError> {
    if !(settings.alpha > 0.0 && settings.alpha < 1.0) {
        return Err(ServingError::invalid(
            "alpha",
            format!(
                "expected a level strictly between 0 and 1, got {}",
                settings.alpha
            ),
        ));
    }
    if settings.min_labels == 0 {
        return Err(ServingError::invalid(
            "min_labels",
            "expected at least 1 paired labelled row",
        ));
    }
    if settings.max_labels < settings.min_labels {
        return Err(ServingError::invalid(
            "max_labels",
            format!(
                "expected at least min_labels ({}), got {}",
                settings.min_labels, settings.max_labels
            ),
        ));
    }
    Ok(())
}

/// True when adding `entry` to `state` makes it a shadow, so that its mirror must be prepared.
pub fn needs_mirror(state: &DeploymentState, entry: &VersionEntry) -> bool {
    state.policy == DeployPolicy::Shadow && state.champion.is_some() && entry.ready().is_some()
}

/// The next state of `state` after `change`, one revision up. When the change leads back to the
/// same deployment, the result [`DeploymentState::is_same_as`] `state` and nothing needs saving.
///
/// # Errors
/// [`ServingError::InvalidInput`] for a fraction or threshold outside 0–1,
/// [`ServingError::UnknownVersion`] for a version the model does not have, and
/// [`ServingError::Conflict`] for a change the deployment does not allow (shadowing or unloading
/// the champion, unloading a shadow, removing a shadow that is not one, rolling back to a
/// version that is not in the history). `state` is never changed.
pub fn plan(state: &DeploymentState, change: &Change) -> Result<DeploymentState, ServingError> {
    let mut next = state.clone();
    next.revision = state.revision + 1;
    match change {
        Change::Deploy(versions) => {
            next.versions = versions.clone();
            next.versions
                .sort_by(|a, b| compare_versions(&a.version, &b.version));
            let best = (next.policy == DeployPolicy::BestValidation)
                .then(|| next.best_validation().and_then(VersionEntry::ready))
                .flatten();
            next.champion = best.or_else(|| next.highest_ready()).cloned();
            if let Some(threshold) = next.champion.as_ref().and_then(|c| c.metadata.threshold) {
                next.threshold = threshold;
            }
        }
        Change::Promote(version) => {
            mark_ready(&mut next, version)?;
            promote(&mut next, version);
        }
        Change::Shadow { mirror, fraction } => {
            check_unit_interval("fraction", *fraction)?;
            let version = &mirror.version;
            if next.role(&version.version) == VersionRole::Champion {
                return Err(ServingError::Conflict(format!(
                    "version {} is the champion of {}; it cannot shadow itself",
                    version.version, next.model
                )));
            }
            mark_ready(&mut next, version)?;
            next.shadows
                .retain(|s| s.version().version != version.version);
            next.shadows.push(Shadow {
                fraction: *fraction,
                mirror: Arc::clone(mirror),
            });
            next.shadows
                .sort_by(|a, b| compare_versions(&a.version().version, &b.version().version));
        }
        Change::Unshadow(version) => {
            if next.shadow(version).is_none() {
                return Err(ServingError::Conflict(format!(
                    "version {version} is not a shadow of {}",
                    next.model
                )));
            }
            next.shadows.retain(|s| *s.version().version != **version);
        }
        Change::Threshold(threshold) => {
            check_unit_interval("threshold", *threshold)?;
            next.threshold = *threshold;
        }
        Change::Policy(policy) => next.policy = *policy,
        Change::Promotion(settings) => {
            check_promotion(settings)?;
            next.promotion = *settings;
        }
        Change::Rollback(target) => {
            let Some(position) = next.history.iter().rposition(|v| **v == *target.version) else {
                return Err(ServingError::Conflict(format!(
                    "version {} is not a previous champion of {}",
                    target.version, next.model
                )));
            };
            next.history.truncate(position);
            mark_ready(&mut next, target)?;
            next.shadows
                .retain(|s| s.version().version != target.version);
            next.champion = Some(Arc::clone(target));
        }
        Change::Load(entries) => {
            for entry in entries {
                let slot = next
                    .versions
                    .iter_mut()
                    .find(|v| v.version == entry.version)
                    .ok_or_else(|| unknown(state, &entry.version))?;
                *slot = entry.clone();
            }
            if next.champion.is_none() {
                next.champion = next.highest_ready().cloned();
            }
        }
        Change::Unload(version) => {
            match next.role(version) {
                VersionRole::Champion => {
                    return Err(ServingError::Conflict(format!(
                        "version {version} is the champion of {}; promote another version first",
                        next.model
                    )));
                }
                VersionRole::Shadow => {
                    return Err(ServingError::Conflict(format!(
                        "version {version} is a shadow of {}; remove the shadow first",
                        next.model
                    )));
                }
                VersionRole::Idle => {}
            }
            let slot = next
                .versions
                .iter_mut()
                .find(|v| &v.version == version)
                .ok_or_else(|| unknown(state, version))?;
            slot.status = VersionStatus::Unloaded;
        }
        Change::Follow {
            added,
            champion,
            shadows,
        } => {
            for entry in added {
                if next.entry(&entry.version).is_none() {
                    next.versions.push(entry.clone());
                }
            }
            next.versions
                .sort_by(|a, b| compare_versions(&a.version, &b.version));
            mark_ready(&mut next, champion)?;
            if next.champion.is_none()
                && let Some(threshold) = champion.metadata.threshold
            {
                next.threshold = threshold;
            }
            promote(&mut next, champion);
            next.shadows.clear();
            for (mirror, fraction) in shadows {
                check_unit_interval("fraction", *fraction)?;
                if mirror.version.version == champion.version {
                    continue;
                }
                mark_ready(&mut next, &mirror.version)?;
                next.shadows.push(Shadow {
                    fraction: *fraction,
                    mirror: Arc::clone(mirror),
                });
            }
            next.shadows
                .sort_by(|a, b| compare_versions(&a.version().version, &b.version().version));
        }
        Change::AddVersion { entry, mirror } => {
            if next.entry(&entry.version).is_some() {
                return Err(ServingError::Conflict(format!(
                    "version {} of {} is already known",
                    entry.version, next.model
                )));
            }
            let wants_shadow = needs_mirror(&next, entry);
            next.versions.push(entry.as_ref().clone());
            next.versions
                .sort_by(|a, b| compare_versions(&a.version, &b.version));
            if let Some(loaded) = entry.ready() {
                deploy_new(
                    &mut next,
                    loaded,
                    wants_shadow.then_some(mirror.as_ref()).flatten(),
                )?;
            }
        }
    }
    Ok(next)
}

/// Applies the deploy policy to a new, ready version.
fn deploy_new(
    next: &mut DeploymentState,
    loaded: &Arc<LoadedVersion>,
    mirror: Option<&Arc<Mirror>>,
) -> Result<(), ServingError> {
    let Some(current) = next.champion.clone() else {
        next.champion = Some(Arc::clone(loaded));
        return Ok(());
    };
    match next.policy {
        DeployPolicy::Manual => {}
        DeployPolicy::Shadow => {
            let mirror = mirror
                .filter(|m| Arc::ptr_eq(&m.version, loaded))
                .ok_or_else(|| {
                    ServingError::Conflict(format!(
                        "version {} of {} should become a shadow, but no mirror was started for it",
                        loaded.version, next.model
                    ))
                })?;
            next.shadows.push(Shadow {
                fraction: 1.0,
                mirror: Arc::clone(mirror),
            });
            next.shadows
                .sort_by(|a, b| compare_versions(&a.version().version, &b.version().version));
        }
        DeployPolicy::Champion => promote(next, loaded),
        DeployPolicy::BestValidation => {
            if loaded.metadata.beats(Some(&current.metadata)) {
                promote(next, loaded);
            }
        }
    }
    Ok(())
}

/// Makes `version` champion: off the shadows, the previous champion onto the history.
fn promote(next: &mut DeploymentState, version: &Arc<LoadedVersion>) {
    next.shadows
        .retain(|s| s.version().version != version.version);
    if let Some(previous) = next.champion.replace(Arc::clone(version))
        && previous.version != version.version
    {
        next.history.push(previous.version.to_string());
        if next.history.len() > HISTORY_LIMIT {
            let excess = next.history.len() - HISTORY_LIMIT;
            next.history.drain(..excess);
        }
    }
}

/// Records that `version` is loaded in the version table.
fn mark_ready(
    next: &mut DeploymentState,
    version: &Arc<LoadedVersion>,
) -> Result<(), ServingError> {
    let model = next.model.clone();
    let slot = next
        .versions
        .iter_mut()
        .find(|v| *v.version == *version.version)
        .ok_or_else(|| ServingError::UnknownVersion {
            model,
            version: version.version.to_string(),
        })?;
    if slot
        .ready()
        .is_none_or(|loaded| !Arc::ptr_eq(loaded, version))
    {
        slot.status = VersionStatus::Ready(Arc::clone(version));
    }
    Ok(())
}

fn unknown(state: &DeploymentState, version: &str) -> ServingError {
    ServingError::UnknownVersion {
        model: state.model.clone(),
        version: version.to_string(),
    }
}

#[cfg(test)]
mod tests;
