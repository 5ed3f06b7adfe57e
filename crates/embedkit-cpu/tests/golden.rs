//! all-MiniLM-L6-v2 and all-mpnet-base-v2 against vectors sentence-transformers computed
//! (tests/fixtures/golden, made by tools/make_golden.py). The models are fetched once into EMBEDKIT_HOME.

mod common;

use common::*;
use embedkit_core::{Embedder, EncodeOptions};

fn check_model(name: &str) {
    let golden = read_json(&format!("golden/{name}.json"));
    let texts = strings(&golden["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let model = load_catalog(name);

    // Token ids equal the Python tokenizer's.
    let want_ids = id_rows(&golden["token_ids"]);
    for (i, t) in texts.iter().enumerate() {
        let got = model
            .embed_tokens(&[t.as_str()], &EncodeOptions::default())
            .unwrap();
        assert_eq!(
            got[0].token_ids, want_ids[i],
            "{name}: token ids of text {i}"
        );
    }

    // Default options, the whole list as one batch of 64.
    let batched = model
        .embed(
            &refs,
            &EncodeOptions {
                batch_size: Some(64),
                ..Default::default()
            },
        )
        .unwrap();
    let want = matrix(&golden["embeddings"]);
    let rows: Vec<&[f32]> = batched.iter().collect();
    assert_rows_match(&format!("{name} batch"), &texts, &rows, &want, 0.9999, 1e-4);

    // Each text alone equals the same text inside a batch of 64 (other texts around it).
    let mut batch64: Vec<&str> = Vec::new();
    while batch64.len() < 64 {
        batch64.extend(refs.iter().take(64 - batch64.len()));
    }
    let in64 = model
        .embed(
            &batch64,
            &EncodeOptions {
                batch_size: Some(64),
                ..Default::default()
            },
        )
        .unwrap();
    let mut worst = 0.0f32;
    for (i, t) in refs.iter().enumerate() {
        let alone = model.embed(&[t], &EncodeOptions::default()).unwrap();
        let d = max_abs_diff(alone.row(0), in64.row(i));
        worst = worst.max(d);
        assert!(
            d <= 1e-5,
            "{name}: text {i} alone vs in a batch of 64 differs by {d}"
        );
    }
    eprintln!("{name}: alone vs batch-of-64 max abs diff {worst:e}");

    // Matryoshka: first 128 dims, renormalized (sentence-transformers leaves them unnormalized; same direction).
    let dim = golden["truncate_dim"]["dim"].as_u64().unwrap() as usize;
    let truncated = model
        .embed(
            &refs,
            &EncodeOptions {
                truncate_dim: Some(dim),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(truncated.dims(), dim);
    let want_t = matrix(&golden["truncate_dim"]["embeddings"]);
    for (i, (g, w)) in truncated.iter().zip(&want_t).enumerate() {
        assert!(
            cosine(g, w) >= 0.9999,
            "{name}: truncated text {i}: cosine {}",
            cosine(g, w)
        );
        assert!(
            (norm(g) - 1.0).abs() < 1e-5,
            "{name}: truncated text {i} is not unit length"
        );
    }

    // Without the Normalize module: the raw pooled vectors, magnitudes included.
    let raw = model
        .embed(
            &refs,
            &EncodeOptions {
                normalize: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    let rows: Vec<&[f32]> = raw.iter().collect();
    assert_rows_match(
        &format!("{name} unnormalized"),
        &texts,
        &rows,
        &matrix(&golden["unnormalized"]),
        0.9999,
        1e-4,
    );

    // Token-level vectors.
    let idx: Vec<usize> = golden["token_embeddings"]["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    for (k, &i) in idx.iter().enumerate() {
        let want = matrix(&golden["token_embeddings"]["values"][k]);
        let got = model
            .embed_tokens(&[refs[i]], &EncodeOptions::default())
            .unwrap();
        assert_eq!(
            got[0].vectors.rows(),
            want.len(),
            "{name}: token count of text {i}"
        );
        for (j, (g, w)) in got[0].vectors.iter().zip(&want).enumerate() {
            assert!(
                cosine(g, w) >= 0.9999,
                "{name}: text {i} token {j}: cosine {}",
                cosine(g, w)
            );
        }
    }
}

#[test]
fn all_minilm_l6_v2_matches_sentence_transformers() {
    check_model("all-MiniLM-L6-v2");
}

#[test]
fn all_mpnet_base_v2_matches_sentence_transformers() {
    check_model("all-mpnet-base-v2");
}

/// `--compute int8`: every golden text within cosine `min_cos` of sentence-transformers' f32 vector.
fn check_int8(name: &str, min_cos: f64) {
    use embedkit_cpu::{Compute, CpuOptions};
    let golden = read_json(&format!("golden/{name}.json"));
    let texts = strings(&golden["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = embedkit_sources::resolve(name, &embedkit_sources::SourceConfig::from_env()).unwrap();
    let model = load_dir_with(
        &dir,
        CpuOptions {
            threads: Some(2),
            compute: Compute::Int8,
            ..Default::default()
        },
    );
    let got = model.embed(&refs, &EncodeOptions::default()).unwrap();
    let want = matrix(&golden["embeddings"]);
    let mut worst = (1.0f64, 0);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        if c < worst.0 {
            worst = (c, i);
        }
        assert!(c >= min_cos, "{name} int8: text {i}: cosine {c}");
    }
    eprintln!(
        "{name} int8: worst cosine {:.5} (text {})",
        worst.0, worst.1
    );
}

/// The f32 `gemm` path (batches above the panel kernel's row limit) gives the golden vectors too.
#[test]
fn all_minilm_l6_v2_gemm_path_matches_sentence_transformers() {
    use embedkit_cpu::CpuOptions;
    let name = "all-MiniLM-L6-v2";
    let golden = read_json(&format!("golden/{name}.json"));
    let texts = strings(&golden["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = embedkit_sources::resolve(name, &embedkit_sources::SourceConfig::from_env()).unwrap();
    let want = matrix(&golden["embeddings"]);
    for panel_max_rows in [0, usize::MAX] {
        let model = load_dir_with(
            &dir,
            CpuOptions {
                threads: Some(2),
                panel_max_rows: Some(panel_max_rows),
                ..Default::default()
            },
        );
        let got = model.embed(&refs, &EncodeOptions::default()).unwrap();
        let rows: Vec<&[f32]> = got.iter().collect();
        assert_rows_match(
            &format!("{name} panel_max_rows {panel_max_rows}"),
            &texts,
            &rows,
            &want,
            0.9999,
            1e-4,
        );
    }
}

#[test]
fn all_minilm_l6_v2_int8_stays_close() {
    check_int8("all-MiniLM-L6-v2", 0.99);
}

#[test]
fn all_mpnet_base_v2_int8_stays_close() {
    // Measured worst: 0.982 (a text of one word repeated); MPNet's activations have larger outliers.
    check_int8("all-mpnet-base-v2", 0.98);
}
