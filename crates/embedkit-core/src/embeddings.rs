//! A dense row-major matrix of vectors.

/// A row-major `rows × dims` matrix of `f32` vectors, one row per input text, in input order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    data: Vec<f32>,
    rows: usize,
    dims: usize,
}

/// The data given to build an [`Embeddings`] does not form a rectangle.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    /// Row `row` has `found` values where the first row had `expected`.
    #[error("row {row} has {found} values, expected {expected} like row 0")]
    RaggedRow {
        /// Index of the offending row.
        row: usize,
        /// Length of row 0.
        expected: usize,
        /// Length of this row.
        found: usize,
    },
    /// The flat buffer is not `rows × dims` long.
    #[error("buffer of {len} values cannot be {rows} rows of {dims} dims")]
    BadLength {
        /// Buffer length.
        len: usize,
        /// Requested rows.
        rows: usize,
        /// Requested dims.
        dims: usize,
    },
}

impl Embeddings {
    /// Wraps a flat row-major buffer of `rows × dims` values.
    pub fn new(data: Vec<f32>, rows: usize, dims: usize) -> Result<Self, ShapeError> {
        if rows.checked_mul(dims) != Some(data.len()) {
            return Err(ShapeError::BadLength {
                len: data.len(),
                rows,
                dims,
            });
        }
        Ok(Self { data, rows, dims })
    }

    /// Builds a matrix from equal-length rows.
    pub fn from_rows(rows: Vec<Vec<f32>>) -> Result<Self, ShapeError> {
        let dims = rows.first().map_or(0, Vec::len);
        let n = rows.len();
        let mut data = Vec::with_capacity(n * dims);
        for (row, r) in rows.into_iter().enumerate() {
            if r.len() != dims {
                return Err(ShapeError::RaggedRow {
                    row,
                    expected: dims,
                    found: r.len(),
                });
            }
            data.extend_from_slice(&r);
        }
        Ok(Self {
            data,
            rows: n,
            dims,
        })
    }

    /// An empty matrix with `dims` columns.
    pub fn empty(dims: usize) -> Self {
        Self {
            data: Vec::new(),
            rows: 0,
            dims,
        }
    }

    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of dimensions of each vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// `true` when there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Vector `i`.
    ///
    /// # Panics
    /// When `i >= rows()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dims..(i + 1) * self.dims]
    }

    /// Mutable vector `i`.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.dims..(i + 1) * self.dims]
    }

    /// Iterates over the vectors in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[f32]> + '_ {
        // chunks_exact on an empty buffer with dims 0 would panic, so handle dims == 0 explicitly.
        let dims = self.dims.max(1);
        self.data
            .chunks_exact(dims)
            .take(if self.dims == 0 { 0 } else { self.rows })
    }

    /// The flat row-major buffer.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Consumes the matrix, returning the flat row-major buffer.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Appends the rows of `other`, which must have the same dims.
    pub fn append(&mut self, other: &Embeddings) -> Result<(), ShapeError> {
        if self.rows == 0 && self.data.is_empty() {
            self.dims = other.dims;
        }
        if other.dims != self.dims {
            return Err(ShapeError::RaggedRow {
                row: self.rows,
                expected: self.dims,
                found: other.dims,
            });
        }
        self.data.extend_from_slice(&other.data);
        self.rows += other.rows;
        Ok(())
    }

    /// Keeps the first `dims` components of every vector (Matryoshka truncation). No-op when `dims >= self.dims()`.
    pub fn truncate_dims(&mut self, dims: usize) {
        if dims >= self.dims {
            return;
        }
        let mut out = Vec::with_capacity(self.rows * dims);
        for r in self.data.chunks_exact(self.dims) {
            out.extend_from_slice(&r[..dims]);
        }
        self.data = out;
        self.dims = dims;
    }

    /// Scales every vector to unit L2 norm (zero vectors stay zero).
    pub fn normalize(&mut self) {
        if self.dims == 0 {
            return;
        }
        for r in self.data.chunks_exact_mut(self.dims) {
            l2_normalize(r);
        }
    }
}

/// Scales `v` to unit L2 norm in place. Like `torch.nn.functional.normalize`, the norm is clamped at 1e-12 so a
/// zero vector stays zero instead of becoming NaN.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for x in v {
        *x /= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_rows_are_rejected() {
        let err = Embeddings::from_rows(vec![vec![1.0, 2.0], vec![1.0]]).unwrap_err();
        assert_eq!(
            err,
            ShapeError::RaggedRow {
                row: 1,
                expected: 2,
                found: 1
            }
        );
    }

    #[test]
    fn truncate_then_normalize() {
        let mut e = Embeddings::from_rows(vec![vec![3.0, 4.0, 12.0], vec![0.0, 0.0, 1.0]]).unwrap();
        e.truncate_dims(2);
        e.normalize();
        assert_eq!(e.dims(), 2);
        assert_eq!(e.row(0), &[0.6, 0.8]);
        assert_eq!(e.row(1), &[0.0, 0.0]);
    }

    #[test]
    fn append_and_iter() {
        let mut a = Embeddings::empty(2);
        a.append(&Embeddings::from_rows(vec![vec![1.0, 2.0]]).unwrap())
            .unwrap();
        a.append(&Embeddings::from_rows(vec![vec![3.0, 4.0]]).unwrap())
            .unwrap();
        let rows: Vec<_> = a.iter().collect();
        assert_eq!(rows, vec![&[1.0, 2.0][..], &[3.0, 4.0][..]]);
        assert!(
            a.append(&Embeddings::from_rows(vec![vec![1.0]]).unwrap())
                .is_err()
        );
    }
}
