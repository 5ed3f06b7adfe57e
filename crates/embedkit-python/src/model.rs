//! `_embedkit.Model`: a loaded embedder (local, API, either behind a cache) that Python calls with the GIL
//! released, on a thread pool of the size it was given, and that survives `fork()`.

use crate::errors::{from_embed, from_model, from_source, runtime};
use crate::per_process::PerProcess;
use embedkit_cache::CachedEmbedder;
use embedkit_core::{Embedder, EncodeOptions};
use embedkit_cpu::{Compute, CpuOptions};
use embedkit_model::LocalEmbedder;
use embedkit_providers::{ApiEmbedder, ProviderConfig, parse_spec};
use embedkit_sources::SourceConfig;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// The thread count a model runs with: `threads` when given, else `OMP_NUM_THREADS` (Ray and Spark set it
/// per worker), else `RAYON_NUM_THREADS`, else every core.
#[pyfunction]
#[pyo3(signature = (threads=None))]
pub fn resolve_threads(threads: Option<usize>) -> PyResult<usize> {
    if let Some(t) = threads {
        if t == 0 {
            return Err(PyValueError::new_err("threads must be at least 1"));
        }
        return Ok(t);
    }
    for var in ["OMP_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if let Ok(v) = std::env::var(var) {
            // OMP_NUM_THREADS may be a list ("4,2") for nested levels; the first is the outer one.
            let first = v.split(',').next().unwrap_or_default().trim();
            match first.parse::<usize>() {
                Ok(n) if n > 0 => return Ok(n),
                _ if first.is_empty() => {}
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "{var}={v:?} is not a positive whole number of threads"
                    )));
                }
            }
        }
    }
    Ok(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What a model was asked to be: enough to load it again (after `fork()`, or in another process).
#[derive(Clone)]
struct Spec {
    name: String,
    compute: Compute,
    /// cpu, auto or cuda[:N]; what `auto` became is in [`Loaded::device`].
    device: embedkit_cuda::Device,
    threads: usize,
    cache: Option<String>,
    base_url: Option<String>,
}

/// A model as loaded in one process.
struct Loaded {
    /// What `encode` calls: the model, or the cache in front of it.
    embedder: Arc<dyn Embedder>,
    /// The local model under `embedder`, for token vectors, tokenization and facts; `None` for API models.
    local: Option<Arc<LocalEmbedder>>,
    /// Tokenization and the forward pass both run here, so a model uses exactly its threads.
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Where the forward pass runs: `cpu` or `cuda:N`.
    device: String,
}

impl Loaded {
    fn load(spec: &Spec) -> PyResult<Loaded> {
        let mut local = None;
        let mut pool = None;
        let mut device = "cpu".to_string();
        let embedder: Arc<dyn Embedder> = match parse_spec(&spec.name) {
            Some((provider, _)) => {
                let config = ProviderConfig {
                    base_url: spec.base_url.clone(),
                    ..ProviderConfig::default()
                }
                .fill_from_env(provider, &|k| std::env::var(k).ok());
                let api = ApiEmbedder::new(&spec.name, &config)
                    .map_err(|e| crate::errors::from_provider(&spec.name, e))?;
                Arc::new(api)
            }
            None => {
                if spec.base_url.is_some() {
                    return Err(PyValueError::new_err(format!(
                        "base_url is for API models (openai:NAME, …); '{}' is a local model",
                        spec.name
                    )));
                }
                let mut sources = SourceConfig::from_env();
                sources.quiet = true;
                let dir = embedkit_sources::resolve(&spec.name, &sources)
                    .map_err(|e| from_source(&spec.name, e))?;
                let threads = Arc::new(
                    embedkit_cpu::new_thread_pool(spec.threads)
                        .map_err(|e| runtime("cannot start worker threads", &e))?,
                );
                let options = CpuOptions {
                    compute: spec.compute,
                    thread_pool: Some(threads.clone()),
                    ..CpuOptions::default()
                };
                let model = match crate::device::choose(spec.device, spec.compute)? {
                    Some(gpu) => {
                        device = format!("cuda:{}", gpu.ordinal);
                        crate::device::load(&spec.name, &dir, gpu, &sources.home)?
                    }
                    None => embedkit_cpu::load_model(&spec.name, &dir, &options)
                        .map_err(|e| from_model(&spec.name, e))?,
                };
                let model = Arc::new(model);
                pool = Some(threads);
                local = Some(model.clone());
                model
            }
        };
        let embedder = match &spec.cache {
            None => embedder,
            Some(c) => {
                let cache = embedkit_cache::open_cache(
                    c,
                    embedkit_cache::DEFAULT_TTL,
                    embedkit_cache::DEFAULT_MAX_BYTES,
                )
                .map_err(|e| runtime("cannot open the cache", &e))?;
                Arc::new(CachedEmbedder::new(embedder, cache))
            }
        };
        Ok(Loaded {
            embedder,
            local,
            pool,
            device,
        })
    }

    /// Runs `f` on the model's pool (where rayon work inside it, the tokenizer's included, stays).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    fn local(&self, what: &str) -> PyResult<&LocalEmbedder> {
        self.local.as_deref().ok_or_else(|| {
            PyValueError::new_err(format!(
                "{what} needs a local model; '{}' is an API model",
                self.embedder.name()
            ))
        })
    }
}

/// One text's token ids and token vectors, as `embed_tokens` returns them.
type TokenVectors<'py> = (Vec<u32>, Bound<'py, PyArray2<f32>>);

/// A loaded embedding model (the native half of `embedkit.SentenceTransformer`).
#[pyclass(module = "embedkit._embedkit", frozen)]
pub struct Model {
    spec: Spec,
    /// Loaded again in a forked child (it has none of the pool's threads and shares the connections).
    loaded: PerProcess<Loaded>,
}

impl Model {
    /// The model as loaded in this process; loads it again in a forked child.
    fn current(&self) -> PyResult<Arc<Loaded>> {
        self.loaded.get(|| Loaded::load(&self.spec))
    }

    fn options(
        prompt: Option<String>,
        prompt_name: Option<String>,
        batch_size: usize,
        max_length: Option<usize>,
    ) -> PyResult<EncodeOptions> {
        if batch_size == 0 {
            return Err(PyValueError::new_err("batch_size must be at least 1"));
        }
        Ok(EncodeOptions {
            batch_size: Some(batch_size),
            prompt,
            prompt_name,
            max_length,
            ..EncodeOptions::default()
        })
    }
}

#[pymethods]
impl Model {
    /// Loads a model: a catalog name, a folder, `hf:org/name[@revision]`, or an API model (`openai:NAME`,
    /// `azure:DEPLOYMENT`, `cohere:NAME`, `voyage:NAME`); `cache` is a folder or a `redis://` URL.
    #[new]
    #[pyo3(signature = (name, compute="f32", threads=None, cache=None, base_url=None, device="cpu"))]
    fn new(
        py: Python<'_>,
        name: String,
        compute: &str,
        threads: Option<usize>,
        cache: Option<String>,
        base_url: Option<String>,
        device: &str,
    ) -> PyResult<Self> {
        let compute: Compute = compute.parse().map_err(PyValueError::new_err)?;
        let spec = Spec {
            name,
            compute,
            device: device.parse().map_err(PyValueError::new_err)?,
            threads: resolve_threads(threads)?,
            cache,
            base_url,
        };
        let loaded = py.detach(|| Loaded::load(&spec))?;
        Ok(Model {
            spec,
            loaded: PerProcess::new(loaded),
        })
    }

    /// The name the model was loaded as.
    #[getter]
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    /// Where the model computes: `cpu` or `cuda:N` (what `auto` chose).
    #[getter]
    fn device(&self) -> PyResult<String> {
        Ok(self.current()?.device.clone())
    }

    /// Threads the model computes with.
    #[getter]
    fn threads(&self) -> usize {
        self.spec.threads
    }

    /// `f32` or `int8`.
    #[getter]
    fn compute(&self) -> &'static str {
        match self.spec.compute {
            Compute::F32 => "f32",
            Compute::Int8 => "int8",
            Compute::Bf16 => "bf16",
        }
    }

    /// The cache folder or URL, if any.
    #[getter]
    fn cache(&self) -> Option<String> {
        self.spec.cache.clone()
    }

    /// The API base URL, if one was given.
    #[getter]
    fn base_url(&self) -> Option<String> {
        self.spec.base_url.clone()
    }

    /// Identifies the weights, modules and arithmetic (what caches and indexes key on).
    fn fingerprint(&self) -> PyResult<String> {
        Ok(self.current()?.embedder.fingerprint())
    }

    /// Dimensions of a sentence embedding.
    fn dims(&self) -> PyResult<usize> {
        Ok(self.current()?.embedder.dims())
    }

    /// Whether this is an API model.
    fn is_api(&self) -> PyResult<bool> {
        Ok(self.current()?.local.is_none())
    }

    /// Facts from the model folder: max_seq_length, prompts, default_prompt_name, similarity_fn_name,
    /// normalize, path, architecture, hidden_size, vocab_size. API models give what is known of them.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let loaded = self.current()?;
        let d = PyDict::new(py);
        match &loaded.local {
            Some(local) => {
                let info = local.info();
                d.set_item("max_seq_length", info.max_tokens)?;
                let prompts = PyDict::new(py);
                for (k, v) in &info.prompts {
                    prompts.set_item(k, v)?;
                }
                d.set_item("prompts", prompts)?;
                d.set_item("default_prompt_name", info.default_prompt_name.clone())?;
                d.set_item(
                    "similarity_fn_name",
                    local.layout().similarity_fn_name.clone(),
                )?;
                d.set_item("normalize", info.normalize)?;
                d.set_item("path", info.path.display().to_string())?;
                d.set_item("architecture", info.architecture)?;
                d.set_item("hidden_size", info.hidden_size)?;
                d.set_item("vocab_size", info.vocab_size)?;
                d.set_item("do_lower_case", local.layout().do_lower_case)?;
            }
            None => {
                d.set_item("max_seq_length", py.None())?;
                d.set_item("prompts", PyDict::new(py))?;
                d.set_item("default_prompt_name", py.None())?;
                d.set_item("similarity_fn_name", py.None())?;
                d.set_item("normalize", true)?;
                d.set_item("path", py.None())?;
                d.set_item("architecture", "api")?;
            }
        }
        Ok(d)
    }

    /// One vector per text, `float32 (len(texts), dims)`, with the model's own normalization and full width;
    /// the array owns the Rust buffer (no copy). The GIL is released while tokenizing and computing.
    #[pyo3(signature = (texts, prompt=None, prompt_name=None, batch_size=32, max_length=None, normalize=None))]
    #[allow(clippy::too_many_arguments)]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        prompt: Option<String>,
        prompt_name: Option<String>,
        batch_size: usize,
        max_length: Option<usize>,
        normalize: Option<bool>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let loaded = self.current()?;
        let mut options = Self::options(prompt, prompt_name, batch_size, max_length)?;
        options.normalize = normalize;
        let vectors = py.detach(|| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            loaded.run(|| loaded.embedder.embed(&refs, &options))
        });
        let vectors = vectors.map_err(from_embed)?;
        let (rows, dims) = (vectors.rows(), vectors.dims());
        PyArray1::from_vec(py, vectors.into_vec()).reshape([rows, dims])
    }

    /// Token vectors of each text (the transformer's output, special tokens included): a list of
    /// `(token_ids, float32 (tokens, hidden))`.
    #[pyo3(signature = (texts, prompt=None, prompt_name=None, batch_size=32, max_length=None))]
    fn embed_tokens<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        prompt: Option<String>,
        prompt_name: Option<String>,
        batch_size: usize,
        max_length: Option<usize>,
    ) -> PyResult<Vec<TokenVectors<'py>>> {
        let loaded = self.current()?;
        let options = Self::options(prompt, prompt_name, batch_size, max_length)?;
        let tokens = py.detach(|| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            loaded.run(|| loaded.embedder.embed_tokens(&refs, &options))
        });
        tokens
            .map_err(from_embed)?
            .into_iter()
            .map(|t| {
                let (rows, dims) = (t.vectors.rows(), t.vectors.dims());
                let array = PyArray1::from_vec(py, t.vectors.into_vec()).reshape([rows, dims])?;
                Ok((t.token_ids, array))
            })
            .collect()
    }

    /// Token ids of each text as the model sees them (stripped, lowercased where the model says, truncated
    /// at its limit or `max_length`), and each token's type id.
    #[pyo3(signature = (texts, max_length=None))]
    #[allow(clippy::type_complexity)]
    fn tokenize(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        max_length: Option<usize>,
    ) -> PyResult<(Vec<Vec<u32>>, Vec<Vec<u32>>, u32)> {
        let loaded = self.current()?;
        let local = loaded.local("tokenize")?;
        let encoded = py
            .detach(|| loaded.run(|| local.tokenizer().encode_batch(&texts, max_length)))
            .map_err(|(i, m)| PyValueError::new_err(format!("tokenizing text {i} failed: {m}")))?;
        let tokenizer = local.tokenizer();
        // sentence-transformers pads with the tokenizer's pad token; BERT's is [PAD] (0), RoBERTa's <pad> (1).
        let pad = ["[PAD]", "<pad>", "<|endoftext|>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .unwrap_or(0);
        let (ids, types) = encoded.into_iter().map(|e| (e.ids, e.type_ids)).unzip();
        Ok((ids, types, pad))
    }

    /// Requests, billed tokens and cost so far (API models), else `None`.
    fn usage<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(u) = self.current()?.embedder.usage() else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("requests", u.requests)?;
        d.set_item("input_tokens", u.input_tokens)?;
        d.set_item("cost_usd", u.cost_usd)?;
        Ok(Some(d))
    }
}
