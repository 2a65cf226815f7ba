//! The inference log's writer: answered rows and shadow predictions go into a bounded queue on
//! the request path (`try_send`: never waits; when full, the record is dropped and counted), and
//! one background task writes them to the store in batches (one transaction per 1,000 rows or
//! 50 ms, whichever comes first). Old rows are expired in the background (TTL, then a row cap).
//!
//! Feedback can arrive before its prediction is written: [`InferenceLog::flushed`] lets it wait
//! for everything queued so far to be written instead of answering "not found".

use crate::clock::now_ms;
use crate::engine::{Tensor, TensorData};
use crate::metrics::{self, Metrics};
use crate::store::FeedbackStore;
use crate::store::feedback::{LoggedPrediction, ServedRow, ShadowedRow};
use dashmap::DashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// Most rows written in one transaction.
pub const BATCH_ROWS: usize = 1_000;
/// Longest a record waits in the queue before its batch is written.
pub const BATCH_DELAY: Duration = Duration::from_millis(50);
/// How often old rows are expired.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

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
    Served(Served, i64, u64),
    Shadowed(Shadowed, i64, u64),
}

impl Entry {
    fn rows(&self) -> usize {
        match self {
            Entry::Served(s, ..) => s.rows,
            Entry::Shadowed(s, ..) => s.rows,
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Entry::Served(.., seq) | Entry::Shadowed(.., seq) => *seq,
        }
    }
}

/// The inference log: cheap to record into from the request path.
pub struct InferenceLog {
    sender: mpsc::Sender<Entry>,
    queued: AtomicU64,
    flushed: watch::Receiver<u64>,
    dropped: DashMap<Arc<str>, ::metrics::Counter>,
    metrics: Arc<Metrics>,
    closing: watch::Sender<bool>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Ends the batch being gathered at once (feedback is waiting for it).
    hurry: Arc<Notify>,
}

impl std::fmt::Debug for InferenceLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceLog")
            .field("queued", &self.queued.load(Ordering::Relaxed))
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
        let (sender, receiver) = mpsc::channel(settings.queue.max(1));
        let (flushed_tx, flushed) = watch::channel(0);
        let (closing, closed) = watch::channel(false);
        let log = Arc::new(InferenceLog {
            sender,
            queued: AtomicU64::new(0),
            flushed,
            dropped: DashMap::new(),
            metrics: Arc::clone(&metrics),
            closing,
            writer: std::sync::Mutex::new(None),
            hurry: Arc::new(Notify::new()),
        });
        let writer = Writer {
            store: Arc::clone(&store),
            hurry: Arc::clone(&log.hurry),
            metrics,
            flushed: flushed_tx,
            log: Arc::downgrade(&log),
        };
        let handle = tokio::spawn(writer.run(receiver, closed.clone()));
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
        let model = Arc::clone(&served.model);
        let seq = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if self
            .sender
            .try_send(Entry::Served(served, now_ms(), seq))
            .is_err()
        {
            self.count_dropped(&model, 1);
        }
    }

    /// Queues a shadow's run of a copied request. Never waits.
    pub fn shadowed(&self, shadowed: Shadowed) {
        let model = Arc::clone(&shadowed.model);
        let seq = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if self
            .sender
            .try_send(Entry::Shadowed(shadowed, now_ms(), seq))
            .is_err()
        {
            self.count_dropped(&model, 1);
        }
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

    /// Waits (at most `limit`) until everything queued before the call has been written.
    /// Returns false when the limit ran out first (a record dropped from a full queue is never
    /// written, so a caller must not wait without limit).
    pub async fn flushed(&self, limit: Duration) -> bool {
        let target = self.queued.load(Ordering::Relaxed);
        let mut flushed = self.flushed.clone();
        if *flushed.borrow() < target {
            self.hurry.notify_one();
        }
        tokio::time::timeout(limit, flushed.wait_for(|&done| done >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The background writer.
struct Writer {
    store: Arc<dyn FeedbackStore>,
    hurry: Arc<Notify>,
    metrics: Arc<Metrics>,
    flushed: watch::Sender<u64>,
    log: std::sync::Weak<InferenceLog>,
}

impl Writer {
    async fn run(self, mut receiver: mpsc::Receiver<Entry>, mut closed: watch::Receiver<bool>) {
        let mut batch: Vec<Entry> = Vec::new();
        loop {
            let first = tokio::select! {
                entry = receiver.recv() => entry,
                _ = closed.wait_for(|&closing| closing) => None,
            };
            let Some(first) = first else {
                // Closing (or every sender gone): write what is left, then stop.
                while let Ok(entry) = receiver.try_recv() {
                    batch.push(entry);
                    if batch.iter().map(Entry::rows).sum::<usize>() >= BATCH_ROWS {
                        self.write(&mut batch).await;
                    }
                }
                if !batch.is_empty() {
                    self.write(&mut batch).await;
                }
                return;
            };
            let mut rows = first.rows();
            batch.push(first);
            let deadline = tokio::time::Instant::now() + BATCH_DELAY;
            // The batch ends when full, when its first record has waited BATCH_DELAY, or when
            // feedback waits for it.
            while rows < BATCH_ROWS {
                tokio::select! {
                    entry = receiver.recv() => match entry {
                        Some(entry) => {
                            rows += entry.rows();
                            batch.push(entry);
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = self.hurry.notified() => break,
                }
            }
            self.write(&mut batch).await;
        }
    }

    async fn write(&self, batch: &mut Vec<Entry>) {
        let last = batch.iter().map(Entry::seq).max().unwrap_or(0);
        let mut served = Vec::new();
        let mut shadowed = Vec::new();
        for entry in batch.drain(..) {
            match entry {
                Entry::Served(entry, time_ms, _) => served.extend(served_rows(entry, time_ms)),
                Entry::Shadowed(entry, time_ms, _) => {
                    shadowed.extend(shadowed_rows(entry, time_ms));
                }
            }
        }
        let written = (served.len() + shadowed.len()) as u64;
        match self.store.append(&served, &shadowed).await {
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
                    for row in &served {
                        log.count_dropped(&row.model, 1);
                    }
                    for row in &shadowed {
                        log.count_dropped(&row.model, 1);
                    }
                }
            }
        }
        self.flushed.send_replace(last);
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
        match store
            .expire(now_ms().saturating_sub(ttl_ms), settings.max_rows)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "inference log rows expired"),
            Err(error) => tracing::warn!(%error, "inference log expiry failed"),
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
