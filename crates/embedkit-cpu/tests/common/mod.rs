//! Shared helpers for the model tests: fixtures, model loading, vector comparisons.
#![allow(dead_code)]

use embedkit_cpu::{CpuOptions, SimdLevel};
use embedkit_model::LocalEmbedder;
use std::path::PathBuf;

/// The repository's tests/fixtures folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Reads a JSON fixture.
pub fn read_json(rel: &str) -> serde_json::Value {
    let path = fixtures().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A JSON array of arrays of numbers as f32 rows.
pub fn matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("fixture matrix is an array")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("fixture row is an array")
                .iter()
                .map(|x| x.as_f64().expect("fixture value is a number") as f32)
                .collect()
        })
        .collect()
}

/// A JSON array of arrays of token ids.
pub fn id_rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .expect("fixture ids are an array")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("fixture id row is an array")
                .iter()
                .map(|x| x.as_u64().expect("fixture id is an integer") as u32)
                .collect()
        })
        .collect()
}

/// A JSON array of strings.
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("fixture texts are an array")
        .iter()
        .map(|s| s.as_str().expect("fixture text is a string").to_string())
        .collect()
}

/// Loads a model folder on the CPU backend with `threads` threads.
pub fn load_dir(dir: &std::path::Path, threads: usize) -> LocalEmbedder {
    load_dir_with(
        dir,
        CpuOptions {
            threads: Some(threads),
            ..Default::default()
        },
    )
}

/// Loads a model folder on the CPU backend of its architecture, with explicit options.
pub fn load_dir_with(dir: &std::path::Path, options: CpuOptions) -> LocalEmbedder {
    embedkit_cpu::load_model(&dir.display().to_string(), dir, &options)
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Fetches (once) and loads a catalog model.
pub fn load_catalog(name: &str) -> LocalEmbedder {
    let dir = embedkit_sources::resolve(name, &embedkit_sources::SourceConfig::from_env())
        .unwrap_or_else(|e| panic!("fetching {name}: {e}"));
    load_dir(&dir, 2)
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 && nb == 0.0 {
        return 1.0;
    }
    dot / (na * nb).max(1e-30)
}

/// L2 norm in f64.
pub fn norm(a: &[f32]) -> f64 {
    a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Largest absolute component difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts every row of `got` matches `want`: cosine ≥ `min_cos` and the same length to `rel_norm`.
pub fn assert_rows_match(
    what: &str,
    texts: &[String],
    got: &[&[f32]],
    want: &[Vec<f32>],
    min_cos: f64,
    rel_norm: f64,
) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let mut worst = (1.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let c = cosine(g, w);
        if c < worst.0 {
            worst = (c, i);
        }
        assert!(
            c >= min_cos,
            "{what}: text {i} {:?}: cosine {c:.7} < {min_cos}",
            texts.get(i).map(|t| t.chars().take(40).collect::<String>())
        );
        let (ng, nw) = (norm(g), norm(w));
        assert!(
            (ng - nw).abs() <= rel_norm * nw.max(1e-6),
            "{what}: text {i}: norm {ng} vs {nw}"
        );
    }
    eprintln!("{what}: worst cosine {:.8} (text {})", worst.0, worst.1);
}

/// Whether `--compute bf16` can run here: AVX512_BF16 on a CPU the engine runs at the AVX-512 level.
pub fn has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && SimdLevel::detect() == SimdLevel::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
