//! The tract backend (feature `tract`): reading a version's signature from the ONNX proto, typing
//! its inputs with a symbolic batch, and running the optimized plan, which is shared across threads
//! without a lock.
//!
//! tract covers linear and logistic models, MLPs and plain `ai.onnx` graphs. It refuses at load
//! what it cannot run (for example `ml:Scaler`, `ml:TreeEnsembleRegressor`, `ml:ZipMap` or string
//! tensors), and the reason names the operator. For binary `TreeEnsembleClassifier` models tract
//! 0.23.9 always answers class 0 as the label (its probabilities are right): serve tree models
//! with `ort`.

use super::{DataType, EngineError, EngineKind, Model, Signature, Tensor, TensorData, TensorSpec};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType as OnnxType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as OnnxDim;
use tract_onnx::prelude::{
    Datum, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    SymbolScope, TDim, TValue, ToDim, TractError, TractResult, TypedSimplePlan,
};

/// A version served by tract: its signature and one optimized plan that serves any batch size.
pub struct TractModel {
    signature: Signature,
    plan: std::sync::Arc<TypedSimplePlan>,
}

impl TractModel {
    /// Reads the ONNX file at `path`, builds its signature, gives every open input dimension a
    /// symbol and optimizes the graph into a runnable plan.
    ///
    /// # Errors
    /// [`EngineError::Load`] when the file cannot be read, declares element types tract cannot
    /// run (strings) or that vigil does not know, or uses an operator tract does not implement
    /// (the reason names it).
    pub fn load(path: &Path) -> Result<TractModel, EngineError> {
        let fail = |reason: String| EngineError::Load {
            path: path.to_path_buf(),
            engine: EngineKind::Tract,
            reason,
        };
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_path(path)
            .map_err(|e| fail(format!("{e:#}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| fail("the file holds no graph".into()))?;
        let signature = read_signature(graph).map_err(fail)?;
        // tract indexes and asserts freely on malformed graphs; a panic there must make this
        // version unavailable, not take the gateway down.
        let plan = catch_unwind(AssertUnwindSafe(|| {
            build_plan(&onnx, &proto, path, &signature)
        }))
        .map_err(|panic| fail(format!("tract panicked: {}", panic_message(&*panic))))?
        .map_err(|e| fail(format!("{e:#}")))?;
        let outputs = plan
            .model()
            .output_outlets()
            .map_err(|e| fail(format!("{e:#}")))?
            .len();
        if outputs != signature.outputs.len() {
            return Err(fail(format!(
                "the plan has {outputs} outputs but the graph declares {}",
                signature.outputs.len()
            )));
        }
        Ok(TractModel { signature, plan })
    }
}

/// Parses the proto into a model, sets a fact on every input (one symbol per open dimension;
/// an unnamed first dimension is the shared batch symbol `N`) and optimizes it.
fn build_plan(
    onnx: &tract_onnx::Onnx,
    proto: &pb::ModelProto,
    path: &Path,
    signature: &Signature,
) -> TractResult<std::sync::Arc<TypedSimplePlan>> {
    let dir = path.parent().and_then(Path::to_str);
    let parsed = onnx.parse(proto, dir)?;
    if !parsed.unresolved_inputs.is_empty() {
        anyhow::bail!(
            "the graph uses values nothing produces: {}",
            parsed.unresolved_inputs.join(", ")
        );
    }
    let mut model = parsed.model;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| anyhow::format_err!("the file holds no graph"))?;
    let declared = graph_inputs(graph);
    let sources = model.input_outlets()?.to_vec();
    for (index, outlet) in sources.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let (Some(spec), Some(info)) = (
            signature.inputs.iter().find(|spec| spec.name == name),
            declared.iter().find(|info| info.name == name),
        ) else {
            anyhow::bail!("tract input `{name}` is not a graph input");
        };
        let fact = input_fact(&model.symbols, spec, info, index);
        model.set_input_fact(index, fact)?;
    }
    model.into_optimized()?.into_runnable()
}

/// The fact tract needs for one input: its element type, and its shape with every dimension that
/// is not a fixed size replaced by a symbol.
fn input_fact(
    symbols: &SymbolScope,
    spec: &TensorSpec,
    info: &pb::ValueInfoProto,
    index: usize,
) -> InferenceFact {
    let dt = datum_type(spec.dtype);
    let Some(shape) = tensor_type(info).and_then(|tensor| tensor.shape.as_ref()) else {
        return InferenceFact::dt(dt);
    };
    let dims: Vec<TDim> = shape
        .dim
        .iter()
        .enumerate()
        .map(|(axis, dim)| match &dim.value {
            Some(OnnxDim::DimValue(size)) if *size > 0 => size.to_dim(),
            Some(OnnxDim::DimParam(name)) if !name.is_empty() && name != "?" => {
                tract_onnx::dim_expr::parse_onnx_dim(symbols, name)
                    .unwrap_or_else(|_| symbols.sym(&format!("in{index}_{axis}")).to_dim())
            }
            _ if axis == 0 => symbols.sym("N").to_dim(),
            _ => symbols.sym(&format!("in{index}_{axis}")).to_dim(),
        })
        .collect();
    InferenceFact::dt_shape(dt, dims)
}

/// The graph inputs that are real inputs (not initializers with a default value).
fn graph_inputs(graph: &pb::GraphProto) -> Vec<&pb::ValueInfoProto> {
    graph
        .input
        .iter()
        .filter(|input| !graph.initializer.iter().any(|init| init.name == input.name))
        .collect()
}

fn tensor_type(info: &pb::ValueInfoProto) -> Option<&pb::type_proto::Tensor> {
    match info.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(tensor) => Some(tensor),
    }
}

/// Inputs (initializers excluded) and outputs as the proto declares them.
fn read_signature(graph: &pb::GraphProto) -> Result<Signature, String> {
    let inputs = graph_inputs(graph)
        .into_iter()
        .map(|info| spec("input", info))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = graph
        .output
        .iter()
        .map(|info| spec("output", info))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Signature { inputs, outputs })
}

fn spec(role: &str, info: &pb::ValueInfoProto) -> Result<TensorSpec, String> {
    let name = &info.name;
    let tensor = tensor_type(info).ok_or_else(|| {
        format!("{role} `{name}` is not a tensor; export classifiers with zipmap=False")
    })?;
    let onnx_type = OnnxType::try_from(tensor.elem_type).unwrap_or(OnnxType::Undefined);
    let dtype = match onnx_type {
        OnnxType::Bool => DataType::Bool,
        OnnxType::Uint8 => DataType::U8,
        OnnxType::Uint16 => DataType::U16,
        OnnxType::Uint32 => DataType::U32,
        OnnxType::Uint64 => DataType::U64,
        OnnxType::Int8 => DataType::I8,
        OnnxType::Int16 => DataType::I16,
        OnnxType::Int32 => DataType::I32,
        OnnxType::Int64 => DataType::I64,
        OnnxType::Float16 => DataType::F16,
        OnnxType::Float => DataType::F32,
        OnnxType::Double => DataType::F64,
        OnnxType::String => {
            return Err(format!(
                "{role} `{name}` holds strings, which tract cannot run; serve this version \
                 with engine = \"ort\""
            ));
        }
        other => {
            return Err(format!(
                "{role} `{name}` has element type {} ({}), which is not supported",
                other.as_str_name(),
                tensor.elem_type
            ));
        }
    };
    let shape = tensor
        .shape
        .as_ref()
        .map(|shape| {
            shape
                .dim
                .iter()
                .map(|dim| match dim.value {
                    Some(OnnxDim::DimValue(size)) if size > 0 => usize::try_from(size).ok(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(TensorSpec {
        name: name.clone(),
        dtype,
        shape,
    })
}

fn datum_type(dtype: DataType) -> DatumType {
    match dtype {
        DataType::Bool => DatumType::Bool,
        DataType::U8 => DatumType::U8,
        DataType::U16 => DatumType::U16,
        DataType::U32 => DatumType::U32,
        DataType::U64 => DatumType::U64,
        DataType::I8 => DatumType::I8,
        DataType::I16 => DatumType::I16,
        DataType::I32 => DatumType::I32,
        DataType::I64 => DatumType::I64,
        DataType::F16 => DatumType::F16,
        DataType::F32 => DatumType::F32,
        DataType::F64 => DatumType::F64,
        DataType::String => DatumType::String,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

fn to_value(tensor: &Tensor) -> TractResult<TValue> {
    use tract_onnx::prelude::Tensor as TractTensor;
    let shape = tensor.shape();
    let tensor = match tensor.data() {
        TensorData::Bool(v) => TractTensor::from_shape(shape, v),
        TensorData::U8(v) => TractTensor::from_shape(shape, v),
        TensorData::U16(v) => TractTensor::from_shape(shape, v),
        TensorData::U32(v) => TractTensor::from_shape(shape, v),
        TensorData::U64(v) => TractTensor::from_shape(shape, v),
        TensorData::I8(v) => TractTensor::from_shape(shape, v),
        TensorData::I16(v) => TractTensor::from_shape(shape, v),
        TensorData::I32(v) => TractTensor::from_shape(shape, v),
        TensorData::I64(v) => TractTensor::from_shape(shape, v),
        TensorData::F16(v) => TractTensor::from_shape(shape, v),
        TensorData::F32(v) => TractTensor::from_shape(shape, v),
        TensorData::F64(v) => TractTensor::from_shape(shape, v),
        TensorData::String(_) => {
            anyhow::bail!("tract cannot run string tensors")
        }
    }?;
    Ok(tensor.into_tvalue())
}

/// Converts one output to `dtype` (tract may hand labels back as `TDim`) and copies it out.
fn from_value(value: &TValue, dtype: DataType) -> TractResult<Tensor> {
    fn extract<T: Datum + Clone>(value: &TValue) -> TractResult<Vec<T>> {
        let cast = value.cast_to::<T>()?;
        Ok(cast.try_as_plain_ram()?.as_slice::<T>()?.to_vec())
    }
    let data = match dtype {
        DataType::Bool => TensorData::Bool(extract(value)?),
        DataType::U8 => TensorData::U8(extract(value)?),
        DataType::U16 => TensorData::U16(extract(value)?),
        DataType::U32 => TensorData::U32(extract(value)?),
        DataType::U64 => TensorData::U64(extract(value)?),
        DataType::I8 => TensorData::I8(extract(value)?),
        DataType::I16 => TensorData::I16(extract(value)?),
        DataType::I32 => TensorData::I32(extract(value)?),
        DataType::I64 => TensorData::I64(extract(value)?),
        DataType::F16 => TensorData::F16(extract(value)?),
        DataType::F32 => TensorData::F32(extract(value)?),
        DataType::F64 => TensorData::F64(extract(value)?),
        DataType::String => TensorData::String(extract(value)?),
    };
    Ok(Tensor::new(value.shape().to_vec(), data)?)
}

impl TractModel {
    fn run_plan(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        let run_error = |e: TractError| EngineError::Run(format!("{e:#}"));
        let values = inputs
            .iter()
            .map(to_value)
            .collect::<TractResult<_>>()
            .map_err(run_error)?;
        let outputs = self.plan.run(values).map_err(run_error)?;
        if outputs.len() != self.signature.outputs.len() {
            return Err(EngineError::Run(format!(
                "tract returned {} outputs, the graph declares {}",
                outputs.len(),
                self.signature.outputs.len()
            )));
        }
        self.signature
            .outputs
            .iter()
            .zip(&outputs)
            .map(|(spec, value)| {
                from_value(value, spec.dtype)
                    .map_err(|e| EngineError::Run(format!("output `{}`: {e:#}", spec.name)))
            })
            .collect()
    }
}

impl Model for TractModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        if inputs.len() != self.signature.inputs.len() {
            return Err(EngineError::Run(format!(
                "the model takes {} inputs, {} given",
                self.signature.inputs.len(),
                inputs.len()
            )));
        }
        catch_unwind(AssertUnwindSafe(|| self.run_plan(inputs))).unwrap_or_else(|panic| {
            Err(EngineError::Run(format!(
                "tract panicked: {}",
                panic_message(&*panic)
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn onnx_path(version: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(version)
            .join("model.onnx")
    }

    fn load(version: &str) -> TractModel {
        TractModel::load(&onnx_path(version)).unwrap_or_else(|e| panic!("{version}: {e}"))
    }

    #[test]
    fn signature_comes_from_the_proto() {
        let iris = load("iris/1");
        let sig = iris.signature();
        assert_eq!(sig.inputs.len(), 1);
        assert_eq!(sig.inputs[0].dtype, DataType::F32);
        assert_eq!(sig.inputs[0].shape, vec![None, Some(4)]);
        let outputs: Vec<_> = sig
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.dtype, o.shape.clone()))
            .collect();
        assert_eq!(
            outputs,
            vec![
                ("label", DataType::I64, vec![None]),
                ("probabilities", DataType::F32, vec![None, Some(3)]),
            ]
        );
    }

    #[test]
    fn one_plan_serves_every_batch_size() {
        let mlp = load("iris/3");
        for rows in [1usize, 5, 33] {
            let input = Tensor::new(vec![rows, 4], TensorData::F32(vec![5.0; rows * 4]))
                .expect("valid shape");
            let outputs = mlp.run(&[input]).expect("runs");
            assert_eq!(outputs[0].shape(), &[rows]);
            assert_eq!(outputs[0].dtype(), DataType::I64);
            assert_eq!(outputs[1].shape(), &[rows, 3]);
            assert_eq!(outputs[1].dtype(), DataType::F32);
        }
    }

    #[test]
    fn unsupported_operators_are_named() {
        for (version, op) in [
            ("breast_cancer/1", "Scaler"),
            ("diabetes/2", "TreeEnsembleRegressor"),
        ] {
            match TractModel::load(&onnx_path(version)) {
                Err(EngineError::Load { engine, reason, .. }) => {
                    assert_eq!(engine, EngineKind::Tract);
                    assert!(reason.contains(op), "{version}: {reason}");
                }
                Err(other) => panic!("{version}: {other}"),
                Ok(_) => panic!("{version} should not load with tract"),
            }
        }
    }
}
