//! `LocalEmbedder`: a model folder plus a backend, doing what sentence-transformers' `encode` does.

use crate::ModelError;
use crate::backend::{Backend, BackendError, TokenBatch};
use crate::batch::plan_batches;
use crate::colbert::{ColbertHead, ColbertLayout, ColbertSpec};
use crate::config::{Architecture, EncoderConfig};
use crate::layout::{PostPoolingStep, SentenceTransformerLayout};
use crate::tokenizer::{Encoded, TextTokenizer};
use crate::weights::{EncoderWeights, Linear, SafetensorsFiles};
use embedkit_core::{
    EmbedError, Embedder, Embeddings, EncodeOptions, TokenEmbeddings, l2_normalize,
};
use std::path::{Path, PathBuf};

/// Texts per forward pass when the caller does not say (sentence-transformers' default).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Facts about a loaded model, for `embedkit models info` and reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// The name the model was loaded as.
    pub name: String,
    /// The model folder.
    pub path: PathBuf,
    /// Encoder family, e.g. `BERT`.
    pub architecture: String,
    /// Output dimensions.
    pub dims: usize,
    /// Transformer width.
    pub hidden_size: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Token limit per text, special tokens included.
    pub max_tokens: usize,
    /// Pooling modes, e.g. `mean`.
    pub pooling: String,
    /// Number of Dense modules after pooling.
    pub dense_layers: usize,
    /// Whether outputs are L2-normalized by default.
    pub normalize: bool,
    /// Named prompts.
    pub prompts: Vec<(String, String)>,
    /// Default prompt name.
    pub default_prompt_name: Option<String>,
    /// The model's similarity function.
    pub similarity: String,
    /// Parameters of the transformer.
    pub parameters: usize,
    /// Bytes of all files in the folder.
    pub size_on_disk: u64,
    /// Vocabulary size of the tokenizer.
    pub vocab_size: usize,
    /// The backend that runs it.
    pub backend: String,
}

/// The checks every model folder passes before loading (it exists, is a folder, has a readable module layout and
/// a transformer config.json): its layout and the config.json's path. Shared by bi-encoders and cross-encoders.
pub(crate) fn read_model_folder(
    dir: &Path,
) -> Result<(SentenceTransformerLayout, PathBuf), ModelError> {
    if !dir.exists() {
        return Err(ModelError::NotFound(dir.to_path_buf()));
    }
    if !dir.is_dir() {
        return Err(ModelError::NotADirectory(dir.to_path_buf()));
    }
    let layout = SentenceTransformerLayout::read(dir)?;
    let config_path = layout.transformer_dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::MissingFile {
            dir: layout.transformer_dir.clone(),
            what: "config.json".into(),
        });
    }
    Ok((layout, config_path))
}

/// A sentence-transformers model folder loaded for inference on some [`Backend`].
pub struct LocalEmbedder {
    name: String,
    dir: PathBuf,
    config: EncoderConfig,
    layout: SentenceTransformerLayout,
    tokenizer: TextTokenizer,
    pub(crate) backend: Box<dyn Backend>,
    parameters: usize,
    fingerprint: String,
    /// The projection head and tokenization rules of a ColBERT folder (PyLate or Stanford).
    colbert: Option<ColbertHead>,
}

impl LocalEmbedder {
    /// Loads the model folder `dir`, handing its encoder weights to `make_backend`.
    ///
    /// `name` is what logs and reports call it (the catalog name or path the user gave).
    pub fn load<F>(name: &str, dir: &Path, make_backend: F) -> Result<Self, ModelError>
    where
        F: FnOnce(&EncoderConfig, EncoderWeights) -> Result<Box<dyn Backend>, BackendError>,
    {
        Self::load_with(name, dir, |config, files| {
            let weights = EncoderWeights::load(files, config)?;
            make_backend(config, weights).map_err(ModelError::Backend)
        })
    }

    /// Loads the model folder `dir`, letting `make_backend` read the encoder's weights from the safetensors
    /// itself: for architectures whose layers are not BERT-shaped (ModernBERT), which
    /// [`EncoderWeights`] does not describe.
    pub fn load_with<F>(name: &str, dir: &Path, make_backend: F) -> Result<Self, ModelError>
    where
        F: FnOnce(&EncoderConfig, &SafetensorsFiles) -> Result<Box<dyn Backend>, ModelError>,
    {
        let (layout, config_path) = read_model_folder(dir)?;
        let tdir = layout.transformer_dir.clone();
        // A classifier's encoder pooled as a bi-encoder gives vectors that mean nothing (cosine ≈ 1 for all).
        if let Some(architecture) =
            crate::cross_encoder::sequence_classification_class(&config_path)?
        {
            return Err(ModelError::IsCrossEncoder {
                path: dir.to_path_buf(),
                architecture,
            });
        }
        let config = EncoderConfig::from_file(&config_path)?;
        let files = SafetensorsFiles::open_dir(&tdir)?;
        let parameters = files.num_parameters();
        let colbert = ColbertSpec::detect(dir, &layout, &files)?;
        // PyLate sets the Transformer's max_seq_length from query/document_length itself.
        let max_tokens = match &colbert {
            Some(c) => c.max_tokens(),
            None => layout
                .max_seq_length
                .or_else(|| TextTokenizer::configured_max_length(&tdir))
                .unwrap_or(usize::MAX),
        }
        .min(config.max_tokens());
        let mut tokenizer = TextTokenizer::load(&tdir, layout.do_lower_case, max_tokens)?;
        // Byte-level BPEs (the decoders', ModernBERT's) make tokens of the spaces sentence-transformers keeps.
        if config.architecture.is_decoder() || config.architecture == Architecture::ModernBert {
            tokenizer = tokenizer.keep_whitespace();
        }
        let colbert = colbert.map(|c| c.resolve(dir, &tokenizer)).transpose()?;
        check_dense_widths(&layout, &config)?;
        if let Some(c) = &colbert {
            check_projection(c, &config)?;
        }
        let backend = make_backend(&config, &files)?;
        drop(files);
        // The backend's arithmetic is part of the fingerprint: int8 vectors must never be served from a cache
        // (or searched in an index) as if they were the f32 ones.
        let fingerprint = format!(
            "{}+{}",
            fingerprint_folder(dir, tokenizer.max_length())?,
            backend.fingerprint()
        );
        Ok(Self {
            fingerprint,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            config,
            layout,
            tokenizer,
            backend,
            parameters,
            colbert,
        })
    }

    /// The ColBERT head, when the folder is a PyLate or Stanford ColBERT model.
    pub fn colbert(&self) -> Option<&ColbertHead> {
        self.colbert.as_ref()
    }

    /// Token vectors of a ColBERT model, as PyLate's `encode(is_query=...)`: marker, [MASK] expansion for
    /// queries, skiplist for documents, projection, L2 normalization (unless `normalize` is `Some(false)`).
    fn colbert_tokens(
        &self,
        head: &ColbertHead,
        texts: &[&str],
        options: &EncodeOptions,
    ) -> Result<Vec<TokenEmbeddings>, EmbedError> {
        let is_query = options.prompt_name.as_deref() == Some("query");
        let limit = head.token_limit(is_query, options.max_length);
        let owned: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let inputs: Vec<_> = self
            .tokenizer
            .encode_batch(&owned, Some(limit))
            .map_err(|(index, message)| EmbedError::Tokenize { index, message })?
            .into_iter()
            .map(|e| head.prepare(e.ids, e.type_ids, is_query))
            .collect();
        let encoded: Vec<Encoded> = inputs
            .iter()
            .map(|c| Encoded {
                ids: c.ids.clone(),
                type_ids: c.type_ids.clone(),
            })
            .collect();
        let keys: Vec<usize> = inputs.iter().map(|c| c.keys).collect();
        let normalize = options.normalize.unwrap_or(true);
        let hidden = self.config.hidden_size;
        let dims = head.dims();
        let mut out: Vec<Option<TokenEmbeddings>> = vec![None; texts.len()];
        self.run_batches(&encoded, Some(&keys), options, |i, states| {
            let keep = &inputs[i].keep;
            let mut data = Vec::with_capacity(keep.len() * dims);
            for &t in keep {
                let mut v = states[t * hidden..(t + 1) * hidden].to_vec();
                for step in &head.projection {
                    match step {
                        PostPoolingStep::Dense { linear, activation } => {
                            v = apply_linear(linear, &v, |x| activation.apply(x));
                        }
                        PostPoolingStep::Normalize => l2_normalize(&mut v),
                    }
                }
                if normalize {
                    l2_normalize(&mut v);
                }
                data.extend_from_slice(&v);
            }
            out[i] = Some(TokenEmbeddings {
                token_ids: keep.iter().map(|&t| inputs[i].ids[t]).collect(),
                vectors: Embeddings::new(data, keep.len(), dims)
                    .expect("every kept token gets one projected vector"),
            });
        })?;
        Ok(out
            .into_iter()
            .map(|t| t.expect("the batch plan covers every text exactly once"))
            .collect())
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The sentence-transformers layout (pooling, Dense, prompts).
    pub fn layout(&self) -> &SentenceTransformerLayout {
        &self.layout
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Facts about the model.
    pub fn info(&self) -> ModelInfo {
        let mut info = self.sentence_info();
        if let Some(c) = &self.colbert {
            info.pooling = format!(
                "none: ColBERT token vectors ({:?} layout; query {} tokens, document ≤ {})",
                c.layout, c.query_length, c.document_length
            );
            info.dense_layers = c.projection.len();
            info.normalize = true;
            info.similarity = "maxsim".into();
        }
        info
    }

    fn sentence_info(&self) -> ModelInfo {
        ModelInfo {
            name: self.name.clone(),
            path: self.dir.clone(),
            architecture: self.config.architecture.to_string(),
            dims: self.dims(),
            hidden_size: self.config.hidden_size,
            layers: self.config.num_layers,
            heads: self.config.num_heads,
            max_tokens: self.tokenizer.max_length(),
            pooling: self.layout.pooling.describe(),
            dense_layers: self
                .layout
                .post_pooling
                .iter()
                .filter(|s| matches!(s, PostPoolingStep::Dense { .. }))
                .count(),
            normalize: self.layout.normalizes(),
            prompts: self
                .layout
                .prompts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            default_prompt_name: self.layout.default_prompt_name.clone(),
            similarity: self
                .layout
                .similarity_fn_name
                .clone()
                .unwrap_or_else(|| "cosine".into()),
            parameters: self.parameters,
            size_on_disk: dir_size(&self.dir),
            vocab_size: self.tokenizer.vocab_size(),
            backend: self.backend.name().to_string(),
        }
    }

    /// The prompt to prepend, as sentence-transformers picks it: an explicit prompt, else the named one, else
    /// the model's default.
    pub(crate) fn resolve_prompt(
        &self,
        options: &EncodeOptions,
    ) -> Result<Option<String>, EmbedError> {
        if let Some(p) = &options.prompt {
            return Ok((!p.is_empty()).then(|| p.clone()));
        }
        let name = match (&options.prompt_name, &self.layout.default_prompt_name) {
            (Some(n), _) => n,
            (None, Some(d)) => d,
            (None, None) => return Ok(None),
        };
        match self.layout.prompts.get(name) {
            Some(p) => Ok((!p.is_empty()).then(|| p.clone())),
            None => Err(EmbedError::InvalidOption {
                option: "prompt_name",
                reason: format!(
                    "'{name}' is not one of the model's prompts ({})",
                    if self.layout.prompts.is_empty() {
                        "it has none".to_string()
                    } else {
                        self.layout
                            .prompts
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            }),
        }
    }

    /// Tokenizes the texts with the prompt applied; returns the encodings and how many leading tokens pooling
    /// skips (non-zero only when the pooling config excludes the prompt).
    pub(crate) fn tokenize(
        &self,
        texts: &[&str],
        options: &EncodeOptions,
    ) -> Result<(Vec<Encoded>, usize), EmbedError> {
        let prompt = self.resolve_prompt(options)?;
        let with_prompt: Vec<String> = match &prompt {
            Some(p) => texts.iter().map(|t| format!("{p}{t}")).collect(),
            None => texts.iter().map(|t| t.to_string()).collect(),
        };
        let encoded = self
            .tokenizer
            .encode_batch(&with_prompt, options.max_length)
            .map_err(|(index, message)| EmbedError::Tokenize { index, message })?;
        let skip = match (&prompt, self.layout.pooling.include_prompt) {
            (Some(p), false) => {
                // sentence-transformers: prompt_length = len(tokenize(prompt)) - 1 (the closing special token),
                // and pooling masks that many leading tokens.
                let ids = self
                    .tokenizer
                    .encode_batch(std::slice::from_ref(p), None)
                    .map_err(|(_, message)| EmbedError::Tokenize { index: 0, message })?;
                ids.first().map_or(0, |e| e.ids.len().saturating_sub(1))
            }
            _ => 0,
        };
        Ok((encoded, skip))
    }

    /// Runs the planned batches, calling `per_text(index, token_states)` for every text.
    fn run_batches(
        &self,
        encoded: &[Encoded],
        key_lens: Option<&[usize]>,
        options: &EncodeOptions,
        mut per_text: impl FnMut(usize, &[f32]),
    ) -> Result<(), EmbedError> {
        let lengths: Vec<usize> = encoded.iter().map(|e| e.ids.len()).collect();
        let batch_size = options.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(EmbedError::InvalidOption {
                option: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        let hidden = self.config.hidden_size;
        let mut ids = Vec::new();
        let mut types = Vec::new();
        let mut seq_lens = Vec::new();
        let mut keys = Vec::new();
        for batch in plan_batches(&lengths, batch_size, None) {
            ids.clear();
            types.clear();
            seq_lens.clear();
            keys.clear();
            for &i in &batch {
                ids.extend_from_slice(&encoded[i].ids);
                types.extend_from_slice(&encoded[i].type_ids);
                seq_lens.push(encoded[i].ids.len());
                if let Some(k) = key_lens {
                    keys.push(k[i]);
                }
            }
            let states = self
                .backend
                .forward(&TokenBatch {
                    input_ids: &ids,
                    type_ids: &types,
                    seq_lens: &seq_lens,
                    key_lens: key_lens.map(|_| &keys[..]),
                })
                .map_err(EmbedError::Backend)?;
            let mut offset = 0;
            for (&i, &len) in batch.iter().zip(&seq_lens) {
                per_text(i, &states[offset * hidden..(offset + len) * hidden]);
                offset += len;
            }
        }
        Ok(())
    }
}

impl Embedder for LocalEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dims(&self) -> usize {
        match &self.colbert {
            Some(c) => c.dims(),
            None => self.layout.output_dims(self.config.hidden_size),
        }
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn embed(&self, texts: &[&str], options: &EncodeOptions) -> Result<Embeddings, EmbedError> {
        if let Some(c) = &self.colbert {
            let kind = match c.layout {
                ColbertLayout::PyLate => "PyLate",
                ColbertLayout::Stanford => "Stanford",
            };
            return Err(EmbedError::Unsupported(format!(
                "{} is a ColBERT model ({kind} layout): it gives token vectors (embed --tokens, rerank), \
                 not one vector per text",
                self.name
            )));
        }
        let dims = self.dims();
        if let Some(d) = options.truncate_dim
            && (d == 0 || d > dims)
        {
            return Err(EmbedError::InvalidOption {
                option: "truncate_dim",
                reason: format!("{d} is outside 1..={dims} (the model's dimensions)"),
            });
        }
        let (encoded, skip) = self.tokenize(texts, options)?;
        let normalize = options.normalize.unwrap_or(self.layout.normalizes());
        // A trailing Normalize module is applied below, after Matryoshka truncation, so that truncated vectors
        // are unit length too; any other step runs where the model has it.
        let steps = match self.layout.post_pooling.split_last() {
            Some((PostPoolingStep::Normalize, rest)) => rest,
            _ => &self.layout.post_pooling[..],
        };
        let out_dims = options.truncate_dim.unwrap_or(dims);
        let mut out = vec![0.0f32; texts.len() * out_dims];
        let hidden = self.config.hidden_size;
        let mut pooled = Vec::with_capacity(dims);
        self.run_batches(&encoded, None, options, |i, states| {
            pooled.clear();
            self.layout.pooling.pool(states, hidden, skip, &mut pooled);
            for step in steps {
                match step {
                    PostPoolingStep::Dense { linear, activation } => {
                        pooled = apply_linear(linear, &pooled, |x| activation.apply(x));
                    }
                    PostPoolingStep::Normalize => l2_normalize(&mut pooled),
                }
            }
            let row = &mut out[i * out_dims..(i + 1) * out_dims];
            row.copy_from_slice(&pooled[..out_dims]);
            if normalize {
                l2_normalize(row);
            }
        })?;
        Embeddings::new(out, texts.len(), out_dims).map_err(|e| EmbedError::Backend(Box::new(e)))
    }

    fn embed_tokens(
        &self,
        texts: &[&str],
        options: &EncodeOptions,
    ) -> Result<Vec<TokenEmbeddings>, EmbedError> {
        if let Some(head) = &self.colbert {
            return self.colbert_tokens(head, texts, options);
        }
        let (encoded, _) = self.tokenize(texts, options)?;
        let hidden = self.config.hidden_size;
        let mut out: Vec<Option<TokenEmbeddings>> = vec![None; texts.len()];
        self.run_batches(&encoded, None, options, |i, states| {
            let n = states.len() / hidden;
            out[i] = Some(TokenEmbeddings {
                token_ids: encoded[i].ids.clone(),
                vectors: Embeddings::new(states.to_vec(), n, hidden)
                    .expect("backend returns hidden_size values per token"),
            });
        })?;
        Ok(out
            .into_iter()
            .map(|t| t.expect("the batch plan covers every text exactly once"))
            .collect())
    }
}

pub(crate) fn apply_linear(linear: &Linear, x: &[f32], act: impl Fn(f32) -> f32) -> Vec<f32> {
    let inp = linear.weight.shape[1];
    linear
        .weight
        .data
        .chunks_exact(inp)
        .enumerate()
        .map(|(o, w)| {
            let mut s: f32 = w.iter().zip(x).map(|(a, b)| a * b).sum();
            if let Some(b) = &linear.bias {
                s += b.data[o];
            }
            act(s)
        })
        .collect()
}

/// Each Dense module must accept the width the step before it produces.
fn check_dense_widths(
    layout: &SentenceTransformerLayout,
    config: &EncoderConfig,
) -> Result<(), ModelError> {
    let mut width = layout.pooling.output_dims(config.hidden_size);
    for s in &layout.post_pooling {
        if let PostPoolingStep::Dense { linear, .. } = s {
            if linear.weight.shape[1] != width {
                return Err(ModelError::TensorShape {
                    name: "Dense linear.weight".into(),
                    expected: vec![linear.weight.shape[0], width],
                    found: linear.weight.shape.clone(),
                });
            }
            width = linear.weight.shape[0];
        }
    }
    Ok(())
}

/// A ColBERT projection must take the encoder's width, and each Dense step the width before it.
fn check_projection(head: &ColbertHead, config: &EncoderConfig) -> Result<(), ModelError> {
    let mut width = config.hidden_size;
    for s in &head.projection {
        if let PostPoolingStep::Dense { linear, .. } = s {
            if linear.weight.shape[1] != width {
                return Err(ModelError::TensorShape {
                    name: "ColBERT projection linear.weight".into(),
                    expected: vec![linear.weight.shape[0], width],
                    found: linear.weight.shape.clone(),
                });
            }
            width = linear.weight.shape[0];
        }
    }
    Ok(())
}

pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            // metadata() follows symlinks, so HF cache snapshots (symlinks to blobs) count their real size.
            if p.is_dir() {
                dir_size(&p)
            } else {
                std::fs::metadata(&p).map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Bytes sampled from every weights file for the fingerprint: 64 KiB out of every 4 MiB.
const SAMPLE: u64 = 64 << 10;
const STRIDE: u64 = 4 << 20;

/// A sha256 over what decides the vectors: the config files of every module, the token limit, and the
/// safetensors files (their size, header, and a strided sample of their data). Hashing all of a 440 MB model
/// would add a second to every load; any real change of weights (fine-tuning touches every tensor) changes
/// the sampled bytes.
fn fingerprint_folder(dir: &Path, max_tokens: usize) -> Result<String, ModelError> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    let mut h = Sha256::new();
    h.update(format!("embedkit-fingerprint-v1 max_tokens={max_tokens}\n"));
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    for path in files {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_weights = name.ends_with(".safetensors");
        // artifact.metadata: a Stanford ColBERT checkpoint's query/document lengths and markers.
        let is_config =
            name.ends_with(".json") || name == "vocab.txt" || name == "artifact.metadata";
        if !(is_weights || is_config) || name == "README.md" {
            continue;
        }
        h.update(rel.as_bytes());
        h.update([0]);
        if is_config {
            h.update(std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?);
            continue;
        }
        let mut f = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
        let len = f.metadata().map_err(|e| ModelError::io(&path, e))?.len();
        h.update(len.to_le_bytes());
        let mut buf = vec![0u8; SAMPLE as usize];
        let mut offset = 0;
        while offset < len {
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| ModelError::io(&path, e))?;
            let n = (len - offset).min(SAMPLE) as usize;
            f.read_exact(&mut buf[..n])
                .map_err(|e| ModelError::io(&path, e))?;
            h.update(&buf[..n]);
            offset += STRIDE;
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}
