//! ColBERT models in PyLate's and Stanford's layouts (tests/fixtures/colbert, made by tools/make_tiny_colbert.py):
//! token ids, token vectors (cosine ≥ 0.9999 per token) and MaxSim scores (within 1e-5) against the reference
//! forward passes, which sentence-transformers 6.2's MultiVectorEncoder reproduces too.

mod common;

use common::{cosine, fixtures, id_rows, load_dir, matrix, read_json};
use embedkit_core::{EmbedError, Embedder, Embeddings, EncodeOptions};
use embedkit_model::ColbertLayout;
use embedkit_vectors::{MaxSimOptions, maxsim_matrix};

fn options(role: &str, batch_size: usize) -> EncodeOptions {
    EncodeOptions {
        prompt_name: Some(role.into()),
        batch_size: Some(batch_size),
        ..Default::default()
    }
}

fn check_model(name: &str, layout: ColbertLayout) {
    let model = load_dir(&fixtures().join("colbert").join(name), 2);
    assert_eq!(model.colbert().map(|c| c.layout), Some(layout), "{name}");
    assert_eq!(model.dims(), 16);
    let expected = read_json("colbert/expected.json");
    let want = &expected[name];
    let mut got_sides = Vec::new();
    for (side, role) in [("queries", "query"), ("documents", "document")] {
        let rows = want[side].as_array().unwrap();
        let texts: Vec<String> = rows
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_string())
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        // Batched (2 per pass, so batches mix lengths) and one by one must agree with the reference.
        let got = model.embed_tokens(&refs, &options(role, 2)).unwrap();
        let single = model.embed_tokens(&refs[..1], &options(role, 1)).unwrap();
        assert_eq!(
            single[0], got[0],
            "{name} {side}: batching changed the vectors"
        );
        for (i, (g, w)) in got.iter().zip(rows).enumerate() {
            let want_ids = id_rows(&serde_json::json!([w["ids"]])).remove(0);
            assert_eq!(
                g.token_ids, want_ids,
                "{name} {side}[{i}] {:?}: token ids",
                texts[i]
            );
            let want_vecs = matrix(&w["vectors"]);
            for (t, (gv, wv)) in g.vectors.iter().zip(&want_vecs).enumerate() {
                let c = cosine(gv, wv);
                assert!(c >= 0.9999, "{name} {side}[{i}] token {t}: cosine {c}");
                let n: f32 = gv.iter().map(|x| x * x).sum();
                assert!((n - 1.0).abs() < 1e-5, "token vectors are unit length");
            }
        }
        got_sides.push(
            got.into_iter()
                .map(|t| t.vectors)
                .collect::<Vec<Embeddings>>(),
        );
    }
    let scores = maxsim_matrix(&got_sides[0], &got_sides[1], MaxSimOptions::default());
    let want_scores = matrix(&want["maxsim"]);
    let nd = got_sides[1].len();
    for (q, row) in want_scores.iter().enumerate() {
        for (d, &w) in row.iter().enumerate() {
            let g = scores[q * nd + d];
            assert!((g - w).abs() <= 1e-5, "{name} maxsim[{q}][{d}]: {g} vs {w}");
        }
    }
}

#[test]
fn pylate_layout_matches_reference() {
    check_model("pylate", ColbertLayout::PyLate);
}

#[test]
fn pylate_attending_to_expansion_tokens_matches_reference() {
    check_model("pylate-attend", ColbertLayout::PyLate);
}

#[test]
fn stanford_layout_matches_reference() {
    check_model("stanford", ColbertLayout::Stanford);
}

#[test]
fn colbert_models_give_token_vectors_only() {
    let model = load_dir(&fixtures().join("colbert/pylate"), 1);
    let err = model
        .embed(&["a text"], &EncodeOptions::default())
        .unwrap_err();
    assert!(matches!(err, EmbedError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("ColBERT"), "{err}");
}
