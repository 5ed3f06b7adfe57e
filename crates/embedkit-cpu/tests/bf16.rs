//! `--compute bf16`: on CPUs with AVX512_BF16, every golden text within cosine 0.999 of the f32 engine's vector
//! and of sentence-transformers'; elsewhere (or with `EMBEDKIT_SIMD` capped below AVX-512) a clear error at
//! load instead of a crash.

mod common;

use common::*;
use embedkit_core::{Embedder, EncodeOptions};
use embedkit_cpu::{Compute, CpuOptions, SimdLevel};

fn options(compute: Compute) -> CpuOptions {
    CpuOptions {
        threads: Some(2),
        compute,
        ..Default::default()
    }
}

fn check_bf16(name: &str) {
    let dir = embedkit_sources::resolve(name, &embedkit_sources::SourceConfig::from_env()).unwrap();
    if !has_bf16() {
        let err = embedkit_cpu::load_model(name, &dir, &options(Compute::Bf16))
            .err()
            .expect("bf16 must be refused on a CPU without AVX512_BF16");
        let msg = format!("{err}");
        assert!(msg.contains("AVX512_BF16"), "unclear error: {msg}");
        eprintln!("{name}: no AVX512_BF16 here, refused with: {msg}");
        return;
    }
    let golden = read_json(&format!("golden/{name}.json"));
    let texts = strings(&golden["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let opts = EncodeOptions::default();
    let f32_vecs = load_dir_with(&dir, options(Compute::F32))
        .embed(&refs, &opts)
        .unwrap();
    let bf16 = load_dir_with(&dir, options(Compute::Bf16));
    let got = bf16.embed(&refs, &opts).unwrap();
    let want = matrix(&golden["embeddings"]);
    let (mut worst_engine, mut worst_st) = (1.0f64, 1.0f64);
    for (i, ((g, f), w)) in got.iter().zip(f32_vecs.iter()).zip(&want).enumerate() {
        let (ce, cs) = (cosine(g, f), cosine(g, w));
        worst_engine = worst_engine.min(ce);
        worst_st = worst_st.min(cs);
        assert!(
            ce >= 0.999,
            "{name} bf16 vs f32 engine: text {i}: cosine {ce}"
        );
        assert!(
            cs >= 0.999,
            "{name} bf16 vs sentence-transformers: text {i}: cosine {cs}"
        );
    }
    // A text alone gives its vector inside the batch (one layout for every batch size).
    let alone = bf16.embed(&refs[..1], &opts).unwrap();
    assert!(max_abs_diff(alone.iter().next().unwrap(), got.iter().next().unwrap()) < 1e-5);
    eprintln!(
        "{name} bf16: worst cosine {worst_engine:.5} to the f32 engine, {worst_st:.5} to sentence-transformers"
    );
}

#[test]
fn all_minilm_l6_v2_bf16_stays_close() {
    check_bf16("all-MiniLM-L6-v2");
}

#[test]
fn all_mpnet_base_v2_bf16_stays_close() {
    check_bf16("all-mpnet-base-v2");
}

#[test]
fn bf16_is_refused_below_avx512() {
    let dir = embedkit_sources::resolve(
        "all-MiniLM-L6-v2",
        &embedkit_sources::SourceConfig::from_env(),
    )
    .unwrap();
    let opts = CpuOptions {
        simd: Some(SimdLevel::Avx2),
        ..options(Compute::Bf16)
    };
    let err = embedkit_cpu::load_model("all-MiniLM-L6-v2", &dir, &opts)
        .err()
        .expect("bf16 capped at AVX2 must be refused");
    assert!(format!("{err}").contains("--compute bf16 needs"), "{err}");
}
