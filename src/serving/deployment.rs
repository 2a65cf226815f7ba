//! A model's deployment: its champion (one atomic pointer, swapped whole), its shadows (a set
//! swapped whole), its confidence threshold, its deploy policy and the champion history.
//!
//! Readers on the request path take the champion and the shadow set with one atomic load each and
//! keep those for the whole request, so in-flight requests finish on the version they started
//! with. Writers (admin changes) are serialised by the registry; each change is one store.

use super::LoadedVersion;
use super::mirror::Shadow;
use arc_swap::{ArcSwap, ArcSwapOption};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Everything a deployment holds, taken before a change so that the change can be undone when it
/// cannot be made durable.
#[derive(Debug, Clone)]
pub struct DeploymentSnapshot {
    champion: Option<Arc<LoadedVersion>>,
    shadows: Arc<Vec<Arc<Shadow>>>,
    threshold: f64,
    policy: DeployPolicy,
    history: Vec<String>,
}

/// Most previous champions remembered for rollback.
const HISTORY_LIMIT: usize = 100;

/// The live deployment of one model.
#[derive(Debug)]
pub struct Deployment {
    champion: ArcSwapOption<LoadedVersion>,
    shadows: ArcSwap<Vec<Arc<Shadow>>>,
    threshold: AtomicU64,
    policy: Mutex<DeployPolicy>,
    history: Mutex<Vec<String>>,
}

impl Deployment {
    /// A deployment with no champion yet.
    pub fn new(threshold: f64, policy: DeployPolicy) -> Deployment {
        Deployment {
            champion: ArcSwapOption::empty(),
            shadows: ArcSwap::from_pointee(Vec::new()),
            threshold: AtomicU64::new(threshold.to_bits()),
            policy: Mutex::new(policy),
            history: Mutex::new(Vec::new()),
        }
    }

    /// The whole deployment as it is now.
    pub fn snapshot(&self) -> DeploymentSnapshot {
        DeploymentSnapshot {
            champion: self.champion(),
            shadows: self.shadows(),
            threshold: self.threshold(),
            policy: self.policy(),
            history: self.history(),
        }
    }

    /// Puts back a snapshot taken earlier (each part is one store).
    pub fn restore(&self, snapshot: DeploymentSnapshot) {
        self.champion.store(snapshot.champion);
        self.shadows.store(snapshot.shadows);
        self.set_threshold(snapshot.threshold);
        self.set_policy(snapshot.policy);
        self.set_history(snapshot.history);
    }

    /// The current champion (one atomic load).
    pub fn champion(&self) -> Option<Arc<LoadedVersion>> {
        self.champion.load_full()
    }

    /// Publishes `version` as champion and returns the previous one. Infallible: the version was
    /// loaded and warmed before. The previous champion goes to the history.
    pub fn promote(&self, version: Arc<LoadedVersion>) -> Option<Arc<LoadedVersion>> {
        let previous = self.champion.swap(Some(version));
        if let Some(previous) = &previous {
            self.push_history(previous.version.clone());
        }
        previous
    }

    /// Publishes `version` without touching the history (start-up and rollback).
    pub fn set_champion_quietly(&self, version: Arc<LoadedVersion>) {
        self.champion.store(Some(version));
    }

    /// The shadow set (one atomic load).
    pub fn shadows(&self) -> Arc<Vec<Arc<Shadow>>> {
        self.shadows.load_full()
    }

    /// True when at least one shadow is deployed (cheap check for the request path).
    pub fn has_shadows(&self) -> bool {
        !self.shadows.load().is_empty()
    }

    /// Replaces the shadow set.
    pub fn set_shadows(&self, shadows: Vec<Arc<Shadow>>) {
        self.shadows.store(Arc::new(shadows));
    }

    /// The confidence threshold (0 accepts everything).
    pub fn threshold(&self) -> f64 {
        f64::from_bits(self.threshold.load(Ordering::Relaxed))
    }

    /// Sets the threshold.
    pub fn set_threshold(&self, threshold: f64) {
        self.threshold.store(threshold.to_bits(), Ordering::Relaxed);
    }

    /// The deploy policy for new versions.
    pub fn policy(&self) -> DeployPolicy {
        self.policy.lock().map_or(DeployPolicy::Manual, |p| *p)
    }

    /// Sets the deploy policy.
    pub fn set_policy(&self, policy: DeployPolicy) {
        if let Ok(mut current) = self.policy.lock() {
            *current = policy;
        }
    }

    /// Previous champions, oldest first.
    pub fn history(&self) -> Vec<String> {
        self.history.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Replaces the history (state restore).
    pub fn set_history(&self, history: Vec<String>) {
        if let Ok(mut current) = self.history.lock() {
            *current = history;
        }
    }

    fn push_history(&self, version: String) {
        if let Ok(mut history) = self.history.lock() {
            history.push(version);
            if history.len() > HISTORY_LIMIT {
                let excess = history.len() - HISTORY_LIMIT;
                history.drain(..excess);
            }
        }
    }

    /// Takes the most recent previous champion off the history.
    pub fn pop_history(&self) -> Option<String> {
        self.history.lock().ok()?.pop()
    }

    /// Puts a version back on top of the history (when a rollback cannot complete).
    pub fn restore_history(&self, version: String) {
        self.push_history(version);
    }
}
