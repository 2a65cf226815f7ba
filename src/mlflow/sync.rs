//! The reconcile loop. Each round reads the followed models' aliases (one call for the tagged
//! models, or one per configured model); for a model whose followed aliases differ from those
//! last applied, it downloads the versions they name and proposes the deployment they describe
//! to the change path (actor `mlflow`, with the registry version, run and file hashes in the
//! audit entry). Whatever fails (registry out of reach, alias missing, download, load) is
//! recorded for the model, counted, and retried with backoff; nothing that is serving changes.
//!
//! The aliases last applied are kept in `<state>/mlflow/applied.json`: a deployment an operator
//! changed with `force` is left alone (and shown as drift) until the aliases move again, also
//! across restarts.

use super::client::{Client, MlflowError, RegisteredModel};
use super::fetch::{FetchError, VersionCache};
use super::webhook::{Delivery, DeliveryError, WebhookReceiver};
use super::{AliasRole, MlflowSettings};
use crate::clock;
use crate::metrics;
use crate::repository::{VersionDir, is_valid_name};
use crate::serving::{DeploymentState, Registry, ServingError, Target};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest wait between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Alias → version.
type Aliases = BTreeMap<String, String>;

/// Why the last sync of a model failed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SyncFailure {
    /// `unreachable`, `registry`, `missing_model`, `missing_alias`, `invalid_name`, `unusable`,
    /// `download`, `load`, `conflict` or `state`.
    pub reason: &'static str,
    /// What happened.
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
}

impl SyncFailure {
    fn new(reason: &'static str, message: impl Into<String>) -> SyncFailure {
        SyncFailure {
            reason,
            message: message.into(),
            at: clock::rfc3339_millis(clock::now_ms()),
        }
    }
}

impl From<MlflowError> for SyncFailure {
    fn from(error: MlflowError) -> SyncFailure {
        let reason = match &error {
            MlflowError::Unreachable { .. } => "unreachable",
            MlflowError::Refused { status: 404, .. } => "missing_model",
            MlflowError::Refused {
                code: Some(code), ..
            } if code == "RESOURCE_DOES_NOT_EXIST" => "missing_model",
            MlflowError::Refused { .. } | MlflowError::Invalid { .. } => "registry",
            MlflowError::Write { .. } => "download",
        };
        SyncFailure::new(reason, error.to_string())
    }
}

impl From<FetchError> for SyncFailure {
    fn from(error: FetchError) -> SyncFailure {
        match error {
            FetchError::Registry(MlflowError::Unreachable { .. }) => {
                SyncFailure::new("unreachable", error.to_string())
            }
            FetchError::Registry(_) | FetchError::Disk(_) => {
                SyncFailure::new("download", error.to_string())
            }
            FetchError::Unusable { .. } => SyncFailure::new("unusable", error.to_string()),
        }
    }
}

impl From<ServingError> for SyncFailure {
    fn from(error: ServingError) -> SyncFailure {
        let reason = match &error {
            ServingError::Conflict(_) => "conflict",
            ServingError::State(_) => "state",
            _ => "load",
        };
        SyncFailure::new(reason, error.to_string())
    }
}

/// What the last syncs of one model found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelSync {
    /// Every alias of the registered model, as last read.
    pub aliases: Aliases,
    /// The champion the followed aliases name.
    pub desired_champion: Option<String>,
    /// The shadows they name, with their fractions.
    pub desired_shadows: BTreeMap<String, f64>,
    /// When the model was last read and found served as the registry says (RFC 3339).
    pub last_sync: Option<String>,
    /// Why the last sync failed; cleared by the next one that succeeds.
    pub last_error: Option<SyncFailure>,
    /// Syncs that failed in a row.
    pub failures: u64,
}

/// A model's registry view, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncView {
    /// The registry.
    pub registry: &'static str,
    /// Its address.
    pub uri: String,
    /// What the syncs found.
    #[serde(flatten)]
    pub sync: ModelSync,
    /// True when the deployment is the one the aliases name.
    pub in_sync: bool,
    /// True when an operator's forced change differs from the aliases (until they move).
    pub drift: bool,
}

/// The reconcile loop's state and its handle for the API.
pub struct RegistrySync {
    settings: MlflowSettings,
    client: Client,
    registry: Arc<Registry>,
    cache: VersionCache,
    applied_file: PathBuf,
    applied: Mutex<BTreeMap<String, Aliases>>,
    status: Mutex<BTreeMap<String, ModelSync>>,
    wake: tokio::sync::Notify,
    receiver: Option<WebhookReceiver>,
}

impl std::fmt::Debug for RegistrySync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySync")
            .field("uri", &self.settings.uri)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RegistrySync {
    /// The sync of `settings` for `registry`, keeping its files under `dir` (`<state>/mlflow`).
    ///
    /// # Errors
    /// A message when the tracking URI is unusable.
    pub fn new(
        settings: MlflowSettings,
        registry: Arc<Registry>,
        dir: PathBuf,
    ) -> Result<RegistrySync, MlflowError> {
        let client = Client::new(&settings.uri, settings.credentials.clone())?;
        let applied_file = dir.join("applied.json");
        let applied = std::fs::read(&applied_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Ok(RegistrySync {
            receiver: settings.webhook_secret.as_deref().map(WebhookReceiver::new),
            cache: VersionCache::new(dir),
            settings,
            client,
            registry,
            applied_file,
            applied: Mutex::new(applied),
            status: Mutex::new(BTreeMap::new()),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// The directory downloaded versions are kept in (the registry restores them at start).
    pub fn versions_dir(dir: &std::path::Path) -> PathBuf {
        VersionCache::new(dir.to_path_buf()).models()
    }

    /// Runs the loop: a round at once, then one per poll interval, sooner after a failure
    /// (backoff from 1 s, capped at 30 s and at the poll interval) or when woken.
    pub async fn run(self: Arc<Self>) {
        let mut failed_rounds: u32 = 0;
        loop {
            let ok = self.round().await;
            failed_rounds = if ok {
                0
            } else {
                failed_rounds.saturating_add(1)
            };
            let wait = if ok {
                self.settings.poll
            } else {
                backoff(failed_rounds).min(self.settings.poll)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Makes the loop start a round now (or right after the current one).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Checks a webhook delivery and, when it is genuine and new, wakes the loop.
    ///
    /// # Errors
    /// `None` when no webhook secret is configured (webhooks are off); else the
    /// [`DeliveryError`] of a refused delivery.
    pub fn receive(
        &self,
        delivery: Delivery<'_>,
        body: &[u8],
    ) -> Option<Result<(), DeliveryError>> {
        let receiver = self.receiver.as_ref()?;
        let result = receiver.accept(delivery, body, clock::now_ms() / 1000);
        if result.is_ok() {
            self.wake();
        }
        Some(result)
    }

    /// The registry view of `model`, when it is followed; `state` is its deployment.
    pub fn view(&self, model: &str, state: Option<&DeploymentState>) -> Option<SyncView> {
        let sync = lock(&self.status).get(model).cloned()?;
        let in_sync = match (&sync.desired_champion, state) {
            (Some(champion), Some(state)) => Target {
                champion: champion.clone(),
                shadows: sync.desired_shadows.clone(),
            }
            .is_served_by(state),
            _ => false,
        };
        let applied = lock(&self.applied).get(model).cloned();
        let drift = !in_sync
            && state.is_some()
            && applied.is_some_and(|applied| applied == self.followed(&sync.aliases));
        Some(SyncView {
            registry: "mlflow",
            uri: self.settings.uri.clone(),
            sync,
            in_sync,
            drift,
        })
    }

    /// Every followed model's name.
    pub fn models(&self) -> Vec<String> {
        lock(&self.status).keys().cloned().collect()
    }

    /// One round over every followed model; true when all synced.
    async fn round(&self) -> bool {
        let listed: Vec<(String, Result<RegisteredModel, SyncFailure>)> = if self
            .settings
            .models
            .is_empty()
        {
            match self.client.tagged_models().await {
                Ok(models) => {
                    let names: BTreeSet<String> = models.iter().map(|m| m.name.clone()).collect();
                    let mut listed: Vec<_> = models
                        .into_iter()
                        .map(|m| (m.name.clone(), Ok(m)))
                        .collect();
                    for gone in self.known().into_iter().filter(|m| !names.contains(m)) {
                        listed.push((
                                gone,
                                Err(SyncFailure::new(
                                    "missing_model",
                                    "the registry no longer lists this model with the tag vigil.serve = true; what was last applied keeps serving",
                                )),
                            ));
                    }
                    listed
                }
                Err(error) => {
                    let failure = SyncFailure::from(error);
                    tracing::warn!(error = %failure.message, "registry sync failed");
                    for model in self.known() {
                        self.failed(&model, failure.clone());
                    }
                    return false;
                }
            }
        } else {
            let mut listed = Vec::new();
            for name in &self.settings.models {
                let found = self
                    .client
                    .registered_model(name)
                    .await
                    .map_err(SyncFailure::from);
                listed.push((name.clone(), found));
            }
            listed
        };
        let mut ok = true;
        for (name, found) in listed {
            let result = match found {
                Ok(model) => self.reconcile(model).await,
                Err(failure) => Err(failure),
            };
            match result {
                Ok(()) => self.succeeded(&name),
                Err(failure) => {
                    ok = false;
                    self.failed(&name, failure);
                }
            }
        }
        ok
    }

    /// Models followed so far: those with a status, and registry models being served.
    fn known(&self) -> BTreeSet<String> {
        let mut known: BTreeSet<String> = lock(&self.status).keys().cloned().collect();
        known.extend(
            self.registry
                .models()
                .iter()
                .filter(|m| self.registry.follows_registry(&m.name))
                .map(|m| m.name.clone()),
        );
        known
    }

    /// The aliases among `aliases` that have a role.
    fn followed(&self, aliases: &Aliases) -> Aliases {
        aliases
            .iter()
            .filter(|(alias, _)| self.settings.aliases.contains_key(*alias))
            .map(|(a, v)| (a.clone(), v.clone()))
            .collect()
    }

    /// Brings one model to what its aliases say, when they moved since last applied.
    async fn reconcile(&self, found: RegisteredModel) -> Result<(), SyncFailure> {
        let name = found.name.clone();
        let aliases: Aliases = found
            .aliases
            .into_iter()
            .map(|a| (a.alias, a.version))
            .collect();
        let followed = self.followed(&aliases);
        let target = self.target(&name, &followed);
        {
            let mut status = lock(&self.status);
            let entry = status.entry(name.clone()).or_default();
            entry.aliases = aliases;
            if let Ok(target) = &target {
                entry.desired_champion = Some(target.champion.clone());
                entry.desired_shadows = target.shadows.clone();
            }
        }
        if !is_valid_name(&name) {
            return Err(SyncFailure::new(
                "invalid_name",
                format!(
                    "vigil serves models named [A-Za-z0-9][A-Za-z0-9_.-]*; rename the registered model {name:?} to serve it"
                ),
            ));
        }
        let target = target?;
        let served = self.registry.deployment(&name).ok();
        if served.is_some() && !self.registry.follows_registry(&name) {
            return Err(ServingError::Conflict(format!(
                "the model repository serves a model named {name}; the registry's model of that name is not served"
            ))
            .into());
        }
        let applied = lock(&self.applied).get(&name) == Some(&followed);
        if let Some(state) = &served
            && (applied || target.is_served_by(state))
        {
            if !applied {
                self.remember(&name, followed).await?;
            }
            return Ok(());
        }
        let mut dirs = Vec::new();
        for version in target.versions() {
            if served.as_ref().is_some_and(|s| s.entry(version).is_some()) {
                continue;
            }
            dirs.push(self.cache.fetch(&self.client, &name, version).await?);
        }
        let evidence = self.evidence(&name, &followed, &target, &dirs, served.as_deref());
        let next = self.registry.follow(&name, &target, dirs, evidence).await?;
        tracing::info!(model = %name, revision = next.revision, champion = %target.champion, "deployment follows the registry");
        self.remember(&name, followed).await
    }

    /// The deployment the followed aliases name.
    fn target(&self, name: &str, followed: &Aliases) -> Result<Target, SyncFailure> {
        let mut champion = None;
        let mut shadows = BTreeMap::new();
        for (alias, role) in &self.settings.aliases {
            let Some(version) = followed.get(alias) else {
                continue;
            };
            match role {
                AliasRole::Champion => champion = Some(version.clone()),
                AliasRole::Shadow(fraction) => {
                    let slot = shadows.entry(version.clone()).or_insert(*fraction);
                    *slot = slot.max(*fraction);
                }
            }
        }
        let champion = champion.ok_or_else(|| {
            let alias = self
                .settings
                .aliases
                .iter()
                .find(|(_, role)| **role == AliasRole::Champion)
                .map_or("champion", |(alias, _)| alias.as_str());
            SyncFailure::new(
                "missing_alias",
                format!("registered model {name} has no alias {alias} (deleting a version removes its aliases); what was last applied keeps serving"),
            )
        })?;
        shadows.remove(&champion);
        Ok(Target { champion, shadows })
    }

    /// What the audit entry records of a registry change: the aliases, and per version its
    /// run and the hashes of its files.
    fn evidence(
        &self,
        name: &str,
        followed: &Aliases,
        target: &Target,
        dirs: &[VersionDir],
        served: Option<&DeploymentState>,
    ) -> serde_json::Value {
        let versions: Vec<serde_json::Value> = target
            .versions()
            .map(|version| {
                let source = dirs
                    .iter()
                    .find(|d| d.version == version)
                    .and_then(|d| d.read_metadata().ok())
                    .or_else(|| {
                        served
                            .and_then(|s| s.entry(version))
                            .and_then(|e| e.metadata.clone())
                    })
                    .and_then(|m| m.source);
                json!({
                    "version": version,
                    "run_id": source.as_ref().and_then(|s| s.run_id.clone()),
                    "artifact_uri": source.as_ref().map(|s| s.artifact_uri.clone()),
                    "files": source.map(|s| s.files).unwrap_or_default(),
                })
            })
            .collect();
        json!({
            "registry": "mlflow",
            "uri": self.settings.uri,
            "registered_model": name,
            "aliases": followed,
            "versions": versions,
        })
    }

    /// Records `followed` as applied for `name`, durably.
    async fn remember(&self, name: &str, followed: Aliases) -> Result<(), SyncFailure> {
        let snapshot = {
            let mut applied = lock(&self.applied);
            applied.insert(name.to_string(), followed);
            applied.clone()
        };
        let path = self.applied_file.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &snapshot))
            .await
            .map_err(|e| SyncFailure::new("state", e.to_string()))?
            .map_err(|e| SyncFailure::new("state", e))
    }

    fn succeeded(&self, name: &str) {
        let now = clock::now_ms();
        let mut status = lock(&self.status);
        let entry = status.entry(name.to_string()).or_default();
        entry.last_sync = Some(clock::rfc3339_millis(now));
        entry.last_error = None;
        entry.failures = 0;
        self.registry
            .metrics()
            .gauge(metrics::REGISTRY_LAST_SYNC, &[("model", name)])
            .set(now as f64 / 1000.0);
    }

    fn failed(&self, name: &str, failure: SyncFailure) {
        tracing::warn!(model = %name, reason = failure.reason, error = %failure.message, "registry sync failed; serving what was last applied");
        self.registry
            .metrics()
            .counter(
                metrics::REGISTRY_SYNC_ERRORS,
                &[("model", name), ("reason", failure.reason)],
            )
            .increment(1);
        let mut status = lock(&self.status);
        let entry = status.entry(name.to_string()).or_default();
        entry.last_error = Some(failure);
        entry.failures += 1;
    }
}

/// Wait before retry `failed_rounds` (≥ 1): 1 s, 2 s, 4 s, … capped at [`MAX_BACKOFF`].
fn backoff(failed_rounds: u32) -> Duration {
    let exponent = failed_rounds.saturating_sub(1).min(5);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

/// Writes `value` as JSON to `path`, atomically.
fn write_atomically(path: &std::path::Path, value: &impl Serialize) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    crate::store::write_atomically(path, &bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_thirty() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
