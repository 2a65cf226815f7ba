//! The MLflow tracking server's REST API as far as vigil reads it: registered models with their
//! aliases, model versions, runs, and artifacts through the server's artifact proxy
//! (`mlflow-artifacts:/`), downloaded with a SHA-256 of every file.

use super::Credentials;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Longest wait for a registry call (downloads get [`DOWNLOAD_TIMEOUT`]).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one artifact file.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Registered models per search page (MLflow's maximum).
const PAGE_SIZE: &str = "1000";

/// A failed registry call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MlflowError {
    /// No answer: connection refused, timeout, TLS failure.
    #[error("cannot reach the MLflow server at {uri}: {reason}")]
    Unreachable {
        /// The server.
        uri: String,
        /// The transport's error.
        reason: String,
    },
    /// The server answered with an error.
    #[error("MLflow answered {status} to {what}: {message}")]
    Refused {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
        /// MLflow's `error_code`, e.g. `RESOURCE_DOES_NOT_EXIST`.
        code: Option<String>,
        /// MLflow's message.
        message: String,
    },
    /// The answer could not be read.
    #[error("unexpected answer from MLflow to {what}: {reason}")]
    Invalid {
        /// The call.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A downloaded file could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
}

/// One `{key, value}` tag or parameter.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value (MLflow leaves empty values out).
    #[serde(default)]
    pub value: String,
}

/// An alias and the version it points at.
#[derive(Debug, Clone, Deserialize)]
pub struct Alias {
    /// Alias name.
    pub alias: String,
    /// Version number.
    pub version: String,
}

/// A registered model with its aliases.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredModel {
    /// Name.
    pub name: String,
    /// Every alias.
    #[serde(default)]
    pub aliases: Vec<Alias>,
}

/// One model version.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    /// Version number.
    pub version: String,
    /// Milliseconds since the epoch.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub creation_timestamp: Option<i64>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The run that produced it.
    #[serde(default)]
    pub run_id: Option<String>,
    /// `READY`, `PENDING_REGISTRATION` or `FAILED_REGISTRATION`.
    #[serde(default)]
    pub status: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// A run's name, parameters and latest metrics.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The run's name.
    pub name: Option<String>,
    /// Parameters.
    pub params: Vec<KeyValue>,
    /// Latest value of each metric.
    pub metrics: Vec<(String, f64)>,
}

/// MLflow writes int64 fields as numbers or as strings, depending on the call.
fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(i64),
        Text(String),
    }
    Ok(match Option::<Given>::deserialize(deserializer)? {
        Some(Given::Number(n)) => Some(n),
        Some(Given::Text(text)) => text.parse().ok(),
        None => None,
    })
}

/// A client of one tracking server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    credentials: Option<Credentials>,
}

impl Client {
    /// A client of the server at `uri` (`http://` or `https://`).
    ///
    /// # Errors
    /// [`MlflowError::Invalid`] when `uri` is not an HTTP(S) URL or no client can be built.
    pub fn new(uri: &str, credentials: Option<Credentials>) -> Result<Client, MlflowError> {
        let invalid = |reason: String| MlflowError::Invalid {
            what: "the tracking URI".into(),
            reason,
        };
        let mut base = reqwest::Url::parse(uri).map_err(|e| invalid(format!("{uri}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "{uri}: expected an http:// or https:// URL"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Client {
            http,
            base,
            credentials,
        })
    }

    /// The server's address.
    pub fn uri(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, MlflowError> {
        self.base.join(path).map_err(|e| MlflowError::Invalid {
            what: path.to_string(),
            reason: e.to_string(),
        })
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some(Credentials::Token(token)) => request.bearer_auth(token),
            Some(Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            None => request,
        }
    }

    /// Sends `request` and returns the successful response.
    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, MlflowError> {
        let response =
            self.authorised(request)
                .send()
                .await
                .map_err(|e| MlflowError::Unreachable {
                    uri: self.base.to_string(),
                    reason: error_chain(&e),
                })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        #[derive(Deserialize)]
        struct ErrorBody {
            error_code: Option<String>,
            message: Option<String>,
        }
        let parsed: Option<ErrorBody> = serde_json::from_str(&body).ok();
        let (code, message) = match parsed {
            Some(ErrorBody {
                error_code,
                message,
            }) => (error_code, message.unwrap_or_default()),
            None => (None, body.chars().take(300).collect()),
        };
        Err(MlflowError::Refused {
            what: what.to_string(),
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// GETs `path` with `query` and decodes the JSON answer.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        let request = self
            .http
            .get(self.url(path)?)
            .query(query)
            .timeout(CALL_TIMEOUT);
        let response = self.send(what, request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| MlflowError::Unreachable {
                uri: self.base.to_string(),
                reason: error_chain(&e),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| MlflowError::Invalid {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    /// The registered model `name` with its aliases.
    ///
    /// # Errors
    /// [`MlflowError`]; a missing model is `Refused` with status 404.
    pub async fn registered_model(&self, name: &str) -> Result<RegisteredModel, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            registered_model: RegisteredModel,
        }
        let answer: Answer = self
            .get(
                &format!("registered-models/get {name}"),
                "api/2.0/mlflow/registered-models/get",
                &[("name", name)],
            )
            .await?;
        Ok(answer.registered_model)
    }

    /// Every registered model tagged `vigil.serve = true`, with their aliases.
    ///
    /// # Errors
    /// [`MlflowError`].
    pub async fn tagged_models(&self) -> Result<Vec<RegisteredModel>, MlflowError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            registered_models: Vec<RegisteredModel>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let mut models = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("filter", "tags.`vigil.serve` = 'true'"),
                ("max_results", PAGE_SIZE),
            ];
            if let Some(token) = &token {
                query.push(("page_token", token.as_str()));
            }
            let page: Page = self
                .get(
                    "registered-models/search",
                    "api/2.0/mlflow/registered-models/search",
                    &query,
                )
                .await?;
            models.extend(page.registered_models);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(models),
            }
        }
    }

    /// Version `version` of `name`.
    ///
    /// # Errors
    /// [`MlflowError`].
    pub async fn model_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<ModelVersion, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        let answer: Answer = self
            .get(
                &format!("model-versions/get {name} {version}"),
                "api/2.0/mlflow/model-versions/get",
                &[("name", name), ("version", version)],
            )
            .await?;
        Ok(answer.model_version)
    }

    /// Where the files of version `version` of `name` are (`mlflow-artifacts:/…`).
    ///
    /// # Errors
    /// [`MlflowError`].
    pub async fn download_uri(&self, name: &str, version: &str) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            artifact_uri: String,
        }
        let answer: Answer = self
            .get(
                &format!("model-versions/get-download-uri {name} {version}"),
                "api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", name), ("version", version)],
            )
            .await?;
        Ok(answer.artifact_uri)
    }

    /// The run `run_id`: its name, parameters and metrics.
    ///
    /// # Errors
    /// [`MlflowError`].
    pub async fn run(&self, run_id: &str) -> Result<Run, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            run: RunBody,
        }
        #[derive(Deserialize)]
        struct RunBody {
            #[serde(default)]
            info: RunInfo,
            #[serde(default)]
            data: RunData,
        }
        #[derive(Deserialize, Default)]
        struct RunInfo {
            #[serde(default)]
            run_name: Option<String>,
        }
        #[derive(Deserialize, Default)]
        struct RunData {
            #[serde(default)]
            params: Vec<KeyValue>,
            #[serde(default)]
            metrics: Vec<Metric>,
        }
        #[derive(Deserialize)]
        struct Metric {
            key: String,
            value: f64,
        }
        let answer: Answer = self
            .get(
                &format!("runs/get {run_id}"),
                "api/2.0/mlflow/runs/get",
                &[("run_id", run_id)],
            )
            .await?;
        Ok(Run {
            name: answer.run.info.run_name,
            params: answer.run.data.params,
            metrics: answer
                .run
                .data
                .metrics
                .into_iter()
                .map(|m| (m.key, m.value))
                .collect(),
        })
    }

    /// The files under artifact directory `path`, recursively, as paths relative to `path`.
    ///
    /// # Errors
    /// [`MlflowError`].
    pub async fn list_files(&self, path: &str) -> Result<Vec<(String, Option<u64>)>, MlflowError> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            files: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            path: String,
            #[serde(default)]
            is_dir: bool,
            #[serde(default, deserialize_with = "lenient_i64")]
            file_size: Option<i64>,
        }
        let mut files = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(relative) = pending.pop() {
            let directory = join(path, &relative);
            let listing: Listing = self
                .get(
                    &format!("the artifact listing of {directory}"),
                    "api/2.0/mlflow-artifacts/artifacts",
                    &[("path", &directory)],
                )
                .await?;
            for entry in listing.files {
                let name = entry
                    .path
                    .strip_prefix(&format!("{directory}/"))
                    .unwrap_or(&entry.path)
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if name.is_empty() || name == "." || name == ".." {
                    return Err(MlflowError::Invalid {
                        what: format!("the artifact listing of {directory}"),
                        reason: format!("unusable file name {:?}", entry.path),
                    });
                }
                let child = join(&relative, &name);
                if entry.is_dir {
                    pending.push(child);
                } else {
                    files.push((child, entry.file_size.and_then(|s| u64::try_from(s).ok())));
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// Downloads artifact `path` to `destination`; returns its SHA-256 (hex) and size.
    ///
    /// # Errors
    /// [`MlflowError`]; `Write` when the file cannot be written.
    pub async fn download(
        &self,
        path: &str,
        destination: &Path,
    ) -> Result<(String, u64), MlflowError> {
        let what = format!("the download of {path}");
        let mut url = self.url("api/2.0/mlflow-artifacts/artifacts/")?;
        url.path_segments_mut()
            .map_err(|()| MlflowError::Invalid {
                what: what.clone(),
                reason: "the tracking URI cannot take a path".into(),
            })?
            .pop_if_empty()
            .extend(path.split('/'));
        let request = self.http.get(url).timeout(DOWNLOAD_TIMEOUT);
        let mut response = self.send(&what, request).await?;
        let write_error = |e: std::io::Error| MlflowError::Write {
            path: destination.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(parent) = destination.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(write_error)?;
        }
        let mut file = tokio::fs::File::create(destination)
            .await
            .map_err(write_error)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| MlflowError::Unreachable {
                uri: self.base.to_string(),
                reason: error_chain(&e),
            })?
        {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(write_error)?;
        }
        file.sync_all().await.map_err(write_error)?;
        Ok((hex(&hasher.finalize()), size))
    }
}

/// `a/b`, without a leading slash when `a` is empty.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, b| {
            let _ = write!(text, "{b:02x}");
            text
        })
}

/// An error with its causes, for messages people read.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The artifact-proxy path of an `mlflow-artifacts:` URI (`mlflow-artifacts:/1/models/m-…/artifacts`
/// or with a host, `mlflow-artifacts://host:port/1/…`).
///
/// # Errors
/// A message naming the URI when it is another kind of store (`s3://`, `file://`, …): vigil reads
/// artifacts only through the tracking server.
pub fn artifact_path(uri: &str) -> Result<String, String> {
    let rest = uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| {
        format!(
            "artifact location {uri} is not served by the tracking server; start MLflow with --serve-artifacts (the default) so versions are stored under mlflow-artifacts:/"
        )
    })?;
    let path = match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map_or("", |(_, path)| path),
        None => rest.trim_start_matches('/'),
    };
    if path.is_empty() || path.split('/').any(|part| part == "..") {
        return Err(format!("artifact location {uri} has no usable path"));
    }
    Ok(path.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_come_from_proxied_uris_only() {
        assert_eq!(
            artifact_path("mlflow-artifacts:/1/models/m-2b/artifacts"),
            Ok("1/models/m-2b/artifacts".to_string())
        );
        assert_eq!(
            artifact_path("mlflow-artifacts://mlflow.internal:5000/1/models/m-2b/artifacts/"),
            Ok("1/models/m-2b/artifacts".to_string())
        );
        assert!(artifact_path("s3://bucket/1/models/m/artifacts").is_err());
        assert!(artifact_path("mlflow-artifacts:/1/../../etc").is_err());
        assert!(artifact_path("mlflow-artifacts:/").is_err());
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }
}
