//! Deployment revisions on real gateways: the `ETag` of admin answers, `If-Match` on every admin
//! change (412 with the current deployment when stale, 400 when unreadable), concurrent
//! conditional writers (exactly one wins per revision, audited in order), and
//! `vigil admin --if-revision`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{TOKEN, admin_gateway_in, audit_lines, deployment, report};
use common::{TestGateway, models_dir};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;

/// An admin call with `If-Match: <if_match>` (sent as given); returns status, ETag and body.
async fn conditional(
    gateway: &TestGateway,
    method: Method,
    path: &str,
    if_match: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = gateway
        .client
        .request(method, gateway.url(path))
        .bearer_auth(TOKEN);
    if let Some(tag) = if_match {
        request = request.header(header::IF_MATCH, tag);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin call sent");
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().expect("ETag is text").to_string());
    (status, etag, response.json().await.expect("JSON body"))
}

fn revision(report: &Value) -> u64 {
    report["revision"].as_u64().expect("revision")
}

#[tokio::test]
async fn every_change_to_one_model_takes_if_match_and_answers_with_an_etag() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = admin_gateway_in(&models_dir(), state.path()).await;
    let (status, etag, current) =
        conditional(&gateway, Method::GET, "/admin/models/iris", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let start = revision(&current);
    assert_eq!(start, 1, "the first deployment at start is revision 1");
    assert_eq!(etag.as_deref(), Some("\"1\""));

    // Each change, first with a stale revision (refused, nothing changes), then a current one.
    let changes: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::PUT,
            "/admin/models/iris/champion",
            Some(json!({"version": "1"})),
        ),
        (
            Method::PUT,
            "/admin/models/iris/shadows/2",
            Some(json!({"fraction": 0.5})),
        ),
        (Method::DELETE, "/admin/models/iris/shadows/2", None),
        (
            Method::PUT,
            "/admin/models/iris/threshold",
            Some(json!({"threshold": 0.6})),
        ),
        (
            Method::PUT,
            "/admin/models/iris/policy",
            Some(json!({"policy": "shadow"})),
        ),
        (Method::POST, "/admin/models/iris/rollback", None),
        (
            Method::POST,
            "/v2/repository/models/iris/unload",
            Some(json!({"parameters": {"version": "2"}})),
        ),
        (
            Method::POST,
            "/v2/repository/models/iris/load",
            Some(json!({"parameters": {"version": "2"}})),
        ),
    ];
    let mut expected = start;
    for (method, path, body) in changes {
        let lines = audit_lines(state.path()).len();
        let before = report(&gateway, "iris").await;
        let stale = format!("\"{}\"", expected - 1);
        let (status, etag, refused) =
            conditional(&gateway, method.clone(), path, Some(&stale), body.clone()).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{path}: {refused}");
        let error = refused["error"].as_str().expect("error");
        assert!(
            error.contains(&format!("revision {}", expected - 1))
                && error.contains(&format!("at revision {expected}")),
            "{path}: {error}"
        );
        assert_eq!(revision(&refused["deployment"]), expected, "{refused}");
        assert_eq!(refused["deployment"]["champion"], before["champion"]);
        assert_eq!(etag, Some(format!("\"{expected}\"")));
        assert_eq!(
            deployment(&report(&gateway, "iris").await),
            deployment(&before)
        );
        assert_eq!(
            audit_lines(state.path()).len(),
            lines,
            "{path}: a 412 is not audited"
        );

        let current = format!("\"{expected}\"");
        let (status, etag, changed) =
            conditional(&gateway, method, path, Some(&current), body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {changed}");
        expected += 1;
        assert_eq!(revision(&changed), expected, "{path}: +1 per change");
        assert_eq!(etag, Some(format!("\"{expected}\"")), "{path}");
        let lines_now = audit_lines(state.path());
        assert_eq!(lines_now.len(), lines + 1, "{path}");
        assert_eq!(lines_now[lines]["revision"], expected, "{path}");
    }

    // A change that changes nothing uses no revision; `*` matches any deployment.
    let (status, _, same) = conditional(
        &gateway,
        Method::PUT,
        "/admin/models/iris/threshold",
        Some("*"),
        Some(json!({"threshold": 0.6})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(revision(&same), expected);

    for (tag, fragment) in [("W/\"3\"", "weak"), ("\"three\"", "not a revision")] {
        let (status, _, answer) = conditional(
            &gateway,
            Method::PUT,
            "/admin/models/iris/threshold",
            Some(tag),
            Some(json!({"threshold": 0.1})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{tag}: {answer}");
        let error = answer["error"].as_str().expect("error");
        assert!(
            error.starts_with("If-Match: ") && error.contains(fragment),
            "{error}"
        );
    }
    let (status, _, answer) = conditional(
        &gateway,
        Method::POST,
        "/admin/repository/rescan",
        Some("\"1\""),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("If-Match")
    );
    assert_eq!(revision(&report(&gateway, "iris").await), expected);
    gateway.stop().await;
}

#[tokio::test]
async fn concurrent_conditional_writers_win_once_per_revision() {
    const TASKS: u64 = 8;
    const WRITES: u64 = 50;
    let state = tempfile::tempdir().expect("state dir");
    let gateway = Arc::new(admin_gateway_in(&models_dir(), state.path()).await);
    let start = revision(&report(&gateway, "iris").await);
    let audit_start = audit_lines(state.path()).len();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let gateway = Arc::clone(&gateway);
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            let mut stale = 0u64;
            let mut seen = revision(&report(&gateway, "iris").await);
            for write in 0..WRITES {
                // Distinct thresholds, so that each revision tells which write made it.
                let threshold = (task * WRITES + write + 1) as f64 / 1000.0;
                let (status, etag, answer) = conditional(
                    &gateway,
                    Method::PUT,
                    "/admin/models/iris/threshold",
                    Some(&format!("\"{seen}\"")),
                    Some(json!({"threshold": threshold})),
                )
                .await;
                match status {
                    StatusCode::OK => {
                        assert_eq!(revision(&answer), seen + 1, "{answer}");
                        seen = revision(&answer);
                        wins.push((seen, threshold));
                    }
                    StatusCode::PRECONDITION_FAILED => {
                        stale += 1;
                        seen = revision(&answer["deployment"]);
                    }
                    other => panic!("unexpected {other}: {answer}"),
                }
                assert_eq!(etag, Some(format!("\"{seen}\"")));
            }
            (wins, stale)
        }));
    }
    let mut wins = Vec::new();
    let mut stale = 0;
    for task in tasks {
        let (won, refused) = task.await.expect("writer");
        wins.extend(won);
        stale += refused;
    }
    wins.sort_by_key(|(revision, _)| *revision);
    let successes = wins.len() as u64;
    assert_eq!(
        successes + stale,
        TASKS * WRITES,
        "every write answered 200 or 412"
    );
    assert!(
        stale > 0 && successes > 0,
        "{successes} wins, {stale} refusals"
    );
    let revisions: Vec<u64> = wins.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        revisions,
        (start + 1..=start + successes).collect::<Vec<_>>(),
        "exactly one write succeeds per revision"
    );
    let last = report(&gateway, "iris").await;
    assert_eq!(revision(&last), start + successes);
    assert_eq!(last["threshold"], json!(wins.last().expect("a win").1));

    let audited: Vec<Value> = audit_lines(state.path()).split_off(audit_start);
    assert_eq!(
        audited.len() as u64,
        successes,
        "one audit line per success"
    );
    for (entry, (revision, threshold)) in audited.iter().zip(&wins) {
        assert_eq!(entry["revision"], *revision, "in revision order");
        assert_eq!(entry["after"]["threshold"], json!(threshold));
        assert_eq!(entry["before"]["revision"], *revision - 1);
    }
    TestGateway::stop_shared(gateway).await;
}

#[tokio::test]
async fn vigil_admin_if_revision_refuses_a_stale_change() {
    let state = tempfile::tempdir().expect("state dir");
    let gateway = admin_gateway_in(&models_dir(), state.path()).await;
    let url = format!("http://{}", gateway.addr);
    // The gateway runs on this test's runtime: wait for the command without blocking it.
    let run = async |args: &[&str]| {
        let mut command = tokio::process::Command::from(common::process::vigil());
        command
            .args(["admin", "--url", &url, "--token", TOKEN])
            .args(args);
        command.output().await.expect("vigil admin runs")
    };
    let current = revision(&report(&gateway, "iris").await).to_string();
    let stale = run(&["threshold", "iris", "0.4", "--if-revision", "0"]).await;
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(!stale.status.success(), "{stderr}");
    assert!(
        stderr.contains("412") && stderr.contains(&format!("at revision {current}")),
        "{stderr}"
    );
    assert_eq!(report(&gateway, "iris").await["threshold"], 0.0);

    let fresh = run(&["threshold", "iris", "0.4", "--if-revision", &current]).await;
    let stdout = String::from_utf8_lossy(&fresh.stdout);
    assert!(
        fresh.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    let next = current.parse::<u64>().expect("number") + 1;
    assert!(stdout.contains(&format!("revision {next}")), "{stdout}");
    assert_eq!(report(&gateway, "iris").await["threshold"], 0.4);
    gateway.stop().await;
}
