//! Durable deployment state under the state directory: `deployments.json` (champion, shadows,
//! fractions, thresholds, policy, history per model), written atomically on every change (temp
//! file, fsync, rename, fsync of the directory), and the append-only audit log (`audit.jsonl`).
//!
//! This module stores and loads; it holds no deployment rules.

mod audit;

pub use self::audit::{AuditEntry, AuditLog};
use crate::serving::DeployPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the deployment state.
pub const STATE_FILE: &str = "deployments.json";
/// Format version written into the state file.
pub const FORMAT_VERSION: u32 = 1;

/// A state-directory failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file exists but cannot be read or parsed. It is never replaced silently.
    #[error(
        "cannot read the deployment state {path}: {reason}; fix the file or move it away to \
         start with fresh deployments"
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
}

/// The saved deployment of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedDeployment {
    /// Champion version.
    pub champion: Option<String>,
    /// Shadow versions and their mirror fractions.
    #[serde(default)]
    pub shadows: BTreeMap<String, f64>,
    /// Confidence threshold.
    pub threshold: f64,
    /// Deploy policy for new versions.
    pub policy: DeployPolicy,
    /// Previous champions, oldest first.
    #[serde(default)]
    pub history: Vec<String>,
    /// Versions already seen, so that only versions added later get the deploy policy.
    #[serde(default)]
    pub known_versions: Vec<String>,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// Format version.
    pub format: u32,
    /// Model name → its deployment.
    pub models: BTreeMap<String, SavedDeployment>,
}

/// The state directory.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    audit: AuditLog,
}

impl StateStore {
    /// Opens (creating if needed) the state directory and its audit log.
    ///
    /// # Errors
    /// [`StateError::Write`] when the directory or the log cannot be created.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Write {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
            audit: AuditLog::open(&dir.join("audit.jsonl"))?,
        })
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the saved state; `None` when there is none yet.
    ///
    /// # Errors
    /// [`StateError::Unreadable`] when the file exists but is not a valid state file.
    pub fn load(&self) -> Result<Option<SavedState>, StateError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StateError::Unreadable {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let state: SavedState =
            serde_json::from_str(&text).map_err(|e| StateError::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if state.format != FORMAT_VERSION {
            return Err(StateError::Unreadable {
                path,
                reason: format!(
                    "format {} is not the supported format {FORMAT_VERSION}",
                    state.format
                ),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state atomically: temp file, fsync, rename over the old file, fsync the
    /// directory. A crash leaves either the old or the new file, never a torn one.
    ///
    /// # Errors
    /// [`StateError::Write`] naming the step that failed.
    pub fn save(&self, state: &SavedState) -> Result<(), StateError> {
        let path = self.path();
        let temp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let fail = |path: &Path, e: std::io::Error| StateError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut file = std::fs::File::create(&temp).map_err(|e| fail(&temp, e))?;
        file.write_all(&json).map_err(|e| fail(&temp, e))?;
        file.sync_all().map_err(|e| fail(&temp, e))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(|e| fail(&path, e))?;
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| fail(&self.dir, e))?;
        Ok(())
    }

    /// Appends one entry to the audit log (fsynced).
    ///
    /// # Errors
    /// [`StateError::Write`] when the log cannot be written.
    pub fn audit(&self, entry: &AuditEntry) -> Result<(), StateError> {
        self.audit.append(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedState {
        let mut models = BTreeMap::new();
        models.insert(
            "iris".to_string(),
            SavedDeployment {
                champion: Some("2".into()),
                shadows: BTreeMap::from([("3".to_string(), 0.5)]),
                threshold: 0.7,
                policy: DeployPolicy::BestValidation,
                history: vec!["1".into()],
                known_versions: vec!["1".into(), "2".into(), "3".into()],
            },
        );
        SavedState {
            format: FORMAT_VERSION,
            models,
        }
    }

    #[test]
    fn state_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        assert_eq!(store.load().expect("no state yet"), None);
        store.save(&sample()).expect("save");
        assert_eq!(store.load().expect("load"), Some(sample()));
        assert!(!dir.path().join("deployments.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        std::fs::write(store.path(), "{\"format\": 1, \"models\": ").expect("write");
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("move it away"), "{err}");
        assert!(store.path().exists(), "the file is left in place");
    }
}
