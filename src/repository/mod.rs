//! The model repository on disk: `<root>/<model>/<version>/{model.onnx, model.toml, reference.csv}`.
//!
//! Discovery lists models and versions and parses their metadata; it never loads an engine.

mod metadata;
mod reference;

pub use self::metadata::{Batching, Metadata, Scores, Source, Task, higher_is_better};
pub use self::reference::{MAX_REFERENCE_ROWS, Reference};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// A repository problem, named by path.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RepositoryError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// `model.toml` is missing or invalid.
    #[error("invalid {path}: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `reference.csv` is invalid.
    #[error("invalid {path}: {reason}")]
    Reference {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `model.onnx` is missing.
    #[error("{0} has no model.onnx")]
    MissingModel(PathBuf),
}

/// One version directory.
#[derive(Debug, Clone)]
pub struct VersionDir {
    /// The model's name (its directory name).
    pub model: String,
    /// The version (its directory name).
    pub version: String,
    /// The directory.
    pub path: PathBuf,
}

impl VersionDir {
    /// The ONNX file.
    pub fn onnx_path(&self) -> PathBuf {
        self.path.join("model.onnx")
    }

    /// Reads `model.toml`.
    ///
    /// # Errors
    /// [`RepositoryError::Metadata`] when it is missing or does not match the schema.
    pub fn read_metadata(&self) -> Result<Metadata, RepositoryError> {
        let path = self.path.join("model.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| RepositoryError::Metadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| RepositoryError::Metadata {
            path,
            reason: e.message().to_string(),
        })
    }

    /// Reads `reference.csv`, if the version has one.
    ///
    /// # Errors
    /// [`RepositoryError::Reference`] when the file exists but is invalid.
    pub fn read_reference(&self) -> Result<Option<Reference>, RepositoryError> {
        let path = self.path.join("reference.csv");
        if !path.exists() {
            return Ok(None);
        }
        Reference::read(&path).map(Some)
    }
}

/// One model directory and its versions, oldest first.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The model's name.
    pub name: String,
    /// Its versions in version order.
    pub versions: Vec<VersionDir>,
}

/// True for names the repository accepts: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Orders versions numerically when both are numbers, else as text (`2` < `10`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

fn subdirectories(path: &Path) -> Result<Vec<(String, PathBuf)>, RepositoryError> {
    let entries = std::fs::read_dir(path).map_err(|e| RepositoryError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        let child = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if child.is_dir() && is_valid_name(&name) {
            dirs.push((name, child));
        }
    }
    Ok(dirs)
}

/// Lists every model and version under `root`. Directories whose names are not valid model or
/// version names (hidden directories, for instance) are skipped.
///
/// # Errors
/// [`RepositoryError::Io`] when `root` cannot be read.
pub fn discover(root: &Path) -> Result<Vec<ModelDir>, RepositoryError> {
    let mut models = Vec::new();
    for (name, path) in subdirectories(root)? {
        let mut versions: Vec<VersionDir> = subdirectories(&path)?
            .into_iter()
            .map(|(version, path)| VersionDir {
                model: name.clone(),
                version,
                path,
            })
            .collect();
        if versions.is_empty() {
            continue;
        }
        versions.sort_by(|a, b| compare_versions(&a.version, &b.version));
        models.push(ModelDir { name, versions });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically_then_by_text() {
        let mut versions = vec!["10", "2", "b", "1", "a"];
        versions.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(versions, vec!["1", "2", "10", "a", "b"]);
    }

    #[test]
    fn names_are_validated() {
        assert!(is_valid_name("iris"));
        assert!(is_valid_name("breast_cancer.v2-x"));
        assert!(!is_valid_name(".hidden"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a b"));
    }

    #[test]
    fn discovers_the_bundled_repository() {
        let models = discover(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .as_path(),
        )
        .expect("models/ is readable");
        let names: Vec<_> = models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["breast_cancer", "diabetes", "iris"]);
        let iris: Vec<_> = models[2]
            .versions
            .iter()
            .map(|v| v.version.as_str())
            .collect();
        assert_eq!(iris, vec!["1", "2", "3"]);
        for model in &models {
            for version in &model.versions {
                version.read_metadata().expect("bundled metadata parses");
                assert!(
                    version
                        .read_reference()
                        .expect("reference parses")
                        .is_some()
                );
            }
        }
    }
}
