//! The embedded deployment store: each model's deployment in `deployments/<model>.json`
//! (replaced atomically: temp file, fsync, rename, fsync of the directory) and the append-only
//! audit log `audit.jsonl`, under the state directory.
//!
//! # One change, two files
//!
//! [`Files::commit`] appends the audit entry first, then replaces the model's state file, both
//! under one lock. When the state file cannot be written, the entry is cut off the log again: a
//! change that is not saved leaves no trace. When the process dies between the two writes, the
//! entry is the log's last line and its `after` is the whole deployment: [`Files::open`] rolls
//! the state file forward to it. So after any crash, each model's state file holds the revision
//! of its last audit entry.

use super::audit::{AuditEntry, AuditLog};
use super::record::{DeployPolicy, DeploymentRecord, PromotionSettings};
use super::{
    AUDIT_FILE, DEPLOYMENTS_DIR, DeploymentStore, FORMAT_VERSION, LEGACY_STATE_FILE, StoreError,
    write_atomically,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// The state directory: per-model deployments and the audit log (synchronous; see
/// [`DeploymentFiles`] for the store the gateway uses).
#[derive(Debug)]
pub(super) struct Files {
    dir: PathBuf,
    audit: Mutex<AuditLog>,
}

impl Files {
    /// Opens (creating if needed) the state directory, migrates a format-1 `deployments.json`,
    /// and rolls a model's state file forward to the audit log's last entry when a crash came
    /// between the two writes of a change.
    ///
    /// # Errors
    /// [`StoreError::Write`] when the directory or the log cannot be created or repaired,
    /// [`StoreError::Unreadable`] for a state file that cannot be parsed.
    pub fn open(dir: &Path) -> Result<Files, StoreError> {
        let deployments = dir.join(DEPLOYMENTS_DIR);
        std::fs::create_dir_all(&deployments).map_err(|e| StoreError::write(&deployments, &e))?;
        let mut audit = AuditLog::open(&dir.join(AUDIT_FILE))?;
        let pending = audit.last_entry()?;
        let store = Files {
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

/// The embedded deployment store, as the gateway uses it: the state files behind the async
/// [`DeploymentStore`] interface, its file work on the blocking pool.
#[derive(Debug, Clone)]
pub struct DeploymentFiles(Arc<Files>);

impl DeploymentFiles {
    /// Opens (creating if needed) the state directory, migrates a format-1 `deployments.json`,
    /// and rolls a model's state file forward to the audit log's last entry when a crash came
    /// between the two writes of a change.
    ///
    /// # Errors
    /// [`StoreError::Write`] when the directory or the log cannot be created or repaired,
    /// [`StoreError::Unreadable`] for a state file that cannot be parsed.
    pub fn open(dir: &Path) -> Result<DeploymentFiles, StoreError> {
        Files::open(dir).map(|files| DeploymentFiles(Arc::new(files)))
    }

    /// The state file of `model`.
    pub fn path(&self, model: &str) -> PathBuf {
        self.0.path(model)
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> PathBuf {
        self.0.audit_path()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Files) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let files = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || work(&files))
            .await
            .map_err(|e| StoreError::Write {
                path: self.0.audit_path(),
                reason: format!("the state write was interrupted: {e}"),
            })?
    }
}

#[async_trait]
impl DeploymentStore for DeploymentFiles {
    async fn load(&self, model: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let model = model.to_string();
        self.blocking(move |files| files.load(&model)).await
    }

    async fn commit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.blocking(move |files| files.commit(&entry)).await
    }

    async fn audit(&self, model: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let model = model.to_string();
        self.blocking(move |files| files.audit(&model, limit)).await
    }
}
