//! Run-time choice of the instruction set for the element-wise kernels.
//!
//! The crate is compiled for the baseline target (x86-64: SSE2), so one binary runs everywhere. Hot loops are
//! written once as plain Rust and compiled again inside `#[target_feature]` wrappers (see [`multiversion!`]);
//! the wrapper matching the CPU is picked at run time. `EMBEDKIT_SIMD=scalar|avx2|avx512` caps the level, so
//! tests run the AVX2 and baseline paths on an AVX-512 machine.

/// The instruction set the element-wise kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// The compile target's baseline (SSE2 on x86-64, NEON on aarch64).
    Baseline,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512 (F, BW, DQ, VL) + FMA.
    Avx512,
}

impl SimdLevel {
    /// The best level this CPU supports.
    pub fn supported() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Baseline
    }

    /// The supported level, capped by `EMBEDKIT_SIMD` when set (`scalar`/`baseline`, `avx2`, `avx512`).
    pub fn detect() -> Self {
        let best = Self::supported();
        match std::env::var("EMBEDKIT_SIMD").ok().as_deref() {
            Some("scalar") | Some("baseline") => SimdLevel::Baseline,
            Some("avx2") => best.min(SimdLevel::Avx2),
            _ => best,
        }
    }

    /// [`SimdLevel::detect`], read once per process (for callers without a backend to carry the level).
    pub fn cached() -> Self {
        static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(Self::detect)
    }

    /// Caps `requested` at what the CPU supports, so a caller can never select instructions it lacks.
    pub fn capped(requested: SimdLevel) -> Self {
        requested.min(Self::supported())
    }
}

/// Whether the f32 panel kernel beats `gemm` at every batch size: AMD CPUs with AVX-512, Zen 4 (family 0x19,
/// 512-bit FMAs as two 256-bit halves) and Zen 5 (family 0x1A, full-width on server parts). On Zen 4 one
/// 512-bit FMA per cycle leaves the panel's weight stream from L2 at ~11 bytes a cycle, which L2 sustains;
/// Zen 5's L2 keeps up with twice that (measured on an EPYC family 0x1A, 2 threads, 256-token texts: panels
/// at every batch +21 % tokens/s for all-MiniLM-L6-v2 and +12 % for all-mpnet-base-v2 over the 1,024-row
/// hand-over to `gemm`). On the Intel Xeon measured, `gemm`'s L1 blocking won above ~1,000 rows.
pub fn panels_at_every_batch() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        let vendor = __cpuid_count(0, 0);
        // "AuthenticAMD" in EBX, EDX, ECX.
        let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        let signature = __cpuid_count(1, 0).eax;
        let base = (signature >> 8) & 0xf;
        let family = if base == 0xf {
            base + ((signature >> 20) & 0xff)
        } else {
            base
        };
        amd && (family == 0x19 || family == 0x1a) && SimdLevel::supported() == SimdLevel::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Multiply-add for kernel bodies generic over whether the level has FMA: Rust never contracts `a * b + c`
/// into an FMA by itself, and `mul_add` without hardware FMA is a slow libm call.
pub trait MulAdd {
    /// `a · b + c`.
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// Fused multiply-add (levels with FMA).
pub struct Fused;
/// Separate multiply and add (baseline).
pub struct Unfused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Unfused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Defines `pub(crate) fn $name(level: SimdLevel, args…)` that runs `$body_fn(args…)` compiled for the chosen
/// level. `$body_fn` must be `#[inline(always)]` so its loops are vectorized inside each wrapper. With
/// `=> fma $body_fn`, the body is generic over [`MulAdd`] and gets [`Fused`] on AVX2/AVX-512. Exported (as
/// `embedkit_cpu::elementwise::multiversion`) so training's fused ops dispatch the same way.
#[macro_export]
#[doc(hidden)]
macro_rules! multiversion {
    ($name:ident($($arg:ident : $ty:ty),* $(,)?) => fma $body_fn:ident) => {
        pub(crate) fn $name(level: $crate::SimdLevel, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body_fn::<$crate::elementwise::Fused>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body_fn::<$crate::elementwise::Fused>($($arg),*)
                }
                match level {
                    // SAFETY: a SimdLevel above Baseline only comes from SimdLevel::supported()/capped(), i.e.
                    // the CPU has these features.
                    $crate::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::SimdLevel::Baseline => {}
                }
            }
            let _ = level;
            $body_fn::<$crate::elementwise::Unfused>($($arg),*)
        }
    };
    ($name:ident($($arg:ident : $ty:ty),* $(,)?) => $body_fn:path) => {
        pub(crate) fn $name(level: $crate::SimdLevel, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body_fn($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body_fn($($arg),*)
                }
                match level {
                    // SAFETY: a SimdLevel above Baseline only comes from SimdLevel::supported()/capped(), i.e.
                    // the CPU has these features.
                    $crate::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::SimdLevel::Baseline => {}
                }
            }
            let _ = level;
            $body_fn($($arg),*)
        }
    };
}

pub(crate) use crate::multiversion;
