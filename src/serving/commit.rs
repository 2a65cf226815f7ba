//! The one change path every writer uses (admin API, start-up, deploy policy, rescan):
//!
//! 1. **begin**: take the model's change lock (changes to one model are serialised; other
//!    models do not wait) and check the caller's expected revision (`If-Match`);
//! 2. **prepare** (the writer, in `changes.rs`): load and warm what the change needs, on the
//!    blocking pool, and start shadow mirrors;
//! 3. **plan**: the pure [`plan`];
//! 4. **save**: the audit entry and the state file, on the blocking pool;
//! 5. **publish**: one `ArcSwap` store, which cannot fail.
//!
//! A change that is refused, or cannot be saved, is never published and uses no revision.

use super::deployment::DeploymentState;
use super::plan::{Change, plan};
use super::report::ModelReport;
use super::{ModelState, Registry, ServingError};
use crate::store::{Actor, AuditEntry, DeploymentRecord};
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;

/// The right to change one model's deployment, and the deployment the change starts from.
pub(super) struct Pending {
    /// The model being changed.
    pub model: Arc<ModelState>,
    /// Its deployment when the change began; nothing else can change it meanwhile.
    pub current: Arc<DeploymentState>,
    _lock: OwnedMutexGuard<()>,
}

impl Registry {
    /// Step 1: waits for the model's earlier changes to finish, then checks `expected` (the
    /// revision the caller last saw) against the current one.
    ///
    /// # Errors
    /// [`ServingError::Stale`] with the current deployment when `expected` is not current.
    pub(super) async fn begin(
        &self,
        model: Arc<ModelState>,
        expected: Option<u64>,
    ) -> Result<Pending, ServingError> {
        let lock = Arc::clone(&model.changes).lock_owned().await;
        let current = model.deployment.load_full();
        if let Some(expected) = expected
            && expected != current.revision
        {
            return Err(ServingError::Stale {
                expected,
                current: Box::new(ModelReport::of(&current)),
            });
        }
        Ok(Pending {
            model,
            current,
            _lock: lock,
        })
    }

    /// Steps 3–5: plans `change`, saves it, publishes it. A change that leads back to the same
    /// deployment is answered with the current one and neither saved nor counted.
    ///
    /// # Errors
    /// The refusals of [`plan`]; [`ServingError::State`] naming the file when the change cannot
    /// be saved (it is then not published).
    pub(super) async fn finish(
        &self,
        pending: Pending,
        change: Change,
        actor: Actor,
    ) -> Result<Arc<DeploymentState>, ServingError> {
        self.finish_on(pending, change, actor, None).await
    }

    /// [`Registry::finish`], with what the change was decided on (recorded in its audit entry).
    pub(super) async fn finish_on(
        &self,
        pending: Pending,
        change: Change,
        actor: Actor,
        evidence: Option<serde_json::Value>,
    ) -> Result<Arc<DeploymentState>, ServingError> {
        let next = plan(&pending.current, &change)?;
        if next.is_same_as(&pending.current) {
            return Ok(pending.current);
        }
        let before = (!matches!(change, Change::Deploy(_))).then(|| pending.current.record());
        let action = change.action(&next);
        self.publish(pending, next, before, actor, action, evidence)
            .await
    }

    /// The newest `limit` audited changes of `model`, newest first (none without a state
    /// directory).
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`], or [`ServingError::State`] when the log cannot be read.
    pub async fn audit(&self, model: &str, limit: usize) -> Result<Vec<AuditEntry>, ServingError> {
        self.model(model)?;
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        Ok(store.audit(model, limit).await?)
    }

    /// Steps 4–5 for a state built by a planner: saves the change from `before` to `next`
    /// (audited as `action` by `actor`), then publishes `next`.
    ///
    /// # Errors
    /// [`ServingError::State`] when the change cannot be saved; nothing is published.
    pub(super) async fn publish(
        &self,
        pending: Pending,
        next: DeploymentState,
        before: Option<DeploymentRecord>,
        actor: Actor,
        action: String,
        evidence: Option<serde_json::Value>,
    ) -> Result<Arc<DeploymentState>, ServingError> {
        let mut entry = AuditEntry::now(actor, action, &next.model, before, next.record());
        entry.evidence = evidence;
        if let Some(store) = &self.store {
            store.commit(&entry).await?;
        }
        let next = Arc::new(next);
        pending.model.deployment.store(Arc::clone(&next));
        self.announce(&next).await;
        tracing::info!(
            model = %entry.model,
            revision = entry.revision,
            actor = %entry.actor,
            action = %entry.action,
            "deployment changed"
        );
        Ok(next)
    }
}
