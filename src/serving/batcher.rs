//! Dynamic batching for one version (`[batching]` in `model.toml`, Triton's dynamic batcher
//! semantics): concurrent requests queue, and a batch runs when it holds `max_rows` rows or when
//! its oldest request has waited `max_queue_delay_us`. Inputs are stacked along the rows, run
//! once on the blocking pool, and the outputs are cut back into each request's rows exactly. A
//! request that cannot share a batch (other trailing dimensions, outputs without a row
//! dimension) runs on its own.

use crate::engine::{EngineError, Model, Tensor};
use crate::repository::Batching;
use metrics::Counter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting to join a batch before callers wait to queue.
const QUEUE: usize = 4096;

/// What a batched request gets back: its inputs, and its outputs or the engine's error.
pub type BatchResult = (Vec<Tensor>, Result<Vec<Tensor>, EngineError>);

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    reply: oneshot::Sender<BatchResult>,
}

/// The queue of one version's batcher; its worker stops when the version is dropped.
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts a batcher for `engine` on the current tokio runtime, with one worker per CPU
    /// (so one batch runs while the next one gathers), counting into `counters` (batches,
    /// requests); `None` outside a runtime.
    pub fn start(
        engine: Arc<dyn Model>,
        settings: Batching,
        counters: (Counter, Counter),
    ) -> Option<Batcher> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        for _ in 0..workers {
            runtime.spawn(work(
                Arc::clone(&engine),
                settings,
                Arc::clone(&queue),
                counters.clone(),
            ));
        }
        Some(Batcher { jobs })
    }

    /// Runs `inputs` (`rows` rows) as part of a batch.
    ///
    /// # Errors
    /// [`EngineError::Run`] when the batcher has stopped.
    pub async fn run(&self, inputs: Vec<Tensor>, rows: usize) -> Result<BatchResult, EngineError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || EngineError::Run("the version's batcher has stopped".into());
        self.jobs
            .send(Job {
                inputs,
                rows,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

/// One worker: gathers a batch (holding the queue meanwhile), runs it, answers, and again,
/// until every sender is gone.
async fn work(
    engine: Arc<dyn Model>,
    settings: Batching,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    (batches, requests): (Counter, Counter),
) {
    let delay = Duration::from_micros(settings.max_queue_delay_us);
    let mut carried: Option<Job> = None;
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let first = match carried.take() {
                Some(job) => job,
                None => match queue.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let deadline = tokio::time::Instant::now() + delay;
            let (batch, left) = gather(first, &mut queue, settings.max_rows, deadline).await;
            carried = left;
            batch
        };
        batches.increment(1);
        requests.increment(batch.len() as u64);
        let engine = Arc::clone(&engine);
        let finished = tokio::task::spawn_blocking(move || run_batch(engine.as_ref(), batch)).await;
        if let Err(error) = finished {
            tracing::error!(%error, "a batch did not finish");
        }
    }
}

/// A batch starting with `first`: whatever is queued, then what arrives until `deadline`, up
/// to `max_rows` rows; also the job that did not fit, if one came. Waits of less than a
/// millisecond (below the timer's resolution) yield to other tasks instead of sleeping.
async fn gather(
    first: Job,
    queue: &mut mpsc::Receiver<Job>,
    max_rows: usize,
    deadline: tokio::time::Instant,
) -> (Vec<Job>, Option<Job>) {
    let mut rows = first.rows;
    let mut batch = vec![first];
    while rows < max_rows {
        let next = match queue.try_recv() {
            Ok(job) => Some(job),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    None
                } else if left < Duration::from_millis(1) {
                    tokio::task::yield_now().await;
                    continue;
                } else {
                    tokio::time::timeout_at(deadline, queue.recv())
                        .await
                        .ok()
                        .flatten()
                }
            }
        };
        match next {
            Some(job) if rows + job.rows <= max_rows => {
                rows += job.rows;
                batch.push(job);
            }
            Some(job) => return (batch, Some(job)),
            None => break,
        }
    }
    (batch, None)
}

/// Runs `batch` as one call when its requests stack, else (or when that call fails, so that
/// one bad request fails alone) one call each, and answers each.
fn run_batch(engine: &dyn Model, batch: Vec<Job>) {
    let together = (batch.len() > 1)
        .then(|| stack(&batch))
        .flatten()
        .and_then(|stacked| engine.run(&stacked).ok())
        .and_then(|outputs| {
            let counts: Vec<usize> = batch.iter().map(|job| job.rows).collect();
            outputs
                .iter()
                .map(|output| output.split_rows(&counts))
                .collect::<Option<Vec<Vec<Tensor>>>>()
        });
    match together {
        Some(pieces) => {
            let mut per_job: Vec<Vec<Tensor>> = batch.iter().map(|_| Vec::new()).collect();
            for output in pieces {
                for (outputs, piece) in per_job.iter_mut().zip(output) {
                    outputs.push(piece);
                }
            }
            for (job, outputs) in batch.into_iter().zip(per_job) {
                let _ = job.reply.send((job.inputs, Ok(outputs)));
            }
        }
        None => {
            for job in batch {
                let outputs = engine.run(&job.inputs);
                let _ = job.reply.send((job.inputs, outputs));
            }
        }
    }
}

/// Every input of `batch` stacked along the rows, when they all stack.
fn stack(batch: &[Job]) -> Option<Vec<Tensor>> {
    let inputs = batch.first()?.inputs.len();
    (0..inputs)
        .map(|index| {
            let parts: Option<Vec<&Tensor>> =
                batch.iter().map(|job| job.inputs.get(index)).collect();
            Tensor::concat_rows(&parts?)
        })
        .collect()
}
