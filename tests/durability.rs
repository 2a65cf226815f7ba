//! Deployments survive the process being killed: the `vigil` binary is killed with SIGKILL in the
//! middle of a storm of conditional admin changes, and after a restart the deployment is the last
//! change that was answered (or the one in flight), never an older one, with the state file and
//! the audit log at the same revision.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::process::ServingProcess;
use common::{models_dir, saved_deployment};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "durable-secret";
const WRITERS: u64 = 8;

fn start(state: &Path) -> ServingProcess {
    ServingProcess::start(&[
        "--models".as_ref(),
        models_dir().as_os_str(),
        "--state".as_ref(),
        state.as_os_str(),
        "--admin-token".as_ref(),
        TOKEN.as_ref(),
    ])
}

async fn admin(
    client: &reqwest::Client,
    url: String,
    method: Method,
    if_match: Option<u64>,
    body: Option<Value>,
) -> reqwest::Result<(StatusCode, Value)> {
    let mut request = client.request(method, url).bearer_auth(TOKEN);
    if let Some(revision) = if_match {
        request = request.header(header::IF_MATCH, format!("\"{revision}\""));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

/// Every change an iris audit line records, by revision, and the state file's revision.
fn audited(state: &Path) -> BTreeMap<u64, Value> {
    std::fs::read_to_string(state.join("audit.jsonl"))
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("audit line"))
        .filter(|e| e["model"] == "iris")
        .map(|e| (e["revision"].as_u64().expect("revision"), e))
        .collect()
}

/// What the writers learnt: answered changes (revision → threshold) and changes sent but never
/// answered (expected revision → threshold).
#[derive(Default)]
struct Ledger {
    answered: BTreeMap<u64, f64>,
    in_flight: Vec<(u64, f64)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_a_storm_of_changes_loses_no_answered_change() {
    // The binary here runs on the files under its state directory, which this test reads.
    common::embedded_store_only();
    let state = tempfile::tempdir().expect("state dir");
    let gateway = start(state.path());
    let client = reqwest::Client::new();
    let model_url = gateway.url("/admin/models/iris");
    let threshold_url = gateway.url("/admin/models/iris/threshold");
    let (status, first) = admin(&client, model_url.clone(), Method::GET, None, None)
        .await
        .expect("report");
    assert_eq!(status, StatusCode::OK, "{first}");
    let start_revision = first["revision"].as_u64().expect("revision");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let client = client.clone();
        let (model_url, threshold_url) = (model_url.clone(), threshold_url.clone());
        let ledger = Arc::clone(&ledger);
        writers.push(tokio::spawn(async move {
            let mut revision = start_revision;
            for attempt in 0u64.. {
                // Distinct values, so that every revision tells which write made it.
                let threshold = (writer * 100_000 + attempt + 1) as f64 / 1e6;
                let body = json!({"threshold": threshold});
                let put = admin(
                    &client,
                    threshold_url.clone(),
                    Method::PUT,
                    Some(revision),
                    Some(body),
                );
                match put.await {
                    Ok((StatusCode::OK, answer)) => {
                        revision = answer["revision"].as_u64().expect("revision");
                        let mut ledger = ledger.lock().unwrap();
                        ledger.answered.insert(revision, threshold);
                    }
                    Ok((StatusCode::PRECONDITION_FAILED, answer)) => {
                        revision = answer["deployment"]["revision"].as_u64().expect("revision");
                    }
                    Ok((status, answer)) => panic!("unexpected {status}: {answer}"),
                    Err(_) => {
                        // The process died with this change sent: it may or may not be saved.
                        ledger.lock().unwrap().in_flight.push((revision, threshold));
                        return;
                    }
                }
                if attempt % 16 == 15 {
                    let report = admin(&client, model_url.clone(), Method::GET, None, None).await;
                    if report.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    // Let the storm run until a good number of changes were answered, then kill the process.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ledger.lock().unwrap().answered.len() < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the storm made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway.kill_9();
    for writer in writers {
        writer.await.expect("writer task");
    }
    let ledger = Arc::try_unwrap(ledger)
        .ok()
        .expect("writers done")
        .into_inner()
        .unwrap();
    let (&last_answered, &last_threshold) =
        ledger.answered.last_key_value().expect("answered changes");
    let answered: Vec<u64> = ledger.answered.keys().copied().collect();
    let expected: Vec<u64> = (start_revision + 1..=last_answered).collect();
    assert_eq!(
        answered, expected,
        "one answered change per revision, none lost"
    );

    let restarted = start(state.path());
    let (status, report) = admin(
        &client,
        restarted.url("/admin/models/iris"),
        Method::GET,
        None,
        None,
    )
    .await
    .expect("report after restart");
    assert_eq!(status, StatusCode::OK, "{report}");
    let revision = report["revision"].as_u64().expect("revision");
    let threshold = report["threshold"].as_f64().expect("threshold");
    if revision == last_answered {
        assert_eq!(threshold, last_threshold, "the last answered change");
    } else {
        assert_eq!(
            revision,
            last_answered + 1,
            "never an older deployment: {report}"
        );
        assert!(
            ledger
                .in_flight
                .iter()
                .any(|&(expected, t)| expected == last_answered && t == threshold),
            "revision {revision} is a change that was in flight: {report}"
        );
    }

    let audit = audited(state.path());
    let (&last_audited, entry) = audit.last_key_value().expect("audited changes");
    assert_eq!(
        last_audited, revision,
        "the audit log ends at the served revision"
    );
    assert_eq!(entry["after"]["threshold"], report["threshold"]);
    assert_eq!(saved_deployment(state.path(), "iris")["revision"], revision);
    for (revision, threshold) in &ledger.answered {
        assert_eq!(
            audit[revision]["after"]["threshold"].as_f64(),
            Some(*threshold),
            "revision {revision} audited as answered"
        );
    }
    let revisions: Vec<u64> = audit.keys().copied().collect();
    assert_eq!(
        revisions,
        (1..=revision).collect::<Vec<_>>(),
        "the audit log has every revision once"
    );
    // Served by the restarted process, at that deployment.
    let (status, body) = admin(
        &client,
        restarted.url("/v2/models/iris/infer"),
        Method::POST,
        None,
        Some(common::v2_body("float_input", &[vec![6.1, 2.8, 4.7, 1.2]])),
    )
    .await
    .expect("inference");
    assert_eq!(status, StatusCode::OK, "{body}");
    common::assert_threshold_outputs(&body, threshold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_labels_survive_a_kill() {
    // The binary here runs on the files under its state directory, which this test reads.
    common::embedded_store_only();
    let state = tempfile::tempdir().expect("state dir");
    let gateway = start(state.path());
    let client = reqwest::Client::new();
    let rows: Vec<Vec<f64>> = (0..300)
        .map(|i| {
            vec![
                4.5 + f64::from(i % 30) * 0.1,
                3.0,
                1.5 + f64::from(i % 50) * 0.1,
                0.4,
            ]
        })
        .collect();
    let mut body = common::v2_body("float_input", &rows);
    body["id"] = json!("k");
    let (status, answer) = admin(
        &client,
        gateway.url("/v2/models/iris/infer"),
        Method::POST,
        None,
        Some(body),
    )
    .await
    .expect("inference");
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answered: Vec<u64> = answer["outputs"][0]["data"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_u64().expect("index"))
        .collect();
    // 300 labels, each acknowledged before the next is sent; the champion is right on 2 in 3.
    let truth: Vec<u64> = answered
        .iter()
        .enumerate()
        .map(|(row, &a)| if row % 3 == 0 { (a + 1) % 3 } else { a })
        .collect();
    for (row, label) in truth.iter().enumerate() {
        let (status, answer) = admin(
            &client,
            gateway.url("/v1/models/iris/feedback"),
            Method::POST,
            None,
            Some(json!({"id": "k", "row": row, "label": label})),
        )
        .await
        .expect("feedback");
        assert_eq!(
            (status, answer["status"].clone()),
            (StatusCode::OK, json!("accepted"))
        );
    }
    gateway.kill_9();

    let restarted = start(state.path());
    let (status, quality) = admin(
        &client,
        restarted.url("/admin/models/iris/quality"),
        Method::GET,
        None,
        None,
    )
    .await
    .expect("quality");
    assert_eq!(status, StatusCode::OK, "{quality}");
    let champion = quality["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == "3")
        .expect("quality of the champion");
    assert_eq!(
        champion["all"]["labelled"], 300,
        "every acknowledged label is back"
    );
    assert_eq!(champion["all"]["accuracy"]["value"], 200.0 / 300.0);
    // And each of them is known: sending them again finds duplicates.
    let items: Vec<Value> = truth
        .iter()
        .enumerate()
        .map(|(row, label)| json!({"id": "k", "row": row, "label": label}))
        .collect();
    let (status, answer) = admin(
        &client,
        restarted.url("/v1/models/iris/feedback"),
        Method::POST,
        None,
        Some(json!({"items": items})),
    )
    .await
    .expect("feedback");
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["counts"],
        json!({"accepted": 0, "duplicate": 300, "error": 0})
    );
}
