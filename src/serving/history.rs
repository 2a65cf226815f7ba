//! The monitoring history: a bounded series of points per served version, sampled on an interval
//! from the monitoring view and the live quality, for charts over time (the console's monitor).
//! In memory only: a restarted gateway starts a new history.

use super::monitoring::ModelMonitoring;
use super::{Registry, ServingError, VersionRole};
use crate::feedback::ModelQuality;
use crate::feedback::quality::Figures;
use crate::feedback::statistics::Estimate;
use crate::monitor::{ClassCounts, OutlierHistogram, PredictionSummary};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the history is sampled and how much of it is kept.
#[derive(Debug, Clone, Copy)]
pub struct HistorySettings {
    /// Time between points.
    pub interval: Duration,
    /// Points kept per version (older ones are dropped).
    pub points: usize,
}

/// One version's figures at one time.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPoint {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The version's role then.
    pub role: VersionRole,
    /// Requests answered since the version was loaded.
    pub requests: u64,
    /// Requests per second since the previous point (none for a version's first point).
    pub request_rate: Option<f64>,
    /// Errors since the version was loaded.
    pub errors: u64,
    /// Latency p50 over the recent requests, seconds.
    pub latency_p50: Option<f64>,
    /// p95, seconds.
    pub latency_p95: Option<f64>,
    /// p99, seconds.
    pub latency_p99: Option<f64>,
    /// Share of rows accepted by the confidence threshold (classifiers).
    pub acceptance_rate: Option<f64>,
    /// Share of scored rows at or above the outlier cut.
    pub outlier_rate: Option<f64>,
    /// For a shadow: share of compared rows on which it agreed with the champion.
    pub agreement_rate: Option<f64>,
    /// For a regressor: the mean prediction.
    pub prediction_mean: Option<f64>,
    /// Live accuracy over the recent labels, with its 95% interval (classifiers with feedback).
    pub live_accuracy: Option<Estimate>,
    /// Live mean absolute error over the recent labels (regressors with feedback).
    pub live_mae: Option<Estimate>,
    /// Predictions per class since the version was loaded (for the window's distribution).
    #[serde(skip)]
    class_counts: Vec<u64>,
    /// Rows per outlier-score bucket since the version was loaded.
    #[serde(skip)]
    outlier_counts: Vec<u64>,
}

/// What the kept points of one version add up to: the change between its oldest and newest.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryWindow {
    /// Time of the oldest point kept.
    pub from: f64,
    /// Time of the newest.
    pub to: f64,
    /// Predictions per class between the two (classifiers).
    pub predictions: Option<ClassCounts>,
    /// Rows by outlier score between the two (versions with reference data).
    pub outlier_histogram: Option<OutlierHistogram>,
}

/// One version's history.
#[derive(Debug, Clone, Serialize)]
pub struct VersionHistory {
    /// The version.
    pub version: String,
    /// Its role now: `idle` once it is no longer served (its points stay until they age out).
    pub role: VersionRole,
    /// Oldest first.
    pub points: Vec<HistoryPoint>,
    /// The totals over the points kept.
    pub window: Option<HistoryWindow>,
}

/// A model's history, as `GET /admin/models/{m}/monitoring/history` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelHistory {
    /// The model.
    pub model: String,
    /// Seconds between points.
    pub interval_seconds: f64,
    /// Points kept per version at most.
    pub points_kept: usize,
    /// Every version served during the time kept: the champion first, then the shadows, then
    /// versions no longer served, each group by version name.
    pub versions: Vec<VersionHistory>,
}

/// The points of one version, with the names its counts are kept under.
#[derive(Debug)]
struct Series {
    /// The version's role at the latest sample (`Idle` when it was not served then).
    role: VersionRole,
    classes: Vec<String>,
    edges: Vec<f64>,
    points: VecDeque<HistoryPoint>,
}

/// Every model's history.
#[derive(Debug)]
pub struct MonitoringHistory {
    settings: HistorySettings,
    models: Mutex<HashMap<String, BTreeMap<String, Series>>>,
}

impl MonitoringHistory {
    /// An empty history.
    pub fn new(settings: HistorySettings) -> MonitoringHistory {
        MonitoringHistory {
            settings,
            models: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a point at `time` for each version in `monitoring` (live figures from `quality`), and
    /// forgets versions whose newest point has aged out of the time kept.
    pub fn record(&self, monitoring: &ModelMonitoring, quality: Option<&ModelQuality>, time: f64) {
        let Ok(mut models) = self.models.lock() else {
            return;
        };
        let series = models.entry(monitoring.model.clone()).or_default();
        for version in &monitoring.versions {
            let summary = &version.summary;
            let (classes, class_counts, prediction_mean) = match &summary.predictions {
                PredictionSummary::Classes(ClassCounts(counts)) => (
                    counts.iter().map(|(name, _)| name.clone()).collect(),
                    counts.iter().map(|(_, count)| *count).collect(),
                    None,
                ),
                PredictionSummary::Values { mean, .. } => (Vec::new(), Vec::new(), *mean),
            };
            let (edges, outlier_counts) = summary
                .outlier_histogram
                .as_ref()
                .map(|h| (h.edges.clone(), h.counts.clone()))
                .unwrap_or_default();
            let recent = quality
                .and_then(|q| q.versions.iter().find(|v| v.version == version.version))
                .map(|v| &v.quality.recent);
            let (live_accuracy, live_mae) = match recent {
                Some(Figures::Classification { accuracy, .. }) => (*accuracy, None),
                Some(Figures::Regression { mae, .. }) => (None, *mae),
                None => (None, None),
            };
            let entry = series
                .entry(version.version.clone())
                .or_insert_with(|| Series {
                    role: version.role,
                    classes: classes.clone(),
                    edges: edges.clone(),
                    points: VecDeque::with_capacity(self.settings.points.min(1024)),
                });
            if entry.classes != classes || entry.edges != edges {
                // The version was reloaded with other classes or buckets: start over.
                *entry = Series {
                    role: version.role,
                    classes,
                    edges,
                    points: VecDeque::new(),
                };
            }
            let request_rate = entry.points.back().and_then(|previous| {
                let elapsed = time - previous.time;
                (elapsed > 0.0)
                    .then(|| summary.requests.saturating_sub(previous.requests) as f64 / elapsed)
            });
            entry.role = version.role;
            if entry.points.len() >= self.settings.points {
                entry.points.pop_front();
            }
            entry.points.push_back(HistoryPoint {
                time,
                role: version.role,
                requests: summary.requests,
                request_rate,
                errors: summary.errors,
                latency_p50: summary.latency_p50,
                latency_p95: summary.latency_p95,
                latency_p99: summary.latency_p99,
                acceptance_rate: version.acceptance_rate,
                outlier_rate: summary.outlier_rate,
                agreement_rate: version.shadow.as_ref().and_then(|s| s.agreement_rate),
                prediction_mean,
                live_accuracy,
                live_mae,
                class_counts,
                outlier_counts,
            });
        }
        for (name, s) in series.iter_mut() {
            if !monitoring.versions.iter().any(|v| &v.version == name) {
                s.role = VersionRole::Idle;
            }
        }
        let kept = self.settings.interval.as_secs_f64() * self.settings.points as f64;
        series.retain(|_, s| s.points.back().is_some_and(|p| time - p.time <= kept));
    }

    /// The history of `model` (empty before its first point).
    pub fn view(&self, model: &str) -> ModelHistory {
        let mut versions: Vec<VersionHistory> = self
            .models
            .lock()
            .ok()
            .and_then(|models| {
                models.get(model).map(|series| {
                    series
                        .iter()
                        .map(|(version, series)| version_history(version, series))
                        .collect()
                })
            })
            .unwrap_or_default();
        versions.sort_by_key(|v| match v.role {
            VersionRole::Champion => 0,
            VersionRole::Shadow => 1,
            VersionRole::Idle => 2,
        });
        ModelHistory {
            model: model.to_string(),
            interval_seconds: self.settings.interval.as_secs_f64(),
            points_kept: self.settings.points,
            versions,
        }
    }
}

fn version_history(version: &str, series: &Series) -> VersionHistory {
    let window = match (series.points.front(), series.points.back()) {
        (Some(first), Some(last)) => Some(HistoryWindow {
            from: first.time,
            to: last.time,
            predictions: (!series.classes.is_empty()).then(|| {
                ClassCounts(
                    series
                        .classes
                        .iter()
                        .zip(difference(&first.class_counts, &last.class_counts))
                        .map(|(name, count)| (name.clone(), count))
                        .collect(),
                )
            }),
            outlier_histogram: (!series.edges.is_empty()).then(|| OutlierHistogram {
                edges: series.edges.clone(),
                counts: difference(&first.outlier_counts, &last.outlier_counts),
            }),
        }),
        _ => None,
    };
    VersionHistory {
        version: version.to_string(),
        role: series.role,
        points: series.points.iter().cloned().collect(),
        window,
    }
}

/// `newest − oldest` per position. A version's first point already counts what it answered
/// before the history saw it, so the first point's counts are the base (not zero).
fn difference(oldest: &[u64], newest: &[u64]) -> Vec<u64> {
    newest
        .iter()
        .zip(oldest)
        .map(|(new, old)| new.saturating_sub(*old))
        .collect()
}

impl Registry {
    /// Adds one point per served version of every model to the monitoring history.
    pub fn sample_history(&self) {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for model in self.models() {
            let name = model.name.as_str();
            let Ok(monitoring) = self.monitoring(name) else {
                continue;
            };
            let quality = self.feedback.as_ref().and_then(|f| f.quality(name).ok());
            self.history.record(&monitoring, quality.as_ref(), time);
        }
    }

    /// The monitoring history of one model.
    ///
    /// # Errors
    /// [`ServingError::UnknownModel`].
    pub fn history(&self, model: &str) -> Result<ModelHistory, ServingError> {
        self.deployment(model)?;
        Ok(self.history.view(model))
    }

    /// Samples the monitoring history every interval, for as long as the registry is used.
    pub async fn record_history(self: Arc<Registry>) {
        let mut ticks = tokio::time::interval(self.history.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.sample_history();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitorSummary;
    use crate::serving::VersionMonitoring;

    fn version(
        name: &str,
        role: VersionRole,
        requests: u64,
        classes: [u64; 2],
    ) -> VersionMonitoring {
        VersionMonitoring {
            version: name.into(),
            role,
            summary: MonitorSummary {
                requests,
                errors: 0,
                latency_p50: Some(0.001),
                latency_p95: Some(0.002),
                latency_p99: Some(0.003),
                predictions: PredictionSummary::Classes(ClassCounts(vec![
                    ("a".into(), classes[0]),
                    ("b".into(), classes[1]),
                ])),
                outlier_rate: None,
                outlier_histogram: Some(OutlierHistogram {
                    edges: vec![0.5],
                    counts: vec![classes[0], classes[1]],
                }),
                drift: None,
            },
            acceptance_rate: Some(1.0),
            shadow: None,
        }
    }

    fn model(versions: Vec<VersionMonitoring>) -> ModelMonitoring {
        ModelMonitoring {
            model: "m".into(),
            threshold: 0.0,
            versions,
        }
    }

    fn history(points: usize) -> MonitoringHistory {
        MonitoringHistory::new(HistorySettings {
            interval: Duration::from_secs(10),
            points,
        })
    }

    #[test]
    fn rates_come_from_successive_points_and_the_window_from_the_oldest_kept() {
        let history = history(3);
        for (i, requests) in [10u64, 30, 60, 100].into_iter().enumerate() {
            let time = 1000.0 + 10.0 * i as f64;
            let champion = version(
                "1",
                VersionRole::Champion,
                requests,
                [requests, requests / 10],
            );
            history.record(&model(vec![champion]), None, time);
        }
        let view = history.view("m");
        let points = &view.versions[0].points;
        assert_eq!(points.len(), 3, "the oldest point was dropped");
        assert_eq!(
            points.iter().map(|p| p.request_rate).collect::<Vec<_>>(),
            [Some(2.0), Some(3.0), Some(4.0)]
        );
        let window = view.versions[0].window.as_ref().map(|w| {
            (
                w.from,
                w.to,
                w.predictions.as_ref().map(|c| c.0.clone()),
                w.outlier_histogram.as_ref().map(|h| h.counts.clone()),
            )
        });
        assert_eq!(
            window,
            Some((
                1010.0,
                1030.0,
                Some(vec![("a".into(), 70), ("b".into(), 7)]),
                Some(vec![70, 7]),
            ))
        );
    }

    #[test]
    fn a_versions_first_point_has_no_rate_and_the_champion_comes_first() {
        let history = history(10);
        history.record(
            &model(vec![
                version("2", VersionRole::Champion, 5, [5, 0]),
                version("1", VersionRole::Shadow, 5, [0, 5]),
            ]),
            None,
            50.0,
        );
        let view = history.view("m");
        assert_eq!(
            view.versions
                .iter()
                .map(|v| (v.version.as_str(), v.role, v.points[0].request_rate))
                .collect::<Vec<_>>(),
            [
                ("2", VersionRole::Champion, None),
                ("1", VersionRole::Shadow, None)
            ]
        );
        assert!(history.view("other").versions.is_empty());
    }

    #[test]
    fn a_version_no_longer_served_is_forgotten_once_its_points_age_out() {
        let history = history(2);
        history.record(
            &model(vec![
                version("1", VersionRole::Champion, 1, [1, 0]),
                version("2", VersionRole::Shadow, 1, [1, 0]),
            ]),
            None,
            0.0,
        );
        // Version 2 stops being served; 2 points × 10 s are kept.
        history.record(
            &model(vec![version("1", VersionRole::Champion, 2, [2, 0])]),
            None,
            20.0,
        );
        let roles: Vec<_> = history
            .view("m")
            .versions
            .iter()
            .map(|v| (v.version.clone(), v.role))
            .collect();
        assert_eq!(
            roles,
            [
                ("1".to_string(), VersionRole::Champion),
                ("2".to_string(), VersionRole::Idle)
            ],
            "a version no longer served is idle, after the champion"
        );
        history.record(
            &model(vec![version("1", VersionRole::Champion, 3, [3, 0])]),
            None,
            21.0,
        );
        let view = history.view("m");
        assert_eq!(
            view.versions
                .iter()
                .map(|v| v.version.as_str())
                .collect::<Vec<_>>(),
            ["1"]
        );
    }

    #[test]
    fn a_counter_that_went_back_gives_zero_not_a_wrapped_count() {
        let history = history(5);
        history.record(
            &model(vec![version("1", VersionRole::Champion, 50, [50, 0])]),
            None,
            0.0,
        );
        history.record(
            &model(vec![version("1", VersionRole::Champion, 10, [10, 0])]),
            None,
            10.0,
        );
        let view = history.view("m");
        assert_eq!(view.versions[0].points[1].request_rate, Some(0.0));
        let predictions = view.versions[0]
            .window
            .as_ref()
            .and_then(|w| w.predictions.as_ref())
            .map(|c| c.0.clone());
        assert_eq!(predictions, Some(vec![("a".into(), 0), ("b".into(), 0)]));
    }
}
