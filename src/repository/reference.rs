//! `reference.csv`: a sample of a version's training inputs, header = feature names.

use super::RepositoryError;
use std::path::Path;

/// Reference rows, as read from `reference.csv`. Every row has one value per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Column names from the header.
    pub features: Vec<String>,
    /// Rows, row-major, in file order.
    pub rows: Vec<Vec<f64>>,
}

/// Most rows read from a reference file; the rest are ignored.
pub const MAX_REFERENCE_ROWS: usize = 10_000;

impl Reference {
    /// Reads and validates a reference file (plain numeric CSV, no quoting).
    ///
    /// # Errors
    /// [`RepositoryError::Reference`] naming the line and column of the first bad value.
    pub fn read(path: &Path) -> Result<Reference, RepositoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RepositoryError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| RepositoryError::Reference {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Reference, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or("the file is empty")?;
        let features: Vec<String> = header.split(',').map(|f| f.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (number, line) in lines.take(MAX_REFERENCE_ROWS) {
            let row = line
                .split(',')
                .enumerate()
                .map(|(column, cell)| {
                    let value: f64 = cell.trim().parse().map_err(|_| {
                        format!(
                            "line {}, column {}: `{cell}` is not a number",
                            number + 1,
                            column + 1
                        )
                    })?;
                    Ok(value)
                })
                .collect::<Result<Vec<f64>, String>>()?;
            if row.len() != features.len() {
                return Err(format!(
                    "line {} has {} values, the header names {} features",
                    number + 1,
                    row.len(),
                    features.len()
                ));
            }
            rows.push(row);
        }
        Ok(Reference { features, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_and_rows() {
        let reference = Reference::parse("a,b\n1,2.5\n-3,4e1\n").expect("valid csv");
        assert_eq!(reference.features, vec!["a", "b"]);
        assert_eq!(reference.rows, vec![vec![1.0, 2.5], vec![-3.0, 40.0]]);
    }

    #[test]
    fn names_the_bad_cell() {
        let err = Reference::parse("a,b\n1,2\n3,x\n").unwrap_err();
        assert!(err.contains("line 3, column 2"), "{err}");
        let err = Reference::parse("a,b\n1\n").unwrap_err();
        assert!(err.contains("has 1 values"), "{err}");
    }
}
