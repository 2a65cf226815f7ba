//! `ServingError`: what can go wrong between a resolved request and its prediction.

use crate::engine::EngineError;

/// A serving failure. The API maps each variant to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// No model of that name.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// The model exists but has no such version.
    #[error("model `{model}` has no version `{version}`")]
    UnknownVersion {
        /// The model.
        model: String,
        /// The version asked for.
        version: String,
    },
    /// The version exists but is not loaded (it failed to load, or no version is ready).
    #[error("model `{model}` version `{version}` is not ready: {reason}")]
    Unavailable {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// Why it is not serving.
        reason: String,
    },
    /// The request does not fit the model's signature.
    #[error("{field}: {expected}")]
    InvalidInput {
        /// The request field at fault (`inputs[0].shape`, `instances[3]`, ...).
        field: String,
        /// What was expected there.
        expected: String,
    },
    /// More rows than the configured limit.
    #[error("{field}: {rows} rows exceed the limit of {max} rows per request")]
    TooManyRows {
        /// The field that carries the batch.
        field: String,
        /// Rows sent.
        rows: usize,
        /// The limit.
        max: usize,
    },
    /// The engine failed on inputs that passed validation.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The change conflicts with the deployment (unloading the champion, promoting a shadow's
    /// own champion, rolling back with no history, ...).
    #[error("{0}")]
    Conflict(String),
    /// The durable state could not be written; the change was applied in memory only.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The blocking inference task did not complete.
    #[error("inference task failed: {0}")]
    Task(String),
}

impl ServingError {
    /// Shorthand for [`ServingError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, expected: impl Into<String>) -> ServingError {
        ServingError::InvalidInput {
            field: field.into(),
            expected: expected.into(),
        }
    }
}
