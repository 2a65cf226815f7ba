//! Following a model registry: the registry sync names the champion and shadows a model should
//! have (from its aliases) and the version directories it downloaded; this loads what is new and
//! changes the deployment through the one change path, or changes nothing at all.

use super::deployment::DeploymentState;
use super::entry::VersionEntry;
use super::plan::Change;
use super::{LoadedVersion, ModelSource, ModelState, Registry, ServingError};
use crate::repository::VersionDir;
use crate::store::{Actor, DeployPolicy};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The deployment a registry asks for: a champion and every shadow with its fraction.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The champion version.
    pub champion: String,
    /// Shadow versions and their mirror fractions (the champion is never its own shadow).
    pub shadows: BTreeMap<String, f64>,
}

impl Target {
    /// True when `state` serves exactly this target.
    pub fn is_served_by(&self, state: &DeploymentState) -> bool {
        let shadows: BTreeMap<String, f64> = state
            .shadows
            .iter()
            .map(|s| (s.version().version.to_string(), s.fraction))
            .collect();
        state
            .champion
            .as_ref()
            .is_some_and(|c| *c.version == *self.champion)
            && shadows == self.shadows
    }

    /// Every version the target names, champion first.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.champion.as_str()).chain(self.shadows.keys().map(String::as_str))
    }
}

impl Registry {
    /// True when `model` is served from a model registry (its aliases decide its deployment).
    pub fn follows_registry(&self, model: &str) -> bool {
        self.model(model)
            .is_ok_and(|m| m.source == ModelSource::Registry)
    }

    /// The directory registry versions are downloaded to, when a registry is followed.
    pub fn registry_versions(&self) -> Option<&std::path::Path> {
        self.registry_versions.as_deref()
    }

    /// Changes `model`'s deployment to `target` (audited as the registry's, with `evidence`),
    /// loading and warming the versions of `dirs` the model does not have yet. A model not
    /// served yet is created. When a version fails to load, or the change cannot be saved,
    /// nothing changes.
    ///
    /// # Errors
    /// [`ServingError::Conflict`] when the repository serves a model of that name;
    /// [`ServingError::Unavailable`] naming a version that did not load;
    /// [`ServingError::UnknownVersion`] for a version neither known nor given;
    /// [`ServingError::State`] when the change cannot be saved.
    pub async fn follow(
        &self,
        model: &str,
        target: &Target,
        dirs: Vec<VersionDir>,
        evidence: serde_json::Value,
    ) -> Result<Arc<DeploymentState>, ServingError> {
        let existing = self.models.load().get(model).cloned();
        let (state, created) = match existing {
            Some(state) if state.source == ModelSource::Registry => (state, false),
            Some(_) => {
                return Err(ServingError::Conflict(format!(
                    "the model repository serves a model named {model}; the registry's model of that name is not served"
                )));
            }
            None => {
                let empty =
                    DeploymentState::empty(model, self.defaults.threshold, DeployPolicy::Manual);
                (
                    Arc::new(ModelState::new(
                        empty,
                        ModelSource::Registry,
                        &self.admission,
                        self.metrics(),
                    )),
                    true,
                )
            }
        };
        let pending = self.begin(Arc::clone(&state), None).await?;
        let new_dirs: Vec<VersionDir> = dirs
            .into_iter()
            .filter(|d| pending.current.entry(&d.version).is_none())
            .collect();
        let added = self.load_all(new_dirs).await?;
        let ready = |version: &str| -> Result<Arc<LoadedVersion>, ServingError> {
            let entry = added
                .iter()
                .chain(pending.current.versions.iter())
                .find(|e| e.version == version)
                .ok_or_else(|| ServingError::UnknownVersion {
                    model: model.to_string(),
                    version: version.to_string(),
                })?;
            entry
                .ready()
                .cloned()
                .ok_or_else(|| ServingError::Unavailable {
                    model: model.to_string(),
                    version: version.to_string(),
                    reason: entry.status.reason().unwrap_or("not loaded").to_string(),
                })
        };
        let champion = ready(&target.champion)?;
        let mut shadows = Vec::new();
        for (version, fraction) in &target.shadows {
            let loaded = ready(version)?;
            shadows.push((self.mirror_for(&pending.current, loaded), *fraction));
        }
        let change = Change::Follow {
            added: added
                .into_iter()
                .filter(|e| e.ready().is_some())
                .collect::<Vec<VersionEntry>>(),
            champion,
            shadows,
        };
        let next = self
            .finish_on(pending, change, Actor::Mlflow, Some(evidence))
            .await?;
        if created {
            self.insert(state);
        }
        Ok(next)
    }
}
