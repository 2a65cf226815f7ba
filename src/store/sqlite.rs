//! The embedded feedback store: SQLite in WAL mode at `<state>/feedback.db`.
//!
//! Three connection pools on the one file: the inference log's writer (`synchronous = NORMAL`:
//! a crash of the process loses nothing written, a power cut may lose the last batches), the
//! label writer (`synchronous = FULL`: an acknowledged label survives a power cut), and readers.
//! Rows are appended in bulk as one JSON array per statement (`json_each`), so a batch of a
//! thousand rows is one statement and one transaction.

use super::StoreError;
use super::feedback::{
    Channel, FeedbackStore, LabelOutcome, LabelRecord, LabelWrite, LoggedPrediction, LoggedRow,
    RetrainSettings, RowKey, ServedRow, ShadowedRow, StoredEvent, Trigger, Truth,
    VersionPrediction,
};
use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The database file under the state directory.
pub const DATABASE_FILE: &str = "feedback.db";

/// How long a writer waits for the other before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one migration per entry, applied in order at open.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE served (
    seq INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    version TEXT NOT NULL,
    direct INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    input TEXT NOT NULL,
    class INTEGER,
    confidence REAL,
    value REAL,
    shadows TEXT NOT NULL,
    UNIQUE (model, request_id, row)
);
CREATE INDEX served_time ON served (time_ms);
CREATE TABLE shadowed (
    seq INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    version TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    class INTEGER,
    confidence REAL,
    value REAL,
    UNIQUE (model, request_id, row, version)
);
CREATE INDEX shadowed_time ON shadowed (time_ms);
CREATE TABLE labels (
    seq INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    truth TEXT NOT NULL,
    served_time_ms INTEGER NOT NULL,
    direct INTEGER NOT NULL,
    input TEXT NOT NULL,
    predictions TEXT NOT NULL,
    shadows TEXT NOT NULL,
    replaced INTEGER NOT NULL DEFAULT 0,
    UNIQUE (model, request_id, row)
);
CREATE INDEX labels_model ON labels (model, seq);
CREATE TABLE retrain_counters (
    model TEXT PRIMARY KEY,
    labels_total INTEGER NOT NULL,
    since_last INTEGER NOT NULL,
    last_event_seq INTEGER NOT NULL
);
CREATE TABLE retrain_settings (
    model TEXT PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    payload TEXT NOT NULL,
    after_seq INTEGER NOT NULL,
    through_seq INTEGER NOT NULL,
    command_pending INTEGER NOT NULL,
    webhook_pending INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
"#];

/// The embedded feedback store.
#[derive(Debug, Clone)]
pub struct SqliteFeedbackStore {
    path: PathBuf,
    log: SqlitePool,
    labels: SqlitePool,
    read: SqlitePool,
}

impl SqliteFeedbackStore {
    /// Opens (creating if needed) `<dir>/feedback.db` and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Database`] naming the file.
    pub async fn open(dir: &Path) -> Result<SqliteFeedbackStore, StoreError> {
        let path = dir.join(DATABASE_FILE);
        let fail = |e: sqlx::Error| StoreError::Database {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = |synchronous, connections| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .connect_with(options.clone().synchronous(synchronous))
        };
        let labels = pool(SqliteSynchronous::Full, 1).await.map_err(fail)?;
        migrate(&labels).await.map_err(fail)?;
        let log = pool(SqliteSynchronous::Normal, 1).await.map_err(fail)?;
        let read = pool(SqliteSynchronous::Normal, 2).await.map_err(fail)?;
        Ok(SqliteFeedbackStore {
            path,
            log,
            labels,
            read,
        })
    }

    fn error(&self, error: sqlx::Error) -> StoreError {
        StoreError::Database {
            path: self.path.display().to_string(),
            reason: error.to_string(),
        }
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS vigil_schema (version INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM vigil_schema")
        .fetch_one(&mut *tx)
        .await?;
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= current {
            continue;
        }
        sqlx::raw_sql(*migration).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO vigil_schema (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

fn prediction_json(prediction: &LoggedPrediction) -> [Value; 3] {
    [
        json!(prediction.class),
        json!(prediction.confidence),
        json!(prediction.value),
    ]
}

fn prediction_of(row: &SqliteRow, offset: usize) -> Result<LoggedPrediction, sqlx::Error> {
    Ok(LoggedPrediction {
        class: row
            .try_get::<Option<i64>, _>(offset)?
            .and_then(|c| u32::try_from(c).ok()),
        confidence: row.try_get::<Option<f64>, _>(offset + 1)?.map(|c| c as f32),
        value: row.try_get(offset + 2)?,
    })
}

fn truth_json(truth: &Truth) -> String {
    serde_json::to_string(truth).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A label row (`SELECT seq, model, request_id, row, time_ms, truth, served_time_ms, direct,
/// input, predictions, shadows`) as a record.
fn label_record(row: &SqliteRow) -> Result<LabelRecord, sqlx::Error> {
    Ok(LabelRecord {
        seq: row.try_get(0)?,
        key: RowKey {
            model: row.try_get(1)?,
            request_id: row.try_get(2)?,
            row: u32::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
        },
        time_ms: row.try_get(4)?,
        truth: parse(row.try_get::<&str, _>(5)?)?,
        row: LoggedRow {
            time_ms: row.try_get(6)?,
            direct: row.try_get::<i64, _>(7)? != 0,
            input: row.try_get(8)?,
            predictions: parse(row.try_get::<&str, _>(9)?)?,
            shadows: parse(row.try_get::<&str, _>(10)?)?,
        },
    })
}

/// One random event id: 128 bits as hex, prefixed.
fn new_event_id() -> String {
    format!("evt_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The event as delivered: what it is about and where its export is.
fn event_payload(
    event_id: &str,
    model: &str,
    trigger: &Trigger,
    labels_since_last: i64,
    labels_total: i64,
    created_ms: i64,
) -> Value {
    json!({
        "event_id": event_id,
        "model": model,
        "champion": trigger.champion,
        "labels_since_last": labels_since_last,
        "labels_total": labels_total,
        "export": trigger.exports.join(format!("{event_id}.jsonl")).display().to_string(),
        "created_at": crate::clock::rfc3339_millis(created_ms),
    })
}

/// Stores one label (see [`FeedbackStore::label`]) inside `tx`.
async fn store_label(
    tx: &mut Transaction<'_, Sqlite>,
    write: &LabelWrite,
    triggers: &BTreeMap<String, Trigger>,
    events: &mut Vec<StoredEvent>,
) -> Result<LabelOutcome, sqlx::Error> {
    let key = &write.key;
    let stored: Option<(i64, String)> = sqlx::query_as(
        "SELECT seq, truth FROM labels WHERE model = $1 AND request_id = $2 AND row = $3",
    )
    .bind(&key.model)
    .bind(&key.request_id)
    .bind(i64::from(key.row))
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((seq, truth)) = stored {
        let stored: Truth = parse(&truth)?;
        if stored == write.truth {
            return Ok(LabelOutcome::Duplicate);
        }
        if !write.replace {
            return Ok(LabelOutcome::Conflict { stored });
        }
        sqlx::query("UPDATE labels SET truth = $1, replaced = replaced + 1 WHERE seq = $2")
            .bind(truth_json(&write.truth))
            .bind(seq)
            .execute(&mut **tx)
            .await?;
        return Ok(LabelOutcome::Replaced {
            seq,
            previous: stored,
        });
    }
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO labels (model, request_id, row, time_ms, truth, served_time_ms, direct, \
         input, predictions, shadows) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         RETURNING seq",
    )
    .bind(&key.model)
    .bind(&key.request_id)
    .bind(i64::from(key.row))
    .bind(write.time_ms)
    .bind(truth_json(&write.truth))
    .bind(write.row.time_ms)
    .bind(i64::from(write.row.direct))
    .bind(&write.row.input)
    .bind(serde_json::to_string(&write.row.predictions).unwrap_or_default())
    .bind(serde_json::to_string(&write.row.shadows).unwrap_or_default())
    .fetch_one(&mut **tx)
    .await?;
    let (labels_total, since_last, last_event_seq): (i64, i64, i64) = sqlx::query_as(
        "INSERT INTO retrain_counters (model, labels_total, since_last, last_event_seq) \
         VALUES ($1, 1, 1, 0) ON CONFLICT (model) DO UPDATE SET \
         labels_total = labels_total + 1, since_last = since_last + 1 \
         RETURNING labels_total, since_last, last_event_seq",
    )
    .bind(&key.model)
    .fetch_one(&mut **tx)
    .await?;
    if let Some(trigger) = triggers.get(&key.model)
        && trigger.every_labels > 0
        && since_last >= i64::try_from(trigger.every_labels).unwrap_or(i64::MAX)
    {
        let event_id = new_event_id();
        let created_ms = write.time_ms;
        let payload = event_payload(
            &event_id,
            &key.model,
            trigger,
            since_last,
            labels_total,
            created_ms,
        );
        sqlx::query(
            "INSERT INTO events (event_id, model, created_ms, payload, after_seq, through_seq, \
             command_pending, webhook_pending) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&event_id)
        .bind(&key.model)
        .bind(created_ms)
        .bind(payload.to_string())
        .bind(last_event_seq)
        .bind(seq)
        .bind(i64::from(trigger.command))
        .bind(i64::from(trigger.webhook))
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE retrain_counters SET since_last = 0, last_event_seq = $1 WHERE model = $2",
        )
        .bind(seq)
        .bind(&key.model)
        .execute(&mut **tx)
        .await?;
        events.push(StoredEvent {
            event_id,
            model: key.model.clone(),
            payload,
            after_seq: last_event_seq,
            through_seq: seq,
            command_pending: trigger.command,
            webhook_pending: trigger.webhook,
            attempts: 0,
        });
    }
    Ok(LabelOutcome::Accepted { seq })
}

fn event_of(row: &SqliteRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        event_id: row.try_get(0)?,
        model: row.try_get(1)?,
        payload: parse(row.try_get::<&str, _>(2)?)?,
        after_seq: row.try_get(3)?,
        through_seq: row.try_get(4)?,
        command_pending: row.try_get::<i64, _>(5)? != 0,
        webhook_pending: row.try_get::<i64, _>(6)? != 0,
        attempts: u32::try_from(row.try_get::<i64, _>(7)?).unwrap_or(u32::MAX),
    })
}

#[async_trait]
impl FeedbackStore for SqliteFeedbackStore {
    async fn append(
        &self,
        served: &[ServedRow],
        shadowed: &[ShadowedRow],
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut by_model: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for row in served {
            let [class, confidence, value] = prediction_json(&row.prediction);
            by_model.entry(&row.model).or_default().push(json!([
                row.model.as_ref(),
                row.request_id.as_ref(),
                row.row,
                row.version.as_ref(),
                u8::from(row.direct),
                row.time_ms,
                row.input,
                class,
                confidence,
                value,
                serde_json::to_string(
                    &row.shadows.iter().map(AsRef::as_ref).collect::<Vec<&str>>()
                )
                .unwrap_or_default(),
            ]));
        }
        let shadows: Vec<Value> = shadowed
            .iter()
            .map(|row| {
                let [class, confidence, value] = prediction_json(&row.prediction);
                json!([
                    row.model.as_ref(),
                    row.request_id.as_ref(),
                    row.row,
                    row.version.as_ref(),
                    row.time_ms,
                    class,
                    confidence,
                    value,
                ])
            })
            .collect();
        let mut tx = self.log.begin().await.map_err(|e| self.error(e))?;
        let mut repeated = BTreeMap::new();
        for (model, rows) in by_model {
            let attempted = rows.len() as u64;
            let inserted = sqlx::query(
                "INSERT OR IGNORE INTO served (model, request_id, row, version, direct, time_ms, \
                 input, class, confidence, value, shadows) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                 value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10 \
                 FROM json_each($1)",
            )
            .bind(Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
            if inserted < attempted {
                repeated.insert(model.to_string(), attempted - inserted);
            }
        }
        if !shadows.is_empty() {
            sqlx::query(
                "INSERT OR IGNORE INTO shadowed (model, request_id, row, version, time_ms, class, \
                 confidence, value) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                 value ->> 5, value ->> 6, value ->> 7 FROM json_each($1)",
            )
            .bind(Value::Array(shadows).to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(repeated)
    }

    async fn rows(&self, keys: &[RowKey]) -> Result<Vec<Option<LoggedRow>>, StoreError> {
        let wanted = Value::Array(
            keys.iter()
                .map(|k| json!([k.model, k.request_id, k.row]))
                .collect(),
        )
        .to_string();
        let served = sqlx::query(
            "SELECT k.key, s.version, s.direct, s.time_ms, s.input, s.shadows, s.class, \
             s.confidence, s.value FROM json_each($1) AS k JOIN served AS s \
             ON s.model = k.value ->> 0 AND s.request_id = k.value ->> 1 \
             AND s.row = k.value ->> 2",
        )
        .bind(&wanted)
        .fetch_all(&self.read)
        .await
        .map_err(|e| self.error(e))?;
        let shadowed = sqlx::query(
            "SELECT k.key, s.version, s.class, s.confidence, s.value FROM json_each($1) AS k \
             JOIN shadowed AS s ON s.model = k.value ->> 0 AND s.request_id = k.value ->> 1 \
             AND s.row = k.value ->> 2 ORDER BY k.key, s.version",
        )
        .bind(&wanted)
        .fetch_all(&self.read)
        .await
        .map_err(|e| self.error(e))?;
        let mut found: Vec<Option<LoggedRow>> = vec![None; keys.len()];
        let decode = |row: &SqliteRow| -> Result<(usize, LoggedRow), sqlx::Error> {
            let index = usize::try_from(row.try_get::<i64, _>(0)?).unwrap_or(usize::MAX);
            Ok((
                index,
                LoggedRow {
                    time_ms: row.try_get(3)?,
                    direct: row.try_get::<i64, _>(2)? != 0,
                    input: row.try_get(4)?,
                    predictions: vec![VersionPrediction {
                        version: row.try_get(1)?,
                        shadow: false,
                        prediction: prediction_of(row, 6)?,
                    }],
                    shadows: parse(row.try_get::<&str, _>(5)?)?,
                },
            ))
        };
        for row in &served {
            let (index, logged) = decode(row).map_err(|e| self.error(e))?;
            if let Some(slot) = found.get_mut(index) {
                *slot = Some(logged);
            }
        }
        for row in &shadowed {
            let decoded = (|| -> Result<(usize, VersionPrediction), sqlx::Error> {
                Ok((
                    usize::try_from(row.try_get::<i64, _>(0)?).unwrap_or(usize::MAX),
                    VersionPrediction {
                        version: row.try_get(1)?,
                        shadow: true,
                        prediction: prediction_of(row, 2)?,
                    },
                ))
            })();
            let (index, prediction) = decoded.map_err(|e| self.error(e))?;
            if let Some(Some(logged)) = found.get_mut(index) {
                logged.predictions.push(prediction);
            }
        }
        Ok(found)
    }

    async fn label(
        &self,
        writes: &[LabelWrite],
        triggers: &BTreeMap<String, Trigger>,
    ) -> Result<(Vec<LabelOutcome>, Vec<StoredEvent>), StoreError> {
        let mut tx = self.labels.begin().await.map_err(|e| self.error(e))?;
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut events = Vec::new();
        for write in writes {
            let outcome = store_label(&mut tx, write, triggers, &mut events)
                .await
                .map_err(|e| self.error(e))?;
            outcomes.push(outcome);
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok((outcomes, events))
    }

    async fn labels(&self, model: &str) -> Result<Vec<LabelRecord>, StoreError> {
        self.labels_between(model, i64::MIN, i64::MAX).await
    }

    async fn labels_between(
        &self,
        model: &str,
        after_seq: i64,
        through_seq: i64,
    ) -> Result<Vec<LabelRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, model, request_id, row, time_ms, truth, served_time_ms, direct, input, \
             predictions, shadows FROM labels WHERE model = $1 AND seq > $2 AND seq <= $3 \
             ORDER BY seq",
        )
        .bind(model)
        .bind(after_seq)
        .bind(through_seq)
        .fetch_all(&self.read)
        .await
        .map_err(|e| self.error(e))?;
        rows.iter()
            .map(label_record)
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(e))
    }

    async fn expire(&self, before_ms: i64, max_rows: u64) -> Result<u64, StoreError> {
        let cap = i64::try_from(max_rows).unwrap_or(i64::MAX);
        let mut tx = self.log.begin().await.map_err(|e| self.error(e))?;
        let mut deleted = 0;
        for statement in [
            "DELETE FROM served WHERE time_ms < $1",
            "DELETE FROM shadowed WHERE time_ms < $1",
        ] {
            deleted += sqlx::query(statement)
                .bind(before_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?
                .rows_affected();
        }
        for statement in [
            "DELETE FROM served WHERE seq <= \
             (SELECT seq FROM served ORDER BY seq DESC LIMIT 1 OFFSET $1)",
            "DELETE FROM shadowed WHERE seq <= \
             (SELECT seq FROM shadowed ORDER BY seq DESC LIMIT 1 OFFSET $1)",
        ] {
            deleted += sqlx::query(statement)
                .bind(cap)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?
                .rows_affected();
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(deleted)
    }

    async fn retrain_settings(&self) -> Result<BTreeMap<String, RetrainSettings>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT model, settings FROM retrain_settings")
                .fetch_all(&self.read)
                .await
                .map_err(|e| self.error(e))?;
        rows.into_iter()
            .map(|(model, text)| Ok((model, parse(&text).map_err(|e| self.error(e))?)))
            .collect()
    }

    async fn set_retrain_settings(
        &self,
        model: &str,
        settings: &RetrainSettings,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO retrain_settings (model, settings) VALUES ($1, $2) \
             ON CONFLICT (model) DO UPDATE SET settings = excluded.settings",
        )
        .bind(model)
        .bind(serde_json::to_string(settings).unwrap_or_default())
        .execute(&self.labels)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn pending_events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, model, payload, after_seq, through_seq, command_pending, \
             webhook_pending, attempts FROM events \
             WHERE command_pending = 1 OR webhook_pending = 1 ORDER BY created_ms, event_id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(|e| self.error(e))?;
        rows.iter()
            .map(event_of)
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(e))
    }

    async fn delivered(&self, event_id: &str, channel: Channel) -> Result<(), StoreError> {
        let statement = match channel {
            Channel::Command => "UPDATE events SET command_pending = 0 WHERE event_id = $1",
            Channel::Webhook => "UPDATE events SET webhook_pending = 0 WHERE event_id = $1",
        };
        sqlx::query(statement)
            .bind(event_id)
            .execute(&self.labels)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn failed(&self, event_id: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE events SET attempts = attempts + 1, last_error = $1 WHERE event_id = $2",
        )
        .bind(reason)
        .bind(event_id)
        .execute(&self.labels)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
