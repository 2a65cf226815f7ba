//! The `vigil admin` command line against a running gateway: reports as tables, changes, and
//! errors as readable messages.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{TOKEN, admin_gateway, report};
use common::{TestGateway, models_dir};
use serde_json::json;

/// Runs `vigil admin --url <gateway> [--token token] args...`.
async fn vigil_admin(
    gateway: &TestGateway,
    token: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .env_remove("VIGIL_URL")
        .env_remove("VIGIL_ADMIN_TOKEN")
        .arg("admin")
        .arg("--url")
        .arg(format!("http://{}", gateway.addr));
    if let Some(token) = token {
        command.arg("--token").arg(token);
    }
    command.args(args);
    tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("vigil admin finishes within 60 s")
        .expect("vigil runs")
}

/// Runs a `vigil admin` command that must succeed; returns its stdout.
async fn vigil_admin_ok(gateway: &TestGateway, args: &[&str]) -> String {
    let output = vigil_admin(gateway, Some(TOKEN), args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "vigil admin {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn admin_command_line_operates_a_running_gateway() {
    let gateway = admin_gateway(&models_dir()).await;

    let table = vigil_admin_ok(&gateway, &["models"]).await;
    let header = table.lines().next().expect("header line");
    for column in ["MODEL", "VERSION", "ROLE", "STATUS", "HIGHLIGHT"] {
        assert!(header.contains(column), "{header}");
    }
    for model in ["breast_cancer", "diabetes", "iris"] {
        assert!(
            table.lines().skip(1).any(|l| l.starts_with(model)),
            "{model} in\n{table}"
        );
        assert!(
            table.contains(&format!("{model}: champion ")),
            "{model} summary in\n{table}"
        );
    }
    let champion_rows: Vec<&str> = table.lines().filter(|l| l.contains("champion  ")).collect();
    assert_eq!(champion_rows.len(), 3, "one champion per model:\n{table}");
    assert!(table.contains("iris: champion 3"), "{table}");
    assert!(table.contains("(best)"), "{table}");

    let one = vigil_admin_ok(&gateway, &["models", "iris"]).await;
    assert!(
        one.lines().skip(1).all(|l| !l.starts_with("diabetes")),
        "{one}"
    );
    assert!(one.contains("iris: champion 3"), "{one}");

    let promoted = vigil_admin_ok(&gateway, &["promote", "iris", "2"]).await;
    assert!(promoted.contains("iris: champion 2"), "{promoted}");
    assert_eq!(report(&gateway, "iris").await["champion"], "2");

    vigil_admin_ok(&gateway, &["threshold", "iris", "0.5"]).await;
    assert_eq!(report(&gateway, "iris").await["threshold"], 0.5);

    let shadowed = vigil_admin_ok(&gateway, &["shadow", "iris", "1", "--fraction", "0.25"]).await;
    assert!(shadowed.contains("SHADOW"), "{shadowed}");
    let iris = report(&gateway, "iris").await;
    assert_eq!(iris["shadows"][0]["version"], "1");
    assert_eq!(iris["shadows"][0]["fraction"], 0.25);

    vigil_admin_ok(&gateway, &["unshadow", "iris", "1"]).await;
    assert_eq!(report(&gateway, "iris").await["shadows"], json!([]));

    let rolled = vigil_admin_ok(&gateway, &["rollback", "iris"]).await;
    assert!(rolled.contains("iris: champion 3"), "{rolled}");
    let iris = report(&gateway, "iris").await;
    assert_eq!(iris["champion"], "3");
    assert_eq!(iris["threshold"], 0.5);

    let rescanned = vigil_admin_ok(&gateway, &["rescan"]).await;
    assert_eq!(rescanned.trim(), "no new versions");

    // Refusals: non-zero exit, the gateway's message on stderr, nothing on stdout.
    for (token, args, fragment) in [
        (Some("wrong"), vec!["models"], "wrong admin token"),
        (None, vec!["models"], "Authorization"),
        (
            Some(TOKEN),
            vec!["rollback", "iris"],
            "no previous champion",
        ),
        (Some(TOKEN), vec!["promote", "iris", "9"], "version `9`"),
        (Some(TOKEN), vec!["threshold", "iris", "2"], "threshold"),
    ] {
        let output = vigil_admin(&gateway, token, &args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(fragment), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let iris = report(&gateway, "iris").await;
    assert_eq!(iris["champion"], "3");
    assert_eq!(iris["threshold"], 0.5);
    gateway.stop().await;
}
