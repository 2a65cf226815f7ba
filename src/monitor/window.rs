//! Bounded windows of the most recent input rows and prediction values, filled on the request
//! path in O(features) per row and copied out by the background evaluator.

use std::sync::Mutex;

/// The most recent `capacity` rows of `width` values, as a ring buffer.
#[derive(Debug)]
pub struct RowWindow {
    inner: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    width: usize,
    capacity: usize,
    values: Vec<f64>,
    next: usize,
    len: usize,
}

impl RowWindow {
    /// An empty window of `capacity` rows of `width` values.
    pub fn new(width: usize, capacity: usize) -> RowWindow {
        RowWindow {
            inner: Mutex::new(Ring {
                width,
                capacity: capacity.max(1),
                values: Vec::new(),
                next: 0,
                len: 0,
            }),
        }
    }

    /// Appends rows given row-major (`values.len()` a multiple of the width), overwriting the
    /// oldest when full. Rows of the wrong width are ignored.
    pub fn push_rows(&self, values: impl ExactSizeIterator<Item = f64>) {
        let Ok(mut ring) = self.inner.lock() else {
            return;
        };
        let width = ring.width;
        if width == 0 || !values.len().is_multiple_of(width) {
            return;
        }
        if ring.values.is_empty() {
            let size = ring.capacity * width;
            ring.values = vec![0.0; size];
        }
        let mut values = values;
        while values.len() > 0 {
            let start = ring.next * width;
            for slot in &mut ring.values[start..start + width] {
                *slot = values.next().unwrap_or(f64::NAN);
            }
            ring.next = (ring.next + 1) % ring.capacity;
            ring.len = (ring.len + 1).min(ring.capacity);
        }
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |ring| ring.len)
    }

    /// True when no row has been seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the window as columns (one `Vec` per position in the row), oldest row first.
    pub fn columns(&self) -> Vec<Vec<f64>> {
        let Ok(ring) = self.inner.lock() else {
            return Vec::new();
        };
        let mut columns = (0..ring.width)
            .map(|_| Vec::with_capacity(ring.len))
            .collect::<Vec<_>>();
        let oldest = (ring.next + ring.capacity - ring.len) % ring.capacity;
        for i in 0..ring.len {
            let row = (oldest + i) % ring.capacity;
            let start = row * ring.width;
            for (column, value) in columns
                .iter_mut()
                .zip(&ring.values[start..start + ring.width])
            {
                column.push(*value);
            }
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_rows_as_columns() {
        let window = RowWindow::new(2, 3);
        assert!(window.is_empty());
        window.push_rows([1.0, 10.0, 2.0, 20.0].into_iter());
        window.push_rows([3.0, 30.0, 4.0, 40.0].into_iter());
        assert_eq!(window.len(), 3);
        assert_eq!(
            window.columns(),
            vec![vec![2.0, 3.0, 4.0], vec![20.0, 30.0, 40.0]]
        );
        window.push_rows([5.0].into_iter());
        assert_eq!(window.len(), 3, "a partial row is ignored");
    }

    #[test]
    fn single_values_form_a_one_column_window() {
        let window = RowWindow::new(1, 2);
        window.push_rows([0.5, 0.25, 0.125].into_iter());
        assert_eq!(window.columns(), vec![vec![0.25, 0.125]]);
    }
}
