//! Which outputs an inference answers with, whatever the protocol: the requested names checked
//! against the version's served outputs (request order; signature order when none are named),
//! each one's encoding, and whether the per-row outlier scores ride along.

use super::ApiError;
use super::v2_types::RequestedOutput;
use crate::engine::TensorSpec;

/// Name of the per-row outlier score output, returned when a request asks for it with the
/// `outlier_score` parameter set to true (or lists it among its outputs).
pub const OUTLIER_SCORE_OUTPUT: &str = "outlier_score";

/// The outputs an answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Served output index and whether it goes out as binary, in answer order.
    pub outputs: Vec<(usize, bool)>,
    /// Append each row's outlier score as [`OUTLIER_SCORE_OUTPUT`].
    pub outlier_scores: bool,
}

/// Selects the outputs of an answer from `served`: the `requested` ones (all when absent, or
/// when the only one named is [`OUTLIER_SCORE_OUTPUT`]), each binary when its `binary_data`
/// parameter says so, else `binary_by_default`. Outlier scores are appended when
/// `scores_asked` or when [`OUTLIER_SCORE_OUTPUT`] is named.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `outputs[i].name` for an output the version does not have.
pub fn select(
    served: &[TensorSpec],
    requested: Option<Vec<RequestedOutput>>,
    scores_asked: bool,
    binary_by_default: bool,
) -> Result<Selection, ApiError> {
    let mut requested = requested;
    let listed_score = requested
        .as_ref()
        .is_some_and(|list| list.iter().any(|o| o.name == OUTLIER_SCORE_OUTPUT));
    if let Some(list) = requested.as_mut() {
        list.retain(|o| o.name != OUTLIER_SCORE_OUTPUT);
    }
    let outlier_scores = scores_asked || listed_score;
    let Some(requested) = requested.filter(|list| !list.is_empty() || !listed_score) else {
        return Ok(Selection {
            outputs: (0..served.len())
                .map(|index| (index, binary_by_default))
                .collect(),
            outlier_scores,
        });
    };
    let mut outputs = Vec::with_capacity(requested.len());
    for (position, output) in requested.iter().enumerate() {
        let index = served
            .iter()
            .position(|spec| spec.name == output.name)
            .ok_or_else(|| {
                let names: Vec<&str> = served.iter().map(|s| s.name.as_str()).collect();
                ApiError::bad_request(
                    format!("outputs[{position}].name"),
                    format!(
                        "the model has no output `{}`; expected one of [{}]",
                        output.name,
                        names.join(", ")
                    ),
                )
            })?;
        let binary = output
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(binary_by_default);
        outputs.push((index, binary));
    }
    Ok(Selection {
        outputs,
        outlier_scores,
    })
}
