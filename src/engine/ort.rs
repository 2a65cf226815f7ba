//! The ONNX Runtime backend: finding and loading the shared library once per process, and a small
//! pool of sessions per version (`Session::run` needs `&mut`), each with one intra-op thread.

use super::{DataType, EngineError, EngineKind, Model, Signature, Tensor, TensorData, TensorSpec};
use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};

/// The process-wide ONNX Runtime: where it was loaded from, its version, and its environment.
#[derive(Clone)]
pub struct OrtRuntime {
    path: PathBuf,
    version: String,
    environment: Environment,
}

/// ONNX Runtime can be loaded once per process; every later `init` reuses (and must agree with) it.
static RUNTIME: OnceLock<Result<OrtRuntime, String>> = OnceLock::new();

impl OrtRuntime {
    /// Loads the library at `path` (once per process) and creates the environment.
    ///
    /// # Errors
    /// [`EngineError::LibraryLoad`] when the file cannot be loaded, is not ONNX Runtime, or is
    /// older than the API version this build needs.
    pub fn init(path: &Path) -> Result<OrtRuntime, EngineError> {
        let outcome = RUNTIME.get_or_init(|| Self::open(path).map_err(|e| e.to_string()));
        match outcome {
            Ok(runtime) if runtime.path == path => Ok(runtime.clone()),
            Ok(runtime) => Err(EngineError::LibraryLoad {
                path: path.to_path_buf(),
                reason: format!(
                    "this process already loaded ONNX Runtime from {}",
                    runtime.path.display()
                ),
            }),
            Err(reason) => Err(EngineError::LibraryLoad {
                path: path.to_path_buf(),
                reason: reason.clone(),
            }),
        }
    }

    fn open(path: &Path) -> Result<OrtRuntime, EngineError> {
        let fail = |reason: String| EngineError::LibraryLoad {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        let version = library_version(path).map_err(fail)?;
        let environment = ort::init_from(path)
            .map_err(|e| fail(e.to_string()))?
            .with_name("vigil")
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(OrtRuntime {
            path: path.to_path_buf(),
            version,
            environment,
        })
    }

    /// The library file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The library's own version string (for example `1.32.0`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Builds `sessions` sessions for the model at `path` and reads its signature.
    ///
    /// # Errors
    /// [`EngineError::Load`] when ONNX Runtime rejects the file or the graph has inputs or outputs
    /// that are not plain tensors (for example a ZipMap output).
    pub fn load_model(&self, path: &Path, sessions: usize) -> Result<OrtModel, EngineError> {
        let fail = |reason: String| EngineError::Load {
            path: path.to_path_buf(),
            engine: EngineKind::Ort,
            reason,
        };
        let mut pool = Vec::with_capacity(sessions);
        for _ in 0..sessions.max(1) {
            let session = Session::builder(&self.environment)
                .map_err(|e| fail(e.to_string()))?
                .with_intra_threads(1)
                .map_err(|e| fail(e.to_string()))?
                .with_inter_threads(1)
                .map_err(|e| fail(e.to_string()))?
                .commit_from_file(path)
                .map_err(|e| fail(e.to_string()))?;
            pool.push(Mutex::new(session));
        }
        let first = pool
            .first()
            .ok_or_else(|| fail("no session could be created".into()))?
            .lock()
            .map_err(|_| fail("session lock poisoned".into()))?;
        let inputs = first
            .inputs()
            .iter()
            .map(|outlet| spec(outlet.name(), outlet.dtype()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let outputs = first
            .outputs()
            .iter()
            .map(|outlet| spec(outlet.name(), outlet.dtype()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        drop(first);
        Ok(OrtModel {
            signature: Signature { inputs, outputs },
            sessions: pool,
            next: AtomicUsize::new(0),
        })
    }
}

/// Reads `OrtGetApiBase()->GetVersionString()` from the library, so logs name the real version.
#[expect(
    unsafe_code,
    reason = "reading the version needs a call through the library's C entry point"
)]
fn library_version(path: &Path) -> Result<String, String> {
    // SAFETY: loading runs the library's initialisers; the path was chosen by the operator to be
    // ONNX Runtime, and `ort::init_from` loads the same file right after.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
    // SAFETY: `OrtGetApiBase` is ONNX Runtime's documented C entry point with this signature.
    let get_api_base = unsafe {
        library.get::<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase>(b"OrtGetApiBase")
    }
    .map_err(|_| "the file does not export OrtGetApiBase: it is not ONNX Runtime".to_string())?;
    // SAFETY: the entry point takes no arguments and returns a pointer to a static struct.
    let base = unsafe { get_api_base() };
    if base.is_null() {
        return Err("OrtGetApiBase returned null".into());
    }
    // SAFETY: `base` is non-null and points to the library's static OrtApiBase; GetVersionString
    // returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(((*base).GetVersionString)()) };
    Ok(version.to_string_lossy().into_owned())
}

fn element_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::String => DataType::String,
        _ => return None,
    })
}

fn spec(name: &str, dtype: &ValueType) -> Result<TensorSpec, String> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => {
            let dtype = element_type(*ty).ok_or_else(|| {
                format!("`{name}` has element type {ty:?}, which is not supported")
            })?;
            let shape = shape.iter().map(|&dim| usize::try_from(dim).ok()).collect();
            Ok(TensorSpec {
                name: name.to_string(),
                dtype,
                shape,
            })
        }
        other => Err(format!(
            "`{name}` is {other:?}, not a tensor; export classifiers with zipmap=False"
        )),
    }
}

/// A version served by ONNX Runtime: a pool of sessions over the same file.
pub struct OrtModel {
    signature: Signature,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl OrtModel {
    /// Takes a free session if there is one, else waits for the next one in turn.
    fn with_session<R>(
        &self,
        run: impl FnOnce(&mut Session) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.sessions.len();
        for offset in 0..count {
            match self.sessions[(start + offset) % count].try_lock() {
                Ok(mut session) => return run(&mut session),
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(_)) => {
                    return Err(EngineError::Run("session lock poisoned".into()));
                }
            }
        }
        let mut session = self.sessions[start % count]
            .lock()
            .map_err(|_| EngineError::Run("session lock poisoned".into()))?;
        run(&mut session)
    }
}

/// Borrows `tensor` as an ONNX Runtime input: numeric data is viewed in place, strings are
/// copied (ONNX Runtime owns its string tensors).
fn to_value(tensor: &Tensor) -> Result<SessionInputValue<'_>, ort::Error> {
    use ort::value::{Tensor as OrtTensor, TensorRef};
    let shape = tensor.shape().to_vec();
    Ok(match tensor.data() {
        TensorData::Bool(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::U8(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::U16(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::U32(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::U64(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::I8(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::I16(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::I32(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::I64(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::F16(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::F32(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::F64(v) => TensorRef::from_array_view((shape, &v[..]))?
            .into_dyn()
            .into(),
        TensorData::String(v) => OrtTensor::from_string_array((shape, v.as_slice()))?
            .into_dyn()
            .into(),
    })
}

fn from_value(value: &DynValue, dtype: DataType) -> Result<Tensor, EngineError> {
    fn extract<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> Result<(Vec<usize>, Vec<T>), ort::Error> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((dims(shape), data.to_vec()))
    }
    fn dims(shape: &ort::value::Shape) -> Vec<usize> {
        shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect()
    }
    let run_error = |e: ort::Error| EngineError::Run(e.to_string());
    let (shape, data) = match dtype {
        DataType::Bool => extract::<bool>(value).map(|(s, v)| (s, TensorData::Bool(v))),
        DataType::U8 => extract::<u8>(value).map(|(s, v)| (s, TensorData::U8(v))),
        DataType::U16 => extract::<u16>(value).map(|(s, v)| (s, TensorData::U16(v))),
        DataType::U32 => extract::<u32>(value).map(|(s, v)| (s, TensorData::U32(v))),
        DataType::U64 => extract::<u64>(value).map(|(s, v)| (s, TensorData::U64(v))),
        DataType::I8 => extract::<i8>(value).map(|(s, v)| (s, TensorData::I8(v))),
        DataType::I16 => extract::<i16>(value).map(|(s, v)| (s, TensorData::I16(v))),
        DataType::I32 => extract::<i32>(value).map(|(s, v)| (s, TensorData::I32(v))),
        DataType::I64 => extract::<i64>(value).map(|(s, v)| (s, TensorData::I64(v))),
        DataType::F16 => extract::<half::f16>(value).map(|(s, v)| (s, TensorData::F16(v))),
        DataType::F32 => extract::<f32>(value).map(|(s, v)| (s, TensorData::F32(v))),
        DataType::F64 => extract::<f64>(value).map(|(s, v)| (s, TensorData::F64(v))),
        DataType::String => value
            .try_extract_strings()
            .map(|(s, v)| (dims(s), TensorData::String(v))),
    }
    .map_err(run_error)?;
    Tensor::new(shape, data).map_err(|e| EngineError::Run(e.to_string()))
}

impl Model for OrtModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        let run_error = |e: ort::Error| EngineError::Run(e.to_string());
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        for (spec, tensor) in self.signature.inputs.iter().zip(inputs) {
            let value = to_value(tensor).map_err(run_error)?;
            values.push((Cow::Borrowed(spec.name.as_str()), value));
        }
        self.with_session(|session| {
            let outputs = session.run(values).map_err(run_error)?;
            self.signature
                .outputs
                .iter()
                .map(|spec| {
                    let value = outputs.get(&spec.name).ok_or_else(|| {
                        EngineError::Run(format!("output `{}` missing from the run", spec.name))
                    })?;
                    from_value(value, spec.dtype)
                })
                .collect()
        })
    }
}

/// Finds the ONNX Runtime shared library: `explicit` when given, else the `onnxruntime` Python
/// package in the project's `.venv`, else the one `python3` imports.
///
/// # Errors
/// [`EngineError::LibraryNotFound`] listing where it looked.
pub fn locate_library(explicit: Option<&Path>) -> Result<PathBuf, EngineError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let mut searched = Vec::new();
    let mut package_dirs: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(".venv/lib") {
        for entry in entries.flatten() {
            package_dirs.push(entry.path().join("site-packages/onnxruntime"));
        }
    }
    searched.push(".venv/lib/python*/site-packages/onnxruntime".to_string());
    if let Ok(output) = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        && output.status.success()
    {
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
        package_dirs.push(PathBuf::from(dir));
    }
    searched.push("the onnxruntime package of python3".to_string());
    for dir in package_dirs {
        if let Some(found) = library_in(&dir.join("capi")) {
            return Ok(found);
        }
    }
    Err(EngineError::LibraryNotFound {
        searched: searched.join(", "),
    })
}

/// The newest `libonnxruntime.so*` in `dir` (the wheel names it after its version).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with("libonnxruntime.so") || name == "libonnxruntime.dylib"
                })
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|path| path.canonicalize().unwrap_or(path))
}
