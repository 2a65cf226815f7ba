//! Fitting request tensors to a version's signature: names, ranks, fixed dimensions, batch size
//! and element types, each failure naming the request field.

use super::ServingError;
use crate::engine::{Signature, Tensor, cast};

/// One request tensor, in the datatype the client sent, with the request field it came from.
#[derive(Debug, Clone)]
pub struct NamedInput {
    /// The input's name in the model.
    pub name: String,
    /// Where it sits in the request (`inputs[0]`, `instances`), for error messages.
    pub field: String,
    /// The values as sent.
    pub tensor: Tensor,
}

fn shape_text(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("-1".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Orders `inputs` as the signature does, checks shapes and the batch size, and converts element
/// types. Returns the tensors and the number of rows.
///
/// # Errors
/// [`ServingError::InvalidInput`] naming the field at fault, or [`ServingError::TooManyRows`].
pub fn fit_inputs(
    signature: &Signature,
    inputs: Vec<NamedInput>,
    max_rows: usize,
) -> Result<(Vec<Tensor>, usize), ServingError> {
    let expected_names = || {
        let names: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
        format!("one of [{}]", names.join(", "))
    };
    let mut slots: Vec<Option<NamedInput>> = vec![None; signature.inputs.len()];
    for input in inputs {
        let Some(index) = signature.inputs.iter().position(|s| s.name == input.name) else {
            return Err(ServingError::invalid(
                format!("{}.name", input.field),
                format!(
                    "the model has no input `{}`; expected {}",
                    input.name,
                    expected_names()
                ),
            ));
        };
        if slots[index].is_some() {
            return Err(ServingError::invalid(
                format!("{}.name", input.field),
                format!("input `{}` is given more than once", input.name),
            ));
        }
        slots[index] = Some(input);
    }
    let mut rows: Option<usize> = None;
    let mut tensors = Vec::with_capacity(slots.len());
    for (spec, slot) in signature.inputs.iter().zip(slots) {
        let Some(input) = slot else {
            return Err(ServingError::invalid(
                "inputs",
                format!(
                    "missing input `{}` ({} {})",
                    spec.name,
                    spec.dtype,
                    shape_text(&spec.shape)
                ),
            ));
        };
        let shape = input.tensor.shape();
        let fits = shape.len() == spec.shape.len()
            && shape
                .iter()
                .zip(&spec.shape)
                .all(|(&got, want)| want.is_none_or(|w| w == got));
        if !fits {
            return Err(ServingError::invalid(
                format!("{}.shape", input.field),
                format!(
                    "input `{}` expects shape {} (-1 = any size), got {:?}",
                    spec.name,
                    shape_text(&spec.shape),
                    shape
                ),
            ));
        }
        if spec.shape.first().is_some_and(Option::is_none) {
            let batch = shape[0];
            if batch == 0 {
                return Err(ServingError::invalid(
                    format!("{}.shape", input.field),
                    "empty batch; expected at least one row",
                ));
            }
            if batch > max_rows {
                return Err(ServingError::TooManyRows {
                    field: format!("{}.shape", input.field),
                    rows: batch,
                    max: max_rows,
                });
            }
            if let Some(previous) = rows
                && previous != batch
            {
                return Err(ServingError::invalid(
                    format!("{}.shape", input.field),
                    format!("every input needs the same number of rows ({previous}), got {batch}"),
                ));
            }
            rows = Some(batch);
        }
        let field = input.field;
        let (shape, data) = input.tensor.into_parts();
        let data = cast(data, spec.dtype).map_err(|e| {
            ServingError::invalid(
                format!("{field}.data"),
                format!("input `{}` needs {}: {e}", spec.name, spec.dtype),
            )
        })?;
        let tensor =
            Tensor::new(shape, data).map_err(|e| ServingError::invalid(field, e.to_string()))?;
        tensors.push(tensor);
    }
    Ok((tensors, rows.unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DataType, TensorData, TensorSpec};

    fn signature() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DataType::F32,
                shape: vec![None, Some(2)],
            }],
            outputs: vec![],
        }
    }

    fn input(name: &str, shape: Vec<usize>, data: TensorData) -> NamedInput {
        NamedInput {
            name: name.into(),
            field: "inputs[0]".into(),
            tensor: Tensor::new(shape, data).expect("consistent test tensor"),
        }
    }

    #[test]
    fn converts_and_counts_rows() {
        let (tensors, rows) = fit_inputs(
            &signature(),
            vec![input("x", vec![2, 2], TensorData::I32(vec![1, 2, 3, 4]))],
            10,
        )
        .expect("valid input");
        assert_eq!(rows, 2);
        assert_eq!(
            tensors[0].data(),
            &TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])
        );
    }

    #[test]
    fn names_the_field_at_fault() {
        let cases = [
            (
                input("y", vec![1, 2], TensorData::F32(vec![0.0; 2])),
                "inputs[0].name",
            ),
            (
                input("x", vec![1, 3], TensorData::F32(vec![0.0; 3])),
                "inputs[0].shape",
            ),
            (
                input("x", vec![0, 2], TensorData::F32(vec![])),
                "inputs[0].shape",
            ),
            (
                input("x", vec![1, 2], TensorData::F64(vec![0.0, f64::NAN])),
                "inputs[0].data",
            ),
        ];
        for (bad, field) in cases {
            let err = fit_inputs(&signature(), vec![bad], 10).unwrap_err();
            assert!(
                matches!(&err, ServingError::InvalidInput { field: f, .. } if f == field),
                "{err}"
            );
        }
        let err = fit_inputs(&signature(), vec![], 10).unwrap_err();
        assert!(err.to_string().contains("missing input `x`"), "{err}");
        let err = fit_inputs(
            &signature(),
            vec![input("x", vec![11, 2], TensorData::F32(vec![0.0; 22]))],
            10,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ServingError::TooManyRows {
                rows: 11,
                max: 10,
                ..
            }
        ));
    }
}
