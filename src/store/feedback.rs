//! The feedback store: the inference log (every answered row, and each shadow's prediction of
//! it), the ground-truth labels sent back by request id, the retraining counters and events, and
//! the per-model retraining settings. One trait, so the embedded SQLite store and a shared
//! database can stand behind the same feedback loop.

use super::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one version predicted for one row. All `None`: the version ran but gave nothing usable
/// (a failed or timed-out shadow run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoggedPrediction {
    /// Class index (classifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<u32>,
    /// Top-class probability (classifiers with probabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// Regression value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// One answered row.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedRow {
    /// The model.
    pub model: Arc<str>,
    /// The request id (the client's, or the one the gateway made).
    pub request_id: Arc<str>,
    /// Row index in the request.
    pub row: u32,
    /// The version that answered.
    pub version: Arc<str>,
    /// True when the request named the version (not routed to the champion).
    pub direct: bool,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The row's inputs, as a JSON array (the values of every input in signature order).
    pub input: String,
    /// What the version predicted.
    pub prediction: LoggedPrediction,
    /// Shadows that took a copy of the request: each logs its own prediction later.
    pub shadows: Vec<Arc<str>>,
}

/// One shadow's prediction of an answered row.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowedRow {
    /// The model.
    pub model: Arc<str>,
    /// The request id of the champion's answer.
    pub request_id: Arc<str>,
    /// Row index in the request.
    pub row: u32,
    /// The shadow version.
    pub version: Arc<str>,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// What it predicted (all `None` when its run failed or timed out).
    pub prediction: LoggedPrediction,
}

/// Identifies one answered row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    /// The model.
    pub model: String,
    /// The request id.
    pub request_id: String,
    /// Row index in the request.
    pub row: u32,
}

/// A version's prediction of a labelled row, kept with the label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionPrediction {
    /// The version.
    pub version: String,
    /// True for a shadow's prediction, false for the answer.
    pub shadow: bool,
    /// What it predicted.
    #[serde(flatten)]
    pub prediction: LoggedPrediction,
}

/// An answered row as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRow {
    /// Milliseconds since the Unix epoch of the answer.
    pub time_ms: i64,
    /// True when the request named the version.
    pub direct: bool,
    /// The row's inputs, as a JSON array.
    pub input: String,
    /// The answer first, then each shadow's prediction logged so far.
    pub predictions: Vec<VersionPrediction>,
    /// Shadows that took a copy (some may not have logged their prediction yet).
    pub shadows: Vec<String>,
}

impl LoggedRow {
    /// The version that answered.
    pub fn served_version(&self) -> &str {
        self.predictions.first().map_or("", |p| p.version.as_str())
    }

    /// True when every shadow that took a copy has logged its prediction.
    pub fn is_complete(&self) -> bool {
        self.shadows
            .iter()
            .all(|s| self.predictions.iter().any(|p| p.shadow && &p.version == s))
    }
}

/// The ground truth of one row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    /// The true class index.
    Class(u32),
    /// The true value.
    Value(f64),
}

/// One label to store.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelWrite {
    /// The row.
    pub key: RowKey,
    /// The truth.
    pub truth: Truth,
    /// Replace a different label already stored.
    pub replace: bool,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The row as logged (kept with the label, so labels outlive the log's retention).
    pub row: LoggedRow,
}

/// What storing one label did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelOutcome {
    /// Stored as the row's first label; `seq` orders labels.
    Accepted {
        /// Label order.
        seq: i64,
    },
    /// A different label was replaced (`replace: true`).
    Replaced {
        /// Label order (the first label's).
        seq: i64,
        /// The label it replaced.
        previous: Truth,
    },
    /// The same label was already stored.
    Duplicate,
    /// A different label was already stored and `replace` was not asked.
    Conflict {
        /// The stored label.
        stored: Truth,
    },
}

/// A stored label with everything needed to score it again.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRecord {
    /// Label order.
    pub seq: i64,
    /// The row.
    pub key: RowKey,
    /// Milliseconds since the Unix epoch of the label.
    pub time_ms: i64,
    /// The truth.
    pub truth: Truth,
    /// The row as logged when labelled.
    pub row: LoggedRow,
}

/// A retraining event, created in the transaction of the label that completed its count.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Unique and stable across deliveries: receivers deduplicate on it.
    pub event_id: String,
    /// The model.
    pub model: String,
    /// The event as delivered (JSON object).
    pub payload: serde_json::Value,
    /// First label (seq) of its export, exclusive.
    pub after_seq: i64,
    /// Last label (seq) of its export, inclusive.
    pub through_seq: i64,
    /// The command still has to run it.
    pub command_pending: bool,
    /// The webhook still has to receive it.
    pub webhook_pending: bool,
    /// Failed deliveries so far.
    pub attempts: u32,
}

/// How a model's labels trigger retraining, and where events go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSettings {
    /// An event each time this many new labels have arrived since the last one.
    pub every_labels: u64,
    /// A command run with the event on stdin (program and arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A URL the event is POSTed to, signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The webhook's signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl RetrainSettings {
    /// Every rule the settings break, each starting with the field's name.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.every_labels == 0 {
            problems.push("every_labels: must be at least 1".to_string());
        }
        if self.command.as_ref().is_some_and(|c| c.is_empty()) {
            problems.push("command: must name a program".to_string());
        }
        if let Some(url) = &self.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!("webhook: `{url}` is not an http(s) URL"));
        }
        if self.webhook.is_some() && self.secret.as_deref().is_none_or(str::is_empty) {
            problems.push("secret: a webhook needs a secret to sign its events".to_string());
        }
        if self.command.is_none() && self.webhook.is_none() {
            problems.push("command: give a command, a webhook or both".to_string());
        }
        problems
    }
}

/// What a model's next retraining event needs, passed with each batch of labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// An event each time this many new labels have arrived since the last one.
    pub every_labels: u64,
    /// The model's champion now (named in the event).
    pub champion: Option<String>,
    /// Directory of the model's exports (`<state>/exports/<model>`).
    pub exports: std::path::PathBuf,
    /// The event is to be delivered to a command.
    pub command: bool,
    /// The event is to be delivered to a webhook.
    pub webhook: bool,
}

/// Which delivery of an event succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The command exited 0.
    Command,
    /// The webhook answered 2xx.
    Webhook,
}

/// The feedback store.
#[async_trait]
pub trait FeedbackStore: Send + Sync {
    /// Appends answered rows and shadow predictions in one transaction. A row whose (model,
    /// request id, row) is already logged keeps its first record; returns, per model, how many
    /// answered rows were such repeats.
    /// The rows are shared, so that a batch the store could not take can be offered again
    /// without copying it.
    async fn append(
        &self,
        served: Arc<[ServedRow]>,
        shadowed: Arc<[ShadowedRow]>,
    ) -> Result<BTreeMap<String, u64>, StoreError>;

    /// The logged rows of `keys` (`None` where a row is not in the log).
    async fn rows(&self, keys: &[RowKey]) -> Result<Vec<Option<LoggedRow>>, StoreError>;

    /// Stores labels in one durable transaction, in order, and counts the accepted ones towards
    /// retraining: each time a model's count since its last event reaches its trigger's
    /// `every_labels`, an event is created in the same transaction.
    async fn label(
        &self,
        writes: &[LabelWrite],
        triggers: &BTreeMap<String, Trigger>,
    ) -> Result<(Vec<LabelOutcome>, Vec<StoredEvent>), StoreError>;

    /// Every label of `model` in label order (to rebuild quality and evidence).
    async fn labels(&self, model: &str) -> Result<Vec<LabelRecord>, StoreError> {
        self.labels_between(model, i64::MIN, i64::MAX).await
    }

    /// The labels of `model` with `after_seq < seq ≤ through_seq` (an event's export).
    async fn labels_between(
        &self,
        model: &str,
        after_seq: i64,
        through_seq: i64,
    ) -> Result<Vec<LabelRecord>, StoreError>;

    /// Deletes logged rows older than `before_ms` and the oldest beyond `max_rows` — at most
    /// `limit` per table, so that one call stays short; call again while it deletes `limit`.
    /// Returns how many were deleted.
    async fn expire(&self, before_ms: i64, max_rows: u64, limit: u64) -> Result<u64, StoreError>;

    /// Every model's retraining settings.
    async fn retrain_settings(&self) -> Result<BTreeMap<String, RetrainSettings>, StoreError>;

    /// Saves one model's retraining settings.
    async fn set_retrain_settings(
        &self,
        model: &str,
        settings: &RetrainSettings,
    ) -> Result<(), StoreError>;

    /// Events with a delivery still pending.
    async fn pending_events(&self) -> Result<Vec<StoredEvent>, StoreError>;

    /// Records a successful delivery.
    async fn delivered(&self, event_id: &str, channel: Channel) -> Result<(), StoreError>;

    /// Records a failed delivery attempt.
    async fn failed(&self, event_id: &str, reason: &str) -> Result<(), StoreError>;
}

/// The event as delivered, by every store: what it is about and where its export is.
pub(super) fn event_payload(
    event_id: &str,
    model: &str,
    trigger: &Trigger,
    labels_since_last: i64,
    labels_total: i64,
    created_ms: i64,
) -> serde_json::Value {
    serde_json::json!({
        "event_id": event_id,
        "model": model,
        "champion": trigger.champion,
        "labels_since_last": labels_since_last,
        "labels_total": labels_total,
        "export": trigger.exports.join(format!("{event_id}.jsonl")).display().to_string(),
        "created_at": crate::clock::rfc3339_millis(created_ms),
    })
}
