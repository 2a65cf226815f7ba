//! The writers of single changes: the admin API's promote, shadows, thresholds, policies,
//! promotion rule, rollback, load and unload, and the promotion of a shadow on evidence. Each
//! begins a change (lock + expected revision), prepares what it needs (loading a version on the
//! blocking pool, starting a shadow's mirror), and finishes it through the one change path
//! (`commit.rs`), answering with the model's new deployment.

use super::deployment::DeploymentState;
use super::entry::{VersionEntry, VersionStatus};
use super::mirror::Mirror;
use super::plan::{Change, check_unit_interval};
use super::report::ModelReport;
use super::{LoadedVersion, Registry, ServingError};
use crate::feedback::Candidate;
use crate::monitor::{ShadowMetrics, ShadowStats};
use crate::store::{Actor, DeployPolicy, PromotionSettings};
use std::sync::Arc;

impl Registry {
    /// Makes `version` the champion (loading and warming it first if needed).
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::UnknownVersion`],
    /// [`ServingError::Unavailable`] when it cannot be loaded, [`ServingError::Stale`] when
    /// `expected` is not the current revision, [`ServingError::State`] when it cannot be saved.
    pub async fn promote(
        &self,
        model: &str,
        version: &str,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        let pending = self.begin(self.model(model)?, expected).await?;
        let loaded = self.ensure_loaded(&pending.current, version).await?;
        self.admin_change(pending, Change::Promote(loaded)).await
    }

    /// Adds `version` as a shadow with `fraction`, or changes its fraction (keeping its figures).
    ///
    /// # Errors
    /// [`ServingError::InvalidInput`] for a fraction outside 0–1, [`ServingError::Conflict`] for
    /// the champion itself, and the errors of [`Registry::promote`].
    pub async fn set_shadow(
        &self,
        model: &str,
        version: &str,
        fraction: f64,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        check_unit_interval("fraction", fraction)?;
        let pending = self.begin(self.model(model)?, expected).await?;
        let loaded = self.ensure_loaded(&pending.current, version).await?;
        let mirror = self.mirror_for(&pending.current, loaded);
        self.admin_change(pending, Change::Shadow { mirror, fraction })
            .await
    }

    /// Stops mirroring to `version`.
    ///
    /// # Errors
    /// [`ServingError::Conflict`] when it is not a shadow; [`ServingError::Stale`],
    /// [`ServingError::State`].
    pub async fn remove_shadow(
        &self,
        model: &str,
        version: &str,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        let pending = self.begin(self.model(model)?, expected).await?;
        self.admin_change(pending, Change::Unshadow(version.to_string()))
            .await
    }

    /// Sets the confidence threshold (0–1).
    ///
    /// # Errors
    /// [`ServingError::InvalidInput`] outside 0–1; [`ServingError::Stale`],
    /// [`ServingError::State`].
    pub async fn set_threshold(
        &self,
        model: &str,
        threshold: f64,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        let pending = self.begin(self.model(model)?, expected).await?;
        self.admin_change(pending, Change::Threshold(threshold))
            .await
    }

    /// Sets the deploy policy for new versions.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::Stale`], [`ServingError::State`].
    pub async fn set_policy(
        &self,
        model: &str,
        policy: DeployPolicy,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        let pending = self.begin(self.model(model)?, expected).await?;
        self.admin_change(pending, Change::Policy(policy)).await
    }

    /// Sets the promotion rule (mode, α, and the bounds on paired labelled rows).
    ///
    /// # Errors
    /// [`ServingError::InvalidInput`] naming the field at fault; [`ServingError::Stale`],
    /// [`ServingError::State`].
    pub async fn set_promotion(
        &self,
        model: &str,
        settings: PromotionSettings,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        let pending = self.begin(self.model(model)?, expected).await?;
        self.admin_change(pending, Change::Promotion(settings))
            .await
    }

    /// Promotes a shadow the feedback loop's evidence showed better than the champion, if the
    /// deployment is still the one compared (that champion, that shadow). Audited with actor
    /// `promotion` and the evidence. The old champion stays loaded, so a rollback is one call.
    ///
    /// # Errors
    /// The errors of [`Registry::promote`]. `Ok(None)` when the deployment has moved on.
    pub async fn promote_on_evidence(
        &self,
        candidate: Candidate,
    ) -> Result<Option<ModelReport>, ServingError> {
        let pending = self.begin(self.model(&candidate.model)?, None).await?;
        let current = Arc::clone(&pending.current);
        let still_compared = current
            .champion
            .as_ref()
            .is_some_and(|c| *c.version == *candidate.champion)
            && current.shadow(&candidate.shadow).is_some();
        if !still_compared {
            return Ok(None);
        }
        let loaded = self.ensure_loaded(&current, &candidate.shadow).await?;
        let next = self
            .finish_on(
                pending,
                Change::Promote(loaded),
                Actor::Promotion,
                Some(candidate.evidence),
            )
            .await?;
        Ok(Some(ModelReport::of(&next)))
    }

    /// Brings back the most recent previous champion that can be loaded (a version that cannot
    /// is skipped; if none can, nothing changes).
    ///
    /// # Errors
    /// [`ServingError::Conflict`] when there is no previous champion that can be loaded;
    /// [`ServingError::Stale`], [`ServingError::State`].
    pub async fn rollback(
        &self,
        model: &str,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        let pending = self.begin(self.model(model)?, expected).await?;
        let current = Arc::clone(&pending.current);
        let champion = current.champion.as_ref().map(|c| &*c.version);
        let mut unloadable: Vec<String> = Vec::new();
        for previous in current.history.iter().rev() {
            if champion == Some(previous.as_str()) {
                continue;
            }
            match self.ensure_loaded(&current, previous).await {
                Ok(loaded) => return self.admin_change(pending, Change::Rollback(loaded)).await,
                Err(error) => {
                    tracing::warn!(model, version = %previous, %error, "rollback target unavailable");
                    unloadable.push(format!("{previous}: {error}"));
                }
            }
        }
        Err(ServingError::Conflict(if unloadable.is_empty() {
            format!("{model} has no previous champion to roll back to")
        } else {
            format!(
                "no previous champion of {model} can be loaded ({}); the history is kept",
                unloadable.join("; ")
            )
        }))
    }

    /// Loads `version` (or retries every version that is not ready), as the repository
    /// extension's `load` asks. A model without a champion gets its highest ready version.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::UnknownVersion`],
    /// [`ServingError::Unavailable`] when a named version fails to load; [`ServingError::Stale`],
    /// [`ServingError::State`].
    pub async fn load_model(
        &self,
        model: &str,
        version: Option<&str>,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        let pending = self.begin(self.model(model)?, expected).await?;
        let current = Arc::clone(&pending.current);
        let reloaded = match version {
            Some(version) => {
                let entry = current
                    .entry(version)
                    .ok_or_else(|| ServingError::UnknownVersion {
                        model: model.to_string(),
                        version: version.to_string(),
                    })?;
                if entry.ready().is_some() {
                    Vec::new()
                } else {
                    let entry = self.load_entry(entry).await?;
                    if let VersionStatus::Failed(reason) = &entry.status {
                        return Err(ServingError::Unavailable {
                            model: model.to_string(),
                            version: version.to_string(),
                            reason: reason.clone(),
                        });
                    }
                    vec![entry]
                }
            }
            None => {
                let mut reloaded = Vec::new();
                for entry in current.versions.iter().filter(|v| v.ready().is_none()) {
                    reloaded.push(self.load_entry(entry).await?);
                }
                reloaded
            }
        };
        self.admin_change(pending, Change::Load(reloaded)).await
    }

    /// Unloads `version`. The champion and shadows are refused: they are serving.
    ///
    /// # Errors
    /// [`ServingError::Conflict`] for the champion, a shadow, or no version named;
    /// [`ServingError::UnknownVersion`]; [`ServingError::Stale`], [`ServingError::State`].
    pub async fn unload_version(
        &self,
        model: &str,
        version: Option<&str>,
        expected: Option<u64>,
    ) -> Result<ModelReport, ServingError> {
        let pending = self.begin(self.model(model)?, expected).await?;
        let Some(version) = version else {
            let champion = pending.current.champion.as_ref();
            return Err(ServingError::Conflict(format!(
                "unloading all of {model} would unload its champion {}; name one version in \
                 the request's `version` parameter",
                champion.map_or("(none)", |c| &*c.version)
            )));
        };
        self.admin_change(pending, Change::Unload(version.to_string()))
            .await
    }

    /// Finishes an admin change and reports the model as it is after it.
    async fn admin_change(
        &self,
        pending: super::commit::Pending,
        change: Change,
    ) -> Result<ModelReport, ServingError> {
        let next = self.finish(pending, change, Actor::Admin).await?;
        Ok(ModelReport::of(&next))
    }

    /// `version` of `state`, loaded and warmed on the blocking pool if it is not ready.
    ///
    /// # Errors
    /// [`ServingError::UnknownVersion`], or [`ServingError::Unavailable`] when it fails to load.
    pub(super) async fn ensure_loaded(
        &self,
        state: &DeploymentState,
        version: &str,
    ) -> Result<Arc<LoadedVersion>, ServingError> {
        let entry = state
            .entry(version)
            .ok_or_else(|| ServingError::UnknownVersion {
                model: state.model.clone(),
                version: version.to_string(),
            })?;
        if let Some(loaded) = entry.ready() {
            return Ok(Arc::clone(loaded));
        }
        let reloaded = self.load_entry(entry).await?;
        match reloaded.status {
            VersionStatus::Ready(loaded) => Ok(loaded),
            status => Err(ServingError::Unavailable {
                model: state.model.clone(),
                version: version.to_string(),
                reason: status.reason().unwrap_or_default().to_string(),
            }),
        }
    }

    /// Loads the version of `entry` again, on the blocking pool.
    ///
    /// # Errors
    /// [`ServingError::Interrupted`] when the loading task does not complete.
    pub(super) async fn load_entry(
        &self,
        entry: &VersionEntry,
    ) -> Result<VersionEntry, ServingError> {
        let loader = self.loader.clone();
        let dir = entry.dir.clone();
        tokio::task::spawn_blocking(move || VersionEntry::load(dir, &loader))
            .await
            .map_err(|e| ServingError::interrupted("loading a version", &e))
    }

    /// The mirror for shadowing `loaded`: the current one when it already shadows that very
    /// version (a fraction change), else a new one (keeping the figures of a shadow of the same
    /// name).
    pub(super) fn mirror_for(
        &self,
        state: &DeploymentState,
        loaded: Arc<LoadedVersion>,
    ) -> Arc<Mirror> {
        let current = state.shadow(&loaded.version);
        if let Some(shadow) = current.filter(|s| Arc::ptr_eq(s.version(), &loaded)) {
            return Arc::clone(&shadow.mirror);
        }
        self.new_mirror(loaded, current.map(|s| Arc::clone(&s.mirror.stats)))
    }

    /// Starts a mirror for shadowing `loaded`, with `stats` to keep or fresh figures.
    pub(super) fn new_mirror(
        &self,
        loaded: Arc<LoadedVersion>,
        stats: Option<Arc<ShadowStats>>,
    ) -> Arc<Mirror> {
        let stats = stats.unwrap_or_else(|| {
            Arc::new(ShadowStats::with_metrics(ShadowMetrics::new(
                &self.loader.metrics,
                &loaded.model,
                &loaded.version,
            )))
        });
        Arc::new(Mirror::start(loaded, stats, self.mirror, self.log.clone()))
    }
}
