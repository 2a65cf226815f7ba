//! Delivering retraining events, at least once, under their stable `event_id`: the configured
//! command runs with the event on stdin (success: exit 0), and/or the event is POSTed to the
//! webhook with MLflow-style signature headers (success: 2xx). A failed delivery is retried with
//! backoff (1 s, doubling, at most 60 s) until it succeeds; what is still pending survives a
//! restart in the store.

use super::Feedback;
use super::export;
use crate::clock::now_ms;
use crate::metrics::{self, Metrics};
use crate::signature;
use crate::store::FeedbackStore;
use crate::store::feedback::{Channel, RetrainSettings, StoredEvent};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Header naming the event.
pub const EVENT_ID_HEADER: &str = "X-Vigil-Event-Id";
/// Header with the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Vigil-Timestamp";
/// Header with the signature.
pub const SIGNATURE_HEADER: &str = "X-Vigil-Signature";

/// First retry delay; doubled after each failure, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempts.min(16))
        .min(MAX_BACKOFF)
}

/// Runs until the feedback loop is dropped.
pub(super) async fn run(
    store: Arc<dyn FeedbackStore>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    feedback: Weak<Feedback>,
) {
    let http = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .unwrap_or_default();
    let mut next_attempt: HashMap<String, Instant> = HashMap::new();
    loop {
        let Some(loop_) = feedback.upgrade() else {
            return;
        };
        let pending = match store.pending_events().await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, "pending retraining events cannot be read");
                Vec::new()
            }
        };
        let now = Instant::now();
        let mut sleep = MAX_BACKOFF;
        for event in pending {
            if let Some(&due) = next_attempt.get(&event.event_id)
                && due > now
            {
                sleep = sleep.min(due - now);
                continue;
            }
            if let Err(error) = export::write(store.as_ref(), &loop_, &event).await {
                tracing::warn!(event = %event.event_id, %error, "export not written");
            }
            let settings = loop_.retrain_settings(&event.model);
            let failures = deliver(&http, &store, &metrics, &event, settings.as_ref()).await;
            if failures.is_empty() {
                next_attempt.remove(&event.event_id);
            } else {
                let reason = failures.join("; ");
                tracing::warn!(event = %event.event_id, %reason, "retraining event not delivered; retrying");
                let _ = store.failed(&event.event_id, &reason).await;
                let wait = backoff(event.attempts);
                next_attempt.insert(event.event_id.clone(), Instant::now() + wait);
                sleep = sleep.min(wait);
            }
        }
        drop(loop_);
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Delivers `event` on each channel still pending; returns the failures.
async fn deliver(
    http: &reqwest::Client,
    store: &Arc<dyn FeedbackStore>,
    metrics: &Metrics,
    event: &StoredEvent,
    settings: Option<&RetrainSettings>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let body = event.payload.to_string();
    let channels = [
        (event.command_pending, Channel::Command, "command"),
        (event.webhook_pending, Channel::Webhook, "webhook"),
    ];
    for (pending, channel, name) in channels {
        if !pending {
            continue;
        }
        let outcome = match channel {
            Channel::Command => match settings.and_then(|s| s.command.as_ref()) {
                Some(command) => run_command(command, &body).await,
                None => Err("no command is configured".to_string()),
            },
            Channel::Webhook => {
                match settings.and_then(|s| s.webhook.as_ref().zip(s.secret.as_ref())) {
                    Some((url, secret)) => post(http, url, secret, &event.event_id, &body).await,
                    None => Err("no webhook is configured".to_string()),
                }
            }
        };
        let result = match &outcome {
            Ok(()) => "delivered",
            Err(_) => "failed",
        };
        metrics
            .counter(
                metrics::RETRAIN_DELIVERIES,
                &[
                    ("model", &event.model),
                    ("channel", name),
                    ("outcome", result),
                ],
            )
            .increment(1);
        match outcome {
            Ok(()) => {
                if let Err(error) = store.delivered(&event.event_id, channel).await {
                    failures.push(format!("{name}: delivered, but not recorded: {error}"));
                }
            }
            Err(reason) => failures.push(format!("{name}: {reason}")),
        }
    }
    failures
}

/// Runs `command` with `body` on stdin; success is exit status 0.
async fn run_command(command: &[String], body: &str) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("the command is empty")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let written = stdin.write_all(body.as_bytes()).await;
        drop(stdin);
        if let Err(error) = written {
            tracing::warn!(%error, "the retraining command did not read its event");
        }
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("`{program}` did not finish: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        tracing::info!(command = %program, output = %stdout.trim(), "retraining command done");
        Ok(())
    } else {
        let tail: String = stderr.trim().lines().last().unwrap_or_default().to_string();
        Err(format!("`{program}` exited with {}: {tail}", output.status))
    }
}

/// POSTs `body` to `url`, signed; success is a 2xx answer.
async fn post(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    event_id: &str,
    body: &str,
) -> Result<(), String> {
    let timestamp = now_ms() / 1000;
    let signed = signature::sign(secret.as_bytes(), event_id, timestamp, body.as_bytes());
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, event_id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signed)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {url} answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_one_second_to_a_minute() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
