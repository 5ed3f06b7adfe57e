//! The arithmetic ceiling of this CPU: register-only loops of f32 FMAs (AVX-512 and AVX2), int8 VNNI dot
//! products, bf16 dot products and AMX tile products, run on `threads` threads at once. A GEMM cannot beat these, so the engine's
//! speed is read as a share of them (`embedkit bench`, the `peak` example).

use std::time::Instant;

/// Measured peak rates, per second, on [`Peak::threads`] threads; `None` where the CPU lacks the instructions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Threads the loops ran on.
    pub threads: usize,
    /// f32 GFLOP/s (one FMA = 2 FLOP) with 512-bit registers.
    pub f32_avx512_gflops: Option<f64>,
    /// f32 GFLOP/s with 256-bit registers.
    pub f32_avx2_gflops: Option<f64>,
    /// int8 GMAC/s (u8 × i8 multiply-adds into i32) with AVX-512 VNNI `vpdpbusd`.
    pub int8_vnni_gmacs: Option<f64>,
    /// bf16 GFLOP/s (one bf16 multiply-add into f32 = 2 FLOP) with AVX512_BF16 `vdpbf16ps`.
    pub bf16_gflops: Option<f64>,
    /// bf16 GFLOP/s with AMX tiles (`tdpbf16ps`), where [`crate::amx::status`] is on.
    pub amx_bf16_gflops: Option<f64>,
    /// int8 GMAC/s with AMX tiles (`tdpbusd`), where [`crate::amx::status`] is on.
    pub amx_int8_gmacs: Option<f64>,
}

impl Peak {
    /// The f32 peak of the widest FMA this CPU has (what the f32 kernels can reach).
    pub fn f32_gflops(&self) -> Option<f64> {
        match (self.f32_avx512_gflops, self.f32_avx2_gflops) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Loop iterations per measurement: 12 instructions each, about 0.1–0.3 s on current cores.
const ITERS: u64 = 40_000_000;

/// Runs every loop the CPU supports on `threads` threads (0 counts as 1), one after the other. Takes about a
/// second; the result is only meaningful on an otherwise idle machine.
pub fn measure(threads: usize) -> Peak {
    let threads = threads.max(1);
    let mut peak = Peak {
        threads,
        f32_avx512_gflops: None,
        f32_avx2_gflops: None,
        int8_vnni_gmacs: None,
        bf16_gflops: None,
        amx_bf16_gflops: None,
        amx_int8_gmacs: None,
    };
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            // SAFETY: the features were checked just above.
            peak.f32_avx512_gflops = Some(rate(threads, 12.0 * 16.0 * 2.0, |n| unsafe {
                loops::fma512(n) as f64
            }));
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            peak.f32_avx2_gflops = Some(rate(threads, 12.0 * 8.0 * 2.0, |n| unsafe {
                loops::fma256(n) as f64
            }));
        }
        if has!("avx512f") && has!("avx512vnni") {
            // SAFETY: as above.
            peak.int8_vnni_gmacs = Some(rate(threads, 12.0 * 64.0, |n| unsafe {
                loops::vnni512(n) as f64
            }));
        }
        if has!("avx512f") && has!("avx512bf16") {
            // SAFETY: as above.
            peak.bf16_gflops = Some(rate(threads, 12.0 * 32.0 * 2.0, |n| unsafe {
                loops::bf16_512(n) as f64
            }));
        }
        if crate::amx::available() {
            // One iteration is four tile products, each 16 × 16 × 32 bf16 multiply-adds (2 FLOP each) or
            // 16 × 16 × 64 u8·i8 ones (counted as MACs): the same count, 2 · `tile_macs`, for both units. A
            // product takes 16 cycles, so an eighth of the iterations runs about as long as the loops above.
            let tile_macs = 4.0 * 16.0 * 16.0 * 32.0;
            // SAFETY: AMX is available (checked just above).
            peak.amx_bf16_gflops = Some(rate_n(threads, ITERS / 8, 2.0 * tile_macs, |n| unsafe {
                crate::amx::peak_loop(crate::amx::Dot::Bf16, n)
            }));
            // SAFETY: as above.
            peak.amx_int8_gmacs = Some(rate_n(threads, ITERS / 8, 2.0 * tile_macs, |n| unsafe {
                crate::amx::peak_loop(crate::amx::Dot::U8I8, n)
            }));
        }
    }
    peak
}

/// Billions of operations per second of `f` on `threads` threads, `ops` per iteration. A short untimed run
/// first lets the clock and the 512-bit units wake up.
fn rate(threads: usize, ops: f64, f: fn(u64) -> f64) -> f64 {
    rate_n(threads, ITERS, ops, f)
}

/// [`rate`] with `iters` iterations.
fn rate_n(threads: usize, iters: u64, ops: f64, f: fn(u64) -> f64) -> f64 {
    std::hint::black_box(f(iters / 20));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || f(iters)))
        .collect();
    let sink: f64 = handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum();
    std::hint::black_box(sink);
    ops * iters as f64 * threads as f64 / start.elapsed().as_secs_f64() / 1e9
}

#[cfg(target_arch = "x86_64")]
mod loops {
    use std::arch::x86_64::*;

    /// 12 independent FMA chains of 16 lanes: latency hidden, throughput bound. Returns a value that depends on
    /// every chain so the loop is not removed.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn fma512(iters: u64) -> f32 {
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
    pub(super) unsafe fn fma256(iters: u64) -> f32 {
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
    pub(super) unsafe fn vnni512(iters: u64) -> i32 {
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

    /// 12 independent `vdpbf16ps` chains: 32 bf16 multiply-adds into 16 f32 lanes each.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn bf16_512(iters: u64) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 12];
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbf16_ps(*x, a, a);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_what_the_cpu_has() {
        let p = super::measure(1);
        assert_eq!(p.threads, 1);
        assert_eq!(p.amx_bf16_gflops.is_some(), crate::amx::available());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            p.f32_avx2_gflops.is_some(),
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        );
        for r in [
            p.f32_avx512_gflops,
            p.f32_avx2_gflops,
            p.int8_vnni_gmacs,
            p.bf16_gflops,
            p.amx_bf16_gflops,
            p.amx_int8_gmacs,
        ]
        .into_iter()
        .flatten()
        {
            assert!(r.is_finite() && r > 0.0, "{p:?}");
        }
    }
}
