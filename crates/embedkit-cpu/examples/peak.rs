//! The arithmetic ceiling of this CPU: f32 FMA (AVX-512 and AVX2), int8 VNNI, bf16 and AMX tile throughput of
//! register-only loops on every core at once, to read the engine's speed against (a GEMM cannot beat these).
//! `embedkit bench` measures the same loops ([`embedkit_cpu::peak`]) beside the models.
//!
//! ```sh
//! cargo run --release -p embedkit-cpu --example peak -- [threads]
//! ```

fn main() {
    let threads = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let p = embedkit_cpu::peak::measure(threads);
    let rows = [
        ("f32 FMA, AVX-512", p.f32_avx512_gflops, "FLOP"),
        ("f32 FMA, AVX2", p.f32_avx2_gflops, "FLOP"),
        ("int8 VNNI (u8×i8 MAC)", p.int8_vnni_gmacs, "MAC"),
        ("bf16 (vdpbf16ps)", p.bf16_gflops, "FLOP"),
        ("bf16 AMX (tdpbf16ps)", p.amx_bf16_gflops, "FLOP"),
        ("int8 AMX (tdpbusd MAC)", p.amx_int8_gmacs, "MAC"),
    ];
    for (name, rate, unit) in rows {
        match rate {
            Some(r) => println!(
                "{name:<24} {threads} threads: {r:8.1} G{unit}/s ({:.1} per thread)",
                r / threads as f64
            ),
            None => println!(
                "{name:<24} not supported by this CPU (AMX: {})",
                embedkit_cpu::amx::status()
            ),
        }
    }
}
