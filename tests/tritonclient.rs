//! tritonclient's HTTP and gRPC clients, unchanged and with their defaults (binary tensor
//! extension; raw tensor contents), against a real gateway: every bundled version answers as the
//! onnxruntime fixtures say. Needs the pinned Python tooling in `.venv` (`make setup-dev`).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, models_dir, root};
use vigil::config::Config;

/// Runs `tests/clients/{script}` with `args` in the pinned `.venv` and returns its stdout; fails
/// with the script's output when it fails.
async fn run_client(script: &str, args: &[String]) -> String {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup-dev` to install the Python test clients",
        python.display()
    );
    let output = tokio::process::Command::new(&python)
        .arg(root().join("tests/clients").join(script))
        .args(args)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

fn fixtures() -> String {
    root().join("tests/fixtures/expected").display().to_string()
}

#[tokio::test]
async fn tritonclient_works_unchanged() {
    let gateway = TestGateway::start(&models_dir()).await;
    let stdout = run_client(
        "tritonclient_check.py",
        &[gateway.addr.to_string(), fixtures()],
    )
    .await;
    assert!(stdout.contains("14 inferences matched"), "{stdout}");
    gateway.stop().await;
}

/// The gRPC client: inference against every fixture, errors as status codes, and the repository
/// calls with and without the admin token, on a gateway with the token and one without.
#[tokio::test]
async fn tritonclient_grpc_works_unchanged() {
    let gateway = TestGateway::start_with(common::admin::admin_config(&models_dir())).await;
    let no_admin = TestGateway::start_with(Config::for_models(models_dir())).await;
    let address = gateway.grpc_addr.expect("gRPC listener").to_string();
    let no_admin_address = no_admin.grpc_addr.expect("gRPC listener").to_string();
    let token = gateway.admin_token.clone().expect("admin token");
    assert!(no_admin.admin_token.is_none());
    let stdout = run_client(
        "tritonclient_grpc_check.py",
        &[address, fixtures(), token, no_admin_address],
    )
    .await;
    assert!(
        stdout.contains("tritonclient grpc: 14 inferences matched"),
        "{stdout}"
    );
    no_admin.stop().await;
    gateway.stop().await;
}
