//! Live quality of one version on the rows it predicted that have a label: for classifiers the
//! accuracy (Wilson 95% interval), per-class precision and recall and the confusion matrix; for
//! regressors MAE, RMSE and mean error with 95% intervals. Over every label, and over the most
//! recent `window` labels.

use super::statistics::{Estimate, mean_estimate, wilson};
use serde::Serialize;
use std::collections::VecDeque;

/// One labelled row as a version predicted it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scored {
    /// A classifier's row: the true class and the predicted one.
    Class {
        /// True class index.
        truth: u32,
        /// Predicted class index.
        predicted: u32,
    },
    /// A regressor's row: prediction − truth.
    Value {
        /// The signed error.
        error: f64,
    },
}

/// Running sums over a set of scored rows (subtractable, for the window).
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    labelled: u64,
    correct: u64,
    /// `[truth][predicted]`, `classes × classes`.
    confusion: Vec<u64>,
    sum_error: f64,
    sum_abs: f64,
    sum_squared: f64,
    sum_fourth: f64,
}

impl Tally {
    fn add(&mut self, scored: Scored, classes: usize, sign: i64) {
        let step = |count: &mut u64| {
            *count = if sign > 0 {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
        };
        step(&mut self.labelled);
        match scored {
            Scored::Class { truth, predicted } => {
                if truth == predicted {
                    step(&mut self.correct);
                }
                let (t, p) = (truth as usize, predicted as usize);
                if t < classes && p < classes {
                    if self.confusion.len() != classes * classes {
                        self.confusion = vec![0; classes * classes];
                    }
                    step(&mut self.confusion[t * classes + p]);
                }
            }
            Scored::Value { error } => {
                let s = sign as f64;
                let squared = error * error;
                self.sum_error += s * error;
                self.sum_abs += s * error.abs();
                self.sum_squared += s * squared;
                self.sum_fourth += s * squared * squared;
            }
        }
    }
}

/// The quality of one version.
#[derive(Debug, Clone)]
pub struct VersionQuality {
    classes: Vec<String>,
    all: Tally,
    recent: VecDeque<Scored>,
    window: usize,
    windowed: Tally,
}

impl VersionQuality {
    /// Quality of a classifier with `classes` (empty for a regressor), with a window of the
    /// `window` most recent labels.
    pub fn new(classes: Vec<String>, window: usize) -> VersionQuality {
        VersionQuality {
            classes,
            all: Tally::default(),
            recent: VecDeque::with_capacity(window.min(4096)),
            window: window.max(1),
            windowed: Tally::default(),
        }
    }

    /// Adds one labelled row.
    pub fn add(&mut self, scored: Scored) {
        let classes = self.classes.len();
        self.all.add(scored, classes, 1);
        self.windowed.add(scored, classes, 1);
        self.recent.push_back(scored);
        if self.recent.len() > self.window
            && let Some(oldest) = self.recent.pop_front()
        {
            self.windowed.add(oldest, classes, -1);
        }
    }

    /// Labelled rows scored so far.
    pub fn labelled(&self) -> u64 {
        self.all.labelled
    }

    /// The view over every label and over the window.
    pub fn view(&self) -> QualityView {
        QualityView {
            labelled: self.all.labelled,
            all: self.figures(&self.all),
            recent: self.figures(&self.windowed),
        }
    }

    fn figures(&self, tally: &Tally) -> Figures {
        if self.classes.is_empty() {
            let n = tally.labelled;
            let rmse = mean_estimate(n, tally.sum_squared, tally.sum_fourth).map(|mse| Estimate {
                value: mse.value.sqrt(),
                low: mse.low.max(0.0).sqrt(),
                high: mse.high.max(0.0).sqrt(),
            });
            return Figures::Regression {
                labelled: n,
                mae: mean_estimate(n, tally.sum_abs, tally.sum_squared),
                rmse,
                mean_error: mean_estimate(n, tally.sum_error, tally.sum_squared),
            };
        }
        let c = self.classes.len();
        let cell = |t: usize, p: usize| tally.confusion.get(t * c + p).copied().unwrap_or(0);
        let per_class = (0..c)
            .map(|k| {
                let predicted: u64 = (0..c).map(|t| cell(t, k)).sum();
                let actual: u64 = (0..c).map(|p| cell(k, p)).sum();
                ClassFigures {
                    class: self.classes[k].clone(),
                    support: actual,
                    precision: (predicted > 0).then(|| cell(k, k) as f64 / predicted as f64),
                    recall: (actual > 0).then(|| cell(k, k) as f64 / actual as f64),
                }
            })
            .collect();
        Figures::Classification {
            labelled: tally.labelled,
            accuracy: wilson(tally.correct, tally.labelled),
            classes: per_class,
            confusion: (0..c)
                .map(|t| (0..c).map(|p| cell(t, p)).collect())
                .collect(),
        }
    }
}

/// One class's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassFigures {
    /// The class name.
    pub class: String,
    /// Labelled rows of this class.
    pub support: u64,
    /// Of the rows predicted as this class, the share that were.
    pub precision: Option<f64>,
    /// Of the rows of this class, the share predicted as it.
    pub recall: Option<f64>,
}

/// Quality figures over a set of labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Figures {
    /// A classifier.
    Classification {
        /// Labelled rows.
        labelled: u64,
        /// Share right, with its Wilson 95% interval.
        accuracy: Option<Estimate>,
        /// Per class, in class order.
        classes: Vec<ClassFigures>,
        /// Rows by true class (outer) and predicted class (inner), in class order.
        confusion: Vec<Vec<u64>>,
    },
    /// A regressor.
    Regression {
        /// Labelled rows.
        labelled: u64,
        /// Mean absolute error, 95% interval.
        mae: Option<Estimate>,
        /// Root mean squared error, 95% interval (of the mean squared error, square-rooted).
        rmse: Option<Estimate>,
        /// Mean of prediction − truth, 95% interval.
        mean_error: Option<Estimate>,
    },
}

/// The quality of one version, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityView {
    /// Labelled rows scored.
    pub labelled: u64,
    /// Over every label.
    pub all: Figures,
    /// Over the most recent labels (the quality window).
    pub recent: Figures,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn accuracy_precision_recall_and_confusion_from_labelled_rows() {
        let mut quality = VersionQuality::new(classes(), 100);
        for (truth, predicted) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0), (1, 1)] {
            quality.add(Scored::Class { truth, predicted });
        }
        let Figures::Classification {
            labelled,
            accuracy,
            classes,
            confusion,
        } = quality.view().all
        else {
            panic!("a classifier");
        };
        assert_eq!(labelled, 6);
        let accuracy = accuracy.expect("accuracy");
        assert!((accuracy.value - 4.0 / 6.0).abs() < 1e-12);
        assert!(accuracy.low < accuracy.value && accuracy.value < accuracy.high);
        assert_eq!(confusion, vec![vec![2, 1], vec![1, 2]]);
        assert_eq!(classes[0].precision, Some(2.0 / 3.0));
        assert_eq!(classes[1].recall, Some(2.0 / 3.0));
        assert_eq!(classes[1].support, 3);
    }

    #[test]
    fn the_window_keeps_only_the_most_recent_labels() {
        let mut quality = VersionQuality::new(classes(), 3);
        for predicted in [1, 1, 1, 0, 0, 0] {
            quality.add(Scored::Class {
                truth: 0,
                predicted,
            });
        }
        let view = quality.view();
        let accuracy = |figures: &Figures| match figures {
            Figures::Classification { accuracy, .. } => accuracy.map(|a| a.value),
            Figures::Regression { .. } => None,
        };
        assert_eq!(accuracy(&view.all), Some(0.5));
        assert_eq!(accuracy(&view.recent), Some(1.0));
    }

    #[test]
    fn regression_errors_give_mae_rmse_and_mean_error() {
        let mut quality = VersionQuality::new(Vec::new(), 10);
        for error in [1.0, -3.0, 2.0, -2.0] {
            quality.add(Scored::Value { error });
        }
        let Figures::Regression {
            mae,
            rmse,
            mean_error,
            ..
        } = quality.view().all
        else {
            panic!("a regressor");
        };
        assert_eq!(mae.map(|m| m.value), Some(2.0));
        assert!((rmse.expect("rmse").value - (18.0f64 / 4.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_error.map(|m| m.value), Some(-0.5));
    }
}
