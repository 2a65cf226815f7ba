//! Admission control per model: a bound on inferences in flight and a bounded queue of
//! requests waiting for one, each with a deadline. A request beyond the queue is refused at once
//! (429, with `Retry-After`); one whose deadline passes while it waits is refused without
//! running (503). Shadows run on their own workers and never take a model's capacity.

use super::ServingError;
use super::version::InferenceCost;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Shortest and longest derived queue.
const DERIVED_QUEUE: (usize, usize) = (16, 4096);

/// How much each model admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Inferences of one model running at once.
    pub max_in_flight: usize,
    /// Requests waiting for one; `None`: as many as the champion's measured cost lets finish
    /// within the default timeout (at least 16, at most 4096).
    pub max_queue: Option<usize>,
    /// Deadline of requests that name none.
    pub default_timeout: Duration,
}

impl AdmissionSettings {
    /// The queue bound for a version of cost `cost`.
    pub fn queue_for(&self, cost: &InferenceCost) -> usize {
        self.max_queue.unwrap_or_else(|| {
            let per_request = cost.fixed.max(Duration::from_micros(1));
            let rounds = self.default_timeout.as_nanos() / per_request.as_nanos();
            let derived = rounds.saturating_mul(self.max_in_flight as u128);
            usize::try_from(derived)
                .unwrap_or(usize::MAX)
                .clamp(DERIVED_QUEUE.0, DERIVED_QUEUE.1)
        })
    }
}

/// One model's admission state.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    refused: AtomicU64,
    expired: AtomicU64,
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
    /// Admission for `max_in_flight` inferences at once.
    pub fn new(max_in_flight: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            waiting: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            expired: AtomicU64::new(0),
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
            self.refused.fetch_add(1, Ordering::Relaxed);
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
        self.expired.fetch_add(1, Ordering::Relaxed);
        ServingError::DeadlineExceeded {
            model: model.to_string(),
            late: Instant::now().saturating_duration_since(deadline),
        }
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Requests refused because the queue was full, and requests that expired waiting.
    pub fn refusals(&self) -> (u64, u64) {
        (
            self.refused.load(Ordering::Relaxed),
            self.expired.load(Ordering::Relaxed),
        )
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
    fn the_derived_queue_drains_within_the_timeout() {
        let settings = AdmissionSettings {
            max_in_flight: 4,
            max_queue: None,
            default_timeout: Duration::from_secs(1),
        };
        assert_eq!(
            settings.queue_for(&cost(10_000)),
            400,
            "100 rounds × 4 in flight"
        );
        assert_eq!(settings.queue_for(&cost(20)), 4096, "capped");
        assert_eq!(settings.queue_for(&cost(1_000_000)), 16, "at least 16");
        let fixed = AdmissionSettings {
            max_queue: Some(3),
            ..settings
        };
        assert_eq!(fixed.queue_for(&cost(20)), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_queue_is_refused_and_waiters_expire_at_their_deadline() {
        let admission = Arc::new(Admission::new(1));
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
        assert_eq!(admission.refusals(), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_runs_when_capacity_frees_and_a_passed_deadline_never_runs() {
        let admission = Arc::new(Admission::new(1));
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
