//! What Python does with vectors through embedkit: sentence-transformers' `quantize_embeddings` bytes,
//! similarity matrices, MaxSim, and the index file (build from vectors, open, search).

use crate::errors::runtime;
use embedkit_core::{Embeddings, Metric};
use embedkit_vectors::{
    CalibrationRanges, Index as IndexFile, IndexSpec, IndexWriter, MaxSimOptions, Precision,
    SearchOptions,
};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArray};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A 2-D float32 array as `Embeddings` (one copy: numpy owns its buffer).
fn embeddings(name: &str, a: &PyReadonlyArray2<'_, f32>) -> PyResult<Embeddings> {
    let view = a.as_array();
    let (rows, dims) = view.dim();
    let data: Vec<f32> = match view.as_slice() {
        Some(s) => s.to_vec(),
        None => view.iter().copied().collect(),
    };
    Embeddings::new(data, rows, dims).map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

fn parse_precision(p: &str) -> PyResult<Precision> {
    p.parse()
        .map_err(|e: embedkit_vectors::UnknownPrecision| PyValueError::new_err(e.to_string()))
}

fn parse_metric(m: &str) -> PyResult<Metric> {
    m.parse()
        .map_err(|e: embedkit_core::UnknownMetric| PyValueError::new_err(e.to_string()))
}

/// sentence-transformers' `quantize_embeddings`: the same bytes for every precision. `ranges` is its
/// `(2, dims)` array of per-dimension min and max; without it, `calibration_embeddings` give the ranges, else
/// the embeddings themselves. Returns int8 (`int8`, `binary`) or uint8 (`uint8`, `ubinary`) arrays, or
/// float32 unchanged.
#[pyfunction]
#[pyo3(signature = (embeddings, precision, ranges=None, calibration_embeddings=None))]
pub fn quantize_embeddings<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    precision: &str,
    ranges: Option<PyReadonlyArray2<'py, f32>>,
    calibration_embeddings: Option<PyReadonlyArray2<'py, f32>>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let precision = parse_precision(precision)?;
    let e = self::embeddings("embeddings", &embeddings)?;
    let ranges = match (ranges, calibration_embeddings) {
        (Some(r), _) => {
            let r = r.as_array();
            if r.dim() != (2, e.dims()) {
                return Err(PyValueError::new_err(format!(
                    "ranges must have shape (2, {}) (min and max per dimension), not {:?}",
                    e.dims(),
                    r.shape()
                )));
            }
            Some(CalibrationRanges {
                min: r.row(0).to_vec(),
                max: r.row(1).to_vec(),
            })
        }
        (None, Some(c)) => {
            let c = self::embeddings("calibration_embeddings", &c)?;
            Some(
                CalibrationRanges::from_calibration(&c)
                    .map_err(|err| PyValueError::new_err(err.to_string()))?,
            )
        }
        (None, None) => None,
    };
    let (rows, dims) = (e.rows(), e.dims());
    let q = py
        .detach(|| embedkit_vectors::quantize(&e, precision, ranges.as_ref()))
        .map_err(|err| PyValueError::new_err(err.to_string()))?;
    let width = precision.values_per_row(dims);
    let bytes = q.into_bytes();
    Ok(match precision {
        Precision::Int8 | Precision::Binary => {
            let values: Vec<i8> = bytes.into_iter().map(|b| b as i8).collect();
            PyArray1::from_vec(py, values)
                .reshape([rows, width])?
                .into_any()
                .cast_into::<PyUntypedArray>()?
        }
        Precision::Uint8 | Precision::Ubinary => PyArray1::from_vec(py, bytes)
            .reshape([rows, width])?
            .into_any()
            .cast_into::<PyUntypedArray>()?,
        _ => {
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            PyArray1::from_vec(py, values)
                .reshape([rows, width])?
                .into_any()
                .cast_into::<PyUntypedArray>()?
        }
    })
}

/// `a × b` similarity matrix for `euclidean` or `manhattan` (negated distances, as sentence-transformers'
/// `similarity`), or the row-wise scores of equal-length `a` and `b` with `pairwise`. Computed in float32
/// exactly (no ‖a‖² + ‖b‖² − 2ab cancellation), in parallel, with the GIL released.
#[pyfunction]
#[pyo3(signature = (a, b, metric, pairwise=false))]
pub fn pairwise_scores<'py>(
    py: Python<'py>,
    a: PyReadonlyArray2<'py, f32>,
    b: PyReadonlyArray2<'py, f32>,
    metric: &str,
    pairwise: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    use rayon::prelude::*;
    let metric = parse_metric(metric)?;
    let a = embeddings("a", &a)?;
    let b = embeddings("b", &b)?;
    if a.dims() != b.dims() && a.rows() > 0 && b.rows() > 0 {
        return Err(PyValueError::new_err(format!(
            "embeddings of different widths: {} and {}",
            a.dims(),
            b.dims()
        )));
    }
    if pairwise {
        if a.rows() != b.rows() {
            return Err(PyValueError::new_err(format!(
                "pairwise similarity needs as many rows in both: {} and {}",
                a.rows(),
                b.rows()
            )));
        }
        let scores: Vec<f32> = py.detach(|| {
            (0..a.rows())
                .into_par_iter()
                .map(|i| metric.score(a.row(i), b.row(i)))
                .collect()
        });
        return PyArray1::from_vec(py, scores).reshape([a.rows(), 1]);
    }
    let cols = b.rows();
    let mut out = vec![0.0f32; a.rows() * cols];
    py.detach(|| {
        out.par_chunks_mut(cols.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = metric.score(a.row(i), b.row(j));
                }
            })
    });
    PyArray1::from_vec(py, out).reshape([a.rows(), cols])
}

/// sentence-transformers' `util.maxsim`: for each query (token vectors) and document, the sum over query
/// tokens of the best dot product with a document token; a document without tokens scores −1e9.
#[pyfunction]
#[pyo3(signature = (queries, documents, length_normalize=false))]
pub fn maxsim<'py>(
    py: Python<'py>,
    queries: Vec<PyReadonlyArray2<'py, f32>>,
    documents: Vec<PyReadonlyArray2<'py, f32>>,
    length_normalize: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let q: Vec<Embeddings> = queries
        .iter()
        .enumerate()
        .map(|(i, a)| embeddings(&format!("queries[{i}]"), a))
        .collect::<PyResult<_>>()?;
    let d: Vec<Embeddings> = documents
        .iter()
        .enumerate()
        .map(|(i, a)| embeddings(&format!("documents[{i}]"), a))
        .collect::<PyResult<_>>()?;
    let widths: std::collections::BTreeSet<usize> = q
        .iter()
        .chain(&d)
        .filter(|e| e.rows() > 0)
        .map(Embeddings::dims)
        .collect();
    if widths.len() > 1 {
        return Err(PyValueError::new_err(format!(
            "token vectors of different widths: {widths:?}"
        )));
    }
    let (nq, nd) = (q.len(), d.len());
    let scores =
        py.detach(|| embedkit_vectors::maxsim_matrix(&q, &d, MaxSimOptions { length_normalize }));
    PyArray1::from_vec(py, scores).reshape([nq, nd])
}

/// Rows and scores of a search, `(queries × top_k)` each.
type SearchArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// An embedkit index file (memory-mapped): exact float32 or int8, or binary with rescoring.
#[pyclass(module = "embedkit._embedkit", frozen)]
pub struct Index {
    file: IndexFile,
}

#[pymethods]
impl Index {
    /// Opens an index file.
    #[new]
    fn open(path: std::path::PathBuf) -> PyResult<Self> {
        if !path.exists() {
            return Err(pyo3::exceptions::PyFileNotFoundError::new_err(format!(
                "index '{}' does not exist",
                path.display()
            )));
        }
        let file = IndexFile::open(&path).map_err(|e| runtime("cannot open the index", &e))?;
        Ok(Index { file })
    }

    /// Writes an index of `embeddings` (float32, one row per document) to `path`, atomically.
    #[staticmethod]
    #[pyo3(signature = (path, embeddings, ids=None, precision="float32", rescore_vectors=None, metric="cosine", model="", fingerprint=""))]
    #[allow(clippy::too_many_arguments)]
    fn write(
        py: Python<'_>,
        path: std::path::PathBuf,
        embeddings: PyReadonlyArray2<'_, f32>,
        ids: Option<Vec<String>>,
        precision: &str,
        rescore_vectors: Option<&str>,
        metric: &str,
        model: &str,
        fingerprint: &str,
    ) -> PyResult<usize> {
        let precision = parse_precision(precision)?;
        if !matches!(
            precision,
            Precision::F32 | Precision::Int8 | Precision::Binary | Precision::Ubinary
        ) {
            return Err(PyValueError::new_err(format!(
                "an index stores float32, int8, binary or ubinary vectors, not {precision}"
            )));
        }
        let rescore = rescore_vectors.map(parse_precision).transpose()?;
        let metric = parse_metric(metric)?;
        if !matches!(metric, Metric::Cosine | Metric::Dot) {
            return Err(PyValueError::new_err(format!(
                "an index ranks by cosine or dot, not {metric}"
            )));
        }
        let e = self::embeddings("embeddings", &embeddings)?;
        if let Some(ids) = &ids
            && ids.len() != e.rows()
        {
            return Err(PyValueError::new_err(format!(
                "{} ids for {} embeddings",
                ids.len(),
                e.rows()
            )));
        }
        let needs_ranges = precision == Precision::Int8 || rescore == Some(Precision::Int8);
        let ranges = if needs_ranges {
            let mut unit = e.clone();
            if metric == Metric::Cosine {
                unit.normalize();
            }
            Some(
                CalibrationRanges::from_calibration(&unit)
                    .map_err(|err| PyValueError::new_err(err.to_string()))?,
            )
        } else {
            None
        };
        let spec = IndexSpec {
            model: model.to_string(),
            fingerprint: fingerprint.to_string(),
            precision,
            rescore,
            metric,
            dims: e.dims(),
            ranges,
            extra: serde_json_map_from_python(),
        };
        let summary = py
            .detach(|| {
                let mut w = IndexWriter::create(&path, spec)?;
                match &ids {
                    Some(ids) => w.add(ids, &e)?,
                    None => w.add_unnamed(&e)?,
                }
                w.finish()
            })
            .map_err(|err| runtime("cannot write the index", &err))?;
        Ok(summary.count)
    }

    /// Rows in the index.
    fn __len__(&self) -> usize {
        self.file.len()
    }

    /// The header: model, fingerprint, precision, rescore, metric, dims, count.
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.file.meta();
        let d = PyDict::new(py);
        d.set_item("model", &m.model)?;
        d.set_item("fingerprint", &m.fingerprint)?;
        d.set_item("precision", m.precision.to_string())?;
        d.set_item("rescore", m.rescore.map(|p| p.to_string()))?;
        d.set_item("metric", m.metric.to_string())?;
        d.set_item("dims", m.dims)?;
        d.set_item("count", m.count)?;
        d.set_item("path", self.file.path().display().to_string())?;
        Ok(d)
    }

    /// The `top_k` best rows for each query vector: `(rows int64 (q, k), scores float32 (q, k))`; rows
    /// are −1 and scores NaN where the index has fewer than `top_k` rows.
    #[pyo3(signature = (queries, top_k=10, rescore=4))]
    fn search_vectors<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        top_k: usize,
        rescore: usize,
    ) -> PyResult<SearchArrays<'py>> {
        let q = embeddings("queries", &queries)?;
        let options = SearchOptions {
            top_k,
            rescore,
            ..SearchOptions::default()
        };
        let hits = py
            .detach(|| self.file.search(&q, &options))
            .map_err(|e| PyValueError::new_err(crate::errors::one_line(&e)))?;
        let mut rows = vec![-1i64; q.rows() * top_k];
        let mut scores = vec![f32::NAN; q.rows() * top_k];
        for (i, hs) in hits.iter().enumerate() {
            for (j, h) in hs.iter().take(top_k).enumerate() {
                rows[i * top_k + j] = h.row as i64;
                scores[i * top_k + j] = h.score;
            }
        }
        Ok((
            PyArray1::from_vec(py, rows).reshape([q.rows(), top_k])?,
            PyArray1::from_vec(py, scores).reshape([q.rows(), top_k])?,
        ))
    }

    /// The id of each row (its number as text when the index was built without ids).
    fn ids(&self, rows: Vec<i64>) -> PyResult<Vec<Option<String>>> {
        rows.into_iter()
            .map(|r| {
                if r < 0 {
                    return Ok(None);
                }
                self.file
                    .id(r as usize)
                    .map(Some)
                    .map_err(|e| PyValueError::new_err(crate::errors::one_line(&e)))
            })
            .collect()
    }
}

/// Notes stored in an index built from Python.
fn serde_json_map_from_python() -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("built_by".into(), "embedkit (Python)".into());
    m
}
