//! The web console in a real browser: runs the pytest + Playwright suite in `tests/browser/`
//! against this build's `vigil` binary, with Debian's chromium (installed by
//! `scripts/browser-deps.sh`, which `make test` runs first).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use std::path::Path;
use std::process::Command;

const INSTALL: &str = "scripts/browser-deps.sh (or `make browser-deps`)";

#[test]
fn the_console_works_in_chromium() {
    let root = common::root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: install the browser test tools with {INSTALL}",
        python.display()
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: install it with {INSTALL}"
    );
    let tools = Command::new(&python)
        .args(["-c", "import playwright, pytest"])
        .status()
        .expect("python runs");
    assert!(
        tools.success(),
        "Playwright or pytest is missing from .venv: install them with {INSTALL}"
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/browser",
        ])
        .current_dir(&root)
        .env("VIGIL_BIN", env!("CARGO_BIN_EXE_vigil"))
        .status()
        .expect("pytest runs");
    assert!(
        status.success(),
        "the console's browser tests failed (screenshots in target/console-screenshots/)"
    );
}
