//! Decoder embedders (Qwen3-Embedding, gte-Qwen2, e5-mistral) on the CPU: pre-norm layers with RMSNorm,
//! causal grouped-query attention with rotary positions, and a SwiGLU feed-forward.
//!
//! As the encoders, a batch is its sequences concatenated without padding; the linear layers see one
//! `tokens × hidden` matrix (q/k/v fused into one product, gate and up into another) and attention runs per
//! sequence and head. Positions restart at 0 in every sequence, which equals sentence-transformers' left-padded
//! batches: RoPE scores depend only on the distance between two tokens.
//!
//! Weights are read one tensor at a time from the (memory-mapped) safetensors and packed at once into the
//! compute layout, so the load never holds an f32 copy of the whole model next to the packed one. The token
//! embedding table stays in bf16 when its values are bf16 (as Qwen3-Embedding ships them): half the memory, no
//! rounding.

use crate::kernels::{OutPtr, fast_exp, matmul_ab, matmul_abt, softmax};
use crate::rotary::RopeTable;
use crate::simd::{MulAdd, SimdLevel};
use crate::{Compute, CpuError, CpuOptions, Projection, Runtime, check_batch};
use embedkit_model::{
    Backend, BackendError, DecoderConfig, EncoderConfig, ModelError, SafetensorsFiles, TokenBatch,
};
use rayon::prelude::*;

/// Rows per parallel task of the element-wise kernels.
const ROWS_PER_TASK: usize = 16;

/// The token embedding table, in the narrowest type that holds its values exactly.
enum EmbeddingTable {
    F32(Vec<f32>),
    /// bf16 bit patterns (the high half of an f32).
    Bf16(Vec<u16>),
}

impl EmbeddingTable {
    fn new(values: Vec<f32>) -> Self {
        // Values that came from bf16 have zero low mantissa bits: storing them as bf16 loses nothing.
        if values.iter().all(|v| v.to_bits() & 0xffff == 0) {
            EmbeddingTable::Bf16(values.iter().map(|v| (v.to_bits() >> 16) as u16).collect())
        } else {
            EmbeddingTable::F32(values)
        }
    }

    fn row_into(&self, id: usize, out: &mut [f32]) {
        let h = out.len();
        match self {
            EmbeddingTable::F32(t) => out.copy_from_slice(&t[id * h..(id + 1) * h]),
            EmbeddingTable::Bf16(t) => {
                for (o, &b) in out.iter_mut().zip(&t[id * h..(id + 1) * h]) {
                    *o = f32::from_bits((b as u32) << 16);
                }
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            EmbeddingTable::F32(t) => t.len() * 4,
            EmbeddingTable::Bf16(t) => t.len() * 2,
        }
    }
}

struct DecoderLayer {
    input_norm: Vec<f32>,
    /// q, k and v stacked: `[(heads + 2·kv_heads)·head_dim × hidden]`.
    qkv: Projection,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o_proj: Projection,
    post_norm: Vec<f32>,
    /// gate and up stacked: `[2·intermediate × hidden]`.
    gate_up: Projection,
    down: Projection,
    sliding_window: Option<usize>,
}

/// A decoder embedder on the CPU: token ids in, the final norm's hidden states out.
pub struct DecoderBackend {
    config: EncoderConfig,
    dec: DecoderConfig,
    embeddings: EmbeddingTable,
    layers: Vec<DecoderLayer>,
    final_norm: Vec<f32>,
    runtime: Runtime,
}

impl DecoderBackend {
    /// Reads the decoder's weights from `files`, packing each tensor as it is read.
    pub fn load(
        config: &EncoderConfig,
        files: &SafetensorsFiles,
        options: &CpuOptions,
    ) -> Result<Self, ModelError> {
        let dec = config.decoder.clone().ok_or_else(|| ModelError::Config {
            path: "config.json".into(),
            field: "model_type".into(),
            message: format!("'{}' is not a decoder", config.model_type),
        })?;
        let runtime = Runtime::new(options).map_err(|e| ModelError::Backend(Box::new(e)))?;
        // AutoModel saves `embed_tokens.weight`, the causal-LM class `model.embed_tokens.weight`.
        let prefix = files.prefix_of("embed_tokens.weight")?;
        let (h, d, inter) = (config.hidden_size, dec.head_dim, config.intermediate_size);
        let (nq, nkv) = (config.num_heads, dec.num_kv_heads);
        let get = |name: &str, shape: &[usize]| {
            files
                .get_shaped(&format!("{prefix}{name}"), shape)
                .map(|t| t.data)
        };
        let bias = |name: &str, n: usize| -> Result<Option<Vec<f32>>, ModelError> {
            if files.contains(&format!("{prefix}{name}")) {
                get(name, &[n]).map(Some)
            } else {
                Ok(None)
            }
        };
        let compute = options.compute;
        let project = |weight: Vec<f32>, bias: Option<Vec<f32>>, n: usize, k: usize| match compute {
            // Only gemm's layout: the panel copy the encoders add for small batches would double the memory
            // of a model this size.
            Compute::F32 => Projection::F32 { weight, bias, n, k },
            other => Projection::new(weight, bias, n, k, other),
        };
        // The table first: its f32 transient (620 MB for 0.6B) then meets no packed layers yet.
        let embeddings = EmbeddingTable::new(get("embed_tokens.weight", &[config.vocab_size, h])?);
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("layers.{l}");
            let qkv_rows = (nq + 2 * nkv) * d;
            let mut qkv = get(&format!("{p}.self_attn.q_proj.weight"), &[nq * d, h])?;
            qkv.reserve_exact(2 * nkv * d * h);
            qkv.extend(get(&format!("{p}.self_attn.k_proj.weight"), &[nkv * d, h])?);
            qkv.extend(get(&format!("{p}.self_attn.v_proj.weight"), &[nkv * d, h])?);
            let biases = [
                bias(&format!("{p}.self_attn.q_proj.bias"), nq * d)?,
                bias(&format!("{p}.self_attn.k_proj.bias"), nkv * d)?,
                bias(&format!("{p}.self_attn.v_proj.bias"), nkv * d)?,
            ];
            let qkv_bias = biases.iter().any(Option::is_some).then(|| {
                biases
                    .iter()
                    .zip([nq * d, nkv * d, nkv * d])
                    .flat_map(|(b, n)| b.clone().unwrap_or_else(|| vec![0.0; n]))
                    .collect()
            });
            let mut gate_up = get(&format!("{p}.mlp.gate_proj.weight"), &[inter, h])?;
            gate_up.reserve_exact(inter * h);
            gate_up.extend(get(&format!("{p}.mlp.up_proj.weight"), &[inter, h])?);
            let (q_norm, k_norm) = if dec.qk_norm {
                (
                    Some(get(&format!("{p}.self_attn.q_norm.weight"), &[d])?),
                    Some(get(&format!("{p}.self_attn.k_norm.weight"), &[d])?),
                )
            } else {
                (None, None)
            };
            layers.push(DecoderLayer {
                input_norm: get(&format!("{p}.input_layernorm.weight"), &[h])?,
                qkv: project(qkv, qkv_bias, qkv_rows, h),
                q_norm,
                k_norm,
                o_proj: project(
                    get(&format!("{p}.self_attn.o_proj.weight"), &[h, nq * d])?,
                    bias(&format!("{p}.self_attn.o_proj.bias"), h)?,
                    h,
                    nq * d,
                ),
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate_up: project(gate_up, None, 2 * inter, h),
                down: project(
                    get(&format!("{p}.mlp.down_proj.weight"), &[h, inter])?,
                    None,
                    h,
                    inter,
                ),
                sliding_window: dec.sliding_window.get(l).copied().flatten(),
            });
        }
        Ok(Self {
            embeddings,
            final_norm: get("norm.weight", &[h])?,
            config: config.clone(),
            dec,
            layers,
            runtime,
        })
    }

    /// Bytes the token embedding table takes (bf16 when the checkpoint's values are bf16).
    pub fn embedding_bytes(&self) -> usize {
        self.embeddings.bytes()
    }

    fn check(&self, batch: &TokenBatch<'_>) -> Result<(), CpuError> {
        check_batch(batch)?;
        if batch.key_lens.is_some() {
            return Err(CpuError::MalformedBatch(
                "key lengths (ColBERT query expansion) do not apply to a decoder".into(),
            ));
        }
        if let Some(&len) = batch
            .seq_lens
            .iter()
            .find(|&&l| l > self.config.max_position_embeddings)
        {
            return Err(CpuError::SequenceTooLong {
                len,
                max: self.config.max_position_embeddings,
            });
        }
        if let Some(&id) = batch
            .input_ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(CpuError::TokenOutOfVocab {
                id,
                vocab: self.config.vocab_size,
            });
        }
        Ok(())
    }

    fn run(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, CpuError> {
        self.check(batch)?;
        let cfg = &self.config;
        let (h, d, inter) = (cfg.hidden_size, self.dec.head_dim, cfg.intermediate_size);
        let (nq, nkv) = (cfg.num_heads, self.dec.num_kv_heads);
        let width = (nq + 2 * nkv) * d;
        let total = batch.input_ids.len();
        let eps = self.dec.rms_norm_eps;
        let simd = self.runtime.simd;
        let mut fctx = self.runtime.context();
        let max_len = batch.seq_lens.iter().copied().max().unwrap_or(0);
        let rope = RopeTable::new(self.dec.rope_theta as f32, d, max_len);
        let positions: Vec<usize> = batch.seq_lens.iter().flat_map(|&len| 0..len).collect();
        let mut x = vec![0.0f32; total * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(batch.input_ids) {
            self.embeddings.row_into(id as usize, row);
        }
        let mut normed = vec![0.0f32; total * h];
        let mut qkv = vec![0.0f32; total * width];
        let mut ctx = vec![0.0f32; total * nq * d];
        let mut out = vec![0.0f32; total * h];
        let mut gate_up = vec![0.0f32; total * 2 * inter];
        let mut ff = vec![0.0f32; total * inter];
        for layer in &self.layers {
            rms_norm(simd, &x, &layer.input_norm, eps, &mut normed);
            layer.qkv.forward(&normed, total, &mut qkv, &mut fctx);
            qkv.par_chunks_mut(width)
                .zip(positions.par_iter())
                .for_each(|(row, &pos)| {
                    let (q, kv) = row.split_at_mut(nq * d);
                    for (heads, norm) in [
                        (q, layer.q_norm.as_deref()),
                        (&mut kv[..nkv * d], layer.k_norm.as_deref()),
                    ] {
                        for head in heads.chunks_exact_mut(d) {
                            if let Some(w) = norm {
                                rms_norm_row::<crate::simd::Unfused>(head, w, eps);
                            }
                            rope.rotate(head, pos);
                        }
                    }
                });
            causal_attention(
                &qkv,
                batch.seq_lens,
                AttentionShape { nq, nkv, d },
                layer.sliding_window,
                &mut ctx,
            );
            layer.o_proj.forward(&ctx, total, &mut out, &mut fctx);
            add_in_place(&mut x, &out);
            rms_norm(simd, &x, &layer.post_norm, eps, &mut normed);
            layer
                .gate_up
                .forward(&normed, total, &mut gate_up, &mut fctx);
            swiglu(simd, &gate_up, inter, &mut ff);
            layer.down.forward(&ff, total, &mut out, &mut fctx);
            add_in_place(&mut x, &out);
        }
        rms_norm(simd, &x, &self.final_norm, eps, &mut normed);
        Ok(normed)
    }
}

impl Backend for DecoderBackend {
    fn name(&self) -> &str {
        self.runtime.name()
    }

    fn fingerprint(&self) -> String {
        self.runtime.fingerprint()
    }

    fn forward(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, BackendError> {
        self.runtime
            .pool
            .install(|| self.run(batch))
            .map_err(|e| Box::new(e) as BackendError)
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(ROWS_PER_TASK * 1024)
        .zip(y.par_chunks(ROWS_PER_TASK * 1024))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}

/// One row's RMSNorm, in place, as transformers' `Qwen3RMSNorm` in f32: `w · (x · 1/√(mean(x²) + ε))`.
#[inline(always)]
fn rms_norm_row<M: MulAdd>(x: &mut [f32], w: &[f32], eps: f32) {
    let mut lanes = [0.0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            lanes[l] = M::mul_add(c[l], c[l], lanes[l]);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    let mean = (lanes.iter().sum::<f32>() + tail) / x.len() as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for (v, g) in x.iter_mut().zip(w) {
        *v = g * (*v * inv);
    }
}

#[inline(always)]
fn rms_norm_rows<M: MulAdd>(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    out.copy_from_slice(x);
    for row in out.chunks_exact_mut(w.len()) {
        rms_norm_row::<M>(row, w, eps);
    }
}

crate::simd::multiversion!(rms_norm_chunk(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) => fma rms_norm_rows);

/// `out = RMSNorm(x)` row by row, rows in parallel.
fn rms_norm(level: SimdLevel, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let step = ROWS_PER_TASK * w.len();
    out.par_chunks_mut(step)
        .zip(x.par_chunks(step))
        .for_each(|(o, x)| rms_norm_chunk(level, x, w, eps, o));
}

#[inline(always)]
fn swiglu_rows<M: MulAdd>(gate_up: &[f32], inter: usize, out: &mut [f32]) {
    for (o, gu) in out
        .chunks_exact_mut(inter)
        .zip(gate_up.chunks_exact(2 * inter))
    {
        let (gate, up) = gu.split_at(inter);
        for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
            // silu(g) = g / (1 + e^−g), as PyTorch's CPU kernel.
            *o = g / (1.0 + fast_exp::<M>(-g)) * u;
        }
    }
}

crate::simd::multiversion!(swiglu_chunk(gate_up: &[f32], inter: usize, out: &mut [f32]) => fma swiglu_rows);

/// `out[t × inter] = silu(gate) · up` from the fused `[t × (gate | up)]`.
fn swiglu(level: SimdLevel, gate_up: &[f32], inter: usize, out: &mut [f32]) {
    out.par_chunks_mut(ROWS_PER_TASK * inter)
        .zip(gate_up.par_chunks(ROWS_PER_TASK * 2 * inter))
        .for_each(|(o, gu)| swiglu_chunk(level, gu, inter, o));
}

/// Query heads, key/value heads and head width.
#[derive(Clone, Copy)]
struct AttentionShape {
    nq: usize,
    nkv: usize,
    d: usize,
}

/// `ctx[t × heads·d] = softmax(Q·Kᵀ/√d, causal)·V` per sequence and query head, query head `i` reading key/value
/// head `i / (heads / kv_heads)`; with a window `w`, token `i` sees keys `j` with `i − j < w`.
fn causal_attention(
    qkv: &[f32],
    seq_lens: &[usize],
    shape: AttentionShape,
    window: Option<usize>,
    ctx: &mut [f32],
) {
    let AttentionShape { nq, nkv, d } = shape;
    let width = (nq + 2 * nkv) * d;
    let group = nq / nkv;
    let scale = 1.0 / (d as f32).sqrt();
    let mut tasks = Vec::with_capacity(seq_lens.len() * nq);
    let mut start = 0;
    for &len in seq_lens {
        tasks.extend((0..nq).map(|head| (start, len, head)));
        start += len;
    }
    assert_eq!(
        ctx.len(),
        start * nq * d,
        "ctx holds heads·d values per token"
    );
    // Each (sequence, head) task writes a disjoint set of `ctx` elements: its rows × its head's columns.
    let out = OutPtr(ctx.as_mut_ptr());
    tasks.par_iter().for_each(|&(start, len, head)| {
        if len == 0 {
            return;
        }
        let kv = head / group;
        let rows = &qkv[start * width..(start + len) * width];
        let q = &rows[head * d..];
        let k = &rows[(nq + kv) * d..];
        let v = &rows[(nq + nkv + kv) * d..];
        let mut scores = vec![0.0f32; len * len];
        matmul_abt(len, len, d, q, width, k, width, &mut scores, scale);
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
            row[..lo].fill(0.0);
            softmax(&mut row[lo..=i]);
            row[i + 1..].fill(0.0);
        }
        let mut head_out = vec![0.0f32; len * d];
        matmul_ab(len, d, len, &scores, v, width, &mut head_out, d);
        for (i, r) in head_out.chunks_exact(d).enumerate() {
            let offset = (start + i) * nq * d + head * d;
            assert!(offset + d <= (start + len) * nq * d);
            // SAFETY: in bounds of ctx (asserted above: start + len ≤ total tokens); this task alone writes
            // columns head·d..(head+1)·d of its sequence's rows.
            unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), out.get().add(offset), d) };
        }
    });
}
