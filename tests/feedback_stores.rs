//! The feedback store's contract, checked through the `FeedbackStore` trait against both
//! implementations (SQLite, and PostgreSQL on a real server): logged rows and repeats, labels
//! accepted once with events at each crossing, expiry by time then by the row cap within the
//! limit, settings and labels persisting. PostgreSQL also as several replicas at once: labels
//! from 3 stores fire exactly one event per `every_labels`, a label sent twice at once is
//! accepted once, and a pending event is claimed by one replica at a time.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::postgres::Postgres;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use vigil::store::feedback::{
    Channel, LabelOutcome, LabelWrite, LoggedPrediction, LoggedRow, RetrainSettings, RowKey,
    ServedRow, ShadowedRow, StoredEvent, Trigger, Truth, VersionPrediction,
};
use vigil::store::{FeedbackStore, PostgresStore, SqliteFeedbackStore};

/// Where the checks' stores live: one directory or one server, a fresh store (file or
/// database) per name.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    fn postgres() -> Backend {
        Backend::Postgres(Postgres::start())
    }

    /// The URL of database `name` (created on first use).
    fn database(pg: &Postgres, name: &str) -> String {
        let exists = pg.sql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{name}'"
        ));
        if exists.is_empty() {
            pg.sql(&format!("CREATE DATABASE {name}"));
        }
        format!("postgres://vigil@127.0.0.1:{}/{name}", pg.port)
    }

    /// The store called `name`: new on first use, the same data when opened again.
    async fn open(&self, name: &str) -> Box<dyn FeedbackStore> {
        match self {
            Backend::Sqlite(base) => {
                let dir = base.path().join(name);
                std::fs::create_dir_all(&dir).expect("store directory");
                Box::new(SqliteFeedbackStore::open(&dir).await.expect("open"))
            }
            Backend::Postgres(pg) => Box::new(
                PostgresStore::connect(&common::postgres::settings(Backend::database(pg, name)))
                    .await
                    .expect("connect"),
            ),
        }
    }
}

fn served(id: &str, row: u32, version: &str, class: u32, shadows: &[&str]) -> ServedRow {
    ServedRow {
        model: Arc::from("iris"),
        request_id: Arc::from(id),
        row,
        version: Arc::from(version),
        direct: false,
        time_ms: 1_000 + i64::from(row),
        input: format!("[{row}.5,1.0]"),
        prediction: LoggedPrediction {
            class: Some(class),
            confidence: Some(0.75),
            value: None,
        },
        shadows: shadows.iter().map(|s| Arc::from(*s)).collect(),
    }
}

fn shadowed(id: &str, row: u32, version: &str, class: Option<u32>) -> ShadowedRow {
    ShadowedRow {
        model: Arc::from("iris"),
        request_id: Arc::from(id),
        row,
        version: Arc::from(version),
        time_ms: 2_000,
        prediction: LoggedPrediction {
            class,
            confidence: class.map(|_| 0.5),
            value: None,
        },
    }
}

/// `append` with the vectors the checks build.
async fn append(
    store: &(impl FeedbackStore + ?Sized),
    served: Vec<ServedRow>,
    shadowed: Vec<ShadowedRow>,
) -> Result<BTreeMap<String, u64>, vigil::store::StoreError> {
    store.append(served.into(), shadowed.into()).await
}

fn key(id: &str, row: u32) -> RowKey {
    RowKey {
        model: "iris".into(),
        request_id: id.into(),
        row,
    }
}

fn trigger(every_labels: u64) -> BTreeMap<String, Trigger> {
    BTreeMap::from([(
        "iris".to_string(),
        Trigger {
            every_labels,
            champion: Some("3".into()),
            exports: PathBuf::from("/state/exports/iris"),
            command: true,
            webhook: false,
        },
    )])
}

fn label(id: &str, row: u32, class: u32, replace: bool, logged: &LoggedRow) -> LabelWrite {
    LabelWrite {
        key: key(id, row),
        truth: Truth::Class(class),
        replace,
        time_ms: 5_000,
        row: logged.clone(),
    }
}

/// Logs rows `0..count` of request `id` and reads them back.
async fn logged(store: &dyn FeedbackStore, id: &str, count: u32) -> Vec<LoggedRow> {
    let rows: Vec<ServedRow> = (0..count).map(|r| served(id, r, "3", 0, &[])).collect();
    append(store, rows, vec![]).await.expect("append");
    let keys: Vec<RowKey> = (0..count).map(|r| key(id, r)).collect();
    store
        .rows(&keys)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.expect("logged"))
        .collect()
}

/// Which of rows `0..count` of request `id` are still logged.
async fn kept(store: &dyn FeedbackStore, id: &str, count: u32) -> Vec<u32> {
    let keys: Vec<RowKey> = (0..count).map(|r| key(id, r)).collect();
    store
        .rows(&keys)
        .await
        .expect("rows")
        .iter()
        .zip(0..)
        .filter_map(|(row, index)| row.as_ref().map(|_| index))
        .collect()
}

fn accepted(outcomes: &[LabelOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, LabelOutcome::Accepted { .. }))
        .count()
}

async fn check_logged_rows_come_back_with_their_shadows_and_repeats_keep_the_first(
    store: &dyn FeedbackStore,
) {
    let repeated = append(
        store,
        vec![
            served("r1", 0, "3", 2, &["2", "10"]),
            served("r1", 1, "3", 0, &["2"]),
        ],
        vec![
            shadowed("r1", 0, "2", Some(1)),
            shadowed("r1", 0, "10", None),
        ],
    )
    .await
    .expect("append");
    assert!(repeated.is_empty(), "{repeated:?}");
    // The same id again (another version answered): the first record stays, the repeat counts;
    // a repeated shadow prediction keeps the first too.
    let repeated = append(
        store,
        vec![served("r1", 0, "1", 1, &[])],
        vec![shadowed("r1", 0, "2", Some(0))],
    )
    .await
    .expect("append");
    assert_eq!(repeated, BTreeMap::from([("iris".to_string(), 1)]));
    // Repeats within one batch count too, per model, and the batch's first record stays.
    let mut other = served("q", 0, "7", 1, &[]);
    other.model = Arc::from("wine");
    let repeated = append(
        store,
        vec![
            served("r2", 0, "3", 1, &[]),
            served("r2", 0, "4", 2, &[]),
            other.clone(),
            other,
        ],
        vec![],
    )
    .await
    .expect("append");
    assert_eq!(
        repeated,
        BTreeMap::from([("iris".to_string(), 1), ("wine".to_string(), 1)])
    );
    let rows = store
        .rows(&[
            key("r1", 0),
            key("nope", 0),
            key("r1", 1),
            key("r2", 0),
            key("r1", 0),
        ])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 5);
    let first = rows[0].as_ref().expect("row 0 logged");
    assert_eq!(
        *first,
        LoggedRow {
            time_ms: 1_000,
            direct: false,
            input: "[0.5,1.0]".into(),
            predictions: vec![
                VersionPrediction {
                    version: "3".into(),
                    shadow: false,
                    prediction: LoggedPrediction {
                        class: Some(2),
                        confidence: Some(0.75),
                        value: None,
                    },
                },
                // Shadows in version order (byte order: "10" before "2").
                VersionPrediction {
                    version: "10".into(),
                    shadow: true,
                    prediction: LoggedPrediction::default(),
                },
                VersionPrediction {
                    version: "2".into(),
                    shadow: true,
                    prediction: LoggedPrediction {
                        class: Some(1),
                        confidence: Some(0.5),
                        value: None,
                    },
                },
            ],
            shadows: vec!["2".into(), "10".into()],
        }
    );
    assert_eq!(first.served_version(), "3");
    assert!(first.is_complete());
    assert!(rows[1].is_none());
    let second = rows[2].as_ref().expect("row 1 logged");
    assert!(!second.is_complete(), "shadow 2 has not logged row 1 yet");
    assert_eq!(second.predictions.len(), 1);
    assert_eq!(rows[3].as_ref().expect("r2 logged").served_version(), "3");
    assert_eq!(rows[4], rows[0], "a key asked twice is answered twice");
    assert_eq!(store.rows(&[]).await.expect("no keys"), vec![]);
}

async fn check_labels_are_accepted_once_and_events_fire_at_each_crossing(
    store: &dyn FeedbackStore,
) {
    let logged = logged(store, "r", 7).await;
    let writes: Vec<LabelWrite> = (0..5)
        .map(|r| label("r", r, 1, false, &logged[r as usize]))
        .collect();
    let (outcomes, events) = store.label(&writes, &trigger(3)).await.expect("label");
    assert_eq!(accepted(&outcomes), 5, "{outcomes:?}");
    assert_eq!(events.len(), 1, "5 labels cross 3 once");
    let event = &events[0];
    assert_eq!(event.payload["labels_since_last"], 3);
    assert_eq!(event.payload["labels_total"], 3);
    assert_eq!(event.payload["champion"], "3");
    assert_eq!(event.payload["model"], "iris");
    assert_eq!(event.payload["event_id"], event.event_id.as_str());
    assert_eq!(event.payload["created_at"], "1970-01-01T00:00:05.000Z");
    assert_eq!(
        event.payload["export"],
        format!("/state/exports/iris/{}.jsonl", event.event_id)
    );
    assert!(event.event_id.starts_with("evt_") && event.event_id.len() == 36);
    assert!(event.command_pending && !event.webhook_pending);
    assert_eq!(event.attempts, 0);
    let LabelOutcome::Accepted { seq: third } = outcomes[2] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(
        event.through_seq, third,
        "the label that completed the count"
    );
    let exported = store
        .labels_between("iris", event.after_seq, event.through_seq)
        .await
        .expect("export rows");
    assert_eq!(
        exported.iter().map(|l| l.key.row).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(exported[0].row, logged[0], "the row is kept with its label");
    assert_eq!(exported[0].time_ms, 5_000);

    let again = [
        label("r", 0, 1, false, &logged[0]),
        label("r", 1, 2, false, &logged[1]),
        label("r", 2, 2, true, &logged[2]),
        label("r", 5, 0, false, &logged[5]),
    ];
    let (outcomes, events) = store.label(&again, &trigger(3)).await.expect("label");
    assert_eq!(outcomes[0], LabelOutcome::Duplicate);
    assert_eq!(
        outcomes[1],
        LabelOutcome::Conflict {
            stored: Truth::Class(1)
        }
    );
    assert_eq!(
        outcomes[2],
        LabelOutcome::Replaced {
            seq: third,
            previous: Truth::Class(1),
        }
    );
    assert!(matches!(outcomes[3], LabelOutcome::Accepted { .. }));
    assert_eq!(
        events.len(),
        1,
        "labels 4, 5 and 6 (row 5) cross the second time"
    );
    assert_eq!(events[0].payload["labels_total"], 6);
    assert_eq!(events[0].payload["labels_since_last"], 3);
    assert_eq!(events[0].after_seq, event.through_seq);
    let all = store.labels("iris").await.expect("labels");
    assert_eq!(all.len(), 6);
    assert_eq!(all[2].truth, Truth::Class(2), "the replaced label");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        store
            .labels_between("iris", events[0].after_seq, events[0].through_seq)
            .await
            .expect("second export")
            .len(),
        3
    );
    assert_eq!(store.labels("wine").await.expect("no labels"), vec![]);

    assert_eq!(store.pending_events().await.expect("pending").len(), 2);
    store
        .delivered(&events[0].event_id, Channel::Command)
        .await
        .expect("delivered");
    store
        .failed(&event.event_id, "exit 1")
        .await
        .expect("failed");
    let pending = store.pending_events().await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event_id, event.event_id);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].payload, event.payload);
    assert_eq!(pending[0].through_seq, event.through_seq);
}

async fn check_a_row_labelled_twice_in_one_batch_sees_its_first_label(store: &dyn FeedbackStore) {
    let logged = logged(store, "t", 4).await;
    let batch = [
        label("t", 0, 1, false, &logged[0]),
        label("t", 0, 1, false, &logged[0]),
        label("t", 0, 2, false, &logged[0]),
        label("t", 0, 2, true, &logged[0]),
        label("t", 1, 0, false, &logged[1]),
        label("t", 0, 0, true, &logged[0]),
    ];
    let (outcomes, events) = store.label(&batch, &trigger(2)).await.expect("label");
    let LabelOutcome::Accepted { seq } = outcomes[0] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(
        outcomes[1..],
        [
            LabelOutcome::Duplicate,
            LabelOutcome::Conflict {
                stored: Truth::Class(1)
            },
            LabelOutcome::Replaced {
                seq,
                previous: Truth::Class(1)
            },
            outcomes[4],
            LabelOutcome::Replaced {
                seq,
                previous: Truth::Class(2)
            },
        ]
    );
    assert!(matches!(outcomes[4], LabelOutcome::Accepted { seq: s } if s > seq));
    assert_eq!(events.len(), 1, "two accepted labels reach 2");
    assert_eq!(events[0].payload["labels_total"], 2);
    let all = store.labels("iris").await.expect("labels");
    assert_eq!(
        all.iter().map(|l| (l.key.row, l.truth)).collect::<Vec<_>>(),
        [(0, Truth::Class(0)), (1, Truth::Class(0))]
    );
    // A regression label and a model without a trigger: stored, no event.
    let mut value = label("t", 2, 0, false, &logged[2]);
    value.truth = Truth::Value(-1.25e-3);
    let mut untriggered = label("t", 3, 0, false, &logged[3]);
    untriggered.key.model = "wine".into();
    let (outcomes, events) = store
        .label(&[value, untriggered], &BTreeMap::new())
        .await
        .expect("label");
    assert_eq!(accepted(&outcomes), 2);
    assert!(events.is_empty());
    let all = store.labels("iris").await.expect("labels");
    assert_eq!(all[2].truth, Truth::Value(-1.25e-3));
    assert_eq!(store.labels("wine").await.expect("labels").len(), 1);
    assert_eq!(
        store.label(&[], &trigger(1)).await.expect("nothing"),
        (vec![], vec![])
    );
}

async fn check_expiry_removes_old_rows_then_the_oldest_beyond_the_cap(store: &dyn FeedbackStore) {
    let rows: Vec<ServedRow> = (0..10).map(|r| served("x", r, "3", 0, &[])).collect();
    append(store, rows, vec![]).await.expect("append");
    // Rows 0–2 are older than 1003 ms; of the other 7, the cap keeps the newest 4. At most 4
    // rows go per call.
    assert_eq!(store.expire(1_003, 4, 4).await.expect("expire"), 4);
    assert_eq!(store.expire(1_003, 4, 4).await.expect("expire"), 2);
    assert_eq!(store.expire(1_003, 4, 4).await.expect("expire"), 0);
    assert_eq!(kept(store, "x", 10).await, vec![6, 7, 8, 9]);
}

async fn check_the_cap_counts_rows_even_after_repeats(store: &dyn FeedbackStore) {
    let rows = |from: u32, to: u32| -> Vec<ServedRow> {
        (from..to).map(|r| served("g", r, "3", 0, &[])).collect()
    };
    append(store, rows(0, 5), vec![]).await.expect("append");
    let repeated = append(store, rows(0, 5), vec![]).await.expect("repeats");
    assert_eq!(repeated.get("iris"), Some(&5));
    append(store, rows(5, 10), vec![]).await.expect("append");
    append(
        store,
        vec![],
        (0..10).map(|r| shadowed("g", r, "2", Some(0))).collect(),
    )
    .await
    .expect("shadows");
    // Nothing is old; the cap of 4 keeps the 4 newest rows of each table.
    assert_eq!(store.expire(0, 4, 100).await.expect("expire"), 12);
    assert_eq!(store.expire(0, 4, 100).await.expect("expire"), 0);
    assert_eq!(kept(store, "g", 10).await, vec![6, 7, 8, 9]);
    // Everything is old: all goes, `limit` per table and call.
    assert_eq!(store.expire(i64::MAX, 100, 3).await.expect("expire"), 6);
    assert_eq!(store.expire(i64::MAX, 100, 3).await.expect("expire"), 2);
    assert_eq!(store.expire(i64::MAX, 100, 3).await.expect("expire"), 0);
    assert_eq!(kept(store, "g", 10).await, Vec::<u32>::new());
    assert_eq!(store.expire(i64::MAX, 1, 3).await.expect("empty"), 0);
}

fn retrain_settings() -> RetrainSettings {
    RetrainSettings {
        every_labels: 500,
        command: Some(vec!["python".into(), "scripts/retrain.py".into()]),
        webhook: Some("https://example.org/hook".into()),
        secret: Some("s".into()),
    }
}

async fn check_settings_and_labels_are_saved(store: &dyn FeedbackStore) {
    assert!(store.retrain_settings().await.expect("none yet").is_empty());
    let mut first = retrain_settings();
    first.every_labels = 1;
    store
        .set_retrain_settings("iris", &first)
        .await
        .expect("save");
    store
        .set_retrain_settings("iris", &retrain_settings())
        .await
        .expect("save again");
    let logged = logged(store, "p", 1).await;
    store
        .label(&[label("p", 0, 1, false, &logged[0])], &BTreeMap::new())
        .await
        .expect("label");
}

async fn check_settings_and_labels_are_found_again(store: &dyn FeedbackStore) {
    assert_eq!(
        store.retrain_settings().await.expect("settings"),
        BTreeMap::from([("iris".to_string(), retrain_settings())])
    );
    let labels = store.labels("iris").await.expect("labels");
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0].truth, Truth::Class(1));
    assert_eq!(kept(store, "p", 1).await, vec![0]);
}

/// Every check, each on a store of its own.
async fn run_every_check(backend: &Backend) {
    check_logged_rows_come_back_with_their_shadows_and_repeats_keep_the_first(
        &*backend.open("logged_rows").await,
    )
    .await;
    check_labels_are_accepted_once_and_events_fire_at_each_crossing(&*backend.open("labels").await)
        .await;
    check_a_row_labelled_twice_in_one_batch_sees_its_first_label(&*backend.open("one_batch").await)
        .await;
    check_expiry_removes_old_rows_then_the_oldest_beyond_the_cap(&*backend.open("expiry").await)
        .await;
    check_the_cap_counts_rows_even_after_repeats(&*backend.open("cap").await).await;
    {
        let store = backend.open("persisting").await;
        check_settings_and_labels_are_saved(&*store).await;
    }
    check_settings_and_labels_are_found_again(&*backend.open("persisting").await).await;
}

#[tokio::test]
async fn the_sqlite_store_meets_the_contract() {
    run_every_check(&Backend::sqlite()).await;
}

#[tokio::test]
async fn the_postgres_store_meets_the_contract() {
    run_every_check(&Backend::postgres()).await;
}

/// `count` stores on database `name`, as `count` replicas.
async fn replicas(pg: &Postgres, name: &str, count: usize) -> Vec<PostgresStore> {
    let url = Backend::database(pg, name);
    let mut stores = Vec::new();
    for _ in 0..count {
        stores.push(
            PostgresStore::connect(&common::postgres::settings(url.clone()))
                .await
                .expect("replica connects"),
        );
    }
    stores
}

/// 8 clients send 125 labels each (in batches of 1 to 4) through 3 replicas at once, for 1,000
/// distinct rows, with an event every 500: exactly 2 events, each exporting 500 labels.
async fn check_labels_from_three_replicas_fire_exactly_one_event_per_count(pg: &Postgres) {
    let stores = replicas(pg, "three_replicas", 3).await;
    let rows: Vec<ServedRow> = (0..1_000).map(|r| served("c", r, "3", 0, &[])).collect();
    append(&stores[0], rows, vec![]).await.expect("append");
    let keys: Vec<RowKey> = (0..1_000).map(|r| key("c", r)).collect();
    let logged: Vec<LoggedRow> = stores[1]
        .rows(&keys)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.expect("logged"))
        .collect();
    let logged = Arc::new(logged);
    let mut clients = Vec::new();
    for client in 0..8_u32 {
        let store = stores[client as usize % 3].clone();
        let logged = Arc::clone(&logged);
        clients.push(tokio::spawn(async move {
            let mine: Vec<u32> = (0..125).map(|i| i * 8 + client).collect();
            let mut outcomes = Vec::new();
            let mut events = Vec::new();
            let mut size = 1;
            for chunk in mine.chunks(4) {
                for batch in chunk.chunks(size) {
                    let writes: Vec<LabelWrite> = batch
                        .iter()
                        .map(|&r| label("c", r, r % 3, false, &logged[r as usize]))
                        .collect();
                    let (o, e) = store.label(&writes, &trigger(500)).await.expect("label");
                    outcomes.extend(o);
                    events.extend(e);
                }
                size = size % 4 + 1;
            }
            (outcomes, events)
        }));
    }
    let mut outcomes = Vec::new();
    let mut events: Vec<StoredEvent> = Vec::new();
    for client in clients {
        let (o, e) = client.await.expect("client");
        outcomes.extend(o);
        events.extend(e);
    }
    assert_eq!(accepted(&outcomes), 1_000, "every label accepted once");
    assert_eq!(events.len(), 2, "{events:?}");
    events.sort_by_key(|e| e.through_seq);
    assert_eq!(events[0].after_seq, 0);
    assert_eq!(events[1].after_seq, events[0].through_seq);
    assert_ne!(events[0].event_id, events[1].event_id);
    for (event, total) in events.iter().zip([500, 1_000]) {
        assert_eq!(event.payload["labels_since_last"], 500);
        assert_eq!(event.payload["labels_total"], total);
        let exported = stores[2]
            .labels_between("iris", event.after_seq, event.through_seq)
            .await
            .expect("export");
        assert_eq!(exported.len(), 500, "an event exports exactly its labels");
    }
    let all = stores[2].labels("iris").await.expect("labels");
    assert_eq!(all.len(), 1_000);
    assert_eq!(
        all.iter().map(|l| l.key.row).collect::<BTreeSet<_>>().len(),
        1_000
    );
    assert_eq!(
        all.iter()
            .filter(|l| l.seq <= events[1].through_seq)
            .count(),
        1_000,
        "the last label completed the second count"
    );
    let stored = pg_events(&stores[0]).await;
    assert_eq!(
        stored,
        events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<BTreeSet<_>>()
    );
}

/// The ids of every pending event (claimed by `store` now).
async fn pg_events(store: &PostgresStore) -> BTreeSet<String> {
    store
        .pending_events()
        .await
        .expect("pending")
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

/// The same label sent at once through two replicas is accepted once (one event with a trigger
/// of 1); two different labels of one row at once: one accepted, the other a conflict.
async fn check_a_label_sent_twice_at_once_is_accepted_once(pg: &Postgres) {
    let stores = replicas(pg, "twice_at_once", 2).await;
    let same = logged(&stores[0], "d", 20).await;
    for r in 0..20 {
        let write = label("d", r, 1, false, &same[r as usize]);
        let every = trigger(1);
        let (a, b) = tokio::join!(
            stores[0].label(std::slice::from_ref(&write), &every),
            stores[1].label(std::slice::from_ref(&write), &every),
        );
        let (a, b) = (a.expect("label through A"), b.expect("label through B"));
        let mut outcomes = [a.0[0], b.0[0]];
        outcomes.sort_by_key(|o| matches!(o, LabelOutcome::Duplicate));
        assert!(
            matches!(
                outcomes,
                [LabelOutcome::Accepted { .. }, LabelOutcome::Duplicate]
            ),
            "row {r}: {outcomes:?}"
        );
        assert_eq!(a.1.len() + b.1.len(), 1, "row {r}: one event");
    }
    let more = logged(&stores[0], "e", 20).await;
    for r in 0..20 {
        let (one, two) = (
            [label("e", r, 1, false, &more[r as usize])],
            [label("e", r, 2, false, &more[r as usize])],
        );
        let none = BTreeMap::new();
        let (a, b) = tokio::join!(stores[0].label(&one, &none), stores[1].label(&two, &none));
        let (a, b) = (a.expect("A").0[0], b.expect("B").0[0]);
        let ok = matches!(
            (a, b),
            (
                LabelOutcome::Accepted { .. },
                LabelOutcome::Conflict {
                    stored: Truth::Class(1)
                }
            ) | (
                LabelOutcome::Conflict {
                    stored: Truth::Class(2)
                },
                LabelOutcome::Accepted { .. }
            )
        );
        assert!(ok, "row {r}: {a:?} {b:?}");
    }
    assert_eq!(stores[1].labels("iris").await.expect("labels").len(), 40);
}

/// Pending events are claimed: two replicas asking at once get disjoint sets; each keeps its
/// own (also after a failure) until its claim lapses, then another takes the event over.
async fn check_pending_events_are_claimed_by_one_replica(pg: &Postgres) {
    // The `vigil` database, so that `pg.sql` reaches it.
    let stores = replicas(pg, "vigil", 2).await;
    let (a, b) = (&stores[0], &stores[1]);
    let logged = logged(a, "f", 6).await;
    let writes: Vec<LabelWrite> = (0..6)
        .map(|r| label("f", r, 1, false, &logged[r as usize]))
        .collect();
    let (_, events) = a.label(&writes, &trigger(1)).await.expect("label");
    assert_eq!(events.len(), 6);
    let all: BTreeSet<String> = events.iter().map(|e| e.event_id.clone()).collect();

    let (from_a, from_b) = tokio::join!(pg_events(a), pg_events(b));
    assert!(from_a.is_disjoint(&from_b), "{from_a:?} {from_b:?}");
    assert_eq!(&from_a | &from_b, all);
    // Each replica keeps its own; asking again renews them.
    assert_eq!(pg_events(a).await, from_a);
    assert_eq!(pg_events(b).await, from_b);
    let (mine, theirs) = if from_a.is_empty() {
        (b, &from_b)
    } else {
        (a, &from_a)
    };
    let other = if std::ptr::eq(mine, a) { b } else { a };
    let mut theirs = theirs.iter();
    let failing = theirs.next().expect("an event").clone();

    // A failure keeps the event with its claimant, which retries it.
    mine.failed(&failing, "exit 1").await.expect("failed");
    assert!(!pg_events(other).await.contains(&failing));
    let again = mine.pending_events().await.expect("pending");
    let retried = again
        .iter()
        .find(|e| e.event_id == failing)
        .expect("still claimed");
    assert_eq!(retried.attempts, 1);

    // A claim that lapses (its replica stopped) is taken over.
    pg.sql(&format!(
        "UPDATE events SET claimed_until = now() - interval '1 second' \
         WHERE event_id = '{failing}'"
    ));
    assert!(pg_events(other).await.contains(&failing));
    assert!(!pg_events(mine).await.contains(&failing));

    // Delivered on every channel: pending for no one.
    other
        .delivered(&failing, Channel::Command)
        .await
        .expect("delivered");
    assert!(!pg_events(other).await.contains(&failing));
    assert!(!pg_events(mine).await.contains(&failing));
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM events WHERE event_id = '{failing}' AND claimed_by IS NULL"
        )),
        "1"
    );
    // A store's clone is the same replica: it sees the store's claims.
    if let Some(event) = theirs.next() {
        assert!(pg_events(&mine.clone()).await.contains(event));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_is_safe_with_several_replicas() {
    let pg = Postgres::start();
    check_labels_from_three_replicas_fire_exactly_one_event_per_count(&pg).await;
    check_a_label_sent_twice_at_once_is_accepted_once(&pg).await;
    check_pending_events_are_claimed_by_one_replica(&pg).await;
}
