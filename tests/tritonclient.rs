//! tritonclient's HTTP client, unchanged and with its defaults (binary tensor extension), against a
//! real gateway: every bundled version answers as the onnxruntime fixtures say. Needs the pinned
//! Python tooling in `.venv` (`make setup-dev`).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, models_dir, root};

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
