//! The PostgreSQL schema: migrations embedded in the binary, applied in order at start in one
//! transaction each, under a session advisory lock so that replicas starting together migrate
//! once (the others wait, then find nothing left to do).

use super::PostgresStore;
use crate::store::StoreError;

/// The advisory lock key of migrations (any constant shared by every replica).
const MIGRATION_LOCK: i64 = 0x7669_6769_6c00_0001;

/// The schema, one migration per entry; entry `i` is version `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE deployments (
    model TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    record JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    revision BIGINT NOT NULL,
    entry JSONB NOT NULL,
    UNIQUE (model, revision)
);
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    served JSONB NOT NULL
);
"#,
    // The feedback loop (`feedback.rs`): the inference log, labels, retraining counters,
    // settings and events. `row` is the row index in the request; `truth`, `predictions`,
    // `shadows`, `payload` and `settings` are JSON; `input` stays the exact text logged.
    r#"
CREATE TABLE served (
    seq BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row BIGINT NOT NULL,
    version TEXT NOT NULL,
    direct BOOLEAN NOT NULL,
    time_ms BIGINT NOT NULL,
    input TEXT NOT NULL,
    class BIGINT,
    confidence DOUBLE PRECISION,
    value DOUBLE PRECISION,
    shadows JSONB NOT NULL,
    UNIQUE (model, request_id, row)
);
CREATE TABLE shadowed (
    seq BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row BIGINT NOT NULL,
    version TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    class BIGINT,
    confidence DOUBLE PRECISION,
    value DOUBLE PRECISION,
    UNIQUE (model, request_id, row, version)
);
CREATE TABLE labels (
    seq BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    truth JSONB NOT NULL,
    served_time_ms BIGINT NOT NULL,
    direct BOOLEAN NOT NULL,
    input TEXT NOT NULL,
    predictions JSONB NOT NULL,
    shadows JSONB NOT NULL,
    replaced BIGINT NOT NULL DEFAULT 0,
    UNIQUE (model, request_id, row)
);
CREATE INDEX labels_model ON labels (model, seq);
CREATE TABLE retrain_counters (
    model TEXT PRIMARY KEY,
    labels_total BIGINT NOT NULL,
    since_last BIGINT NOT NULL,
    last_event_seq BIGINT NOT NULL
);
CREATE TABLE retrain_settings (
    model TEXT PRIMARY KEY,
    settings JSONB NOT NULL
);
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    payload JSONB NOT NULL,
    after_seq BIGINT NOT NULL,
    through_seq BIGINT NOT NULL,
    command_pending BOOLEAN NOT NULL,
    webhook_pending BOOLEAN NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed_by TEXT,
    claimed_until TIMESTAMPTZ
);
CREATE INDEX events_pending ON events (created_ms, event_id)
    WHERE command_pending OR webhook_pending;
"#,
];

/// Brings the schema to the newest version.
///
/// # Errors
/// [`StoreError::Unavailable`] or [`StoreError::Database`] naming the migration that failed.
pub(super) async fn migrate(store: &PostgresStore) -> Result<(), StoreError> {
    let mut client = store.client().await?;
    let fail = |e: tokio_postgres::Error| store.failed(&e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let result = apply(store, &mut client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail);
    result.and(unlocked.map(|_| ()))
}

async fn apply(
    store: &PostgresStore,
    client: &mut deadpool_postgres::Object,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| store.failed(&e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS vigil_schema (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(fail)?;
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM vigil_schema", &[])
        .await
        .map_err(fail)?;
    let current: i32 = row.get(0);
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        if version <= current {
            continue;
        }
        let tx = client.transaction().await.map_err(fail)?;
        tx.batch_execute(migration)
            .await
            .map_err(|e| StoreError::Database {
                path: store.name().to_string(),
                reason: format!("schema migration {version}: {e}"),
            })?;
        tx.execute(
            "INSERT INTO vigil_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version, database = store.name(), "schema migration applied");
    }
    Ok(())
}
