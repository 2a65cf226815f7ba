//! The inference log's writer: answered rows and shadow predictions go into a bounded queue on
//! the request path (never waits; when full, the record is dropped and counted), and one
//! background task writes them to the store in batches (one transaction per 1,000 rows or
//! 50 ms, whichever comes first). Old rows are expired in the background (TTL, then a row cap).
//!
//! Feedback can arrive before its prediction is written: [`InferenceLog::flushed`] lets it wait
//! for everything queued so far to be written instead of answering "not found".

use crate::clock::now_ms;
use crate::engine::{Tensor, TensorData};
use crate::metrics::{self, Metrics};
use crate::store::feedback::{LoggedPrediction, ServedRow, ShadowedRow};
use crate::store::{FeedbackStore, StoreError};
use dashmap::DashMap;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Most rows written in one transaction.
pub const BATCH_ROWS: usize = 1_000;
/// Longest a record waits in the queue before its batch is written.
pub const BATCH_DELAY: Duration = Duration::from_millis(50);
/// The longest pause between attempts to write a batch while the store is unavailable.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// How often old rows are expired.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// Most rows per table one expiry transaction deletes: expiring in small steps every second keeps
/// each step short, where one large delete a minute stalled the log (and, on a busy machine,
/// the requests sharing its cores) for a second or more.
const EXPIRY_CHUNK: u64 = 5_000;

/// The inference log's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// Requests (each with its rows) the queue holds before new records are dropped.
    pub queue: usize,
    /// Rows older than this are deleted.
    pub ttl: Duration,
    /// At most this many answered rows (and as many shadow rows) are kept, oldest deleted first.
    pub max_rows: u64,
}

/// Per-row predictions of one inference, in the row order of the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowPredictions {
    /// Class index per row (classifiers).
    pub classes: Option<Vec<usize>>,
    /// Top-class probability (classifiers) or regression value per row.
    pub values: Option<Vec<f64>>,
    /// True for classifiers: `values` are confidences.
    pub classifier: bool,
}

impl RowPredictions {
    fn row(&self, row: usize) -> LoggedPrediction {
        let value = self.values.as_ref().and_then(|v| v.get(row).copied());
        LoggedPrediction {
            class: self
                .classes
                .as_ref()
                .and_then(|c| c.get(row))
                .and_then(|&c| u32::try_from(c).ok()),
            confidence: value.filter(|_| self.classifier).map(|v| v as f32),
            value: value.filter(|_| !self.classifier),
        }
    }
}

/// One answered request.
#[derive(Debug)]
pub struct Served {
    /// The model.
    pub model: Arc<str>,
    /// The version that answered.
    pub version: Arc<str>,
    /// The request id.
    pub request_id: Arc<str>,
    /// Routed to a named version rather than the champion.
    pub direct: bool,
    /// The inputs as the version ran them (signature order).
    pub inputs: Vec<Tensor>,
    /// Rows answered.
    pub rows: usize,
    /// What the version predicted.
    pub predictions: RowPredictions,
    /// Shadows that took a copy.
    pub shadows: Vec<Arc<str>>,
}

/// One shadow run of a copied request.
#[derive(Debug)]
pub struct Shadowed {
    /// The model.
    pub model: Arc<str>,
    /// The shadow version.
    pub version: Arc<str>,
    /// The request id of the champion's answer.
    pub request_id: Arc<str>,
    /// Rows of the request.
    pub rows: usize,
    /// What the shadow predicted; `None` when its run failed or timed out.
    pub predictions: Option<RowPredictions>,
}

enum Entry {
    Served(Served, i64),
    Shadowed(Shadowed, i64),
}

impl Entry {
    fn rows(&self) -> usize {
        match self {
            Entry::Served(s, _) => s.rows,
            Entry::Shadowed(s, _) => s.rows,
        }
    }

    fn model(&self) -> &Arc<str> {
        match self {
            Entry::Served(s, _) => &s.model,
            Entry::Shadowed(s, _) => &s.model,
        }
    }
}

/// Records waiting to be written.
#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    rows: usize,
    /// When the oldest waiting record was queued.
    since: Option<tokio::time::Instant>,
    /// Records ever queued (the last one's number).
    queued: u64,
    /// Feedback is waiting: write now.
    hurried: bool,
}

/// The inference log: cheap to record into from the request path (a short lock and a push; the
/// writer is woken once per batch, not once per request).
pub struct InferenceLog {
    queue: std::sync::Mutex<Queue>,
    capacity: usize,
    wake: Arc<Notify>,
    flushed: watch::Receiver<u64>,
    dropped: DashMap<Arc<str>, ::metrics::Counter>,
    metrics: Arc<Metrics>,
    closing: watch::Sender<bool>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for InferenceLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceLog")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl InferenceLog {
    /// Starts the writer and the expiry task on the current runtime. [`InferenceLog::close`]
    /// writes what is queued and stops them.
    pub fn start(
        store: Arc<dyn FeedbackStore>,
        settings: LogSettings,
        metrics: Arc<Metrics>,
    ) -> Arc<InferenceLog> {
        let (flushed_tx, flushed) = watch::channel(0);
        let (closing, closed) = watch::channel(false);
        let log = Arc::new(InferenceLog {
            queue: std::sync::Mutex::new(Queue::default()),
            capacity: settings.queue.max(1),
            wake: Arc::new(Notify::new()),
            flushed,
            dropped: DashMap::new(),
            metrics: Arc::clone(&metrics),
            closing,
            writer: std::sync::Mutex::new(None),
        });
        let writer = Writer {
            store: Arc::clone(&store),
            metrics,
            flushed: flushed_tx,
            log: Arc::downgrade(&log),
        };
        let handle = tokio::spawn(writer.run(Arc::clone(&log.wake), closed.clone()));
        if let Ok(mut slot) = log.writer.lock() {
            *slot = Some(handle);
        }
        tokio::spawn(expire_periodically(store, settings, closed));
        log
    }

    /// Writes everything queued so far and stops the writer (at shutdown). Records queued
    /// afterwards are not written.
    pub async fn close(&self) {
        self.closing.send_replace(true);
        let handle = self.writer.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle
            && let Err(error) = handle.await
        {
            tracing::warn!(%error, "the inference log writer did not finish");
        }
    }

    /// Queues an answered request. Never waits: when the queue is full it is dropped and
    /// counted.
    pub fn served(&self, served: Served) {
        self.push(Entry::Served(served, now_ms()));
    }

    /// Queues a shadow's run of a copied request. Never waits.
    pub fn shadowed(&self, shadowed: Shadowed) {
        self.push(Entry::Shadowed(shadowed, now_ms()));
    }

    fn push(&self, entry: Entry) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        if queue.entries.len() >= self.capacity {
            drop(queue);
            self.count_dropped(entry.model(), 1);
            return;
        }
        let first = queue.entries.is_empty();
        if first {
            queue.since = Some(tokio::time::Instant::now());
        }
        queue.rows += entry.rows();
        queue.queued += 1;
        queue.entries.push(entry);
        let full = queue.rows >= BATCH_ROWS;
        drop(queue);
        if first || full {
            self.wake.notify_one();
        }
    }

    /// Publishes a model's drop and repeat counters at zero, so that dashboards and alerts see
    /// the series before the first drop.
    pub fn watch(&self, model: &str) {
        let model: Arc<str> = Arc::from(model);
        self.count_dropped(&model, 0);
        self.metrics
            .counter(metrics::INFERENCE_LOG_REPEATED, &[("model", &model)])
            .increment(0);
    }

    fn count_dropped(&self, model: &Arc<str>, records: u64) {
        self.dropped
            .entry(Arc::clone(model))
            .or_insert_with(|| {
                self.metrics
                    .counter(metrics::INFERENCE_LOG_DROPPED, &[("model", model)])
            })
            .increment(records);
    }

    /// Waits (at most `limit`) until everything queued before the call has been written,
    /// asking the writer not to wait for its batch to fill. Returns false when the limit ran out
    /// first.
    pub async fn flushed(&self, limit: Duration) -> bool {
        let target = match self.queue.lock() {
            Ok(mut queue) => {
                queue.hurried = true;
                queue.queued
            }
            Err(_) => return false,
        };
        let mut flushed = self.flushed.clone();
        if *flushed.borrow() < target {
            self.wake.notify_one();
        }
        tokio::time::timeout(limit, flushed.wait_for(|&done| done >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// What the writer should do now: the records to write (all waiting ones, when the batch is
    /// full, its delay is over, feedback waits, or `closing`), or how long to wait for that.
    fn take(&self, closing: bool) -> Taken {
        let Ok(mut queue) = self.queue.lock() else {
            return Taken::Wait(None);
        };
        let Some(since) = queue.since else {
            return Taken::Wait(None);
        };
        let due = since + BATCH_DELAY;
        if closing
            || queue.hurried
            || queue.rows >= BATCH_ROWS
            || tokio::time::Instant::now() >= due
        {
            let entries = std::mem::take(&mut queue.entries);
            queue.rows = 0;
            queue.since = None;
            queue.hurried = false;
            Taken::Write(entries, queue.queued)
        } else {
            Taken::Wait(Some(due))
        }
    }
}

/// What the writer takes from the queue.
enum Taken {
    /// These records, the last of them numbered so.
    Write(Vec<Entry>, u64),
    /// Nothing yet: wait until then (or until woken).
    Wait(Option<tokio::time::Instant>),
}

/// The background writer.
struct Writer {
    store: Arc<dyn FeedbackStore>,
    metrics: Arc<Metrics>,
    flushed: watch::Sender<u64>,
    log: std::sync::Weak<InferenceLog>,
}

impl Writer {
    async fn run(self, wake: Arc<Notify>, mut closed: watch::Receiver<bool>) {
        loop {
            let closing = *closed.borrow();
            let Some(log) = self.log.upgrade() else {
                return;
            };
            let taken = log.take(closing);
            drop(log);
            match taken {
                Taken::Write(entries, last) => {
                    self.write(entries).await;
                    self.flushed.send_replace(last);
                }
                Taken::Wait(_) if closing => return,
                Taken::Wait(until) => {
                    let sleep = async {
                        match until {
                            Some(until) => tokio::time::sleep_until(until).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = wake.notified() => {}
                        () = sleep => {}
                        _ = closed.wait_for(|&closing| closing) => {}
                    }
                }
            }
        }
    }

    /// Writes `entries` in transactions of at most [`BATCH_ROWS`] rows.
    async fn write(&self, entries: Vec<Entry>) {
        let mut served = Vec::new();
        let mut shadowed = Vec::new();
        for entry in entries {
            match entry {
                Entry::Served(entry, time_ms) => served.extend(served_rows(entry, time_ms)),
                Entry::Shadowed(entry, time_ms) => {
                    shadowed.extend(shadowed_rows(entry, time_ms));
                }
            }
            if served.len() + shadowed.len() >= BATCH_ROWS {
                self.commit(std::mem::take(&mut served), std::mem::take(&mut shadowed))
                    .await;
            }
        }
        if !served.is_empty() || !shadowed.is_empty() {
            self.commit(served, shadowed).await;
        }
    }

    /// True once the log is closing (or gone): no more waiting for the store.
    fn closing(&self) -> bool {
        self.log.upgrade().is_none_or(|log| *log.closing.borrow())
    }

    /// One transaction, retried while the store is unavailable (see [`MAX_RETRY_PAUSE`]).
    async fn commit(&self, served: Vec<ServedRow>, shadowed: Vec<ShadowedRow>) {
        let written = (served.len() + shadowed.len()) as u64;
        let mut per_model: BTreeMap<Arc<str>, u64> = BTreeMap::new();
        for model in served
            .iter()
            .map(|r| &r.model)
            .chain(shadowed.iter().map(|r| &r.model))
        {
            *per_model.entry(Arc::clone(model)).or_default() += 1;
        }
        let (served, shadowed): (Arc<[ServedRow]>, Arc<[ShadowedRow]>) =
            (served.into(), shadowed.into());
        let mut backoff = Duration::from_millis(100);
        let outcome = loop {
            match self
                .store
                .append(Arc::clone(&served), Arc::clone(&shadowed))
                .await
            {
                // The database is out of reach: keep this batch and try again (the queue
                // behind it fills up to its bound, and what does not fit is counted as dropped),
                // unless the log is closing.
                Err(StoreError::Unavailable { .. }) if !self.closing() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY_PAUSE);
                }
                outcome => break outcome,
            }
        };
        match outcome {
            Ok(repeated) => {
                self.metrics
                    .counter(metrics::INFERENCE_LOG_ROWS, &[])
                    .increment(written);
                for (model, rows) in repeated {
                    self.metrics
                        .counter(metrics::INFERENCE_LOG_REPEATED, &[("model", &model)])
                        .increment(rows);
                }
            }
            Err(error) => {
                tracing::warn!(%error, rows = written, "inference log batch not written");
                if let Some(log) = self.log.upgrade() {
                    for (model, rows) in per_model {
                        log.count_dropped(&model, rows);
                    }
                }
            }
        }
    }
}

/// The answered rows of one request, each with its inputs as a JSON array.
fn served_rows(entry: Served, time_ms: i64) -> Vec<ServedRow> {
    (0..entry.rows)
        .map(|row| ServedRow {
            model: Arc::clone(&entry.model),
            request_id: Arc::clone(&entry.request_id),
            row: u32::try_from(row).unwrap_or(u32::MAX),
            version: Arc::clone(&entry.version),
            direct: entry.direct,
            time_ms,
            input: row_json(&entry.inputs, row, entry.rows),
            prediction: entry.predictions.row(row),
            shadows: entry.shadows.clone(),
        })
        .collect()
}

fn shadowed_rows(entry: Shadowed, time_ms: i64) -> Vec<ShadowedRow> {
    (0..entry.rows)
        .map(|row| ShadowedRow {
            model: Arc::clone(&entry.model),
            request_id: Arc::clone(&entry.request_id),
            row: u32::try_from(row).unwrap_or(u32::MAX),
            version: Arc::clone(&entry.version),
            time_ms,
            prediction: entry
                .predictions
                .as_ref()
                .map(|p| p.row(row))
                .unwrap_or_default(),
        })
        .collect()
}

/// Row `row` of every input (each `[rows, ...]`), concatenated, as a JSON array.
fn row_json(inputs: &[Tensor], row: usize, rows: usize) -> String {
    let mut json = String::from("[");
    let mut first = true;
    for tensor in inputs {
        let data = tensor.data();
        let width = data.len().checked_div(rows).unwrap_or(0);
        for index in row * width..(row + 1) * width {
            if !first {
                json.push(',');
            }
            first = false;
            match data {
                TensorData::String(values) => {
                    let text = values.get(index).map_or("", String::as_str);
                    json.push_str(&serde_json::Value::from(text).to_string());
                }
                // Single precision as the model saw it, printed as such (4.2, not 4.19999…).
                TensorData::F32(values) => match values.get(index).filter(|v| v.is_finite()) {
                    Some(value) => {
                        let _ = write!(json, "{value}");
                    }
                    None => json.push_str("null"),
                },
                TensorData::Bool(values) => {
                    json.push_str(if values.get(index).copied().unwrap_or(false) {
                        "true"
                    } else {
                        "false"
                    });
                }
                _ => match data.get_f64(index).filter(|v| v.is_finite()) {
                    Some(value) => {
                        let _ = write!(json, "{value}");
                    }
                    None => json.push_str("null"),
                },
            }
        }
    }
    json.push(']');
    json
}

async fn expire_periodically(
    store: Arc<dyn FeedbackStore>,
    settings: LogSettings,
    mut closed: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(EXPIRY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = closed.wait_for(|&closing| closing) => return,
        }
        let ttl_ms = i64::try_from(settings.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut deleted = 0;
        loop {
            match store
                .expire(
                    now_ms().saturating_sub(ttl_ms),
                    settings.max_rows,
                    EXPIRY_CHUNK,
                )
                .await
            {
                Ok(count) => {
                    deleted += count;
                    if count < EXPIRY_CHUNK {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "inference log expiry failed");
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::debug!(deleted, "inference log rows expired");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_json_arrays_of_every_input() {
        let a = Tensor::new(vec![2, 2], TensorData::F32(vec![1.5, 2.0, 3.0, f32::NAN]))
            .expect("tensor");
        let b = Tensor::new(
            vec![2],
            TensorData::String(vec!["x".into(), "\"y\"".into()]),
        )
        .expect("tensor");
        assert_eq!(row_json(&[a.clone(), b.clone()], 0, 2), "[1.5,2,\"x\"]");
        let c = Tensor::new(vec![1, 2], TensorData::F32(vec![4.2, 0.1])).expect("tensor");
        assert_eq!(
            row_json(&[c], 0, 1),
            "[4.2,0.1]",
            "f32 values keep their precision"
        );
        assert_eq!(row_json(&[a, b], 1, 2), "[3,null,\"\\\"y\\\"\"]");
    }

    #[test]
    fn classifier_rows_carry_class_and_confidence_regressors_a_value() {
        let classes = RowPredictions {
            classes: Some(vec![2, 0]),
            values: Some(vec![0.9, 0.6]),
            classifier: true,
        };
        assert_eq!(
            classes.row(1),
            LoggedPrediction {
                class: Some(0),
                confidence: Some(0.6),
                value: None
            }
        );
        let values = RowPredictions {
            classes: None,
            values: Some(vec![151.25]),
            classifier: false,
        };
        assert_eq!(values.row(0).value, Some(151.25));
        assert_eq!(values.row(5), LoggedPrediction::default());
    }
}
