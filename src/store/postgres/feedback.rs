//! The feedback store in PostgreSQL: [`FeedbackStore`] for [`PostgresStore`] — the inference
//! log (`served`, `shadowed`), the labels, the retraining counters, settings and events — shared
//! by every replica that names the same database, with the semantics of the embedded SQLite
//! store (`store/sqlite.rs`).
//!
//! # Several processes at once
//!
//! - `append`: one transaction a call, one multi-row `INSERT … ON CONFLICT DO NOTHING` a table;
//!   rows are inserted in key order, so two replicas logging the same keys never deadlock.
//! - `label`: the transaction first locks the retraining counter row of every model in the batch
//!   (`INSERT … ON CONFLICT DO NOTHING`, then `SELECT … FOR UPDATE`, in model order). Every
//!   label writer of a model holds that lock until it commits, so the outcome of each label
//!   (accepted, duplicate, conflict, replaced), the counters and the events are decided on the
//!   labels committed before, and the `seq`s of a model's labels grow in commit order (an
//!   event's export range is exact).
//! - Event ids are drawn by the database (`gen_random_uuid`), unique across processes (and the
//!   primary key).
//! - `pending_events` claims what it returns for this store (see the impl's documentation), so
//!   two replicas never deliver the same event at the same time.
//! - `expire` runs under a transaction-scoped advisory lock: one replica expires at a time.

use super::PostgresStore;
use crate::store::StoreError;
use crate::store::feedback::{
    Channel, FeedbackStore, LabelOutcome, LabelRecord, LabelWrite, LoggedPrediction, LoggedRow,
    RetrainSettings, RowKey, ServedRow, ShadowedRow, StoredEvent, Trigger, Truth,
    VersionPrediction, event_payload,
};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

/// How long a claim of [`FeedbackStore::pending_events`] keeps an event from other replicas.
/// Renewed by every `pending_events`, `delivered` and `failed` of the claimant; a replica that
/// stops (or spends longer than this on one delivery) lets another take the event over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(300);

/// How long a `label` transaction waits for another replica's lock on a model's counter (the
/// SQLite store's busy timeout).
const LABEL_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s'";

/// The advisory lock key of expiry (one replica expires at a time).
const EXPIRY_LOCK: i64 = 0x7669_6769_6c00_0002;

/// The columns of a label record, in the order [`PostgresStore::label_record`] reads them.
const LABEL_COLUMNS: &str = "seq, model, request_id, row, time_ms, truth, served_time_ms, \
                             direct, input, predictions, shadows";

/// The columns of an event, in the order [`PostgresStore::event_of`] reads them.
const EVENT_COLUMNS: &str = "event_id, model, payload, after_seq, through_seq, command_pending, \
                             webhook_pending, attempts, created_ms";

/// A label row as stored or being stored in one `label` transaction.
struct Entry {
    /// `None` for a label inserted by this transaction (its `seq` is `accepted`'s).
    seq: Option<i64>,
    /// Index among this transaction's accepted labels (new labels only).
    accepted: usize,
    truth: Truth,
    /// Replacements made by this transaction.
    replaced: i64,
}

/// What one write did, before the `seq`s of new labels are known.
enum Decided {
    Accepted(usize),
    Replaced((String, String, i64), Truth),
    Duplicate,
    Conflict(Truth),
}

/// A model's retraining counter, as locked at the start of a `label` transaction.
#[derive(Clone, Copy)]
struct Counter {
    labels_total: i64,
    since_last: i64,
    last_event_seq: i64,
    changed: bool,
}

fn index(row: u32) -> i64 {
    i64::from(row)
}

fn key_of(key: &RowKey) -> (String, String, i64) {
    (key.model.clone(), key.request_id.clone(), index(key.row))
}

/// A count completed by a label: an event, once it has an id.
struct Crossing<'a> {
    model: &'a str,
    trigger: &'a Trigger,
    labels_since_last: i64,
    labels_total: i64,
    created_ms: i64,
    after_seq: i64,
    through_seq: i64,
}

impl PostgresStore {
    /// A database error about stored or given data (not the connection).
    fn invalid(&self, reason: String) -> StoreError {
        StoreError::Database {
            path: self.name().to_string(),
            reason,
        }
    }

    /// Column `index` of `row`, as `T`.
    fn column<'a, T: FromSql<'a>>(&self, row: &'a Row, index: usize) -> Result<T, StoreError> {
        row.try_get(index).map_err(|e| {
            let name = row.columns().get(index).map_or("?", |c| c.name());
            let cause =
                std::error::Error::source(&e).map_or_else(String::new, |c| format!(": {c}"));
            self.invalid(format!("column `{name}` cannot be read: {e}{cause}"))
        })
    }

    /// A JSON column's value as `T`; `what` names it in the error.
    fn decode<T: DeserializeOwned>(
        &self,
        value: Value,
        what: impl FnOnce() -> String,
    ) -> Result<T, StoreError> {
        serde_json::from_value(value)
            .map_err(|e| self.invalid(format!("{} does not parse: {e}", what())))
    }

    /// A value as JSON; `what` names it in the error.
    fn encode<T: serde::Serialize>(
        &self,
        value: &T,
        what: impl FnOnce() -> String,
    ) -> Result<Value, StoreError> {
        serde_json::to_value(value)
            .map_err(|e| self.invalid(format!("{} cannot be written as JSON: {e}", what())))
    }

    /// Who claims events for this store: the process and the store's connection pool (clones
    /// of a store share its pool, and so its claims; stores opened separately do not).
    fn claimant(&self) -> String {
        static PROCESS: OnceLock<u64> = OnceLock::new();
        let process = *PROCESS.get_or_init(|| {
            // Seeded by the operating system's randomness, once per process.
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), std::process::id())
        });
        let pool = std::ptr::from_ref(self.pool.manager()).addr();
        format!("{}-{process:016x}-{pool:x}", std::process::id())
    }

    /// The prediction in columns `offset..offset + 3` (class, confidence, value).
    fn prediction_of(&self, row: &Row, offset: usize) -> Result<LoggedPrediction, StoreError> {
        Ok(LoggedPrediction {
            class: self
                .column::<Option<i64>>(row, offset)?
                .and_then(|c| u32::try_from(c).ok()),
            confidence: self
                .column::<Option<f64>>(row, offset + 1)?
                .map(|c| c as f32),
            value: self.column(row, offset + 2)?,
        })
    }

    /// A label row (the columns of [`LABEL_COLUMNS`]) as a record.
    fn label_record(&self, row: &Row) -> Result<LabelRecord, StoreError> {
        let seq: i64 = self.column(row, 0)?;
        let what = |column: &'static str| move || format!("the {column} of label {seq}");
        Ok(LabelRecord {
            seq,
            key: RowKey {
                model: self.column(row, 1)?,
                request_id: self.column(row, 2)?,
                row: u32::try_from(self.column::<i64>(row, 3)?).unwrap_or(0),
            },
            time_ms: self.column(row, 4)?,
            truth: self.decode(self.column(row, 5)?, what("truth"))?,
            row: LoggedRow {
                time_ms: self.column(row, 6)?,
                direct: self.column(row, 7)?,
                input: self.column(row, 8)?,
                predictions: self.decode(self.column(row, 9)?, what("predictions"))?,
                shadows: self.decode(self.column(row, 10)?, what("shadows"))?,
            },
        })
    }

    /// An event row (the columns of [`EVENT_COLUMNS`]) with its creation time.
    fn event_of(&self, row: &Row) -> Result<(i64, StoredEvent), StoreError> {
        let event_id: String = self.column(row, 0)?;
        let payload = self.column::<Value>(row, 2)?;
        if !payload.is_object() {
            return Err(self.invalid(format!(
                "the payload of event {event_id} is not a JSON object"
            )));
        }
        let event = StoredEvent {
            model: self.column(row, 1)?,
            payload,
            after_seq: self.column(row, 3)?,
            through_seq: self.column(row, 4)?,
            command_pending: self.column(row, 5)?,
            webhook_pending: self.column(row, 6)?,
            attempts: u32::try_from(self.column::<i64>(row, 7)?).unwrap_or(u32::MAX),
            event_id,
        };
        Ok((self.column(row, 8)?, event))
    }

    /// Deletes from `table` (`served` or `shadowed`) the rows below the first one logged at or
    /// after `before_ms` and those beyond the newest `cap`, oldest first, at most `limit`.
    async fn expire_table(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        table: &str,
        before_ms: i64,
        cap: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let span = tx
            .query_one(&format!("SELECT MIN(seq), MAX(seq) FROM {table}"), &[])
            .await
            .map_err(fail)?;
        let (Some(first), Some(last)) = (
            self.column::<Option<i64>>(&span, 0)?,
            self.column::<Option<i64>>(&span, 1)?,
        ) else {
            return Ok(0);
        };
        // Rows are appended in (about) time order, so the oldest rows are the lowest `seq`:
        // everything below the first row young enough goes (none young: everything).
        let young = tx
            .query_opt(
                &format!("SELECT seq FROM {table} WHERE time_ms >= $1 ORDER BY seq LIMIT 1"),
                &[&before_ms],
            )
            .await
            .map_err(fail)?;
        let by_time = match young {
            Some(row) => self.column::<i64>(&row, 0)?,
            None => last.saturating_add(1),
        };
        // And everything up to the newest row beyond the cap. `seq`s have gaps (repeats and
        // rolled-back transactions consume some), so rows are counted, not `seq`s — but only
        // when the span of `seq`s says there may be more rows than the cap.
        let mut by_cap = i64::MIN;
        if last.saturating_sub(first).saturating_add(1) > cap {
            let beyond = tx
                .query_opt(
                    &format!("SELECT seq FROM {table} ORDER BY seq DESC OFFSET $1 LIMIT 1"),
                    &[&cap],
                )
                .await
                .map_err(fail)?;
            if let Some(row) = beyond {
                by_cap = self.column::<i64>(&row, 0)?.saturating_add(1);
            }
        }
        let boundary = by_time.max(by_cap);
        if boundary <= first {
            return Ok(0);
        }
        tx.execute(
            &format!(
                "DELETE FROM {table} WHERE seq IN \
                 (SELECT seq FROM {table} WHERE seq < $1 ORDER BY seq LIMIT $2)"
            ),
            &[&boundary, &limit],
        )
        .await
        .map_err(fail)
    }
}

/// The PostgreSQL feedback store: the semantics of the SQLite store, safe with several
/// replicas writing at once (see the module documentation).
///
/// **Event delivery across replicas.** [`FeedbackStore::pending_events`] returns only the
/// pending events this store *claims*: those no one claims, those whose claim lapsed
/// (`CLAIM_LEASE`, five minutes, after it was last renewed) and those this store claims
/// already; it claims them (`FOR UPDATE SKIP LOCKED`, so two replicas asking at once get
/// disjoint sets) and renews its claims for another lease. `delivered` and `failed` renew the
/// claim of the event while a channel is still pending (the claimant retries it after its own
/// backoff; a failure does not hand the event to a replica that would retry it at once), and
/// `delivered` drops it when nothing is pending any more. So an event is delivered by one replica at a time; it moves to
/// another only when its claimant stops renewing (stopped, or stuck longer than the lease in one
/// delivery — then it may be delivered twice, which the stable `event_id` lets receivers
/// deduplicate, as the at-least-once delivery already requires).
///
/// **Expiry across replicas.** One replica expires at a time (a transaction-scoped advisory
/// lock): a call made while another replica's runs deletes nothing and returns 0, and the next
/// tick finds what is left.
#[async_trait]
impl FeedbackStore for PostgresStore {
    async fn append(
        &self,
        served: Arc<[ServedRow]>,
        shadowed: Arc<[ShadowedRow]>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        if served.is_empty() && shadowed.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut served: Vec<&ServedRow> = served.iter().collect();
        let mut shadowed: Vec<&ShadowedRow> = shadowed.iter().collect();
        // Key order (stable: the first of a key in the batch stays first), so that concurrent
        // appends of overlapping keys take their row locks in the same order.
        served.sort_by(|a, b| {
            (&a.model, &a.request_id, a.row).cmp(&(&b.model, &b.request_id, b.row))
        });
        shadowed.sort_by(|a, b| {
            (&a.model, &a.request_id, a.row, &a.version).cmp(&(
                &b.model,
                &b.request_id,
                b.row,
                &b.version,
            ))
        });
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let mut repeated = BTreeMap::new();
        if !served.is_empty() {
            let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
            for row in &served {
                *sent.entry(&*row.model).or_insert(0) += 1;
            }
            let shadows: Vec<Value> = served
                .iter()
                .map(|r| Value::from(r.shadows.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
                .collect();
            let statement = tx
                .prepare_cached(
                    "INSERT INTO served (model, request_id, row, version, direct, time_ms, input, \
                     class, confidence, value, shadows) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], \
                     $5::boolean[], $6::bigint[], $7::text[], $8::bigint[], $9::float8[], \
                     $10::float8[], $11::jsonb[]) \
                     ON CONFLICT DO NOTHING RETURNING model",
                )
                .await
                .map_err(fail)?;
            let inserted = tx
                .query(
                    &statement,
                    &[
                        &served.iter().map(|r| &*r.model).collect::<Vec<_>>(),
                        &served.iter().map(|r| &*r.request_id).collect::<Vec<_>>(),
                        &served.iter().map(|r| index(r.row)).collect::<Vec<_>>(),
                        &served.iter().map(|r| &*r.version).collect::<Vec<_>>(),
                        &served.iter().map(|r| r.direct).collect::<Vec<_>>(),
                        &served.iter().map(|r| r.time_ms).collect::<Vec<_>>(),
                        &served.iter().map(|r| r.input.as_str()).collect::<Vec<_>>(),
                        &served
                            .iter()
                            .map(|r| r.prediction.class.map(i64::from))
                            .collect::<Vec<_>>(),
                        &served
                            .iter()
                            .map(|r| r.prediction.confidence.map(f64::from))
                            .collect::<Vec<_>>(),
                        &served
                            .iter()
                            .map(|r| r.prediction.value)
                            .collect::<Vec<_>>(),
                        &shadows,
                    ],
                )
                .await
                .map_err(fail)?;
            let mut logged: BTreeMap<String, u64> = BTreeMap::new();
            for row in &inserted {
                *logged.entry(self.column(row, 0)?).or_insert(0) += 1;
            }
            for (model, count) in sent {
                let repeats = count.saturating_sub(logged.get(model).copied().unwrap_or(0));
                if repeats > 0 {
                    repeated.insert(model.to_string(), repeats);
                }
            }
        }
        if !shadowed.is_empty() {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO shadowed (model, request_id, row, version, time_ms, class, \
                     confidence, value) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], \
                     $5::bigint[], $6::bigint[], $7::float8[], $8::float8[]) \
                     ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(fail)?;
            tx.execute(
                &statement,
                &[
                    &shadowed.iter().map(|r| &*r.model).collect::<Vec<_>>(),
                    &shadowed.iter().map(|r| &*r.request_id).collect::<Vec<_>>(),
                    &shadowed.iter().map(|r| index(r.row)).collect::<Vec<_>>(),
                    &shadowed.iter().map(|r| &*r.version).collect::<Vec<_>>(),
                    &shadowed.iter().map(|r| r.time_ms).collect::<Vec<_>>(),
                    &shadowed
                        .iter()
                        .map(|r| r.prediction.class.map(i64::from))
                        .collect::<Vec<_>>(),
                    &shadowed
                        .iter()
                        .map(|r| r.prediction.confidence.map(f64::from))
                        .collect::<Vec<_>>(),
                    &shadowed
                        .iter()
                        .map(|r| r.prediction.value)
                        .collect::<Vec<_>>(),
                ],
            )
            .await
            .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(repeated)
    }

    async fn rows(&self, keys: &[RowKey]) -> Result<Vec<Option<LoggedRow>>, StoreError> {
        let mut found: Vec<Option<LoggedRow>> = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(found);
        }
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let client = self.client().await?;
        let ords: Vec<i64> = (0..keys.len()).map(|i| i as i64).collect();
        let models: Vec<&str> = keys.iter().map(|k| k.model.as_str()).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.request_id.as_str()).collect();
        let rows: Vec<i64> = keys.iter().map(|k| index(k.row)).collect();
        let statement = client
            .prepare_cached(
                "SELECT k.ord, s.version, s.direct, s.time_ms, s.input, s.shadows, s.class, \
                 s.confidence, s.value \
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
                      AS k(ord, model, request_id, row) \
                 JOIN served s ON s.model = k.model AND s.request_id = k.request_id \
                      AND s.row = k.row",
            )
            .await
            .map_err(fail)?;
        for row in client
            .query(&statement, &[&ords, &models, &ids, &rows])
            .await
            .map_err(fail)?
        {
            let ord = usize::try_from(self.column::<i64>(&row, 0)?).unwrap_or(usize::MAX);
            let Some(slot) = found.get_mut(ord) else {
                continue;
            };
            let shadows = self.decode(self.column(&row, 5)?, || {
                keys.get(ord).map_or_else(String::new, |k| {
                    format!(
                        "the shadows of logged row {}/{}/{}",
                        k.model, k.request_id, k.row
                    )
                })
            })?;
            *slot = Some(LoggedRow {
                time_ms: self.column(&row, 3)?,
                direct: self.column(&row, 2)?,
                input: self.column(&row, 4)?,
                predictions: vec![VersionPrediction {
                    version: self.column(&row, 1)?,
                    shadow: false,
                    prediction: self.prediction_of(&row, 6)?,
                }],
                shadows,
            });
        }
        // Shadow predictions, only for rows that a shadow took a copy of (as SQLite does).
        let with_shadows: Vec<usize> = found
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_some_and(|r| !r.shadows.is_empty()))
            .map(|(i, _)| i)
            .collect();
        if with_shadows.is_empty() {
            return Ok(found);
        }
        let pick = |values: &[i64]| with_shadows.iter().map(|&i| values[i]).collect::<Vec<_>>();
        let statement = client
            .prepare_cached(
                "SELECT k.ord, h.version, h.class, h.confidence, h.value \
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
                      AS k(ord, model, request_id, row) \
                 JOIN shadowed h ON h.model = k.model AND h.request_id = k.request_id \
                      AND h.row = k.row \
                 ORDER BY k.ord, h.version COLLATE \"C\"",
            )
            .await
            .map_err(fail)?;
        for row in client
            .query(
                &statement,
                &[
                    &pick(&ords),
                    &with_shadows.iter().map(|&i| models[i]).collect::<Vec<_>>(),
                    &with_shadows.iter().map(|&i| ids[i]).collect::<Vec<_>>(),
                    &pick(&rows),
                ],
            )
            .await
            .map_err(fail)?
        {
            let ord = usize::try_from(self.column::<i64>(&row, 0)?).unwrap_or(usize::MAX);
            if let Some(Some(logged)) = found.get_mut(ord) {
                logged.predictions.push(VersionPrediction {
                    version: self.column(&row, 1)?,
                    shadow: true,
                    prediction: self.prediction_of(&row, 2)?,
                });
            }
        }
        Ok(found)
    }

    async fn label(
        &self,
        writes: &[LabelWrite],
        triggers: &BTreeMap<String, Trigger>,
    ) -> Result<(Vec<LabelOutcome>, Vec<StoredEvent>), StoreError> {
        if writes.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let models: Vec<&str> = writes
            .iter()
            .map(|w| w.key.model.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        // Wait for other label writers at most as long as the SQLite store does.
        tx.batch_execute(LABEL_LOCK_TIMEOUT).await.map_err(fail)?;

        // 1. Lock the counter of every model of the batch, in model order (no deadlock between
        //    batches of several models). Every label writer of a model waits here for the
        //    previous one to commit, so what follows sees every label committed before.
        let statement = tx
            .prepare_cached(
                "INSERT INTO retrain_counters (model, labels_total, since_last, last_event_seq) \
                 SELECT m, 0, 0, 0 FROM unnest($1::text[]) AS m ON CONFLICT (model) DO NOTHING",
            )
            .await
            .map_err(fail)?;
        tx.execute(&statement, &[&models]).await.map_err(fail)?;
        let statement = tx
            .prepare_cached(
                "SELECT model, labels_total, since_last, last_event_seq FROM retrain_counters \
                 WHERE model = ANY($1::text[]) ORDER BY model FOR UPDATE",
            )
            .await
            .map_err(fail)?;
        let mut counters: BTreeMap<String, Counter> = BTreeMap::new();
        for row in tx.query(&statement, &[&models]).await.map_err(fail)? {
            counters.insert(
                self.column(&row, 0)?,
                Counter {
                    labels_total: self.column(&row, 1)?,
                    since_last: self.column(&row, 2)?,
                    last_event_seq: self.column(&row, 3)?,
                    changed: false,
                },
            );
        }

        // 2. The labels already stored for the batch's rows.
        let statement = tx
            .prepare_cached(
                "SELECT l.model, l.request_id, l.row, l.seq, l.truth FROM labels l \
                 JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS k(model, request_id, row) \
                   ON l.model = k.model AND l.request_id = k.request_id AND l.row = k.row",
            )
            .await
            .map_err(fail)?;
        let stored = tx
            .query(
                &statement,
                &[
                    &writes
                        .iter()
                        .map(|w| w.key.model.as_str())
                        .collect::<Vec<_>>(),
                    &writes
                        .iter()
                        .map(|w| w.key.request_id.as_str())
                        .collect::<Vec<_>>(),
                    &writes.iter().map(|w| index(w.key.row)).collect::<Vec<_>>(),
                ],
            )
            .await
            .map_err(fail)?;
        let mut entries: HashMap<(String, String, i64), Entry> = HashMap::new();
        for row in &stored {
            let key: (String, String, i64) = (
                self.column(row, 0)?,
                self.column(row, 1)?,
                self.column(row, 2)?,
            );
            let seq: i64 = self.column(row, 3)?;
            let truth = self.decode(self.column(row, 4)?, || {
                format!("the truth of label {seq} ({}/{}/{})", key.0, key.1, key.2)
            })?;
            entries.insert(
                key,
                Entry {
                    seq: Some(seq),
                    accepted: 0,
                    truth,
                    replaced: 0,
                },
            );
        }

        // 3. Each label's outcome, in order (a row labelled twice in the batch sees the first).
        let mut decided = Vec::with_capacity(writes.len());
        let mut accepted: Vec<usize> = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            let key = key_of(&write.key);
            decided.push(match entries.get_mut(&key) {
                Some(entry) if entry.truth == write.truth => Decided::Duplicate,
                Some(entry) if !write.replace => Decided::Conflict(entry.truth),
                Some(entry) => {
                    let previous = entry.truth;
                    entry.truth = write.truth;
                    entry.replaced += 1;
                    Decided::Replaced(key, previous)
                }
                None => {
                    entries.insert(
                        key,
                        Entry {
                            seq: None,
                            accepted: accepted.len(),
                            truth: write.truth,
                            replaced: 0,
                        },
                    );
                    accepted.push(i);
                    Decided::Accepted(accepted.len() - 1)
                }
            });
        }

        // 4. `seq`s for the new labels, in order: taken while the models' counters are locked,
        //    so a model's labels are numbered in commit order.
        let mut seqs: Vec<i64> = Vec::with_capacity(accepted.len());
        if !accepted.is_empty() {
            let statement = tx
                .prepare_cached(
                    "SELECT nextval(pg_get_serial_sequence('labels', 'seq')) \
                     FROM generate_series(1, $1::bigint)",
                )
                .await
                .map_err(fail)?;
            for row in tx
                .query(&statement, &[&(accepted.len() as i64)])
                .await
                .map_err(fail)?
            {
                seqs.push(self.column(&row, 0)?);
            }
            seqs.sort_unstable();
        }
        let seq_of = |entry: &Entry| entry.seq.or_else(|| seqs.get(entry.accepted).copied());

        // 5. Outcomes, counters and events.
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut crossings = Vec::new();
        for (write, decided) in writes.iter().zip(decided) {
            let outcome = match decided {
                Decided::Duplicate => LabelOutcome::Duplicate,
                Decided::Conflict(stored) => LabelOutcome::Conflict { stored },
                Decided::Replaced(key, previous) => LabelOutcome::Replaced {
                    seq: entries.get(&key).and_then(seq_of).unwrap_or(0),
                    previous,
                },
                Decided::Accepted(k) => {
                    let seq = seqs.get(k).copied().ok_or_else(|| {
                        self.invalid("the label sequence gave too few numbers".into())
                    })?;
                    let model = &write.key.model;
                    let counter = counters.entry(model.clone()).or_insert(Counter {
                        labels_total: 0,
                        since_last: 0,
                        last_event_seq: 0,
                        changed: false,
                    });
                    counter.labels_total += 1;
                    counter.since_last += 1;
                    counter.changed = true;
                    if let Some(trigger) = triggers.get(model)
                        && trigger.every_labels > 0
                        && counter.since_last
                            >= i64::try_from(trigger.every_labels).unwrap_or(i64::MAX)
                    {
                        crossings.push(Crossing {
                            model,
                            trigger,
                            labels_since_last: counter.since_last,
                            labels_total: counter.labels_total,
                            created_ms: write.time_ms,
                            after_seq: counter.last_event_seq,
                            through_seq: seq,
                        });
                        counter.since_last = 0;
                        counter.last_event_seq = seq;
                    }
                    LabelOutcome::Accepted { seq }
                }
            };
            outcomes.push(outcome);
        }

        // Event ids: 128 random bits as hex, prefixed (the SQLite store's format), drawn by the
        // database (`gen_random_uuid`, cryptographically random), so that no two processes can
        // draw the same.
        let mut events: Vec<(i64, StoredEvent)> = Vec::with_capacity(crossings.len());
        if !crossings.is_empty() {
            let statement = tx
                .prepare_cached(
                    "SELECT 'evt_' || replace(gen_random_uuid()::text, '-', '') \
                     FROM generate_series(1, $1::bigint)",
                )
                .await
                .map_err(fail)?;
            let ids = tx
                .query(&statement, &[&(crossings.len() as i64)])
                .await
                .map_err(fail)?;
            for (crossing, id) in crossings.iter().zip(&ids) {
                let event_id: String = self.column(id, 0)?;
                let payload = event_payload(
                    &event_id,
                    crossing.model,
                    crossing.trigger,
                    crossing.labels_since_last,
                    crossing.labels_total,
                    crossing.created_ms,
                );
                events.push((
                    crossing.created_ms,
                    StoredEvent {
                        event_id,
                        model: crossing.model.to_string(),
                        payload,
                        after_seq: crossing.after_seq,
                        through_seq: crossing.through_seq,
                        command_pending: crossing.trigger.command,
                        webhook_pending: crossing.trigger.webhook,
                        attempts: 0,
                    },
                ));
            }
        }

        // 6. The writes: new labels (with their final truth), replacements of stored ones,
        //    events, counters.
        if !accepted.is_empty() {
            let new: Vec<(&LabelWrite, &Entry, i64)> = accepted
                .iter()
                .zip(&seqs)
                .filter_map(|(&i, &seq)| {
                    let write = writes.get(i)?;
                    Some((write, entries.get(&key_of(&write.key))?, seq))
                })
                .collect();
            let mut truths = Vec::with_capacity(new.len());
            let mut predictions = Vec::with_capacity(new.len());
            let mut shadows = Vec::with_capacity(new.len());
            for (write, entry, _) in &new {
                let name = || format!("the label of {}", write.key.request_id);
                truths.push(self.encode(&entry.truth, name)?);
                predictions.push(self.encode(&write.row.predictions, name)?);
                shadows.push(self.encode(&write.row.shadows, name)?);
            }
            let statement = tx
                .prepare_cached(
                    "INSERT INTO labels (seq, model, request_id, row, time_ms, truth, \
                     served_time_ms, direct, input, predictions, shadows, replaced) \
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
                     $5::bigint[], $6::jsonb[], $7::bigint[], $8::boolean[], $9::text[], \
                     $10::jsonb[], $11::jsonb[], $12::bigint[])",
                )
                .await
                .map_err(fail)?;
            tx.execute(
                &statement,
                &[
                    &new.iter().map(|(_, _, seq)| *seq).collect::<Vec<_>>(),
                    &new.iter()
                        .map(|(w, ..)| w.key.model.as_str())
                        .collect::<Vec<_>>(),
                    &new.iter()
                        .map(|(w, ..)| w.key.request_id.as_str())
                        .collect::<Vec<_>>(),
                    &new.iter()
                        .map(|(w, ..)| index(w.key.row))
                        .collect::<Vec<_>>(),
                    &new.iter().map(|(w, ..)| w.time_ms).collect::<Vec<_>>(),
                    &truths,
                    &new.iter().map(|(w, ..)| w.row.time_ms).collect::<Vec<_>>(),
                    &new.iter().map(|(w, ..)| w.row.direct).collect::<Vec<_>>(),
                    &new.iter()
                        .map(|(w, ..)| w.row.input.as_str())
                        .collect::<Vec<_>>(),
                    &predictions,
                    &shadows,
                    &new.iter().map(|(_, e, _)| e.replaced).collect::<Vec<_>>(),
                ],
            )
            .await
            .map_err(fail)?;
        }
        let mut replaced_seqs = Vec::new();
        let mut replaced_truths = Vec::new();
        let mut replaced_counts = Vec::new();
        for (key, entry) in &entries {
            if let Some(seq) = entry.seq
                && entry.replaced > 0
            {
                replaced_seqs.push(seq);
                replaced_truths.push(self.encode(&entry.truth, || {
                    format!("the label of {}/{}/{}", key.0, key.1, key.2)
                })?);
                replaced_counts.push(entry.replaced);
            }
        }
        if !replaced_seqs.is_empty() {
            let statement = tx
                .prepare_cached(
                    "UPDATE labels l SET truth = u.truth, replaced = l.replaced + u.count \
                     FROM unnest($1::bigint[], $2::jsonb[], $3::bigint[]) AS u(seq, truth, count) \
                     WHERE l.seq = u.seq",
                )
                .await
                .map_err(fail)?;
            tx.execute(
                &statement,
                &[&replaced_seqs, &replaced_truths, &replaced_counts],
            )
            .await
            .map_err(fail)?;
        }
        if !events.is_empty() {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO events (event_id, model, created_ms, payload, after_seq, \
                     through_seq, command_pending, webhook_pending) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await
                .map_err(fail)?;
            for (created_ms, event) in &events {
                tx.execute(
                    &statement,
                    &[
                        &event.event_id,
                        &event.model,
                        created_ms,
                        &event.payload,
                        &event.after_seq,
                        &event.through_seq,
                        &event.command_pending,
                        &event.webhook_pending,
                    ],
                )
                .await
                .map_err(fail)?;
            }
        }
        let changed: Vec<(&String, &Counter)> =
            counters.iter().filter(|(_, c)| c.changed).collect();
        if !changed.is_empty() {
            let statement = tx
                .prepare_cached(
                    "UPDATE retrain_counters c SET labels_total = u.labels_total, \
                     since_last = u.since_last, last_event_seq = u.last_event_seq \
                     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) \
                          AS u(model, labels_total, since_last, last_event_seq) \
                     WHERE c.model = u.model",
                )
                .await
                .map_err(fail)?;
            tx.execute(
                &statement,
                &[
                    &changed.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
                    &changed
                        .iter()
                        .map(|(_, c)| c.labels_total)
                        .collect::<Vec<_>>(),
                    &changed
                        .iter()
                        .map(|(_, c)| c.since_last)
                        .collect::<Vec<_>>(),
                    &changed
                        .iter()
                        .map(|(_, c)| c.last_event_seq)
                        .collect::<Vec<_>>(),
                ],
            )
            .await
            .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok((outcomes, events.into_iter().map(|(_, e)| e).collect()))
    }

    async fn labels_between(
        &self,
        model: &str,
        after_seq: i64,
        through_seq: i64,
    ) -> Result<Vec<LabelRecord>, StoreError> {
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {LABEL_COLUMNS} FROM labels WHERE model = $1 AND seq > $2 AND seq <= $3 \
                 ORDER BY seq"
            ))
            .await
            .map_err(fail)?;
        client
            .query(&statement, &[&model, &after_seq, &through_seq])
            .await
            .map_err(fail)?
            .iter()
            .map(|row| self.label_record(row))
            .collect()
    }

    async fn expire(&self, before_ms: i64, max_rows: u64, limit: u64) -> Result<u64, StoreError> {
        let cap = i64::try_from(max_rows).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        // One replica expires at a time; the others find the lock taken and delete nothing
        // (their next call, a tick later, finds what is left).
        let locked = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&EXPIRY_LOCK])
            .await
            .map_err(fail)?;
        if !self.column::<bool>(&locked, 0)? {
            return Ok(0);
        }
        let mut deleted = 0;
        for table in ["served", "shadowed"] {
            deleted += self.expire_table(&tx, table, before_ms, cap, limit).await?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(deleted)
    }

    async fn retrain_settings(&self) -> Result<BTreeMap<String, RetrainSettings>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT model, settings FROM retrain_settings", &[])
            .await
            .map_err(|e| self.failed(&e))?;
        let mut settings = BTreeMap::new();
        for row in &rows {
            let model: String = self.column(row, 0)?;
            let saved = self.decode(self.column(row, 1)?, || {
                format!("the retraining settings of `{model}`")
            })?;
            settings.insert(model, saved);
        }
        Ok(settings)
    }

    async fn set_retrain_settings(
        &self,
        model: &str,
        settings: &RetrainSettings,
    ) -> Result<(), StoreError> {
        let settings = self.encode(settings, || format!("the retraining settings of `{model}`"))?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO retrain_settings (model, settings) VALUES ($1, $2) \
                 ON CONFLICT (model) DO UPDATE SET settings = excluded.settings",
                &[&model, &settings],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    async fn pending_events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH claimable AS ( \
                     SELECT event_id FROM events \
                     WHERE (command_pending OR webhook_pending) \
                       AND (claimed_by IS NULL OR claimed_by = $1 OR claimed_until < now()) \
                     ORDER BY created_ms, event_id \
                     FOR UPDATE SKIP LOCKED) \
                 UPDATE events e SET claimed_by = $1, \
                        claimed_until = now() + make_interval(secs => $2) \
                 FROM claimable c WHERE e.event_id = c.event_id \
                 RETURNING {}",
                EVENT_COLUMNS
                    .split(", ")
                    .map(|c| format!("e.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await
            .map_err(fail)?;
        let rows = client
            .query(&statement, &[&self.claimant(), &CLAIM_LEASE.as_secs_f64()])
            .await
            .map_err(fail)?;
        let mut events = rows
            .iter()
            .map(|row| self.event_of(row))
            .collect::<Result<Vec<_>, _>>()?;
        events.sort_by(|(a_ms, a), (b_ms, b)| (a_ms, &a.event_id).cmp(&(b_ms, &b.event_id)));
        Ok(events.into_iter().map(|(_, event)| event).collect())
    }

    async fn delivered(&self, event_id: &str, channel: Channel) -> Result<(), StoreError> {
        let (done, other) = match channel {
            Channel::Command => ("command_pending", "webhook_pending"),
            Channel::Webhook => ("webhook_pending", "command_pending"),
        };
        // The claim stays (renewed, when it is this store's) while the other channel is
        // pending; it goes with the last delivery.
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "UPDATE events SET {done} = FALSE, \
                     claimed_by = CASE WHEN {other} THEN claimed_by END, \
                     claimed_until = CASE WHEN NOT {other} THEN NULL \
                         WHEN claimed_by = $2 THEN now() + make_interval(secs => $3) \
                         ELSE claimed_until END \
                     WHERE event_id = $1"
                ),
                &[&event_id, &self.claimant(), &CLAIM_LEASE.as_secs_f64()],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    async fn failed(&self, event_id: &str, reason: &str) -> Result<(), StoreError> {
        // The claimant keeps the event (renewed) and retries it after its own backoff.
        let client = self.client().await?;
        client
            .execute(
                "UPDATE events SET attempts = attempts + 1, last_error = $2, \
                 claimed_until = CASE WHEN claimed_by = $3 \
                     THEN now() + make_interval(secs => $4) ELSE claimed_until END \
                 WHERE event_id = $1",
                &[
                    &event_id,
                    &reason,
                    &self.claimant(),
                    &CLAIM_LEASE.as_secs_f64(),
                ],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }
}
