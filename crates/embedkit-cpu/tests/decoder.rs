//! Decoder embedders (Qwen3-Embedding, gte-Qwen2 and e5-mistral style) against sentence-transformers, on tiny
//! random models with bf16 weights made by tools/make_tiny_qwen3.py (tests/fixtures/tiny/qwen3-expected.json).

mod common;

use common::*;
use embedkit_core::{Embedder, EncodeOptions};
use embedkit_cpu::{Compute, CpuOptions, load_model};
use embedkit_model::LocalEmbedder;

const MODELS: [&str; 3] = ["qwen3-embedding", "qwen2-embedding", "mistral-embedding"];

fn expected() -> serde_json::Value {
    read_json("tiny/qwen3-expected.json")
}

fn load(name: &str, compute: Compute, threads: usize) -> LocalEmbedder {
    let dir = fixtures().join("tiny").join(name);
    let options = CpuOptions {
        compute,
        threads: Some(threads),
        ..Default::default()
    };
    load_model(name, &dir, &options).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn options(prompt_name: Option<&str>) -> EncodeOptions {
    EncodeOptions {
        batch_size: Some(4),
        prompt_name: prompt_name.map(str::to_string),
        ..Default::default()
    }
}

/// Token ids (with the appended end token) and vectors, without and with the query prompt.
fn check_model(name: &str, compute: Compute, min_cos: f64, rel_norm: f64) {
    let exp = expected();
    let m = &exp["models"][name];
    assert!(m.is_object(), "no fixture for {name}");
    let texts = strings(&exp["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let model = load(name, compute, 2);
    assert_eq!(model.dims(), m["dim"].as_u64().unwrap() as usize);
    let eos = m["eos_id"].as_u64().unwrap() as u32;
    for (prompt, ids_key, vec_key) in [
        (None, "token_ids", "embeddings"),
        (Some("query"), "query_token_ids", "query_embeddings"),
    ] {
        let want_ids = id_rows(&m[ids_key]);
        let tokens = model.embed_tokens(&refs, &options(prompt)).unwrap();
        for (i, (got, want)) in tokens.iter().zip(&want_ids).enumerate() {
            assert_eq!(
                &got.token_ids, want,
                "{name} {ids_key}: text {i} {:?}",
                texts[i]
            );
            assert_eq!(got.token_ids.last(), Some(&eos), "{name}: end token");
        }
        let got = model.embed(&refs, &options(prompt)).unwrap();
        let rows: Vec<&[f32]> = got.iter().collect();
        assert_rows_match(
            &format!("{name} {vec_key} {compute:?}"),
            &texts,
            &rows,
            &matrix(&m[vec_key]),
            min_cos,
            rel_norm,
        );
    }
}

#[test]
fn qwen3_matches_sentence_transformers() {
    check_model("qwen3-embedding", Compute::F32, 0.9999, 1e-4);
}

#[test]
fn qwen2_with_qkv_biases_matches_sentence_transformers() {
    check_model("qwen2-embedding", Compute::F32, 0.9999, 1e-4);
}

#[test]
fn mistral_matches_sentence_transformers() {
    check_model("mistral-embedding", Compute::F32, 0.9999, 1e-4);
}

#[test]
fn int8_stays_close_to_sentence_transformers() {
    for name in MODELS {
        check_model(name, Compute::Int8, 0.99, 0.02);
    }
}

/// A text's vector does not depend on its batch: unpadded sequences, positions restarting at 0.
#[test]
fn one_text_alone_equals_it_in_a_batch() {
    let exp = expected();
    let texts = strings(&exp["texts"]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for name in MODELS {
        let model = load(name, Compute::F32, 2);
        for prompt in [None, Some("query")] {
            let batch = model
                .embed(
                    &refs,
                    &EncodeOptions {
                        batch_size: Some(refs.len()),
                        ..options(prompt)
                    },
                )
                .unwrap();
            for (i, text) in refs.iter().enumerate() {
                let alone = model.embed(&[text], &options(prompt)).unwrap();
                let diff = max_abs_diff(alone.row(0), batch.row(i));
                assert!(
                    diff <= 1e-5,
                    "{name} {prompt:?}: text {i} {text:?} differs by {diff} alone vs batched"
                );
            }
        }
    }
}

#[test]
fn info_names_architecture_pooling_and_prompts() {
    let model = load("qwen3-embedding", Compute::F32, 1);
    let info = model.info();
    assert_eq!(info.architecture, "Qwen3");
    assert_eq!(info.pooling, "lasttoken");
    assert!(info.normalize);
    assert!(
        info.prompts
            .iter()
            .any(|(k, v)| k == "query" && v.starts_with("Instruct: Given a web search query"))
    );
    assert_eq!(
        load("qwen2-embedding", Compute::F32, 1).info().architecture,
        "Qwen2"
    );
    assert_eq!(
        load("mistral-embedding", Compute::F32, 1)
            .info()
            .architecture,
        "Mistral"
    );
}

/// The BERT-shaped loader refuses a decoder folder with an error that says where to go, not a panic.
#[test]
fn encoder_loader_refuses_a_decoder_clearly() {
    let dir = fixtures().join("tiny").join("qwen3-embedding");
    let err = load_dir_result(&dir)
        .err()
        .expect("a decoder is not BERT-shaped");
    let msg = err.to_string();
    assert!(msg.contains("Qwen3") && msg.contains("load_model"), "{msg}");
}

fn load_dir_result(dir: &std::path::Path) -> Result<LocalEmbedder, embedkit_model::ModelError> {
    use embedkit_cpu::CpuBackend;
    use embedkit_model::Backend;
    LocalEmbedder::load("decoder", dir, |cfg, w| {
        Ok(Box::new(CpuBackend::new(cfg, w, &CpuOptions::default())?) as Box<dyn Backend>)
    })
}
