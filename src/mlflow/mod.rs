//! The MLflow Model Registry as vigil's control plane: a reconcile loop reads each followed
//! model's aliases (one registry call per poll), downloads and hashes the versions they name,
//! and proposes the deployment they describe to the one change path; webhooks only make it
//! look at once. A registry that is wrong or out of reach never changes what is serving.
//!
//! - `client.rs`: the REST calls and artifact downloads;
//! - `describe.rs`: a version's `model.toml` from its tags, run and `MLmodel`;
//! - `fetch.rs`: downloaded versions on disk (staging, hashes, cache);
//! - `sync.rs`: the reconcile loop and what it reports per model;
//! - `webhook.rs`: signed webhook deliveries.

mod client;
mod describe;
mod fetch;
mod sync;
mod webhook;

pub use self::client::{Client, MlflowError};
pub use self::fetch::{FetchError, VersionCache};
pub use self::sync::{ModelSync, RegistrySync, SyncFailure, SyncView};
pub use self::webhook::{Delivery, DeliveryError, WebhookReceiver};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default seconds between polls of the registry.
pub const DEFAULT_POLL: Duration = Duration::from_secs(15);

/// How vigil signs in to the tracking server, as MLflow's own clients do.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer` (`MLFLOW_TRACKING_TOKEN`).
    Token(String),
    /// HTTP basic auth (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Token(_) => "Token(<redacted>)",
            Credentials::Basic { .. } => "Basic(<redacted>)",
        })
    }
}

/// What an alias makes of the version it points at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AliasRole {
    /// The champion.
    Champion,
    /// A shadow with this mirror fraction.
    Shadow(f64),
}

impl AliasRole {
    /// Reads `champion`, `shadow` (fraction 1.0) or `shadow:<fraction>`.
    ///
    /// # Errors
    /// A message saying what was expected.
    pub fn parse(text: &str) -> Result<AliasRole, String> {
        match text.trim() {
            "champion" => Ok(AliasRole::Champion),
            "shadow" => Ok(AliasRole::Shadow(1.0)),
            other => other
                .strip_prefix("shadow:")
                .and_then(|f| f.parse::<f64>().ok())
                .filter(|f| *f > 0.0 && *f <= 1.0)
                .map(AliasRole::Shadow)
                .ok_or_else(|| {
                    format!("`{text}`: expected champion, shadow or shadow:<fraction in (0, 1]>")
                }),
        }
    }
}

/// The registry settings (`mlflow_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct MlflowSettings {
    /// The tracking server (`mlflow_uri`, else `MLFLOW_TRACKING_URI`).
    pub uri: String,
    /// How to sign in.
    pub credentials: Option<Credentials>,
    /// Registered models to serve; empty: every model tagged `vigil.serve = true`.
    pub models: Vec<String>,
    /// Alias → role.
    pub aliases: BTreeMap<String, AliasRole>,
    /// Time between polls.
    pub poll: Duration,
    /// The secret webhooks are signed with; without one `/hooks/mlflow` is off.
    pub webhook_secret: Option<String>,
}

impl MlflowSettings {
    /// The default aliases: `champion` → champion, `challenger` → shadow at fraction 1.0.
    pub fn default_aliases() -> BTreeMap<String, AliasRole> {
        BTreeMap::from([
            ("champion".to_string(), AliasRole::Champion),
            ("challenger".to_string(), AliasRole::Shadow(1.0)),
        ])
    }

    /// Every rule the settings break.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = Client::new(&self.uri, None) {
            problems.push(format!("mlflow_uri: {error}"));
        }
        let champions = self
            .aliases
            .values()
            .filter(|r| **r == AliasRole::Champion)
            .count();
        if champions != 1 {
            problems.push(format!(
                "mlflow_aliases: exactly one alias must map to champion, {champions} do"
            ));
        }
        if self.poll.is_zero() {
            problems.push("mlflow_poll_secs: must be at least 1".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_champion_and_shadow_fractions() {
        assert_eq!(AliasRole::parse("champion"), Ok(AliasRole::Champion));
        assert_eq!(AliasRole::parse("shadow"), Ok(AliasRole::Shadow(1.0)));
        assert_eq!(AliasRole::parse("shadow:0.25"), Ok(AliasRole::Shadow(0.25)));
        assert!(AliasRole::parse("shadow:0").is_err());
        assert!(AliasRole::parse("shadow:1.5").is_err());
        assert!(AliasRole::parse("canary").is_err());
    }

    #[test]
    fn exactly_one_champion_alias_is_required() {
        let mut settings = MlflowSettings {
            uri: "http://127.0.0.1:5000".into(),
            credentials: None,
            models: vec![],
            aliases: MlflowSettings::default_aliases(),
            poll: DEFAULT_POLL,
            webhook_secret: None,
        };
        assert!(settings.problems().is_empty());
        settings.aliases.insert("prod".into(), AliasRole::Champion);
        assert_eq!(settings.problems().len(), 1);
        settings.uri = "ftp://x".into();
        assert_eq!(settings.problems().len(), 2);
    }
}
