//! The `vigil` binary itself: `check`, `inspect`, start-up errors (one line, exit 1, no panic),
//! and graceful shutdown on SIGTERM with a request in flight.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::process::{ServingProcess, vigil};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

#[test]
fn check_prints_every_version_and_succeeds() {
    let output = vigil()
        .args(["check", "models"])
        .output()
        .expect("vigil runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("MODEL"), "{stdout}");
    assert_eq!(lines.len(), 8, "header + 7 versions:\n{stdout}");
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l.trim_end().ends_with("ready")),
        "{stdout}"
    );
    assert!(stdout.contains("float_input FP32 [-1,4]"), "{stdout}");
    assert!(stdout.contains("accuracy=0.933333"), "{stdout}");
    assert!(stdout.contains("r2="), "{stdout}");
}

#[test]
fn check_fails_when_a_version_does_not_load() {
    let repo = tempfile::tempdir().expect("tempdir");
    common::copy_version(repo.path(), "iris", "1", "");
    let broken = repo.path().join("iris/2");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(broken.join("model.toml"), "task = \"classification\"\n").expect("write");
    std::fs::write(broken.join("model.onnx"), b"garbage").expect("write");
    let output = vigil()
        .arg("check")
        .arg(repo.path())
        .output()
        .expect("vigil runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("iris") && l.trim_end().ends_with("ready"))
    );
}

#[test]
fn inspect_prints_the_signature() {
    let output = vigil()
        .args(["inspect", "models/breast_cancer/2/model.onnx"])
        .output()
        .expect("vigil runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("input   float_input    FP32      [-1, 30]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("output  probabilities  FP32      [-1, 2]"),
        "{stdout}"
    );
}

#[test]
fn a_missing_runtime_is_a_one_line_error_not_a_panic() {
    let output = vigil()
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--ort-lib",
            "/nonexistent/libonnxruntime.so",
        ])
        .output()
        .expect("vigil runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().expect("an error line");
    assert!(
        last.starts_with("vigil: cannot load ONNX Runtime from /nonexistent"),
        "{stderr}"
    );
    assert!(
        last.contains("onnxruntime==1.32.0"),
        "says how to install it: {last}"
    );

    let not_a_library = common::root().join("models/iris/1/model.toml");
    let output = vigil()
        .args(["serve", "--addr", "127.0.0.1:0", "--ort-lib"])
        .arg(&not_a_library)
        .output()
        .expect("vigil runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("cannot load ONNX Runtime"), "{stderr}");
}

#[test]
fn invalid_configuration_lists_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "max_batch_rows = 0\nlisten = \"x\"\n").expect("write");
    let output = vigil()
        .args(["serve", "--models", "/nonexistent/models", "--config"])
        .arg(&config)
        .output()
        .expect("vigil runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    assert!(stderr.contains("listen"), "unknown key named: {stderr}");
    assert!(stderr.contains("/nonexistent/models"), "{stderr}");
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut gateway = ServingProcess::start(&["--state".as_ref(), state.path().as_os_str()]);
    let log = gateway.log();
    let address = gateway.address.clone();
    assert!(
        log.contains("ONNX Runtime loaded") && log.contains("1.32.0"),
        "{log}"
    );
    assert_eq!(log.matches("version loaded").count(), 7, "{log}");

    // Send the headers and half the body, then ask the gateway to stop.
    let body = br#"{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "POST /v2/models/iris/versions/1/infer HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("headers sent");
    stream.write_all(&body[..20]).expect("half the body");
    stream.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(200));
    let pid = gateway.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(&body[20..]).expect("rest of the body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"model_version\":\"1\""), "{response}");

    let status = gateway.child.wait().expect("vigil exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        TcpStream::connect(&address).is_err(),
        "no longer accepting connections"
    );
}
