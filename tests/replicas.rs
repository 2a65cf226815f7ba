//! Three `vigil` processes sharing one real PostgreSQL: a champion change made through one is
//! served by the others within a second (notified) or within the poll interval (notifications
//! off); two writes with the same `If-Match` through two replicas: exactly one wins; the fleet
//! view lists every replica with what it serves; a replica killed under load leaves the others
//! serving; PostgreSQL stopped under load costs no inference, refuses admin writes with 503, and
//! the fleet follows changes again once it is back.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::postgres::Postgres;
use common::process::ServingProcess;
use serde_json::{Value, json};
use std::ffi::OsStr;
use std::time::{Duration, Instant};

const TOKEN: &str = "replica-test-token";

/// One replica on the bundled models, with its own state directory, sharing `database`.
fn replica(database: &str, extra: &[&str]) -> (ServingProcess, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state directory");
    let models = common::models_dir();
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("--models"),
        models.as_os_str(),
        OsStr::new("--state"),
        state.path().as_os_str(),
        OsStr::new("--database-url"),
        OsStr::new(database),
        OsStr::new("--admin-token"),
        OsStr::new(TOKEN),
        OsStr::new("--database-timeout-ms"),
        OsStr::new("1000"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    (ServingProcess::start(&args), state)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The version that answers an unversioned iris request on `replica`.
async fn champion_served(client: &reqwest::Client, replica: &ServingProcess) -> String {
    let body = json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32",
                                  "data": [5.1, 3.5, 1.4, 0.2]}]});
    let response = client
        .post(replica.url("/v2/models/iris/infer"))
        .json(&body)
        .send()
        .await
        .expect("infer sent");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    answer["model_version"]
        .as_str()
        .expect("model_version")
        .to_string()
}

async fn admin(
    client: &reqwest::Client,
    replica: &ServingProcess,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut request = client.request(method, replica.url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(tag) = if_match {
        request = request.header("If-Match", tag);
    }
    let response = request.send().await.expect("admin call sent");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, response.json().await.unwrap_or(Value::Null), etag)
}

/// `GET /admin/models/iris` through `replica`.
async fn iris_report(client: &reqwest::Client, replica: &ServingProcess) -> Value {
    let (status, report, _) = admin(
        client,
        replica,
        reqwest::Method::GET,
        "/admin/models/iris",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    report
}

/// `PUT /admin/models/iris/champion {"version": version}` through `replica`.
async fn promote(
    client: &reqwest::Client,
    replica: &ServingProcess,
    version: &str,
) -> (u16, Value, Option<String>) {
    admin(
        client,
        replica,
        reqwest::Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({ "version": version })),
        None,
    )
    .await
}

/// Waits until every replica serves `version` as iris's champion; returns how long it took.
async fn converge(
    client: &reqwest::Client,
    replicas: &[&ServingProcess],
    version: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for replica in replicas {
            all &= champion_served(client, replica).await == version;
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the replicas did not serve version {version} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_is_served_by_all_and_one_of_two_racing_writes_wins() {
    let postgres = Postgres::start();
    let url = postgres.url();
    let (a, _sa) = replica(&url, &[]);
    let (b, _sb) = replica(&url, &[]);
    let (c, _sc) = replica(&url, &[]);
    let client = client();
    let first = champion_served(&client, &a).await;
    for other in [&b, &c] {
        assert_eq!(
            champion_served(&client, other).await,
            first,
            "one deployment for the fleet"
        );
    }
    let target = if first == "1" { "2" } else { "1" };
    let (status, body, _) = promote(&client, &a, target).await;
    assert_eq!(status, 200, "{body}");
    let took = converge(&client, &[&a, &b, &c], target, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(1),
        "notified replicas took {took:?}"
    );

    // Two writes from the same revision through A and B: exactly one wins, the other gets 412.
    let (_, model, etag) = admin(
        &client,
        &a,
        reqwest::Method::GET,
        "/admin/models/iris",
        None,
        None,
    )
    .await;
    let etag = etag.expect("ETag");
    let revision = model["revision"].as_u64().expect("revision");
    let (on_a, on_b) = tokio::join!(
        admin(
            &client,
            &a,
            reqwest::Method::PUT,
            "/admin/models/iris/threshold",
            Some(json!({"threshold": 0.3})),
            Some(&etag),
        ),
        admin(
            &client,
            &b,
            reqwest::Method::PUT,
            "/admin/models/iris/threshold",
            Some(json!({"threshold": 0.6})),
            Some(&etag),
        ),
    );
    let mut statuses = [on_a.0, on_b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{:?} {:?}", on_a.1, on_b.1);
    let winner = if on_a.0 == 200 { 0.3 } else { 0.6 };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut thresholds = Vec::new();
        for replica in [&a, &b, &c] {
            let model = iris_report(&client, replica).await;
            thresholds.push((model["threshold"].as_f64(), model["revision"].as_u64()));
        }
        if thresholds
            .iter()
            .all(|t| *t == (Some(winner), Some(revision + 1)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{thresholds:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let audited = postgres.sql(&format!(
        "SELECT COUNT(*) FROM audit WHERE model = 'iris' AND revision = {}",
        revision + 1
    ));
    assert_eq!(audited, "1", "the losing write left no audit entry");

    // The fleet view: three replicas, alive, each serving the saved revision.
    let (status, fleet, _) = admin(
        &client,
        &c,
        reqwest::Method::GET,
        "/admin/replicas",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{fleet}");
    let replicas = fleet["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 3, "{fleet}");
    assert_eq!(
        replicas[0]["id"], fleet["replica"],
        "the answering replica first"
    );
    let addresses: Vec<&str> = replicas
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    for replica in [&a, &b, &c] {
        assert!(
            addresses.contains(&replica.address.as_str()),
            "{addresses:?}"
        );
    }
    let saved = fleet["saved"]["iris"].as_u64().expect("saved revision");
    assert_eq!(saved, revision + 1);
    for r in replicas {
        assert_eq!(r["alive"], true, "{r}");
        assert_eq!(r["models"]["iris"]["lag"], 0, "{r}");
        assert_eq!(r["models"]["iris"]["champion"], target, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_the_poll_brings_the_change() {
    let postgres = Postgres::start();
    let url = postgres.url();
    let quiet = ["--state-notifications", "false", "--state-poll-secs", "1"];
    let (a, _sa) = replica(&url, &quiet);
    let (b, _sb) = replica(&url, &quiet);
    let client = client();
    let first = champion_served(&client, &b).await;
    let target = if first == "1" { "2" } else { "1" };
    let (status, body, _) = promote(&client, &a, target).await;
    assert_eq!(status, 200, "{body}");
    let took = converge(&client, &[&b], target, Duration::from_secs(5)).await;
    assert!(
        took <= Duration::from_millis(1500),
        "polled every second, took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_or_a_lost_database_costs_the_others_no_inference() {
    let mut postgres = Postgres::start();
    let url = postgres.url();
    let (a, _sa) = replica(&url, &["--state-poll-secs", "1"]);
    let (b, _sb) = replica(&url, &["--state-poll-secs", "1"]);
    let (c, _sc) = replica(&url, &["--state-poll-secs", "1"]);
    let client = client();

    // Load on A and C while B is killed, then while the database is down for 10 s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for replica in [a.url(""), c.url("")] {
        let client = client.clone();
        let stop = std::sync::Arc::clone(&stop);
        load.push(tokio::spawn(async move {
            let body = json!({"inputs": [{"name": "float_input", "shape": [1, 4],
                                          "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client
                    .post(format!("{replica}/v2/models/iris/infer"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill_9();
    tokio::time::sleep(Duration::from_millis(500)).await;

    postgres.stop();
    let refused_at = Instant::now();
    let (status, body, _) = admin(
        &client,
        &a,
        reqwest::Method::PUT,
        "/admin/models/iris/threshold",
        Some(json!({"threshold": 0.2})),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        refused_at.elapsed() < Duration::from_secs(5),
        "refused after {:?}",
        refused_at.elapsed()
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unavailable"),
        "{body}"
    );
    // Feedback is refused too (nothing is acknowledged that was not stored).
    let refused_at = Instant::now();
    let response = client
        .post(a.url("/v1/models/iris/feedback"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "anything", "label": "setosa"}))
        .send()
        .await
        .expect("feedback sent");
    assert_eq!(response.status(), 503);
    assert!(refused_at.elapsed() < Duration::from_secs(5));
    let answer: Value = response.json().await.expect("JSON error");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unavailable"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    postgres.launch();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        let (ok, failed) = task.await.expect("load task");
        assert!(ok > 100, "only {ok} requests answered");
        assert!(
            failed.is_empty(),
            "{} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }

    // The database is back: a change through C reaches A.
    let first = champion_served(&client, &a).await;
    let target = if first == "1" { "2" } else { "1" };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, _) = promote(&client, &c, target).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    converge(&client, &[&a, &c], target, Duration::from_secs(5)).await;
}

/// Sends `rows` iris rows in one request with `X-Request-Id: id` to `replica`.
async fn infer_rows(client: &reqwest::Client, replica: &ServingProcess, id: &str, rows: usize) {
    let data: Vec<f64> = (0..rows).flat_map(|_| [5.1, 3.5, 1.4, 0.2]).collect();
    let body = json!({"inputs": [{"name": "float_input", "shape": [rows, 4], "datatype": "FP32",
                                  "data": data}]});
    let response = client
        .post(replica.url("/v2/models/iris/infer"))
        .header("X-Request-Id", id)
        .json(&body)
        .send()
        .await
        .expect("infer sent");
    assert_eq!(response.status(), 200);
}

/// Posts feedback `items` to `replica` until every item is accepted or a duplicate (a logged
/// row can take a moment to reach the shared log); returns how many were accepted.
async fn label(client: &reqwest::Client, replica: &ServingProcess, items: &[Value]) -> usize {
    label_at(client, &replica.url(""), items).await
}

/// The champion's live accuracy and label count as `replica` reports them.
async fn quality(client: &reqwest::Client, replica: &ServingProcess) -> Value {
    let (status, quality, _) = admin(
        client,
        replica,
        reqwest::Method::GET,
        "/admin/models/iris/quality",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{quality}");
    quality["versions"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_sent_anywhere_count_once_for_the_fleet() {
    let postgres = Postgres::start();
    let url = postgres.url();
    let fast = ["--state-poll-secs", "1"];
    let (a, _sa) = replica(&url, &fast);
    let (b, _sb) = replica(&url, &fast);
    let (c, _sc) = replica(&url, &fast);
    let client = client();
    let deliveries = tempfile::tempdir().expect("deliveries directory");
    let log = deliveries.path().join("events");
    let command = format!("echo delivered >> {}", log.display());
    let (status, body, _) = admin(
        &client,
        &a,
        reqwest::Method::PUT,
        "/admin/models/iris/retrain",
        Some(json!({"every_labels": 500, "command": ["sh", "-c", command]})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // 1,000 rows answered by A (10 requests of 100 rows), labelled through all three.
    for i in 0..10 {
        infer_rows(&client, &a, &format!("batch-{i}"), 100).await;
    }
    // The trigger set on A reaches B and C with their next poll.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let replicas = [&a, &b, &c];
    let mut clients = Vec::new();
    for k in 0..8usize {
        let items: Vec<Value> = (0..125)
            .map(|j| {
                let n = k * 125 + j;
                let label = if n % 4 == 0 { "versicolor" } else { "setosa" };
                json!({"id": format!("batch-{}", n / 100), "row": n % 100, "label": label})
            })
            .collect();
        let client = client.clone();
        let target = replicas[k % 3].url("");
        clients.push(tokio::spawn(async move {
            let mut accepted = 0;
            for chunk in items.chunks(25) {
                let process_url = target.clone();
                accepted += label_at(&client, &process_url, chunk).await;
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for task in clients {
        accepted += task.await.expect("client task");
    }
    assert_eq!(accepted, 1000, "every label accepted once");
    // A label sent again through another replica is a duplicate there.
    let again = label(
        &client,
        &c,
        &[json!({"id": "batch-0", "row": 0, "label": "versicolor"})],
    )
    .await;
    assert_eq!(again, 0);

    assert_eq!(
        postgres.sql("SELECT COUNT(*) FROM events"),
        "2",
        "one event per 500 labels"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let delivered = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        if delivered >= 2 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let delivered = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .count();
            assert_eq!(delivered, 2, "each event delivered once by the fleet");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} deliveries after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every replica reports the same figures: 1,000 labels, 75 % right.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let figures = [
            quality(&client, &a).await,
            quality(&client, &b).await,
            quality(&client, &c).await,
        ];
        let agree = figures.iter().all(|f| *f == figures[0]);
        let champion = figures[0]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["role"] == "champion"))
            .cloned()
            .unwrap_or(Value::Null);
        if agree && champion["labelled"] == 1000 {
            let accuracy = champion["all"]["accuracy"]["value"]
                .as_f64()
                .expect("accuracy");
            assert!((accuracy - 0.75).abs() < 1e-9, "{champion}");
            break;
        }
        assert!(Instant::now() < deadline, "figures differ: {figures:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`label`] against a replica given by its base URL (for spawned tasks).
async fn label_at(client: &reqwest::Client, base: &str, items: &[Value]) -> usize {
    let mut pending: Vec<Value> = items.to_vec();
    let mut accepted = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pending.is_empty() {
        let response = client
            .post(format!("{base}/v1/models/iris/feedback"))
            .bearer_auth(TOKEN)
            .json(&json!({"items": pending}))
            .send()
            .await
            .expect("feedback sent");
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("JSON");
        let mut retry = Vec::new();
        for (item, result) in pending
            .iter()
            .zip(answer["results"].as_array().expect("results"))
        {
            match result["status"].as_str() {
                Some("accepted") => accepted += 1,
                Some("duplicate") => {}
                _ => retry.push(item.clone()),
            }
        }
        pending = retry;
        assert!(Instant::now() < deadline, "labels never accepted: {answer}");
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    accepted
}

/// Class indices `version` of iris predicts for `rows`.
async fn predict(
    client: &reqwest::Client,
    replica: &ServingProcess,
    version: &str,
    rows: &[[f64; 4]],
) -> Vec<i64> {
    let data: Vec<f64> = rows.iter().flatten().copied().collect();
    let body = json!({"inputs": [{"name": "float_input", "shape": [rows.len(), 4],
                                  "datatype": "FP32", "data": data}]});
    let answer: Value = client
        .post(replica.url(&format!("/v2/models/iris/versions/{version}/infer")))
        .json(&body)
        .send()
        .await
        .expect("infer sent")
        .json()
        .await
        .expect("JSON");
    answer["outputs"][0]["data"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|v| v.as_i64().expect("class index"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_shown_better_is_promoted_once_for_the_fleet() {
    let postgres = Postgres::start();
    let url = postgres.url();
    let fast = ["--state-poll-secs", "1"];
    let (a, _sa) = replica(&url, &fast);
    let (b, _sb) = replica(&url, &fast);
    let (c, _sc) = replica(&url, &fast);
    let client = client();
    let champion = champion_served(&client, &a).await;
    let shadow = if champion == "1" { "3" } else { "1" };

    // Rows near the versicolor/virginica boundary, where the two versions disagree on some.
    let grid: Vec<[f64; 4]> = (0..20)
        .flat_map(|l| {
            (0..20).map(move |w| {
                [
                    6.0,
                    2.9,
                    4.0 + 0.1 * f64::from(l),
                    1.2 + 0.05 * f64::from(w),
                ]
            })
        })
        .collect();
    let by_champion = predict(&client, &a, &champion, &grid).await;
    let by_shadow = predict(&client, &a, shadow, &grid).await;
    let disagree: Vec<usize> = (0..grid.len())
        .filter(|&i| by_champion[i] != by_shadow[i])
        .collect();
    assert!(
        disagree.len() >= 10,
        "only {} rows where the versions disagree",
        disagree.len()
    );
    // 300 requests: every other one a row where they disagree (the shadow's answer is the truth).
    let rows: Vec<usize> = (0..300)
        .map(|i| {
            if i % 2 == 0 {
                disagree[i / 2 % disagree.len()]
            } else {
                i % grid.len()
            }
        })
        .collect();

    for (path, body) in [
        (
            format!("/admin/models/iris/shadows/{shadow}"),
            json!({"fraction": 1.0}),
        ),
        (
            "/admin/models/iris/promotion".to_string(),
            json!({"mode": "auto", "min_labels": 100}),
        ),
    ] {
        let (status, answer, _) =
            admin(&client, &a, reqwest::Method::PUT, &path, Some(body), None).await;
        assert_eq!(status, 200, "{answer}");
    }
    let revision = postgres.sql("SELECT revision FROM deployments WHERE model = 'iris'");
    let deadline = Instant::now() + Duration::from_secs(5);
    for replica in [&b, &c] {
        loop {
            let model = iris_report(&client, replica).await;
            if model["revision"].as_u64().map(|r| r.to_string()).as_deref()
                == Some(revision.as_str())
            {
                break;
            }
            assert!(Instant::now() < deadline, "{model}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Traffic through all three (each mirrors its own to the shadow), then the truth.
    let replicas = [&a, &b, &c];
    for (i, &row) in rows.iter().enumerate() {
        let body = json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32",
                                      "data": grid[row]}]});
        let response = client
            .post(replicas[i % 3].url("/v2/models/iris/infer"))
            .header("X-Request-Id", format!("p{i}"))
            .json(&body)
            .send()
            .await
            .expect("infer sent");
        assert_eq!(response.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let items: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, &row)| json!({"id": format!("p{i}"), "label": by_shadow[row]}))
        .collect();
    for (k, chunk) in items.chunks(50).enumerate() {
        assert_eq!(label(&client, replicas[k % 3], chunk).await, chunk.len());
    }

    converge(&client, &[&a, &b, &c], shadow, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let promotions = postgres
        .sql("SELECT COUNT(*) FROM audit WHERE model = 'iris' AND entry->>'actor' = 'promotion'");
    assert_eq!(promotions, "1", "promoted once, audited once");
    for replica in [&a, &b, &c] {
        assert_eq!(champion_served(&client, replica).await, shadow);
    }
}

#[test]
fn an_unreachable_database_refuses_start_up_without_showing_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let state = tempfile::tempdir().expect("state");
    let started = Instant::now();
    let output = common::process::vigil()
        .args(["serve", "--addr", "127.0.0.1:0", "--models"])
        .arg(common::models_dir())
        .arg("--state")
        .arg(state.path())
        .args(["--database-timeout-ms", "500", "--database-url"])
        .arg(format!("postgres://vigil:hunter2@127.0.0.1:{port}/vigil"))
        .output()
        .expect("vigil runs");
    assert!(!output.status.success(), "start-up must be refused");
    assert!(started.elapsed() < Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("unavailable"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is never shown: {stderr}"
    );
}
