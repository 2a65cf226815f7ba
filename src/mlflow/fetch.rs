//! Registry versions on disk: every artifact file of a version is downloaded into a staging
//! directory under `<state>/mlflow/staging/`, hashed (SHA-256), described by a generated
//! `model.toml`, and moved whole to `<state>/mlflow/models/<model>/<version>/`, a version
//! directory of the repository's layout. A version is downloaded once: later uses check the
//! hashes of what is there.

use super::client::{Client, MlflowError, artifact_path, hex};
use super::describe::{Described, MlModel, metadata};
use crate::repository::{Source, VersionDir};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a version could not be made ready on disk.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] MlflowError),
    /// The version is not usable as it is (not ready, not ONNX, bad tags).
    #[error("version {version} of {model}: {reason}")]
    Unusable {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be written or moved.
    #[error("{0}")]
    Disk(String),
}

/// Where registry versions are kept: `<dir>/models/…` and `<dir>/staging/…`.
#[derive(Debug, Clone)]
pub struct VersionCache {
    dir: PathBuf,
}

impl VersionCache {
    /// The cache under `dir` (`<state>/mlflow`).
    pub fn new(dir: PathBuf) -> VersionCache {
        VersionCache { dir }
    }

    /// The repository-layout root of the downloaded versions.
    pub fn models(&self) -> PathBuf {
        self.dir.join("models")
    }

    /// Version `version` of `model`, from the cache when its files are intact, else downloaded.
    ///
    /// # Errors
    /// [`FetchError`].
    pub async fn fetch(
        &self,
        client: &Client,
        model: &str,
        version: &str,
    ) -> Result<VersionDir, FetchError> {
        let target = self.models().join(model).join(version);
        let dir = VersionDir {
            model: model.to_string(),
            version: version.to_string(),
            path: target.clone(),
        };
        let cached = dir.clone();
        if tokio::task::spawn_blocking(move || is_intact(&cached))
            .await
            .unwrap_or(false)
        {
            return Ok(dir);
        }
        let unusable = |reason: String| FetchError::Unusable {
            model: model.to_string(),
            version: version.to_string(),
            reason,
        };
        let found = client.model_version(model, version).await?;
        if let Some(status) = found.status.as_deref().filter(|s| *s != "READY") {
            return Err(unusable(format!("its registration is {status}, not READY")));
        }
        let run = match &found.run_id {
            Some(run_id) => Some(client.run(run_id).await?),
            None => None,
        };
        let artifact_uri = client.download_uri(model, version).await?;
        let root = artifact_path(&artifact_uri).map_err(&unusable)?;
        let staging = self
            .dir
            .join("staging")
            .join(format!("{model}-{version}-{}", crate::clock::now_ms()));
        let result = self
            .download(client, &root, &staging)
            .await
            .and_then(|mut files| {
                let mlmodel = read_mlmodel(&staging).map_err(&unusable)?;
                place_onnx(&staging, mlmodel.as_ref(), &mut files).map_err(&unusable)?;
                let source = Source {
                    registry: "mlflow".into(),
                    uri: client.uri().to_string(),
                    name: model.to_string(),
                    version: version.to_string(),
                    run_id: found.run_id.clone(),
                    run_name: run.as_ref().and_then(|r| r.name.clone()),
                    artifact_uri: artifact_uri.clone(),
                    tags: found
                        .tags
                        .iter()
                        .map(|t| (t.key.clone(), t.value.clone()))
                        .collect(),
                    files,
                };
                let meta = metadata(Described {
                    version: &found,
                    run: run.as_ref(),
                    mlmodel: mlmodel.as_ref(),
                    source,
                })
                .map_err(&unusable)?;
                let text = toml::to_string(&meta)
                    .map_err(|e| unusable(format!("its metadata cannot be written: {e}")))?;
                std::fs::write(staging.join("model.toml"), text)
                    .map_err(|e| FetchError::Disk(format!("cannot write model.toml: {e}")))?;
                install(&staging, &target)
            });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result.map(|()| dir)
    }

    /// Downloads every file under artifact path `root` into `staging`; returns their hashes.
    async fn download(
        &self,
        client: &Client,
        root: &str,
        staging: &Path,
    ) -> Result<BTreeMap<String, String>, FetchError> {
        let mut files = BTreeMap::new();
        for (relative, size) in client.list_files(root).await? {
            if relative == "model.toml" {
                return Err(FetchError::Disk(format!(
                    "artifact {root}/model.toml would be replaced by the metadata vigil writes; rename it"
                )));
            }
            let destination = staging.join(&relative);
            let (sha256, written) = client
                .download(&format!("{root}/{relative}"), &destination)
                .await?;
            if let Some(size) = size.filter(|&s| s != written) {
                return Err(FetchError::Disk(format!(
                    "artifact {root}/{relative}: {written} bytes downloaded, the listing says {size}"
                )));
            }
            files.insert(relative, sha256);
        }
        if files.is_empty() {
            return Err(FetchError::Disk(format!(
                "artifact location {root} has no files"
            )));
        }
        Ok(files)
    }
}

/// The version's `MLmodel`, when it has one.
fn read_mlmodel(dir: &Path) -> Result<Option<MlModel>, String> {
    match std::fs::read_to_string(dir.join("MLmodel")) {
        Ok(text) => MlModel::parse(&text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read MLmodel: {e}")),
    }
}

/// Makes the ONNX file `MLmodel` names the version's `model.onnx` (external-data files keep
/// their names next to it, as the ONNX file refers to them), and its hash `model.onnx`'s.
fn place_onnx(
    dir: &Path,
    mlmodel: Option<&MlModel>,
    files: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let named = mlmodel
        .and_then(|m| m.onnx_file.as_deref())
        .unwrap_or("model.onnx");
    if named.split('/').any(|part| part == "..") {
        return Err(format!(
            "MLmodel names the ONNX file {named:?} outside the version"
        ));
    }
    if named == "model.onnx" {
        return if dir.join(named).is_file() {
            Ok(())
        } else {
            Err("it has no model.onnx (is it logged with mlflow.onnx.log_model?)".into())
        };
    }
    if dir.join("model.onnx").exists() {
        return Err(format!(
            "MLmodel names {named} as the ONNX file, and another model.onnx is there too"
        ));
    }
    std::fs::rename(dir.join(named), dir.join("model.onnx"))
        .map_err(|e| format!("cannot use {named} as the ONNX file: {e}"))?;
    if let Some(hash) = files.remove(named) {
        files.insert("model.onnx".into(), hash);
    }
    Ok(())
}

/// Moves a complete staging directory to `target` (replacing what was there).
fn install(staging: &Path, target: &Path) -> Result<(), FetchError> {
    let disk = |what: &str, e: std::io::Error| FetchError::Disk(format!("{what}: {e}"));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| disk(&format!("cannot create {}", parent.display()), e))?;
    }
    if target.exists() {
        std::fs::remove_dir_all(target)
            .map_err(|e| disk(&format!("cannot replace {}", target.display()), e))?;
    }
    std::fs::rename(staging, target).map_err(|e| {
        disk(
            &format!("cannot move the download to {}", target.display()),
            e,
        )
    })
}

/// True when `dir` holds a downloaded version whose files all still have their recorded hashes.
fn is_intact(dir: &VersionDir) -> bool {
    let Ok(meta) = dir.read_metadata() else {
        return false;
    };
    let Some(source) = meta.source else {
        return false;
    };
    !source.files.is_empty()
        && source.files.iter().all(|(relative, expected)| {
            sha256_file(&dir.path.join(relative)).is_some_and(|actual| actual == *expected)
        })
}

fn sha256_file(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer).ok()?;
        if read == 0 {
            return Some(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}
