//! Cross-encoders on the CPU backend against sentence-transformers' `CrossEncoder` (tests/fixtures/cross_encoder,
//! made by tools/make_tiny_cross_encoders.py): token ids of every pair, `predict` with the default activation
//! and raw, `rank`, one pair alone against the same pair in a batch, the int8 engine, and the errors.

use embedkit_cpu::{Compute, CpuBackend, CpuOptions};
use embedkit_model::{
    Backend, CrossEncoder, DenseActivation, LocalEmbedder, ModelError, PredictOptions,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cross_encoder")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn load(dir: &Path, compute: Compute) -> Result<CrossEncoder, ModelError> {
    let options = CpuOptions {
        compute,
        threads: Some(2),
        ..Default::default()
    };
    CrossEncoder::load("tiny", dir, |config, weights| {
        Ok(Box::new(CpuBackend::new(config, weights, &options)?) as Box<dyn Backend>)
    })
}

fn pairs(e: &Value) -> Vec<(String, String)> {
    e["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn refs(p: &[(String, String)]) -> Vec<(&str, &str)> {
    p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// Scores as `[pair][label]`, whatever shape predict's JSON had (a list for one label).
fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| match s.as_array() {
            Some(row) => row.iter().map(|x| x.as_f64().unwrap()).collect(),
            None => vec![s.as_f64().unwrap()],
        })
        .collect()
}

fn max_diff(got: &[Vec<f32>], want: &[Vec<f64>]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .flat_map(|(g, w)| {
            assert_eq!(g.len(), w.len(), "labels per pair");
            g.iter().zip(w).map(|(a, b)| (f64::from(*a) - b).abs())
        })
        .fold(0.0, f64::max)
}

const MODELS: [&str; 4] = ["bert-msmarco", "bert-legacy", "xlmr-bge", "bert-nli"];

#[test]
fn token_ids_equal_cross_encoder_tokenization() {
    let all = expected();
    for name in MODELS {
        let e = &all[name];
        let model = load(&fixtures().join(name), Compute::F32).unwrap();
        assert_eq!(model.max_tokens() as u64, e["max_length"].as_u64().unwrap());
        let p = pairs(e);
        let (encoded, truncated) = model.tokenize_pairs(&refs(&p), None).unwrap();
        for (i, (enc, want)) in encoded
            .iter()
            .zip(e["tokens"].as_array().unwrap())
            .enumerate()
        {
            let ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
            let types: Vec<u32> = serde_json::from_value(want["type_ids"].clone()).unwrap();
            assert_eq!(enc.ids, ids, "{name} pair {i} ids");
            // XLM-R's tokenizer gives no type ids (sentence-transformers sees zeros); BERT's must match.
            if name != "xlmr-bge" {
                assert_eq!(enc.type_ids, types, "{name} pair {i} type ids");
            }
            assert_eq!(
                truncated[i],
                ids.len() == model.max_tokens(),
                "{name} pair {i}: truncated exactly when it fills the limit"
            );
        }
        assert!(truncated.iter().any(|&t| t), "{name}: some pairs are cut");
    }
}

#[test]
fn predict_equals_cross_encoder_predict_f32() {
    let all = expected();
    for name in MODELS {
        let e = &all[name];
        let model = load(&fixtures().join(name), Compute::F32).unwrap();
        let p = pairs(e);
        let scores = model
            .predict(&refs(&p), &PredictOptions::default())
            .unwrap();
        let d = max_diff(&scores, &matrix(&e["scores"]));
        eprintln!("{name}: predict max |Δ| {d:.2e} ({})", e["activation"]);
        assert!(d < 1e-5, "{name}: {d}");
        let raw = model
            .predict(
                &refs(&p),
                &PredictOptions {
                    activation: Some(DenseActivation::Identity),
                    ..Default::default()
                },
            )
            .unwrap();
        let d = max_diff(&raw, &matrix(&e["raw_scores"]));
        assert!(d < 1e-5, "{name} raw: {d}");
        assert_eq!(scores[0].len() as u64, e["num_labels"].as_u64().unwrap());
    }
    // The activation each layout implies: ST 6.2's saved Sigmoid, the hub's legacy Identity, Identity for 3 labels.
    for (name, act) in [
        ("bert-msmarco", DenseActivation::Sigmoid),
        ("bert-legacy", DenseActivation::Identity),
        ("xlmr-bge", DenseActivation::Sigmoid),
        ("bert-nli", DenseActivation::Identity),
    ] {
        let model = load(&fixtures().join(name), Compute::F32).unwrap();
        assert_eq!(model.activation(), act, "{name}");
    }
    let nli = load(&fixtures().join("bert-nli"), Compute::F32).unwrap();
    assert_eq!(nli.labels(), ["contradiction", "entailment", "neutral"]);
}

#[test]
fn rank_equals_cross_encoder_rank() {
    let all = expected();
    for name in ["bert-msmarco", "bert-legacy", "xlmr-bge"] {
        let e = &all[name];
        let model = load(&fixtures().join(name), Compute::F32).unwrap();
        let docs: Vec<&str> = e["rank_documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        let ranked = model
            .rank(
                e["rank_query"].as_str().unwrap(),
                &docs,
                &PredictOptions::default(),
            )
            .unwrap();
        let want = e["rank"].as_array().unwrap();
        assert_eq!(ranked.len(), want.len());
        for (g, w) in ranked.iter().zip(want) {
            assert_eq!(g.index as u64, w["corpus_id"].as_u64().unwrap(), "{name}");
            assert!((f64::from(g.score) - w["score"].as_f64().unwrap()).abs() < 1e-5);
        }
    }
    let nli = load(&fixtures().join("bert-nli"), Compute::F32).unwrap();
    let e = nli
        .rank("q", &["a", "b"], &PredictOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("3 labels"), "{e}");
}

#[test]
fn one_pair_alone_equals_it_in_a_batch() {
    let all = expected();
    for name in ["bert-msmarco", "xlmr-bge", "bert-nli"] {
        let model = load(&fixtures().join(name), Compute::F32).unwrap();
        let p = pairs(&all[name]);
        let batch = model
            .predict(&refs(&p), &PredictOptions::default())
            .unwrap();
        let mut worst = 0.0f32;
        for (i, pair) in refs(&p).iter().enumerate() {
            let alone = model
                .predict(std::slice::from_ref(pair), &PredictOptions::default())
                .unwrap();
            for (a, b) in alone[0].iter().zip(&batch[i]) {
                worst = worst.max((a - b).abs());
            }
        }
        eprintln!("{name}: alone vs batch max |Δ| {worst:.2e}");
        assert!(worst < 1e-5, "{name}: {worst}");
    }
}

#[test]
fn int8_scores_stay_close() {
    let all = expected();
    for name in ["bert-msmarco", "xlmr-bge", "bert-nli"] {
        let e = &all[name];
        let model = load(&fixtures().join(name), Compute::Int8).unwrap();
        let p = pairs(e);
        let raw = model
            .predict(
                &refs(&p),
                &PredictOptions {
                    activation: Some(DenseActivation::Identity),
                    ..Default::default()
                },
            )
            .unwrap();
        let want = matrix(&e["raw_scores"]);
        let d = max_diff(&raw, &want);
        let spread = want
            .iter()
            .flatten()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        eprintln!(
            "{name}: int8 raw logits max |Δ| {d:.2e} (f32 logits span {:.3}..{:.3})",
            spread.0, spread.1
        );
        assert!(d < 0.05, "{name}: int8 logits off by {d}");
    }
}

#[test]
fn truncation_can_be_refused_or_tightened() {
    let model = load(&fixtures().join("bert-msmarco"), Compute::F32).unwrap();
    let long = "word ".repeat(200);
    let e = model
        .predict(
            &[("q", "short"), ("q", long.as_str())],
            &PredictOptions {
                refuse_truncation: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("pair 1"), "{e}");
    let (enc, cut) = model
        .tokenize_pairs(&[("q", long.as_str())], Some(10))
        .unwrap();
    assert_eq!(enc[0].ids.len(), 10);
    assert!(cut[0]);
}

#[test]
fn a_cross_encoder_is_never_loaded_as_a_bi_encoder() {
    for name in MODELS {
        let dir = fixtures().join(name);
        let err = match LocalEmbedder::load("ce", &dir, |c, w| {
            Ok(Box::new(CpuBackend::new(c, w, &CpuOptions::default())?) as Box<dyn Backend>)
        }) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{name} loaded as a bi-encoder"),
        };
        assert!(
            err.contains("is a cross-encoder") && err.contains("ForSequenceClassification"),
            "{err}"
        );
    }
    // And a bi-encoder folder is not a cross-encoder.
    let bi = fixtures().join("../tiny/bert-mean");
    let err = load(&bi, Compute::F32)
        .err()
        .expect("not a cross-encoder")
        .to_string();
    assert!(
        err.contains("not a cross-encoder") && err.contains("BertForSequenceClassification"),
        "{err}"
    );
}

#[test]
fn an_unsupported_classifier_names_the_supported_ones() {
    let tmp = tempdir();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixtures().join("bert-legacy").join(f), tmp.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(tmp.join("config.json"))
        .unwrap()
        .replace(
            "BertForSequenceClassification",
            "DebertaV2ForSequenceClassification",
        );
    std::fs::write(tmp.join("config.json"), cfg).unwrap();
    let err = load(&tmp, Compute::F32)
        .err()
        .expect("unsupported")
        .to_string();
    for part in [
        "DebertaV2ForSequenceClassification",
        "BertForSequenceClassification",
        "XLMRobertaForSequenceClassification",
        "ModernBertForSequenceClassification",
    ] {
        assert!(err.contains(part), "{part} not in {err}");
    }
    std::fs::remove_dir_all(&tmp).ok();
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "embedkit-ce-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn modernbert_head_equals_cross_encoder_predict() {
    let all = expected();
    let e = &all["modernbert"];
    let options = CpuOptions {
        threads: Some(2),
        ..Default::default()
    };
    let model = CrossEncoder::load_with("tiny", &fixtures().join("modernbert"), |c, f| {
        embedkit_cpu::load_backend(c, f, &options)
    })
    .unwrap();
    let p = pairs(e);
    let (encoded, _) = model.tokenize_pairs(&refs(&p), None).unwrap();
    for (i, (enc, want)) in encoded
        .iter()
        .zip(e["tokens"].as_array().unwrap())
        .enumerate()
    {
        let ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
        assert_eq!(enc.ids, ids, "pair {i}");
    }
    let scores = model
        .predict(&refs(&p), &PredictOptions::default())
        .unwrap();
    let d = max_diff(&scores, &matrix(&e["scores"]));
    eprintln!("modernbert: predict max |Δ| {d:.2e}");
    assert!(d < 1e-5, "{d}");
    assert!(model.info().head.starts_with("CLS pooling"));
}
