//! Intel AMX (Advanced Matrix Extensions) tiles for the bf16 and int8 linear layers.
//!
//! Where the CPU has AMX (Sapphire Rapids and later Xeons), one `tdpbf16ps` multiplies a 16 × 32 bf16 tile
//! by a 32 × 16 one into 16 × 16 f32 accumulators, and one `tdpbusd` a 16 × 64 u8 tile by a 64 × 16 i8 one
//! into i32: the `peak` loops measure about 16× the f32 FLOP rate of AVX-512 FMAs for bf16 on the AMX Xeon
//! this was written on (3.8 TFLOP/s against 240 GFLOP/s per core). On such a CPU `vdpbf16ps` runs at about
//! half the FMA rate, so AVX512_BF16 alone makes bf16 *slower* than f32; the tiles are what make
//! `--compute bf16` worth having there, and they speed up `--compute int8` as well.
//!
//! The weight layouts of [`crate::bf16`] (pairs of `k` in 32-bit words, 64 columns per panel row) and
//! [`crate::int8`] (quads of `k` per 32-bit lane, 16 columns per block row) are already the "VNNI" layout the
//! tiles' B operand wants, so the tiles read the same packed weights as the AVX-512 kernels with a row stride:
//! no second copy. Activations are row-major (bf16 pairs or u8 codes), which is the A operand's layout.
//!
//! Rust has no stable AMX intrinsics (`x86_amx_intrinsics` is unstable), so the few instructions are written
//! as inline assembly. The tile registers are invisible to the compiler, which never emits AMX code itself,
//! so state kept in them between `asm!` blocks of one task is safe. Linux gives a process the 8 KiB of tile
//! state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); [`available`] asks once,
//! and a refusal (old kernel, other OS, a hypervisor that hides the state) leaves the AVX-512 kernels in use.
//! `EMBEDKIT_AMX=off` turns the tiles off (for comparisons), and so does capping `EMBEDKIT_SIMD` below
//! AVX-512.

use std::sync::OnceLock;

/// Whether the AMX kernels run here, and if not, why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmxStatus {
    /// The CPU has AMX-BF16 and AMX-INT8 and the kernel granted the tile state: the bf16 and int8 linear
    /// layers run on tiles.
    On,
    /// The CPU lacks the AMX instructions.
    Absent,
    /// Turned off by `EMBEDKIT_AMX=off` or by `EMBEDKIT_SIMD` capped below AVX-512.
    Disabled,
    /// The CPU has AMX, but the operating system did not grant the tile state (the error number).
    Refused(i32),
}

impl std::fmt::Display for AmxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::On => f.write_str("on (AMX-BF16, AMX-INT8 tiles)"),
            Self::Absent => f.write_str("absent"),
            Self::Disabled => f.write_str("off (EMBEDKIT_AMX=off or EMBEDKIT_SIMD below avx512)"),
            Self::Refused(errno) => write!(f, "refused by the kernel (errno {errno})"),
        }
    }
}

/// Whether the AMX tiles run here: checked once per process, and the tile state requested from Linux then.
pub fn status() -> AmxStatus {
    static STATUS: OnceLock<AmxStatus> = OnceLock::new();
    *STATUS.get_or_init(detect)
}

/// Whether the AMX kernels can run (see [`status`]).
pub(crate) fn available() -> bool {
    status() == AmxStatus::On
}

fn detect() -> AmxStatus {
    let off = std::env::var("EMBEDKIT_AMX")
        .map(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "off" | "false" | "no"
            )
        })
        .unwrap_or(false);
    if off || crate::SimdLevel::detect() != crate::SimdLevel::Avx512 {
        return if cpu_has_amx() {
            AmxStatus::Disabled
        } else {
            AmxStatus::Absent
        };
    }
    if !cpu_has_amx() {
        return AmxStatus::Absent;
    }
    request_tile_state()
}

/// CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE, bit 25 AMX-INT8 (`is_x86_feature_detected!` does not
/// take the AMX names on stable Rust).
fn cpu_has_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        // Leaf 7 is valid when leaf 0 reports a maximum leaf of at least 7.
        if __cpuid_count(0, 0).eax < 7 {
            return false;
        }
        let edx = __cpuid_count(7, 0).edx;
        let bits = (1 << 22) | (1 << 24) | (1 << 25);
        edx & bits == bits
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Asks Linux for the tile data state (process-wide, needed before the first tile instruction on any thread).
fn request_tile_state() -> AmxStatus {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes two integers and touches no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        if rc == 0 {
            AmxStatus::On
        } else {
            AmxStatus::Refused(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        AmxStatus::Refused(0)
    }
}

/// Rows (and 32-bit result columns) of one block computed by [`block`]: 2 × 2 tiles of 16 × 16.
pub(crate) const BLOCK: usize = 32;
/// Bytes of `k` one tile step consumes from each row of A: 32 bf16 values or 64 u8 codes.
pub(crate) const STEP_BYTES: usize = 64;

/// Which tile dot product a block runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dot {
    /// `tdpbf16ps`: bf16 pairs into f32.
    Bf16,
    /// `tdpbusd`: u8 × i8 quads into i32.
    U8I8,
}

/// The tile configuration of this thread, loaded for one task and released when dropped (so a rayon thread
/// does not keep 8 KiB of live tile state, which every context switch would then save).
pub(crate) struct Tiles(());

/// Palette 1 with all eight tiles 16 rows × 64 bytes: tiles 0–3 accumulate, 4–5 hold A, 6–7 hold B.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl Tiles {
    /// Loads the configuration.
    ///
    /// # Safety
    /// [`available`] must have returned true (the CPU has AMX and the process holds the tile state).
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn load() -> Self {
        let mut config = TileConfig([0; 64]);
        config.0[0] = 1;
        for tile in 0..8 {
            config.0[16 + 2 * tile] = 64;
            config.0[48 + tile] = 16;
        }
        // SAFETY: a valid palette-1 configuration; AMX is available (the caller's promise).
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        }
        Self(())
    }

    /// `out[32 × 32] = A[32 × K]·B[K × 32]` over `steps` tile steps, as 32-bit results (f32 for
    /// [`Dot::Bf16`], i32 for [`Dot::U8I8`]) in row-major order.
    ///
    /// A: rows `a_stride` bytes apart, starting at `a`; step `s` reads bytes `s·64 .. s·64 + 64` of each row.
    /// B: the two 16-column tiles start at `b0` and `b1`, their rows `b_stride` bytes apart; step `s` reads
    /// the 16 rows starting at `s · b_step` bytes past them.
    ///
    /// # Safety
    /// AMX is available and this thread loaded [`Tiles::load`]; every byte the steps read is inside its
    /// buffer (32 rows of A, 16 · steps rows of each B tile); `out` is 32 × 32 values.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) unsafe fn block(
        &self,
        dot: Dot,
        a: *const u8,
        a_stride: usize,
        b0: *const u8,
        b1: *const u8,
        b_stride: usize,
        b_step: usize,
        steps: usize,
        out: &mut [u32; BLOCK * BLOCK],
    ) {
        use std::arch::asm;
        // SAFETY (all blocks below): the caller's promises; tiles 0–7 are configured 16 × 64 bytes.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            let a_low = a.add(16 * a_stride);
            for s in 0..steps {
                let (ka, kb) = (s * STEP_BYTES, s * b_step);
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    a0 = in(reg) a.add(ka),
                    a1 = in(reg) a_low.add(ka),
                    b0 = in(reg) b0.add(kb),
                    b1 = in(reg) b1.add(kb),
                    sa = in(reg) a_stride,
                    sb = in(reg) b_stride,
                    options(nostack, readonly)
                );
                products(dot);
            }
            let o = out.as_mut_ptr() as *mut u8;
            // Row-major 32 × 32: tile (i, j) starts at row 16·i, column 16·j; rows are 128 bytes apart.
            asm!(
                "tilestored [{o00} + {s}*1], tmm0",
                "tilestored [{o01} + {s}*1], tmm1",
                "tilestored [{o10} + {s}*1], tmm2",
                "tilestored [{o11} + {s}*1], tmm3",
                o00 = in(reg) o,
                o01 = in(reg) o.add(64),
                o10 = in(reg) o.add(16 * 128),
                o11 = in(reg) o.add(16 * 128 + 64),
                s = in(reg) 128usize,
                options(nostack)
            );
        }
    }
}

/// The block's four tile products: accumulators 0–3 += A tiles 4–5 × B tiles 6–7.
///
/// # Safety
/// AMX is available and this thread loaded [`Tiles::load`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn products(dot: Dot) {
    use std::arch::asm;
    // SAFETY: the caller's promise; the instructions touch tile registers only.
    unsafe {
        match dot {
            Dot::Bf16 => asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            ),
            Dot::U8I8 => asm!(
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                options(nostack, nomem)
            ),
        }
    }
}

/// `iters` × four tile products on tiles already in registers (the peak loop of [`crate::peak`]); returns
/// one accumulated value so the work is not removed.
///
/// # Safety
/// [`available`] must have returned true.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn peak_loop(dot: Dot, iters: u64) -> f64 {
    use std::arch::asm;
    let ones = [0x3f80_3f80u32; 256];
    let mut out = [0u32; BLOCK * BLOCK];
    // SAFETY: the caller's promise; `ones` is one 1 KiB tile (16 rows × 64 bytes), `out` 32 × 32 values.
    unsafe {
        let tiles = Tiles::load();
        asm!(
            "tileloadd tmm4, [{p} + {s}*1]",
            "tileloadd tmm5, [{p} + {s}*1]",
            "tileloadd tmm6, [{p} + {s}*1]",
            "tileloadd tmm7, [{p} + {s}*1]",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            p = in(reg) ones.as_ptr(),
            s = in(reg) 64usize,
            options(nostack, readonly)
        );
        for _ in 0..iters {
            products(dot);
        }
        let o = out.as_mut_ptr() as *mut u8;
        asm!(
            "tilestored [{o} + {s}*1], tmm0",
            o = in(reg) o,
            s = in(reg) 128usize,
            options(nostack)
        );
        drop(tiles);
    }
    out[0] as f64
}

impl Drop for Tiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Tiles` exists only after `load` succeeded on this thread.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One block of each dot product against plain integer/float arithmetic (exact: small integers).
    #[test]
    fn block_matches_scalar_products() {
        if !available() {
            eprintln!("skipped: AMX is {}", status());
            return;
        }
        let steps = 3;
        let k = steps * STEP_BYTES;
        // u8 × i8: A 32 rows × k bytes; B in quads: row q of a tile holds 16 columns × 4 bytes.
        let a: Vec<u8> = (0..BLOCK * k).map(|i| (i * 37 % 251) as u8).collect();
        let b: Vec<i8> = (0..k * BLOCK)
            .map(|i| ((i * 53 % 255) as i32 - 127) as i8)
            .collect();
        // b as [k/4][32 columns][4]: the two 16-column tiles are 64 bytes apart within a 128-byte row.
        let mut out = [0u32; BLOCK * BLOCK];
        // SAFETY: available() checked; buffers sized for `steps` steps.
        unsafe {
            let tiles = Tiles::load();
            let bp = b.as_ptr() as *const u8;
            tiles.block(
                Dot::U8I8,
                a.as_ptr(),
                k,
                bp,
                bp.add(64),
                128,
                16 * 128,
                steps,
                &mut out,
            );
        }
        for r in 0..BLOCK {
            for c in 0..BLOCK {
                let want: i32 = (0..k)
                    .map(|i| a[r * k + i] as i32 * b[(i / 4) * 128 + c * 4 + i % 4] as i32)
                    .sum();
                assert_eq!(out[r * BLOCK + c] as i32, want, "u8i8 [{r},{c}]");
            }
        }
        // bf16: small integers are exact in bf16 and their sums exact in f32.
        let bf = |v: f32| (v.to_bits() >> 16) as u16;
        let av: Vec<f32> = (0..BLOCK * k / 2).map(|i| (i % 7) as f32 - 3.0).collect();
        let bv: Vec<f32> = (0..k / 2 * BLOCK).map(|i| (i % 5) as f32 - 2.0).collect();
        let a16: Vec<u16> = av.iter().map(|&v| bf(v)).collect();
        let b16: Vec<u16> = bv.iter().map(|&v| bf(v)).collect();
        let kb = k / 2;
        // SAFETY: as above; A rows are k bytes (k/2 bf16), B rows 128 bytes (32 columns × a pair).
        unsafe {
            let tiles = Tiles::load();
            let bp = b16.as_ptr() as *const u8;
            tiles.block(
                Dot::Bf16,
                a16.as_ptr() as *const u8,
                k,
                bp,
                bp.add(64),
                128,
                16 * 128,
                steps,
                &mut out,
            );
        }
        for r in 0..BLOCK {
            for c in 0..BLOCK {
                let want: f32 = (0..kb)
                    .map(|i| av[r * kb + i] * bv[(i / 2) * 64 + c * 2 + i % 2])
                    .sum();
                assert_eq!(f32::from_bits(out[r * BLOCK + c]), want, "bf16 [{r},{c}]");
            }
        }
    }
}
