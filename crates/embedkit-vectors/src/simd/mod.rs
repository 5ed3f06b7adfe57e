//! Similarity kernels with run-time dispatch: f32 dot / squared L2 / L1, f32 × i8 and i8 × i8 dots, and
//! Hamming distance over packed bits, each at the best level the CPU has.
//!
//! The level is chosen once per process: the best the CPU supports, or lower when the environment variable
//! `EMBEDKIT_SIMD` says so (`scalar` or `baseline`, `avx2`, `avx512` — the variable and values embedkit-cpu
//! reads too; a level the CPU lacks falls back to the best it has below it). [`Kernels::new`] picks a level
//! explicitly, which is how the tests hold every level to the scalar reference.
//!
//! Levels: `Avx512` needs AVX-512 F and BW (Hamming additionally uses VPOPCNTDQ when the CPU has it, else
//! POPCNT); `Avx2` needs AVX2, FMA and POPCNT; `Scalar` is portable Rust. On aarch64 NEON is part of the
//! baseline and the compiler vectorizes the scalar loops with it, so there is no separate NEON level.

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::str::FromStr;
use std::sync::OnceLock;

/// A kernel implementation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable Rust (auto-vectorized by the compiler for the baseline target).
    Scalar,
    /// x86-64 AVX2 + FMA + POPCNT.
    Avx2,
    /// x86-64 AVX-512 F + BW (+ VPOPCNTDQ for Hamming when present).
    Avx512,
}

/// A level name that is not `scalar`, `avx2` or `avx512`.
#[derive(Debug, thiserror::Error)]
#[error("unknown SIMD level '{0}': expected scalar, avx2 or avx512")]
pub struct UnknownSimdLevel(pub String);

impl FromStr for SimdLevel {
    type Err = UnknownSimdLevel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "baseline" | "none" => Ok(SimdLevel::Scalar),
            "avx2" => Ok(SimdLevel::Avx2),
            "avx512" | "avx-512" => Ok(SimdLevel::Avx512),
            _ => Err(UnknownSimdLevel(s.to_string())),
        }
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        })
    }
}

impl SimdLevel {
    /// Whether this CPU can run kernels of this level.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("popcnt")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("popcnt")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best level this CPU supports, ignoring `EMBEDKIT_SIMD`.
    pub fn detect() -> SimdLevel {
        supported_levels()
            .into_iter()
            .max()
            .unwrap_or(SimdLevel::Scalar)
    }
}

/// Every level this CPU supports, lowest first (always includes [`SimdLevel::Scalar`]).
pub fn supported_levels() -> Vec<SimdLevel> {
    [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512]
        .into_iter()
        .filter(|l| l.is_supported())
        .collect()
}

/// The kernels this process uses: [`SimdLevel::detect`], lowered by `EMBEDKIT_SIMD` if set. Read once.
pub fn active() -> Kernels {
    static ACTIVE: OnceLock<Kernels> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = SimdLevel::detect();
        let wanted = std::env::var("EMBEDKIT_SIMD")
            .ok()
            .and_then(|v| v.parse::<SimdLevel>().ok())
            .unwrap_or(best);
        // A level the CPU lacks falls back to the best supported one below it.
        let level = supported_levels()
            .into_iter()
            .filter(|l| *l <= wanted)
            .max()
            .unwrap_or(SimdLevel::Scalar);
        Kernels::new(level).unwrap_or(Kernels {
            level: SimdLevel::Scalar,
            vpopcntdq: false,
        })
    })
}

/// A set of kernels at one level that this CPU supports. Cheap to copy; every method dispatches on the level.
///
/// Vector arguments of different lengths are compared over their common prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    level: SimdLevel,
    /// AVX-512 VPOPCNTDQ is present (only used at the Avx512 level).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    vpopcntdq: bool,
}

/// Rows per tile of the block kernels: AVX-512 has 32 vector registers (4 rows × 4 queries = 16 accumulators
/// fit), AVX2 has 16 (2 × 4 = 8 accumulators fit without spilling).
#[cfg(target_arch = "x86_64")]
const ROWS_AVX512: usize = 4;
#[cfg(target_arch = "x86_64")]
const ROWS_AVX2: usize = 2;
/// Queries per tile.
#[cfg(target_arch = "x86_64")]
const QUERIES_PER_TILE: usize = 4;

/// Below this many queries a scan is memory-bound: rows are then read strictly in order, one query at a time,
/// which streams at about 2.5× the bandwidth of interleaving a tile of rows (measured on AMD EPYC: 16 vs
/// 6 GB/s per core — interleaved 1.5 KiB row streams defeat the hardware prefetcher). From this many on the
/// scan is compute-bound and the tiles' register reuse wins.
#[cfg(target_arch = "x86_64")]
const TILED_FROM: usize = 3;

/// Calls `$kernel::<R, Q>` for the runtime tile shape `($rows, $qs)`, with R ∈ {$big, 1} and Q ∈ 1..=4.
#[cfg(target_arch = "x86_64")]
macro_rules! tile {
    ($kernel:ident, $big:expr, $rows:expr, $qs:expr, $($arg:expr),*) => {
        match ($rows == $big, $qs) {
            (true, 4) => $kernel::<$big, 4>($($arg),*),
            (true, 3) => $kernel::<$big, 3>($($arg),*),
            (true, 2) => $kernel::<$big, 2>($($arg),*),
            (true, _) => $kernel::<$big, 1>($($arg),*),
            (false, 4) => $kernel::<1, 4>($($arg),*),
            (false, 3) => $kernel::<1, 3>($($arg),*),
            (false, 2) => $kernel::<1, 2>($($arg),*),
            (false, _) => $kernel::<1, 1>($($arg),*),
        }
    };
}

/// Walks an `nq × nr` result in tiles of `row_tile` rows (or single rows at the end) × up to 4 queries,
/// calling `f(q0, qs, r0, rs)` for each. Rows are the outer loop so a tile's rows stay in L1 across queries.
#[cfg(target_arch = "x86_64")]
fn for_each_tile(
    nq: usize,
    nr: usize,
    row_tile: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let mut r0 = 0;
    while r0 < nr {
        let rs = if nr - r0 >= row_tile { row_tile } else { 1 };
        let mut q0 = 0;
        while q0 < nq {
            let qs = (nq - q0).min(QUERIES_PER_TILE);
            f(q0, qs, r0, rs);
            q0 += qs;
        }
        r0 += rs;
    }
}

/// Prefetches rows `from..from + count` (clamped to the slice) of width `dims`.
#[cfg(target_arch = "x86_64")]
fn prefetch_next<T: bytemuck::Pod>(rows: &[T], from: usize, count: usize, dims: usize) {
    let start = (from * dims).min(rows.len());
    let end = ((from + count) * dims).min(rows.len());
    x86::prefetch(bytemuck::cast_slice(&rows[start..end]));
}

/// Checks the shapes of a many-to-many call: returns `(nq, nr)`.
fn shape(queries: usize, rows: usize, width: usize, out: usize) -> (usize, usize) {
    assert!(width > 0, "vector width must be positive");
    assert!(
        queries.is_multiple_of(width) && rows.is_multiple_of(width),
        "queries ({queries}) and rows ({rows}) must be whole vectors of {width}"
    );
    let (nq, nr) = (queries / width, rows / width);
    assert_eq!(out, nq * nr, "output must hold queries × rows values");
    (nq, nr)
}

impl Kernels {
    /// Kernels at `level`, or `None` when this CPU cannot run it.
    pub fn new(level: SimdLevel) -> Option<Kernels> {
        if !level.is_supported() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        let vpopcntdq = level == SimdLevel::Avx512 && is_x86_feature_detected!("avx512vpopcntdq");
        #[cfg(not(target_arch = "x86_64"))]
        let vpopcntdq = false;
        Some(Kernels { level, vpopcntdq })
    }

    /// The portable reference kernels.
    pub fn scalar() -> Kernels {
        Kernels {
            level: SimdLevel::Scalar,
            vpopcntdq: false,
        }
    }

    /// This set's level.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    /// `Σ aᵢbᵢ`.
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.level {
            // SAFETY: `Kernels::new` only builds this level after checking the CPU has its features.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => unsafe { x86::dot_avx512(a, b) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => unsafe { x86::dot_avx2(a, b) },
            _ => scalar::dot(a, b),
        }
    }

    /// `Σ (aᵢ-bᵢ)²` (squared Euclidean distance).
    pub fn l2_squared(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.level {
            // SAFETY: the level was checked against the CPU in `Kernels::new`.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => unsafe { x86::l2_squared_avx512(a, b) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => unsafe { x86::l2_squared_avx2(a, b) },
            _ => scalar::l2_squared(a, b),
        }
    }

    /// `Σ |aᵢ-bᵢ|` (Manhattan distance).
    pub fn l1(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.level {
            // SAFETY: the level was checked against the CPU in `Kernels::new`.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => unsafe { x86::l1_avx512(a, b) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => unsafe { x86::l1_avx2(a, b) },
            _ => scalar::l1(a, b),
        }
    }

    /// `Σ aᵢbᵢ` for an f32 vector and an i8 vector.
    pub fn dot_f32_i8(&self, a: &[f32], b: &[i8]) -> f32 {
        match self.level {
            // SAFETY: the level was checked against the CPU in `Kernels::new`.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => unsafe { x86::dot_f32_i8_avx512(a, b) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => unsafe { x86::dot_f32_i8_avx2(a, b) },
            _ => scalar::dot_f32_i8(a, b),
        }
    }

    /// `Σ aᵢbᵢ` in i32 for two i8 vectors (exact below 131,072 dimensions; wraps beyond, at every level).
    pub fn dot_i8(&self, a: &[i8], b: &[i8]) -> i32 {
        match self.level {
            // SAFETY: the level was checked against the CPU in `Kernels::new`.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => unsafe { x86::dot_i8_avx512(a, b) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => unsafe { x86::dot_i8_avx2(a, b) },
            _ => scalar::dot_i8(a, b),
        }
    }

    /// Number of differing bits between two packed bit vectors.
    pub fn hamming(&self, a: &[u8], b: &[u8]) -> u32 {
        match self.level {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 if self.vpopcntdq => {
                let n = a.len().min(b.len());
                let mut out = [0u32; 1];
                // SAFETY: `vpopcntdq` and the Avx512 level were checked against the CPU in `Kernels::new`.
                unsafe { x86::hamming_block_avx512::<1, 1>(&a[..n], &b[..n], n, &mut out, 1) };
                out[0]
            }
            // SAFETY: both x86 levels require POPCNT, checked in `Kernels::new`.
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 | SimdLevel::Avx2 => unsafe { x86::hamming_popcnt(a, b) },
            _ => scalar::hamming(a, b),
        }
    }

    /// Dot products of every query with every row: `queries` holds `nq` vectors and `rows` holds `nr`
    /// vectors of `dims` values; `out[q * nr + r]` receives `queries[q] · rows[r]`.
    ///
    /// # Panics
    /// When the buffers are not whole vectors or `out` is not `nq × nr` long (caller bugs, like slice
    /// indexing).
    pub fn dot_many(&self, queries: &[f32], rows: &[f32], dims: usize, out: &mut [f32]) {
        let (nq, nr) = shape(queries.len(), rows.len(), dims, out.len());
        match self.level {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 if nq < TILED_FROM => {
                for (q, o) in queries
                    .chunks_exact(dims)
                    .zip(out.chunks_exact_mut(nr.max(1)))
                {
                    // SAFETY: the level was checked against the CPU in `Kernels::new`.
                    unsafe { x86::dot_rows_avx512(q, rows, dims, o) }
                }
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 if nq < TILED_FROM => {
                for (q, o) in queries
                    .chunks_exact(dims)
                    .zip(out.chunks_exact_mut(nr.max(1)))
                {
                    // SAFETY: the level was checked against the CPU in `Kernels::new`.
                    unsafe { x86::dot_rows_avx2(q, rows, dims, o) }
                }
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                use x86::dot_block_avx512 as k;
                for_each_tile(nq, nr, ROWS_AVX512, |q0, qs, r0, rs| {
                    if q0 == 0 {
                        prefetch_next(rows, r0 + rs, ROWS_AVX512, dims);
                    }
                    let (q, r) = (&queries[q0 * dims..], &rows[r0 * dims..]);
                    let o = &mut out[q0 * nr + r0..];
                    // SAFETY: the level was checked against the CPU in `Kernels::new`.
                    unsafe { tile!(k, ROWS_AVX512, rs, qs, q, r, dims, o, nr) }
                });
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                use x86::dot_block_avx2 as k;
                for_each_tile(nq, nr, ROWS_AVX2, |q0, qs, r0, rs| {
                    if q0 == 0 {
                        prefetch_next(rows, r0 + rs, ROWS_AVX2, dims);
                    }
                    let (q, r) = (&queries[q0 * dims..], &rows[r0 * dims..]);
                    let o = &mut out[q0 * nr + r0..];
                    // SAFETY: the level was checked against the CPU in `Kernels::new`.
                    unsafe { tile!(k, ROWS_AVX2, rs, qs, q, r, dims, o, nr) }
                });
            }
            _ => {
                for (qi, q) in queries.chunks_exact(dims).enumerate() {
                    for (ri, r) in rows.chunks_exact(dims).enumerate() {
                        out[qi * nr + ri] = scalar::dot(q, r);
                    }
                }
            }
        }
    }

    /// Like [`Kernels::dot_many`] with i8 rows: `out[q * nr + r] = queries[q] · rows[r]`.
    ///
    /// # Panics
    /// As [`Kernels::dot_many`].
    pub fn dot_f32_i8_many(&self, queries: &[f32], rows: &[i8], dims: usize, out: &mut [f32]) {
        let (nq, nr) = shape(queries.len(), rows.len(), dims, out.len());
        match self.level {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 if nq < TILED_FROM => {
                for (q, o) in queries
                    .chunks_exact(dims)
                    .zip(out.chunks_exact_mut(nr.max(1)))
                {
                    // SAFETY: the level was checked against the CPU in `Kernels::new`.
                    unsafe { x86::dot_f32_i8_rows_avx512(q, rows, dims, o) }
                }
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 if nq < TILED_FROM => {
                for (q, o) in queries
                    .chunks_exact(dims)
                    .zip(out.chunks_exact_mut(nr.max(1)))
                {
                    // SAFETY: the level was checked against the CPU in `Kernels::new`.
                    unsafe { x86::dot_f32_i8_rows_avx2(q, rows, dims, o) }
                }
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                use x86::dot_f32_i8_block_avx512 as k;
                for_each_tile(nq, nr, ROWS_AVX512, |q0, qs, r0, rs| {
                    if q0 == 0 {
                        prefetch_next(rows, r0 + rs, ROWS_AVX512, dims);
                    }
                    let (q, r) = (&queries[q0 * dims..], &rows[r0 * dims..]);
                    let o = &mut out[q0 * nr + r0..];
                    // SAFETY: the level was checked against the CPU in `Kernels::new`.
                    unsafe { tile!(k, ROWS_AVX512, rs, qs, q, r, dims, o, nr) }
                });
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                use x86::dot_f32_i8_block_avx2 as k;
                for_each_tile(nq, nr, ROWS_AVX2, |q0, qs, r0, rs| {
                    if q0 == 0 {
                        prefetch_next(rows, r0 + rs, ROWS_AVX2, dims);
                    }
                    let (q, r) = (&queries[q0 * dims..], &rows[r0 * dims..]);
                    let o = &mut out[q0 * nr + r0..];
                    // SAFETY: the level was checked against the CPU in `Kernels::new`.
                    unsafe { tile!(k, ROWS_AVX2, rs, qs, q, r, dims, o, nr) }
                });
            }
            _ => {
                for (qi, q) in queries.chunks_exact(dims).enumerate() {
                    for (ri, r) in rows.chunks_exact(dims).enumerate() {
                        out[qi * nr + ri] = scalar::dot_f32_i8(q, r);
                    }
                }
            }
        }
    }

    /// Hamming distances of every packed query with every packed row of `row_bytes` bytes:
    /// `out[q * nr + r]`.
    ///
    /// # Panics
    /// As [`Kernels::dot_many`].
    pub fn hamming_many(&self, queries: &[u8], rows: &[u8], row_bytes: usize, out: &mut [u32]) {
        let (nq, nr) = shape(queries.len(), rows.len(), row_bytes, out.len());
        match self.level {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 if self.vpopcntdq && nq < TILED_FROM => {
                for (q, o) in queries
                    .chunks_exact(row_bytes)
                    .zip(out.chunks_exact_mut(nr.max(1)))
                {
                    // SAFETY: Avx512 and VPOPCNTDQ were checked against the CPU in `Kernels::new`.
                    unsafe { x86::hamming_rows_avx512(q, rows, row_bytes, o) }
                }
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 if self.vpopcntdq => {
                use x86::hamming_block_avx512 as k;
                for_each_tile(nq, nr, ROWS_AVX512, |q0, qs, r0, rs| {
                    let (q, r) = (&queries[q0 * row_bytes..], &rows[r0 * row_bytes..]);
                    let o = &mut out[q0 * nr + r0..];
                    // SAFETY: Avx512 and VPOPCNTDQ were checked against the CPU in `Kernels::new`.
                    unsafe { tile!(k, ROWS_AVX512, rs, qs, q, r, row_bytes, o, nr) }
                });
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 | SimdLevel::Avx2 => {
                for (q, o) in queries
                    .chunks_exact(row_bytes)
                    .zip(out.chunks_exact_mut(nr.max(1)))
                {
                    // SAFETY: both x86 levels require POPCNT, checked in `Kernels::new`.
                    unsafe { x86::hamming_rows_popcnt(q, rows, row_bytes, o) }
                }
            }
            _ => {
                for (qi, q) in queries.chunks_exact(row_bytes).enumerate() {
                    for (ri, r) in rows.chunks_exact(row_bytes).enumerate() {
                        out[qi * nr + ri] = scalar::hamming(q, r);
                    }
                }
            }
        }
    }
}
