//! Admission control per model: a bound on inferences in flight and a bounded queue of
//! requests waiting for one, each with a deadline. A request beyond the queue is refused at once
//! (429, with `Retry-After`); one whose deadline passes while it waits is refused without
//! running (503). Shadows run on their own workers and never take a model's capacity.

use super::ServingError;
use super::pressure::Pressure;
use super::version::InferenceCost;
use crate::metrics::{ADMISSION_REFUSED, Metrics};
use metrics::Counter;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Longest derived queue.
const LONGEST_DERIVED_QUEUE: usize = 4096;
/// The wait a derived queue aims at: this, or ten times the model's cost if that is longer.
const QUEUE_WAIT_TARGET: Duration = Duration::from_millis(1);

/// How much each model admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Inferences of one model running at once.
    pub max_in_flight: usize,
    /// Requests waiting for one; `None`: derived from the version's measured cost and `cores`
    /// (see [`AdmissionSettings::queue_for`]).
    pub max_queue: Option<usize>,
    /// Deadline of requests that name none.
    pub default_timeout: Duration,
    /// CPU cores inferences share, for the derived queue.
    pub cores: usize,
    /// Scheduling delay above which new inferences are refused (see [`super::Pressure`]);
    /// `None`: never.
    pub shed_delay: Option<Duration>,
}

impl AdmissionSettings {
    /// The queue bound for a version of cost `cost`: `max_queue` when set, else as many
    /// requests as the cores work off (together with the `max_in_flight` already running) in
    /// 1 ms or ten times the cost, whichever is longer — at least one per core, at most 4096.
    /// Under sustained overload the wait of an admitted request so stays a small multiple of
    /// the model's own time; the excess is refused at once instead of queueing for seconds.
    pub fn queue_for(&self, cost: &InferenceCost) -> usize {
        self.max_queue.unwrap_or_else(|| {
            let per_request = cost.fixed.max(Duration::from_micros(1));
            let wait = QUEUE_WAIT_TARGET.max(per_request * 10);
            let cores = self.cores.max(1);
            let drained = wait.as_nanos() * cores as u128 / per_request.as_nanos();
            let derived = drained.saturating_sub(self.max_in_flight as u128);
            usize::try_from(derived)
                .unwrap_or(usize::MAX)
                .clamp(cores, LONGEST_DERIVED_QUEUE)
        })
    }
}

/// One model's admission state.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_full: Counter,
    expired: Counter,
    shed: Counter,
}

/// The right to run one inference; released when dropped.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// Decrements the waiting count when a waiter leaves, however it leaves.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Admission for `max_in_flight` inferences of `model` at once, counting refusals in
    /// `metrics`.
    pub fn new(model: &str, max_in_flight: usize, metrics: &Metrics) -> Admission {
        let refused =
            |reason| metrics.counter(ADMISSION_REFUSED, &[("model", model), ("reason", reason)]);
        Admission {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            waiting: AtomicUsize::new(0),
            queue_full: refused("queue_full"),
            expired: refused("deadline"),
            shed: refused("pressure"),
        }
    }

    /// Admits a request of `model` now, or after waiting in a queue of at most `queue`
    /// requests until `deadline`.
    ///
    /// # Errors
    /// [`ServingError::Overloaded`] when the queue is full; [`ServingError::DeadlineExceeded`]
    /// when the deadline passes first (also when it has passed already).
    pub async fn admit(
        &self,
        model: &str,
        queue: usize,
        deadline: Instant,
    ) -> Result<Admitted, ServingError> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return self.before(model, deadline, permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.queue_full.increment(1);
            return Err(ServingError::Overloaded {
                model: model.to_string(),
                queue,
            });
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => self.before(model, deadline, permit),
            Ok(Err(_)) | Err(_) => Err(self.expire(model, deadline)),
        }
    }

    /// Admits a request holding `permit` unless its deadline has passed.
    fn before(
        &self,
        model: &str,
        deadline: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Result<Admitted, ServingError> {
        if Instant::now() >= deadline {
            return Err(self.expire(model, deadline));
        }
        Ok(Admitted { _permit: permit })
    }

    fn expire(&self, model: &str, deadline: Instant) -> ServingError {
        self.expired.increment(1);
        ServingError::DeadlineExceeded {
            model: model.to_string(),
            late: Instant::now().saturating_duration_since(deadline),
        }
    }

    /// Refuses a request of `model` because the gateway is shedding load (`pressure`).
    pub fn shed(&self, model: &str, pressure: &Pressure) -> ServingError {
        self.shed.increment(1);
        ServingError::Busy {
            model: model.to_string(),
            delay: pressure.delay(),
            limit: pressure.limit().unwrap_or_default(),
        }
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(micros: u64) -> InferenceCost {
        InferenceCost {
            fixed: Duration::from_micros(micros),
            per_row: Duration::ZERO,
        }
    }

    #[test]
    fn the_derived_queue_bounds_the_wait_to_a_few_times_the_cost() {
        let settings = AdmissionSettings {
            max_in_flight: 8,
            max_queue: None,
            default_timeout: Duration::from_secs(10),
            cores: 2,
            shed_delay: None,
        };
        assert_eq!(
            settings.queue_for(&cost(100)),
            12,
            "1 ms × 2 cores / 100 µs = 20, minus the 8 running"
        );
        assert_eq!(
            settings.queue_for(&cost(1_000)),
            12,
            "10 × 1 ms × 2 cores / 1 ms = 20, minus the 8 running"
        );
        assert_eq!(settings.queue_for(&cost(0)), 1992, "2,000 per ms minus 8");
        let busy = AdmissionSettings {
            max_in_flight: 32,
            ..settings
        };
        assert_eq!(busy.queue_for(&cost(1_000)), 2, "at least one per core");
        let wide = AdmissionSettings {
            cores: 64,
            ..settings
        };
        assert_eq!(wide.queue_for(&cost(0)), 4096, "capped");
        let fixed = AdmissionSettings {
            max_queue: Some(3),
            ..settings
        };
        assert_eq!(fixed.queue_for(&cost(20)), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_queue_is_refused_and_waiters_expire_at_their_deadline() {
        let admission = Arc::new(Admission::new("m", 1, &Metrics::new()));
        let far = Instant::now() + Duration::from_secs(60);
        let running = admission.admit("m", 1, far).await.expect("first runs");
        let waiter = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move {
                admission
                    .admit("m", 1, Instant::now() + Duration::from_millis(100))
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(admission.waiting(), 1);
        let refused = admission.admit("m", 1, far).await;
        assert!(matches!(
            refused,
            Err(ServingError::Overloaded { queue: 1, .. })
        ));
        let expired = waiter.await.expect("joined");
        assert!(matches!(
            expired,
            Err(ServingError::DeadlineExceeded { .. })
        ));
        assert_eq!(admission.waiting(), 0);
        drop(running);
        let again = admission.admit("m", 1, far).await;
        assert!(again.is_ok(), "capacity comes back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_runs_when_capacity_frees_and_a_passed_deadline_never_runs() {
        let admission = Arc::new(Admission::new("m", 1, &Metrics::new()));
        let far = Instant::now() + Duration::from_secs(60);
        let running = admission.admit("m", 4, far).await.expect("first runs");
        let waiter = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move { admission.admit("m", 4, far).await })
        };
        tokio::task::yield_now().await;
        drop(running);
        assert!(waiter.await.expect("joined").is_ok());
        let past = Instant::now() - Duration::from_millis(1);
        assert!(matches!(
            admission.admit("m", 4, past).await,
            Err(ServingError::DeadlineExceeded { .. })
        ));
    }
}
