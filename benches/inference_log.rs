//! The inference log's costs: writing a batch of 1,000 answered rows to the embedded store (one
//! transaction, what the log's writer does off the request path), and queueing one answered
//! request on the request path.
//!
//! Run with `cargo bench --bench inference_log`.

#![allow(
    clippy::expect_used,
    reason = "a benchmark fails loudly on a broken setup"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Duration;
use vigil::engine::{Tensor, TensorData};
use vigil::feedback::log::{InferenceLog, LogSettings, RowPredictions, Served};
use vigil::metrics::Metrics;
use vigil::store::feedback::{LoggedPrediction, ServedRow};
use vigil::store::{FeedbackStore, SqliteFeedbackStore};

const ROWS: usize = 1_000;

/// A batch of answered rows with ids unique to `batch`.
fn rows(batch: usize) -> Vec<ServedRow> {
    let (model, version): (Arc<str>, Arc<str>) = (Arc::from("iris"), Arc::from("1"));
    (0..ROWS)
        .map(|row| ServedRow {
            model: Arc::clone(&model),
            request_id: Arc::from(format!("{batch:08x}-{row:x}")),
            row: 0,
            version: Arc::clone(&version),
            direct: true,
            time_ms: 1_795_996_800_000,
            input: "[5.1,3.5,1.4,0.2]".to_string(),
            prediction: LoggedPrediction {
                class: Some(0),
                confidence: Some(0.97),
                value: None,
            },
            shadows: Vec::new(),
        })
        .collect()
}

fn inference_log(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = runtime
        .block_on(SqliteFeedbackStore::open(dir.path()))
        .expect("store");
    let mut batch = 0;
    c.bench_function("append_1000_served_rows", |b| {
        b.iter_batched(
            || {
                batch += 1;
                rows(batch)
            },
            |rows| {
                runtime
                    .block_on(store.append(rows.into(), Vec::new().into()))
                    .expect("append")
            },
            criterion::BatchSize::LargeInput,
        )
    });

    // Queueing on the request path: the writer runs on the runtime's own thread meanwhile.
    let log = runtime.block_on(async {
        InferenceLog::start(
            Arc::new(store.clone()) as Arc<dyn FeedbackStore>,
            LogSettings {
                queue: 1 << 20,
                ttl: Duration::from_secs(3600),
                max_rows: 100_000_000,
            },
            Arc::new(Metrics::new()),
        )
    });
    let (model, version): (Arc<str>, Arc<str>) = (Arc::from("iris"), Arc::from("1"));
    let mut request = 0u64;
    c.bench_function("queue_one_answered_request", |b| {
        b.iter(|| {
            request += 1;
            let input =
                Tensor::new(vec![1, 4], TensorData::F32(vec![5.1, 3.5, 1.4, 0.2])).expect("tensor");
            log.served(Served {
                model: Arc::clone(&model),
                version: Arc::clone(&version),
                request_id: Arc::from(format!("q-{request:x}")),
                direct: true,
                inputs: vec![input],
                rows: 1,
                predictions: RowPredictions {
                    classes: Some(vec![0]),
                    values: Some(vec![0.97]),
                    classifier: true,
                },
                shadows: Vec::new(),
            });
        })
    });
    runtime.block_on(log.close());
}

mod group {
    use super::*;
    criterion_group!(benches, inference_log);
}
criterion_main!(group::benches);
