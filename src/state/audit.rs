//! The append-only audit log: one JSON object per line (time, actor, action, model, before,
//! after), fsynced after every entry.

use super::StateError;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One audited change.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Seconds since the Unix epoch, with fractions.
    pub time: f64,
    /// Who made the change (`admin`, `policy`, `startup`).
    pub actor: String,
    /// What was done (`promote`, `shadow`, `unshadow`, `threshold`, `rollback`, ...).
    pub action: String,
    /// The model concerned, when there is one.
    pub model: Option<String>,
    /// The deployment before the change.
    pub before: Value,
    /// The deployment after the change.
    pub after: Value,
}

impl AuditEntry {
    /// An entry stamped with the current time.
    pub fn now(
        actor: &str,
        action: &str,
        model: Option<&str>,
        before: Value,
        after: Value,
    ) -> AuditEntry {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        AuditEntry {
            time,
            actor: actor.to_string(),
            action: action.to_string(),
            model: model.map(str::to_string),
            before,
            after,
        }
    }
}

/// The open audit log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens `path` for appending (creating it).
    ///
    /// # Errors
    /// [`StateError::Write`] when it cannot be opened.
    pub fn open(path: &Path) -> Result<AuditLog, StateError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| StateError::Write {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends `entry` as one line and fsyncs.
    ///
    /// # Errors
    /// [`StateError::Write`] when writing or syncing fails.
    pub fn append(&self, entry: &AuditEntry) -> Result<(), StateError> {
        let fail = |reason: String| StateError::Write {
            path: self.path.clone(),
            reason,
        };
        let mut line = serde_json::to_vec(entry).map_err(|e| fail(e.to_string()))?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| fail("audit log lock poisoned".into()))?;
        file.write_all(&line).map_err(|e| fail(e.to_string()))?;
        file.sync_data().map_err(|e| fail(e.to_string()))
    }
}
