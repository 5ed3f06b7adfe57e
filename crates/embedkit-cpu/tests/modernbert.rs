//! ModernBERT on the CPU engine against sentence-transformers: tiny random-weight copies of
//! gte-modernbert-base (CLS pooling, hub-form config.json) and modernbert-embed-base (mean pooling, prompts,
//! transformers-5 config.json), made by tools/make_tiny_modernbert.py. Their window is ±8 tokens, so the
//! longer texts (up to 279 tokens) go through the sliding-window attention.

mod common;

use common::*;
use embedkit_core::{Embedder, EncodeOptions};
use embedkit_cpu::{Compute, CpuOptions};
use embedkit_model::LocalEmbedder;

fn expected() -> serde_json::Value {
    read_json("tiny/modernbert-expected.json")
}

/// Every fixture text: the last is the 8,192-token one (seconds per pass in a debug build).
const ALL: usize = 20;
/// All but the 8,192-token text.
const SHORT: usize = ALL - 1;

fn load(name: &str, compute: Compute, threads: usize) -> LocalEmbedder {
    let dir = fixtures().join("tiny").join(name);
    let options = CpuOptions {
        compute,
        threads: Some(threads),
        ..Default::default()
    };
    embedkit_cpu::load_model(name, &dir, &options)
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Embeds the first `n` fixture texts and compares them with sentence-transformers' `want` at `min_cos`.
fn check(
    n: usize,
    model: &LocalEmbedder,
    what: &str,
    options: EncodeOptions,
    want: &serde_json::Value,
    min_cos: f64,
) {
    let exp = expected();
    let texts = strings(&exp["texts"]);
    let refs: Vec<&str> = texts.iter().take(n).map(String::as_str).collect();
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
    let rel_norm = if min_cos >= 0.9999 { 1e-4 } else { 1e-2 };
    let want = &matrix(want)[..n];
    assert_rows_match(what, &texts, &rows, want, min_cos, rel_norm);
}

/// Token ids (special tokens included) of every text with the prompt `prompt_name`, against the fixture's:
/// the model's tokenizer as `embed` uses it, without running the model.
fn check_ids(model: &LocalEmbedder, prompt_name: Option<&str>, want: &serde_json::Value) {
    let exp = expected();
    let prompt = prompt_name.map_or(String::new(), |p| model.layout().prompts[p].clone());
    let texts: Vec<String> = strings(&exp["texts"])
        .iter()
        .map(|t| format!("{prompt}{t}"))
        .collect();
    let got = model.tokenizer().encode_batch(&texts, None).unwrap();
    for (i, (g, w)) in got.iter().zip(id_rows(want)).enumerate() {
        assert_eq!(g.ids, w, "token ids of text {i} ({prompt_name:?})");
    }
}

#[test]
fn gte_modernbert_cls_f32() {
    let exp = expected();
    let m = &exp["models"]["modernbert-gte"];
    let model = load("modernbert-gte", Compute::F32, 2);
    assert_eq!(model.dims(), 64);
    assert_eq!(model.tokenizer().max_length(), 8192);
    let info = model.info();
    assert_eq!(info.architecture, "ModernBERT");
    assert_eq!(info.pooling, "cls");
    check_ids(&model, None, &m["token_ids"]);
    check(
        ALL,
        &model,
        "gte f32",
        EncodeOptions::default(),
        &m["embeddings"],
        0.9999,
    );
}

#[test]
fn modernbert_embed_mean_prompts_f32() {
    let exp = expected();
    let m = &exp["models"]["modernbert-embed"];
    let model = load("modernbert-embed", Compute::F32, 1);
    check_ids(&model, None, &m["token_ids"]);
    check_ids(&model, Some("query"), &m["token_ids_prompt_query"]);
    check(
        ALL,
        &model,
        "embed f32",
        EncodeOptions::default(),
        &m["embeddings"],
        0.9999,
    );
    for prompt in ["query", "document"] {
        check(
            SHORT,
            &model,
            &format!("embed f32 prompt {prompt}"),
            EncodeOptions {
                prompt_name: Some(prompt.into()),
                ..Default::default()
            },
            &m[format!("prompt_{prompt}")],
            0.9999,
        );
    }
}

#[test]
fn int8_stays_close() {
    let exp = expected();
    for name in ["modernbert-gte", "modernbert-embed"] {
        let model = load(name, Compute::Int8, 2);
        check(
            SHORT,
            &model,
            &format!("{name} int8"),
            EncodeOptions::default(),
            &exp["models"][name]["embeddings"],
            0.99,
        );
    }
}

#[test]
fn a_text_alone_equals_it_in_a_batch() {
    let exp = expected();
    let texts = strings(&exp["texts"]);
    assert_eq!(texts.len(), ALL);
    // The long text through one model; both models on the rest.
    for (name, n) in [("modernbert-gte", ALL), ("modernbert-embed", SHORT)] {
        let refs: Vec<&str> = texts.iter().take(n).map(String::as_str).collect();
        let model = load(name, Compute::F32, 2);
        let batched = model
            .embed(
                &refs,
                &EncodeOptions {
                    batch_size: Some(32),
                    ..Default::default()
                },
            )
            .unwrap();
        for (i, t) in refs.iter().enumerate() {
            let alone = model.embed(&[t], &EncodeOptions::default()).unwrap();
            let d = max_abs_diff(alone.row(0), batched.row(i));
            assert!(
                d <= 1e-5,
                "{name}: text {i}: alone vs batch of {} differ by {d}",
                refs.len()
            );
        }
    }
}

#[test]
fn sliding_layers_follow_the_config() {
    // The hub's global_attn_every_n_layers and transformers 5's layer_types give the same pattern.
    let exp = expected();
    for name in ["modernbert-gte", "modernbert-embed"] {
        let model = load(name, Compute::F32, 1);
        let mb = model
            .config()
            .modernbert
            .clone()
            .expect("a ModernBERT config");
        let want: Vec<bool> = exp["models"][name]["sliding_layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        assert_eq!(mb.sliding_layers, want, "{name}");
        assert_eq!(mb.window, 8, "{name}");
    }
}
