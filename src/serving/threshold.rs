//! Confidence thresholds for classifiers: confidence is the highest class probability of a row,
//! and a row is accepted when its confidence reaches the model's threshold. Labels are never
//! changed; clients decide what to do with rows that are not accepted.

use crate::engine::{DataType, Tensor, TensorData, TensorSpec};

use super::OutputRoles;

/// Name of the confidence output added to classifier responses.
pub const CONFIDENCE_OUTPUT: &str = "confidence";
/// Name of the accepted output added to classifier responses.
pub const ACCEPTED_OUTPUT: &str = "accepted";

/// The outputs the gateway adds for a version: `confidence` (FP32 `[-1]`) and `accepted`
/// (BOOL `[-1]`) when it has class probabilities and no outputs of those names already.
pub fn added_outputs(model_outputs: &[TensorSpec], roles: OutputRoles) -> Vec<TensorSpec> {
    let clash = model_outputs
        .iter()
        .any(|o| o.name == CONFIDENCE_OUTPUT || o.name == ACCEPTED_OUTPUT);
    if roles.probabilities.is_none() || clash {
        return Vec::new();
    }
    vec![
        TensorSpec {
            name: CONFIDENCE_OUTPUT.to_string(),
            dtype: DataType::F32,
            shape: vec![None],
        },
        TensorSpec {
            name: ACCEPTED_OUTPUT.to_string(),
            dtype: DataType::Bool,
            shape: vec![None],
        },
    ]
}

/// Per row: the highest class probability, from the probabilities output `[N, C]`.
pub fn confidences(probabilities: &Tensor) -> Vec<f32> {
    let classes = probabilities.shape().get(1).copied().unwrap_or(1).max(1);
    let rows = probabilities.shape().first().copied().unwrap_or(0);
    (0..rows)
        .map(|row| {
            (0..classes)
                .filter_map(|class| probabilities.data().get_f64(row * classes + class))
                .fold(f64::NEG_INFINITY, f64::max) as f32
        })
        .collect()
}

/// The `confidence` and `accepted` tensors for `threshold` (accepted: confidence ≥ threshold).
pub fn threshold_outputs(confidence: Vec<f32>, threshold: f64) -> (Tensor, Tensor, usize) {
    let accepted: Vec<bool> = confidence
        .iter()
        .map(|&c| f64::from(c) >= threshold)
        .collect();
    let accepted_rows = accepted.iter().filter(|&&a| a).count();
    (
        Tensor::vector(TensorData::F32(confidence)),
        Tensor::vector(TensorData::Bool(accepted)),
        accepted_rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_is_the_top_probability_and_threshold_is_inclusive() {
        let probabilities = Tensor::new(
            vec![2, 3],
            TensorData::F32(vec![0.7, 0.2, 0.1, 0.3, 0.3, 0.4]),
        )
        .expect("probabilities");
        let confidence = confidences(&probabilities);
        assert_eq!(confidence, vec![0.7, 0.4]);
        let (c, a, accepted) = threshold_outputs(confidence, 0.4f32.into());
        assert_eq!(c.shape(), &[2]);
        assert_eq!(a.data(), &TensorData::Bool(vec![true, true]));
        assert_eq!(accepted, 2);
        let (_, a, accepted) = threshold_outputs(vec![0.7, 0.4], 0.5);
        assert_eq!(a.data(), &TensorData::Bool(vec![true, false]));
        assert_eq!(accepted, 1);
    }
}
