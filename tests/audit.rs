//! Durable deployments on real gateways: each change saved to the model's state file and
//! appended to the audit log with its actor, action, revision, before and after.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{
    admin_gateway_in, admin_ok, assert_champion_serves, audit_lines, deployment, report,
};
use common::{models_dir, saved_deployment};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn changes_are_saved_and_audited() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = admin_gateway_in(&models_dir(), state.path()).await;
    let startup = audit_lines(state.path());
    assert!(
        startup.iter().all(|e| e["actor"] == "startup"),
        "{startup:?}"
    );

    let changes = [
        (
            Method::PUT,
            "/admin/models/iris/champion",
            Some(json!({"version": "1"})),
            "promote",
        ),
        (
            Method::PUT,
            "/admin/models/iris/threshold",
            Some(json!({"threshold": 0.5})),
            "threshold",
        ),
        (
            Method::PUT,
            "/admin/models/iris/shadows/2",
            Some(json!({"fraction": 0.25})),
            "shadow",
        ),
        (
            Method::PUT,
            "/admin/models/breast_cancer/policy",
            Some(json!({"policy": "best_validation"})),
            "policy",
        ),
    ];
    for (method, path, body, _) in &changes {
        admin_ok(&gateway, method.clone(), path, body.clone()).await;
    }
    let iris = report(&gateway, "iris").await;

    let saved_iris = &saved_deployment(state.path(), "iris");
    assert_eq!(saved_iris["revision"], iris["revision"]);
    assert_eq!(saved_iris["champion"], "1");
    assert_eq!(saved_iris["threshold"], 0.5);
    assert_eq!(saved_iris["shadows"], json!({"2": 0.25}));
    assert_eq!(saved_iris["history"], json!(["3"]));
    assert_eq!(saved_iris["policy"], "manual");
    assert_eq!(saved_iris["known_versions"], json!(["1", "2", "3"]));
    assert_eq!(
        saved_deployment(state.path(), "breast_cancer")["policy"],
        "best_validation"
    );
    assert_eq!(saved_deployment(state.path(), "diabetes")["champion"], "2");

    let lines = audit_lines(state.path());
    assert_eq!(
        lines.len(),
        startup.len() + changes.len(),
        "one line per change: {lines:?}"
    );
    let added = &lines[startup.len()..];
    for (entry, (_, path, _, action)) in added.iter().zip(&changes) {
        for field in [
            "time", "actor", "action", "model", "revision", "before", "after",
        ] {
            assert!(entry.get(field).is_some(), "{field} missing in {entry}");
        }
        let revision = entry["revision"].as_u64().expect("revision");
        assert_eq!(entry["after"]["revision"], revision, "{entry}");
        assert_eq!(entry["before"]["revision"], revision - 1, "{entry}");
        assert!(entry["time"].as_f64().expect("time") > 1.0e9, "{entry}");
        assert_eq!(entry["actor"], "admin", "{entry}");
        assert_eq!(entry["action"], *action, "{entry}");
        let model = path.split('/').nth(3).expect("model in path");
        assert_eq!(entry["model"], model, "{entry}");
        assert_ne!(entry["before"], entry["after"], "{entry}");
    }
    assert_eq!(added[0]["before"]["champion"], "3");
    assert_eq!(added[0]["after"]["champion"], "1");
    assert_eq!(added[0]["after"]["history"], json!(["3"]));
    // Each iris entry starts where the previous one ended.
    assert_eq!(added[1]["before"], added[0]["after"]);
    assert_eq!(added[2]["before"], added[1]["after"]);
    assert_eq!(added[1]["after"]["threshold"], 0.5);
    assert_eq!(added[2]["after"]["shadows"], json!({"2": 0.25}));
    assert_eq!(added[3]["before"]["policy"], "manual");
    assert_eq!(added[3]["after"]["policy"], "best_validation");
    let times: Vec<f64> = lines
        .iter()
        .map(|e| e["time"].as_f64().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let last_iris = lines
        .iter()
        .rfind(|e| e["model"] == "iris")
        .expect("iris entries");
    assert_eq!(last_iris["revision"], iris["revision"]);

    // A restart on the same state directory brings the same deployment back, at the same
    // revision, and writes nothing.
    gateway.stop().await;
    let restarted = admin_gateway_in(&models_dir(), state.path()).await;
    let again = report(&restarted, "iris").await;
    assert_eq!(deployment(&again), deployment(&iris));
    assert_eq!(again["revision"], iris["revision"]);
    assert_eq!(
        audit_lines(state.path()).len(),
        lines.len(),
        "a restart is not a change"
    );
    assert_eq!(
        report(&restarted, "breast_cancer").await["policy"],
        "best_validation"
    );
    assert_champion_serves(&restarted, "1").await;
    restarted.stop().await;
}
