//! The shared store: PostgreSQL, for replicas that serve as one (`--database-url`). Deployments
//! and their audit log (`deployments.rs`), the replicas' registry (`replicas.rs`) and the
//! feedback loop's tables (`feedback.rs`) live in one database. A pool of connections with a
//! bounded connect and acquire time (a lost database answers within seconds, as
//! [`StoreError::Unavailable`]); the schema migrations are embedded and applied at start under an
//! advisory lock, so replicas starting together migrate once.

mod deployments;
mod feedback;
mod replicas;
mod schema;
mod settings;

use super::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::NoTls;

pub use self::deployments::{DEPLOYMENTS_CHANNEL, Notifications};
pub use self::replicas::ReplicaRow;
pub use self::settings::{DatabaseSettings, redact_url};

/// Connections kept per replica: one for each concurrent writer (log, labels, admin) and a few
/// readers.
const POOL_SIZE: usize = 8;

/// The PostgreSQL store, shared by every replica that names the same database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// The database's address without credentials, for messages.
    name: String,
    /// The connection settings (for the notification listener's own connection).
    config: tokio_postgres::Config,
    timeout: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.name)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects (each attempt bounded by the settings' timeout) and brings the schema up to
    /// date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached, [`StoreError::Database`]
    /// when the URL is invalid or a migration fails.
    pub async fn connect(settings: &DatabaseSettings) -> Result<PostgresStore, StoreError> {
        let name = redact_url(&settings.url);
        let mut config: tokio_postgres::Config =
            settings.url.parse().map_err(|e| StoreError::Database {
                path: name.clone(),
                reason: format!("not a PostgreSQL connection string: {e}"),
            })?;
        if config.get_password().is_none()
            && let Some(password) = &settings.password
        {
            config.password(password);
        }
        config.connect_timeout(settings.timeout);
        config.application_name("vigil");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| StoreError::Database {
                path: name.clone(),
                reason: e.to_string(),
            })?;
        let store = PostgresStore {
            pool,
            name,
            config,
            timeout: settings.timeout,
        };
        schema::migrate(&store).await?;
        Ok(store)
    }

    /// A pooled connection, within the timeout.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub(super) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| self.unavailable(&e))
    }

    /// The database's address, without credentials.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection settings, for a connection of its own (notifications).
    pub(super) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The bound on connecting and acquiring.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The database could not be reached or gave no connection in time.
    pub(super) fn unavailable(&self, error: &dyn std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            database: self.name.clone(),
            reason: error.to_string(),
        }
    }

    /// A statement failed: unavailable when the connection itself failed, else a database error.
    pub(super) fn failed(&self, error: &tokio_postgres::Error) -> StoreError {
        if error.is_closed() || error.as_db_error().is_none() {
            self.unavailable(error)
        } else {
            StoreError::Database {
                path: self.name.clone(),
                reason: error
                    .as_db_error()
                    .map_or_else(|| error.to_string(), |db| db.message().to_string()),
            }
        }
    }
}
