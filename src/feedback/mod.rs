//! The feedback loop: predictions are logged (`log.rs`); ground truth comes back by request id
//! (`intake.rs`); each version's live quality and the champion-versus-shadow evidence follow
//! (`scoring.rs`, `quality.rs`, `evidence.rs`, `statistics.rs`); shadows the evidence shows
//! better are proposed for promotion (the change itself is made by `serving`); and every
//! `every_labels` labels a retraining event is exported and delivered (`export.rs`,
//! `delivery.rs`).
//!
//! This module knows no deployment types: `serving` tells it what is deployed
//! ([`DeploymentFacts`]) and takes its promotion [`Candidate`]s.

mod delivery;
pub mod evidence;
mod export;
pub mod intake;
pub mod log;
pub mod quality;
pub mod scoring;
pub mod statistics;

pub use self::evidence::{EvidenceState, EvidenceView, Pair, PairedEvidence};
pub use self::intake::{GivenLabel, ItemError, ItemResult, ItemStatus, LabelItem, MAX_ITEMS};
pub use self::log::InferenceLog;
pub use self::quality::QualityView;
pub use self::scoring::{Candidate, DeploymentFacts, ModelFeedback, VersionFacts};
use crate::metrics::{self, Metrics};
use crate::store::feedback::{LoggedRow, RetrainSettings, StoredEvent, Trigger, Truth};
use crate::store::{FeedbackStore, PromotionSettings, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, oneshot};

/// Why feedback could not be taken or shown.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The intake has stopped (the gateway is shutting down).
    #[error("the feedback intake has stopped; the gateway is shutting down")]
    Stopped,
    /// The model has never been deployed.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// Bad retraining settings.
    #[error("{0}")]
    InvalidSettings(String),
    /// The intake answered a different number of items than it was sent.
    #[error("the feedback intake answered {answered} of {sent} items")]
    Unanswered {
        /// Items sent.
        sent: usize,
        /// Results received.
        answered: usize,
    },
}

/// The feedback loop's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackSettings {
    /// Most recent labels the windowed quality covers.
    pub quality_window: usize,
    /// `<state>/exports`: each model's event exports go in a directory of its name.
    pub exports: PathBuf,
    /// Retraining settings for models without their own.
    pub retrain: Option<RetrainSettings>,
    /// When the store is shared with other replicas: how often to take the labels they
    /// stored. Every label is then scored from the store, in label order, on every replica
    /// (so their figures agree); without, a label is scored as it is accepted here.
    pub shared: Option<std::time::Duration>,
}

/// The feedback loop of one gateway.
pub struct Feedback {
    store: Arc<dyn FeedbackStore>,
    log: Arc<InferenceLog>,
    metrics: Arc<Metrics>,
    settings: FeedbackSettings,
    models: Mutex<BTreeMap<String, ModelFeedback>>,
    intake: Mutex<Option<mpsc::Sender<intake::Submission>>>,
    candidates: mpsc::UnboundedSender<Candidate>,
    deliveries: Arc<Notify>,
    /// Per model, the last label scored (its `seq`); held while labels are taken from the
    /// store, so that none is scored twice.
    scored_through: tokio::sync::Mutex<BTreeMap<String, i64>>,
}

impl std::fmt::Debug for Feedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feedback").finish_non_exhaustive()
    }
}

/// The quality view of a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelQuality {
    /// The model.
    pub model: String,
    /// Labels the `recent` figures cover at most.
    pub window: usize,
    /// The promotion rule.
    pub promotion: PromotionSettings,
    /// Each version that has scored labels, with its role now.
    pub versions: Vec<VersionQualityView>,
    /// The current champion against each current shadow.
    pub evidence: Vec<ShadowEvidence>,
}

/// One version's live quality.
#[derive(Debug, Clone, Serialize)]
pub struct VersionQualityView {
    /// The version.
    pub version: String,
    /// `champion`, `shadow` or `idle`.
    pub role: &'static str,
    /// The figures.
    #[serde(flatten)]
    pub quality: QualityView,
}

/// The champion against one shadow.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowEvidence {
    /// The champion compared.
    pub champion: String,
    /// The shadow.
    pub shadow: String,
    /// The comparison.
    #[serde(flatten)]
    pub evidence: EvidenceView,
}

impl Feedback {
    /// Starts the feedback loop: the intake worker and the event delivery. Returns the loop and
    /// the receiver of promotion candidates (for `serving`).
    pub fn start(
        store: Arc<dyn FeedbackStore>,
        log: Arc<InferenceLog>,
        metrics: Arc<Metrics>,
        settings: FeedbackSettings,
    ) -> (Arc<Feedback>, mpsc::UnboundedReceiver<Candidate>) {
        let (submit, submissions) = mpsc::channel(1024);
        let (candidates, proposals) = mpsc::unbounded_channel();
        let feedback = Arc::new(Feedback {
            store,
            log,
            metrics,
            settings,
            models: Mutex::new(BTreeMap::new()),
            intake: Mutex::new(Some(submit)),
            candidates,
            deliveries: Arc::new(Notify::new()),
            scored_through: tokio::sync::Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(intake::run(Arc::clone(&feedback), submissions));
        if let Some(every) = feedback.settings.shared {
            tokio::spawn(follow_shared_labels(Arc::downgrade(&feedback), every));
        }
        tokio::spawn(delivery::run(
            Arc::clone(&feedback.store),
            Arc::clone(&feedback.metrics),
            Arc::clone(&feedback.deliveries),
            Arc::downgrade(&feedback),
        ));
        (feedback, proposals)
    }

    /// The inference log.
    pub fn log(&self) -> &Arc<InferenceLog> {
        &self.log
    }

    /// Stops taking feedback (at shutdown); submissions already queued are still answered.
    pub fn close(&self) {
        if let Ok(mut intake) = self.intake.lock() {
            intake.take();
        }
    }

    fn with_model<R>(&self, model: &str, f: impl FnOnce(&mut ModelFeedback) -> R) -> Option<R> {
        let mut models = self.models.lock().ok()?;
        Some(f(models.entry(model.to_string()).or_default()))
    }

    /// Takes what `serving` has just published for a model. A changed promotion rule replays
    /// the model's labels under the new rule.
    pub async fn deployment_changed(&self, facts: DeploymentFacts) -> Result<(), FeedbackError> {
        let model = facts.model.clone();
        self.log.watch(&model);
        let rule_changed = self
            .with_model(&model, |m| m.update(facts))
            .unwrap_or(false);
        if rule_changed {
            self.replay(&model).await?;
        }
        self.promote_candidates(std::iter::once(model.as_str()));
        Ok(())
    }

    /// Rebuilds every model's quality and evidence from the stored labels, and loads the
    /// retraining settings (at start).
    ///
    /// # Errors
    /// [`FeedbackError::Store`] when the store cannot be read.
    pub async fn restore(&self) -> Result<(), FeedbackError> {
        for (model, settings) in self.store.retrain_settings().await? {
            self.with_model(&model, |m| m.retrain = Some(settings));
        }
        let models: Vec<String> = self
            .models
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for model in models {
            self.replay(&model).await?;
        }
        self.deliveries.notify_one();
        Ok(())
    }

    /// Replays a model's stored labels into fresh quality and evidence (the Prometheus counters
    /// count the labels this process received; PromQL's `increase` handles their restarts).
    async fn replay(&self, model: &str) -> Result<(), FeedbackError> {
        let mut scored_through = self.scored_through.lock().await;
        let labels = self.store.labels(model).await?;
        let window = self.settings.quality_window;
        self.with_model(model, |m| {
            m.reset();
            for label in &labels {
                m.score(&label.row, label.truth, window);
            }
        });
        scored_through.insert(
            model.to_string(),
            labels.iter().map(|l| l.seq).max().unwrap_or(0),
        );
        self.publish_figures(model);
        Ok(())
    }

    /// True when labels are scored from a store shared with other replicas.
    pub(crate) fn is_shared(&self) -> bool {
        self.settings.shared.is_some()
    }

    /// Scores the labels of `model` stored since the last one scored here (by any replica), in
    /// label order.
    ///
    /// # Errors
    /// [`FeedbackError::Store`] when the store cannot be read.
    pub(crate) async fn score_stored(&self, model: &str) -> Result<(), FeedbackError> {
        let mut scored_through = self.scored_through.lock().await;
        let after = scored_through.get(model).copied().unwrap_or(0);
        let labels = self.store.labels_between(model, after, i64::MAX).await?;
        for label in &labels {
            self.score(model, &label.row, label.truth);
        }
        if let Some(last) = labels.iter().map(|l| l.seq).max() {
            scored_through.insert(model.to_string(), last);
        }
        Ok(())
    }

    /// Scores one accepted label.
    fn score(&self, model: &str, row: &LoggedRow, truth: Truth) {
        let window = self.settings.quality_window;
        let scoring = self
            .with_model(model, |m| {
                let scoring = m.score(row, truth, window);
                for (champion, shadow) in &scoring.decided {
                    let state = m.evidence.get(&(champion.clone(), shadow.clone())).map(|e| e.state);
                    tracing::info!(%model, %champion, %shadow, ?state, "promotion evidence decided");
                }
                scoring
            })
            .unwrap_or_default();
        let scores = scoring.scores;
        for (version, score) in scores {
            let labels = [("model", model), ("version", version.as_str())];
            self.metrics
                .counter(metrics::LABELLED_ROWS, &labels)
                .increment(1);
            match score {
                quality::Scored::Class { truth, predicted } => {
                    let correct = self.metrics.counter(metrics::CORRECT_ROWS, &labels);
                    correct.increment(u64::from(truth == predicted));
                }
                quality::Scored::Value { error } => {
                    self.metrics
                        .gauge(metrics::ABS_ERROR_SUM, &labels)
                        .increment(error.abs());
                    self.metrics
                        .gauge(metrics::SQUARED_ERROR_SUM, &labels)
                        .increment(error * error);
                }
            }
        }
        self.publish_figures(model);
    }

    /// Sets the evidence gauges of a model.
    fn publish_figures(&self, model: &str) {
        let views: Vec<((String, String), EvidenceView)> = self
            .with_model(model, |m| {
                m.evidence
                    .iter()
                    .map(|(key, e)| (key.clone(), e.view(m.is_classifier(&key.1))))
                    .collect()
            })
            .unwrap_or_default();
        for ((champion, shadow), view) in views {
            let labels = [
                ("model", model),
                ("champion", champion.as_str()),
                ("shadow", shadow.as_str()),
            ];
            self.metrics
                .gauge(metrics::PROMOTION_EVIDENCE, &labels)
                .set(view.evidence);
            self.metrics
                .gauge(metrics::PROMOTION_P_VALUE, &labels)
                .set(view.p_value);
            self.metrics
                .gauge(metrics::PROMOTION_PAIRED_ROWS, &labels)
                .set(view.paired as f64);
        }
    }

    /// Proposes every shadow of these models that the evidence shows better (automatic mode).
    fn promote_candidates<'a>(&self, models: impl Iterator<Item = &'a str>) {
        let mut seen = std::collections::BTreeSet::new();
        for model in models.filter(|m| seen.insert(*m)) {
            for candidate in self
                .with_model(model, |m| m.candidates(model))
                .unwrap_or_default()
            {
                let _ = self.candidates.send(candidate);
            }
        }
    }

    /// What is known of `version` of `model`.
    fn facts(&self, model: &str, version: &str) -> Option<VersionFacts> {
        self.models
            .lock()
            .ok()?
            .get(model)?
            .facts
            .get(version)
            .cloned()
    }

    /// The retraining triggers of these models (their own settings, else the defaults).
    fn triggers<'a>(&self, models: impl Iterator<Item = &'a str>) -> BTreeMap<String, Trigger> {
        let mut triggers = BTreeMap::new();
        for model in models {
            if triggers.contains_key(model) {
                continue;
            }
            let Some((settings, champion)) = self
                .with_model(model, |m| {
                    let settings = m.retrain.clone().or_else(|| self.settings.retrain.clone());
                    settings.map(|s| (s, m.champion.clone()))
                })
                .flatten()
            else {
                continue;
            };
            triggers.insert(
                model.to_string(),
                Trigger {
                    every_labels: settings.every_labels,
                    champion,
                    exports: self.settings.exports.join(model),
                    command: settings.command.is_some(),
                    webhook: settings.webhook.is_some(),
                },
            );
        }
        triggers
    }

    /// A retraining event was created: writes its export and wakes the delivery.
    async fn event_created(&self, event: StoredEvent) {
        self.metrics
            .counter(metrics::RETRAIN_EVENTS, &[("model", &event.model)])
            .increment(1);
        tracing::info!(model = %event.model, event = %event.event_id, "retraining event");
        if let Err(error) = export::write(self.store.as_ref(), self, &event).await {
            tracing::warn!(event = %event.event_id, %error, "export not written; the delivery will retry it");
        }
        self.deliveries.notify_one();
    }

    /// The retraining settings in force for `model` (its own, else the defaults).
    pub fn retrain_settings(&self, model: &str) -> Option<RetrainSettings> {
        self.with_model(model, |m| m.retrain.clone())
            .flatten()
            .or_else(|| self.settings.retrain.clone())
    }

    /// Saves `model`'s own retraining settings.
    ///
    /// # Errors
    /// [`FeedbackError::InvalidSettings`] listing what is wrong, [`FeedbackError::Store`].
    pub async fn set_retrain_settings(
        &self,
        model: &str,
        settings: RetrainSettings,
    ) -> Result<(), FeedbackError> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(FeedbackError::InvalidSettings(problems.join("; ")));
        }
        self.store.set_retrain_settings(model, &settings).await?;
        self.with_model(model, |m| m.retrain = Some(settings));
        Ok(())
    }

    /// Stores labels for `model` and answers one result per item.
    ///
    /// # Errors
    /// [`FeedbackError::Store`] when the labels cannot be stored (none of them is),
    /// [`FeedbackError::Stopped`] during shutdown.
    pub async fn submit(
        &self,
        model: &str,
        items: Vec<LabelItem>,
    ) -> Result<Vec<ItemResult>, FeedbackError> {
        let sender = self
            .intake
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or(FeedbackError::Stopped)?;
        let rows = intake::logged_rows(self, &intake::keys_of(model, &items)).await?;
        let (reply, answer) = oneshot::channel();
        let sent = items.len();
        sender
            .send(intake::Submission {
                model: model.to_string(),
                items,
                rows,
                reply,
            })
            .await
            .map_err(|_| FeedbackError::Stopped)?;
        let results = answer.await.map_err(|_| FeedbackError::Stopped)??;
        if results.len() != sent {
            return Err(FeedbackError::Unanswered {
                sent,
                answered: results.len(),
            });
        }
        Ok(results)
    }

    /// The live quality of `model`'s versions and the evidence of its shadows.
    ///
    /// # Errors
    /// [`FeedbackError::UnknownModel`].
    pub fn quality(&self, model: &str) -> Result<ModelQuality, FeedbackError> {
        let models = self
            .models
            .lock()
            .map_err(|_| FeedbackError::UnknownModel(model.to_string()))?;
        let m = models
            .get(model)
            .ok_or_else(|| FeedbackError::UnknownModel(model.to_string()))?;
        let role = |version: &str| {
            if m.champion.as_deref() == Some(version) {
                "champion"
            } else if m.shadows.iter().any(|s| s == version) {
                "shadow"
            } else {
                "idle"
            }
        };
        let evidence = m
            .champion
            .iter()
            .flat_map(|champion| {
                m.shadows.iter().map(move |shadow| {
                    let key = (champion.clone(), shadow.clone());
                    ShadowEvidence {
                        champion: champion.clone(),
                        shadow: shadow.clone(),
                        evidence: m
                            .evidence
                            .get(&key)
                            .cloned()
                            .unwrap_or_default()
                            .view(m.is_classifier(shadow)),
                    }
                })
            })
            .collect();
        Ok(ModelQuality {
            model: model.to_string(),
            window: self.settings.quality_window,
            promotion: m.promotion,
            versions: m
                .quality
                .iter()
                .map(|(version, quality)| VersionQualityView {
                    version: version.clone(),
                    role: role(version),
                    quality: quality.view(),
                })
                .collect(),
            evidence,
        })
    }
}

/// With a store shared by replicas: every `every`, takes the retraining settings and scores the
/// labels other replicas stored since the last ones scored here, and proposes the promotions
/// their evidence decides.
async fn follow_shared_labels(feedback: std::sync::Weak<Feedback>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(feedback) = feedback.upgrade() else {
            return;
        };
        // Retraining triggers set through another replica count here too.
        match feedback.store.retrain_settings().await {
            Ok(all) => {
                for (model, settings) in all {
                    feedback.with_model(&model, |m| m.retrain = Some(settings));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the retraining settings"),
        }
        let models: Vec<String> = feedback
            .models
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for model in &models {
            if let Err(error) = feedback.score_stored(model).await {
                tracing::warn!(%model, %error, "cannot take the labels other replicas stored");
            }
        }
        feedback.promote_candidates(models.iter().map(String::as_str));
    }
}
