//! Applying a deployment another replica saved: the saved record is read, every version it
//! serves is loaded and warmed first, then the new deployment is published here in one swap,
//! without saving it again. A version that cannot be loaded leaves the previous deployment
//! serving, and the error says why.

use super::deployment::restore;
use super::entry::{VersionEntry, VersionStatus};
use super::mirror::Mirror;
use super::{Registry, ServingError};
use std::sync::Arc;

impl Registry {
    /// Brings `model` up to the deployment saved in the store, when that is newer than the one
    /// served here. Returns the revision served afterwards.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`] for a model this replica does not know,
    /// [`ServingError::State`] when the store cannot be read, [`ServingError::Unavailable`] when
    /// a version the saved deployment serves cannot be loaded here (nothing changes then).
    pub async fn catch_up(&self, model: &str) -> Result<u64, ServingError> {
        let state = self.model(model)?;
        let Some(store) = &self.store else {
            return Ok(state.deployment().revision);
        };
        let Some(saved) = store.load(model).await? else {
            return Ok(state.deployment().revision);
        };
        if saved.revision <= state.deployment().revision {
            return Ok(state.deployment().revision);
        }
        let pending = self.begin(Arc::clone(&state), None).await?;
        let current = Arc::clone(&pending.current);
        if saved.revision <= current.revision {
            return Ok(current.revision);
        }
        let served: Vec<&String> = saved.champion.iter().chain(saved.shadows.keys()).collect();
        let mut versions: Vec<VersionEntry> = current.versions.clone();
        for name in served {
            let loaded = self.ensure_loaded(&current, name).await?;
            if let Some(entry) = versions.iter_mut().find(|v| &v.version == name) {
                entry.status = VersionStatus::Ready(loaded);
            }
        }
        let mirrors: Vec<Arc<Mirror>> = saved
            .shadows
            .keys()
            .filter_map(|name| versions.iter().find(|v| &v.version == name))
            .filter_map(|entry| entry.ready().cloned())
            .map(|loaded| self.mirror_for(&current, loaded))
            .collect();
        let restored = restore(model, &saved, versions, &mirrors);
        if !restored.substitutions.is_empty() {
            return Err(ServingError::Unavailable {
                model: model.to_string(),
                version: saved.champion.clone().unwrap_or_default(),
                reason: restored.substitutions.join("; "),
            });
        }
        let next = Arc::new(restored.state);
        pending.model.deployment.store(Arc::clone(&next));
        self.announce(&next).await;
        tracing::info!(
            model,
            revision = next.revision,
            "deployment saved by another replica applied"
        );
        Ok(next.revision)
    }
}
