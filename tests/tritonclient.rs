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

#[tokio::test]
async fn tritonclient_works_unchanged() {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup-dev` to install the Python test clients",
        python.display()
    );
    let gateway = TestGateway::start(&models_dir()).await;
    let script = root().join("tests/clients/tritonclient_check.py");
    let fixtures = root().join("tests/fixtures/expected");
    let address = gateway.addr.to_string();
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&address)
        .arg(&fixtures)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("14 inferences matched"), "{stdout}");
    gateway.stop().await;
}

/// The gRPC client: inference against every fixture, errors as status codes, and the repository
/// calls with and without the admin token, on a gateway with the token and one without.
#[tokio::test]
async fn tritonclient_grpc_works_unchanged() {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup-dev` to install the Python test clients",
        python.display()
    );
    let gateway = TestGateway::start_with(common::admin::admin_config(&models_dir())).await;
    let no_admin = TestGateway::start_with(Config::for_models(models_dir())).await;
    let address = gateway.grpc_addr.expect("gRPC listener").to_string();
    let no_admin_address = no_admin.grpc_addr.expect("gRPC listener").to_string();
    let token = gateway.admin_token.clone().expect("admin token");
    assert!(no_admin.admin_token.is_none());
    let script = root().join("tests/clients/tritonclient_grpc_check.py");
    let fixtures = root().join("tests/fixtures/expected");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&address)
        .arg(&fixtures)
        .arg(&token)
        .arg(&no_admin_address)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient gRPC check failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("tritonclient grpc: 14 inferences matched"),
        "{stdout}"
    );
    no_admin.stop().await;
    gateway.stop().await;
}
