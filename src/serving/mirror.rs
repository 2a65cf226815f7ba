//! Shadows: a bounded queue per shadow (`try_send`; when full the copy is dropped and counted) and
//! shadow workers that run the copies off the request path, with a timeout, and compare each
//! result with the champion's. Nothing here can delay, fail or change a champion response.

use super::{LoadedVersion, NamedInput, RowPrediction, fit_inputs, row_predictions};
use crate::engine::Tensor;
use crate::monitor::{ShadowStats, TrafficRole};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

/// Queue, worker and timeout settings shared by every shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorSettings {
    /// Copies waiting per shadow before new ones are dropped.
    pub queue_capacity: usize,
    /// Workers per shadow.
    pub workers: usize,
    /// How long a shadow run may take before it counts as timed out.
    pub timeout: Duration,
    /// Row limit applied when fitting copies to the shadow's signature.
    pub max_batch_rows: usize,
}

/// One mirrored request: the inputs as the client sent them and what the champion answered.
pub struct MirrorJob {
    /// The request's inputs, shared by every shadow that takes the copy.
    pub inputs: Arc<Vec<NamedInput>>,
    /// The champion version that answered.
    pub champion: Arc<LoadedVersion>,
    /// The champion's model outputs (signature order).
    pub champion_outputs: Arc<Vec<Tensor>>,
    /// Rows in the request.
    pub rows: usize,
    /// The champion's inference time on this request.
    pub champion_latency: Duration,
}

/// A version receiving a fraction of the champion's traffic.
pub struct Shadow {
    /// The shadow version.
    pub version: Arc<LoadedVersion>,
    /// Share of champion requests copied to it (0–1).
    pub fraction: f64,
    /// Its comparison figures (kept across fraction changes).
    pub stats: Arc<ShadowStats>,
    sender: mpsc::Sender<MirrorJob>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("version", &self.version.version)
            .field("fraction", &self.fraction)
            .finish_non_exhaustive()
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

impl Shadow {
    /// Starts the workers of a shadow. Must run inside the tokio runtime.
    pub fn start(
        version: Arc<LoadedVersion>,
        fraction: f64,
        stats: Arc<ShadowStats>,
        settings: MirrorSettings,
    ) -> Shadow {
        let (sender, receiver) = mpsc::channel(settings.queue_capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = (0..settings.workers.max(1))
            .map(|_| {
                tokio::spawn(work(
                    Arc::clone(&receiver),
                    Arc::clone(&version),
                    Arc::clone(&stats),
                    settings,
                ))
            })
            .collect();
        Shadow {
            version,
            fraction,
            stats,
            sender,
            workers,
        }
    }

    /// True for the share of requests this shadow should see.
    pub fn takes_request(&self) -> bool {
        self.fraction >= 1.0 || (self.fraction > 0.0 && fastrand::f64() < self.fraction)
    }

    /// Queues a copy without waiting; a full queue drops it and counts the drop.
    pub fn offer(&self, job: MirrorJob) {
        match self.sender.try_send(job) {
            Ok(()) => self.stats.record_mirrored(),
            Err(_) => self.stats.record_dropped(),
        }
    }
}

async fn work(
    receiver: Arc<Mutex<mpsc::Receiver<MirrorJob>>>,
    shadow: Arc<LoadedVersion>,
    stats: Arc<ShadowStats>,
    settings: MirrorSettings,
) {
    loop {
        let job = {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(job) => job,
                None => return,
            }
        };
        let MirrorJob {
            inputs,
            champion,
            champion_outputs,
            rows,
            champion_latency,
        } = job;
        let version = Arc::clone(&shadow);
        let mut task = tokio::task::spawn_blocking(move || {
            let (tensors, rows) = fit_inputs(
                version.signature(),
                inputs.as_ref().clone(),
                settings.max_batch_rows,
            )
            .ok()?;
            let monitor = &version.monitor;
            let watched = (monitor.is_enabled() && monitor.width() > 0)
                .then(|| super::flat_values(&tensors[0]));
            let started = Instant::now();
            let outputs = version.run(tensors).ok()?;
            let latency = started.elapsed();
            if monitor.is_enabled() {
                let scores = watched.as_deref().and_then(|v| monitor.outlier_scores(v));
                let predictions = super::version::prediction_values(&outputs, version.roles);
                let classes = super::class_indices(
                    &outputs,
                    version.roles,
                    version.monitor_classes().len(),
                    rows,
                );
                monitor.observe(
                    TrafficRole::Shadow,
                    watched.as_deref(),
                    scores.as_deref(),
                    predictions.as_deref(),
                    Some(&classes),
                    None,
                    rows,
                    latency,
                );
            }
            Some((outputs, rows, latency))
        });
        match tokio::time::timeout(settings.timeout, &mut task).await {
            Ok(Ok(Some((outputs, shadow_rows, latency)))) if shadow_rows == rows => {
                let (agree, differences) =
                    compare(&champion, &champion_outputs, &shadow, &outputs, rows);
                stats.record_comparison(&agree, &differences, latency, champion_latency);
            }
            Ok(_) => stats.record_failed(),
            Err(_) => {
                stats.record_timed_out();
                // Wait for the run to end before taking the next copy: a hung shadow backs up
                // its own queue (drops are counted) instead of piling up blocking threads.
                let _ = task.await;
            }
        }
    }
}

/// Per row: whether the labels agree, and the absolute difference of the regression values (or,
/// for classifiers, of the champion's top-class probability as each version scores it).
fn compare(
    champion: &LoadedVersion,
    champion_outputs: &[Tensor],
    shadow: &LoadedVersion,
    shadow_outputs: &[Tensor],
    rows: usize,
) -> (Vec<bool>, Vec<f64>) {
    let ours = row_predictions(champion_outputs, champion.roles, &champion.metadata, rows);
    let theirs = row_predictions(shadow_outputs, shadow.roles, &shadow.metadata, rows);
    let mut agree = Vec::with_capacity(rows);
    let mut differences = Vec::with_capacity(rows);
    for (a, b) in ours.iter().zip(&theirs) {
        match (a, b) {
            (RowPrediction::Value(x), RowPrediction::Value(y)) => differences.push((x - y).abs()),
            (
                RowPrediction::Class {
                    label: la,
                    probabilities: pa,
                },
                RowPrediction::Class {
                    label: lb,
                    probabilities: pb,
                },
            ) => {
                agree.push(la == lb);
                let top = pa.iter().find(|(class, _)| class == la).map(|(_, p)| *p);
                let same_class = top.and_then(|_| pb.iter().find(|(class, _)| class == la));
                if let (Some(p), Some((_, q))) = (top, same_class) {
                    differences.push((p - q).abs());
                }
            }
            _ => agree.push(false),
        }
    }
    (agree, differences)
}
