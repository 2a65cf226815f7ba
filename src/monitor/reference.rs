//! A version's reference sample as monitoring uses it: sorted columns for the KS tests, the
//! version's own sorted predictions on those rows, and the fitted outlier model. Built once when
//! the version loads, off the request path.

use super::OutlierModel;
use crate::repository::Reference;

/// What a version's reference sample looks like, computed once at load.
#[derive(Debug, Clone, Default)]
pub struct ReferenceProfile {
    /// Feature names (columns of the single 2-D input).
    pub features: Vec<String>,
    /// Each feature's reference values, sorted ascending.
    pub columns: Vec<Vec<f64>>,
    /// The version's own predictions on the reference rows (confidence or value), sorted.
    pub predictions: Vec<f64>,
    /// Outlier model fitted on the reference rows.
    pub outliers: Option<OutlierModel>,
}

impl ReferenceProfile {
    /// Profiles `reference`, given the version's `predictions` on its rows (confidence or
    /// value; non-finite ones are dropped). A reference too small or too odd for an outlier model
    /// still gives drift columns.
    pub fn build(reference: &Reference, mut predictions: Vec<f64>) -> ReferenceProfile {
        let width = reference.features.len();
        let mut columns = (0..width)
            .map(|_| Vec::with_capacity(reference.rows.len()))
            .collect::<Vec<_>>();
        for row in &reference.rows {
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(*value);
            }
        }
        for column in &mut columns {
            column.sort_by(f64::total_cmp);
        }
        predictions.retain(|v| v.is_finite());
        predictions.sort_by(f64::total_cmp);
        ReferenceProfile {
            features: reference.features.clone(),
            columns,
            predictions,
            outliers: OutlierModel::fit(&reference.rows).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_predictions_are_sorted_and_finite() {
        let reference = Reference {
            features: vec!["a".into(), "b".into()],
            rows: vec![vec![3.0, -1.0], vec![1.0, 5.0], vec![2.0, 0.0]],
        };
        let profile = ReferenceProfile::build(&reference, vec![0.9, f64::NAN, 0.2]);
        assert_eq!(
            profile.columns,
            vec![vec![1.0, 2.0, 3.0], vec![-1.0, 0.0, 5.0]]
        );
        assert_eq!(profile.predictions, vec![0.2, 0.9]);
        assert!(profile.outliers.is_none(), "three rows are too few to fit");
    }
}
