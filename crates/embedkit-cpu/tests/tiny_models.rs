//! Code paths no real model here exercises — XLM-RoBERTa, MPNet, every pooling mode, Dense, prompts,
//! vocab.txt tokenizers, sharded weights, short max_seq_length — on tiny random-weight models whose
//! sentence-transformers outputs are in tests/fixtures/tiny (made by tools/make_tiny_models.py).

mod common;

use common::*;
use embedkit_core::{Embedder, EncodeOptions};

fn expected() -> serde_json::Value {
    read_json("tiny/expected.json")
}

/// Embeds the fixture texts with `options` and checks them against `want` (direction and magnitude).
fn check(name: &str, what: &str, options: EncodeOptions, want: &serde_json::Value) {
    let exp = expected();
    let texts = strings(&exp["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let model = load_dir(&fixtures().join("tiny").join(name), 1);
    let got = model
        .embed(
            &refs,
            &EncodeOptions {
                batch_size: Some(4),
                ..options
            },
        )
        .unwrap();
    let rows: Vec<&[f32]> = got.iter().collect();
    assert_rows_match(
        &format!("{name} {what}"),
        &texts,
        &rows,
        &matrix(want),
        0.9999,
        1e-4,
    );
}

fn check_default(name: &str) {
    let exp = expected();
    let m = &exp["models"][name];
    assert!(m.is_object(), "no fixture for {name}");
    let texts = strings(&exp["texts"]);
    let model = load_dir(&fixtures().join("tiny").join(name), 2);
    assert_eq!(
        model.dims(),
        m["dim"].as_u64().unwrap() as usize,
        "{name}: dims"
    );
    let want_ids = id_rows(&m["token_ids"]);
    for (i, t) in texts.iter().enumerate() {
        let got = model
            .embed_tokens(&[t.as_str()], &EncodeOptions::default())
            .unwrap();
        assert_eq!(
            got[0].token_ids, want_ids[i],
            "{name}: token ids of text {i} {t:?}"
        );
    }
    check(name, "default", EncodeOptions::default(), &m["embeddings"]);
}

#[test]
fn bert_mean_normalize() {
    check_default("bert-mean");
}

#[test]
fn pooling_cls() {
    check_default("bert-cls");
}

#[test]
fn pooling_max() {
    check_default("bert-max");
}

#[test]
fn pooling_lasttoken() {
    check_default("bert-lasttoken");
}

#[test]
fn pooling_mean_sqrt_len_tokens() {
    check_default("bert-mean-sqrt");
}

#[test]
fn pooling_weightedmean() {
    check_default("bert-weightedmean");
}

#[test]
fn dense_tanh_then_normalize() {
    check_default("bert-dense");
}

#[test]
fn dense_identity_without_bias() {
    check_default("bert-dense-identity");
}

#[test]
fn vocab_txt_fallback_tokenizer() {
    check_default("bert-uncased-vocabtxt");
}

#[test]
fn sharded_safetensors() {
    check_default("bert-sharded");
}

#[test]
fn max_seq_length_truncates() {
    check_default("bert-maxlen");
}

#[test]
fn mpnet_relative_positions() {
    check_default("mpnet-mean");
}

#[test]
fn xlm_roberta_mean_and_token_vectors() {
    check_default("xlmr-mean");
    let exp = expected();
    let texts = strings(&exp["texts"]);
    let model = load_dir(&fixtures().join("tiny/xlmr-mean"), 2);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let got = model
        .embed_tokens(&refs, &EncodeOptions::default())
        .unwrap();
    for (i, t) in got.iter().enumerate() {
        let want = matrix(&exp["models"]["xlmr-mean"]["token_embeddings"][i]);
        assert_eq!(t.vectors.rows(), want.len(), "text {i}: token count");
        for (j, (g, w)) in t.vectors.iter().zip(&want).enumerate() {
            assert!(
                cosine(g, w) >= 0.9999,
                "text {i} token {j}: cosine {}",
                cosine(g, w)
            );
            assert!(max_abs_diff(g, w) < 1e-4, "text {i} token {j}");
        }
    }
}

#[test]
fn xlm_roberta_cls() {
    check_default("xlmr-cls");
}

#[test]
fn prompts_default_named_and_none() {
    let exp = expected();
    let m = &exp["models"]["bert-prompts"];
    check_default("bert-prompts");
    check(
        "bert-prompts",
        "prompt_name=passage",
        EncodeOptions {
            prompt_name: Some("passage".into()),
            ..Default::default()
        },
        &m["prompt_passage"],
    );
    check(
        "bert-prompts",
        "prompt=\"\"",
        EncodeOptions {
            prompt: Some(String::new()),
            ..Default::default()
        },
        &m["prompt_none"],
    );
    // A literal prompt equal to the named one gives the same vectors.
    check(
        "bert-prompts",
        "prompt=\"passage: \"",
        EncodeOptions {
            prompt: Some("passage: ".into()),
            ..Default::default()
        },
        &m["prompt_passage"],
    );
}

#[test]
fn prompts_excluded_from_pooling() {
    let exp = expected();
    let m = &exp["models"]["bert-prompts-exclude"];
    check_default("bert-prompts-exclude");
    check(
        "bert-prompts-exclude",
        "prompt_name=passage",
        EncodeOptions {
            prompt_name: Some("passage".into()),
            ..Default::default()
        },
        &m["prompt_passage"],
    );
}

#[test]
fn unknown_prompt_name_is_a_clear_error() {
    let model = load_dir(&fixtures().join("tiny/bert-prompts"), 1);
    let err = model
        .embed(
            &["x"],
            &EncodeOptions {
                prompt_name: Some("nope".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'nope' is not one of the model's prompts"),
        "{err}"
    );
    assert!(err.contains("passage") && err.contains("query"), "{err}");
}

#[test]
fn max_length_option_truncates_like_the_tokenizer() {
    let model = load_dir(&fixtures().join("tiny/bert-mean"), 1);
    let long = "word ".repeat(200);
    let full = model
        .embed_tokens(&[long.as_str()], &EncodeOptions::default())
        .unwrap();
    let short = model
        .embed_tokens(
            &[long.as_str()],
            &EncodeOptions {
                max_length: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(full[0].token_ids.len(), 64);
    assert_eq!(short[0].token_ids.len(), 10);
    // Same [CLS] and content prefix, and the closing [SEP] kept.
    assert_eq!(short[0].token_ids[..9], full[0].token_ids[..9]);
    assert_eq!(short[0].token_ids.last(), full[0].token_ids.last());
    // A max_length above the model's limit is capped at the limit, not an error.
    let capped = model
        .embed_tokens(
            &[long.as_str()],
            &EncodeOptions {
                max_length: Some(10_000),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(capped[0].token_ids.len(), 64);
}

#[test]
fn thread_counts_agree() {
    let exp = expected();
    let texts = strings(&exp["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let one = load_dir(&fixtures().join("tiny/mpnet-mean"), 1)
        .embed(&refs, &EncodeOptions::default())
        .unwrap();
    let two = load_dir(&fixtures().join("tiny/mpnet-mean"), 2)
        .embed(&refs, &EncodeOptions::default())
        .unwrap();
    assert!(max_abs_diff(one.as_slice(), two.as_slice()) <= 1e-6);
}

#[test]
fn truncate_dim_out_of_range_is_rejected() {
    let model = load_dir(&fixtures().join("tiny/bert-mean"), 1);
    for bad in [0, 33] {
        let err = model
            .embed(
                &["x"],
                &EncodeOptions {
                    truncate_dim: Some(bad),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncate_dim") && err.contains("1..=32"),
            "{err}"
        );
    }
}

/// Every instruction-set level the element-wise kernels can run at gives the same vectors, so a machine without
/// AVX-512 (or without AVX2) computes what this one does.
#[test]
fn every_simd_level_matches_sentence_transformers() {
    use embedkit_cpu::{CpuOptions, SimdLevel};
    let exp = expected();
    let texts = strings(&exp["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for level in [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512] {
        if SimdLevel::capped(level) != level {
            eprintln!("{level:?} is not supported here; skipping it");
            continue;
        }
        for name in ["bert-mean", "mpnet-mean", "xlmr-mean", "bert-dense"] {
            let model = load_dir_with(
                &fixtures().join("tiny").join(name),
                CpuOptions {
                    threads: Some(2),
                    simd: Some(level),
                    ..Default::default()
                },
            );
            let got = model.embed(&refs, &EncodeOptions::default()).unwrap();
            let rows: Vec<&[f32]> = got.iter().collect();
            assert_rows_match(
                &format!("{name} at {level:?}"),
                &texts,
                &rows,
                &matrix(&exp["models"][name]["embeddings"]),
                0.9999,
                1e-4,
            );
        }
    }
}

/// A backend reuses its activation buffers between batches: a batch after a larger one (longer texts, more
/// of them) must give the same vectors, to the bit, as on a fresh backend, in every compute mode the CPU has
/// (bf16 only with AVX512_BF16), so no kernel reads what an earlier batch left behind.
#[test]
fn batches_after_larger_ones_match_a_fresh_backend() {
    use embedkit_cpu::{Compute, CpuOptions};
    let dir = fixtures().join("tiny").join("bert-mean");
    let long = "a longer text that the tokenizer splits into many more word pieces than the short ones below, "
        .repeat(3);
    let large: Vec<&str> = vec![long.as_str(); 9];
    let small = ["one", "two words", "a third short text"];
    let options = EncodeOptions {
        batch_size: Some(16),
        ..Default::default()
    };
    let mut modes = vec![Compute::F32, Compute::Int8];
    if has_bf16() {
        modes.push(Compute::Bf16);
    }
    for compute in modes {
        let load = || {
            load_dir_with(
                &dir,
                CpuOptions {
                    threads: Some(2),
                    compute,
                    ..Default::default()
                },
            )
        };
        let fresh = load().embed(&small, &options).unwrap();
        let reused = load();
        reused.embed(&large, &options).unwrap();
        let after = reused.embed(&small, &options).unwrap();
        let (fresh, after): (Vec<&[f32]>, Vec<&[f32]>) =
            (fresh.iter().collect(), after.iter().collect());
        assert_eq!(fresh, after, "{compute:?}: vectors after a larger batch");
    }
}
