//! Reading a model's outputs as predictions: which output is the label, the class probabilities
//! or the regression value, and the per-row view the simple JSON API returns.

use super::threshold::confidences;
use crate::engine::{DataType, Signature, Tensor, TensorData};
use crate::repository::{Metadata, Task};

/// Which outputs carry the label, the probabilities and the value, found once at load time from
/// the signature (element type and rank), never from output names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputRoles {
    /// Index of the label output (integer or string, one per row).
    pub label: Option<usize>,
    /// Index of the class-probability output (float, `[N, C]`).
    pub probabilities: Option<usize>,
    /// Index of the regression output (float, `[N]` or `[N, 1]`).
    pub value: Option<usize>,
}

fn is_float(dtype: DataType) -> bool {
    matches!(dtype, DataType::F16 | DataType::F32 | DataType::F64)
}

impl OutputRoles {
    /// Finds the roles in `signature` for a model of `task`.
    pub fn find(signature: &Signature, task: Task) -> OutputRoles {
        let outputs = &signature.outputs;
        let label = outputs.iter().position(|o| {
            matches!(o.dtype, DataType::I64 | DataType::I32 | DataType::String)
                && (o.shape.len() == 1 || (o.shape.len() == 2 && o.shape[1] == Some(1)))
        });
        match task {
            Task::Classification => OutputRoles {
                label,
                probabilities: outputs
                    .iter()
                    .position(|o| is_float(o.dtype) && o.shape.len() == 2),
                value: None,
            },
            Task::Regression => OutputRoles {
                label: None,
                probabilities: None,
                value: outputs.iter().position(|o| {
                    is_float(o.dtype)
                        && (o.shape.len() == 1 || (o.shape.len() == 2 && o.shape[1] == Some(1)))
                }),
            },
        }
    }
}

/// Per-row prediction values: the top-class probability (classifiers) or the regression value.
/// `None` when the version has neither output.
pub fn prediction_values(outputs: &[Tensor], roles: OutputRoles) -> Option<Vec<f64>> {
    if let Some(index) = roles.probabilities {
        return Some(
            confidences(&outputs[index])
                .into_iter()
                .map(f64::from)
                .collect(),
        );
    }
    let tensor = &outputs[roles.value?];
    Some(
        (0..tensor.data().len())
            .filter_map(|i| tensor.data().get_f64(i))
            .collect(),
    )
}

/// Class index per row: the integer label when it is a valid class index, else the most probable
/// of `classes` columns.
pub fn class_indices(
    outputs: &[Tensor],
    roles: OutputRoles,
    classes: usize,
    rows: usize,
) -> Vec<usize> {
    let label = roles.label.map(|index| outputs[index].data());
    let probabilities = roles.probabilities.map(|index| &outputs[index]);
    (0..rows)
        .filter_map(|row| {
            if let Some(class) = label
                .filter(|data| !matches!(data, TensorData::String(_)))
                .and_then(|data| data.get_f64(row))
                .filter(|c| *c >= 0.0 && c.fract() == 0.0 && (*c as usize) < classes)
            {
                return Some(class as usize);
            }
            let tensor = probabilities?;
            (0..classes)
                .filter_map(|c| tensor.data().get_f64(row * classes + c).map(|p| (c, p)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(c, _)| c)
        })
        .collect()
}

/// One row's prediction in human terms.
#[derive(Debug, Clone, PartialEq)]
pub enum RowPrediction {
    /// A class label and, when the model gives them, probabilities by class name (class order).
    Class {
        /// The predicted class name.
        label: String,
        /// `(class name, probability)` in class order.
        probabilities: Vec<(String, f64)>,
    },
    /// A regression value.
    Value(f64),
}

/// Turns `outputs` (in signature order) into one [`RowPrediction`] per row.
///
/// Integer labels are mapped to names through `metadata.labels` when in range. A classifier
/// without a label output takes the most probable class.
pub fn row_predictions(
    outputs: &[Tensor],
    roles: OutputRoles,
    metadata: &Metadata,
    rows: usize,
) -> Vec<RowPrediction> {
    let mut predictions = Vec::with_capacity(rows);
    for row in 0..rows {
        if let Some(index) = roles.value {
            let value = outputs[index].data().get_f64(row).unwrap_or(f64::NAN);
            predictions.push(RowPrediction::Value(value));
            continue;
        }
        let probabilities: Vec<(String, f64)> = roles
            .probabilities
            .map(|index| {
                let tensor = &outputs[index];
                let classes = tensor.shape().get(1).copied().unwrap_or(0);
                (0..classes)
                    .map(|class| {
                        let p = tensor
                            .data()
                            .get_f64(row * classes + class)
                            .unwrap_or(f64::NAN);
                        (metadata.class_name(class), p)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let label = match roles.label.map(|index| outputs[index].data()) {
            Some(TensorData::String(names)) => names.get(row).cloned().unwrap_or_default(),
            Some(data) => match data.get_f64(row) {
                Some(class) if class >= 0.0 && class.fract() == 0.0 => {
                    metadata.class_name(class as usize)
                }
                _ => data.get_text(row).unwrap_or_default(),
            },
            None => probabilities
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(name, _)| name.clone())
                .unwrap_or_default(),
        };
        predictions.push(RowPrediction::Class {
            label,
            probabilities,
        });
    }
    predictions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TensorSpec;

    fn spec(name: &str, dtype: DataType, shape: Vec<Option<usize>>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape,
        }
    }

    fn metadata(labels: &[&str]) -> Metadata {
        let mut meta: Metadata = toml::from_str("task = \"classification\"").expect("metadata");
        meta.labels = labels.iter().map(|s| s.to_string()).collect();
        meta
    }

    #[test]
    fn roles_come_from_types_not_names() {
        let signature = Signature {
            inputs: vec![],
            outputs: vec![
                spec("p", DataType::F32, vec![None, Some(3)]),
                spec("y", DataType::I64, vec![None]),
            ],
        };
        let roles = OutputRoles::find(&signature, Task::Classification);
        assert_eq!((roles.label, roles.probabilities), (Some(1), Some(0)));
        let signature = Signature {
            inputs: vec![],
            outputs: vec![spec("v", DataType::F32, vec![None, Some(1)])],
        };
        assert_eq!(
            OutputRoles::find(&signature, Task::Regression).value,
            Some(0)
        );
    }

    #[test]
    fn integer_labels_map_to_names_and_fall_back_to_numbers() {
        let outputs = vec![
            Tensor::new(vec![2], TensorData::I64(vec![1, 7])).expect("labels"),
            Tensor::new(vec![2, 2], TensorData::F32(vec![0.25, 0.75, 0.5, 0.5])).expect("probs"),
        ];
        let roles = OutputRoles {
            label: Some(0),
            probabilities: Some(1),
            value: None,
        };
        let rows = row_predictions(&outputs, roles, &metadata(&["no", "yes"]), 2);
        assert_eq!(
            rows[0],
            RowPrediction::Class {
                label: "yes".into(),
                probabilities: vec![("no".into(), 0.25), ("yes".into(), 0.75)]
            }
        );
        assert!(matches!(&rows[1], RowPrediction::Class { label, .. } if label == "7"));
    }
}
