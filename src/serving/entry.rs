//! A version as a deployment knows it: its directory, its metadata, and whether it is loaded
//! (and if not, why), with the one mapping from that status to the words every view shows.

use super::{LoadContext, LoadedVersion};
use crate::repository::{Metadata, VersionDir};
use std::sync::Arc;

/// Whether a version can serve.
#[derive(Debug, Clone)]
pub enum VersionStatus {
    /// Loaded, warmed and able to serve.
    Ready(Arc<LoadedVersion>),
    /// Failed to load, and why.
    Failed(String),
    /// Unloaded on request.
    Unloaded,
}

impl VersionStatus {
    /// The status word: `ready`, `failed` or `unloaded`.
    pub fn label(&self) -> &'static str {
        match self {
            VersionStatus::Ready(_) => "ready",
            VersionStatus::Failed(_) => "failed",
            VersionStatus::Unloaded => "unloaded",
        }
    }

    /// Why the version is not serving; `None` when it is ready.
    pub fn reason(&self) -> Option<&str> {
        match self {
            VersionStatus::Ready(_) => None,
            VersionStatus::Failed(reason) => Some(reason),
            VersionStatus::Unloaded => Some("unloaded"),
        }
    }

    /// True when both are the same status (for `Ready`, the same loaded instance).
    pub fn is_same(&self, other: &VersionStatus) -> bool {
        match (self, other) {
            (VersionStatus::Ready(a), VersionStatus::Ready(b)) => Arc::ptr_eq(a, b),
            (VersionStatus::Failed(a), VersionStatus::Failed(b)) => a == b,
            (VersionStatus::Unloaded, VersionStatus::Unloaded) => true,
            _ => false,
        }
    }
}

/// One version of a model.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    /// Version name.
    pub version: String,
    /// Its directory.
    pub dir: VersionDir,
    /// Its metadata, when `model.toml` could be read.
    pub metadata: Option<Metadata>,
    /// Loaded, or why not.
    pub status: VersionStatus,
}

impl VersionEntry {
    /// Loads and warms `dir` (blocking: call it off the async workers). A version that fails to
    /// load is returned with the reason; it never fails the caller.
    pub fn load(dir: VersionDir, context: &LoadContext) -> VersionEntry {
        let status = match LoadedVersion::load(&dir, context) {
            Ok(loaded) => {
                tracing::info!(
                    model = %dir.model,
                    version = %dir.version,
                    engine = %loaded.metadata.engine,
                    task = %loaded.metadata.task,
                    load_ms = loaded.load_time.as_secs_f64() * 1e3,
                    one_row_us = loaded.cost.fixed.as_secs_f64() * 1e6,
                    per_row_us = loaded.cost.per_row.as_secs_f64() * 1e6,
                    "version loaded"
                );
                VersionStatus::Ready(Arc::new(loaded))
            }
            Err(error) => {
                tracing::warn!(model = %dir.model, version = %dir.version, %error, "version unavailable");
                VersionStatus::Failed(error.to_string())
            }
        };
        VersionEntry {
            version: dir.version.clone(),
            metadata: dir.read_metadata().ok(),
            dir,
            status,
        }
    }

    /// The loaded version, when ready.
    pub fn ready(&self) -> Option<&Arc<LoadedVersion>> {
        match &self.status {
            VersionStatus::Ready(loaded) => Some(loaded),
            _ => None,
        }
    }
}
