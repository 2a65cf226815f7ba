//! A bounded window of recent latencies and its percentiles.

use std::collections::VecDeque;
use std::time::Duration;

/// The most recent `capacity` latencies, in seconds.
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    samples: VecDeque<f64>,
    capacity: usize,
}

impl LatencyWindow {
    /// An empty window keeping at most `capacity` samples.
    pub fn new(capacity: usize) -> LatencyWindow {
        LatencyWindow {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn push(&mut self, latency: Duration) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(latency.as_secs_f64());
    }

    /// The `q` quantile (0–1, nearest rank) in seconds; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank_over_the_recent_samples() {
        let mut window = LatencyWindow::new(100);
        assert_eq!(window.quantile(0.5), None);
        for ms in 1..=100 {
            window.push(Duration::from_millis(ms));
        }
        assert_eq!(window.quantile(0.5), Some(0.05));
        assert_eq!(window.quantile(0.99), Some(0.099));
        window.push(Duration::from_millis(1000));
        assert_eq!(
            window.quantile(0.0),
            Some(0.002),
            "the oldest sample was dropped"
        );
        assert_eq!(window.quantile(1.0), Some(1.0));
    }
}
