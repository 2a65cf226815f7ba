//! What one request costs the gateway itself, in-process (no sockets): heap allocations and bytes
//! per request (a counting global allocator), and time per request minus ONNX Runtime's own time
//! for the same call. The gateway runs as users run it: monitoring and the inference log on
//! (state in a temporary directory), one single-row v2 JSON request to the iris logistic
//! regression (version 1) at a time, on a current-thread runtime (the log writer's batches are
//! included in the time).
//!
//! Run with `cargo bench --bench request_cost`. Prints one `RESULT` line.

#![allow(
    unsafe_code,
    reason = "a counting global allocator must implement the unsafe GlobalAlloc trait"
)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tower::ServiceExt;
use vigil::api::{Access, AppState, router};
use vigil::config::Config;
use vigil::engine::{Tensor, TensorData};

/// Counts every allocation (and reallocation) and the bytes asked for, on the allocator the
/// `vigil` binary uses.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to mimalloc; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const URI: &str = "/v2/models/iris/versions/1/infer";
const BODY: &str = r#"{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
/// Requests before counting, and requests counted (`REQUEST_COST_REQUESTS` overrides the
/// latter, e.g. for a run under a heap profiler).
const WARM_UP: u64 = 20_000;
const MEASURED: u64 = 200_000;

fn measured() -> u64 {
    std::env::var("REQUEST_COST_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(MEASURED)
}

async fn infer(app: &Router) -> StatusCode {
    let Ok(request) = Request::post(URI)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(Bytes::from_static(BODY.as_bytes())))
    else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(response) = app.clone().oneshot(request).await;
    let status = response.status();
    let _ = black_box(response.into_body().collect().await);
    status
}

#[expect(
    clippy::expect_used,
    reason = "a bench cannot measure anything without a runtime, ONNX Runtime and the iris model"
)]
fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let state = tempfile::tempdir().expect("state directory");
    let mut config = Config::for_models(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    config.state = state.path().to_path_buf();
    let loaded = runtime
        .block_on(vigil::load(&config, true))
        .expect("load ONNX Runtime, the repository and the inference log");
    let registry = Arc::new(loaded.registry);
    let feedback = loaded.feedback.map(|(feedback, _)| feedback);
    assert!(feedback.is_some(), "the inference log is on");
    let app = router(AppState::new(
        Arc::clone(&registry),
        Access {
            max_body_bytes: config.max_body_bytes,
            ..Access::default()
        },
        feedback,
        None,
        None,
    ));
    let measured = measured();
    let warm_up = WARM_UP.min(measured);
    let (total, allocations, bytes) = runtime.block_on(async {
        for _ in 0..warm_up {
            assert_eq!(infer(&app).await, StatusCode::OK);
        }
        let (a0, b0) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        let started = Instant::now();
        for _ in 0..measured {
            black_box(infer(&app).await);
        }
        let total = started.elapsed();
        (
            total,
            ALLOCATIONS.load(Ordering::Relaxed) - a0,
            BYTES.load(Ordering::Relaxed) - b0,
        )
    });
    // ONNX Runtime alone: the same one-row call on the same version, no gateway around it.
    let version = registry
        .route("iris", Some("1"))
        .expect("iris version 1")
        .version;
    let input = Tensor::new(vec![1, 4], TensorData::F32(vec![5.1, 3.5, 1.4, 0.2])).expect("tensor");
    let inputs = [input];
    for _ in 0..warm_up {
        black_box(version.run(&inputs).expect("runs"));
    }
    let started = Instant::now();
    for _ in 0..measured {
        black_box(version.run(black_box(&inputs)).expect("runs"));
    }
    let engine = started.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / measured as f64;
    println!(
        "{measured} single-row requests (monitoring and inference log on): {:.2} µs per request, \
         ONNX Runtime alone {:.2} µs, gateway {:.2} µs; {:.1} allocations and {:.0} bytes per request",
        per(total),
        per(engine),
        per(total) - per(engine),
        allocations as f64 / measured as f64,
        bytes as f64 / measured as f64,
    );
    println!(
        "RESULT request_us={:.2} engine_us={:.2} gateway_us={:.2} allocations={:.1} bytes={:.0}",
        per(total),
        per(engine),
        per(total) - per(engine),
        allocations as f64 / measured as f64,
        bytes as f64 / measured as f64,
    );
}
