//! Deployments and their audit log in PostgreSQL. A change is one transaction: the audit entry,
//! the model's row updated only where its revision is still the one the change started from
//! (`UPDATE … WHERE revision = $before`; a first deployment, from no record or from revision 0,
//! inserts only where none exists), and
//! a notification on [`DEPLOYMENTS_CHANNEL`] carrying the model's name, delivered to every
//! listening replica when the transaction commits.

use super::PostgresStore;
use crate::store::{AuditEntry, DeploymentRecord, DeploymentStore, StoreError};
use async_trait::async_trait;
use std::collections::BTreeMap;

/// The notification channel of deployment changes; the payload is the model's name.
pub const DEPLOYMENTS_CHANNEL: &str = "vigil_deployments";

fn revision(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl DeploymentStore for PostgresStore {
    async fn load(&self, model: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT record FROM deployments WHERE model = $1", &[&model])
            .await
            .map_err(|e| self.failed(&e))?;
        row.map(|row| {
            serde_json::from_value(row.get::<_, serde_json::Value>(0)).map_err(|e| {
                StoreError::Database {
                    path: self.name().to_string(),
                    reason: format!("the saved deployment of `{model}` does not parse: {e}"),
                }
            })
        })
        .transpose()
    }

    async fn commit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let record = serde_json::to_value(&entry.after).map_err(|e| StoreError::Database {
            path: self.name().to_string(),
            reason: e.to_string(),
        })?;
        let audited = serde_json::to_value(entry).map_err(|e| StoreError::Database {
            path: self.name().to_string(),
            reason: e.to_string(),
        })?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let after = revision(entry.after.revision);
        // Revision 0 is a deployment never saved (a model's first change may start from it).
        let changed = match entry.before.as_ref().filter(|b| b.revision > 0) {
            Some(before) => {
                tx.execute(
                    "UPDATE deployments SET revision = $2, record = $3, updated_at = now() \
                     WHERE model = $1 AND revision = $4",
                    &[&entry.model, &after, &record, &revision(before.revision)],
                )
                .await
            }
            None => {
                tx.execute(
                    "INSERT INTO deployments (model, revision, record) VALUES ($1, $2, $3) \
                     ON CONFLICT (model) DO NOTHING",
                    &[&entry.model, &after, &record],
                )
                .await
            }
        }
        .map_err(fail)?;
        if changed != 1 {
            drop(tx);
            let current = self
                .revisions()
                .await?
                .get(&entry.model)
                .copied()
                .unwrap_or(0);
            return Err(StoreError::Conflict {
                model: entry.model.clone(),
                current,
            });
        }
        tx.execute(
            "INSERT INTO audit (model, revision, entry) VALUES ($1, $2, $3)",
            &[&entry.model, &after, &audited],
        )
        .await
        .map_err(fail)?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&DEPLOYMENTS_CHANNEL, &entry.model],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)
    }

    async fn audit(&self, model: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT entry FROM audit WHERE model = $1 ORDER BY seq DESC LIMIT $2",
                &[&model, &limit],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(rows
            .iter()
            .filter_map(|row| serde_json::from_value(row.get::<_, serde_json::Value>(0)).ok())
            .collect())
    }
}

impl PostgresStore {
    /// Every model's saved revision.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Database`].
    pub async fn revisions(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT model, revision FROM deployments", &[])
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(rows
            .iter()
            .map(|row| {
                let revision: i64 = row.get(1);
                (row.get(0), u64::try_from(revision).unwrap_or(0))
            })
            .collect())
    }
}

/// Deployment change notifications on a connection of its own; ends when that connection is
/// lost (listen again, and check every model, since notifications sent meanwhile are lost).
pub struct Notifications {
    /// Kept open: notifications arrive while it lives.
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
    models: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Notifications {
    /// The next model whose deployment changed; `None` once the connection is lost.
    pub async fn next(&mut self) -> Option<String> {
        self.models.recv().await
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl PostgresStore {
    /// Listens for deployment changes on [`DEPLOYMENTS_CHANNEL`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached within the timeout.
    pub async fn notifications(&self) -> Result<Notifications, StoreError> {
        let (client, mut connection) =
            tokio::time::timeout(self.timeout(), self.config().connect(tokio_postgres::NoTls))
                .await
                .map_err(|e| self.unavailable(&e))?
                .map_err(|e| self.unavailable(&e))?;
        let (notified, models) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    let _ = notified.send(n.payload().to_string());
                }
            }
        });
        let notifications = Notifications {
            _client: client,
            driver,
            models,
        };
        notifications
            ._client
            .batch_execute(&format!("LISTEN {DEPLOYMENTS_CHANNEL}"))
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(notifications)
    }
}
