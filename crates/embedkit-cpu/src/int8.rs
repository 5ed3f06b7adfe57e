//! Dynamically quantized linear layers: int8 weights (per output channel, packed once at load) times int8
//! activations (per token row, quantized on the fly), accumulated in i32.
//!
//! Activations are quantized asymmetrically per row to u8 (`x ≈ min + step·u`, u ∈ 0..=255), which uses all
//! 8 bits on skewed rows such as GELU outputs and is what `vpdpbusd` (AVX-512 VNNI: 64 u8×i8 products per
//! instruction) multiplies natively: `Σ x·w ≈ step·Σ u·q + min·Σ q`, both scaled by the weight's scale.
//! Without VNNI the same packed data runs through a portable loop.

use crate::kernels::OutPtr;
use crate::simd::SimdLevel;
use embedkit_model::Activation;
use rayon::prelude::*;

/// Outputs per packed block: one 512-bit register of i32 accumulators.
const BLOCK: usize = 16;
/// Rows per parallel task of the VNNI and portable kernels (see [`QuantizedLinear::multiply`]).
const ROW_CHUNK: usize = 16;
/// Rows per parallel task of the AMX kernel: four of its 32-row blocks.
const AMX_ROW_CHUNK: usize = 128;

/// A linear layer `y = x·Wᵀ + b` with W quantized to int8.
pub(crate) struct QuantizedLinear {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4 (one `vpdpbusd` lane takes 4 bytes).
    k_pad: usize,
    /// `[n_blocks][k_pad / 4][BLOCK][4]` int8 weights; rows past `n` and columns past `k` are zero.
    packed: Vec<i8>,
    /// Per-output dequantization scale.
    scale: Vec<f32>,
    /// `Σ_k q[n][k]`, which multiplies each row's `min`.
    weight_sums: Vec<f32>,
    bias: Vec<f32>,
}

impl QuantizedLinear {
    /// Quantizes `weight` (`[n × k]`, PyTorch layout) symmetrically per output row.
    pub(crate) fn new(weight: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        let k_pad = k.div_ceil(4) * 4;
        let blocks = n.div_ceil(BLOCK);
        let mut packed = vec![0i8; blocks * k_pad * BLOCK];
        let mut scale = vec![0.0f32; n];
        let mut weight_sums = vec![0.0f32; n];
        for row in 0..n {
            let w = &weight[row * k..(row + 1) * k];
            let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale[row] = s;
            let (b, lane) = (row / BLOCK, row % BLOCK);
            let mut sum = 0i32;
            for (col, &v) in w.iter().enumerate() {
                let q = (v / s).round().clamp(-127.0, 127.0) as i8;
                sum += q as i32;
                packed[((b * (k_pad / 4) + col / 4) * BLOCK + lane) * 4 + col % 4] = q;
            }
            weight_sums[row] = sum as f32;
        }
        Self {
            n,
            k,
            k_pad,
            packed,
            scale,
            weight_sums,
            bias: bias.map_or_else(|| vec![0.0; n], <[f32]>::to_vec),
        }
    }

    /// `y[m × n] = x[m × k]·Wᵀ + b`. `scratch` holds the quantized activations between calls.
    pub(crate) fn forward(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        scratch: &mut QuantScratch,
        vnni: bool,
        level: SimdLevel,
    ) {
        debug_assert_eq!(x.len(), m * self.k);
        debug_assert_eq!(y.len(), m * self.n);
        let kernel = Kernel::pick(vnni, self.k_pad);
        let rows = kernel.quantized_rows(m);
        scratch.quantize(
            x.par_chunks(self.k),
            m,
            rows,
            self.k,
            self.k_pad,
            level,
            |row| row,
        );
        self.multiply(scratch, m, y, kernel);
    }

    /// `y = act(x)·Wᵀ + b`, with `act` applied to each row of `x` in place just before that row is quantized,
    /// while it is in L1: one pass over `x` instead of an activation pass and a quantization pass (the
    /// feed-forward's down projection, whose input is `m × 1536` for MiniLM). `x` ends up holding `act(x)`,
    /// as after [`crate::kernels::activate`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_activated(
        &self,
        x: &mut [f32],
        m: usize,
        y: &mut [f32],
        scratch: &mut QuantScratch,
        vnni: bool,
        level: SimdLevel,
        act: Activation,
    ) {
        debug_assert_eq!(x.len(), m * self.k);
        debug_assert_eq!(y.len(), m * self.n);
        let kernel = Kernel::pick(vnni, self.k_pad);
        let rows = kernel.quantized_rows(m);
        let (k, k_pad) = (self.k, self.k_pad);
        scratch.quantize(x.par_chunks_mut(k), m, rows, k, k_pad, level, |row| {
            crate::kernels::activate_chunk(level, row, act);
            &*row
        });
        self.multiply(scratch, m, y, kernel);
    }

    /// `y = dequantize(codes · W)` for the `m` rows quantized in `scratch`, with `kernel`.
    fn multiply(&self, scratch: &QuantScratch, m: usize, y: &mut [f32], kernel: Kernel) {
        let out = OutPtr(y.as_mut_ptr());
        let blocks = self.n.div_ceil(BLOCK);
        let pairs = blocks.div_ceil(2);
        // A task is two blocks (32 outputs) × up to ROW_CHUNK rows, and a thread's tasks run row chunk by row
        // chunk, every pair of a chunk in turn. So between two visits to the same weights a thread writes
        // ROW_CHUNK × n outputs and reads all n × k weights: with 16 rows that is ≤ 100 KiB of outputs beside
        // MiniLM's 590 KiB of up-projection weights, which then stay in a Zen 4's 1 MiB L2; with 64 rows the
        // n = 1152 and 1536 projections ran at a median 83 % and 72 % of the one-thread VNNI peak against 92 %
        // and 90 % with 16 (`int8_gemm_timing`, Zen 4, nine runs each; PERFORMANCE.md, issue 19's sixth
        // pass). A chunk's codes (16 × k bytes) and a pair's weights (32 × k) also share
        // L1 for k = 384. rayon splits the range of tasks into one run per thread, not a job per task, so
        // small tasks cost a loop iteration each. AMX tiles finish a chunk in about a microsecond and take
        // whole 32-row blocks: they keep larger chunks.
        let row_chunk = if kernel == Kernel::Amx {
            AMX_ROW_CHUNK
        } else {
            ROW_CHUNK
        };
        let chunks = m.div_ceil(row_chunk);
        (0..chunks * pairs).into_par_iter().for_each(|task| {
            let (chunk, pair) = (task / pairs, task % pairs);
            let rows = chunk * row_chunk..((chunk + 1) * row_chunk).min(m);
            let first = pair * 2;
            let count = (blocks - first).min(2);
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Kernel::Amx` is picked only when AMX is available and k_pad is whole tile steps,
                // and `forward` padded the codes to whole 32-row blocks; the task writes only rows in `rows`
                // (< m) and columns of blocks first..first+count (< n) of `y`.
                Kernel::Amx => unsafe {
                    vnni::amx_block_pair(self, scratch, rows, first, count, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Kernel::Vnni` is picked only when the CPU reports avx512f/bw/vnni (see
                // `vnni_supported`); the kernel writes only rows in `rows` (< m) and columns of blocks
                // first..first+count, < n, of `y`.
                Kernel::Vnni => unsafe { vnni::block_pair(self, scratch, rows, first, count, out) },
                _ => portable_block_pair(self, scratch, rows, first, count, out),
            }
        });
    }
}

/// The integer kernel a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// AMX `tdpbusd` tiles (32 rows × 32 columns × 64 bytes of `k` per step).
    Amx,
    /// AVX-512 VNNI `vpdpbusd`.
    Vnni,
    /// Plain Rust.
    Portable,
}

impl Kernel {
    /// AMX where the CPU has it and `k_pad` is whole tile steps, else VNNI when allowed, else portable.
    fn pick(vnni: bool, k_pad: usize) -> Self {
        if vnni && crate::amx::available() && k_pad.is_multiple_of(crate::amx::STEP_BYTES) {
            Self::Amx
        } else if vnni {
            Self::Vnni
        } else {
            Self::Portable
        }
    }

    /// Rows of codes to quantize for `m` rows of activations: AMX tiles read whole blocks of 32 rows, so for
    /// them the rows are padded with zero rows to that.
    fn quantized_rows(self, m: usize) -> usize {
        if self == Self::Amx {
            m.div_ceil(crate::amx::BLOCK) * crate::amx::BLOCK
        } else {
            m
        }
    }
}

/// Dequantizes one exact integer dot product: the same operations in the same order in every kernel, so all
/// agree bit for bit (`mul_add` is one rounding, as the VNNI kernel's `vfmadd`).
#[inline(always)]
fn finish(l: &QuantizedLinear, a: &QuantScratch, r: usize, col: usize, v: i32) -> f32 {
    let t = (v as f32).mul_add(a.scale[r], a.min[r] * l.weight_sums[col]);
    t.mul_add(l.scale[col], l.bias[col])
}

/// Whether the AVX-512 VNNI kernel can run here.
pub(crate) fn vnni_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantized activations: u8 codes, `k_pad` per row (padding is 0, against zero weights), and each row's
/// `step` and `min`.
#[derive(Default)]
pub(crate) struct QuantScratch {
    bytes: Vec<u8>,
    scale: Vec<f32>,
    min: Vec<f32>,
    k_pad: usize,
}

impl QuantScratch {
    /// Sizes the buffers for `m` rows padded to `rows`, `k_pad` codes each.
    fn prepare(&mut self, m: usize, rows: usize, k_pad: usize) {
        self.k_pad = k_pad;
        // Rows below `m` are written whole by the quantizer (codes, then zeros past `k`); only the padding
        // rows AMX reads are zeroed here. Clearing the whole buffer first was a serial memset, 4% of an int8
        // MiniLM run.
        self.bytes.resize(rows * k_pad, 0);
        self.bytes[m * k_pad..].fill(0);
        self.scale.clear();
        self.scale.resize(m, 1.0);
        self.min.clear();
        self.min.resize(m, 0.0);
    }

    /// Quantizes `m` rows into `rows ≥ m` rows of codes (the rest zero). `x_rows` yields the rows of `k`
    /// values and `values_of` turns each into the values to quantize: the row itself, or the row activated in
    /// place while it is in L1 ([`QuantizedLinear::forward_activated`]).
    #[allow(clippy::too_many_arguments)]
    fn quantize<'x, R: Send + 'x>(
        &mut self,
        x_rows: impl IndexedParallelIterator<Item = R>,
        m: usize,
        rows: usize,
        k: usize,
        k_pad: usize,
        level: SimdLevel,
        values_of: impl Fn(R) -> &'x [f32] + Sync + Send,
    ) {
        self.prepare(m, rows, k_pad);
        // A row is only k values (384 for MiniLM): tasks of several rows keep rayon's overhead small.
        self.bytes
            .par_chunks_mut(k_pad)
            .zip(self.scale.par_iter_mut().zip(self.min.par_iter_mut()))
            .zip(x_rows)
            .with_min_len(16)
            .for_each(|((dst, (s, lo)), row)| {
                let row = values_of(row);
                let (codes, padding) = dst.split_at_mut(k);
                quantize_row_level(level, row, codes, s, lo);
                padding.fill(0);
            });
    }
}

crate::simd::multiversion!(quantize_row_level(row: &[f32], dst: &mut [u8], step: &mut f32, min: &mut f32) => quantize_row);

/// `u = round((v − min) / step)` for one row, with `min`/`step` from the row's range. Written as fixed-width
/// lanes with plain comparisons (not `f32::min`, whose NaN rule blocks vectorization) so that each
/// [`multiversion!`](crate::simd::multiversion) copy vectorizes.
#[inline(always)]
fn quantize_row(row: &[f32], dst: &mut [u8], step: &mut f32, min: &mut f32) {
    let mut lo = [f32::INFINITY; 16];
    let mut hi = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            let v = c[l];
            // Operands in `minps`/`maxps` order, so each line is one instruction.
            lo[l] = if lo[l] < v { lo[l] } else { v };
            hi[l] = if hi[l] > v { hi[l] } else { v };
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        lo[l] = if lo[l] < v { lo[l] } else { v };
        hi[l] = if hi[l] > v { hi[l] } else { v };
    }
    let (lo, hi) = lanes_min_max(&lo, &hi);
    let s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    *step = s;
    *min = lo;
    let inv = 1.0 / s;
    // Adding 1.5·2²³ rounds to the nearest integer (ties to even) and leaves it in the low mantissa bits, so
    // the code is the low byte of the sum's bits: no roundf call and no saturating float→int conversion. The
    // clamp keeps the value in 0..=255 so those bits are the whole integer.
    const ROUND: f32 = 12_582_912.0;
    for (d, &v) in dst.iter_mut().zip(row) {
        let q = (v - lo) * inv;
        let q = if q < 0.0 { 0.0 } else { q };
        let q = if q > 255.0 { 255.0 } else { q };
        *d = (q + ROUND).to_bits() as u8;
    }
}

/// The smallest of `lo` and the largest of `hi`. Kept out of line: inlined, LLVM's SLP vectorizer turns the
/// lane loop above into shuffles and mask moves to match this reduction (measured: 3× slower quantization).
#[inline(never)]
fn lanes_min_max(lo: &[f32; 16], hi: &[f32; 16]) -> (f32, f32) {
    (
        lo.iter().copied().fold(f32::INFINITY, f32::min),
        hi.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    )
}

/// The same arithmetic as the VNNI kernel in portable Rust, for CPUs without it.
fn portable_block_pair(
    l: &QuantizedLinear,
    a: &QuantScratch,
    rows: std::ops::Range<usize>,
    first: usize,
    count: usize,
    out: OutPtr,
) {
    let k4 = l.k_pad / 4;
    for b in first..first + count {
        let w = &l.packed[b * k4 * BLOCK * 4..(b + 1) * k4 * BLOCK * 4];
        for r in rows.clone() {
            let row = &a.bytes[r * l.k_pad..(r + 1) * l.k_pad];
            let mut acc = [0i32; BLOCK];
            for kk in 0..k4 {
                let av = &row[kk * 4..kk * 4 + 4];
                let wv = &w[kk * BLOCK * 4..(kk + 1) * BLOCK * 4];
                for (lane, acc_lane) in acc.iter_mut().enumerate() {
                    for t in 0..4 {
                        *acc_lane += av[t] as i32 * wv[lane * 4 + t] as i32;
                    }
                }
            }
            for (lane, &v) in acc.iter().enumerate() {
                let col = b * BLOCK + lane;
                if col < l.n {
                    let y = finish(l, a, r, col, v);
                    // SAFETY: r < m and col < n, so the index is inside the m × n output this task owns
                    // columns of.
                    unsafe { *out.get().add(r * l.n + col) = y };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni;

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        for r in 0..m {
            for c in 0..n {
                y[r * n + c] = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>() + b[c];
            }
        }
        y
    }

    fn check(m: usize, n: usize, k: usize, vnni: bool) {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104_729 % 997) as f32 / 498.5 - 1.0) * 0.2)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let q = QuantizedLinear::new(&w, Some(&b), n, k);
        let mut y = vec![0.0; m * n];
        q.forward(
            &x,
            m,
            &mut y,
            &mut QuantScratch::default(),
            vnni,
            SimdLevel::detect(),
        );
        let want = reference(&x, &w, &b, m, n, k);
        // int8 error: relative to the output's scale, well under 2%.
        let max = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (i, (g, r)) in y.iter().zip(&want).enumerate() {
            assert!(
                (g - r).abs() <= 0.02 * max,
                "m{m} n{n} k{k} vnni {vnni}: y[{i}] = {g}, want {r}"
            );
        }
    }

    #[test]
    fn row_quantization_rounds_to_nearest_on_every_level() {
        let levels =
            [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512].map(SimdLevel::capped);
        for k in [1usize, 15, 16, 17, 384, 1536] {
            let row: Vec<f32> = (0..k)
                .map(|i| ((i * 7919 % 1013) as f32 * 0.013).sin() * 4.0)
                .collect();
            let lo = row.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let step = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            let want: Vec<u8> = row
                .iter()
                .map(|v| {
                    ((v - lo) * (1.0 / step))
                        .round_ties_even()
                        .clamp(0.0, 255.0) as u8
                })
                .collect();
            for level in levels {
                let mut got = vec![0u8; k];
                let (mut s, mut m) = (0.0, 0.0);
                quantize_row_level(level, &row, &mut got, &mut s, &mut m);
                assert_eq!((s, m), (step, lo), "k {k} {level:?}");
                assert_eq!(got, want, "k {k} {level:?}");
            }
            if k > 1 {
                assert!(
                    want.contains(&0) && want.contains(&255),
                    "k {k}: full range used"
                );
            }
        }
    }

    /// Not a test: the fastest of 30 runs of MiniLM's four layer shapes (MPNet's with `SHAPES=mpnet`) at batch
    /// 32 × 26 tokens, quantizer and product, then the product alone, on one thread or `TH` threads (`TH=2
    /// cargo test --release -p embedkit-cpu --lib int8_gemm_timing -- --ignored --nocapture`). The minimum is
    /// what the kernel can do; other load on the machine only adds to the rest.
    #[test]
    #[ignore]
    fn int8_gemm_timing() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(
                std::env::var("TH")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            )
            .build()
            .expect("pool");
        let m = 832;
        let mut total = 0.0;
        let shapes: &[(usize, usize)] = if std::env::var("SHAPES").is_ok_and(|v| v == "mpnet") {
            &[(2304, 768), (768, 768), (3072, 768), (768, 3072)]
        } else {
            &[(1152, 384), (384, 384), (1536, 384), (384, 1536)]
        };
        for &(n, k) in shapes {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let q = QuantizedLinear::new(&w, None, n, k);
            let mut y = vec![0.0; m * n];
            let mut scratch = QuantScratch::default();
            let level = SimdLevel::detect();
            let best = pool.install(|| {
                (0..30)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        q.forward(&x, m, &mut y, &mut scratch, vnni_supported(), level);
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min)
            });
            let kernel = Kernel::pick(vnni_supported(), q.k_pad);
            let multiply_best = pool.install(|| {
                (0..30)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        q.multiply(&scratch, m, &mut y, kernel);
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min)
            });
            let macs = (m * n * k) as f64;
            println!(
                "m {m} n {n} k {k}: {:.3} ms, {:.1} GMAC/s; the product alone {:.3} ms, {:.1} GMAC/s",
                best * 1e3,
                macs / best / 1e9,
                multiply_best * 1e3,
                macs / multiply_best / 1e9
            );
            total += best;
        }
        println!("one layer's four projections: {:.3} ms", total * 1e3);
    }

    #[test]
    fn portable_matches_float_reference() {
        for (m, n, k) in [(1, 16, 4), (5, 37, 30), (9, 64, 384), (150, 40, 64)] {
            check(m, n, k, false);
        }
    }

    /// The tiles' integer sums are exact and dequantized by the same `finish`, so AMX equals VNNI bit for
    /// bit, n not a multiple of 32 (a lone last block) and m not a multiple of 32 included.
    #[test]
    fn amx_equals_vnni_exactly() {
        if !(vnni_supported() && crate::amx::available()) {
            eprintln!("skipped: AMX is {}", crate::amx::status());
            return;
        }
        for (m, n, k) in [
            (1, 16, 64),
            (33, 40, 384),
            (70, 1536, 384),
            (130, 384, 1536),
            (5, 48, 128),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            let q = QuantizedLinear::new(&w, Some(&b), n, k);
            assert_eq!(Kernel::pick(true, q.k_pad), Kernel::Amx);
            let mut scratch = QuantScratch::default();
            let rows = m.div_ceil(crate::amx::BLOCK) * crate::amx::BLOCK;
            let level = SimdLevel::detect();
            scratch.quantize(x.par_chunks(k), m, rows, k, q.k_pad, level, |row| row);
            let (mut tiles, mut vector) = (vec![0.0; m * n], vec![f32::NAN; m * n]);
            q.multiply(&scratch, m, &mut tiles, Kernel::Amx);
            q.multiply(&scratch, m, &mut vector, Kernel::Vnni);
            assert_eq!(tiles, vector, "{m}x{n}x{k}");
        }
    }

    /// A scratch reused across calls is not cleared: a big batch then a small one, and a wide layer (k = 30,
    /// padded) after a narrow one, must give what a fresh scratch gives, bit for bit, on every kernel here.
    #[test]
    fn a_reused_scratch_gives_what_a_fresh_one_gives() {
        let shapes = [
            (70, 40, 384),
            (3, 40, 384),
            (33, 24, 30),
            (5, 24, 30),
            (1, 40, 384),
        ];
        let layers: Vec<_> = shapes
            .iter()
            .map(|&(_, n, k)| {
                let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
                QuantizedLinear::new(&w, None, n, k)
            })
            .collect();
        for vnni in [false, vnni_supported()] {
            let mut reused = QuantScratch::default();
            for (&(m, n, k), q) in shapes.iter().zip(&layers) {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| (i as f32 * 0.37 + m as f32).sin())
                    .collect();
                let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
                let level = SimdLevel::detect();
                q.forward(&x, m, &mut a, &mut reused, vnni, level);
                q.forward(&x, m, &mut b, &mut QuantScratch::default(), vnni, level);
                assert_eq!(a, b, "{m}x{n}x{k} vnni {vnni}");
            }
        }
    }

    /// The fused path equals activating first and then the plain forward, bit for bit, and leaves `act(x)` in x.
    #[test]
    fn activation_inside_the_quantizer_equals_activating_first() {
        for act in [Activation::Gelu, Activation::Relu, Activation::GeluTanh] {
            for vnni in [false, vnni_supported()] {
                for (m, n, k) in [(3, 40, 384), (70, 24, 30), (33, 384, 1536)] {
                    let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
                    let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
                    let q = QuantizedLinear::new(&w, None, n, k);
                    let level = SimdLevel::detect();
                    let mut activated = x.clone();
                    crate::kernels::activate(level, &mut activated, act);
                    let mut want = vec![0.0; m * n];
                    q.forward(
                        &activated,
                        m,
                        &mut want,
                        &mut QuantScratch::default(),
                        vnni,
                        level,
                    );
                    let (mut fused_x, mut got) = (x.clone(), vec![0.0; m * n]);
                    let mut scratch = QuantScratch::default();
                    q.forward_activated(&mut fused_x, m, &mut got, &mut scratch, vnni, level, act);
                    assert_eq!(got, want, "{act:?} {m}x{n}x{k} vnni {vnni}");
                    assert_eq!(fused_x, activated, "{act:?}: x holds act(x)");
                }
            }
        }
    }

    #[test]
    fn vnni_equals_portable_exactly() {
        if !vnni_supported() {
            eprintln!("no AVX-512 VNNI here; the portable path is what runs");
            return;
        }
        for (m, n, k) in [
            (1, 16, 4),
            (5, 37, 30),
            (9, 64, 384),
            (13, 48, 1536),
            (150, 40, 64),
        ] {
            check(m, n, k, true);
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let q = QuantizedLinear::new(&w, None, n, k);
            let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
            q.forward(
                &x,
                m,
                &mut a,
                &mut QuantScratch::default(),
                true,
                SimdLevel::detect(),
            );
            q.forward(
                &x,
                m,
                &mut b,
                &mut QuantScratch::default(),
                false,
                SimdLevel::Baseline,
            );
            assert_eq!(a, b, "integer arithmetic must agree bit for bit");
        }
    }
}
