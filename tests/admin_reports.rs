//! The admin reports on real gateways: every version with its metadata, scores, status and role,
//! the best validation version, and version downloads as `.tar.gz`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{
    TOKEN, admin_gateway, best_by_validation, model_names, model_toml, report, validation_score,
    version_names, version_of,
};
use common::{TestGateway, models_dir};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Checks one model report against the repository it was loaded from (fresh gateway: highest
/// version is champion, no shadows, manual policy).
async fn check_fresh_report(gateway: &TestGateway, repo: &Path, report: &Value) {
    let model = report["name"].as_str().expect("name");
    let names = version_names(repo, model);
    let champion = names.last().expect("versions").clone();
    assert_eq!(report["champion"], champion.as_str(), "{model}");
    assert_eq!(report["shadows"], json!([]), "{model}");
    assert_eq!(report["history"], json!([]), "{model}");
    assert_eq!(report["policy"], "manual", "{model}");
    let champion_threshold = model_toml(repo, model, &champion)
        .get("threshold")
        .and_then(toml::Value::as_float)
        .unwrap_or(0.0);
    assert_eq!(report["threshold"].as_f64(), Some(champion_threshold));
    assert_eq!(
        report["best_validation"],
        best_by_validation(repo, model).as_str(),
        "{model}"
    );
    let listed: Vec<&str> = report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_str().expect("version"))
        .collect();
    assert_eq!(listed, names, "{model}");

    for name in &names {
        let entry = version_of(report, name);
        let context = format!("{model}/{name}");
        let meta = model_toml(repo, model, name);
        let text = |key: &str| meta.get(key).and_then(toml::Value::as_str);
        assert_eq!(entry["status"], "ready", "{context}");
        assert!(entry.get("reason").is_none(), "{context}");
        assert_eq!(
            entry["role"],
            if *name == champion {
                "champion"
            } else {
                "idle"
            },
            "{context}"
        );
        assert_eq!(entry["task"].as_str(), text("task"), "{context}");
        assert_eq!(
            entry["created_at"].as_str(),
            text("created_at"),
            "{context}"
        );
        assert!(entry["created_at"].is_string(), "{context}");
        assert_eq!(entry["run"].as_str(), text("run"), "{context}");
        assert!(entry["run"].is_string(), "{context}");
        assert_eq!(
            entry["description"].as_str(),
            text("description"),
            "{context}"
        );
        assert_eq!(entry["highlight"].as_str(), text("highlight"), "{context}");

        let params: BTreeMap<String, Value> = meta
            .get("params")
            .and_then(toml::Value::as_table)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.clone(), json!(v.as_str().expect("string param"))))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !params.is_empty(),
            "{context}: the bundled versions have params"
        );
        assert_eq!(entry["params"], json!(params), "{context}");

        for split in ["validation", "test"] {
            let expected = meta["metrics"][split].as_table().expect("metrics table");
            let reported = entry["metrics"][split].as_object().expect("metrics object");
            assert_eq!(
                reported.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "{context} {split}"
            );
            for (metric, value) in expected {
                let value = value.as_float().expect("float metric");
                let got = reported[metric].as_f64().expect("number");
                assert!((got - value).abs() < 1e-12, "{context} {split}.{metric}");
            }
        }
        let (_, score) = validation_score(repo, model, name);
        assert_eq!(entry["highlight_score"].as_f64(), Some(score), "{context}");

        let onnx = repo.join(model).join(name).join("model.onnx");
        let size = std::fs::metadata(&onnx).expect("model.onnx").len();
        assert!(size > 0);
        assert_eq!(entry["file_size"].as_u64(), Some(size), "{context}");
        assert!(entry["load_time_ms"].as_f64().expect("load time") > 0.0);
        assert_eq!(entry["accepted_rows"], 0, "{context}");
        assert_eq!(entry["rejected_rows"], 0, "{context}");

        // Inputs and outputs are the ones the v2 metadata route serves.
        let (status, metadata) = gateway
            .get_json(&format!("/v2/models/{model}/versions/{name}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{metadata}");
        for side in ["inputs", "outputs"] {
            let reported = entry[side].as_array().expect(side);
            let served = metadata[side].as_array().expect(side);
            assert!(!reported.is_empty(), "{context} {side}");
            assert_eq!(reported.len(), served.len(), "{context} {side}");
            for (r, s) in reported.iter().zip(served) {
                for key in ["name", "datatype", "shape"] {
                    assert_eq!(r[key], s[key], "{context} {side} {key}");
                }
            }
        }
        let outputs: Vec<&str> = entry["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(|o| o["name"].as_str().expect("output name"))
            .collect();
        let classifier = text("task") == Some("classification");
        assert_eq!(
            outputs.contains(&"confidence") && outputs.contains(&"accepted"),
            classifier,
            "{context}: {outputs:?}"
        );
    }
}

#[tokio::test]
async fn models_report_every_version_with_its_metadata() {
    let repo = models_dir();
    let gateway = admin_gateway(&repo).await;
    let (status, list) = gateway.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let models = list["models"].as_array().expect("models");
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, model_names(&repo));
    assert_eq!(names, ["breast_cancer", "diabetes", "iris"]);
    for model in models {
        check_fresh_report(&gateway, &repo, model).await;
    }

    // The iris best by validation, computed from the toml files, and it is not simply the
    // highest version's metadata copied around.
    let iris_best = best_by_validation(&repo, "iris");
    let listed_iris = models
        .iter()
        .find(|m| m["name"] == "iris")
        .expect("iris listed");
    assert_eq!(listed_iris["best_validation"], iris_best.as_str());

    // One model: the same report as in the list.
    let one = report(&gateway, "iris").await;
    assert_eq!(&one, listed_iris);

    for path in [
        "/admin/models/nope",
        "/admin/models/nope/versions/1/download",
    ] {
        let (status, body) = gateway.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(
            body["error"].as_str().expect("error").contains("nope"),
            "{body}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn download_returns_the_version_directory_as_tar_gz() {
    let gateway = admin_gateway(&models_dir()).await;
    let response = gateway
        .client
        .get(gateway.url("/admin/models/iris/versions/2/download"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/gzip");
    let disposition = response.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(disposition.contains("iris-2.tar.gz"), "{disposition}");
    let archive = response.bytes().await.expect("body");

    let mut files: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
    for entry in tar.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("entry path").into_owned();
        assert!(
            path.starts_with("iris-2"),
            "everything under iris-2/: {}",
            path.display()
        );
        if entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("entry bytes");
            files.insert(path, bytes);
        }
    }
    let source = models_dir().join("iris/2");
    let mut expected: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for entry in std::fs::read_dir(&source).expect("version directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name").to_owned();
        expected.insert(
            Path::new("iris-2").join(name),
            std::fs::read(&path).expect("file"),
        );
    }
    for required in ["model.onnx", "model.toml", "reference.csv"] {
        assert!(
            files.contains_key(&Path::new("iris-2").join(required)),
            "{required} in {:?}",
            files.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &expected {
        assert!(files[path] == *bytes, "{} differs", path.display());
    }

    let (status, body) = gateway
        .admin(Method::GET, "/admin/models/iris/versions/9/download", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let response = gateway
        .client
        .get(gateway.url("/admin/models/iris/versions/2/download"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    gateway.stop().await;
}
