//! Inference engines: the [`Model`] trait every backend implements, tensor types, and loading a
//! version's ONNX file with the engine its metadata asks for.
//!
//! Engines are synchronous and know nothing of HTTP or deployments. `ort` (ONNX Runtime, loaded at
//! run time) is always available; `tract` (pure Rust) is compiled in with the `tract` feature.

mod ort;
mod tensor;
#[cfg(feature = "tract")]
mod tract;

pub use self::ort::{OrtRuntime, locate_library};
pub use self::tensor::{CastError, DataType, ShapeError, Tensor, TensorData, cast, element_count};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// One input or output of a model: name, element type and shape (`None` = dynamic dimension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the ONNX graph.
    pub name: String,
    /// Element type.
    pub dtype: DataType,
    /// Dimensions; `None` where the graph leaves the size open (usually the batch).
    pub shape: Vec<Option<usize>>,
}

impl TensorSpec {
    /// The shape as the Open Inference Protocol writes it: `-1` for a dynamic dimension.
    pub fn protocol_shape(&self) -> Vec<i64> {
        self.shape
            .iter()
            .map(|dim| dim.map_or(-1, |d| i64::try_from(d).unwrap_or(i64::MAX)))
            .collect()
    }
}

/// Inputs and outputs of a model, in graph order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs.
    pub outputs: Vec<TensorSpec>,
}

/// A loaded model that can run inference. Implementations are shared across threads.
pub trait Model: Send + Sync {
    /// The model's inputs and outputs.
    fn signature(&self) -> &Signature;

    /// Runs one inference. `inputs` are in signature order and already of the declared element
    /// types (borrowed, so the caller can still read them for monitoring); the outputs come back
    /// in signature order.
    ///
    /// # Errors
    /// [`EngineError::Run`] when the runtime rejects the inputs or fails.
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError>;
}

/// Which engine runs a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// ONNX Runtime (default).
    #[default]
    Ort,
    /// tract, the pure-Rust engine (cargo feature `tract`).
    Tract,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Ort => "ort",
            EngineKind::Tract => "tract",
        })
    }
}

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No ONNX Runtime library was found.
    #[error(
        "ONNX Runtime library not found ({searched}); install it with `make setup` \
         (pip install onnxruntime==1.32.0 into .venv) or point --ort-lib / VIGIL_ORT_LIB / \
         ORT_DYLIB_PATH at libonnxruntime.so"
    )]
    LibraryNotFound {
        /// Where the gateway looked.
        searched: String,
    },
    /// The library exists but could not be loaded or is too old.
    #[error(
        "cannot load ONNX Runtime from {path}: {reason}; install onnxruntime==1.32.0 \
         (`make setup`) or point --ort-lib at a libonnxruntime.so of version 1.24 or newer"
    )]
    LibraryLoad {
        /// The library path tried.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The ONNX file could not be turned into a runnable model.
    #[error("cannot load {path} with {engine}: {reason}")]
    Load {
        /// The model file.
        path: PathBuf,
        /// The engine that tried.
        engine: EngineKind,
        /// What failed (for tract, names the unsupported operator).
        reason: String,
    },
    /// The version asks for an engine this build does not include.
    #[error("engine `{0}` is not compiled into this build (rebuild with `--features {0}`)")]
    NotCompiled(EngineKind),
    /// The runtime failed while running inference.
    #[error("inference failed: {0}")]
    Run(String),
}

/// The engines available to this process.
#[derive(Clone)]
pub struct Engines {
    ort: OrtRuntime,
    sessions_per_version: usize,
}

impl Engines {
    /// Sets up the engines: loads ONNX Runtime from `ort_library`.
    ///
    /// # Errors
    /// [`EngineError::LibraryLoad`] when the library cannot be loaded.
    pub fn new(ort_library: &Path, sessions_per_version: usize) -> Result<Engines, EngineError> {
        Ok(Engines {
            ort: OrtRuntime::init(ort_library)?,
            sessions_per_version: sessions_per_version.max(1),
        })
    }

    /// The ONNX Runtime in use (path and version), for logs.
    pub fn ort(&self) -> &OrtRuntime {
        &self.ort
    }

    /// Loads `path` with `kind`.
    ///
    /// # Errors
    /// [`EngineError::Load`] naming what the engine could not handle, or
    /// [`EngineError::NotCompiled`] for an engine missing from this build.
    pub fn load(&self, kind: EngineKind, path: &Path) -> Result<Box<dyn Model>, EngineError> {
        match kind {
            EngineKind::Ort => Ok(Box::new(
                self.ort.load_model(path, self.sessions_per_version)?,
            )),
            #[cfg(feature = "tract")]
            EngineKind::Tract => Ok(Box::new(tract::TractModel::load(path)?)),
            #[cfg(not(feature = "tract"))]
            EngineKind::Tract => Err(EngineError::NotCompiled(EngineKind::Tract)),
        }
    }
}
