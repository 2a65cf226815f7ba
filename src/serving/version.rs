//! A loaded, warmed version: engine, metadata, output roles, and the measured cost that decides
//! whether a request runs inline on the async worker or on the blocking pool.

use super::batcher::Batcher;
use super::outputs::{OutputRoles, prediction_values};
use super::threshold;
use crate::engine::{
    DataType, EngineError, Engines, Model, Signature, Tensor, TensorData, TensorSpec,
};
use crate::metrics::Metrics;
use crate::monitor::{MonitorSettings, ReferenceProfile, VersionMonitor};
use crate::repository::{Metadata, Reference, RepositoryError, Task, VersionDir};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows used for the warm-up and cost measurement (from `reference.csv` when available).
const WARM_UP_ROWS: usize = 32;
/// Timed runs per batch size during warm-up; the median is kept.
const WARM_UP_RUNS: usize = 5;

/// Why a version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Its files are missing or invalid.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The engine could not load or run it.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The warm-up inference failed or gave outputs of the wrong shape.
    #[error("warm-up failed: {0}")]
    WarmUp(String),
}

/// Measured inference cost: `fixed + per_row × rows`, from the warm-up runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceCost {
    /// Cost of a one-row call.
    pub fixed: Duration,
    /// Extra cost of each further row.
    pub per_row: Duration,
}

impl InferenceCost {
    /// Expected time for a call with `rows` rows.
    pub fn estimate(&self, rows: usize) -> Duration {
        let extra = u32::try_from(rows.saturating_sub(1)).unwrap_or(u32::MAX);
        self.fixed
            .saturating_add(self.per_row.saturating_mul(extra))
    }
}

/// Everything loading a version needs: the engines, the gateway's metrics and the monitoring
/// settings.
#[derive(Clone)]
pub struct LoadContext {
    /// The engines.
    pub engines: Engines,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// Monitoring settings.
    pub monitor: MonitorSettings,
}

/// A version ready to serve. Immutable once built (its monitor counts); shared as
/// `Arc<LoadedVersion>`.
pub struct LoadedVersion {
    /// Model name (shared: every logged row and metric of the version names it).
    pub model: Arc<str>,
    /// Version name.
    pub version: Arc<str>,
    /// Its `model.toml`.
    pub metadata: Metadata,
    /// Which outputs are label, probabilities and value.
    pub roles: OutputRoles,
    /// Measured cost per call.
    pub cost: InferenceCost,
    /// Time spent loading and warming up.
    pub load_time: Duration,
    /// Outputs of responses: the model's, then `confidence` and `accepted` for classifiers.
    pub served_outputs: Vec<TensorSpec>,
    /// Monitoring: windows, drift, outliers, request and threshold figures.
    pub monitor: VersionMonitor,
    /// The dynamic batcher, when `[batching]` turns it on.
    pub batcher: Option<Batcher>,
    class_names: Vec<String>,
    engine: Arc<dyn Model>,
}

impl std::fmt::Debug for LoadedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedVersion")
            .field("model", &self.model)
            .field("version", &self.version)
            .field("engine", &self.metadata.engine)
            .finish_non_exhaustive()
    }
}

impl LoadedVersion {
    /// Loads `dir` with the engine its metadata names, runs the warm-up, and measures the cost.
    ///
    /// # Errors
    /// [`LoadError`] naming the file, the engine's complaint or the failed warm-up.
    pub fn load(dir: &VersionDir, context: &LoadContext) -> Result<LoadedVersion, LoadError> {
        let started = Instant::now();
        let metadata = dir.read_metadata()?;
        let onnx = dir.onnx_path();
        if !onnx.is_file() {
            return Err(RepositoryError::MissingModel(dir.path.clone()).into());
        }
        let reference = dir.read_reference()?;
        let engine: Arc<dyn Model> = Arc::from(context.engines.load(metadata.engine, &onnx)?);
        let roles = OutputRoles::find(engine.signature(), metadata.task);
        let cost = warm_up(engine.as_ref(), reference.as_ref())?;
        let mut served_outputs = engine.signature().outputs.clone();
        served_outputs.extend(threshold::added_outputs(&served_outputs, roles));
        let profile = reference
            .as_ref()
            .filter(|reference| profiles(engine.signature(), reference))
            .map(|reference| {
                ReferenceProfile::build(
                    reference,
                    reference_predictions(engine.as_ref(), roles, reference),
                )
            })
            .unwrap_or_default();
        let class_names = class_names(engine.signature(), roles, &metadata);
        let batcher = metadata.batching.and_then(|settings| {
            let labels = [
                ("model", dir.model.as_str()),
                ("version", dir.version.as_str()),
            ];
            let counters = (
                context.metrics.counter(crate::metrics::BATCHES, &labels),
                context
                    .metrics
                    .counter(crate::metrics::BATCHED_REQUESTS, &labels),
            );
            Batcher::start(Arc::clone(&engine), settings, counters)
        });
        let load_time = started.elapsed();
        let monitor = VersionMonitor::new(
            &dir.model,
            &dir.version,
            profile,
            class_names.clone(),
            load_time,
            &context.metrics,
            context.monitor,
        );
        Ok(LoadedVersion {
            model: Arc::from(dir.model.as_str()),
            version: Arc::from(dir.version.as_str()),
            metadata,
            roles,
            cost,
            load_time,
            served_outputs,
            monitor,
            batcher,
            class_names,
            engine,
        })
    }

    /// Class names watched by monitoring (empty for regressors).
    pub fn monitor_classes(&self) -> &[String] {
        &self.class_names
    }

    /// The model's inputs and outputs.
    pub fn signature(&self) -> &Signature {
        self.engine.signature()
    }

    /// Runs the engine on inputs already validated against the signature.
    ///
    /// # Errors
    /// [`EngineError::Run`] from the runtime.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        self.engine.run(inputs)
    }
}

/// Reference rows are run through the model in batches of this many rows at load.
const PROFILE_BATCH: usize = 512;

/// Class names of a classifier, in probability-column order: its labels, else the column
/// indices. Empty for regressors.
fn class_names(signature: &Signature, roles: OutputRoles, metadata: &Metadata) -> Vec<String> {
    if metadata.task != Task::Classification {
        return Vec::new();
    }
    let columns = roles
        .probabilities
        .and_then(|index| signature.outputs[index].shape.get(1).copied().flatten())
        .unwrap_or(metadata.labels.len());
    (0..columns.max(metadata.labels.len()))
        .map(|class| metadata.class_name(class))
        .collect()
}

/// True when `reference` can profile the model's inputs: one numeric 2-D input of the
/// reference's width, and at least one row.
fn profiles(signature: &Signature, reference: &Reference) -> bool {
    let width = reference.features.len();
    match signature.inputs.as_slice() {
        [input] => {
            input.shape.len() == 2
                && input.dtype != DataType::String
                && input.shape[1].is_none_or(|w| w == width)
                && !reference.rows.is_empty()
        }
        _ => false,
    }
}

/// The model's own predictions on the reference rows (confidence or value), run in batches of
/// [`PROFILE_BATCH`] rows. Stops at the first batch the model cannot run.
fn reference_predictions(
    engine: &dyn Model,
    roles: OutputRoles,
    reference: &Reference,
) -> Vec<f64> {
    let width = reference.features.len();
    let Some(input) = engine.signature().inputs.first() else {
        return Vec::new();
    };
    let mut predictions = Vec::with_capacity(reference.rows.len());
    for chunk in reference.rows.chunks(PROFILE_BATCH) {
        let values: Vec<f64> = chunk.iter().flatten().copied().collect();
        let Ok(data) = crate::engine::cast(TensorData::F64(values), input.dtype) else {
            break;
        };
        let Ok(tensor) = Tensor::new(vec![chunk.len(), width], data) else {
            break;
        };
        match engine.run(&[tensor]) {
            Ok(outputs) => {
                predictions.extend(prediction_values(&outputs, roles).unwrap_or_default())
            }
            Err(_) => break,
        }
    }
    predictions
}

/// Builds `rows` warm-up rows for each input: reference rows when the model has one 2-D input of
/// the reference's width, else zeros (empty strings for text inputs).
fn warm_up_inputs(
    signature: &Signature,
    reference: Option<&Reference>,
    rows: usize,
) -> Result<Vec<Tensor>, String> {
    if let ([input], Some(reference)) = (signature.inputs.as_slice(), reference)
        && input.shape.len() == 2
        && input.shape[1].is_none_or(|width| width == reference.features.len())
        && !reference.rows.is_empty()
        && input.dtype != DataType::String
    {
        let width = reference.features.len();
        let values: Vec<f64> = reference
            .rows
            .iter()
            .cycle()
            .take(rows)
            .flatten()
            .copied()
            .collect();
        let data = crate::engine::cast(TensorData::F64(values), input.dtype)
            .map_err(|_| "reference rows do not fit the input type".to_string())?;
        return Tensor::new(vec![rows, width], data)
            .map(|tensor| vec![tensor])
            .map_err(|e| e.to_string());
    }
    signature
        .inputs
        .iter()
        .map(|input| {
            let shape: Vec<usize> = input
                .shape
                .iter()
                .enumerate()
                .map(|(axis, dim)| match (axis, dim) {
                    (0, None) => rows,
                    (_, Some(d)) => *d,
                    (_, None) => 1,
                })
                .collect();
            let count = crate::engine::element_count(&shape).ok_or("input shape overflows")?;
            let data = match input.dtype {
                DataType::String => TensorData::String(vec![String::new(); count]),
                dtype => crate::engine::cast(TensorData::F64(vec![0.0; count]), dtype)
                    .map_err(|e| e.to_string())?,
            };
            Tensor::new(shape, data).map_err(|e| e.to_string())
        })
        .collect()
}

fn median_run(engine: &dyn Model, inputs: &[Tensor]) -> Result<Duration, LoadError> {
    let mut times = Vec::with_capacity(WARM_UP_RUNS);
    for _ in 0..WARM_UP_RUNS {
        let started = Instant::now();
        let outputs = engine.run(inputs)?;
        times.push(started.elapsed());
        if outputs.len() != engine.signature().outputs.len() {
            return Err(LoadError::WarmUp(format!(
                "the model returned {} outputs, its signature declares {}",
                outputs.len(),
                engine.signature().outputs.len()
            )));
        }
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Runs the model on one row and on [`WARM_UP_ROWS`] rows, and fits the cost line through them.
fn warm_up(engine: &dyn Model, reference: Option<&Reference>) -> Result<InferenceCost, LoadError> {
    let batched = engine
        .signature()
        .inputs
        .iter()
        .all(|input| input.shape.first().is_some_and(Option::is_none));
    let one = warm_up_inputs(engine.signature(), reference, 1).map_err(LoadError::WarmUp)?;
    let fixed = median_run(engine, &one)?;
    if !batched {
        return Ok(InferenceCost {
            fixed,
            per_row: Duration::ZERO,
        });
    }
    let many =
        warm_up_inputs(engine.signature(), reference, WARM_UP_ROWS).map_err(LoadError::WarmUp)?;
    let total = median_run(engine, &many)?;
    let extra_rows = u32::try_from(WARM_UP_ROWS - 1).unwrap_or(1);
    Ok(InferenceCost {
        fixed,
        per_row: total.saturating_sub(fixed) / extra_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_grows_with_rows() {
        let cost = InferenceCost {
            fixed: Duration::from_micros(10),
            per_row: Duration::from_micros(2),
        };
        assert_eq!(cost.estimate(1), Duration::from_micros(10));
        assert_eq!(cost.estimate(0), Duration::from_micros(10));
        assert_eq!(cost.estimate(11), Duration::from_micros(30));
    }
}
