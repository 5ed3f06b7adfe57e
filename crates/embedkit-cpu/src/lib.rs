//! embedkit's native CPU backend: BERT, XLM-RoBERTa and MPNet encoders run directly on safetensors weights.
//!
//! A batch is the concatenation of its sequences without padding: the linear layers see one `tokens × hidden`
//! matrix for the whole batch (no work on pad tokens), and attention runs per sequence and head, in parallel.
//! Matrix products use the `gemm` crate, which picks AVX-512, AVX2, NEON or scalar kernels at run time.

pub mod amx;
mod attention;
mod bf16;
mod buffers;
mod decoder;
pub mod elementwise;
mod int8;
mod kernels;
mod load;
mod modernbert;
mod panel;
pub mod peak;
mod rotary;
mod simd;

pub use decoder::DecoderBackend;
pub use modernbert::ModernBertBackend;
pub use simd::SimdLevel;

use embedkit_model::{
    Architecture, Backend, BackendError, EncoderConfig, LayerNorm, Linear, SafetensorsFiles,
    TokenBatch,
};
use embedkit_model::{LocalEmbedder, ModelError};
use gemm::Parallelism;
use std::path::Path;
use std::sync::Arc;

/// Errors of the CPU backend.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The worker thread pool could not be created.
    #[error("cannot start {threads} worker threads: {message}")]
    ThreadPool {
        /// Requested threads.
        threads: usize,
        /// The OS's message.
        message: String,
    },
    /// A token id is outside the embedding table.
    #[error(
        "token id {id} is outside the vocabulary of {vocab} (is the tokenizer from another model?)"
    )]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// A sequence is longer than the position table allows.
    #[error("sequence of {len} tokens exceeds the model's {max} positions")]
    SequenceTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The batch's arrays disagree in length.
    #[error("malformed batch: {0}")]
    MalformedBatch(String),
    /// The requested arithmetic needs instructions this CPU (or the `EMBEDKIT_SIMD` cap) lacks.
    #[error(
        "--compute {compute} needs a CPU with {needs}, which this one lacks (or EMBEDKIT_SIMD caps it \
         below AVX-512); use --compute f32 or int8"
    )]
    Unsupported {
        /// The arithmetic asked for.
        compute: &'static str,
        /// The instructions it needs.
        needs: &'static str,
    },
}

/// The arithmetic of the linear layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compute {
    /// f32 everywhere: the vectors of sentence-transformers.
    #[default]
    F32,
    /// Linear layers with int8 weights (per output channel) and int8 activations (per token, quantized on
    /// the fly), accumulated in i32; AVX-512 VNNI where present. Attention, LayerNorm and GELU stay f32.
    Int8,
    /// Linear layers with bf16 weights (half the memory of f32) and bf16 activations, accumulated in f32 by
    /// AVX512_BF16's `vdpbf16ps`; only on CPUs that have it. Attention, LayerNorm, softmax and GELU stay f32.
    Bf16,
}

impl std::str::FromStr for Compute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Compute::F32),
            "int8" => Ok(Compute::Int8),
            "bf16" => Ok(Compute::Bf16),
            other => Err(format!(
                "unknown compute '{other}': expected f32, int8 or bf16"
            )),
        }
    }
}

/// How the CPU backend runs.
#[derive(Debug, Clone, Default)]
pub struct CpuOptions {
    /// Linear-layer arithmetic.
    pub compute: Compute,
    /// Worker threads; `None` uses every core.
    pub threads: Option<usize>,
    /// Instruction set for the element-wise kernels; `None` detects it (honouring `EMBEDKIT_SIMD`). Never
    /// above what the CPU supports.
    pub simd: Option<SimdLevel>,
    /// f32 batches of up to this many tokens use the panel kernel, larger ones `gemm`; `None` reads
    /// `EMBEDKIT_PANEL_MAX_ROWS`, else 1024 (no limit on AMD CPUs with AVX-512, Zen 4 and Zen 5: see
    /// `simd::panels_at_every_batch`). Both give the same vectors to float rounding.
    pub panel_max_rows: Option<usize>,
    /// Run on this pool instead of a new one (then `threads` is the pool's size). The Python package passes
    /// the pool it also tokenizes on, so a model uses exactly the threads it was given, and a fresh pool
    /// after `fork()` (whose child has no pool threads) by building a new backend.
    pub thread_pool: Option<Arc<rayon::ThreadPool>>,
}

/// One linear layer in the chosen arithmetic.
enum Projection {
    /// f32 with weights packed in panels (see [`panel`]); the path for small batches.
    /// Large batches (above `panel_max_rows`) run `gemm` on the same panels: one copy of the weights.
    Panel(panel::PanelLinear),
    F32 {
        /// `[n × k]`, PyTorch layout.
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        n: usize,
        k: usize,
    },
    Int8(int8::QuantizedLinear),
    /// bf16 weights in one panel layout for every batch size (see [`bf16`]).
    Bf16(bf16::Bf16Linear),
}

impl Projection {
    fn new(weight: Vec<f32>, bias: Option<Vec<f32>>, n: usize, k: usize, compute: Compute) -> Self {
        match compute {
            Compute::F32 => {
                Projection::Panel(panel::PanelLinear::new(&weight, bias.as_deref(), n, k))
            }
            Compute::Int8 => {
                Projection::Int8(int8::QuantizedLinear::new(&weight, bias.as_deref(), n, k))
            }
            Compute::Bf16 => {
                Projection::Bf16(bf16::Bf16Linear::new(&weight, bias.as_deref(), n, k))
            }
        }
    }

    fn from_linear(l: Linear, compute: Compute) -> Self {
        let (n, k) = (l.weight.shape[0], l.weight.shape[1]);
        Self::new(l.weight.data, l.bias.map(|b| b.data), n, k, compute)
    }

    fn forward(&self, x: &[f32], t: usize, y: &mut [f32], ctx: &mut ForwardContext) {
        match self {
            Projection::Panel(p) if t <= ctx.panel_max_rows => p.forward(x, t, y, ctx.simd),
            Projection::Panel(p) => p.forward_gemm(x, t, y, ctx.parallelism),
            Projection::F32 { weight, bias, n, k } => {
                kernels::linear(x, t, *k, weight, bias.as_deref(), *n, y, ctx.parallelism)
            }
            Projection::Int8(q) => q.forward(x, t, y, &mut ctx.scratch, ctx.vnni, ctx.simd),
            Projection::Bf16(b) => b.forward(x, t, y),
        }
    }

    /// `y = act(x)·Wᵀ + b`, leaving `act(x)` in `x`. int8 applies `act` row by row inside its quantizer (one
    /// pass over `x`); the others activate the whole of `x` first.
    fn forward_activated(
        &self,
        x: &mut [f32],
        t: usize,
        y: &mut [f32],
        ctx: &mut ForwardContext,
        act: embedkit_model::Activation,
    ) {
        match self {
            Projection::Int8(q) => {
                q.forward_activated(x, t, y, &mut ctx.scratch, ctx.vnni, ctx.simd, act)
            }
            _ => {
                kernels::activate(ctx.simd, x, act);
                self.forward(x, t, y, ctx);
            }
        }
    }
}

/// Per-call state of a forward pass.
struct ForwardContext {
    parallelism: Parallelism,
    simd: SimdLevel,
    /// Batches up to this many tokens use the panel kernel; larger ones `gemm` (`EMBEDKIT_PANEL_MAX_ROWS`).
    panel_max_rows: usize,
    scratch: int8::QuantScratch,
    vnni: bool,
}

struct Layer {
    /// Q, K and V stacked into one `[3·hidden × hidden]` projection, so one GEMM computes all three.
    qkv: Projection,
    attention_output: Projection,
    attention_norm: LayerNorm,
    intermediate: Projection,
    output: Projection,
    output_norm: LayerNorm,
}

/// A transformer encoder on the CPU, f32.
pub struct CpuBackend {
    config: EncoderConfig,
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_embeddings: Option<Vec<f32>>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    relative_attention_bias: Option<Vec<f32>>,
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
    simd: SimdLevel,
    compute: Compute,
    vnni: bool,
    panel_max_rows: usize,
    /// Activation buffers kept between batches.
    buffers: buffers::BufferPool,
}

/// A pool of `threads` named worker threads, as the backend makes its own.
pub fn new_thread_pool(threads: usize) -> Result<rayon::ThreadPool, CpuError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("embedkit-cpu-{i}"))
        .build()
        .map_err(|e| CpuError::ThreadPool {
            threads,
            message: e.to_string(),
        })
}

/// Loads the model folder `dir` onto the CPU backend: what the command line and the Python package do with a
/// local model. `name` is what logs, reports and caches call it.
pub fn load_model(
    name: &str,
    dir: &Path,
    options: &CpuOptions,
) -> Result<LocalEmbedder, ModelError> {
    LocalEmbedder::load_with(name, dir, |config, files| {
        load_backend(config, files, options)
    })
}

/// The CPU backend for `config`'s architecture, its weights read from `files`: [`ModernBertBackend`] for
/// ModernBERT, [`CpuBackend`] for the BERT-shaped encoders.
pub fn load_backend(
    config: &EncoderConfig,
    files: &SafetensorsFiles,
    options: &CpuOptions,
) -> Result<Box<dyn Backend>, ModelError> {
    let backend: Box<dyn Backend> = match config.architecture {
        Architecture::ModernBert => Box::new(ModernBertBackend::load(config, files, options)?),
        Architecture::Qwen3 | Architecture::Qwen2 | Architecture::Mistral => {
            Box::new(DecoderBackend::load(config, files, options)?)
        }
        Architecture::Bert | Architecture::XlmRoberta | Architecture::MPNet => {
            Box::new(CpuBackend::load(config, files, options)?)
        }
    };
    load::release_freed_memory();
    Ok(backend)
}

/// What every CPU backend runs with: its worker pool, instruction set, int8 kernel and panel limit.
pub(crate) struct Runtime {
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
    simd: SimdLevel,
    compute: Compute,
    vnni: bool,
    panel_max_rows: usize,
}

impl Runtime {
    /// The pool `options` give (or a new one of `threads`, else every core), the SIMD level and kernels.
    pub(crate) fn new(options: &CpuOptions) -> Result<Self, CpuError> {
        let (pool, threads) = match &options.thread_pool {
            Some(pool) => (pool.clone(), pool.current_num_threads()),
            None => {
                let threads = options
                    .threads
                    .filter(|&t| t > 0)
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                (Arc::new(new_thread_pool(threads)?), threads)
            }
        };
        let simd = options
            .simd
            .map_or_else(SimdLevel::detect, SimdLevel::capped);
        if options.compute == Compute::Bf16 && !(bf16::supported() && simd == SimdLevel::Avx512) {
            return Err(CpuError::Unsupported {
                compute: "bf16",
                needs: "AVX512_BF16",
            });
        }
        Ok(Self {
            pool,
            threads,
            simd,
            compute: options.compute,
            // VNNI is an AVX-512 extension: a level capped below AVX-512 must not use it either.
            vnni: int8::vnni_supported() && simd == SimdLevel::Avx512,
            panel_max_rows: options.panel_max_rows.unwrap_or_else(|| {
                std::env::var("EMBEDKIT_PANEL_MAX_ROWS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| {
                        if simd::panels_at_every_batch() {
                            // Zen 4: panels beat gemm at every size (`panel_vs_gemm_timing`, one thread, idle:
                            // 140 vs 160 ms per MiniLM layer at 4,096 rows; with tiled attention, 256-token texts
                            // +23 % MiniLM, +14 % MPNet). Zen 5: +21 % / +12 % on 256-token texts.
                            usize::MAX
                        } else {
                            // Panels match or beat gemm up to here on one thread (`panel_vs_gemm_timing`: 0.91
                            // vs 2.31 ms per MiniLM layer at 26 rows, 28.0 vs 28.8 ms at 832), with no
                            // repacking; above it, on the Intel Xeon measured, gemm's L1 blocking pays.
                            1024
                        }
                    })
            }),
        })
    }

    /// Fresh per-call state of a forward pass.
    fn context(&self) -> ForwardContext {
        ForwardContext {
            parallelism: if self.threads > 1 {
                Parallelism::Rayon(self.threads)
            } else {
                Parallelism::None
            },
            simd: self.simd,
            panel_max_rows: self.panel_max_rows,
            scratch: int8::QuantScratch::default(),
            vnni: self.vnni,
        }
    }

    /// [`Backend::name`].
    fn name(&self) -> &'static str {
        backend_name(self.compute, self.vnni)
    }

    /// [`Backend::fingerprint`].
    fn fingerprint(&self) -> String {
        backend_fingerprint(self.compute)
    }
}

/// A backend's name: the arithmetic, and whether int8 runs on VNNI and int8/bf16 on AMX tiles.
fn backend_name(compute: Compute, vnni: bool) -> &'static str {
    match compute {
        Compute::F32 => "cpu-f32",
        Compute::Int8 if vnni && amx::available() => "cpu-int8-amx",
        Compute::Int8 if vnni => "cpu-int8-vnni",
        Compute::Int8 => "cpu-int8",
        Compute::Bf16 if amx::available() => "cpu-bf16-amx",
        Compute::Bf16 => "cpu-bf16",
    }
}

/// A backend's fingerprint: the VNNI and portable int8 paths compute identical integers, so they share one.
fn backend_fingerprint(compute: Compute) -> String {
    match compute {
        Compute::F32 => "cpu-f32".into(),
        Compute::Int8 => "cpu-int8".into(),
        Compute::Bf16 => "cpu-bf16".into(),
    }
}

/// Checks that the batch's arrays agree; returns its token count.
pub(crate) fn check_batch(batch: &TokenBatch<'_>) -> Result<usize, CpuError> {
    let total: usize = batch.seq_lens.iter().sum();
    if total != batch.input_ids.len() || batch.type_ids.len() != batch.input_ids.len() {
        return Err(CpuError::MalformedBatch(format!(
            "{} ids, {} type ids, sequence lengths summing to {total}",
            batch.input_ids.len(),
            batch.type_ids.len()
        )));
    }
    if let Some(k) = batch.key_lens
        && (k.len() != batch.seq_lens.len() || k.iter().zip(batch.seq_lens).any(|(&k, &l)| k > l))
    {
        return Err(CpuError::MalformedBatch(format!(
            "{} key lengths for {} sequences, or one longer than its sequence",
            k.len(),
            batch.seq_lens.len()
        )));
    }
    Ok(total)
}

impl CpuBackend {
    /// The instruction set the element-wise kernels run with.
    pub fn simd_level(&self) -> SimdLevel {
        self.simd
    }

    /// Worker threads in use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn parallelism(&self) -> Parallelism {
        if self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, CpuError> {
        let h = self.config.hidden_size;
        let total = batch.input_ids.len();
        let mut x = vec![0.0f32; total * h];
        let mut t = 0;
        for &len in batch.seq_lens {
            if len + self.config.position_offset > self.config.max_position_embeddings {
                return Err(CpuError::SequenceTooLong {
                    len,
                    max: self.config.max_tokens(),
                });
            }
            for pos in 0..len {
                let id = batch.input_ids[t] as usize;
                if id >= self.config.vocab_size {
                    return Err(CpuError::TokenOutOfVocab {
                        id: batch.input_ids[t],
                        vocab: self.config.vocab_size,
                    });
                }
                let row = &mut x[t * h..(t + 1) * h];
                row.copy_from_slice(&self.word_embeddings[id * h..(id + 1) * h]);
                let p = pos + self.config.position_offset;
                for (v, e) in row
                    .iter_mut()
                    .zip(&self.position_embeddings[p * h..(p + 1) * h])
                {
                    *v += e;
                }
                if let Some(types) = &self.token_type_embeddings {
                    // Out-of-range type ids fall back to type 0, which every single-sequence input uses anyway.
                    let ty = (batch.type_ids.get(t).copied().unwrap_or(0) as usize)
                        .min(self.config.type_vocab_size - 1);
                    for (v, e) in row.iter_mut().zip(&types[ty * h..(ty + 1) * h]) {
                        *v += e;
                    }
                }
                t += 1;
            }
        }
        kernels::add_layer_norm(
            &mut x,
            &[],
            &self.embedding_norm.weight.data,
            &self.embedding_norm.bias.data,
            self.config.layer_norm_eps,
        );
        Ok(x)
    }

    fn run(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, CpuError> {
        let total = check_batch(batch)?;
        let cfg = &self.config;
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let mut x = self.embed_tokens(batch)?;
        let mut buffers = self.buffers.take();
        buffers.prepare(total, h, inter);
        let mut fctx = ForwardContext {
            parallelism: self.parallelism(),
            simd: self.simd,
            panel_max_rows: self.panel_max_rows,
            scratch: std::mem::take(&mut buffers.scratch),
            vnni: self.vnni,
        };
        let rel_bias = match (
            &self.relative_attention_bias,
            cfg.relative_attention_num_buckets,
        ) {
            (Some(table), Some(buckets)) => {
                let max_len = batch.seq_lens.iter().copied().max().unwrap_or(0);
                Some(attention::RelativeBias::new(
                    table,
                    buckets,
                    cfg.num_heads,
                    max_len,
                ))
            }
            _ => None,
        };
        let buffers::ForwardBuffers {
            qkv,
            context: ctx,
            projected: attn_out,
            intermediate: ff,
            ..
        } = &mut buffers;
        for layer in &self.layers {
            layer.qkv.forward(&x, total, qkv, &mut fctx);
            attention::attend(
                qkv,
                batch.seq_lens,
                batch.key_lens,
                cfg,
                rel_bias.as_ref(),
                ctx,
                self.simd,
            );
            layer
                .attention_output
                .forward(ctx, total, attn_out, &mut fctx);
            kernels::add_layer_norm_parallel(
                self.simd,
                attn_out,
                &x,
                &layer.attention_norm.weight.data,
                &layer.attention_norm.bias.data,
                cfg.layer_norm_eps,
            );
            std::mem::swap(&mut x, attn_out);
            layer.intermediate.forward(&x, total, ff, &mut fctx);
            layer
                .output
                .forward_activated(ff, total, attn_out, &mut fctx, cfg.activation);
            kernels::add_layer_norm_parallel(
                self.simd,
                attn_out,
                &x,
                &layer.output_norm.weight.data,
                &layer.output_norm.bias.data,
                cfg.layer_norm_eps,
            );
            std::mem::swap(&mut x, attn_out);
        }
        buffers.scratch = fctx.scratch;
        // Two swaps per layer leave the embeddings' vector in `x` (returned) and the pool's in `projected`.
        self.buffers.give_back(buffers);
        Ok(x)
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        backend_name(self.compute, self.vnni)
    }

    fn fingerprint(&self) -> String {
        backend_fingerprint(self.compute)
    }

    fn forward(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, BackendError> {
        self.pool
            .install(|| self.run(batch))
            .map_err(|e| Box::new(e) as BackendError)
    }
}
