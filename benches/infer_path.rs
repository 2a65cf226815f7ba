//! In-process inference path, no network: one v2 JSON request to the iris model (version 1)
//! through the axum router (`tower::ServiceExt::oneshot`), body decode → registry → ONNX
//! Runtime → JSON encode, response body collected.
//!
//! Run with `cargo bench --bench infer_path`. The ONNX Runtime library is found the same way
//! the gateway finds it (`ORT_DYLIB_PATH`, then `./.venv`, then `python3`).
//!
//! Bench ids:
//! - `v2_json_iris_v1_1row`: one row of four features.
//! - `v2_json_iris_v1_32rows`: 32 rows in one request.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use criterion::{Criterion, criterion_main};
use http_body_util::BodyExt;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use vigil::api::{Access, AppState, router};
use vigil::config::Config;

const URI: &str = "/v2/models/iris/versions/1/infer";

/// Iris measurements cycled through to build multi-row bodies.
const ROWS: [[f32; 4]; 4] = [
    [5.1, 3.5, 1.4, 0.2],
    [6.2, 2.9, 4.3, 1.3],
    [7.7, 3.0, 6.1, 2.3],
    [5.8, 2.7, 5.1, 1.9],
];

/// A v2 JSON request body with `rows` rows of `float_input`.
fn body(rows: usize) -> Bytes {
    let data = (0..rows)
        .map(|i| {
            let r = ROWS[i % ROWS.len()];
            format!("[{},{},{},{}]", r[0], r[1], r[2], r[3])
        })
        .collect::<Vec<_>>()
        .join(",");
    Bytes::from(format!(
        r#"{{"inputs":[{{"name":"float_input","shape":[{rows},4],"datatype":"FP32","data":[{data}]}}]}}"#
    ))
}

/// Sends `body` through `app` and returns the status and the collected response body.
async fn infer(app: &Router, body: &Bytes) -> (StatusCode, Bytes) {
    let request = Request::post(URI)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.clone()));
    let Ok(request) = request else {
        return (StatusCode::BAD_REQUEST, Bytes::new());
    };
    let Ok(response) = app.clone().oneshot(request).await;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    (status, bytes)
}

#[expect(
    clippy::expect_used,
    reason = "a bench cannot measure anything without a runtime, ONNX Runtime and the iris model"
)]
fn infer_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = Config::for_models(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    let loaded = runtime
        .block_on(vigil::load(&config, false))
        .expect("load ONNX Runtime and the model repository");
    let (engines, registry) = (loaded.engines, loaded.registry);
    let app = router(AppState::new(
        Arc::new(registry),
        Access {
            max_body_bytes: config.max_body_bytes,
            ..Access::default()
        },
        None,
        None,
        None,
    ));

    for (id, rows) in [("v2_json_iris_v1_1row", 1), ("v2_json_iris_v1_32rows", 32)] {
        let body = body(rows);
        let (status, answer) = runtime.block_on(infer(&app, &body));
        assert_eq!(
            status,
            StatusCode::OK,
            "{id}: {}",
            String::from_utf8_lossy(&answer)
        );
        c.bench_function(id, |b| {
            b.iter_custom(|iters| {
                // One `block_on` per sample, not per iteration, so the runtime's entry cost is
                // not counted in the per-request time.
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(infer(&app, black_box(&body)).await);
                    }
                    start.elapsed()
                })
            });
        });
    }
    drop(app);
    drop(engines);
}

fn criterion() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(2))
}

/// The bench group. A private module: `criterion_group!` expands to an undocumented `pub fn`.
mod group {
    criterion::criterion_group! {
        name = benches;
        config = super::criterion();
        targets = super::infer_path
    }
}

criterion_main!(group::benches);
