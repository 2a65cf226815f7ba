//! Taking ground truth in: one label item checked against the version that answered its row;
//! each submission looks up its logged rows itself (waiting, bounded, for rows still in the
//! log's queue), then the intake worker stores labels with group commit (every label waiting
//! when a transaction starts goes into it), scores them and answers each submission.

use super::Feedback;
use super::scoring::VersionFacts;
use crate::clock::now_ms;
use crate::metrics;
use crate::repository::Task;
use crate::store::feedback::{LabelOutcome, LabelWrite, LoggedRow, RowKey, Truth};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most items one submission may carry.
pub const MAX_ITEMS: usize = 1_000;
/// Most items stored in one transaction.
const GROUP_ITEMS: usize = 2_000;
/// How long a label waits for its prediction (and its shadows' predictions) to be logged.
const WAIT_FOR_LOG: Duration = Duration::from_secs(2);

/// A label as a client gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum GivenLabel {
    /// A class name.
    Name(String),
    /// A class index.
    Index(u64),
    /// A regression value.
    Value(f64),
}

/// One feedback item.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelItem {
    /// The request id.
    pub id: String,
    /// Row index in the request.
    pub row: u32,
    /// The truth.
    pub label: GivenLabel,
    /// Replace a different label already given.
    pub replace: bool,
}

/// What happened to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemStatus {
    /// Stored (the row's first label, or a replacement).
    Accepted,
    /// The same label was already stored.
    Duplicate,
}

/// Why one item was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ItemError {
    /// No logged prediction has this id and row (never answered, or expired).
    #[error(
        "no prediction of model `{model}` with id `{id}` and row {row} is logged (unknown, or older than the inference log's retention)"
    )]
    NotFound {
        /// The model.
        model: String,
        /// The id.
        id: String,
        /// The row.
        row: u32,
    },
    /// A different label is stored and `replace` was not asked.
    #[error(
        "row {row} of `{id}` already has the label {stored}; send \"replace\": true to change it"
    )]
    Conflict {
        /// The id.
        id: String,
        /// The row.
        row: u32,
        /// The stored label, as text.
        stored: String,
    },
    /// The label does not fit the version that answered.
    #[error("{field}: {expected}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What was expected.
        expected: String,
    },
}

impl ItemError {
    /// The status word `vigil_feedback_total` counts it under.
    pub fn status(&self) -> &'static str {
        match self {
            ItemError::NotFound { .. } => "not_found",
            ItemError::Conflict { .. } => "conflict",
            ItemError::Invalid { .. } => "invalid",
        }
    }
}

/// One item's result.
pub type ItemResult = Result<ItemStatus, ItemError>;

/// The truth `label` stands for on a version with `facts`.
///
/// # Errors
/// [`ItemError::Invalid`] for a class the version does not have, or the wrong kind of label.
pub fn truth_of(label: &GivenLabel, facts: &VersionFacts) -> Result<Truth, ItemError> {
    let invalid = |field: &str, expected: String| ItemError::Invalid {
        field: field.to_string(),
        expected,
    };
    match (label, facts.task) {
        (GivenLabel::Value(value), Task::Regression) if value.is_finite() => {
            Ok(Truth::Value(*value))
        }
        (GivenLabel::Value(value), Task::Regression) => Err(invalid(
            "value",
            format!("expected a finite number, got {value}"),
        )),
        (GivenLabel::Value(_), Task::Classification) => Err(invalid(
            "value",
            format!(
                "the version that answered is a classifier: send \"label\" with one of [{}] \
                 or a class index",
                facts.classes.join(", ")
            ),
        )),
        (GivenLabel::Name(_) | GivenLabel::Index(_), Task::Regression) => Err(invalid(
            "label",
            "the version that answered is a regressor: send \"value\" with a number".into(),
        )),
        (GivenLabel::Name(name), Task::Classification) => {
            class_truth(facts.classes.iter().position(|c| c == name), || {
                format!(
                    "`{name}` is not a class of the version that answered; expected one of [{}] \
                     or a class index",
                    facts.classes.join(", ")
                )
            })
        }
        (GivenLabel::Index(index), Task::Classification) => class_truth(
            usize::try_from(*index)
                .ok()
                .filter(|&i| i < facts.classes.len()),
            || {
                format!(
                    "class index {index} is out of range; the version that answered has {} \
                     classes",
                    facts.classes.len()
                )
            },
        ),
    }
}

/// The class at `index`, or the `label` error `expected` describes.
fn class_truth(
    index: Option<usize>,
    expected: impl FnOnce() -> String,
) -> Result<Truth, ItemError> {
    index
        .and_then(|i| u32::try_from(i).ok())
        .map(Truth::Class)
        .ok_or_else(|| ItemError::Invalid {
            field: "label".to_string(),
            expected: expected(),
        })
}

/// The label as text (a class name, or the value).
pub fn truth_text(truth: Truth, facts: Option<&VersionFacts>) -> String {
    match truth {
        Truth::Class(index) => facts
            .and_then(|f| f.classes.get(index as usize))
            .cloned()
            .unwrap_or_else(|| index.to_string()),
        Truth::Value(value) => value.to_string(),
    }
}

/// A submission waiting for the intake worker.
pub struct Submission {
    /// The model.
    pub model: String,
    /// Its items.
    pub items: Vec<LabelItem>,
    /// The logged row of each item (`None`: not logged).
    pub rows: Vec<Option<LoggedRow>>,
    /// Where the results go (one per item, in order), or the store's failure.
    pub reply: oneshot::Sender<Result<Vec<ItemResult>, crate::store::StoreError>>,
}

/// The keys of `items` of `model`.
pub fn keys_of(model: &str, items: &[LabelItem]) -> Vec<RowKey> {
    items
        .iter()
        .map(|item| RowKey {
            model: model.to_string(),
            request_id: item.id.clone(),
            row: item.row,
        })
        .collect()
}

/// Runs the intake until every sender is gone.
pub(super) async fn run(feedback: Arc<Feedback>, mut submissions: mpsc::Receiver<Submission>) {
    while let Some(first) = submissions.recv().await {
        let mut group = vec![first];
        let mut items = group[0].items.len();
        while items < GROUP_ITEMS {
            match submissions.try_recv() {
                Ok(next) => {
                    items += next.items.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let results = store_group(&feedback, &group).await;
        for (submission, result) in group.into_iter().zip(results) {
            let _ = submission.reply.send(result);
        }
    }
}

/// The logged rows of `keys`. A row not found is looked up once more after everything queued
/// in the log has been written (a request's record is queued before it is answered, so that
/// finds every answered row); a row whose shadows' predictions are still being computed is
/// waited for, up to two seconds. Runs in the submitting request's task: one slow or
/// unknown row never holds up other submissions.
pub async fn logged_rows(
    feedback: &Feedback,
    keys: &[RowKey],
) -> Result<Vec<Option<LoggedRow>>, crate::store::StoreError> {
    let mut rows = feedback.store.rows(keys).await?;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_LOG;
    while rows
        .iter()
        .any(|r| r.as_ref().is_none_or(|r| !r.is_complete()))
        && tokio::time::Instant::now() < deadline
    {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let flushed = feedback.log.flushed(left).await;
        let missing: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_none_or(|r| !r.is_complete()))
            .map(|(i, _)| i)
            .collect();
        let again: Vec<RowKey> = missing.iter().map(|&i| keys[i].clone()).collect();
        let found = feedback.store.rows(&again).await?;
        for (index, row) in missing.into_iter().zip(found) {
            if row.is_some() {
                rows[index] = row;
            }
        }
        let shadows_running = rows
            .iter()
            .any(|r| r.as_ref().is_some_and(|r| !r.is_complete()));
        if !flushed || !shadows_running {
            // Rows still missing after a flush were never answered (or have expired).
            break;
        }
        // Shadows still running: give them a moment before the next look.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(rows)
}

/// Stores and scores one group of submissions.
async fn store_group(
    feedback: &Feedback,
    group: &[Submission],
) -> Vec<Result<Vec<ItemResult>, crate::store::StoreError>> {
    let keys: Vec<RowKey> = group
        .iter()
        .flat_map(|s| keys_of(&s.model, &s.items))
        .collect();
    let rows = group.iter().flat_map(|s| s.rows.iter().cloned());
    let time_ms = now_ms();
    let mut results: Vec<Option<ItemResult>> = vec![None; keys.len()];
    let mut writes = Vec::new();
    let mut written = Vec::new();
    let items = group.iter().flat_map(|s| s.items.iter());
    for (index, ((item, key), row)) in items.zip(&keys).zip(rows).enumerate() {
        let Some(row) = row else {
            results[index] = Some(Err(ItemError::NotFound {
                model: key.model.clone(),
                id: key.request_id.clone(),
                row: key.row,
            }));
            continue;
        };
        let facts = feedback.facts(&key.model, row.served_version());
        let truth = match facts.as_ref().map(|f| truth_of(&item.label, f)) {
            Some(Ok(truth)) => truth,
            Some(Err(error)) => {
                results[index] = Some(Err(error));
                continue;
            }
            None => {
                results[index] = Some(Err(ItemError::Invalid {
                    field: "id".into(),
                    expected: format!(
                        "version {} that answered is no longer known to the gateway",
                        row.served_version()
                    ),
                }));
                continue;
            }
        };
        written.push(index);
        writes.push(LabelWrite {
            key: key.clone(),
            truth,
            replace: item.replace,
            time_ms,
            row,
        });
    }
    let triggers = feedback.triggers(group.iter().map(|s| s.model.as_str()));
    let (outcomes, events) = match feedback.store.label(&writes, &triggers).await {
        Ok(stored) => stored,
        Err(error) => return group.iter().map(|_| Err(error.clone())).collect(),
    };
    let mut replaced = std::collections::BTreeSet::new();
    for ((index, write), outcome) in written.iter().zip(&writes).zip(outcomes) {
        results[*index] = Some(match outcome {
            LabelOutcome::Accepted { .. } => {
                if !feedback.is_shared() {
                    feedback.score(&write.key.model, &write.row, write.truth);
                }
                Ok(ItemStatus::Accepted)
            }
            LabelOutcome::Replaced { .. } => {
                replaced.insert(write.key.model.clone());
                Ok(ItemStatus::Accepted)
            }
            LabelOutcome::Duplicate => Ok(ItemStatus::Duplicate),
            LabelOutcome::Conflict { stored } => Err(ItemError::Conflict {
                id: write.key.request_id.clone(),
                row: write.key.row,
                stored: truth_text(
                    stored,
                    feedback
                        .facts(&write.key.model, write.row.served_version())
                        .as_ref(),
                ),
            }),
        });
    }
    for model in replaced {
        if let Err(error) = feedback.replay(&model).await {
            tracing::warn!(%model, %error, "quality not rebuilt after a replaced label");
        }
    }
    for event in events {
        feedback.event_created(event).await;
    }
    if feedback.is_shared() {
        let models: std::collections::BTreeSet<&str> =
            group.iter().map(|s| s.model.as_str()).collect();
        for model in models {
            if let Err(error) = feedback.score_stored(model).await {
                tracing::warn!(%model, %error, "labels stored but not yet scored here");
            }
        }
    }
    feedback.promote_candidates(group.iter().map(|s| s.model.as_str()));
    let mut results = results.into_iter();
    group
        .iter()
        .map(|submission| {
            // Every item has its result: an error from the checks above or the store's outcome.
            let mine: Vec<ItemResult> = results
                .by_ref()
                .take(submission.items.len())
                .flatten()
                .collect();
            for result in &mine {
                let status = match result {
                    Ok(ItemStatus::Accepted) => "accepted",
                    Ok(ItemStatus::Duplicate) => "duplicate",
                    Err(error) => error.status(),
                };
                feedback
                    .metrics
                    .counter(
                        metrics::FEEDBACK_TOTAL,
                        &[("model", &submission.model), ("status", status)],
                    )
                    .increment(1);
            }
            Ok(mine)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier() -> VersionFacts {
        VersionFacts {
            task: Task::Classification,
            classes: vec!["setosa".into(), "versicolor".into()],
            features: vec![],
        }
    }

    #[test]
    fn labels_are_checked_against_the_version_that_answered() {
        let facts = classifier();
        assert_eq!(
            truth_of(&GivenLabel::Name("versicolor".into()), &facts),
            Ok(Truth::Class(1))
        );
        assert_eq!(truth_of(&GivenLabel::Index(0), &facts), Ok(Truth::Class(0)));
        for (label, field, fragment) in [
            (
                GivenLabel::Name("rose".into()),
                "label",
                "`rose` is not a class",
            ),
            (GivenLabel::Index(2), "label", "out of range"),
            (GivenLabel::Value(1.5), "value", "classifier"),
        ] {
            match truth_of(&label, &facts) {
                Err(ItemError::Invalid { field: f, expected }) => {
                    assert_eq!(f, field);
                    assert!(expected.contains(fragment), "{expected}");
                }
                other => panic!("{label:?}: {other:?}"),
            }
        }
        let regressor = VersionFacts {
            task: Task::Regression,
            classes: vec![],
            features: vec![],
        };
        assert_eq!(
            truth_of(&GivenLabel::Value(151.2), &regressor),
            Ok(Truth::Value(151.2))
        );
        assert!(truth_of(&GivenLabel::Name("a".into()), &regressor).is_err());
        assert!(truth_of(&GivenLabel::Value(f64::NAN), &regressor).is_err());
        assert_eq!(truth_text(Truth::Class(1), Some(&facts)), "versicolor");
    }
}
