//! Shadows: a bounded queue per shadow (`try_send`; when full the copy is dropped and counted) and
//! shadow workers that run the copies off the request path, with a timeout, and compare each
//! result with the champion's. Nothing here can delay, fail or change a champion response.
//!
//! Workers are dedicated OS threads blocking on the queue, not tasks on the async runtime: a copy
//! is run without a hand-off to another pool, and a shadow that hangs only stalls its own
//! workers (its queue fills and the drops are counted) while the async workers keep serving.

use super::observation::{Wanted, observe};
use super::{LoadedVersion, NamedInput, RowPrediction, fit_inputs, row_predictions};
use crate::engine::Tensor;
use crate::feedback::log::{InferenceLog, RowPredictions, Shadowed};
use crate::monitor::{ShadowStats, TrafficRole};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Queue, worker and timeout settings shared by every shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorSettings {
    /// Copies waiting per shadow before new ones are dropped.
    pub queue_capacity: usize,
    /// Workers per shadow.
    pub workers: usize,
    /// A shadow run taking longer than this counts as timed out and is not compared (the run
    /// itself cannot be interrupted; its worker takes the next copy when it ends).
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
    /// The request id of the champion's answer (the shadow's prediction is logged under it).
    pub request_id: Arc<str>,
}

/// A shadow version's queue and workers, and its comparison figures. Dropping the last handle
/// drops the sender, which ends the workers once the queue is drained.
pub struct Mirror {
    /// The shadow version.
    pub version: Arc<LoadedVersion>,
    /// Its comparison figures.
    pub stats: Arc<ShadowStats>,
    sender: SyncSender<MirrorJob>,
}

/// What a shadow worker needs besides its queue.
struct Worker {
    shadow: Arc<LoadedVersion>,
    stats: Arc<ShadowStats>,
    settings: MirrorSettings,
    log: Option<Arc<InferenceLog>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("version", &self.version.version)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Starts the worker threads of a shadow version; each run's prediction goes to `log`.
    pub fn start(
        version: Arc<LoadedVersion>,
        stats: Arc<ShadowStats>,
        settings: MirrorSettings,
        log: Option<Arc<InferenceLog>>,
    ) -> Mirror {
        let (sender, receiver) = sync_channel(settings.queue_capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..settings.workers.max(1) {
            let receiver = Arc::clone(&receiver);
            let worker = Worker {
                shadow: Arc::clone(&version),
                stats: Arc::clone(&stats),
                settings,
                log: log.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!(
                    "shadow-{}-{}-{index}",
                    version.model, version.version
                ))
                .spawn(move || worker.work(&receiver));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a shadow worker; its copies will be dropped");
            }
        }
        Mirror {
            version,
            stats,
            sender,
        }
    }

    /// Queues a copy without waiting; a full queue drops it and counts the drop. True when the
    /// copy was queued.
    pub fn offer(&self, job: MirrorJob) -> bool {
        match self.sender.try_send(job) {
            Ok(()) => {
                self.stats.record_mirrored();
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.record_dropped();
                false
            }
        }
    }
}

impl Worker {
    /// One worker thread: takes copies until the shadow is dropped.
    fn work(&self, receiver: &Mutex<Receiver<MirrorJob>>) {
        loop {
            let job = match receiver.lock() {
                Ok(receiver) => match receiver.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
                Err(_) => return,
            };
            let started = Instant::now();
            let compared = match self.run_copy(&job) {
                Some(_) if started.elapsed() > self.settings.timeout => {
                    self.stats.record_timed_out();
                    None
                }
                Some((outputs, latency, predictions)) => {
                    let (agree, differences) = compare(
                        &job.champion,
                        &job.champion_outputs,
                        &self.shadow,
                        &outputs,
                        job.rows,
                    );
                    self.stats.record_comparison(
                        &agree,
                        &differences,
                        latency,
                        job.champion_latency,
                    );
                    Some(predictions)
                }
                None => {
                    self.stats.record_failed();
                    None
                }
            };
            if let Some(log) = &self.log {
                log.shadowed(Shadowed {
                    model: Arc::clone(&self.shadow.model),
                    version: Arc::clone(&self.shadow.version),
                    request_id: Arc::clone(&job.request_id),
                    rows: job.rows,
                    predictions: compared,
                });
            }
        }
    }

    /// Fits the copy to the shadow's signature, runs it, and records the shadow's own
    /// monitoring. `None` when the copy does not fit or the engine fails.
    fn run_copy(&self, job: &MirrorJob) -> Option<(Vec<Tensor>, Duration, RowPredictions)> {
        let version = &self.shadow;
        let (tensors, rows) = fit_inputs(
            version.signature(),
            job.inputs.as_ref().clone(),
            self.settings.max_batch_rows,
        )
        .ok()?;
        if rows != job.rows {
            return None;
        }
        let started = Instant::now();
        let outputs = version.run(&tensors).ok()?;
        let latency = started.elapsed();
        let wanted = Wanted {
            outlier_scores: false,
            predictions: self.log.is_some(),
        };
        let mut observation = observe(
            version,
            TrafficRole::Shadow,
            &tensors,
            &outputs,
            rows,
            latency,
            wanted,
        );
        version.monitor.record(&observation);
        let predictions = RowPredictions {
            classes: observation.classes.take(),
            values: observation.predictions.take(),
            classifier: version.roles.probabilities.is_some(),
        };
        Some((outputs, latency, predictions))
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
