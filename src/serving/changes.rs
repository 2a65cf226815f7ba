//! Deployment changes: restoring the saved state at start, deploy policies, promote, shadows,
//! thresholds, rollback, rescan, load and unload. Changes are serialised by one lock; each is
//! prepared first (loading and warming a version if needed), then published with one atomic
//! store, then written to the state file and the audit log.

use super::mirror::Shadow;
use super::report::{ModelReport, beats, best_validation, deployment_value};
use super::{
    DeployPolicy, ModelState, Registry, ServingError, VersionEntry, VersionStatus, new_model_state,
};
use crate::monitor::{ShadowMetrics, ShadowStats};
use crate::repository::{self, compare_versions};
use crate::state::{AuditEntry, FORMAT_VERSION, SavedDeployment, SavedState};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::LoadedVersion;

/// What a rescan or load found.
#[derive(Debug, Clone, Serialize)]
pub struct ScanOutcome {
    /// Model name.
    pub model: String,
    /// Version name.
    pub version: String,
    /// `ready` or `failed`.
    pub status: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the deploy policy did with it (`idle`, `shadow`, `champion`).
    pub deployed_as: &'static str,
}

fn check_unit_interval(field: &str, value: f64) -> Result<(), ServingError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ServingError::invalid(
            field,
            format!("expected a number from 0 to 1, got {value}"),
        ))
    }
}

impl Registry {
    fn snapshot(&self) -> SavedState {
        let models = self
            .models()
            .iter()
            .map(|model| {
                let deployment = &model.deployment;
                let saved = SavedDeployment {
                    champion: deployment.champion().map(|c| c.version.clone()),
                    shadows: deployment
                        .shadows()
                        .iter()
                        .map(|s| (s.version.version.clone(), s.fraction))
                        .collect(),
                    threshold: deployment.threshold(),
                    policy: deployment.policy(),
                    history: deployment.history(),
                    known_versions: model.versions().into_iter().map(|v| v.version).collect(),
                };
                (model.name.clone(), saved)
            })
            .collect();
        SavedState {
            format: FORMAT_VERSION,
            models,
        }
    }

    /// Writes the state file and one audit entry for a change to `model`, on the blocking pool
    /// (three fsyncs must not stall an async worker). When the state cannot be written, the
    /// deployment is put back as it was `before` and the error is returned: a change is either
    /// durable or not made.
    async fn record(
        &self,
        actor: &str,
        action: &str,
        model: &ModelState,
        before: Before,
    ) -> Result<(), ServingError> {
        self.publish_version_count(model);
        let after = deployment_value(model);
        let Some(store) = &self.store else {
            tracing::info!(model = %model.name, %action, %actor, %after, "deployment changed");
            return Ok(());
        };
        let store = Arc::clone(store);
        let snapshot = self.snapshot();
        let entry = AuditEntry::now(
            actor,
            action,
            Some(&model.name),
            before.value,
            after.clone(),
        );
        let written = tokio::task::spawn_blocking(move || {
            store.save(&snapshot)?;
            store.audit(&entry)
        })
        .await
        .map_err(|e| ServingError::Task(e.to_string()))
        .and_then(|outcome| outcome.map_err(ServingError::from));
        match written {
            Ok(()) => {
                tracing::info!(model = %model.name, %action, %actor, %after, "deployment changed");
                Ok(())
            }
            Err(error) => {
                if let Some(previous) = before.snapshot {
                    model.deployment.restore(previous);
                }
                tracing::error!(model = %model.name, %action, %error, "change not saved; undone");
                Err(error)
            }
        }
    }

    /// Loads (or reloads) `version` if it is not ready, off the async workers.
    async fn ensure_loaded(
        &self,
        model: &ModelState,
        version: &str,
    ) -> Result<Arc<LoadedVersion>, ServingError> {
        let entry = model
            .versions()
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| ServingError::UnknownVersion {
                model: model.name.clone(),
                version: version.to_string(),
            })?;
        if let Some(loaded) = entry.ready() {
            return Ok(Arc::clone(loaded));
        }
        let loader = self.loader.clone();
        let dir = entry.dir.clone();
        let reloaded = tokio::task::spawn_blocking(move || VersionEntry::load(dir, &loader))
            .await
            .map_err(|e| ServingError::Task(e.to_string()))?;
        let outcome = match &reloaded.status {
            VersionStatus::Ready(loaded) => Ok(Arc::clone(loaded)),
            VersionStatus::Failed(reason) => Err(ServingError::Unavailable {
                model: model.name.clone(),
                version: version.to_string(),
                reason: reason.clone(),
            }),
            VersionStatus::Unloaded => Err(ServingError::Task("version did not load".into())),
        };
        model.with_versions(|versions| {
            if let Some(slot) = versions.iter_mut().find(|v| v.version == version) {
                *slot = reloaded;
            }
        });
        self.publish_version_count(model);
        outcome
    }

    fn start_shadow(
        &self,
        version: Arc<LoadedVersion>,
        fraction: f64,
        model: &ModelState,
    ) -> Arc<Shadow> {
        let stats = model
            .deployment
            .shadows()
            .iter()
            .find(|s| s.version.version == version.version)
            .map_or_else(
                || {
                    Arc::new(ShadowStats::with_metrics(ShadowMetrics::new(
                        &self.loader.metrics,
                        &model.name,
                        &version.version,
                    )))
                },
                |s| Arc::clone(&s.stats),
            );
        Arc::new(Shadow::start(version, fraction, stats, self.mirror))
    }

    fn without_shadow(model: &ModelState, version: &str) -> Vec<Arc<Shadow>> {
        model
            .deployment
            .shadows()
            .iter()
            .filter(|s| s.version.version != version)
            .cloned()
            .collect()
    }

    /// Applies the model's deploy policy to a newly found, loaded version. Returns what it did.
    fn apply_policy(&self, model: &ModelState, loaded: Arc<LoadedVersion>) -> &'static str {
        let champion = model.deployment.champion();
        let Some(current) = champion else {
            model.deployment.set_champion_quietly(loaded);
            return "champion";
        };
        match model.deployment.policy() {
            DeployPolicy::Manual => "idle",
            DeployPolicy::Shadow => {
                let mut shadows = Self::without_shadow(model, &loaded.version);
                shadows.push(self.start_shadow(loaded, 1.0, model));
                model.deployment.set_shadows(shadows);
                "shadow"
            }
            DeployPolicy::Champion => {
                model.deployment.promote(loaded);
                "champion"
            }
            DeployPolicy::BestValidation => {
                if beats(&loaded.metadata, Some(&current.metadata)) {
                    model.deployment.promote(loaded);
                    "champion"
                } else {
                    "idle"
                }
            }
        }
    }

    /// At start: applies the saved deployments (champion, shadows, threshold, policy, history),
    /// falls back to the best available version when a remembered champion is gone (and says so
    /// in the audit log), applies the deploy policy to versions added since, and saves.
    ///
    /// # Errors
    /// [`ServingError::State`] when the state file is unreadable or cannot be written.
    pub async fn restore(&self) -> Result<(), ServingError> {
        let _change = self.changes.lock().await;
        let saved = match &self.store {
            Some(store) => store.load()?,
            None => None,
        };
        for model in self.models() {
            let before = Before::of(&model);
            let Some(saved) = saved.as_ref().and_then(|s| s.models.get(&model.name)) else {
                first_deployment(&model);
                self.record("startup", "deploy", &model, before).await?;
                continue;
            };
            self.restore_model(&model, saved, before).await?;
        }
        if let Some(store) = &self.store {
            store.save(&self.snapshot())?;
        }
        Ok(())
    }

    async fn restore_model(
        &self,
        model: &ModelState,
        saved: &SavedDeployment,
        before: Before,
    ) -> Result<(), ServingError> {
        let deployment = &model.deployment;
        deployment.set_threshold(saved.threshold);
        deployment.set_policy(saved.policy);
        deployment.set_history(saved.history.clone());
        let versions = model.versions();
        let ready = |name: &str| {
            versions
                .iter()
                .find(|v| v.version == name)
                .and_then(|v| v.ready().cloned())
        };
        match saved.champion.as_deref().map(|name| (name, ready(name))) {
            Some((_, Some(champion))) => deployment.set_champion_quietly(champion),
            Some((missing, None)) => {
                let fallback = best_validation(&versions)
                    .and_then(|v| v.ready().cloned())
                    .or_else(|| versions.iter().rev().find_map(|v| v.ready().cloned()));
                tracing::warn!(model = %model.name, champion = missing, "remembered champion is not available");
                if let Some(fallback) = fallback {
                    deployment.set_champion_quietly(fallback);
                }
                self.record(
                    "startup",
                    &format!("champion {missing} unavailable; best available version serves"),
                    model,
                    before.clone(),
                )
                .await?;
            }
            None => {}
        }
        let champion = deployment.champion().map(|c| c.version.clone());
        let mut shadows = Vec::new();
        for (name, &fraction) in &saved.shadows {
            match ready(name) {
                Some(version) if champion.as_deref() != Some(name.as_str()) => {
                    shadows.push(self.start_shadow(version, fraction, model));
                }
                _ => {
                    tracing::warn!(model = %model.name, shadow = %name, "remembered shadow is not available")
                }
            }
        }
        deployment.set_shadows(shadows);
        for entry in versions
            .iter()
            .filter(|v| !saved.known_versions.contains(&v.version))
        {
            if let Some(loaded) = entry.ready() {
                let before = Before::of(model);
                let action = self.apply_policy(model, Arc::clone(loaded));
                self.record(
                    "policy",
                    &format!("new version {}: {action}", entry.version),
                    model,
                    before,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Makes `version` the champion (loading and warming it first if needed). The previous
    /// champion goes to the history; a shadow that becomes champion stops being a shadow.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::UnknownVersion`],
    /// [`ServingError::Unavailable`] when it cannot be loaded, [`ServingError::State`].
    pub async fn promote(&self, model: &str, version: &str) -> Result<ModelReport, ServingError> {
        let _change = self.changes.lock().await;
        let model = self.model(model)?;
        let before = Before::of(&model);
        let loaded = self.ensure_loaded(&model, version).await?;
        if model
            .deployment
            .champion()
            .is_some_and(|c| c.version == version)
        {
            return Ok(ModelReport::of(&model));
        }
        model
            .deployment
            .set_shadows(Self::without_shadow(&model, version));
        model.deployment.promote(loaded);
        self.record("admin", "promote", &model, before).await?;
        Ok(ModelReport::of(&model))
    }

    /// Adds `version` as a shadow with `fraction`, or changes its fraction.
    ///
    /// # Errors
    /// [`ServingError::InvalidInput`] for a fraction outside 0–1, [`ServingError::Conflict`] for
    /// the champion itself, and the errors of [`Registry::promote`].
    pub async fn set_shadow(
        &self,
        model: &str,
        version: &str,
        fraction: f64,
    ) -> Result<ModelReport, ServingError> {
        check_unit_interval("fraction", fraction)?;
        let _change = self.changes.lock().await;
        let model = self.model(model)?;
        if model
            .deployment
            .champion()
            .is_some_and(|c| c.version == version)
        {
            return Err(ServingError::Conflict(format!(
                "version {version} is the champion of {}; it cannot shadow itself",
                model.name
            )));
        }
        let before = Before::of(&model);
        let loaded = self.ensure_loaded(&model, version).await?;
        let shadow = self.start_shadow(loaded, fraction, &model);
        let mut shadows = Self::without_shadow(&model, version);
        shadows.push(shadow);
        shadows.sort_by(|a, b| compare_versions(&a.version.version, &b.version.version));
        model.deployment.set_shadows(shadows);
        self.record("admin", "shadow", &model, before).await?;
        Ok(ModelReport::of(&model))
    }

    /// Stops mirroring to `version`.
    ///
    /// # Errors
    /// [`ServingError::Conflict`] when it is not a shadow.
    pub async fn remove_shadow(
        &self,
        model: &str,
        version: &str,
    ) -> Result<ModelReport, ServingError> {
        self.change(model, "unshadow", |model| {
            let shadows = Self::without_shadow(model, version);
            if shadows.len() == model.deployment.shadows().len() {
                return Err(ServingError::Conflict(format!(
                    "version {version} is not a shadow of {}",
                    model.name
                )));
            }
            model.deployment.set_shadows(shadows);
            Ok(())
        })
        .await
    }

    /// Sets the confidence threshold (0–1).
    ///
    /// # Errors
    /// [`ServingError::InvalidInput`] outside 0–1.
    pub async fn set_threshold(
        &self,
        model: &str,
        threshold: f64,
    ) -> Result<ModelReport, ServingError> {
        check_unit_interval("threshold", threshold)?;
        self.change(model, "threshold", |model| {
            model.deployment.set_threshold(threshold);
            Ok(())
        })
        .await
    }

    /// Sets the deploy policy for new versions.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::State`].
    pub async fn set_policy(
        &self,
        model: &str,
        policy: DeployPolicy,
    ) -> Result<ModelReport, ServingError> {
        self.change(model, "policy", |model| {
            model.deployment.set_policy(policy);
            Ok(())
        })
        .await
    }

    /// Applies a change that needs no loading to `model` under the change lock, then records it.
    async fn change(
        &self,
        model: &str,
        action: &str,
        apply: impl FnOnce(&ModelState) -> Result<(), ServingError>,
    ) -> Result<ModelReport, ServingError> {
        let _change = self.changes.lock().await;
        let model = self.model(model)?;
        let before = Before::of(&model);
        apply(&model)?;
        self.record("admin", action, &model, before).await?;
        Ok(ModelReport::of(&model))
    }

    /// Brings back the previous champion.
    ///
    /// # Errors
    /// [`ServingError::Conflict`] when there is no previous champion that can be loaded.
    pub async fn rollback(&self, model: &str) -> Result<ModelReport, ServingError> {
        let _change = self.changes.lock().await;
        let model = self.model(model)?;
        let before = Before::of(&model);
        let current = model.deployment.champion().map(|c| c.version.clone());
        let mut unloadable: Vec<(String, String)> = Vec::new();
        while let Some(previous) = model.deployment.pop_history() {
            if current.as_deref() == Some(previous.as_str()) {
                continue;
            }
            match self.ensure_loaded(&model, &previous).await {
                Ok(loaded) => {
                    model
                        .deployment
                        .set_shadows(Self::without_shadow(&model, &previous));
                    model.deployment.set_champion_quietly(loaded);
                    self.record("admin", "rollback", &model, before).await?;
                    return Ok(ModelReport::of(&model));
                }
                Err(error) => {
                    tracing::warn!(model = %model.name, version = %previous, %error, "rollback target unavailable");
                    unloadable.push((previous, error.to_string()));
                }
            }
        }
        // Nothing could be restored: put the history back as it was.
        for (version, _) in unloadable.iter().rev() {
            model.deployment.restore_history(version.clone());
        }
        if unloadable.is_empty() {
            return Err(ServingError::Conflict(format!(
                "{} has no previous champion to roll back to",
                model.name
            )));
        }
        let reasons: Vec<String> = unloadable
            .iter()
            .map(|(version, reason)| format!("{version}: {reason}"))
            .collect();
        Err(ServingError::Conflict(format!(
            "no previous champion of {} can be loaded ({}); the history is kept",
            model.name,
            reasons.join("; ")
        )))
    }

    /// Loads version directories that appeared since start (new models too) and applies each
    /// model's deploy policy to them.
    ///
    /// # Errors
    /// [`ServingError::State`], or a repository error as [`ServingError::Task`].
    pub async fn rescan(&self) -> Result<Vec<ScanOutcome>, ServingError> {
        let _change = self.changes.lock().await;
        let root = self.root.clone();
        let found = tokio::task::spawn_blocking(move || repository::discover(&root))
            .await
            .map_err(|e| ServingError::Task(e.to_string()))?
            .map_err(|e| ServingError::Task(e.to_string()))?;
        let mut outcomes = Vec::new();
        for model_dir in found {
            let known = self.models.load().get(&model_dir.name).cloned();
            let Some(model) = known else {
                let loader = self.loader.clone();
                let defaults = self.defaults;
                let name = model_dir.name.clone();
                let versions = model_dir.versions.clone();
                let state = tokio::task::spawn_blocking(move || {
                    new_model_state(name, versions, &loader, defaults)
                })
                .await
                .map_err(|e| ServingError::Task(e.to_string()))?;
                let state = Arc::new(state);
                first_deployment(&state);
                let champion = state.deployment.champion().map(|c| c.version.clone());
                for entry in state.versions() {
                    outcomes.push(outcome(
                        &state.name,
                        &entry,
                        if champion.as_deref() == Some(entry.version.as_str()) {
                            "champion"
                        } else {
                            "idle"
                        },
                    ));
                }
                self.models.rcu(|models| {
                    let mut models = BTreeMap::clone(models);
                    models.insert(model_dir.name.clone(), Arc::clone(&state));
                    models
                });
                self.record("rescan", "new model", &state, Before::nothing())
                    .await?;
                continue;
            };
            let present: Vec<String> = model.versions().into_iter().map(|v| v.version).collect();
            for dir in model_dir
                .versions
                .into_iter()
                .filter(|d| !present.contains(&d.version))
            {
                let loader = self.loader.clone();
                let entry = tokio::task::spawn_blocking(move || VersionEntry::load(dir, &loader))
                    .await
                    .map_err(|e| ServingError::Task(e.to_string()))?;
                model.with_versions(|versions| {
                    versions.push(entry.clone());
                    versions.sort_by(|a, b| compare_versions(&a.version, &b.version));
                });
                let before = Before::of(&model);
                let deployed_as = match entry.ready() {
                    Some(loaded) => self.apply_policy(&model, Arc::clone(loaded)),
                    None => "idle",
                };
                self.record(
                    "rescan",
                    &format!("new version {}: {deployed_as}", entry.version),
                    &model,
                    before,
                )
                .await?;
                outcomes.push(outcome(&model.name, &entry, deployed_as));
            }
        }
        Ok(outcomes)
    }

    /// Loads `version` (or retries every version that is not ready), as the repository
    /// extension's `load` asks.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], [`ServingError::UnknownVersion`],
    /// [`ServingError::Unavailable`] when a named version fails to load.
    pub async fn load_model(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelReport, ServingError> {
        let _change = self.changes.lock().await;
        let state = self.model(model)?;
        match version {
            Some(version) => {
                self.ensure_loaded(&state, version).await?;
            }
            None => {
                for entry in state.versions().iter().filter(|v| v.ready().is_none()) {
                    let _ = self.ensure_loaded(&state, &entry.version).await;
                }
            }
        }
        if state.deployment.champion().is_none()
            && let Some(champion) = state
                .versions()
                .iter()
                .rev()
                .find_map(|v| v.ready().cloned())
        {
            let before = Before::of(&state);
            state.deployment.set_champion_quietly(champion);
            self.record("admin", "load", &state, before).await?;
        }
        Ok(ModelReport::of(&state))
    }

    /// Unloads `version`. The champion and shadows are refused: they are serving.
    ///
    /// # Errors
    /// [`ServingError::Conflict`] for the champion, a shadow, or no version named.
    pub async fn unload_version(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelReport, ServingError> {
        let _change = self.changes.lock().await;
        let state = self.model(model)?;
        let champion = state.deployment.champion().map(|c| c.version.clone());
        let Some(version) = version else {
            return Err(ServingError::Conflict(format!(
                "unloading all of {model} would unload its champion {}; name one version \
                 with {{\"parameters\": {{\"version\": \"...\"}}}}",
                champion.unwrap_or_else(|| "(none)".into())
            )));
        };
        if champion.as_deref() == Some(version) {
            return Err(ServingError::Conflict(format!(
                "version {version} is the champion of {model}; promote another version first"
            )));
        }
        if state
            .deployment
            .shadows()
            .iter()
            .any(|s| s.version.version == version)
        {
            return Err(ServingError::Conflict(format!(
                "version {version} is a shadow of {model}; remove the shadow first"
            )));
        }
        if !state.versions().iter().any(|v| v.version == version) {
            return Err(ServingError::UnknownVersion {
                model: model.to_string(),
                version: version.to_string(),
            });
        }
        let before = Before::of(&state);
        state.with_versions(|versions| {
            if let Some(entry) = versions.iter_mut().find(|v| v.version == version) {
                entry.status = VersionStatus::Unloaded;
            }
        });
        self.record("admin", &format!("unload {version}"), &state, before)
            .await?;
        Ok(ModelReport::of(&state))
    }
}

/// A model's deployment before a change: as JSON for the audit log, and as a snapshot to put
/// back if the change cannot be saved.
#[derive(Clone)]
struct Before {
    value: Value,
    snapshot: Option<crate::serving::deployment::DeploymentSnapshot>,
}

impl Before {
    fn of(model: &ModelState) -> Before {
        Before {
            value: deployment_value(model),
            snapshot: Some(model.deployment.snapshot()),
        }
    }

    /// For a model that did not exist before the change.
    fn nothing() -> Before {
        Before {
            value: Value::Null,
            snapshot: None,
        }
    }
}

/// The first champion of a model the state does not know: the best validation version under the
/// `best_validation` policy, else the highest ready version (already set at load).
fn first_deployment(model: &ModelState) {
    if model.deployment.policy() == DeployPolicy::BestValidation
        && let Some(best) = best_validation(&model.versions()).and_then(|v| v.ready().cloned())
    {
        model.deployment.set_champion_quietly(best);
    }
}

fn outcome(model: &str, entry: &VersionEntry, deployed_as: &'static str) -> ScanOutcome {
    let (status, reason) = match &entry.status {
        VersionStatus::Ready(_) => ("ready", None),
        VersionStatus::Failed(reason) => ("failed", Some(reason.clone())),
        VersionStatus::Unloaded => ("unloaded", None),
    };
    ScanOutcome {
        model: model.to_string(),
        version: entry.version.clone(),
        status,
        reason,
        deployed_as: if status == "ready" {
            deployed_as
        } else {
            "idle"
        },
    }
}
