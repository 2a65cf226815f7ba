//! Load shedding on scheduling delay. Most models run inline on the request's worker, so their
//! admission queue never fills: under overload requests wait instead in the sockets and the
//! runtime's run queue, where no counter sees them. A probe measures that wait — every few
//! milliseconds a task yields and times how long the workers take to come back to it — and
//! while it stays above the limit for several probes in a row, new inference requests are
//! refused at once (429, before their bodies are read), which is cheaper than serving them and
//! lets the backlog drain.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// How often the delay is measured.
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// Probes in a row above the limit before requests are refused (a single late probe can be the
/// operating system's doing rather than the gateway's backlog).
const PROBES_TO_SHED: u32 = 3;

/// The scheduling delay measured now, and whether requests are being shed.
#[derive(Debug)]
pub struct Pressure {
    limit: Option<Duration>,
    delay_us: AtomicU64,
    over: AtomicU32,
}

impl Pressure {
    /// Measures the delay on the current runtime, shedding above `limit` (`None`: never sheds,
    /// and nothing is measured).
    pub fn start(limit: Option<Duration>) -> Arc<Pressure> {
        let pressure = Arc::new(Pressure {
            limit,
            delay_us: AtomicU64::new(0),
            over: AtomicU32::new(0),
        });
        if limit.is_some() {
            tokio::spawn(probe(Arc::downgrade(&pressure)));
        }
        pressure
    }

    /// Whether requests are being refused now: the last probes all waited longer than the limit.
    pub fn shedding(&self) -> bool {
        self.limit.is_some() && self.over.load(Ordering::Relaxed) >= PROBES_TO_SHED
    }

    /// The last measured scheduling delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// The limit above which requests are refused.
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    fn record(&self, delay: Duration) {
        self.delay_us.store(
            u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if self.limit.is_some_and(|limit| delay > limit) {
            self.over.fetch_add(1, Ordering::Relaxed);
        } else {
            self.over.store(0, Ordering::Relaxed);
        }
    }
}

/// Until the pressure is dropped: every [`PROBE_EVERY`], yields once and records how long the
/// runtime took to poll this task again — the wait of a connection that became readable now.
async fn probe(pressure: Weak<Pressure>) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let yielded = Instant::now();
        tokio::task::yield_now().await;
        let delay = yielded.elapsed();
        let Some(pressure) = pressure.upgrade() else {
            return;
        };
        pressure.record(delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_only_after_several_late_probes_in_a_row() {
        let pressure = Pressure {
            limit: Some(Duration::from_millis(2)),
            delay_us: AtomicU64::new(0),
            over: AtomicU32::new(0),
        };
        let late = Duration::from_millis(3);
        pressure.record(late);
        pressure.record(late);
        assert!(!pressure.shedding(), "two late probes are not enough");
        pressure.record(Duration::from_micros(100));
        pressure.record(late);
        pressure.record(late);
        assert!(!pressure.shedding(), "an early probe restarts the count");
        pressure.record(late);
        assert!(pressure.shedding());
        assert_eq!(pressure.delay(), late);
        pressure.record(Duration::from_micros(100));
        assert!(!pressure.shedding(), "one early probe ends shedding");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_worker_is_measured_and_no_limit_never_sheds() {
        let pressure = Pressure::start(Some(Duration::from_millis(1)));
        // Keep the only worker busy in 20 ms stretches between yields: each probe's yield waits
        // for the next one.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(20));
            tokio::task::yield_now().await;
        }
        assert!(
            pressure.delay() >= Duration::from_millis(1),
            "{:?}",
            pressure.delay()
        );
        let never = Pressure::start(None);
        never.record(Duration::from_secs(1));
        never.record(Duration::from_secs(1));
        never.record(Duration::from_secs(1));
        assert!(!never.shedding());
    }
}
