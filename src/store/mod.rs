//! Durable state: deployments with their audit log, and the feedback loop's store, behind one
//! trait each ([`DeploymentStore`], [`FeedbackStore`]). Embedded implementations keep them under
//! the state directory (`files.rs`, `sqlite.rs`). This module stores and loads; it holds no
//! deployment rules.

mod audit;
pub mod feedback;
mod files;
mod postgres;
mod record;
mod sqlite;

pub use self::audit::{Actor, AuditEntry, AuditLog};
pub use self::feedback::FeedbackStore;
pub use self::files::DeploymentFiles;
pub use self::postgres::{
    DEPLOYMENTS_CHANNEL, DatabaseSettings, Notifications, PostgresStore, ReplicaRow, redact_url,
};
pub use self::record::{DeployPolicy, DeploymentRecord, PromotionMode, PromotionSettings};
pub use self::sqlite::SqliteFeedbackStore;
use async_trait::async_trait;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Directory of the per-model state files, under the state directory.
pub const DEPLOYMENTS_DIR: &str = "deployments";
/// The audit log, under the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The single state file of earlier releases; migrated at start.
pub const LEGACY_STATE_FILE: &str = "deployments.json";
/// Format version written into each state file.
pub const FORMAT_VERSION: u32 = 2;

/// A state-directory failure, naming the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A state file exists but cannot be read or parsed. It is never replaced silently.
    #[error(
        "cannot read the deployment state {path}: {reason}; fix the file or move it away to \
         start that model with a fresh deployment"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The shared database cannot be reached (or gave no connection in time): nothing was
    /// changed; try again.
    #[error("database {database} unavailable: {reason}; nothing was changed, retry later")]
    Unavailable {
        /// The database, without credentials.
        database: String,
        /// What failed.
        reason: String,
    },
    /// Another replica changed the model's deployment first: this change was not made.
    #[error(
        "the deployment of `{model}` was changed by another replica (revision now {current}); \
         read it again and retry"
    )]
    Conflict {
        /// The model.
        model: String,
        /// The revision saved now.
        current: u64,
    },
    /// The feedback database failed.
    #[error("feedback database {path}: {reason}")]
    Database {
        /// The database (file or address, without credentials).
        path: String,
        /// What failed.
        reason: String,
    },
}

impl StoreError {
    fn write(path: &Path, error: &std::io::Error) -> StoreError {
        StoreError::Write {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
    }
}

/// Where each model's deployment and the audit log of its changes are kept.
#[async_trait]
pub trait DeploymentStore: Send + Sync + std::fmt::Debug {
    /// The saved deployment of `model`; `None` when it has none yet.
    async fn load(&self, model: &str) -> Result<Option<DeploymentRecord>, StoreError>;

    /// Makes one change durable: the audit entry and the model's new deployment (`entry.after`),
    /// both or neither. A store shared by replicas refuses it with [`StoreError::Conflict`] when
    /// the saved revision is no longer `entry.before`'s.
    async fn commit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The newest `limit` audit entries of `model`, newest first.
    async fn audit(&self, model: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let temp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temp).map_err(|e| StoreError::write(&temp, &e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::write(&temp, &e))?;
    drop(file);
    if let Err(error) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(StoreError::write(path, &error));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| StoreError::write(dir, &e))
}

#[cfg(test)]
mod tests;
