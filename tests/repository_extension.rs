//! The Open Inference Protocol's repository extension on real gateways: load and unload of
//! versions, the repository index, and what they refuse.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{
    admin_gateway, admin_ok, assert_champion_serves, deployment, fixture, index_entry, iris_rows,
    report, version_of,
};
use common::{model_outputs, models_dir, v2_body};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn repository_extension_loads_and_unloads_versions() {
    let gateway = admin_gateway(&models_dir()).await;
    let unload = "/v2/repository/models/iris/unload";
    let load = "/v2/repository/models/iris/load";
    let baseline = deployment(&report(&gateway, "iris").await);

    let (status, body) = gateway.admin(Method::POST, unload, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("champion"),
        "{body}"
    );
    let (status, body) = gateway
        .admin(
            Method::POST,
            unload,
            Some(json!({"parameters": {"version": "3"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = gateway
        .admin(
            Method::POST,
            unload,
            Some(json!({"parameters": {"version": "9"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(deployment(&report(&gateway, "iris").await), baseline);

    let unloaded = admin_ok(
        &gateway,
        Method::POST,
        unload,
        Some(json!({"parameters": {"version": "2"}})),
    )
    .await;
    assert_eq!(version_of(&unloaded, "2")["status"], "unloaded");
    assert_eq!(version_of(&unloaded, "2")["role"], "idle");
    assert_eq!(unloaded["champion"], "3");
    let entry = index_entry(&gateway, "2").await;
    assert_eq!(entry["state"], "UNAVAILABLE", "{entry}");
    assert_eq!(entry["reason"], "unloaded", "{entry}");
    let (_, ready_only) = gateway
        .post_json("/v2/repository/index", &json!({"ready": true}))
        .await;
    assert!(
        !ready_only
            .as_array()
            .expect("index")
            .iter()
            .any(|e| e["name"] == "iris" && e["version"] == "2"),
        "{ready_only}"
    );
    let rows = v2_body("float_input", &iris_rows());
    let (status, body) = gateway
        .post_json("/v2/models/iris/versions/2/infer", &rows)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("unloaded"),
        "{body}"
    );
    let (status, _) = gateway.get_json("/v2/models/iris/versions/2/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The champion keeps serving.
    assert_champion_serves(&gateway, "3").await;

    let loaded = admin_ok(
        &gateway,
        Method::POST,
        load,
        Some(json!({"parameters": {"version": "2"}})),
    )
    .await;
    assert_eq!(version_of(&loaded, "2")["status"], "ready");
    let entry = index_entry(&gateway, "2").await;
    assert_eq!(entry["state"], "READY", "{entry}");
    assert!(entry.get("reason").is_none(), "{entry}");
    let (status, body) = gateway
        .post_json("/v2/models/iris/versions/2/infer", &rows)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], "2");
    let labels = model_outputs(&body)
        .into_iter()
        .find(|o| o["name"] == "label")
        .expect("label");
    assert_eq!(
        labels["data"],
        fixture("iris", "2")["outputs"]["label"]["data"]
    );

    // Unload, then load with no version named: every version that is not ready is retried.
    admin_ok(
        &gateway,
        Method::POST,
        unload,
        Some(json!({"parameters": {"version": "1"}})),
    )
    .await;
    let all = admin_ok(&gateway, Method::POST, load, None).await;
    for version in ["1", "2", "3"] {
        assert_eq!(version_of(&all, version)["status"], "ready", "{version}");
    }
    assert_eq!(deployment(&all), baseline);
    let (status, body) = gateway
        .admin(
            Method::POST,
            load,
            Some(json!({"parameters": {"version": "9"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    gateway.stop().await;
}
