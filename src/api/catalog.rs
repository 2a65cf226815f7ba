//! What both protocols show about the server and its repository: the server's name, the
//! platform string, the versions a model's metadata lists, and the repository index.

use crate::serving::DeploymentState;
use serde::Serialize;
use std::sync::Arc;

/// The server name in server metadata.
pub const SERVER_NAME: &str = "vigil";

/// The protocol extension both protocols serve (REST adds `binary_tensor_data`).
pub const MODEL_REPOSITORY_EXTENSION: &str = "model_repository";

/// The platform string of every version vigil serves.
pub const PLATFORM: &str = "onnx_onnxv1";

/// The versions of `deployment` that serve, as model metadata lists them.
pub fn ready_versions(deployment: &DeploymentState) -> Vec<&str> {
    deployment
        .versions
        .iter()
        .filter(|v| v.ready().is_some())
        .map(|v| v.version.as_str())
        .collect()
}

/// One version in the repository index.
#[derive(Serialize)]
pub struct IndexEntry<'a> {
    /// Model name.
    pub name: &'a str,
    /// Version name.
    pub version: &'a str,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why the version is unavailable (empty when ready).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
}

/// Every version of `deployments` with its state and reason (only ready ones with
/// `ready_only`), for the repository index of either protocol.
pub fn index_entries(
    deployments: &[Arc<DeploymentState>],
    ready_only: bool,
) -> Vec<IndexEntry<'_>> {
    let mut entries = Vec::new();
    for deployment in deployments {
        for version in &deployment.versions {
            let reason = version.status.reason();
            if ready_only && reason.is_some() {
                continue;
            }
            entries.push(IndexEntry {
                name: &deployment.model,
                version: &version.version,
                state: if reason.is_none() {
                    "READY"
                } else {
                    "UNAVAILABLE"
                },
                reason: reason.unwrap_or_default(),
            });
        }
    }
    entries
}
