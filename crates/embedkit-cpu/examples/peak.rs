//! The arithmetic ceiling of this CPU: f32 FMA (AVX-512 and AVX2) and int8 VNNI throughput of register-only
//! loops on every core at once, to read the engine's speed against (a GEMM cannot beat these).
//!
//! ```sh
//! cargo run --release -p embedkit-cpu --example peak -- [threads]
//! ```

use std::time::Instant;

/// Iterations per measurement: long enough (≈ 0.3 s) to settle the clock, short enough to repeat.
const ITERS: u64 = 100_000_000;

#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    /// 12 independent FMA chains of 16 lanes: latency hidden, throughput bound. Returns a value that depends on
    /// every chain so the loop is not removed.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn fma512(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    /// As [`fma512`] with 8-lane AVX2 registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: u64) -> f32 {
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut out = [0.0f32; 8];
        let mut s = 0.0;
        for v in acc {
            // SAFETY: `out` holds 8 f32, one AVX2 register.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
            s += out.iter().sum::<f32>();
        }
        s
    }

    /// 12 independent `vpdpbusd` chains: 64 u8×i8 multiply-adds each.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn vnni512(iters: u64) -> i32 {
        let mut acc = [_mm512_setzero_si512(); 12];
        let a = _mm512_set1_epi8(1);
        let b = _mm512_set1_epi8(1);
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbusd_epi32(*x, a, b);
            }
        }
        acc.iter()
            .fold(0i32, |s, &v| s.wrapping_add(_mm512_reduce_add_epi32(v)))
    }
}

fn run(name: &str, threads: usize, ops_per_iter: f64, unit: &str, f: fn(u64) -> f64) {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || f(ITERS)))
        .collect();
    let mut sink = 0.0;
    for h in handles {
        sink += h.join().unwrap_or(0.0);
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = ops_per_iter * ITERS as f64 * threads as f64 / secs / 1e9;
    println!(
        "{name:<28} {threads} threads: {rate:8.1} G{unit}/s ({:.1} per thread)  [{sink:.0}]",
        rate / threads as f64
    );
}

fn main() {
    let threads = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            // SAFETY: features checked just above.
            run(
                "f32 FMA, AVX-512",
                threads,
                12.0 * 16.0 * 2.0,
                "FLOP",
                |n| unsafe { kernels::fma512(n) as f64 },
            );
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: features checked just above.
            run(
                "f32 FMA, AVX2",
                threads,
                12.0 * 8.0 * 2.0,
                "FLOP",
                |n| unsafe { kernels::fma256(n) as f64 },
            );
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
            // SAFETY: features checked just above.
            run(
                "int8 VNNI (u8×i8 MAC)",
                threads,
                12.0 * 64.0,
                "MAC",
                |n| unsafe { kernels::vnni512(n) as f64 },
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("only x86-64 kernels are measured ({threads} threads)");
}
