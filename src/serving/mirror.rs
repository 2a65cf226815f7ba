//! Shadows: a bounded queue per shadow (`try_send`; when full the copy is dropped and counted) and
//! shadow workers that run the copies off the request path, with a timeout, and compare each
//! result with the champion's. Nothing here can delay, fail or change a champion response.
//!
//! Workers are dedicated OS threads blocking on the queue, not tasks on the async runtime: a copy
//! is run without a hand-off to another pool, and a shadow that hangs only stalls its own
//! workers (its queue fills and the drops are counted) while the async workers keep serving.

use super::observation::observe;
use super::{LoadedVersion, NamedInput, RowPrediction, fit_inputs, row_predictions};
use crate::engine::Tensor;
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

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("version", &self.version.version)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Starts the worker threads of a shadow version.
    pub fn start(
        version: Arc<LoadedVersion>,
        stats: Arc<ShadowStats>,
        settings: MirrorSettings,
    ) -> Mirror {
        let (sender, receiver) = sync_channel(settings.queue_capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..settings.workers.max(1) {
            let receiver = Arc::clone(&receiver);
            let version = Arc::clone(&version);
            let stats = Arc::clone(&stats);
            let spawned = std::thread::Builder::new()
                .name(format!(
                    "shadow-{}-{}-{index}",
                    version.model, version.version
                ))
                .spawn(move || work(&receiver, &version, &stats, settings));
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

    /// Queues a copy without waiting; a full queue drops it and counts the drop.
    pub fn offer(&self, job: MirrorJob) {
        match self.sender.try_send(job) {
            Ok(()) => self.stats.record_mirrored(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.record_dropped();
            }
        }
    }
}

/// One worker thread: takes copies until the shadow is dropped.
fn work(
    receiver: &Mutex<Receiver<MirrorJob>>,
    shadow: &Arc<LoadedVersion>,
    stats: &ShadowStats,
    settings: MirrorSettings,
) {
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let started = Instant::now();
        match run_copy(shadow, &job, settings) {
            Some(_) if started.elapsed() > settings.timeout => stats.record_timed_out(),
            Some((outputs, latency)) => {
                let (agree, differences) = compare(
                    &job.champion,
                    &job.champion_outputs,
                    shadow,
                    &outputs,
                    job.rows,
                );
                stats.record_comparison(&agree, &differences, latency, job.champion_latency);
            }
            None => stats.record_failed(),
        }
    }
}

/// Fits the copy to the shadow's signature, runs it, and records the shadow's own monitoring.
/// `None` when the copy does not fit or the engine fails.
fn run_copy(
    version: &LoadedVersion,
    job: &MirrorJob,
    settings: MirrorSettings,
) -> Option<(Vec<Tensor>, Duration)> {
    let (tensors, rows) = fit_inputs(
        version.signature(),
        job.inputs.as_ref().clone(),
        settings.max_batch_rows,
    )
    .ok()?;
    if rows != job.rows {
        return None;
    }
    let started = Instant::now();
    let outputs = version.run(&tensors).ok()?;
    let latency = started.elapsed();
    let observation = observe(
        version,
        TrafficRole::Shadow,
        &tensors,
        &outputs,
        rows,
        latency,
        false,
    );
    version.monitor.record(&observation);
    Some((outputs, latency))
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
