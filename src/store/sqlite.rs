//! The embedded feedback store: SQLite in WAL mode at `<state>/feedback.db`.
//!
//! Three connections on the one file, each behind its own lock and used on the blocking pool:
//! the inference log's writer (`synchronous = NORMAL`: a crash of the process loses nothing
//! written, a power cut may lose the last batches), the label writer (`synchronous = FULL`: an
//! acknowledged label survives a power cut), and a reader. Rows are written with cached prepared
//! statements, one transaction per batch (about 1.6 µs a row on the reference machine). Every
//! write transaction is `IMMEDIATE`: it takes the write lock when it begins (waiting up to
//! [`BUSY_TIMEOUT`] for the other writer), so a transaction that reads before it writes never
//! fails on a snapshot another writer has moved on from.
//!
//! Logged rows carry no time index: rows are appended in time order, so the oldest rows are the
//! lowest `seq` and expiry deletes a `seq` range.

use super::StoreError;
use super::feedback::{
    Channel, FeedbackStore, LabelOutcome, LabelRecord, LabelWrite, LoggedPrediction, LoggedRow,
    RetrainSettings, RowKey, ServedRow, ShadowedRow, StoredEvent, Trigger, Truth,
    VersionPrediction, event_payload,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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

/// One connection, used by one task at a time on the blocking pool.
type Shared = Arc<Mutex<Connection>>;

/// The embedded feedback store.
#[derive(Debug, Clone)]
pub struct SqliteFeedbackStore {
    path: PathBuf,
    log: Shared,
    labels: Shared,
    read: Shared,
}

/// An error of the SQLite layer, before it is named by file.
#[derive(Debug)]
enum Failure {
    Sqlite(rusqlite::Error),
    Decode(String),
    Poisoned,
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Failure::Sqlite(error)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(error: serde_json::Error) -> Self {
        Failure::Decode(error.to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Sqlite(error) => write!(f, "{error}"),
            Failure::Decode(reason) => write!(f, "stored data cannot be read: {reason}"),
            Failure::Poisoned => f.write_str("an earlier use of the connection panicked"),
        }
    }
}

fn connect(path: &Path, synchronous: &str) -> Result<Connection, rusqlite::Error> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", synchronous)?;
    connection.pragma_update(None, "cache_size", -65_536)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), rusqlite::Error> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS vigil_schema (version INTEGER NOT NULL)")?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM vigil_schema",
        [],
        |row| row.get(0),
    )?;
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version > current {
            tx.execute_batch(migration)?;
            tx.execute("INSERT INTO vigil_schema (version) VALUES (?1)", [version])?;
        }
    }
    tx.commit()
}

impl SqliteFeedbackStore {
    /// Opens (creating if needed) `<dir>/feedback.db` and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Database`] naming the file.
    pub async fn open(dir: &Path) -> Result<SqliteFeedbackStore, StoreError> {
        let path = dir.join(DATABASE_FILE);
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> Result<_, rusqlite::Error> {
                let mut labels = connect(&path, "FULL")?;
                migrate(&mut labels)?;
                Ok((connect(&path, "NORMAL")?, labels, connect(&path, "NORMAL")?))
            })
            .await
        };
        let fail = |reason: String| StoreError::Database {
            path: path.display().to_string(),
            reason,
        };
        let (log, labels, read) = opened
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        Ok(SqliteFeedbackStore {
            path,
            log: Arc::new(Mutex::new(log)),
            labels: Arc::new(Mutex::new(labels)),
            read: Arc::new(Mutex::new(read)),
        })
    }

    /// Runs `work` on `connection` on the blocking pool.
    async fn with<R, F>(&self, connection: &Shared, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, Failure> + Send + 'static,
    {
        let connection = Arc::clone(connection);
        let outcome = tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().map_err(|_| Failure::Poisoned)?;
            work(&mut connection)
        })
        .await;
        let fail = |reason: String| StoreError::Database {
            path: self.path.display().to_string(),
            reason,
        };
        outcome
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))
    }
}

fn prediction_of(row: &Row<'_>, offset: usize) -> Result<LoggedPrediction, rusqlite::Error> {
    Ok(LoggedPrediction {
        class: row
            .get::<_, Option<i64>>(offset)?
            .and_then(|c| u32::try_from(c).ok()),
        confidence: row.get::<_, Option<f64>>(offset + 1)?.map(|c| c as f32),
        value: row.get(offset + 2)?,
    })
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Failure> {
    Ok(serde_json::from_str(text)?)
}

const LABEL_COLUMNS: &str = "seq, model, request_id, row, time_ms, truth, served_time_ms, direct, input, predictions, shadows";

/// A label row (the columns of [`LABEL_COLUMNS`]) as a record.
fn label_record(row: &Row<'_>) -> Result<LabelRecord, Failure> {
    Ok(LabelRecord {
        seq: row.get(0)?,
        key: RowKey {
            model: row.get(1)?,
            request_id: row.get(2)?,
            row: u32::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        },
        time_ms: row.get(4)?,
        truth: decode(&row.get::<_, String>(5)?)?,
        row: LoggedRow {
            time_ms: row.get(6)?,
            direct: row.get::<_, i64>(7)? != 0,
            input: row.get(8)?,
            predictions: decode(&row.get::<_, String>(9)?)?,
            shadows: decode(&row.get::<_, String>(10)?)?,
        },
    })
}

/// One random event id: 128 bits as hex, prefixed.
fn new_event_id() -> String {
    format!("evt_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Stores one label (see [`FeedbackStore::label`]) inside `tx`.
fn store_label(
    tx: &Transaction<'_>,
    write: &LabelWrite,
    triggers: &BTreeMap<String, Trigger>,
    events: &mut Vec<StoredEvent>,
) -> Result<LabelOutcome, Failure> {
    let key = &write.key;
    let truth = serde_json::to_string(&write.truth)?;
    let stored: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT seq, truth FROM labels WHERE model = ?1 AND request_id = ?2 AND row = ?3",
        )?
        .query_row(params![key.model, key.request_id, key.row], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    if let Some((seq, stored)) = stored {
        let stored: Truth = decode(&stored)?;
        if stored == write.truth {
            return Ok(LabelOutcome::Duplicate);
        }
        if !write.replace {
            return Ok(LabelOutcome::Conflict { stored });
        }
        tx.prepare_cached("UPDATE labels SET truth = ?1, replaced = replaced + 1 WHERE seq = ?2")?
            .execute(params![truth, seq])?;
        return Ok(LabelOutcome::Replaced {
            seq,
            previous: stored,
        });
    }
    let seq: i64 = tx
        .prepare_cached(
            "INSERT INTO labels (model, request_id, row, time_ms, truth, served_time_ms, direct, \
             input, predictions, shadows) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             RETURNING seq",
        )?
        .query_row(
            params![
                key.model,
                key.request_id,
                key.row,
                write.time_ms,
                truth,
                write.row.time_ms,
                write.row.direct,
                write.row.input,
                serde_json::to_string(&write.row.predictions)?,
                serde_json::to_string(&write.row.shadows)?,
            ],
            |row| row.get(0),
        )?;
    let (labels_total, since_last, last_event_seq): (i64, i64, i64) = tx
        .prepare_cached(
            "INSERT INTO retrain_counters (model, labels_total, since_last, last_event_seq) \
             VALUES (?1, 1, 1, 0) ON CONFLICT (model) DO UPDATE SET \
             labels_total = labels_total + 1, since_last = since_last + 1 \
             RETURNING labels_total, since_last, last_event_seq",
        )?
        .query_row([&key.model], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
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
        tx.prepare_cached(
            "INSERT INTO events (event_id, model, created_ms, payload, after_seq, through_seq, \
             command_pending, webhook_pending) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            event_id,
            key.model,
            created_ms,
            payload.to_string(),
            last_event_seq,
            seq,
            trigger.command,
            trigger.webhook,
        ])?;
        tx.prepare_cached(
            "UPDATE retrain_counters SET since_last = 0, last_event_seq = ?1 WHERE model = ?2",
        )?
        .execute(params![seq, key.model])?;
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

fn event_of(row: &Row<'_>) -> Result<StoredEvent, Failure> {
    Ok(StoredEvent {
        event_id: row.get(0)?,
        model: row.get(1)?,
        payload: decode(&row.get::<_, String>(2)?)?,
        after_seq: row.get(3)?,
        through_seq: row.get(4)?,
        command_pending: row.get::<_, i64>(5)? != 0,
        webhook_pending: row.get::<_, i64>(6)? != 0,
        attempts: u32::try_from(row.get::<_, i64>(7)?).unwrap_or(u32::MAX),
    })
}

fn append(
    connection: &mut Connection,
    served: &[ServedRow],
    shadowed: &[ShadowedRow],
) -> Result<BTreeMap<String, u64>, Failure> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut repeated = BTreeMap::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO served (model, request_id, row, version, direct, time_ms, \
             input, class, confidence, value, shadows) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for row in served {
            let shadows = if row.shadows.is_empty() {
                "[]".to_string()
            } else {
                let names: Vec<&str> = row.shadows.iter().map(AsRef::as_ref).collect();
                serde_json::to_string(&names)?
            };
            let inserted = insert.execute(params![
                &*row.model,
                &*row.request_id,
                row.row,
                &*row.version,
                row.direct,
                row.time_ms,
                row.input,
                row.prediction.class,
                row.prediction.confidence.map(f64::from),
                row.prediction.value,
                shadows,
            ])?;
            if inserted == 0 {
                *repeated.entry(row.model.to_string()).or_insert(0) += 1;
            }
        }
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO shadowed (model, request_id, row, version, time_ms, class, \
             confidence, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for row in shadowed {
            insert.execute(params![
                &*row.model,
                &*row.request_id,
                row.row,
                &*row.version,
                row.time_ms,
                row.prediction.class,
                row.prediction.confidence.map(f64::from),
                row.prediction.value,
            ])?;
        }
    }
    tx.commit()?;
    Ok(repeated)
}

fn rows(connection: &mut Connection, keys: &[RowKey]) -> Result<Vec<Option<LoggedRow>>, Failure> {
    let mut served = connection.prepare_cached(
        "SELECT version, direct, time_ms, input, shadows, class, confidence, value FROM served \
         WHERE model = ?1 AND request_id = ?2 AND row = ?3",
    )?;
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let row = served
            .query_row(params![key.model, key.request_id, key.row], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    prediction_of(row, 5)?,
                ))
            })
            .optional()?;
        found.push(match row {
            Some((version, direct, time_ms, input, shadows, prediction)) => Some(LoggedRow {
                time_ms,
                direct: direct != 0,
                input,
                predictions: vec![VersionPrediction {
                    version,
                    shadow: false,
                    prediction,
                }],
                shadows: decode(&shadows)?,
            }),
            None => None,
        });
    }
    let mut shadowed = connection.prepare_cached(
        "SELECT version, class, confidence, value FROM shadowed \
         WHERE model = ?1 AND request_id = ?2 AND row = ?3 ORDER BY version",
    )?;
    for (key, logged) in keys.iter().zip(found.iter_mut()) {
        let Some(logged) = logged.as_mut().filter(|l| !l.shadows.is_empty()) else {
            continue;
        };
        let predictions =
            shadowed.query_map(params![key.model, key.request_id, key.row], |row| {
                Ok(VersionPrediction {
                    version: row.get(0)?,
                    shadow: true,
                    prediction: prediction_of(row, 1)?,
                })
            })?;
        for prediction in predictions {
            logged.predictions.push(prediction?);
        }
    }
    Ok(found)
}

fn labels_between(
    connection: &mut Connection,
    model: &str,
    after_seq: i64,
    through_seq: i64,
) -> Result<Vec<LabelRecord>, Failure> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {LABEL_COLUMNS} FROM labels WHERE model = ?1 AND seq > ?2 AND seq <= ?3 \
         ORDER BY seq"
    ))?;
    let mut rows = statement.query(params![model, after_seq, through_seq])?;
    let mut records = Vec::new();
    while let Some(row) = rows.next()? {
        records.push(label_record(row)?);
    }
    Ok(records)
}

fn expire(
    connection: &mut Connection,
    before_ms: i64,
    max_rows: u64,
    limit: u64,
) -> Result<u64, Failure> {
    let cap = i64::try_from(max_rows).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut deleted = 0;
    // Rows are appended in `seq` order and only ever deleted from the oldest, so each table
    // holds a contiguous run of `seq`: everything below the first row young enough goes, and
    // everything below the newest `cap` — but at most `limit` rows per table in one call.
    for table in ["served", "shadowed"] {
        let statement = format!(
            "DELETE FROM {table} WHERE seq < MIN( \
             MAX(COALESCE((SELECT seq FROM {table} WHERE time_ms >= ?1 ORDER BY seq LIMIT 1), \
                          (SELECT MAX(seq) + 1 FROM {table})), \
                 (SELECT MAX(seq) + 1 FROM {table}) - ?2), \
             (SELECT MIN(seq) FROM {table}) + ?3)"
        );
        deleted += tx.execute(&statement, rusqlite::params![before_ms, cap, limit])? as u64;
    }
    tx.commit()?;
    Ok(deleted)
}

#[async_trait]
impl FeedbackStore for SqliteFeedbackStore {
    async fn append(
        &self,
        served: Arc<[ServedRow]>,
        shadowed: Arc<[ShadowedRow]>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        self.with(&self.log, move |c| append(c, &served, &shadowed))
            .await
    }

    async fn rows(&self, keys: &[RowKey]) -> Result<Vec<Option<LoggedRow>>, StoreError> {
        let keys = keys.to_vec();
        self.with(&self.read, move |c| rows(c, &keys)).await
    }

    async fn label(
        &self,
        writes: &[LabelWrite],
        triggers: &BTreeMap<String, Trigger>,
    ) -> Result<(Vec<LabelOutcome>, Vec<StoredEvent>), StoreError> {
        let (writes, triggers) = (writes.to_vec(), triggers.clone());
        self.with(&self.labels, move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut outcomes = Vec::with_capacity(writes.len());
            let mut events = Vec::new();
            for write in &writes {
                outcomes.push(store_label(&tx, write, &triggers, &mut events)?);
            }
            tx.commit()?;
            Ok((outcomes, events))
        })
        .await
    }

    async fn labels_between(
        &self,
        model: &str,
        after_seq: i64,
        through_seq: i64,
    ) -> Result<Vec<LabelRecord>, StoreError> {
        let model = model.to_string();
        self.with(&self.read, move |c| {
            labels_between(c, &model, after_seq, through_seq)
        })
        .await
    }

    async fn expire(&self, before_ms: i64, max_rows: u64, limit: u64) -> Result<u64, StoreError> {
        self.with(&self.log, move |c| expire(c, before_ms, max_rows, limit))
            .await
    }

    async fn retrain_settings(&self) -> Result<BTreeMap<String, RetrainSettings>, StoreError> {
        self.with(&self.read, |c| {
            let mut statement = c.prepare_cached("SELECT model, settings FROM retrain_settings")?;
            let mut rows = statement.query([])?;
            let mut settings = BTreeMap::new();
            while let Some(row) = rows.next()? {
                settings.insert(row.get(0)?, decode(&row.get::<_, String>(1)?)?);
            }
            Ok(settings)
        })
        .await
    }

    async fn set_retrain_settings(
        &self,
        model: &str,
        settings: &RetrainSettings,
    ) -> Result<(), StoreError> {
        let model = model.to_string();
        let settings = serde_json::to_string(settings).map_err(|e| StoreError::Database {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.with(&self.labels, move |c| {
            c.execute(
                "INSERT INTO retrain_settings (model, settings) VALUES (?1, ?2) \
                 ON CONFLICT (model) DO UPDATE SET settings = excluded.settings",
                params![model, settings],
            )?;
            Ok(())
        })
        .await
    }

    async fn pending_events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        self.with(&self.read, |c| {
            let mut statement = c.prepare_cached(
                "SELECT event_id, model, payload, after_seq, through_seq, command_pending, \
                 webhook_pending, attempts FROM events \
                 WHERE command_pending = 1 OR webhook_pending = 1 ORDER BY created_ms, event_id",
            )?;
            let mut rows = statement.query([])?;
            let mut events = Vec::new();
            while let Some(row) = rows.next()? {
                events.push(event_of(row)?);
            }
            Ok(events)
        })
        .await
    }

    async fn delivered(&self, event_id: &str, channel: Channel) -> Result<(), StoreError> {
        let statement = match channel {
            Channel::Command => "UPDATE events SET command_pending = 0 WHERE event_id = ?1",
            Channel::Webhook => "UPDATE events SET webhook_pending = 0 WHERE event_id = ?1",
        };
        let event_id = event_id.to_string();
        self.with(&self.labels, move |c| {
            c.execute(statement, [event_id])?;
            Ok(())
        })
        .await
    }

    async fn failed(&self, event_id: &str, reason: &str) -> Result<(), StoreError> {
        let (event_id, reason) = (event_id.to_string(), reason.to_string());
        self.with(&self.labels, move |c| {
            c.execute(
                "UPDATE events SET attempts = attempts + 1, last_error = ?1 WHERE event_id = ?2",
                params![reason, event_id],
            )?;
            Ok(())
        })
        .await
    }
}
