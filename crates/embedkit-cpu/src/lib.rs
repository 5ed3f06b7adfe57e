//! embedkit's native CPU backend: BERT, XLM-RoBERTa and MPNet encoders run directly on safetensors weights.
//!
//! A batch is the concatenation of its sequences without padding: the linear layers see one `tokens × hidden`
//! matrix for the whole batch (no work on pad tokens), and attention runs per sequence and head, in parallel.
//! Matrix products use the `gemm` crate, which picks AVX-512, AVX2, NEON or scalar kernels at run time.

mod attention;
mod kernels;

use embedkit_model::{
    Architecture, Backend, BackendError, EncoderConfig, EncoderWeights, LayerNorm, Linear,
    TokenBatch,
};
use gemm::Parallelism;

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
}

/// How the CPU backend runs.
#[derive(Debug, Clone, Default)]
pub struct CpuOptions {
    /// Worker threads; `None` uses every core.
    pub threads: Option<usize>,
}

struct Layer {
    /// Q, K and V stacked into one `[3·hidden × hidden]` projection, so one GEMM computes all three.
    qkv_weight: Vec<f32>,
    qkv_bias: Vec<f32>,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
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
    pool: rayon::ThreadPool,
    threads: usize,
}

impl CpuBackend {
    /// Builds the backend, taking ownership of the weights.
    pub fn new(
        config: &EncoderConfig,
        weights: EncoderWeights,
        options: &CpuOptions,
    ) -> Result<Self, CpuError> {
        let threads = options
            .threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("embedkit-cpu-{i}"))
            .build()
            .map_err(|e| CpuError::ThreadPool {
                threads,
                message: e.to_string(),
            })?;
        let h = config.hidden_size;
        let layers = weights
            .layers
            .into_iter()
            .map(|l| {
                let mut qkv_weight = Vec::with_capacity(3 * h * h);
                let mut qkv_bias = Vec::with_capacity(3 * h);
                for lin in [&l.query, &l.key, &l.value] {
                    qkv_weight.extend_from_slice(&lin.weight.data);
                    match &lin.bias {
                        Some(b) => qkv_bias.extend_from_slice(&b.data),
                        None => qkv_bias.extend(std::iter::repeat_n(0.0, h)),
                    }
                }
                Layer {
                    qkv_weight,
                    qkv_bias,
                    attention_output: l.attention_output,
                    attention_norm: l.attention_norm,
                    intermediate: l.intermediate,
                    output: l.output,
                    output_norm: l.output_norm,
                }
            })
            .collect();
        Ok(Self {
            config: config.clone(),
            word_embeddings: weights.word_embeddings.data,
            position_embeddings: weights.position_embeddings.data,
            token_type_embeddings: weights.token_type_embeddings.map(|t| t.data),
            embedding_norm: weights.embedding_norm,
            layers,
            relative_attention_bias: weights.relative_attention_bias.map(|t| t.data),
            pool,
            threads,
        })
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
        let total: usize = batch.seq_lens.iter().sum();
        if total != batch.input_ids.len() || batch.type_ids.len() != batch.input_ids.len() {
            return Err(CpuError::MalformedBatch(format!(
                "{} ids, {} type ids, sequence lengths summing to {total}",
                batch.input_ids.len(),
                batch.type_ids.len()
            )));
        }
        let cfg = &self.config;
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let par = self.parallelism();
        let mut x = self.embed_tokens(batch)?;
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
        let mut qkv = vec![0.0f32; total * 3 * h];
        let mut ctx = vec![0.0f32; total * h];
        let mut attn_out = vec![0.0f32; total * h];
        let mut ff = vec![0.0f32; total * inter];
        for layer in &self.layers {
            kernels::linear(
                &x,
                total,
                h,
                &layer.qkv_weight,
                Some(&layer.qkv_bias),
                3 * h,
                &mut qkv,
                par,
            );
            attention::attend(&qkv, batch.seq_lens, cfg, rel_bias.as_ref(), &mut ctx);
            linear_layer(&ctx, total, &layer.attention_output, &mut attn_out, par);
            kernels::add_layer_norm_parallel(
                &mut attn_out,
                &x,
                &layer.attention_norm.weight.data,
                &layer.attention_norm.bias.data,
                cfg.layer_norm_eps,
            );
            std::mem::swap(&mut x, &mut attn_out);
            linear_layer(&x, total, &layer.intermediate, &mut ff, par);
            kernels::activate(&mut ff, cfg.activation);
            linear_layer(&ff, total, &layer.output, &mut attn_out, par);
            kernels::add_layer_norm_parallel(
                &mut attn_out,
                &x,
                &layer.output_norm.weight.data,
                &layer.output_norm.bias.data,
                cfg.layer_norm_eps,
            );
            std::mem::swap(&mut x, &mut attn_out);
        }
        Ok(x)
    }
}

fn linear_layer(x: &[f32], t: usize, lin: &Linear, y: &mut [f32], par: Parallelism) {
    let (n, k) = (lin.weight.shape[0], lin.weight.shape[1]);
    kernels::linear(
        x,
        t,
        k,
        &lin.weight.data,
        lin.bias.as_ref().map(|b| &b.data[..]),
        n,
        y,
        par,
    );
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        match self.config.architecture {
            Architecture::Bert | Architecture::XlmRoberta | Architecture::MPNet => "cpu-f32",
        }
    }

    fn forward(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, BackendError> {
        self.pool
            .install(|| self.run(batch))
            .map_err(|e| Box::new(e) as BackendError)
    }
}
