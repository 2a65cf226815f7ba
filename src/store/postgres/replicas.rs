//! The replicas' registry: one row per running replica (id, address, start, heartbeat, what it
//! serves), upserted on every report; rows silent for long are removed.

use super::PostgresStore;
use crate::store::StoreError;
use std::time::Duration;

/// One replica as recorded.
#[derive(Debug, Clone)]
pub struct ReplicaRow {
    /// Unique per process.
    pub id: String,
    /// Where it is reached.
    pub address: String,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Seconds since its last report, by the database's clock.
    pub heartbeat_age_seconds: f64,
    /// What it serves, per model (JSON object).
    pub served: serde_json::Value,
}

impl PostgresStore {
    /// Records the report of replica `id` (first report: its start), and removes replicas that
    /// have not reported for `forget_after`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Database`].
    pub async fn report_replica(
        &self,
        id: &str,
        address: &str,
        served: &serde_json::Value,
        forget_after: Duration,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        client
            .execute(
                "INSERT INTO replicas (id, address, started_at, heartbeat_at, served) \
                 VALUES ($1, $2, now(), now(), $3) \
                 ON CONFLICT (id) DO UPDATE SET address = $2, heartbeat_at = now(), served = $3",
                &[&id, &address, served],
            )
            .await
            .map_err(fail)?;
        client
            .execute(
                "DELETE FROM replicas WHERE heartbeat_at < now() - make_interval(secs => $1)",
                &[&forget_after.as_secs_f64()],
            )
            .await
            .map_err(fail)?;
        Ok(())
    }

    /// Replicas that reported within `within`, oldest start first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Database`].
    pub async fn replicas(&self, within: Duration) -> Result<Vec<ReplicaRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, address, \
                        to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                        EXTRACT(EPOCH FROM now() - heartbeat_at)::float8, served \
                 FROM replicas WHERE heartbeat_at >= now() - make_interval(secs => $1) \
                 ORDER BY started_at, id",
                &[&within.as_secs_f64()],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(rows
            .iter()
            .map(|row| ReplicaRow {
                id: row.get(0),
                address: row.get(1),
                started_at: row.get(2),
                heartbeat_age_seconds: row.get::<_, f64>(3).max(0.0),
                served: row.get(4),
            })
            .collect())
    }
}
