//! Durable state under the state directory: each model's deployment
//! (`deployments/<model>.json`, replaced atomically: temp file, fsync, rename, fsync of the
//! directory) and the append-only audit log (`audit.jsonl`). This module stores and loads; it
//! holds no deployment rules.
//!
//! # One change, two files
//!
//! [`DeploymentStore::commit`] appends the audit entry first, then replaces the model's state
//! file, both under one lock. When the state file cannot be written, the entry is cut off the log
//! again: a change that is not saved leaves no trace. When the process dies between the two
//! writes, the entry is the log's last line and its `after` is the whole deployment:
//! [`DeploymentStore::open`] rolls the state file forward to it. So after any crash, each model's
//! state file holds the revision of its last audit entry.

mod audit;
pub mod feedback;
mod record;
mod sqlite;

pub use self::audit::{Actor, AuditEntry, AuditLog};
pub use self::feedback::FeedbackStore;
pub use self::record::{DeployPolicy, DeploymentRecord, PromotionMode, PromotionSettings};
pub use self::sqlite::SqliteFeedbackStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// One state file: the model it belongs to and its deployment.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    model: String,
    deployment: DeploymentRecord,
}

/// A model's deployment in the single state file of format 1.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyDeployment {
    champion: Option<String>,
    #[serde(default)]
    shadows: BTreeMap<String, f64>,
    threshold: f64,
    policy: DeployPolicy,
    #[serde(default)]
    history: Vec<String>,
    #[serde(default)]
    known_versions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyState {
    format: u32,
    models: BTreeMap<String, LegacyDeployment>,
}

/// The state directory: per-model deployments and the audit log.
#[derive(Debug)]
pub struct DeploymentStore {
    dir: PathBuf,
    audit: Mutex<AuditLog>,
}

impl DeploymentStore {
    /// Opens (creating if needed) the state directory, migrates a format-1 `deployments.json`,
    /// and rolls a model's state file forward to the audit log's last entry when a crash came
    /// between the two writes of a change.
    ///
    /// # Errors
    /// [`StoreError::Write`] when the directory or the log cannot be created or repaired,
    /// [`StoreError::Unreadable`] for a state file that cannot be parsed.
    pub fn open(dir: &Path) -> Result<DeploymentStore, StoreError> {
        let deployments = dir.join(DEPLOYMENTS_DIR);
        std::fs::create_dir_all(&deployments).map_err(|e| StoreError::write(&deployments, &e))?;
        let mut audit = AuditLog::open(&dir.join(AUDIT_FILE))?;
        let pending = audit.last_entry()?;
        let store = DeploymentStore {
            dir: dir.to_path_buf(),
            audit: Mutex::new(audit),
        };
        store.migrate_legacy()?;
        if let Some(entry) = pending {
            let saved = store.load(&entry.model)?;
            if saved.is_none_or(|saved| saved.revision < entry.revision) {
                tracing::warn!(
                    model = %entry.model,
                    revision = entry.revision,
                    "the last change was audited but its state file was not written; completing it"
                );
                store.write_state(&entry.model, &entry.after)?;
            }
        }
        Ok(store)
    }

    /// The state file of `model`.
    pub fn path(&self, model: &str) -> PathBuf {
        self.dir.join(DEPLOYMENTS_DIR).join(format!("{model}.json"))
    }

    /// The newest `limit` audit entries of `model`, newest first (see [`AuditLog::recent`]).
    ///
    /// # Errors
    /// [`StoreError::Write`] when the log cannot be read.
    pub fn audit(&self, model: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut log = self.audit.lock().map_err(|_| StoreError::Write {
            path: self.audit_path(),
            reason: "an earlier write panicked while holding the audit log".into(),
        })?;
        log.recent(model, limit)
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.join(AUDIT_FILE)
    }

    /// Reads the saved deployment of `model`; `None` when it has none yet.
    ///
    /// # Errors
    /// [`StoreError::Unreadable`] when the file exists but is not a valid state file.
    pub fn load(&self, model: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let path = self.path(model);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Unreadable {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let unreadable = |reason: String| StoreError::Unreadable {
            path: path.clone(),
            reason,
        };
        let file: StateFile = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        if file.format != FORMAT_VERSION {
            return Err(unreadable(format!(
                "format {} is not the supported format {FORMAT_VERSION}",
                file.format
            )));
        }
        if file.model != model {
            return Err(unreadable(format!(
                "it holds the deployment of `{}`",
                file.model
            )));
        }
        Ok(Some(file.deployment))
    }

    /// Makes one change durable: appends `entry` to the audit log, then replaces the state file
    /// of `entry.model` with `entry.after`. When the state file cannot be written, the entry is
    /// removed from the log again and the error names the file.
    ///
    /// # Errors
    /// [`StoreError::Write`] naming the file that could not be written.
    pub fn commit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut audit = self.audit.lock().map_err(|_| StoreError::Write {
            path: self.audit_path(),
            reason: "an earlier write panicked while holding the audit log".into(),
        })?;
        let mark = audit.append(entry)?;
        if let Err(error) = self.write_state(&entry.model, &entry.after) {
            if let Err(undo) = audit.truncate(mark) {
                tracing::error!(%undo, "cannot remove the audit entry of a change that was not saved");
            }
            return Err(error);
        }
        Ok(())
    }

    /// Writes the state file of `model` atomically: temp file, fsync, rename over the old file,
    /// fsync the directory. A crash leaves either the old or the new file, never a torn one.
    fn write_state(&self, model: &str, record: &DeploymentRecord) -> Result<(), StoreError> {
        let path = self.path(model);
        let file = StateFile {
            format: FORMAT_VERSION,
            model: model.to_string(),
            deployment: record.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, &json)
    }

    /// Splits a format-1 `deployments.json` into per-model files at revision 0 (models that
    /// already have a file keep it), then renames it to `deployments.json.migrated`.
    fn migrate_legacy(&self) -> Result<(), StoreError> {
        let path = self.dir.join(LEGACY_STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::write(&path, &e)),
        };
        let unreadable = |reason: String| StoreError::Unreadable {
            path: path.clone(),
            reason,
        };
        let legacy: LegacyState =
            serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        if legacy.format != 1 {
            return Err(unreadable(format!(
                "format {} is not the format 1 this release migrates",
                legacy.format
            )));
        }
        for (model, saved) in legacy.models {
            if self.load(&model)?.is_some() {
                continue;
            }
            let record = DeploymentRecord {
                revision: 0,
                champion: saved.champion,
                shadows: saved.shadows,
                threshold: saved.threshold,
                policy: saved.policy,
                history: saved.history,
                known_versions: saved.known_versions,
                promotion: PromotionSettings::default(),
            };
            self.write_state(&model, &record)?;
        }
        let migrated = self.dir.join(format!("{LEGACY_STATE_FILE}.migrated"));
        std::fs::rename(&path, &migrated).map_err(|e| StoreError::write(&path, &e))?;
        tracing::info!(from = %path.display(), "deployment state migrated to one file per model");
        Ok(())
    }
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
