//! The web console on a real gateway: its embedded files (content types, security headers, strong
//! ETags and 304 revalidation, no token needed), the page loading only its own scripts, and the
//! admin routes it reads: the monitoring history, the outlier histogram and the audit log.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{TOKEN, admin_config, admin_gateway, admin_ok, audit_lines, iris_rows};
use common::{TestGateway, models_dir, root, v2_body};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Every file embedded from `console/`, with the media type it is served as.
const FILES: [(&str, &str); 13] = [
    ("index.html", "text/html"),
    ("style.css", "text/css"),
    ("app.js", "text/javascript"),
    ("api.js", "text/javascript"),
    ("format.js", "text/javascript"),
    ("board.js", "text/javascript"),
    ("compare.js", "text/javascript"),
    ("deploy.js", "text/javascript"),
    ("monitor.js", "text/javascript"),
    ("vendor/htm-preact-standalone-3.1.1.mjs", "text/javascript"),
    ("vendor/uplot-1.6.32.iife.min.js", "text/javascript"),
    ("vendor/uplot-1.6.32.min.css", "text/css"),
    ("vendor/LICENSES.md", "text/markdown"),
];

/// The outlier-score bucket edges of the monitoring view.
const EDGES: [f64; 14] = [
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999,
];

/// The iris class names, by label index.
const IRIS_CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];

/// A client that reports redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn header_text(response: &reqwest::Response, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("{}: no {name} header", response.url()))
        .to_str()
        .expect("ASCII header")
}

/// Checks the headers every console answer carries (200 and 304 alike); returns the ETag.
fn check_console_headers(response: &reqwest::Response) -> String {
    let url = response.url().to_string();
    let etag = header_text(response, header::ETAG).to_string();
    let hex = etag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{url}: ETag {etag} is not a quoted strong tag"));
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{url}: ETag {etag} is not 32 hex digits"
    );
    assert_eq!(
        header_text(response, header::CACHE_CONTROL),
        "no-cache",
        "{url}"
    );
    let csp = header_text(response, header::CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{url}: CSP {csp} lacks {directive}"
        );
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{url}: {csp}"
    );
    assert_eq!(
        header_text(response, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff",
        "{url}"
    );
    assert_eq!(
        header_text(response, header::REFERRER_POLICY),
        "no-referrer",
        "{url}"
    );
    etag
}

/// The media type of a response, without parameters.
fn media_type(response: &reqwest::Response) -> String {
    header_text(response, header::CONTENT_TYPE)
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// GET `path` without a token, with an optional `If-None-Match`.
async fn get_console(
    gateway: &TestGateway,
    path: &str,
    if_none_match: Option<&str>,
) -> reqwest::Response {
    let mut request = gateway.client.get(gateway.url(path));
    if let Some(tag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    request.send().await.expect("GET sent")
}

/// GET `path` without a token: status and body.
async fn get_without_token(gateway: &TestGateway, path: &str) -> (StatusCode, Value) {
    let response = gateway.client.get(gateway.url(path)).send().await;
    common::json_response(path, response.expect("GET sent")).await
}

#[tokio::test]
async fn every_console_file_is_served_with_security_headers_and_revalidation() {
    // An admin token is configured: the console's files still need none.
    let gateway = admin_gateway(&models_dir()).await;
    let (status, body) = get_without_token(&gateway, "/admin/models").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "admin routes need the token: {body}"
    );

    let mut etags = HashSet::new();
    let mut page_bytes = 0usize;
    for (file, expected_type) in FILES {
        let path = format!("/console/{file}");
        let response = get_console(&gateway, &path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(media_type(&response), expected_type, "{path}");
        let etag = check_console_headers(&response);
        let body = response.bytes().await.expect("body");
        assert!(!body.is_empty(), "{path} is empty");
        let on_disk = std::fs::read(root().join("console").join(file)).expect("console file");
        assert!(
            body.as_ref() == on_disk.as_slice(),
            "{path} is not the file console/{file}"
        );
        if ["html", "js", "mjs", "css"]
            .iter()
            .any(|ext| file.ends_with(&format!(".{ext}")))
        {
            page_bytes += body.len();
        }

        // Revalidation: the tag itself, weak, in a list, or `*` answer 304 with no body.
        let weak = format!("W/{etag}");
        let listed = format!("\"abc\", {etag}");
        for tag in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
            let response = get_console(&gateway, &path, Some(tag)).await;
            assert_eq!(
                response.status(),
                StatusCode::NOT_MODIFIED,
                "{path} If-None-Match: {tag}"
            );
            assert_eq!(check_console_headers(&response), etag, "{path}: {tag}");
            let body = response.bytes().await.expect("body");
            assert!(body.is_empty(), "{path}: a 304 has no body ({tag})");
        }
        // Another tag: the file again.
        let other = format!("\"{}\"", "0".repeat(32));
        let response = get_console(&gateway, &path, Some(&other)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}: {other}");
        assert_eq!(check_console_headers(&response), etag);
        assert_eq!(
            response.bytes().await.expect("body").as_ref(),
            on_disk.as_slice(),
            "{path}: {other}"
        );
        assert!(
            etags.insert(etag.clone()),
            "{path}: ETag {etag} already used"
        );
    }
    assert_eq!(etags.len(), FILES.len(), "one ETag per file");
    assert!(
        page_bytes < 150 * 1024,
        "the page's html, js and css weigh {page_bytes} bytes"
    );

    // `/console/` is the page; another file's ETag does not make it 304.
    let index = get_console(&gateway, "/console/index.html", None).await;
    let index_etag = check_console_headers(&index);
    let index_body = index.bytes().await.expect("body");
    let page = get_console(&gateway, "/console/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(media_type(&page), "text/html");
    assert_eq!(check_console_headers(&page), index_etag);
    assert_eq!(page.bytes().await.expect("body"), index_body);
    let app_etag = check_console_headers(&get_console(&gateway, "/console/app.js", None).await);
    let page = get_console(&gateway, "/console/", Some(&app_etag)).await;
    assert_eq!(page.status(), StatusCode::OK, "another file's ETag");
    let page = get_console(&gateway, "/console/", Some(&index_etag)).await;
    assert_eq!(page.status(), StatusCode::NOT_MODIFIED);

    // `/console` redirects to the page.
    let response = no_redirects()
        .get(gateway.url("/console"))
        .send()
        .await
        .expect("GET sent");
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header_text(&response, header::LOCATION), "/console/");

    // Files that are not embedded are not found, by name; nothing escapes `console/`.
    for (path, named) in [
        ("/console/missing.js", "/console/missing.js"),
        ("/console/vendor/missing.css", "/console/vendor/missing.css"),
        ("/console/%2E%2E%2FCargo.toml", "Cargo.toml"),
    ] {
        let (status, body) = get_without_token(&gateway, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        let error = body["error"].as_str().expect("error message");
        assert!(error.contains(named), "{path}: {error}");
    }
    gateway.stop().await;
}

/// The value of attribute `name` in the HTML start tag `tag` (`<script ...>`), if any.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &tag[at..];
    let quote = rest.chars().next()?;
    if quote == '"' || quote == '\'' {
        rest[1..].find(quote).map(|end| rest[1..=end].to_string())
    } else {
        Some(
            rest.split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

/// A same-origin relative reference: no scheme, no host, no absolute path.
fn is_relative(reference: &str) -> bool {
    !reference.is_empty()
        && !reference.contains(':')
        && !reference.starts_with('/')
        && !reference.starts_with('\\')
}

/// `reference` resolved against the directory of the console file `from`.
fn resolve(from: &str, reference: &str) -> String {
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for part in reference.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                assert!(
                    parts.pop().is_some(),
                    "{reference} leaves console/ from {from}"
                );
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// The module specifiers a console script imports (static and dynamic imports).
fn imports(source: &str) -> Vec<String> {
    let quoted = |text: &str| {
        let quote = text.chars().next()?;
        (quote == '"' || quote == '\'')
            .then(|| text[1..].find(quote).map(|end| text[1..=end].to_string()))
            .flatten()
    };
    let mut found = Vec::new();
    for line in source.lines().map(str::trim) {
        if (line.starts_with("import ") || line.starts_with("export ") || line.starts_with('}'))
            && let Some(at) = line.find(" from ")
        {
            found.extend(quoted(line[at + 6..].trim_start()));
        } else if let Some(rest) = line.strip_prefix("import ") {
            found.extend(quoted(rest.trim_start()));
        }
        let mut rest = line;
        while let Some(at) = rest.find("import(") {
            rest = &rest[at + 7..];
            found.extend(quoted(rest.trim_start()));
        }
    }
    found
}

#[tokio::test]
async fn the_console_page_loads_only_its_own_scripts() {
    let gateway = admin_gateway(&models_dir()).await;
    let response = get_console(&gateway, "/console/", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.expect("page");
    let lower = page.to_ascii_lowercase();
    let embedded: BTreeMap<&str, &str> = FILES.into_iter().collect();

    // Scripts: each one a relative `src`, with an empty body (the CSP forbids inline scripts).
    let mut scripts = Vec::new();
    let mut rest = lower.as_str();
    let mut offset = 0;
    while let Some(at) = rest.find("<script") {
        let start = offset + at;
        let end = start + page[start..].find('>').expect("script tag closed");
        let tag = &page[start..=end];
        let src = attribute(tag, "src").unwrap_or_else(|| panic!("inline script: {tag}"));
        assert!(is_relative(&src), "script from elsewhere: {tag}");
        assert!(
            lower[end + 1..].starts_with("</script>"),
            "script with an inline body: {tag}"
        );
        scripts.push(src);
        offset = end + 1;
        rest = &lower[offset..];
    }
    assert!(!scripts.is_empty(), "the page loads a script: {page}");
    // No inline event handlers either (`onclick=` ...), which the CSP would block.
    for (i, _) in lower.match_indices(" on") {
        let name: String = lower[i + 1..]
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        assert!(
            !(name.len() > 2 && lower[i + 1 + name.len()..].starts_with('=')),
            "inline event handler `{name}` in the page"
        );
    }

    // Stylesheets: relative too.
    let mut stylesheets = Vec::new();
    for (start, _) in lower.match_indices("<link") {
        let end = start + page[start..].find('>').expect("link tag closed");
        let tag = &page[start..=end];
        if attribute(&tag.to_ascii_lowercase(), "rel").as_deref() == Some("stylesheet") {
            let href = attribute(tag, "href").expect("stylesheet href");
            assert!(is_relative(&href), "stylesheet from elsewhere: {tag}");
            stylesheets.push(href);
        }
    }

    // Everything the page loads is served, as the right type; so is every module the scripts
    // import, by relative specifier, down the whole module graph.
    let mut pending: Vec<(String, &str)> = scripts
        .iter()
        .map(|src| (resolve("index.html", src), "text/javascript"))
        .chain(
            stylesheets
                .iter()
                .map(|href| (resolve("index.html", href), "text/css")),
        )
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((file, expected_type)) = pending.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        assert!(
            embedded.contains_key(file.as_str()),
            "{file} is not embedded"
        );
        let response = get_console(&gateway, &format!("/console/{file}"), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(media_type(&response), expected_type, "{file}");
        let text = response.text().await.expect("text");
        if expected_type == "text/javascript" && !file.starts_with("vendor/") {
            for specifier in imports(&text) {
                assert!(
                    specifier.starts_with("./") || specifier.starts_with("../"),
                    "{file} imports `{specifier}`: not a same-origin relative module"
                );
                pending.push((resolve(&file, &specifier), "text/javascript"));
            }
        }
    }
    for module in ["app.js", "api.js", "vendor/htm-preact-standalone-3.1.1.mjs"] {
        assert!(seen.contains(module), "{module} not loaded: {seen:?}");
    }
    gateway.stop().await;
}

/// `GET /admin/models/iris/monitoring/history`, which must succeed.
async fn iris_history(gateway: &TestGateway) -> Value {
    admin_ok(
        gateway,
        Method::GET,
        "/admin/models/iris/monitoring/history",
        None,
    )
    .await
}

/// The history of iris version 3 (the champion), which must come first.
fn champion_history(history: &Value) -> Option<&Value> {
    let versions = history["versions"].as_array().expect("versions");
    let found = versions.iter().position(|v| v["version"] == "3")?;
    assert_eq!(found, 0, "the champion comes first: {history}");
    Some(&versions[found])
}

fn points(version: &Value) -> &[Value] {
    version["points"].as_array().expect("points")
}

fn requests(point: &Value) -> u64 {
    point["requests"].as_u64().expect("requests")
}

fn time(point: &Value) -> f64 {
    point["time"].as_f64().expect("time")
}

/// What must hold of every snapshot of the champion's history. `first_time` is the time of the
/// first point ever seen of the version (the only one without a previous point).
fn check_points(version: &Value, first_time: f64) {
    let points = points(version);
    assert!(
        !points.is_empty() && points.len() <= 5,
        "at most `history_points` points: {version}"
    );
    assert_eq!(version["role"], "champion", "{version}");
    for (i, point) in points.iter().enumerate() {
        assert_eq!(point["role"], "champion", "{point}");
        assert_eq!(point["errors"], 0, "{point}");
        for field in [
            "latency_p50",
            "latency_p95",
            "latency_p99",
            "acceptance_rate",
            "outlier_rate",
            "agreement_rate",
            "prediction_mean",
            "live_accuracy",
            "live_mae",
        ] {
            assert!(point.get(field).is_some(), "{field} missing: {point}");
        }
        if i == 0 {
            if time(point) > first_time {
                assert!(
                    point["request_rate"].is_f64(),
                    "only the version's first point has no rate: {version}"
                );
            }
            continue;
        }
        let previous = &points[i - 1];
        let elapsed = time(point) - time(previous);
        assert!(elapsed > 0.0, "points are oldest first: {version}");
        assert!(requests(point) >= requests(previous), "{version}");
        let rate = point["request_rate"]
            .as_f64()
            .unwrap_or_else(|| panic!("point {i} has a previous point but no rate: {version}"));
        let expected = (requests(point) - requests(previous)) as f64 / elapsed;
        // Times near 1.8e9 s travel as JSON with an error of an ulp or so (~2.4e-7 s).
        let tolerance = expected * 2e-6 / elapsed + 1e-9;
        assert!(
            (rate - expected).abs() <= tolerance,
            "rate {rate}, expected {expected}: {version}"
        );
    }
    let window = &version["window"];
    assert_eq!(window["from"], points[0]["time"], "{version}");
    assert_eq!(window["to"], points[points.len() - 1]["time"], "{version}");
    let histogram = &window["outlier_histogram"];
    assert_eq!(histogram["edges"], json!(EDGES), "{version}");
    assert_eq!(
        histogram["counts"].as_array().expect("counts").len(),
        15,
        "{version}"
    );
}

/// Polls the iris history until `done` holds of the champion's history (checking every snapshot);
/// returns that snapshot.
async fn poll_history(
    gateway: &TestGateway,
    first_time: &mut Option<f64>,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let history = iris_history(gateway).await;
        if let Some(version) = champion_history(&history) {
            let first = *first_time.get_or_insert(time(&points(version)[0]));
            check_points(version, first);
            if done(version) {
                return version.clone();
            }
        }
        assert!(Instant::now() < deadline, "{what}: {history}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends each row as its own v2 request to iris, `concurrency` at a time; returns the predicted
/// class of each.
async fn infer_one_by_one(
    gateway: &TestGateway,
    rows: &[Vec<f64>],
    concurrency: usize,
) -> Vec<String> {
    let mut classes = Vec::new();
    for wave in rows.chunks(concurrency) {
        let mut tasks = JoinSet::new();
        for row in wave {
            let client = gateway.client.clone();
            let url = gateway.url("/v2/models/iris/infer");
            let body = v2_body("float_input", std::slice::from_ref(row));
            tasks.spawn(async move {
                let response = client.post(url).json(&body).send().await.expect("sent");
                assert_eq!(response.status(), StatusCode::OK);
                response.json::<Value>().await.expect("JSON")
            });
        }
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.expect("request task");
            let label = answer["outputs"]
                .as_array()
                .expect("outputs")
                .iter()
                .find(|o| o["name"] == "label")
                .and_then(|o| o["data"][0].as_u64())
                .unwrap_or_else(|| panic!("no label: {answer}"));
            classes.push(IRIS_CLASSES[usize::try_from(label).expect("index")].to_string());
        }
    }
    classes
}

/// `n` rows cycling through the iris fixture rows.
fn cycled_rows(n: usize) -> Vec<Vec<f64>> {
    iris_rows().into_iter().cycle().take(n).collect()
}

#[tokio::test]
async fn the_monitoring_history_keeps_the_newest_points_and_their_window() {
    let mut config = admin_config(&models_dir());
    config.history_interval = Duration::from_millis(50);
    config.history_points = 5;
    let gateway = TestGateway::start_with(config).await;

    let (status, body) = gateway
        .admin(Method::GET, "/admin/models/nope/monitoring/history", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = get_without_token(&gateway, "/admin/models/iris/monitoring/history").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let history = iris_history(&gateway).await;
    assert_eq!(history["model"], "iris");
    assert_eq!(history["interval_seconds"], 0.05);
    assert_eq!(history["points_kept"], 5);

    let mut first_time = None;
    poll_history(&gateway, &mut first_time, "two points", |v| {
        points(v).len() >= 2
    })
    .await;
    // Some traffic before the window, so that the window's counts are differences.
    let mut sent = 10u64;
    infer_one_by_one(&gateway, &cycled_rows(10), 1).await;

    let mut attempts = 0;
    let (window, newest, oldest, classes) = loop {
        attempts += 1;
        // Quiet for more than the points kept: the window is full and holds no traffic.
        let quiet = poll_history(&gateway, &mut first_time, "a quiet full window", |v| {
            let points = points(v);
            points.len() == 5 && points.iter().all(|p| requests(p) == sent)
        })
        .await;
        assert!(
            quiet["window"]["predictions"]
                .as_object()
                .expect("predictions")
                .values()
                .all(|count| count == 0),
            "no traffic in the window: {quiet}"
        );
        // The oldest point is dropped as new ones come.
        let older = time(&points(&quiet)[0]);
        let ready = poll_history(&gateway, &mut first_time, "the oldest point dropped", |v| {
            time(&points(v)[0]) > older
        })
        .await;
        let before = time(points(&ready).last().expect("points"));

        let classes = infer_one_by_one(&gateway, &cycled_rows(40), 4).await;
        sent += 40;
        let after = poll_history(
            &gateway,
            &mut first_time,
            "a point after the traffic",
            |v| points(v).last().is_some_and(|p| requests(p) == sent),
        )
        .await;
        let oldest = points(&after)[0].clone();
        // The window holds the whole traffic when its oldest point was taken before it.
        if time(&oldest) <= before {
            let newest = points(&after).last().expect("points").clone();
            break (after["window"].clone(), newest, oldest, classes);
        }
        assert!(
            attempts < 5,
            "40 requests never fitted in a window of 5 points 50 ms apart"
        );
    };

    assert_eq!(requests(&oldest), sent - 40, "{oldest}");
    assert_eq!(requests(&newest) - requests(&oldest), 40);
    let latency = newest["latency_p50"].as_f64().expect("latency_p50");
    assert!(latency > 0.0, "{newest}");
    assert!(
        newest["outlier_rate"].is_f64(),
        "iris 3 scores outliers: {newest}"
    );
    assert_eq!(
        newest["acceptance_rate"], 1.0,
        "threshold 0 accepts all: {newest}"
    );

    // The window counts the predictions between its oldest and newest points, by class.
    let mut expected: BTreeMap<String, u64> = IRIS_CLASSES
        .iter()
        .map(|name| (name.to_string(), 0))
        .collect();
    for class in &classes {
        *expected.get_mut(class).expect("known class") += 1;
    }
    let predictions: BTreeMap<String, u64> =
        serde_json::from_value(window["predictions"].clone()).expect("class counts");
    assert_eq!(predictions, expected, "{window}");
    assert_eq!(predictions.values().sum::<u64>(), 40);
    let scored: u64 = window["outlier_histogram"]["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| c.as_u64().expect("count"))
        .sum();
    assert_eq!(scored, 40, "each row scored once: {window}");
    gateway.stop().await;
}

/// The bucket of `score` among [`EDGES`]: `0` below the first edge, `i` in `[edges[i-1],
/// edges[i])`, 14 at or above the last.
fn bucket(score: f64) -> usize {
    EDGES.partition_point(|&edge| edge <= score)
}

#[tokio::test]
async fn the_outlier_histogram_counts_every_scored_row() {
    let gateway = admin_gateway(&models_dir()).await;
    let mut rows = iris_rows();
    rows.extend([
        vec![30.0, 30.0, 30.0, 30.0],
        vec![0.0, 0.0, 0.0, 0.0],
        vec![4.3, 4.4, 6.9, 0.1],
        vec![7.9, 2.0, 1.0, 2.5],
    ]);
    let mut expected = [0u64; 15];
    let mut outliers = 0u64;
    for batch in rows.chunks(5) {
        let mut body = v2_body("float_input", batch);
        body["parameters"] = json!({"outlier_score": true});
        let (status, answer) = gateway.post_json("/v2/models/iris/infer", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let scores = answer["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["name"] == "outlier_score")
            .unwrap_or_else(|| panic!("no outlier_score: {answer}"))["data"]
            .as_array()
            .expect("scores")
            .clone();
        assert_eq!(scores.len(), batch.len());
        for score in scores {
            // FP32 on the wire: back to the exact f32 the gateway bucketed.
            let score = f64::from(score.as_f64().expect("score") as f32);
            expected[bucket(score)] += 1;
            if score >= 0.99 {
                outliers += 1;
            }
        }
    }
    assert!(
        expected[14] >= 1,
        "a row far from the reference scores ≥ 0.999: {expected:?}"
    );

    let view = admin_ok(&gateway, Method::GET, "/admin/models/iris/monitoring", None).await;
    let champion = &view["versions"][0];
    assert_eq!(champion["version"], "3", "{view}");
    let rate = champion["outlier_rate"]
        .as_f64()
        .unwrap_or_else(|| panic!("iris 3 has reference data: {champion}"));
    let histogram = &champion["outlier_histogram"];
    assert_eq!(histogram["edges"], json!(EDGES), "{histogram}");
    let counts: Vec<u64> = serde_json::from_value(histogram["counts"].clone()).expect("counts");
    assert_eq!(counts.len(), 15, "{histogram}");
    assert_eq!(
        counts.iter().sum::<u64>(),
        rows.len() as u64,
        "every scored row counted once: {histogram}"
    );
    assert_eq!(counts, expected, "rows by their scores: {histogram}");
    assert!(
        (rate - outliers as f64 / rows.len() as f64).abs() < 1e-12,
        "outlier_rate {rate} is the share of scores ≥ the cut 0.99: {histogram}"
    );
    // The cut is an edge: the buckets above it hold exactly the outliers.
    assert_eq!(counts[12..].iter().sum::<u64>(), outliers, "{histogram}");

    let (status, body) = gateway
        .admin(Method::GET, "/admin/models/nope/monitoring", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    gateway.stop().await;
}

/// `GET /admin/models/{model}/audit{query}`: status and body.
async fn audit(gateway: &TestGateway, model: &str, query: &str) -> (StatusCode, Value) {
    gateway
        .admin(
            Method::GET,
            &format!("/admin/models/{model}/audit{query}"),
            None,
        )
        .await
}

/// The entries of an audit answer that must succeed.
async fn audit_entries(gateway: &TestGateway, model: &str, query: &str) -> Vec<Value> {
    let (status, body) = audit(gateway, model, query).await;
    assert_eq!(status, StatusCode::OK, "{model}{query}: {body}");
    assert_eq!(body["model"], model, "{body}");
    body["entries"].as_array().expect("entries").clone()
}

#[tokio::test]
async fn the_audit_route_lists_a_models_changes_newest_first() {
    let gateway = admin_gateway(&models_dir()).await;
    let state = gateway.state_dir().expect("state directory").to_path_buf();
    let at_start = audit_entries(&gateway, "iris", "").await;

    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/champion",
        Some(json!({"version": "1"})),
    )
    .await;
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/diabetes/policy",
        Some(json!({"policy": "shadow"})),
    )
    .await;
    admin_ok(
        &gateway,
        Method::PUT,
        "/admin/models/iris/threshold",
        Some(json!({"threshold": 0.4})),
    )
    .await;

    let entries = audit_entries(&gateway, "iris", "").await;
    assert_eq!(entries.len(), at_start.len() + 2, "{entries:?}");
    let (threshold, promote) = (&entries[0], &entries[1]);
    assert_eq!(threshold["action"], "threshold", "{threshold}");
    assert_eq!(threshold["actor"], "admin", "{threshold}");
    assert_eq!(threshold["after"]["threshold"], 0.4, "{threshold}");
    assert_eq!(promote["action"], "promote", "{promote}");
    assert_eq!(promote["before"]["champion"], "3", "{promote}");
    assert_eq!(promote["after"]["champion"], "1", "{promote}");
    assert_eq!(
        threshold["before"], promote["after"],
        "one change after the other"
    );
    assert_eq!(
        &entries[2..],
        at_start.as_slice(),
        "older entries unchanged"
    );
    for entry in &entries {
        for field in [
            "time", "actor", "action", "model", "revision", "before", "after",
        ] {
            assert!(entry.get(field).is_some(), "{field} missing: {entry}");
        }
        assert_eq!(entry["model"], "iris", "{entry}");
        assert_eq!(entry["revision"], entry["after"]["revision"], "{entry}");
    }
    let revisions: Vec<u64> = entries
        .iter()
        .map(|e| e["revision"].as_u64().expect("revision"))
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[0] > w[1]),
        "newest first: {revisions:?}"
    );
    // What the log file holds for iris, newest first.
    let mut logged: Vec<Value> = audit_lines(&state)
        .into_iter()
        .filter(|e| e["model"] == "iris")
        .collect();
    logged.reverse();
    assert_eq!(entries, logged);

    let diabetes = audit_entries(&gateway, "diabetes", "").await;
    assert_eq!(diabetes[0]["action"], "policy", "{diabetes:?}");
    assert!(
        diabetes.iter().all(|e| e["model"] == "diabetes"),
        "{diabetes:?}"
    );

    let one = audit_entries(&gateway, "iris", "?limit=1").await;
    assert_eq!(one, entries[..1].to_vec());
    let two = audit_entries(&gateway, "iris", "?limit=2").await;
    assert_eq!(two, entries[..2].to_vec());

    // More changes than the default limit: 50 answered unless asked for more.
    for i in 1..=50 {
        admin_ok(
            &gateway,
            Method::PUT,
            "/admin/models/iris/threshold",
            Some(json!({"threshold": f64::from(i) / 100.0})),
        )
        .await;
    }
    let all = audit_entries(&gateway, "iris", "?limit=1000").await;
    assert_eq!(all.len(), entries.len() + 50);
    assert_eq!(all[0]["after"]["threshold"], 0.5, "{}", all[0]);
    assert_eq!(&all[50..], entries.as_slice());
    let default = audit_entries(&gateway, "iris", "").await;
    assert_eq!(default, all[..50].to_vec(), "the default limit is 50");

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=abc", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=", "limit"),
        ("?foo=1", "foo"),
        ("?limit=5&foo=1", "foo"),
    ] {
        let (status, body) = audit(&gateway, "iris", query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error = body["error"].as_str().expect("error message");
        assert!(error.contains(field), "{query}: {error}");
    }
    let (status, body) = audit(&gateway, "nope", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = get_without_token(&gateway, "/admin/models/iris/audit").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let response = gateway
        .client
        .get(gateway.url("/admin/models/iris/audit"))
        .bearer_auth(format!("{TOKEN}-wrong"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    gateway.stop().await;
}
