//! ModernBERT (answerdotai/ModernBERT and the embedders built on it: gte-modernbert, modernbert-embed) on
//! unpadded batches.
//!
//! Per layer, as transformers' `ModernBertEncoderLayer`: `x += Wo(attention(rope(Wqkv(attn_norm(x)))))`, then
//! `x += Wo(gelu(a) · g)` with `(a, g) = Wi(mlp_norm(x))` split in halves; layer 0 has no `attn_norm`. The
//! embeddings are the token table through a LayerNorm (no positions: they enter as rotations of Q and K), and
//! a final LayerNorm ends the stack. Layers whose index is not a multiple of `global_attn_every_n_layers`
//! attend only to keys within `local_attention / 2` positions, each with its own RoPE base. Those layers run
//! in blocks of query rows against the keys their window reaches, so long inputs cost linear work there.

use crate::rotary::{RopeTable, apply_rope, geglu};
use crate::{
    Compute, CpuError, CpuOptions, ForwardContext, Projection, Runtime, attention, kernels,
};
use embedkit_model::{
    Backend, BackendError, EncoderConfig, ModelError, ModernBertConfig, SafetensorsFiles, Tensor,
    TokenBatch,
};
use rayon::prelude::*;

/// A LayerNorm's γ and β (zeros when the model's norms have no bias).
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// `None` for layer 0, whose attention reads the embeddings directly.
    attn_norm: Option<Norm>,
    /// Q, K and V in one `[3·hidden × hidden]` projection, as the checkpoint stores them.
    wqkv: Projection,
    wo: Projection,
    mlp_norm: Norm,
    /// `[2·intermediate × hidden]`: the GELU input's rows, then the gate's.
    wi: Projection,
    mlp_wo: Projection,
    /// Attends only within the window.
    sliding: bool,
}

/// A ModernBERT encoder on the CPU, f32 or int8 linear layers.
pub struct ModernBertBackend {
    config: EncoderConfig,
    mb: ModernBertConfig,
    tok_embeddings: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    rt: Runtime,
}

/// The name prefix the checkpoint puts before `embeddings.tok_embeddings.weight`: empty for a saved
/// `ModernBertModel`, `model.` for the task heads (`ModernBertForSequenceClassification`, …). With none found,
/// the empty prefix, whose lookup then names the missing tensor.
fn find_prefix(files: &SafetensorsFiles) -> String {
    const KEY: &str = "embeddings.tok_embeddings.weight";
    files
        .names()
        .filter_map(|n| n.strip_suffix(KEY))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .min_by_key(|p| p.len())
        .unwrap_or_default()
        .to_string()
}

impl ModernBertBackend {
    /// Reads the encoder's weights from `files` (shape-checked against `config`) and builds the backend.
    pub fn load(
        config: &EncoderConfig,
        files: &SafetensorsFiles,
        options: &CpuOptions,
    ) -> Result<Self, ModelError> {
        let mb = config
            .modernbert
            .clone()
            .ok_or_else(|| ModelError::Config {
                path: "config.json".into(),
                field: "model_type".into(),
                message: format!("is '{}', not modernbert", config.model_type),
            })?;
        let prefix = find_prefix(files);
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let get = |name: &str, shape: &[usize]| -> Result<Tensor, ModelError> {
            files.get_shaped(&format!("{prefix}{name}"), shape)
        };
        let norm = |base: &str| -> Result<Norm, ModelError> {
            Ok(Norm {
                weight: get(&format!("{base}.weight"), &[h])?.data,
                bias: if mb.norm_bias {
                    get(&format!("{base}.bias"), &[h])?.data
                } else {
                    vec![0.0; h]
                },
            })
        };
        let compute = options.compute;
        let linear =
            |base: &str, out: usize, inp: usize, bias: bool| -> Result<Projection, ModelError> {
                let w = get(&format!("{base}.weight"), &[out, inp])?;
                let b = if bias {
                    Some(get(&format!("{base}.bias"), &[out])?.data)
                } else {
                    None
                };
                Ok(Projection::new(w.data, b, out, inp, compute))
            };
        let layers = (0..config.num_layers)
            .map(|l| {
                let p = format!("layers.{l}");
                Ok(Layer {
                    attn_norm: if l == 0 {
                        None
                    } else {
                        Some(norm(&format!("{p}.attn_norm"))?)
                    },
                    wqkv: linear(&format!("{p}.attn.Wqkv"), 3 * h, h, mb.attention_bias)?,
                    wo: linear(&format!("{p}.attn.Wo"), h, h, mb.attention_bias)?,
                    mlp_norm: norm(&format!("{p}.mlp_norm"))?,
                    wi: linear(&format!("{p}.mlp.Wi"), 2 * inter, h, mb.mlp_bias)?,
                    mlp_wo: linear(&format!("{p}.mlp.Wo"), h, inter, mb.mlp_bias)?,
                    sliding: mb.sliding_layers[l],
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let rt = Runtime::new(options).map_err(|e| ModelError::Backend(Box::new(e)))?;
        Ok(Self {
            tok_embeddings: get("embeddings.tok_embeddings.weight", &[config.vocab_size, h])?.data,
            embedding_norm: norm("embeddings.norm")?,
            final_norm: norm("final_norm")?,
            layers,
            config: config.clone(),
            mb,
            rt,
        })
    }

    /// Token embeddings through the embedding LayerNorm; checks ids and lengths.
    fn embed_tokens(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, CpuError> {
        let h = self.config.hidden_size;
        let max = self.config.max_position_embeddings;
        if let Some(&len) = batch.seq_lens.iter().find(|&&l| l > max) {
            return Err(CpuError::SequenceTooLong { len, max });
        }
        let mut x = vec![0.0f32; batch.input_ids.len() * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(batch.input_ids) {
            let i = id as usize;
            if i >= self.config.vocab_size {
                return Err(CpuError::TokenOutOfVocab {
                    id,
                    vocab: self.config.vocab_size,
                });
            }
            row.copy_from_slice(&self.tok_embeddings[i * h..(i + 1) * h]);
        }
        let n = &self.embedding_norm;
        let eps = self.config.layer_norm_eps;
        kernels::add_layer_norm_parallel(self.rt.simd, &mut x, &[], &n.weight, &n.bias, eps);
        Ok(x)
    }

    fn run(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, CpuError> {
        let total = crate::check_batch(batch)?;
        let cfg = &self.config;
        let (h, inter, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let eps = cfg.layer_norm_eps;
        let simd = self.rt.simd;
        let mut fctx: ForwardContext = self.rt.context();
        let mut x = self.embed_tokens(batch)?;
        let max_len = batch.seq_lens.iter().copied().max().unwrap_or(0);
        let positions: Vec<usize> = batch.seq_lens.iter().flat_map(|&l| 0..l).collect();
        let global_rope = RopeTable::new(self.mb.global_rope_theta, d, max_len);
        let local_rope = RopeTable::new(self.mb.local_rope_theta, d, max_len);
        // A window that covers every sequence whole is global attention.
        let window_matters = max_len > self.mb.window + 1;
        let mut normed = vec![0.0f32; total * h];
        let mut qkv = vec![0.0f32; total * 3 * h];
        let mut ctx = vec![0.0f32; total * h];
        let mut out = vec![0.0f32; total * h];
        let mut up = vec![0.0f32; total * 2 * inter];
        let mut gated = vec![0.0f32; total * inter];
        for layer in &self.layers {
            let attn_in = match &layer.attn_norm {
                Some(n) => {
                    normed.copy_from_slice(&x);
                    kernels::add_layer_norm_parallel(
                        simd,
                        &mut normed,
                        &[],
                        &n.weight,
                        &n.bias,
                        eps,
                    );
                    &normed
                }
                None => &x,
            };
            layer.wqkv.forward(attn_in, total, &mut qkv, &mut fctx);
            let rope = if layer.sliding {
                &local_rope
            } else {
                &global_rope
            };
            apply_rope(simd, &mut qkv, &positions, h, rope);
            if layer.sliding && window_matters {
                attend_window(
                    &qkv,
                    batch.seq_lens,
                    batch.key_lens,
                    cfg,
                    self.mb.window,
                    &mut ctx,
                );
            } else if max_len > GLOBAL_BLOCKED_LEN {
                // Whole-sequence scores of a long input would take len² floats per head (256 MiB at 8,192
                // tokens); blocks of query rows against every key need 64 · len.
                attend_window(
                    &qkv,
                    batch.seq_lens,
                    batch.key_lens,
                    cfg,
                    usize::MAX,
                    &mut ctx,
                );
            } else {
                attention::attend(
                    &qkv,
                    batch.seq_lens,
                    batch.key_lens,
                    cfg,
                    None,
                    &mut ctx,
                    simd,
                );
            }
            layer.wo.forward(&ctx, total, &mut out, &mut fctx);
            add_into(&mut x, &out);
            normed.copy_from_slice(&x);
            let n = &layer.mlp_norm;
            kernels::add_layer_norm_parallel(simd, &mut normed, &[], &n.weight, &n.bias, eps);
            layer.wi.forward(&normed, total, &mut up, &mut fctx);
            geglu(simd, &up, inter, &mut gated);
            layer.mlp_wo.forward(&gated, total, &mut out, &mut fctx);
            add_into(&mut x, &out);
        }
        let n = &self.final_norm;
        kernels::add_layer_norm_parallel(simd, &mut x, &[], &n.weight, &n.bias, eps);
        Ok(x)
    }
}

/// `x += y`, in parallel chunks.
fn add_into(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(16 * 1024)
        .zip(y.par_chunks(16 * 1024))
        .for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(a, b)| *a += b));
}

/// Global layers of batches with a longer text run in query blocks too (see [`attend_window`]).
const GLOBAL_BLOCKED_LEN: usize = 1024;

/// Query rows per task of the sliding-window attention.
const WINDOW_BLOCK: usize = 64;

/// Attention in which token i of a sequence sees only keys j with |i − j| ≤ `window` (and j below the
/// sequence's key length): per block of [`WINDOW_BLOCK`] query rows, all heads, against the keys the block's
/// windows reach (at most `WINDOW_BLOCK + 2·window`), each row's softmax over its own window. Work grows
/// linearly with the sequence. `window = usize::MAX` is global attention with scores one block at a time.
fn attend_window(
    qkv: &[f32],
    seq_lens: &[usize],
    key_lens: Option<&[usize]>,
    cfg: &EncoderConfig,
    window: usize,
    ctx: &mut [f32],
) {
    let h = cfg.hidden_size;
    let d = cfg.head_dim();
    let scale = 1.0 / (d as f32).sqrt();
    // Hand each task its own rows of ctx: (sequence start, first row, key limit, rows of ctx).
    let mut tasks = Vec::new();
    let mut rest = ctx;
    let mut start = 0;
    for (s, &len) in seq_lens.iter().enumerate() {
        let keys = key_lens
            .and_then(|k| k.get(s).copied())
            .unwrap_or(len)
            .min(len);
        let mut i0 = 0;
        while i0 < len {
            let rows = WINDOW_BLOCK.min(len - i0);
            let (mine, tail) = rest.split_at_mut(rows * h);
            tasks.push((start, i0, keys, mine));
            rest = tail;
            i0 += rows;
        }
        start += len;
    }
    tasks.into_par_iter().for_each(|(start, i0, keys, out)| {
        let rows = out.len() / h;
        let k0 = i0.saturating_sub(window).min(keys);
        let k1 = (i0 + rows).saturating_add(window).min(keys);
        let nk = k1 - k0;
        if nk == 0 {
            out.fill(0.0);
            return;
        }
        let q_rows = &qkv[(start + i0) * 3 * h..];
        let k_rows = &qkv[(start + k0) * 3 * h..];
        let mut scores = vec![0.0f32; rows * nk];
        for head in 0..cfg.num_heads {
            kernels::matmul_abt(
                rows,
                nk,
                d,
                &q_rows[head * d..],
                3 * h,
                &k_rows[h + head * d..],
                3 * h,
                &mut scores,
                scale,
            );
            for (r, row) in scores.chunks_exact_mut(nk).enumerate() {
                let i = i0 + r;
                let lo = i.saturating_sub(window).max(k0).min(k1) - k0;
                let hi = i.saturating_add(window).saturating_add(1).min(k1) - k0;
                if lo >= hi {
                    row.fill(0.0);
                    continue;
                }
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                kernels::softmax(&mut row[lo..hi]);
            }
            kernels::matmul_ab(
                rows,
                d,
                nk,
                &scores,
                &k_rows[2 * h + head * d..],
                3 * h,
                &mut out[head * d..],
                h,
            );
        }
    });
}

impl Backend for ModernBertBackend {
    fn name(&self) -> &str {
        self.rt.name()
    }

    fn fingerprint(&self) -> String {
        self.rt.fingerprint()
    }

    fn forward(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, BackendError> {
        self.rt
            .pool
            .install(|| self.run(batch))
            .map_err(|e| Box::new(e) as BackendError)
    }
}

impl ModernBertBackend {
    /// The linear layers' arithmetic.
    pub fn compute(&self) -> Compute {
        self.rt.compute
    }
}
