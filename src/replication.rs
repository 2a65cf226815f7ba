//! Replicas sharing one PostgreSQL database: this replica follows the deployments the others
//! save (pushed by `LISTEN`/`NOTIFY`, and a poll every `state_poll_secs` for notifications that
//! were lost), and records what it serves (its id, address, per-model revision and any error
//! applying a change, a heartbeat) for `GET /admin/replicas`.

use crate::serving::Registry;
use crate::store::{DatabaseSettings, PostgresStore, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A replica is listed as alive while its last heartbeat is younger than this many polls.
const ALIVE_POLLS: u32 = 3;
/// Replicas whose last heartbeat is older than this are no longer listed (and are removed).
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// The longest pause between attempts to listen again after the connection was lost.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one replica serves of one model.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ServedModel {
    /// The revision served.
    pub revision: u64,
    /// The champion served.
    pub champion: Option<String>,
    /// Why the newest saved change could not be applied here (the previous one serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One replica of the fleet, as `GET /admin/replicas` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaView {
    /// Unique per process.
    pub id: String,
    /// Where it is reached.
    pub address: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_seconds: f64,
    /// True while it reports in (its heartbeat is younger than three polls).
    pub alive: bool,
    /// Per model: what it serves and how many revisions it is behind the saved one.
    pub models: BTreeMap<String, ReplicaModel>,
}

/// One model on one replica.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaModel {
    /// What it serves.
    #[serde(flatten)]
    pub served: ServedModel,
    /// Revisions behind the saved deployment (0 when up to date).
    pub lag: u64,
}

/// The fleet.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    /// The id of the replica that answered.
    pub replica: String,
    /// Every model's saved revision.
    pub saved: BTreeMap<String, u64>,
    /// Every replica heard from within the last hour, this one first.
    pub replicas: Vec<ReplicaView>,
}

/// Stops a background task when its owner ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This replica's part in the fleet.
pub struct Replication {
    registry: Arc<Registry>,
    store: PostgresStore,
    id: String,
    address: String,
    poll: Duration,
    notifications: bool,
    /// Why a model's newest saved change could not be applied here.
    errors: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("id", &self.id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// A replica id unique per process: host name, process id and a random suffix.
fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vigil".into());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

impl Replication {
    /// This replica, reached at `address`, following the store's deployments into `registry`.
    pub fn new(
        registry: Arc<Registry>,
        store: PostgresStore,
        settings: &DatabaseSettings,
        address: String,
    ) -> Arc<Replication> {
        Arc::new(Replication {
            registry,
            store,
            id: replica_id(),
            address: settings.advertise_address.clone().unwrap_or(address),
            poll: settings.poll,
            notifications: settings.notifications,
            errors: Mutex::new(BTreeMap::new()),
        })
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Follows the store until the task is aborted: applies every change it is told of, checks
    /// all models every poll interval, and reports in.
    pub async fn run(self: Arc<Replication>) {
        let (changed, mut changes) = mpsc::unbounded_channel::<Option<String>>();
        let _listener = self
            .notifications
            .then(|| AbortOnDrop(tokio::spawn(Arc::clone(&self).listen(changed))));
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    self.follow_all().await;
                    self.report().await;
                }
                Some(change) = changes.recv() => match change {
                    Some(model) => {
                        self.follow(&model).await;
                        self.report().await;
                    }
                    None => self.follow_all().await,
                },
            }
        }
    }

    /// Applies the saved deployment of every model newer than the one served.
    async fn follow_all(&self) {
        let saved = match self.store.revisions().await {
            Ok(saved) => saved,
            Err(error) => {
                tracing::warn!(%error, "cannot read the saved deployments; serving the last applied");
                return;
            }
        };
        for (model, revision) in saved {
            let served = self.registry.deployment(&model).map(|d| d.revision);
            if served.is_ok_and(|served| served < revision) {
                self.follow(&model).await;
            }
        }
    }

    /// Applies the saved deployment of `model` when it is newer; remembers why not otherwise.
    async fn follow(&self, model: &str) {
        let outcome = self.registry.catch_up(model).await;
        let Ok(mut errors) = self.errors.lock() else {
            return;
        };
        match outcome {
            Ok(_) => {
                errors.remove(model);
            }
            Err(error) => {
                tracing::warn!(model, %error, "a change saved by another replica cannot be applied here");
                errors.insert(model.to_string(), error.to_string());
            }
        }
    }

    /// Listens for change notifications on a connection of its own; after every (re)connection
    /// asks for all models to be checked, since notifications sent meanwhile are lost.
    async fn listen(self: Arc<Replication>, changed: mpsc::UnboundedSender<Option<String>>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Ok(mut notifications) = self.store.notifications().await {
                backoff = Duration::from_millis(100);
                if changed.send(None).is_err() {
                    return;
                }
                while let Some(model) = notifications.next().await {
                    if changed.send(Some(model)).is_err() {
                        return;
                    }
                }
                tracing::warn!("lost the database's change notifications; listening again");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// What this replica serves now, per model.
    fn served(&self) -> BTreeMap<String, ServedModel> {
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        self.registry
            .models()
            .into_iter()
            .map(|model| {
                let deployment = model.deployment();
                (
                    model.name.clone(),
                    ServedModel {
                        revision: deployment.revision,
                        champion: deployment.champion.as_ref().map(|c| c.version.to_string()),
                        error: errors.get(&model.name).cloned(),
                    },
                )
            })
            .collect()
    }

    /// Records this replica's heartbeat and what it serves; forgets replicas long gone.
    async fn report(&self) {
        if let Err(error) = self.write_report().await {
            tracing::warn!(%error, "cannot report this replica to the database");
        }
    }

    async fn write_report(&self) -> Result<(), StoreError> {
        let served = serde_json::to_value(self.served()).map_err(|e| StoreError::Database {
            path: self.store.name().to_string(),
            reason: e.to_string(),
        })?;
        self.store
            .report_replica(&self.id, &self.address, &served, FORGET_AFTER)
            .await
    }

    /// Every replica heard from recently, with lag against the saved deployments.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn fleet(&self) -> Result<FleetView, StoreError> {
        self.report().await;
        let saved = self.store.revisions().await?;
        let alive_within = self.poll.as_secs_f64() * f64::from(ALIVE_POLLS);
        let mut replicas: Vec<ReplicaView> = self
            .store
            .replicas(FORGET_AFTER)
            .await?
            .into_iter()
            .map(|row| {
                let served: BTreeMap<String, ServedModel> =
                    serde_json::from_value(row.served).unwrap_or_default();
                ReplicaView {
                    alive: row.heartbeat_age_seconds <= alive_within,
                    models: served
                        .into_iter()
                        .map(|(model, served)| {
                            let lag = saved
                                .get(&model)
                                .map_or(0, |s| s.saturating_sub(served.revision));
                            (model, ReplicaModel { served, lag })
                        })
                        .collect(),
                    id: row.id,
                    address: row.address,
                    started_at: row.started_at,
                    heartbeat_age_seconds: row.heartbeat_age_seconds,
                }
            })
            .collect();
        replicas.sort_by_key(|r| r.id != self.id);
        Ok(FleetView {
            replica: self.id.clone(),
            saved,
            replicas,
        })
    }
}
