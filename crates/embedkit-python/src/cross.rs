//! `_embedkit.CrossModel`: a loaded cross-encoder (the native half of `embedkit.CrossEncoder`), loaded as
//! `embedkit rerank` loads one (crates/embedkit/src/cross_cli.rs) on the CPU engine, called with the GIL
//! released on a thread pool of its own, and loaded again in a forked child.

use crate::errors::{from_embed, from_model, from_source, runtime};
use crate::model::resolve_threads;
use crate::per_process::PerProcess;
use embedkit_cpu::{Compute, CpuOptions};
use embedkit_model::{CrossEncoder, DenseActivation, PredictOptions, activation_name};
use embedkit_sources::SourceConfig;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// Every activation a caller may name, by the names `activation_name` gives them.
const ACTIVATIONS: [DenseActivation; 6] = [
    DenseActivation::Identity,
    DenseActivation::Sigmoid,
    DenseActivation::Tanh,
    DenseActivation::Relu,
    DenseActivation::Gelu,
    DenseActivation::Silu,
];

/// The activation called `name` (case-insensitive: `Sigmoid` and `sigmoid` alike).
fn parse_activation(name: &str) -> PyResult<DenseActivation> {
    ACTIVATIONS
        .into_iter()
        .find(|a| activation_name(*a).eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let known: Vec<&str> = ACTIVATIONS.iter().map(|a| activation_name(*a)).collect();
            PyValueError::new_err(format!(
                "activation_fn {name:?}: expected one of {}",
                known.join(", ")
            ))
        })
}

/// What the model was asked to be: enough to load it again after `fork()`.
struct Spec {
    name: String,
    compute: Compute,
    threads: usize,
}

/// A cross-encoder as loaded in one process.
struct Loaded {
    model: CrossEncoder,
    /// Tokenization and the forward pass run here, so the model uses exactly its threads.
    pool: Arc<rayon::ThreadPool>,
}

impl Loaded {
    fn load(spec: &Spec) -> PyResult<Loaded> {
        let mut sources = SourceConfig::from_env();
        sources.quiet = true;
        let dir = embedkit_sources::resolve(&spec.name, &sources)
            .map_err(|e| from_source(&spec.name, e))?;
        let pool = Arc::new(
            embedkit_cpu::new_thread_pool(spec.threads)
                .map_err(|e| runtime("cannot start worker threads", &e))?,
        );
        let options = CpuOptions {
            compute: spec.compute,
            thread_pool: Some(pool.clone()),
            ..CpuOptions::default()
        };
        let model = CrossEncoder::load_with(&spec.name, &dir, |config, files| {
            embedkit_cpu::load_backend(config, files, &options)
        })
        .map_err(|e| from_model(&spec.name, e))?;
        Ok(Loaded { model, pool })
    }
}

/// A loaded cross-encoder: `(query, document)` pairs in, `num_labels` scores per pair out.
#[pyclass(module = "embedkit._embedkit", frozen)]
pub struct CrossModel {
    spec: Spec,
    /// Loaded again in a forked child (it has none of the pool's threads).
    loaded: PerProcess<Loaded>,
}

impl CrossModel {
    /// The model as loaded in this process; loads it again in a forked child.
    fn current(&self) -> PyResult<Arc<Loaded>> {
        self.loaded.get(|| Loaded::load(&self.spec))
    }
}

#[pymethods]
impl CrossModel {
    /// Loads a cross-encoder (a `*ForSequenceClassification` folder): a catalog name, a folder or
    /// `hf:org/name[@revision]`, on the CPU engine.
    #[new]
    #[pyo3(signature = (name, compute="f32", threads=None))]
    fn new(py: Python<'_>, name: String, compute: &str, threads: Option<usize>) -> PyResult<Self> {
        let spec = Spec {
            name,
            compute: compute.parse().map_err(PyValueError::new_err)?,
            threads: resolve_threads(threads)?,
        };
        let loaded = py.detach(|| Loaded::load(&spec))?;
        Ok(CrossModel {
            spec,
            loaded: PerProcess::new(loaded),
        })
    }

    /// The name the model was loaded as.
    #[getter]
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    /// Threads the model computes with.
    #[getter]
    fn threads(&self) -> usize {
        self.spec.threads
    }

    /// Scores per pair.
    #[getter]
    fn num_labels(&self) -> PyResult<usize> {
        Ok(self.current()?.model.num_labels())
    }

    /// Facts from the model folder: num_labels, labels, activation (the default of `predict`), max_length
    /// (tokens per pair), architecture, path, hidden_size, backend.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.current()?.model.info();
        let d = PyDict::new(py);
        d.set_item("num_labels", info.num_labels)?;
        d.set_item("labels", info.labels)?;
        d.set_item("activation", info.activation)?;
        d.set_item("max_length", info.max_tokens)?;
        d.set_item("architecture", info.architecture)?;
        d.set_item("path", info.path.display().to_string())?;
        d.set_item("hidden_size", info.hidden_size)?;
        d.set_item("backend", info.backend)?;
        Ok(d)
    }

    /// Scores of each pair, `float32 (len(pairs), num_labels)`; `activation` overrides the model's
    /// (`"identity"` gives the logits). The array owns the Rust buffer (no copy); the GIL is released while
    /// tokenizing and computing.
    #[pyo3(signature = (pairs, batch_size=32, activation=None, max_length=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        pairs: Vec<(String, String)>,
        batch_size: usize,
        activation: Option<&str>,
        max_length: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if max_length == Some(0) {
            return Err(PyValueError::new_err("max_length must be at least 1"));
        }
        let options = PredictOptions {
            batch_size: Some(batch_size),
            activation: activation.map(parse_activation).transpose()?,
            max_length,
            refuse_truncation: false,
        };
        let loaded = self.current()?;
        let labels = loaded.model.num_labels();
        let scores = py.detach(|| {
            let refs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            loaded
                .pool
                .install(|| loaded.model.predict(&refs, &options))
        });
        let scores = scores.map_err(from_embed)?;
        let rows = scores.len();
        let flat: Vec<f32> = scores.into_iter().flatten().collect();
        PyArray1::from_vec(py, flat).reshape([rows, labels])
    }
}
