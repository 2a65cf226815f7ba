use super::*;
use std::sync::Arc;

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

fn key(id: &str, row: u32) -> RowKey {
    RowKey {
        model: "iris".into(),
        request_id: id.into(),
        row,
    }
}

async fn store() -> (tempfile::TempDir, SqliteFeedbackStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteFeedbackStore::open(dir.path()).await.expect("open");
    (dir, store)
}

#[tokio::test]
async fn logged_rows_come_back_with_their_shadows_and_repeats_keep_the_first() {
    let (_dir, store) = store().await;
    let repeated = store
        .append(
            vec![
                served("r1", 0, "3", 2, &["2"]),
                served("r1", 1, "3", 0, &["2"]),
            ],
            vec![shadowed("r1", 0, "2", Some(1))],
        )
        .await
        .expect("append");
    assert!(repeated.is_empty());
    // The same id again (another version answered): the first record stays, the repeat counts.
    let repeated = store
        .append(vec![served("r1", 0, "1", 1, &[])], vec![])
        .await
        .expect("append");
    assert_eq!(repeated.get("iris"), Some(&1));
    let rows = store
        .rows(&[key("r1", 0), key("nope", 0), key("r1", 1)])
        .await
        .expect("rows");
    let first = rows[0].as_ref().expect("row 0 logged");
    assert_eq!(first.served_version(), "3");
    assert_eq!(first.input, "[0.5,1.0]");
    assert_eq!(first.shadows, vec!["2"]);
    assert!(first.is_complete());
    assert_eq!(first.predictions.len(), 2);
    assert_eq!(first.predictions[1].version, "2");
    assert!(first.predictions[1].shadow);
    assert_eq!(first.predictions[1].prediction.class, Some(1));
    assert!(rows[1].is_none());
    let second = rows[2].as_ref().expect("row 1 logged");
    assert!(!second.is_complete(), "shadow 2 has not logged row 1 yet");
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

#[tokio::test]
async fn labels_are_accepted_once_and_events_fire_at_each_crossing() {
    let (_dir, store) = store().await;
    let rows: Vec<ServedRow> = (0..7).map(|r| served("r", r, "3", 0, &[])).collect();
    store.append(rows, vec![]).await.expect("append");
    let keys: Vec<RowKey> = (0..7).map(|r| key("r", r)).collect();
    let logged: Vec<LoggedRow> = store
        .rows(&keys)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.expect("logged"))
        .collect();
    let writes: Vec<LabelWrite> = (0..5)
        .map(|r| label("r", r, 1, false, &logged[r as usize]))
        .collect();
    let (outcomes, events) = store.label(&writes, &trigger(3)).await.expect("label");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, LabelOutcome::Accepted { .. })),
        "{outcomes:?}"
    );
    assert_eq!(events.len(), 1, "5 labels cross 3 once");
    let event = &events[0];
    assert_eq!(event.payload["labels_since_last"], 3);
    assert_eq!(event.payload["labels_total"], 3);
    assert_eq!(event.payload["champion"], "3");
    assert_eq!(
        event.payload["export"],
        format!("/state/exports/iris/{}.jsonl", event.event_id)
    );
    let exported = store
        .labels_between("iris", event.after_seq, event.through_seq)
        .await
        .expect("export rows");
    assert_eq!(exported.len(), 3);

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
    assert!(matches!(
        outcomes[2],
        LabelOutcome::Replaced {
            previous: Truth::Class(1),
            ..
        }
    ));
    assert_eq!(
        events.len(),
        1,
        "labels 4, 5 and 6 (row 5) cross the second time"
    );
    assert_eq!(events[0].payload["labels_total"], 6);
    let all = store.labels("iris").await.expect("labels");
    assert_eq!(all.len(), 6);
    assert_eq!(all[2].truth, Truth::Class(2), "the replaced label");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
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
}

#[tokio::test]
async fn expiry_removes_old_rows_then_the_oldest_beyond_the_cap() {
    let (_dir, store) = store().await;
    let rows: Vec<ServedRow> = (0..10).map(|r| served("x", r, "3", 0, &[])).collect();
    store.append(rows, vec![]).await.expect("append");
    // Rows 0–2 are older than 1003 ms; of the other 7, the cap keeps the newest 4. At most 4
    // rows go per call.
    assert_eq!(store.expire(1_003, 4, 4).await.expect("expire"), 4);
    assert_eq!(store.expire(1_003, 4, 4).await.expect("expire"), 2);
    assert_eq!(store.expire(1_003, 4, 4).await.expect("expire"), 0);
    let keys: Vec<RowKey> = (0..10).map(|r| key("x", r)).collect();
    let kept: Vec<u32> = store
        .rows(&keys)
        .await
        .expect("rows")
        .iter()
        .zip(0..)
        .filter_map(|(row, index)| row.as_ref().map(|_| index))
        .collect();
    assert_eq!(kept, vec![6, 7, 8, 9]);
}

#[tokio::test]
async fn retraining_settings_and_labels_persist_across_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = RetrainSettings {
        every_labels: 500,
        command: Some(vec!["python".into(), "scripts/retrain.py".into()]),
        webhook: None,
        secret: Some("s".into()),
    };
    {
        let store = SqliteFeedbackStore::open(dir.path()).await.expect("open");
        store
            .set_retrain_settings("iris", &settings)
            .await
            .expect("save");
        store
            .append(vec![served("p", 0, "3", 0, &[])], vec![])
            .await
            .expect("append");
        let logged = store.rows(&[key("p", 0)]).await.expect("rows")[0]
            .clone()
            .expect("logged");
        store
            .label(&[label("p", 0, 1, false, &logged)], &BTreeMap::new())
            .await
            .expect("label");
    }
    let store = SqliteFeedbackStore::open(dir.path()).await.expect("reopen");
    assert_eq!(
        store
            .retrain_settings()
            .await
            .expect("settings")
            .get("iris"),
        Some(&settings)
    );
    assert_eq!(store.labels("iris").await.expect("labels").len(), 1);
}
