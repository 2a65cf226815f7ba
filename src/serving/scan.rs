//! Versions found in the repository, at start and on rescan, and how each model's deployment
//! takes them: a saved deployment is restored (a restart is not a change), a model the state
//! does not know gets its first deployment, and a version added later gets the deploy policy.
//! Everything that changes a deployment goes through the one change path (`commit.rs`).

use super::deployment::{DeploymentState, VersionRole, restore};
use super::entry::VersionEntry;
use super::mirror::Mirror;
use super::plan::{Change, needs_mirror};
use super::{
    LoadContext, ModelSource, ModelState, MonitoringHistory, Pressure, Registry, RegistrySettings,
    ServingError,
};
use crate::repository::{self, ModelDir, VersionDir};
use crate::store::{Actor, DeploymentStore, StoreError};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What a rescan found, and what the deploy policy did with it.
#[derive(Debug, Clone, Serialize)]
pub struct ScanOutcome {
    /// Model name.
    pub model: String,
    /// Version name.
    pub version: String,
    /// `ready`, `failed` or `unloaded`.
    pub status: &'static str,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its role after the rescan.
    pub deployed_as: VersionRole,
}

impl Registry {
    /// Discovers and loads every version under `root` (on the blocking pool), then brings back
    /// each model's saved deployment from `store`, gives models it does not know their first
    /// deployment, and applies the deploy policy to versions added since. A version that fails
    /// to load is kept with its reason; it does not stop the others.
    ///
    /// # Errors
    /// [`ServingError::Repository`] when `root` cannot be read, [`ServingError::State`] when a
    /// saved deployment cannot be read or a start-up change cannot be saved.
    pub async fn start(
        root: &Path,
        loader: LoadContext,
        settings: RegistrySettings,
        store: Option<Arc<dyn DeploymentStore>>,
    ) -> Result<Registry, ServingError> {
        let registry = Registry {
            root: root.to_path_buf(),
            registry_versions: settings.registry_versions,
            admission: settings.admission,
            pressure: Pressure::start(settings.admission.shed_delay),
            loader,
            options: settings.options,
            mirror: settings.mirror,
            defaults: settings.defaults,
            models: ArcSwap::from_pointee(BTreeMap::new()),
            rescans: tokio::sync::Mutex::new(()),
            store,
            log: settings.log,
            feedback: settings.feedback,
            history: MonitoringHistory::new(settings.history),
        };
        for model in registry.discover().await? {
            let versions = registry.load_all(model.versions).await?;
            match registry.saved(&model.name).await? {
                Some(saved) => {
                    registry
                        .resume(&model.name, &saved, versions, ModelSource::Repository)
                        .await?;
                }
                None => {
                    let first = registry
                        .first_deployment(&model.name, versions.clone(), Actor::Startup)
                        .await;
                    if let Err(ServingError::State(StoreError::Conflict { .. })) = first {
                        // A replica sharing the store deployed it first: serve what it saved.
                        let saved = registry.saved(&model.name).await?.ok_or_else(|| {
                            StoreError::Conflict {
                                model: model.name.clone(),
                                current: 0,
                            }
                        })?;
                        registry
                            .resume(&model.name, &saved, versions, ModelSource::Repository)
                            .await?;
                    } else {
                        first?;
                    }
                }
            }
        }
        registry.restore_registry_models().await?;
        Ok(registry)
    }

    /// Brings back the saved deployments of models followed from a model registry, over the
    /// versions downloaded before, so they serve at once (even while the registry is out of
    /// reach). A model whose name the repository also has is left to the repository; one the
    /// state does not know waits for the registry.
    async fn restore_registry_models(&self) -> Result<(), ServingError> {
        let Some(dir) = self.registry_versions.clone() else {
            return Ok(());
        };
        if !dir.is_dir() {
            return Ok(());
        }
        let found = tokio::task::spawn_blocking(move || repository::discover(&dir))
            .await
            .map_err(|e| ServingError::interrupted("reading downloaded registry versions", &e))?
            .map_err(ServingError::Repository)?;
        for model in found {
            if self.model(&model.name).is_ok() {
                tracing::warn!(model = %model.name, "the repository has a model of this name; the registry's is not served");
                continue;
            }
            let Some(saved) = self.saved(&model.name).await? else {
                continue;
            };
            let versions = self.load_all(model.versions).await?;
            self.resume(&model.name, &saved, versions, ModelSource::Registry)
                .await?;
        }
        Ok(())
    }

    /// The saved deployment of `model`, when there is a store and it knows the model.
    async fn saved(
        &self,
        model: &str,
    ) -> Result<Option<crate::store::DeploymentRecord>, ServingError> {
        match &self.store {
            Some(store) => Ok(store.load(model).await?),
            None => Ok(None),
        }
    }

    /// Loads version directories that appeared since start (new models too) and applies each
    /// model's deploy policy to them.
    ///
    /// # Errors
    /// [`ServingError::Repository`] when the repository cannot be read,
    /// [`ServingError::State`] when a change cannot be saved.
    pub async fn rescan(&self) -> Result<Vec<ScanOutcome>, ServingError> {
        let _rescan = self.rescans.lock().await;
        let mut outcomes = Vec::new();
        for found in self.discover().await? {
            if let Ok(model) = self.model(&found.name)
                && model.source == ModelSource::Registry
            {
                tracing::warn!(model = %found.name, "a registry model of this name is served; the repository's is not");
                continue;
            }
            let Ok(model) = self.model(&found.name) else {
                let versions = self.load_all(found.versions).await?;
                let state = self
                    .first_deployment(&found.name, versions, Actor::Rescan)
                    .await?;
                outcomes.extend(state.versions.iter().map(|v| outcome(&state, v)));
                continue;
            };
            let known = model.deployment();
            for dir in found
                .versions
                .into_iter()
                .filter(|d| known.entry(&d.version).is_none())
            {
                let version = dir.version.clone();
                let state = self
                    .add_version(Arc::clone(&model), dir, Actor::Rescan)
                    .await?;
                if let Some(entry) = state.entry(&version) {
                    outcomes.push(outcome(&state, entry));
                }
            }
        }
        Ok(outcomes)
    }

    /// The repository's models and version directories, read on the blocking pool.
    async fn discover(&self) -> Result<Vec<ModelDir>, ServingError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || repository::discover(&root))
            .await
            .map_err(|e| ServingError::interrupted("reading the repository", &e))?
            .map_err(ServingError::Repository)
    }

    /// Loads and warms `dirs` on the blocking pool.
    pub(super) async fn load_all(
        &self,
        dirs: Vec<VersionDir>,
    ) -> Result<Vec<VersionEntry>, ServingError> {
        let loader = self.loader.clone();
        tokio::task::spawn_blocking(move || {
            dirs.into_iter()
                .map(|dir| VersionEntry::load(dir, &loader))
                .collect()
        })
        .await
        .map_err(|e| ServingError::interrupted("loading versions", &e))
    }

    /// A model's first deployment over `versions`, saved and audited, then added to the map.
    async fn first_deployment(
        &self,
        name: &str,
        versions: Vec<VersionEntry>,
        actor: Actor,
    ) -> Result<Arc<DeploymentState>, ServingError> {
        let empty = DeploymentState::empty(name, self.defaults.threshold, self.defaults.policy);
        let model = Arc::new(ModelState::new(
            empty,
            ModelSource::Repository,
            &self.admission,
            self.metrics(),
        ));
        let pending = self.begin(Arc::clone(&model), None).await?;
        let state = self
            .finish(pending, Change::Deploy(versions), actor)
            .await?;
        self.insert(model);
        Ok(state)
    }

    /// Brings back a saved deployment over the versions found now: unchanged (same revision)
    /// when everything it names is available, else with the substitutions saved as one
    /// start-up change; then, for repository models, the deploy policy for each version added
    /// since (a registry model's versions come only with its aliases).
    async fn resume(
        &self,
        name: &str,
        saved: &crate::store::DeploymentRecord,
        versions: Vec<VersionEntry>,
        source: ModelSource,
    ) -> Result<(), ServingError> {
        let (known, added): (Vec<_>, Vec<_>) = versions
            .into_iter()
            .partition(|v| saved.known_versions.contains(&v.version));
        let mirrors: Vec<Arc<Mirror>> = saved
            .shadows
            .keys()
            .filter_map(|shadow| known.iter().find(|v| &v.version == shadow))
            .filter_map(|entry| entry.ready().cloned())
            .map(|loaded| self.new_mirror(loaded, None))
            .collect();
        let restored = restore(name, saved, known, &mirrors);
        let model = Arc::new(ModelState::new(
            restored.state.clone(),
            source,
            &self.admission,
            self.metrics(),
        ));
        self.announce(&restored.state).await;
        if !restored.substitutions.is_empty() {
            let pending = self.begin(Arc::clone(&model), None).await?;
            self.publish(
                pending,
                restored.state,
                Some(saved.clone()),
                Actor::Startup,
                restored.substitutions.join("; "),
                None,
            )
            .await?;
        }
        for entry in added
            .into_iter()
            .filter(|_| source == ModelSource::Repository)
        {
            self.add_version_entry(Arc::clone(&model), entry, Actor::Policy)
                .await?;
        }
        self.insert(model);
        Ok(())
    }

    /// Loads `dir` and adds it to `model` as the deploy policy says.
    async fn add_version(
        &self,
        model: Arc<ModelState>,
        dir: VersionDir,
        actor: Actor,
    ) -> Result<Arc<DeploymentState>, ServingError> {
        let entry = self.load_all(vec![dir]).await?.pop();
        let Some(entry) = entry else {
            return Ok(model.deployment());
        };
        self.add_version_entry(model, entry, actor).await
    }

    /// Adds a loaded `entry` to `model` as the deploy policy says (starting its mirror when the
    /// policy makes it a shadow).
    async fn add_version_entry(
        &self,
        model: Arc<ModelState>,
        entry: VersionEntry,
        actor: Actor,
    ) -> Result<Arc<DeploymentState>, ServingError> {
        let pending = self.begin(model, None).await?;
        let mirror = needs_mirror(&pending.current, &entry)
            .then(|| entry.ready().cloned())
            .flatten()
            .map(|loaded| self.new_mirror(loaded, None));
        self.finish(
            pending,
            Change::AddVersion {
                entry: Box::new(entry),
                mirror,
            },
            actor,
        )
        .await
    }

    /// Adds (or replaces) a model in the map requests are routed by.
    pub(super) fn insert(&self, model: Arc<ModelState>) {
        self.models.rcu(|models| {
            let mut models = BTreeMap::clone(models);
            models.insert(model.name.clone(), Arc::clone(&model));
            models
        });
    }
}

fn outcome(state: &DeploymentState, entry: &VersionEntry) -> ScanOutcome {
    ScanOutcome {
        model: state.model.clone(),
        version: entry.version.clone(),
        status: entry.status.label(),
        reason: entry.status.reason().map(str::to_string),
        deployed_as: state.role(&entry.version),
    }
}
