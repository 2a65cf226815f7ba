//! A retraining event's export: the rows labelled since the previous event, one JSON object a
//! line (`id`, `row`, `time`, `version`, `features` by name, `label` or `value`, `prediction`),
//! at `<state>/exports/<model>/<event_id>.jsonl`. Written once after the event's transaction
//! and again before a delivery if it is missing, always from the stored labels, so it is the
//! same every time.

use super::Feedback;
use super::intake::truth_text;
use super::scoring::VersionFacts;
use crate::clock::rfc3339_millis;
use crate::store::feedback::{LabelRecord, StoredEvent, Truth};
use crate::store::{FeedbackStore, StoreError};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::PathBuf;

/// Where an event's export goes (as its payload says).
pub fn path_of(event: &StoredEvent) -> Option<PathBuf> {
    event.payload["export"].as_str().map(PathBuf::from)
}

/// Writes the export of `event` unless it exists (atomically: temp file, then rename).
///
/// # Errors
/// [`StoreError`] when the labels cannot be read or the file cannot be written.
pub async fn write(
    store: &dyn FeedbackStore,
    feedback: &Feedback,
    event: &StoredEvent,
) -> Result<(), StoreError> {
    let Some(path) = path_of(event) else {
        return Ok(());
    };
    if path.exists() {
        return Ok(());
    }
    let labels = store
        .labels_between(&event.model, event.after_seq, event.through_seq)
        .await?;
    let mut text = Vec::new();
    for label in &labels {
        let facts = feedback.facts(&event.model, label.row.served_version());
        let line = line(label, facts.as_ref());
        let _ = writeln!(text, "{line}");
    }
    let fail = |e: std::io::Error| StoreError::Write {
        path: path.clone(),
        reason: e.to_string(),
    };
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let temp = path.with_extension("jsonl.tmp");
    std::fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(&text)?;
            file.sync_all()
        })
        .map_err(fail)?;
    std::fs::rename(&temp, &path).map_err(fail)
}

/// One export line.
fn line(label: &LabelRecord, facts: Option<&VersionFacts>) -> Value {
    let values: Vec<Value> = serde_json::from_str(&label.row.input).unwrap_or_default();
    let names = facts
        .map(|f| f.features.as_slice())
        .filter(|names| names.len() == values.len());
    let features: Map<String, Value> = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let name = names.map_or_else(|| format!("x{i}"), |n| n[i].clone());
            (name, value)
        })
        .collect();
    let served = label.row.predictions.first();
    let prediction = served.map_or(Value::Null, |p| match label.truth {
        Truth::Class(_) => json!({
            "label": p.prediction.class.map(|c| truth_text(Truth::Class(c), facts)),
            "confidence": p.prediction.confidence,
        }),
        Truth::Value(_) => json!({"value": p.prediction.value}),
    });
    let mut line = json!({
        "id": label.key.request_id,
        "row": label.key.row,
        "time": rfc3339_millis(label.row.time_ms),
        "version": label.row.served_version(),
        "features": features,
        "prediction": prediction,
    });
    match label.truth {
        Truth::Class(_) => line["label"] = json!(truth_text(label.truth, facts)),
        Truth::Value(value) => line["value"] = json!(value),
    }
    line
}
