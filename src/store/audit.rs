//! The append-only audit log: one JSON object per line (time, actor, action, model, revision,
//! before, after), fsynced after every entry. It is written *before* the state file of the same
//! change, so its last line is the only change that can be pending after a crash
//! (see [`super::DeploymentStore`]).

use super::StoreError;
use super::record::DeploymentRecord;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// An operator through the admin API.
    Admin,
    /// The gateway at start: first deployments, versions that are no longer available.
    Startup,
    /// The deploy policy, applied to a version found at start.
    Policy,
    /// A repository rescan: new models and new versions.
    Rescan,
    /// The promotion rule: a shadow the evidence showed better than the champion.
    Promotion,
    /// The MLflow Model Registry: its aliases moved.
    Mlflow,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Actor::Admin => "admin",
            Actor::Startup => "startup",
            Actor::Policy => "policy",
            Actor::Rescan => "rescan",
            Actor::Promotion => "promotion",
            Actor::Mlflow => "mlflow",
        })
    }
}

/// One audited change of one model's deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Seconds since the Unix epoch, with fractions.
    pub time: f64,
    /// Who made the change.
    pub actor: Actor,
    /// What was done, in words (`promote 2`, `threshold 0.7`, `new version 3: shadow`, ...).
    pub action: String,
    /// The model changed.
    pub model: String,
    /// The revision the change created (`after.revision`).
    pub revision: u64,
    /// The deployment before the change (`null` for a model's first deployment).
    pub before: Option<DeploymentRecord>,
    /// The deployment after the change.
    pub after: DeploymentRecord,
    /// What the change was decided on (the promotion evidence), when it was decided by vigil.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
}

impl AuditEntry {
    /// An entry stamped with the current time, for the change from `before` to `after`.
    pub fn now(
        actor: Actor,
        action: String,
        model: &str,
        before: Option<DeploymentRecord>,
        after: DeploymentRecord,
    ) -> AuditEntry {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        AuditEntry {
            time,
            actor,
            action,
            model: model.to_string(),
            revision: after.revision,
            before,
            after,
            evidence: None,
        }
    }
}

/// The most bytes read back from the end of the log to find its last entry.
const TAIL_BYTES: u64 = 1 << 20;
/// The most bytes read back from the end of the log for a model's recent entries.
const RECENT_BYTES: u64 = 4 << 20;

/// The open audit log file. Not synchronised: [`super::DeploymentStore`] holds it under a lock.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: std::fs::File,
}

impl AuditLog {
    /// Opens `path` for appending (creating it).
    ///
    /// # Errors
    /// [`StoreError::Write`] when it cannot be opened.
    pub fn open(path: &Path) -> Result<AuditLog, StoreError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| StoreError::write(path, &e))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line and fsyncs. Returns the length the log had before, for
    /// [`AuditLog::truncate`]. A failed append leaves the log as it was.
    ///
    /// # Errors
    /// [`StoreError::Write`] when writing or syncing fails.
    pub fn append(&mut self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let mark = self
            .file
            .metadata()
            .map_err(|e| StoreError::write(&self.path, &e))?
            .len();
        let mut line = serde_json::to_vec(entry).map_err(|e| StoreError::Write {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            // Never leave half a line behind; if even this fails, the next start drops it.
            let _ = self.truncate(mark);
            return Err(StoreError::write(&self.path, &error));
        }
        Ok(mark)
    }

    /// Cuts the log back to `len` bytes (undoing an append whose change could not be saved).
    ///
    /// # Errors
    /// [`StoreError::Write`] when the file cannot be truncated.
    pub fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| StoreError::write(&self.path, &e))
    }

    /// The last `bytes` of the log (all of it when shorter), and the offset they start at.
    fn tail(&mut self, bytes: u64) -> Result<(u64, Vec<u8>), StoreError> {
        let fail = |e: std::io::Error| StoreError::write(&self.path, &e);
        let len = self.file.metadata().map_err(fail)?.len();
        let start = len.saturating_sub(bytes);
        let mut tail = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
        self.file.seek(SeekFrom::Start(start)).map_err(fail)?;
        (&self.file)
            .take(len - start)
            .read_to_end(&mut tail)
            .map_err(fail)?;
        Ok((start, tail))
    }

    /// The newest `limit` entries of `model`, newest first, from the last 4 MiB of
    /// the log (lines that do not parse, such as a torn last line, are skipped).
    ///
    /// # Errors
    /// [`StoreError::Write`] when the file cannot be read.
    pub fn recent(&mut self, model: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let (_, tail) = self.tail(RECENT_BYTES)?;
        Ok(tail
            .rsplit(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<AuditEntry>(line).ok())
            .filter(|entry| entry.model == model)
            .take(limit)
            .collect())
    }

    /// The last complete entry, after cutting off a torn last line (a crash in the middle of an
    /// append: that change was never answered). `None` for an empty log or a last line written
    /// before entries carried revisions.
    ///
    /// # Errors
    /// [`StoreError::Write`] when the file cannot be read or cut.
    pub fn last_entry(&mut self) -> Result<Option<AuditEntry>, StoreError> {
        let (start, tail) = self.tail(TAIL_BYTES)?;
        let complete = match tail.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if start == 0 => 0,
            None => return Ok(None),
        };
        if complete < tail.len() {
            tracing::warn!(path = %self.path.display(), "dropping a torn last line of the audit log");
            self.truncate(start + complete as u64)?;
        }
        let lines = &tail[..complete];
        let last = lines[..complete.saturating_sub(1)]
            .rsplit(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        if last.is_empty() {
            return Ok(None);
        }
        Ok(serde_json::from_slice(last).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeployPolicy;

    fn record(revision: u64) -> DeploymentRecord {
        DeploymentRecord {
            revision,
            champion: Some("1".into()),
            shadows: Default::default(),
            threshold: 0.5,
            policy: DeployPolicy::Manual,
            history: vec![],
            known_versions: vec!["1".into()],
            promotion: Default::default(),
        }
    }

    #[test]
    fn the_last_entry_survives_a_torn_tail_which_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).expect("open");
        assert_eq!(log.last_entry().expect("empty log"), None);
        for revision in 1..=3 {
            let entry = AuditEntry::now(
                Actor::Admin,
                format!("threshold {revision}"),
                "iris",
                Some(record(revision - 1)),
                record(revision),
            );
            log.append(&entry).expect("append");
        }
        let intact = std::fs::metadata(&path).expect("metadata").len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"time\": 1.0, \"act"))
            .expect("torn write");
        let last = log.last_entry().expect("read").expect("an entry");
        assert_eq!(last.revision, 3);
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), intact);
    }

    #[test]
    fn truncate_undoes_an_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = AuditLog::open(&dir.path().join("audit.jsonl")).expect("open");
        let entry = AuditEntry::now(Actor::Admin, "x".into(), "iris", None, record(1));
        log.append(&entry).expect("append");
        let mark = log.append(&entry).expect("append");
        log.truncate(mark).expect("truncate");
        assert_eq!(log.last_entry().expect("read").map(|e| e.revision), Some(1));
        let lines = std::fs::read_to_string(log.path()).expect("read");
        assert_eq!(lines.lines().count(), 1);
    }
}
