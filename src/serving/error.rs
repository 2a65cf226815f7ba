//! `ServingError`: what can go wrong routing and running a prediction, or changing a
//! deployment. Each variant says what failed; the API maps each to one status code.

use super::report::ModelReport;
use crate::engine::EngineError;
use crate::repository::RepositoryError;
use crate::store::StoreError;

/// A serving failure.
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
    /// The model's queue of waiting requests is full.
    #[error("model `{model}` is at capacity: {queue} requests are already waiting; retry later")]
    Overloaded {
        /// The model.
        model: String,
        /// Its queue bound.
        queue: usize,
    },
    /// The gateway is shedding load: requests wait longer than the limit to be read.
    #[error(
        "model `{model}`: the gateway is overloaded (requests wait {delay:?} to be read, limit {limit:?}: shed_delay_ms); retry later"
    )]
    Busy {
        /// The model asked for.
        model: String,
        /// The scheduling delay measured last.
        delay: std::time::Duration,
        /// The limit above which requests are refused.
        limit: std::time::Duration,
    },
    /// The request's deadline passed before it could run.
    #[error(
        "model `{model}`: the request's deadline passed {late:?} ago while it waited to run (parameters.timeout or request_timeout_ms)"
    )]
    DeadlineExceeded {
        /// The model.
        model: String,
        /// How long ago the deadline passed.
        late: std::time::Duration,
    },
    /// The engine failed on inputs that passed validation.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The change conflicts with the deployment (unloading the champion, shadowing the
    /// champion, rolling back with no history, ...).
    #[error("{0}")]
    Conflict(String),
    /// The caller's expected revision (`If-Match`) is not the current one; nothing changed.
    #[error(
        "revision {expected} of {} is not current: the deployment is at revision {}; read it \
         again and retry with If-Match: \"{}\"",
        current.name, current.revision, current.revision
    )]
    Stale {
        /// The revision the caller expected.
        expected: u64,
        /// The deployment as it is.
        current: Box<ModelReport>,
    },
    /// The durable state could not be read or written; a change that could not be saved was
    /// not made.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The model repository could not be read.
    #[error(transparent)]
    Repository(RepositoryError),
    /// A version directory could not be archived for download.
    #[error("cannot archive version {version} of {model}: {reason}")]
    Archive {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// The I/O error.
        reason: String,
    },
    /// Work handed to the blocking pool did not complete (it panicked or was cancelled).
    #[error("{task} did not complete: {reason}")]
    Interrupted {
        /// What the task was doing.
        task: &'static str,
        /// Why it ended.
        reason: String,
    },
}

impl ServingError {
    /// Shorthand for [`ServingError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, expected: impl Into<String>) -> ServingError {
        ServingError::InvalidInput {
            field: field.into(),
            expected: expected.into(),
        }
    }

    /// [`ServingError::Interrupted`] for a blocking `task` that ended with `error`.
    pub fn interrupted(task: &'static str, error: &tokio::task::JoinError) -> ServingError {
        ServingError::Interrupted {
            task,
            reason: error.to_string(),
        }
    }
}
