//! Versions that appear in the repository on real gateways: rescans under each deploy policy, new
//! models found by a rescan, and policies applied at start, each audited.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{
    admin_config, admin_gateway, admin_gateway_in, admin_ok, assert_champion_like, audit_lines,
    best_by_validation, deployment, fixture, fixture_rows, higher_is_better, history, iris_rows,
    numbers, report, rescan, validation_score, version_names, version_of,
};
use common::{TestGateway, copy_version, copy_version_as, model_outputs, models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn rescan_applies_the_deploy_policy_and_finds_new_models() {
    let source = models_dir();
    let repo = tempfile::tempdir().expect("repository");
    copy_version(repo.path(), "iris", "1", "");
    copy_version(repo.path(), "iris", "2", "");
    let gateway = admin_gateway(repo.path()).await;
    let start = report(&gateway, "iris").await;
    assert_eq!(start["champion"], "2");
    assert_eq!(rescan(&gateway).await, Vec::<Value>::new());

    // Policy shadow: a new version mirrors all of the champion's traffic.
    let set = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/policy",
        Some(json!({"policy": "shadow"})),
    )
    .await;
    assert_eq!(set["policy"], "shadow");
    copy_version(repo.path(), "iris", "3", "");
    let found = rescan(&gateway).await;
    assert_eq!(
        found,
        vec![json!({"model": "iris", "version": "3", "status": "ready", "deployed_as": "shadow"})]
    );
    let shadowed = report(&gateway, "iris").await;
    assert_eq!(shadowed["champion"], "2");
    assert_eq!(shadowed["shadows"].as_array().expect("shadows").len(), 1);
    assert_eq!(shadowed["shadows"][0]["version"], "3");
    assert_eq!(shadowed["shadows"][0]["fraction"], 1.0);
    assert_eq!(version_of(&shadowed, "3")["role"], "shadow");
    assert_eq!(version_of(&shadowed, "3")["status"], "ready");
    // Rescanning again finds nothing new and changes nothing.
    assert_eq!(rescan(&gateway).await, Vec::<Value>::new());
    assert_eq!(
        deployment(&report(&gateway, "iris").await),
        deployment(&shadowed)
    );

    // Policy best_validation: a new version becomes champion only if it beats the champion's
    // validation score. Which bundled versions are better or worse is read from the toml files.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/policy",
        Some(json!({"policy": "best_validation"})),
    )
    .await;
    let (metric, champion_score) = validation_score(repo.path(), "iris", "2");
    assert!(higher_is_better(&metric));
    let scores: Vec<(String, f64)> = version_names(&source, "iris")
        .into_iter()
        .map(|v| {
            let (_, score) = validation_score(&source, "iris", &v);
            (v, score)
        })
        .collect();
    let (better, better_score) = scores
        .iter()
        .filter(|(_, s)| *s > champion_score)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .cloned()
        .expect("a bundled iris version beats version 2 on validation");
    copy_version_as(&source, "iris", &better, repo.path(), "iris", "4", "");
    let found = rescan(&gateway).await;
    assert_eq!(
        found,
        vec![
            json!({"model": "iris", "version": "4", "status": "ready", "deployed_as": "champion"})
        ],
        "iris/{better} ({metric} {better_score}) beats 2 ({champion_score})"
    );
    let promoted = report(&gateway, "iris").await;
    assert_eq!(promoted["champion"], "4");
    assert_eq!(history(&promoted).last().map(String::as_str), Some("2"));
    assert_eq!(promoted["shadows"][0]["version"], "3", "the shadow stays");
    assert_champion_like(&gateway, "4", &better).await;

    let (worse, worse_score) = scores
        .iter()
        .find(|(_, s)| *s < better_score)
        .cloned()
        .expect("a bundled iris version is worse than the new champion");
    copy_version_as(&source, "iris", &worse, repo.path(), "iris", "5", "");
    let found = rescan(&gateway).await;
    assert_eq!(
        found,
        vec![json!({"model": "iris", "version": "5", "status": "ready", "deployed_as": "idle"})],
        "iris/{worse} ({worse_score}) does not beat the champion ({better_score})"
    );
    let kept = report(&gateway, "iris").await;
    assert_eq!(kept["champion"], "4");
    assert_eq!(version_of(&kept, "5")["role"], "idle");
    assert_eq!(version_of(&kept, "5")["status"], "ready");
    assert_eq!(history(&kept), history(&promoted));
    // Idle but servable by name.
    let (status, body) = gateway
        .post_json(
            "/v2/models/iris/versions/5/infer",
            &v2_body("float_input", &iris_rows()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A new model directory is found, loaded and served.
    copy_version_as(
        &source,
        "diabetes",
        "1",
        repo.path(),
        "diabetes_copy",
        "1",
        "",
    );
    let found = rescan(&gateway).await;
    assert_eq!(
        found,
        vec![
            json!({"model": "diabetes_copy", "version": "1", "status": "ready", "deployed_as": "champion"})
        ]
    );
    let copy = report(&gateway, "diabetes_copy").await;
    assert_eq!(copy["champion"], "1");
    let (status, list) = gateway.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["diabetes_copy", "iris"]);
    let expected = fixture("diabetes", "1");
    let (status, body) = gateway
        .post_json(
            "/v2/models/diabetes_copy/infer",
            &v2_body("float_input", &fixture_rows(&expected)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_name"], "diabetes_copy");
    assert_eq!(body["model_version"], "1");
    let outputs = model_outputs(&body);
    assert_eq!(outputs.len(), 1, "{body}");
    let got = numbers(&outputs[0]["data"]);
    let want = numbers(&expected["outputs"]["variable"]["data"]);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-3 * w.abs().max(1.0), "{g} vs {w}");
    }
    assert_eq!(rescan(&gateway).await, Vec::<Value>::new());
    gateway.stop().await;
}

#[tokio::test]
async fn a_policy_applied_at_start_is_audited_with_the_deployment_before_it() {
    let repo = tempfile::tempdir().expect("repository");
    let state = tempfile::tempdir().expect("state dir");
    copy_version(repo.path(), "iris", "1", "");
    copy_version(repo.path(), "iris", "2", "");
    let gateway = admin_gateway_in(repo.path(), state.path()).await;
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/policy",
        Some(json!({"policy": "champion"})),
    )
    .await;
    gateway.stop().await;

    copy_version(repo.path(), "iris", "3", "");
    let restarted = admin_gateway_in(repo.path(), state.path()).await;
    let iris = report(&restarted, "iris").await;
    assert_eq!(iris["champion"], "3");
    assert_eq!(history(&iris), ["2"]);
    let lines = audit_lines(state.path());
    let entry = lines
        .iter()
        .find(|e| e["action"] == "new version 3: champion")
        .unwrap_or_else(|| panic!("no audit line for the new version: {lines:?}"));
    assert_eq!(entry["actor"], "policy");
    assert_eq!(entry["model"], "iris");
    assert_eq!(entry["after"]["champion"], "3", "{entry}");
    assert_eq!(
        entry["before"]["champion"], "2",
        "`before` must be the deployment before the policy applied: {entry}"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn a_new_model_found_by_rescan_gets_the_configured_policy_like_at_start() {
    let source = models_dir();
    let best = best_by_validation(&source, "breast_cancer");
    let highest = version_names(&source, "breast_cancer")
        .last()
        .expect("versions")
        .clone();
    assert_ne!(
        best, highest,
        "the bundled breast_cancer versions rank differently by validation and by number"
    );
    let policy = vigil::serving::DeployPolicy::BestValidation;

    // At start, a model the state does not know gets its best validation version.
    let mut config = admin_config(&source);
    config.deploy_policy = policy;
    let at_start = TestGateway::start_with(config).await;
    let started = report(&at_start, "breast_cancer").await;
    assert_eq!(started["policy"], "best_validation");
    assert_eq!(started["champion"], best.as_str());
    at_start.stop().await;

    // The same model appearing on rescan gets the same treatment.
    let repo = tempfile::tempdir().expect("repository");
    copy_version(repo.path(), "iris", "1", "");
    let mut config = admin_config(repo.path());
    config.deploy_policy = policy;
    let gateway = TestGateway::start_with(config).await;
    for version in version_names(&source, "breast_cancer") {
        copy_version(repo.path(), "breast_cancer", &version, "");
    }
    let found = rescan(&gateway).await;
    assert_eq!(found.len(), 2, "{found:?}");
    let found = report(&gateway, "breast_cancer").await;
    assert_eq!(found["policy"], "best_validation");
    assert_eq!(
        found["champion"],
        best.as_str(),
        "best_validation picks the best version of a new model on rescan too"
    );
    gateway.stop().await;
}
