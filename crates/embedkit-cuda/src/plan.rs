//! Host-side planning of a forward pass, in plain Rust so that it is tested without a GPU: the batch's
//! layout (sequence boundaries, checks), buffer sizes, launch shapes, GEMM shapes, MPNet's relative bias.
//! The constants mirror those in kernels/*.cu.

use crate::CudaError;
use cudarc::driver::LaunchConfig;
use embedkit_model::{Architecture, EncoderConfig, TokenBatch};

/// Values a row kernel's thread holds in registers (`EK_MAX_PER_THREAD`).
pub const MAX_PER_THREAD: usize = 8;
/// Query rows per attention block (`EK_ATT_WARPS`, one warp each).
pub const ATTENTION_WARPS: u32 = 4;
/// Widest attention head the kernel holds (`EK_MAX_HEAD_DIM`).
pub const MAX_HEAD_DIM: usize = 128;
/// Threads of the element-wise and pooling kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Blocks of a grid-stride launch at most (enough to fill any current GPU several times over).
pub const MAX_GRID_STRIDE_BLOCKS: u64 = 65_535;

/// Checks that the kernels can run this encoder.
pub fn check_config(config: &EncoderConfig) -> Result<(), CudaError> {
    if !matches!(
        config.architecture,
        Architecture::Bert | Architecture::XlmRoberta | Architecture::MPNet
    ) {
        return Err(CudaError::Unsupported(format!(
            "{} encoders (BERT, XLM-RoBERTa and MPNet run on the GPU)",
            config.architecture
        )));
    }
    row_threads(config.hidden_size)?;
    if config.head_dim() > MAX_HEAD_DIM {
        return Err(CudaError::Unsupported(format!(
            "attention heads of {} dimensions (at most {MAX_HEAD_DIM})",
            config.head_dim()
        )));
    }
    Ok(())
}

/// Threads per block of the row kernels (embeddings and residual LayerNorm): a multiple of 32, at most 1024,
/// enough that each holds at most [`MAX_PER_THREAD`] values of a row.
pub fn row_threads(hidden: usize) -> Result<u32, CudaError> {
    let max = 1024 * MAX_PER_THREAD;
    if hidden == 0 || hidden > max {
        return Err(CudaError::Unsupported(format!(
            "hidden size {hidden} (LayerNorm kernels hold 1 to {max} values a row)"
        )));
    }
    // At least 128 threads (4 warps) so the block-wide sums use several warps; at most 256 unless needed.
    let needed = hidden.div_ceil(MAX_PER_THREAD).next_multiple_of(32);
    Ok(needed
        .clamp(128, 1024)
        .max(hidden.min(256).next_multiple_of(32)) as u32)
}

/// One block per token (embeddings + LayerNorm, residual + LayerNorm).
pub fn rows_launch(tokens: usize, hidden: usize) -> Result<LaunchConfig, CudaError> {
    Ok(LaunchConfig {
        grid_dim: (grid_u32(tokens, "tokens")?, 1, 1),
        block_dim: (row_threads(hidden)?, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Grid-stride launch over `n` elements.
pub fn elementwise_launch(n: usize) -> LaunchConfig {
    let blocks = (n as u64)
        .div_ceil(ELEMENTWISE_THREADS as u64)
        .clamp(1, MAX_GRID_STRIDE_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Attention: (query tiles of the longest sequence, heads, sequences), one warp per query row.
pub fn attention_launch(
    max_len: usize,
    heads: usize,
    seqs: usize,
) -> Result<LaunchConfig, CudaError> {
    let tiles = max_len.div_ceil(ATTENTION_WARPS as usize).max(1);
    // gridDim.y and .z are limited to 65,535 by the hardware.
    if heads > 65_535 || seqs > 65_535 {
        return Err(CudaError::Unsupported(format!(
            "{seqs} sequences × {heads} heads in one batch (at most 65,535 of each)"
        )));
    }
    Ok(LaunchConfig {
        grid_dim: (grid_u32(tiles, "query tiles")?, heads as u32, seqs as u32),
        block_dim: (ATTENTION_WARPS * 32, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Pooling: one block per sequence.
pub fn pool_launch(seqs: usize) -> Result<LaunchConfig, CudaError> {
    Ok(LaunchConfig {
        grid_dim: (grid_u32(seqs.max(1), "sequences")?, 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn grid_u32(n: usize, what: &str) -> Result<u32, CudaError> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n < i32::MAX as u32)
        .ok_or_else(|| CudaError::Unsupported(format!("{n} {what} in one launch")))
}

/// A checked batch: its sequence boundaries and key limits as the kernels read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLayout {
    /// Tokens in the batch.
    pub tokens: usize,
    /// Sequences in the batch.
    pub seqs: usize,
    /// Longest sequence.
    pub max_len: usize,
    /// `seqs + 1` offsets: sequence `s` is tokens `cu_seqlens[s]..cu_seqlens[s + 1]`.
    pub cu_seqlens: Vec<u32>,
    /// Keys each sequence attends to (ColBERT's expansion tail), clamped to 1..=len as the CPU backend does.
    pub key_lens: Option<Vec<u32>>,
}

impl BatchLayout {
    /// Checks `batch` against the model (the CPU backend's checks, in the same words) and lays it out.
    pub fn new(batch: &TokenBatch<'_>, config: &EncoderConfig) -> Result<Self, CudaError> {
        let total: usize = batch.seq_lens.iter().sum();
        if total != batch.input_ids.len() || batch.type_ids.len() != batch.input_ids.len() {
            return Err(CudaError::MalformedBatch(format!(
                "{} ids, {} type ids, sequence lengths summing to {total}",
                batch.input_ids.len(),
                batch.type_ids.len()
            )));
        }
        if let Some(k) = batch.key_lens
            && (k.len() != batch.seq_lens.len()
                || k.iter().zip(batch.seq_lens).any(|(&k, &l)| k > l))
        {
            return Err(CudaError::MalformedBatch(format!(
                "{} key lengths for {} sequences, or one longer than its sequence",
                k.len(),
                batch.seq_lens.len()
            )));
        }
        if let Some(&id) = batch
            .input_ids
            .iter()
            .find(|&&id| id as usize >= config.vocab_size)
        {
            return Err(CudaError::TokenOutOfVocab {
                id,
                vocab: config.vocab_size,
            });
        }
        let mut cu_seqlens = Vec::with_capacity(batch.seq_lens.len() + 1);
        cu_seqlens.push(0u32);
        let mut max_len = 0;
        for &len in batch.seq_lens {
            if len + config.position_offset > config.max_position_embeddings {
                return Err(CudaError::SequenceTooLong {
                    len,
                    max: config.max_tokens(),
                });
            }
            max_len = max_len.max(len);
            let end = *cu_seqlens.last().unwrap_or(&0) as usize + len;
            cu_seqlens
                .push(u32::try_from(end).map_err(|_| {
                    CudaError::MalformedBatch(format!("{end} tokens in one batch"))
                })?);
        }
        let key_lens = batch.key_lens.map(|k| {
            k.iter()
                .zip(batch.seq_lens)
                .map(|(&k, &len)| k.clamp(1.min(len), len) as u32)
                .collect()
        });
        Ok(Self {
            tokens: total,
            seqs: batch.seq_lens.len(),
            max_len,
            cu_seqlens,
            key_lens,
        })
    }
}

/// Element counts of a worker's device buffers for batches of up to `tokens` tokens and `seqs` sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    /// Hidden states, twice (the layer's input and output swap): `tokens × hidden` each.
    pub hidden: usize,
    /// Q, K and V side by side: `tokens × 3·hidden`.
    pub qkv: usize,
    /// Attention context and the sub-layer outputs: `tokens × hidden` each.
    pub context: usize,
    /// Feed-forward activations: `tokens × intermediate`.
    pub ff: usize,
    /// f32 copy of the last hidden state for the host: `tokens × hidden`.
    pub out_f32: usize,
    /// Token ids, type ids, `seqs + 1` offsets and `seqs` key limits, u32.
    pub ints: usize,
}

impl BufferSizes {
    /// The sizes for `tokens` and `seqs`.
    pub fn new(config: &EncoderConfig, tokens: usize, seqs: usize) -> Self {
        let h = config.hidden_size;
        Self {
            hidden: tokens * h,
            qkv: tokens * 3 * h,
            context: tokens * h,
            ff: tokens * config.intermediate_size,
            out_f32: tokens * h,
            ints: 2 * tokens + 2 * seqs + 1,
        }
    }

    /// Device bytes of all buffers with activations stored in `dtype_bytes`-byte values.
    pub fn bytes(&self, dtype_bytes: usize) -> usize {
        (2 * self.hidden + self.qkv + 2 * self.context + self.ff) * dtype_bytes
            + self.out_f32 * 4
            + self.ints * 4
    }
}

/// Where each part of the u32 input buffer starts: `[ids | type ids | cu_seqlens | key_lens]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntOffsets {
    /// Start of the type ids.
    pub type_ids: usize,
    /// Start of the sequence offsets.
    pub cu_seqlens: usize,
    /// Start of the key limits.
    pub key_lens: usize,
    /// Total length.
    pub len: usize,
}

/// Packs a batch's integers into one buffer (one host-to-device copy per forward pass).
pub fn pack_ints(batch: &TokenBatch<'_>, layout: &BatchLayout, out: &mut Vec<u32>) -> IntOffsets {
    out.clear();
    out.extend_from_slice(batch.input_ids);
    let type_ids = out.len();
    out.extend_from_slice(batch.type_ids);
    let cu_seqlens = out.len();
    out.extend_from_slice(&layout.cu_seqlens);
    let key_lens = out.len();
    if let Some(k) = &layout.key_lens {
        out.extend_from_slice(k);
    }
    IntOffsets {
        type_ids,
        cu_seqlens,
        key_lens,
        len: out.len(),
    }
}

/// cuBLASLt's view of `y = x·Wᵀ + b` for row-major `x` (`tokens × k`), `W` (`n × k`, PyTorch's layout) and
/// `y` (`tokens × n`). cuBLASLt is column-major, where row-major `y` is `yᵀ` (`n × tokens`, ld n), so it
/// computes `yᵀ = W·xᵀ`: A = W read transposed (stored `k × n`, ld k), B = `xᵀ` (`k × tokens`, ld k), and the
/// bias runs along C's rows, one per output feature.
pub fn linear_gemm(tokens: usize, n: usize, k: usize) -> cudarc::cublaslt::MatmulConfig {
    cudarc::cublaslt::MatmulConfig {
        transa: true,
        transb: false,
        transc: false,
        m: n as u64,
        n: tokens as u64,
        k: k as u64,
        alpha: 1.0,
        lda: k as i64,
        ldb: k as i64,
        beta: 0.0,
        ldc: n as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    }
}

/// MPNet's relative attention bias for sequences up to `max_len` tokens: `[heads][2·max_len − 1]`, entry
/// `(j − i) + max_len − 1` for query i and key j. The buckets are computed here, on the host, in the same f32
/// arithmetic as PyTorch on the CPU (and embedkit's CPU backend), because the bucket boundaries come from
/// truncating a float and a device `logf` could land on the other side of one.
pub fn relative_bias_table(
    table: &[f32],
    num_buckets: usize,
    heads: usize,
    max_len: usize,
) -> Vec<f32> {
    let span = (2 * max_len).saturating_sub(1);
    let mut out = vec![0.0; heads * span];
    for d in 0..span {
        let rel = d as i64 - (max_len as i64 - 1);
        let bucket = relative_position_bucket(rel, num_buckets, 128);
        for h in 0..heads {
            out[h * span + d] = table[bucket * heads + h];
        }
    }
    out
}

/// T5/MPNet bidirectional bucketing of `relative = key − query` (`MPNetEncoder.relative_position_bucket`).
/// The same steps as embedkit-cpu's private copy; `relative_buckets_match_pytorch` pins both to PyTorch.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let n = -relative;
    let mut ret = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    if n < max_exact {
        ret += n;
    } else {
        let log_ratio = ((n as f32) / max_exact as f32).ln();
        let denom = ((max_distance as f64) / max_exact as f64).ln() as f32;
        let large = max_exact + (log_ratio / denom * (half - max_exact) as f32) as i64;
        ret += large.min(half - 1);
    }
    ret as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config read the way models are: from a config.json (EncoderConfig grows fields; literals would not
    /// keep up), written to a temporary folder that is removed when the config has been read.
    fn config(model_type: &str, hidden: usize, heads: usize) -> EncoderConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let json = format!(
            r#"{{"model_type": "{model_type}", "hidden_size": {hidden}, "num_hidden_layers": 2,
                "num_attention_heads": {heads}, "intermediate_size": {}, "vocab_size": 1000,
                "max_position_embeddings": 514, "pad_token_id": 1}}"#,
            4 * hidden
        );
        std::fs::write(&path, json).unwrap();
        EncoderConfig::from_file(&path).unwrap()
    }

    fn batch<'a>(ids: &'a [u32], types: &'a [u32], lens: &'a [usize]) -> TokenBatch<'a> {
        TokenBatch {
            input_ids: ids,
            type_ids: types,
            seq_lens: lens,
            key_lens: None,
        }
    }

    #[test]
    fn row_threads_cover_the_row_in_registers() {
        for hidden in [1, 31, 32, 384, 768, 1024, 1536, 2048, 4096, 8192] {
            let t = row_threads(hidden).unwrap() as usize;
            assert_eq!(t % 32, 0, "{hidden}");
            assert!((128..=1024).contains(&t), "{hidden}: {t}");
            assert!(t * MAX_PER_THREAD >= hidden, "{hidden}: {t} threads");
        }
        // MiniLM and MPNet: 256 threads, 2 and 3 values each.
        assert_eq!(row_threads(384).unwrap(), 256);
        assert_eq!(row_threads(768).unwrap(), 256);
        assert!(row_threads(0).is_err());
        assert!(row_threads(8193).is_err());
    }

    #[test]
    fn launch_shapes() {
        let a = attention_launch(37, 12, 5).unwrap();
        assert_eq!(a.grid_dim, (10, 12, 5)); // ceil(37 / 4) query tiles
        assert_eq!(a.block_dim, (128, 1, 1));
        assert!(attention_launch(10, 12, 70_000).is_err());
        let r = rows_launch(1000, 384).unwrap();
        assert_eq!((r.grid_dim.0, r.block_dim.0), (1000, 256));
        assert_eq!(elementwise_launch(0).grid_dim.0, 1);
        assert_eq!(elementwise_launch(257).grid_dim.0, 2);
        assert_eq!(
            elementwise_launch(1 << 40).grid_dim.0 as u64,
            MAX_GRID_STRIDE_BLOCKS
        );
        assert_eq!(pool_launch(3).unwrap().grid_dim.0, 3);
    }

    #[test]
    fn configs_the_kernels_take() {
        assert!(check_config(&config("bert", 384, 12)).is_ok()); // MiniLM: head dim 32
        assert!(check_config(&config("mpnet", 768, 12)).is_ok()); // MPNet: head dim 64
        assert!(check_config(&config("xlm-roberta", 1024, 16)).is_ok());
        let wide = check_config(&config("bert", 512, 2)).unwrap_err(); // head dim 256
        assert!(wide.to_string().contains("256 dimensions"), "{wide}");
    }

    #[test]
    fn layout_offsets_and_checks() {
        let cfg = config("bert", 64, 2);
        let ids = [101, 7, 102, 101, 102, 101, 5, 6, 102];
        let types = [0; 9];
        let l = BatchLayout::new(&batch(&ids, &types, &[3, 2, 4]), &cfg).unwrap();
        assert_eq!(l.cu_seqlens, vec![0, 3, 5, 9]);
        assert_eq!((l.tokens, l.seqs, l.max_len), (9, 3, 4));
        let mut packed = Vec::new();
        let off = pack_ints(&batch(&ids, &types, &[3, 2, 4]), &l, &mut packed);
        assert_eq!(
            (off.type_ids, off.cu_seqlens, off.key_lens, off.len),
            (9, 18, 22, 22)
        );
        assert_eq!(&packed[18..22], &[0, 3, 5, 9]);

        let bad = BatchLayout::new(&batch(&ids, &types, &[3, 2]), &cfg).unwrap_err();
        assert!(bad.to_string().contains("malformed batch"), "{bad}");
        let oov = BatchLayout::new(&batch(&[1000], &[0], &[1]), &cfg).unwrap_err();
        assert!(oov.to_string().contains("token id 1000"), "{oov}");
        let long_ids = vec![5u32; 515];
        let long = BatchLayout::new(&batch(&long_ids, &vec![0; 515], &[515]), &cfg).unwrap_err();
        assert!(long.to_string().contains("515 tokens"), "{long}");
    }

    #[test]
    fn key_lengths_clamped_like_the_cpu() {
        let cfg = config("bert", 64, 2);
        let ids = [1u32; 5];
        let mut b = batch(&ids, &[0; 5], &[3, 2]);
        b.key_lens = Some(&[0, 2]);
        let l = BatchLayout::new(&b, &cfg).unwrap();
        assert_eq!(l.key_lens, Some(vec![1, 2]));
        let mut packed = Vec::new();
        let off = pack_ints(&b, &l, &mut packed);
        assert_eq!(&packed[off.key_lens..off.len], &[1, 2]);
        b.key_lens = Some(&[4, 2]);
        assert!(BatchLayout::new(&b, &cfg).is_err());
    }

    #[test]
    fn buffer_sizes() {
        let cfg = config("bert", 384, 12);
        let s = BufferSizes::new(&cfg, 1000, 40);
        assert_eq!(s.qkv, 1000 * 1152);
        assert_eq!(s.ff, 1000 * 1536);
        assert_eq!(s.ints, 2000 + 81);
        // 2 hidden + qkv + 2 context + ff in f16, plus the f32 output and the ints.
        assert_eq!(
            s.bytes(2),
            (2 * 384_000 + 1_152_000 + 2 * 384_000 + 1_536_000) * 2 + 384_000 * 4 + 2081 * 4
        );
    }

    #[test]
    fn gemm_shape_is_the_transposed_product() {
        let g = linear_gemm(100, 1152, 384);
        assert_eq!((g.m, g.n, g.k), (1152, 100, 384));
        assert_eq!((g.lda, g.ldb, g.ldc), (384, 384, 1152));
        assert!(g.transa && !g.transb);
    }

    /// `MPNetEncoder.relative_position_bucket(torch.arange(-130, 131), num_buckets=32, max_distance=128)` as
    /// PyTorch 2.x computes it on the CPU (checked with tools/.venv: torch 2.15), at a selection of distances.
    #[test]
    fn relative_buckets_match_pytorch() {
        let expected = [
            (-130, 15),
            (-64, 14),
            (-32, 12),
            (-16, 10),
            (-9, 8),
            (-8, 8),
            (-7, 7),
            (-1, 1),
            (0, 0),
            (1, 17),
            (7, 23),
            (8, 24),
            (16, 26),
            (32, 28),
            (64, 30),
            (130, 31),
        ];
        for (rel, bucket) in expected {
            assert_eq!(
                relative_position_bucket(rel, 32, 128),
                bucket,
                "relative {rel}"
            );
        }
        let table: Vec<f32> = (0..32 * 2).map(|i| i as f32).collect(); // [bucket][head]
        let t = relative_bias_table(&table, 32, 2, 3);
        assert_eq!(t.len(), 2 * 5);
        // head 0, relative -2..=2 → buckets 2, 1, 0, 17, 18.
        assert_eq!(&t[..5], &[4.0, 2.0, 0.0, 34.0, 36.0]);
    }
}
