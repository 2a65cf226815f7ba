//! Changes to a model that follows a model registry: its aliases decide, so an operator's
//! change is refused (409) unless forced, and a forced one is logged.

use super::{ApiError, AppState};
use crate::serving::ServingError;

/// Refuses an operator's change to the deployment of a model that follows a model registry
/// (its aliases decide), unless `force` is set: then the change is made and shown as drift from
/// the registry until its aliases move.
///
/// # Errors
/// [`ServingError::Conflict`] (409) saying to move the alias instead.
pub fn check_registry(app: &AppState, model: &str, force: bool) -> Result<(), ApiError> {
    if !app.registry().follows_registry(model) {
        return Ok(());
    }
    if force {
        tracing::warn!(%model, "forced change to a model that follows the registry: it drifts from the registry until its aliases move");
        return Ok(());
    }
    Err(ServingError::Conflict(format!(
        "model {model} follows the MLflow registry: move its alias there instead (or send \"force\": true to change it here until the aliases move)"
    ))
    .into())
}
