//! A registry version's `model.toml`, from what the registry says of it: the version's tags
//! (`vigil.task`, `vigil.labels`, `vigil.features`, `vigil.highlight`, `vigil.threshold`,
//! `vigil.engine`), its run (name, parameters, `val_*`/`validation_*` and `test_*` metrics) and
//! the `MLmodel` file's flavour and signature.

use super::client::{ModelVersion, Run};
use crate::clock;
use crate::engine::EngineKind;
use crate::repository::{Metadata, Scores, Source, Task};
use serde_json::Value;
use std::collections::BTreeMap;
use yaml_rust2::{Yaml, YamlLoader};

/// What vigil reads of an `MLmodel` file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MlModel {
    /// The ONNX file, relative to the version's directory (`flavors.onnx.data`).
    pub onnx_file: Option<String>,
    /// Input columns and tensors of the signature.
    pub inputs: Vec<SignatureField>,
    /// Output columns and tensors of the signature.
    pub outputs: Vec<SignatureField>,
}

/// One input or output of an MLflow signature.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureField {
    /// Column name (tensor specs are often unnamed).
    pub name: Option<String>,
    /// Column type (`double`, `long`, `string`, …) or tensor dtype (`float32`, `int64`, …).
    pub kind: String,
}

impl MlModel {
    /// Reads an `MLmodel` file's text.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<MlModel, String> {
        let documents = YamlLoader::load_from_str(text).map_err(|e| format!("MLmodel: {e}"))?;
        let Some(document) = documents.first() else {
            return Ok(MlModel::default());
        };
        let onnx_file = document["flavors"]["onnx"]["data"]
            .as_str()
            .map(str::to_string);
        let signature = &document["signature"];
        Ok(MlModel {
            onnx_file,
            inputs: fields(&signature["inputs"], "signature.inputs")?,
            outputs: fields(&signature["outputs"], "signature.outputs")?,
        })
    }
}

/// A signature's fields: a JSON list inside a YAML string.
fn fields(yaml: &Yaml, what: &str) -> Result<Vec<SignatureField>, String> {
    let Some(text) = yaml.as_str() else {
        return Ok(Vec::new());
    };
    let list: Vec<Value> =
        serde_json::from_str(text).map_err(|e| format!("MLmodel {what}: {e}"))?;
    Ok(list
        .iter()
        .map(|field| {
            let kind = match field["type"].as_str() {
                Some("tensor") => field["tensor-spec"]["dtype"].as_str().unwrap_or("tensor"),
                Some(kind) => kind,
                None => "",
            };
            SignatureField {
                name: field["name"].as_str().map(str::to_string),
                kind: kind.to_ascii_lowercase(),
            }
        })
        .collect())
}

/// True for the signature types of class labels: integers, strings, booleans.
fn is_label_type(kind: &str) -> bool {
    matches!(
        kind,
        "long" | "integer" | "string" | "boolean" | "bool" | "str" | "object"
    ) || kind.starts_with("int")
        || kind.starts_with("uint")
}

/// Everything a registry version's metadata is built from.
#[derive(Debug)]
pub struct Described<'a> {
    /// The version as the registry gives it.
    pub version: &'a ModelVersion,
    /// Its run, when it has one the registry could give.
    pub run: Option<&'a Run>,
    /// Its `MLmodel`, when it has one.
    pub mlmodel: Option<&'a MlModel>,
    /// Where it came from and what was downloaded.
    pub source: Source,
}

/// The version's metadata.
///
/// # Errors
/// A message naming the tag that is wrong, or saying which tag to set when the task cannot be
/// told from the signature.
pub fn metadata(described: Described<'_>) -> Result<Metadata, String> {
    let tags: BTreeMap<String, String> = described.source.tags.clone();
    let task = match tags.get("vigil.task") {
        Some(text) => serde_json::from_value::<Task>(Value::String(text.trim().to_string()))
            .map_err(|_| {
                format!("tag vigil.task: expected classification or regression, got {text:?}")
            })?,
        None => task_from_signature(described.mlmodel)?,
    };
    let labels = string_list(&tags, "vigil.labels")?.unwrap_or_default();
    let features = match string_list(&tags, "vigil.features")? {
        Some(features) => features,
        None => described
            .mlmodel
            .map(|m| {
                m.inputs
                    .iter()
                    .filter_map(|f| f.name.clone())
                    .collect::<Vec<_>>()
            })
            .filter(|names| {
                described
                    .mlmodel
                    .is_some_and(|m| names.len() == m.inputs.len())
            })
            .unwrap_or_default(),
    };
    let threshold = tags
        .get("vigil.threshold")
        .map(|text| {
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| {
                    format!("tag vigil.threshold: expected a number from 0 to 1, got {text:?}")
                })
        })
        .transpose()?;
    let engine = tags
        .get("vigil.engine")
        .map(|text| {
            serde_json::from_value::<EngineKind>(Value::String(text.trim().to_string()))
                .map_err(|_| format!("tag vigil.engine: expected ort or tract, got {text:?}"))
        })
        .transpose()?
        .unwrap_or_default();
    let mut metrics = Scores::default();
    let mut params = BTreeMap::new();
    if let Some(run) = described.run {
        for (key, value) in &run.metrics {
            if let Some(name) = key
                .strip_prefix("validation_")
                .or_else(|| key.strip_prefix("val_"))
            {
                metrics.validation.insert(name.to_string(), *value);
            } else if let Some(name) = key.strip_prefix("test_") {
                metrics.test.insert(name.to_string(), *value);
            }
        }
        params = run
            .params
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
    }
    let run = described
        .source
        .run_name
        .clone()
        .or_else(|| described.source.run_id.clone());
    Ok(Metadata {
        task,
        created_at: described
            .version
            .creation_timestamp
            .map(clock::rfc3339_millis),
        run,
        description: described
            .version
            .description
            .clone()
            .filter(|d| !d.is_empty()),
        labels,
        features,
        highlight: tags.get("vigil.highlight").cloned(),
        engine,
        threshold,
        params,
        metrics,
        batching: None,
        source: Some(described.source),
    })
}

/// The task an MLflow signature implies: label-typed outputs make a classifier, a single
/// floating-point output a regressor.
fn task_from_signature(mlmodel: Option<&MlModel>) -> Result<Task, String> {
    let outputs = mlmodel.map(|m| m.outputs.as_slice()).unwrap_or_default();
    if outputs.iter().any(|o| is_label_type(&o.kind)) {
        return Ok(Task::Classification);
    }
    if let [only] = outputs
        && (only.kind.starts_with("float") || only.kind == "double")
    {
        return Ok(Task::Regression);
    }
    Err("the task cannot be told from the version's signature: set the version tag vigil.task to classification or regression".into())
}

/// A tag holding a JSON array of strings.
fn string_list(tags: &BTreeMap<String, String>, key: &str) -> Result<Option<Vec<String>>, String> {
    tags.get(key)
        .map(|text| {
            serde_json::from_str::<Vec<String>>(text)
                .map_err(|_| format!("tag {key}: expected a JSON array of strings, got {text:?}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::client::KeyValue;

    const MLMODEL: &str = r#"artifact_path: mlflow-artifacts:/1/models/m-2b/artifacts
flavors:
  onnx: {code: null, data: model.onnx, onnx_version: 1.23.2}
  python_function: {data: model.onnx, loader_module: mlflow.onnx}
mlflow_version: 3.17.2
signature:
  inputs: '[{"type": "double", "name": "sepal_length", "required": true}, {"type": "double", "name": "petal_length", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
  params: null
"#;

    fn version(tags: &[(&str, &str)]) -> (ModelVersion, Source) {
        let version = ModelVersion {
            version: "3".into(),
            creation_timestamp: Some(1_795_454_999_542),
            description: Some("weekly retrain".into()),
            run_id: Some("73c9".into()),
            status: Some("READY".into()),
            tags: tags
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
        };
        let source = Source {
            registry: "mlflow".into(),
            uri: "http://127.0.0.1:5000/".into(),
            name: "iris".into(),
            version: "3".into(),
            run_id: Some("73c9".into()),
            run_name: Some("iris-logreg".into()),
            artifact_uri: "mlflow-artifacts:/1/models/m-2b/artifacts".into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            files: BTreeMap::new(),
        };
        (version, source)
    }

    #[test]
    fn mlmodel_gives_the_onnx_file_and_the_signature() {
        let parsed = MlModel::parse(MLMODEL).expect("parses");
        assert_eq!(parsed.onnx_file.as_deref(), Some("model.onnx"));
        assert_eq!(parsed.inputs.len(), 2);
        assert_eq!(parsed.inputs[0].name.as_deref(), Some("sepal_length"));
        assert_eq!(parsed.outputs[0].kind, "int64");
        assert_eq!(
            MlModel::parse("flavors: {}").expect("parses"),
            MlModel::default()
        );
        assert!(MlModel::parse("signature:\n  inputs: 'not json'\n").is_err());
    }

    #[test]
    fn tags_run_and_signature_make_the_metadata() {
        let mlmodel = MlModel::parse(MLMODEL).expect("parses");
        let (version, source) = version(&[
            ("vigil.labels", r#"["setosa","versicolor","virginica"]"#),
            ("vigil.highlight", "accuracy"),
        ]);
        let run = Run {
            name: Some("iris-logreg".into()),
            params: vec![KeyValue {
                key: "C".into(),
                value: "1.0".into(),
            }],
            metrics: vec![
                ("val_accuracy".into(), 0.95),
                ("validation_f1".into(), 0.94),
                ("test_accuracy".into(), 0.93),
                ("training_loss".into(), 0.2),
            ],
        };
        let meta = metadata(Described {
            version: &version,
            run: Some(&run),
            mlmodel: Some(&mlmodel),
            source,
        })
        .expect("metadata");
        assert_eq!(meta.task, Task::Classification, "int64 output ⇒ classifier");
        assert_eq!(meta.labels, ["setosa", "versicolor", "virginica"]);
        assert_eq!(meta.features, ["sepal_length", "petal_length"]);
        assert_eq!(meta.metrics.validation.get("accuracy"), Some(&0.95));
        assert_eq!(meta.metrics.validation.get("f1"), Some(&0.94));
        assert_eq!(meta.metrics.test.get("accuracy"), Some(&0.93));
        assert_eq!(meta.metrics.validation.len() + meta.metrics.test.len(), 3);
        assert_eq!(meta.params.get("C").map(String::as_str), Some("1.0"));
        assert_eq!(meta.highlight_score(), Some(("accuracy", 0.95)));
        assert_eq!(meta.run.as_deref(), Some("iris-logreg"));
        assert_eq!(meta.created_at.as_deref(), Some("2026-11-23T17:29:59.542Z"));
        let text = toml::to_string(&meta).expect("serialises as model.toml");
        let back: Metadata = toml::from_str(&text).expect("reads back");
        assert_eq!(back, meta);
    }

    #[test]
    fn bad_tags_are_named_and_an_unknown_task_asks_for_the_tag() {
        let (version, source) = version(&[("vigil.labels", "setosa,versicolor")]);
        let error = metadata(Described {
            version: &version,
            run: None,
            mlmodel: None,
            source: source.clone(),
        })
        .expect_err("no task");
        assert!(error.contains("vigil.task"), "{error}");
        let (version, source) = version_with_task(&version, source, "classification");
        let error = metadata(Described {
            version: &version,
            run: None,
            mlmodel: None,
            source,
        })
        .expect_err("labels are not JSON");
        assert!(error.contains("vigil.labels"), "{error}");
    }

    fn version_with_task(
        version: &ModelVersion,
        mut source: Source,
        task: &str,
    ) -> (ModelVersion, Source) {
        source.tags.insert("vigil.task".into(), task.into());
        (version.clone(), source)
    }

    #[test]
    fn a_single_float_output_is_a_regressor() {
        let mlmodel = MlModel {
            onnx_file: None,
            inputs: vec![],
            outputs: vec![SignatureField {
                name: None,
                kind: "float32".into(),
            }],
        };
        assert_eq!(task_from_signature(Some(&mlmodel)), Ok(Task::Regression));
    }
}
