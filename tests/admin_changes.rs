//! Deployment changes through the admin API on real gateways: promote and rollback round trips,
//! a rollback whose target cannot load, and the table of bad admin input (refused, with nothing
//! changed, nothing audited, nothing saved).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{
    admin_gateway, admin_gateway_in, admin_ok, admin_raw, assert_champion_serves, audit_lines,
    deployment, history, report, version_of,
};
use common::{copy_version, models_dir, saved_deployment};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn promote_and_rollback_round_trip() {
    let gateway = admin_gateway(&models_dir()).await;
    let before = report(&gateway, "iris").await;
    assert_eq!(before["champion"], "3");
    assert_eq!(history(&before), Vec::<String>::new());
    assert_champion_serves(&gateway, "3").await;

    let promoted = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    assert_eq!(promoted["champion"], "1");
    assert_eq!(history(&promoted).last().map(String::as_str), Some("3"));
    assert_eq!(version_of(&promoted, "1")["role"], "champion");
    assert_eq!(version_of(&promoted, "3")["role"], "idle");
    assert_eq!(
        deployment(&report(&gateway, "iris").await),
        deployment(&promoted)
    );
    assert_champion_serves(&gateway, "1").await;

    // Promoting the champion again changes nothing (no self-entry in the history).
    let again = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    assert_eq!(deployment(&again), deployment(&promoted));

    // Rollback pops the history: 3 serves again and the history is empty, so a second rollback
    // has nothing to go back to (it is an undo stack, not a toggle between the last two).
    let rolled = admin_ok(&gateway, Method::POST, "/admin/models/iris/rollback", None).await;
    assert_eq!(rolled["champion"], "3");
    assert_eq!(history(&rolled), Vec::<String>::new());
    assert_champion_serves(&gateway, "3").await;
    let (status, body) = gateway
        .admin(Method::POST, "/admin/models/iris/rollback", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("no previous champion"),
        "{body}"
    );
    assert_eq!(
        deployment(&report(&gateway, "iris").await),
        deployment(&rolled)
    );

    // A longer chain unwinds in reverse order.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    let chained = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "2"})),
    )
    .await;
    assert_eq!(chained["champion"], "2");
    assert_eq!(history(&chained), ["3", "1"]);
    let first = admin_ok(&gateway, Method::POST, "/admin/models/iris/rollback", None).await;
    assert_eq!(first["champion"], "1");
    assert_eq!(history(&first), ["3"]);
    let second = admin_ok(&gateway, Method::POST, "/admin/models/iris/rollback", None).await;
    assert_eq!(second["champion"], "3");
    assert_eq!(history(&second), Vec::<String>::new());
    let (status, _) = gateway
        .admin(Method::POST, "/admin/models/iris/rollback", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_champion_serves(&gateway, "3").await;

    // Promoting a shadow makes it champion and no longer a shadow.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/shadows/2",
        Some(json!({"fraction": 0.5})),
    )
    .await;
    let shadow_promoted = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "2"})),
    )
    .await;
    assert_eq!(shadow_promoted["champion"], "2");
    assert_eq!(shadow_promoted["shadows"], json!([]));
    assert_eq!(version_of(&shadow_promoted, "2")["role"], "champion");
    gateway.stop().await;
}

const JSON: &str = "application/json";

const FORM: &str = "application/x-www-form-urlencoded";

/// One admin request of the bad-input table.
struct Call {
    method: Method,
    path: String,
    content_type: &'static str,
    body: String,
}

fn put(path: &str, body: Value) -> Call {
    Call {
        method: Method::PUT,
        path: path.to_string(),
        content_type: JSON,
        body: body.to_string(),
    }
}

fn post(path: &str, body: Value) -> Call {
    Call {
        method: Method::POST,
        ..put(path, body)
    }
}

fn empty(method: Method, path: &str) -> Call {
    Call {
        method,
        body: String::new(),
        ..put(path, Value::Null)
    }
}

fn raw(path: &str, content_type: &'static str, body: &str) -> Call {
    Call {
        content_type,
        body: body.to_string(),
        ..put(path, Value::Null)
    }
}

#[tokio::test]
async fn bad_admin_input_is_refused_and_changes_nothing() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = admin_gateway_in(&models_dir(), state.path()).await;
    // A deployment with something in every field, so that any stray change shows.
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/shadows/2",
        Some(json!({"fraction": 0.5})),
    )
    .await;
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/threshold",
        Some(json!({"threshold": 0.3})),
    )
    .await;
    let baseline = deployment(&report(&gateway, "iris").await);
    let others: Vec<Value> = {
        let mut reports = Vec::new();
        for model in ["breast_cancer", "diabetes"] {
            reports.push(deployment(&report(&gateway, model).await));
        }
        reports
    };
    let audit_before = audit_lines(state.path()).len();
    let state_before = saved_deployment(state.path(), "iris");

    let champion = "/admin/models/iris/champion";
    let shadow = |version: &str| format!("/admin/models/iris/shadows/{version}");
    let threshold = "/admin/models/iris/threshold";
    let unload = "/v2/repository/models/iris/unload";
    let (bad, conflict, missing) = (
        StatusCode::BAD_REQUEST,
        StatusCode::CONFLICT,
        StatusCode::NOT_FOUND,
    );
    let unsupported = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    let cases = vec![
        (
            "unknown version",
            put(champion, json!({"version": "9"})),
            missing,
            "version `9`",
        ),
        (
            "unknown model",
            put("/admin/models/nope/champion", json!({"version": "1"})),
            missing,
            "nope",
        ),
        (
            "negative fraction",
            put(&shadow("1"), json!({"fraction": -0.1})),
            bad,
            "fraction",
        ),
        (
            "fraction above one",
            put(&shadow("1"), json!({"fraction": 1.5})),
            bad,
            "fraction",
        ),
        (
            "shadow, bad fraction",
            put(&shadow("2"), json!({"fraction": 1.5})),
            bad,
            "fraction",
        ),
        (
            "fraction as text",
            put(&shadow("1"), json!({"fraction": "0.5"})),
            bad,
            "fraction",
        ),
        (
            "threshold above one",
            put(threshold, json!({"threshold": 2})),
            bad,
            "threshold",
        ),
        (
            "negative threshold",
            put(threshold, json!({"threshold": -0.5})),
            bad,
            "threshold",
        ),
        (
            "malformed JSON",
            raw(champion, JSON, "{\"version\": "),
            bad,
            "malformed JSON",
        ),
        ("empty body", raw(champion, JSON, ""), bad, "malformed JSON"),
        (
            "unknown field",
            put(champion, json!({"versoin": "1"})),
            bad,
            "versoin",
        ),
        (
            "extra field",
            put(champion, json!({"version": "1", "comment": "why"})),
            bad,
            "comment",
        ),
        ("missing field", put(champion, json!({})), bad, "version"),
        (
            "version as number",
            put(champion, json!({"version": 1})),
            bad,
            "version",
        ),
        (
            "unknown policy",
            put("/admin/models/iris/policy", json!({"policy": "x"})),
            bad,
            "`x`",
        ),
        (
            "shadow the champion",
            put(&shadow("3"), json!({"fraction": 0.5})),
            conflict,
            "champion",
        ),
        (
            "shadow unknown version",
            put(&shadow("9"), json!({"fraction": 0.5})),
            missing,
            "`9`",
        ),
        (
            "remove a non-shadow",
            empty(Method::DELETE, &shadow("1")),
            conflict,
            "not a shadow",
        ),
        (
            "rollback, no history",
            empty(Method::POST, "/admin/models/iris/rollback"),
            conflict,
            "no previous champion",
        ),
        (
            "unload the champion",
            post(unload, json!({"parameters": {"version": "3"}})),
            conflict,
            "champion",
        ),
        (
            "unload a shadow",
            post(unload, json!({"parameters": {"version": "2"}})),
            conflict,
            "shadow",
        ),
        (
            "text/plain",
            raw(champion, "text/plain", "{\"version\": \"1\"}"),
            unsupported,
            "text/plain",
        ),
        (
            "form",
            raw(threshold, FORM, "threshold=0.5"),
            unsupported,
            FORM,
        ),
    ];
    for (name, call, status, fragment) in cases {
        let (got, answer) = admin_raw(
            &gateway,
            call.method,
            &call.path,
            call.content_type,
            call.body.as_bytes(),
        )
        .await;
        assert_eq!(got, status, "{name}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error text in {answer}"));
        assert!(
            error.contains(fragment),
            "{name}: `{fragment}` not in {error}"
        );
        assert_eq!(
            deployment(&report(&gateway, "iris").await),
            baseline,
            "{name} changed the deployment"
        );
    }
    for (model, expected) in ["breast_cancer", "diabetes"].into_iter().zip(&others) {
        assert_eq!(&deployment(&report(&gateway, model).await), expected);
    }
    assert_eq!(
        audit_lines(state.path()).len(),
        audit_before,
        "refused changes are not audited"
    );
    assert_eq!(
        saved_deployment(state.path(), "iris"),
        state_before,
        "refused changes leave the state file alone"
    );
    // The gateway still serves and still takes good changes.
    assert_champion_serves(&gateway, "3").await;
    let fixed = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/shadows/2",
        Some(json!({"fraction": 1.0})),
    )
    .await;
    assert_eq!(fixed["shadows"][0]["fraction"], 1.0);
    gateway.stop().await;
}

#[tokio::test]
async fn a_rollback_whose_target_cannot_load_keeps_the_history() {
    let repo = tempfile::tempdir().expect("repository");
    for version in ["1", "2", "3"] {
        copy_version(repo.path(), "iris", version, "");
    }
    let gateway = admin_gateway(repo.path()).await;
    let promoted = admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    assert_eq!(history(&promoted), ["3"]);

    // Version 3 is unloaded and its file breaks: the rollback cannot load it.
    let onnx = repo.path().join("iris/3/model.onnx");
    let good = std::fs::read(&onnx).expect("model.onnx");
    admin_ok(
        &gateway,
        Method::POST,
        "/v2/repository/models/iris/unload",
        Some(json!({"parameters": {"version": "3"}})),
    )
    .await;
    std::fs::write(&onnx, b"not an onnx file").expect("break model.onnx");
    let (status, body) = gateway
        .admin(Method::POST, "/admin/models/iris/rollback", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let error = body["error"].as_str().expect("error");
    assert!(
        error.contains("no previous champion of iris can be loaded") && error.contains("3: "),
        "the answer says why version 3 cannot serve: {error}"
    );
    let after = report(&gateway, "iris").await;
    assert_eq!(after["champion"], "1");
    assert_eq!(
        after["revision"],
        promoted["revision"].as_u64().expect("revision") + 1
    );
    assert_eq!(version_of(&after, "3")["status"], "unloaded");
    // A refused rollback changes nothing: the previous champion is still remembered, so it can
    // be rolled back to once fixed.
    assert_eq!(
        history(&after),
        ["3"],
        "a failed rollback must not drop the history"
    );

    std::fs::write(&onnx, good).expect("repair model.onnx");
    let rolled = admin_ok(&gateway, Method::POST, "/admin/models/iris/rollback", None).await;
    assert_eq!(rolled["champion"], "3");
    gateway.stop().await;
}
