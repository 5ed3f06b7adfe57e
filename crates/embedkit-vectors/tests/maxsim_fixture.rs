//! MaxSim against `sentence_transformers.util.maxsim` (6.2) on real all-MiniLM-L6-v2 token vectors
//! (tests/fixtures/maxsim, made by tools/make_maxsim_fixture.py).

use embedkit_core::Embeddings;
use embedkit_vectors::npy::read_npy;
use embedkit_vectors::{EMPTY_DOCUMENT_SCORE, MaxSimOptions, maxsim, maxsim_matrix};
use std::path::PathBuf;

struct Fixture {
    queries: Vec<Embeddings>,
    docs: Vec<Embeddings>,
    meta: serde_json::Value,
}

fn load() -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/maxsim");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let all = read_npy(&dir.join("tokens.npy"))
        .unwrap()
        .to_embeddings()
        .unwrap();
    let mut texts = Vec::new();
    let mut start = 0;
    for n in meta["token_counts"].as_array().unwrap() {
        let n = n.as_u64().unwrap() as usize;
        let rows: Vec<Vec<f32>> = (start..start + n).map(|r| all.row(r).to_vec()).collect();
        texts.push(Embeddings::from_rows(rows).unwrap());
        start += n;
    }
    assert_eq!(start, all.rows());
    let nq = meta["queries"].as_array().unwrap().len();
    let docs = texts.split_off(nq);
    Fixture {
        queries: texts,
        docs,
        meta,
    }
}

fn expected(meta: &serde_json::Value, key: &str) -> Vec<Vec<f64>> {
    meta["scores"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// `tol` absolute, or relative for scores above 1 (raw MiniLM token vectors sum to hundreds, where torch's own
/// f32 einsum is only good to ~1e-7 relative).
fn check(got: &[f32], want: &[Vec<f64>], tol: f64, what: &str) {
    let nd = want[0].len();
    assert_eq!(got.len(), want.len() * nd, "{what}: shape");
    for (qi, row) in want.iter().enumerate() {
        for (di, &w) in row.iter().enumerate() {
            let g = got[qi * nd + di] as f64;
            let err = (g - w).abs() / w.abs().max(1.0);
            assert!(err <= tol, "{what}[{qi}][{di}]: {g} vs {w} (err {err:e})");
        }
    }
}

fn normalized(e: &[Embeddings]) -> Vec<Embeddings> {
    e.iter()
        .map(|x| {
            let mut x = x.clone();
            x.normalize();
            x
        })
        .collect()
}

#[test]
fn raw_token_vectors_match_sentence_transformers() {
    let f = load();
    let got = maxsim_matrix(&f.queries, &f.docs, MaxSimOptions::default());
    check(&got, &expected(&f.meta, "raw"), 1e-5, "raw");
    // The single-pair function agrees with the matrix.
    assert_eq!(maxsim(&f.queries[2], &f.docs[5]), got[2 * f.docs.len() + 5]);
}

#[test]
fn normalized_token_vectors_match_within_1e_5() {
    let f = load();
    let (q, d) = (normalized(&f.queries), normalized(&f.docs));
    let got = maxsim_matrix(&q, &d, MaxSimOptions::default());
    check(&got, &expected(&f.meta, "normalized"), 1e-5, "normalized");
    let mean = maxsim_matrix(
        &q,
        &d,
        MaxSimOptions {
            length_normalize: true,
        },
    );
    check(
        &mean,
        &expected(&f.meta, "normalized_mean"),
        1e-5,
        "normalized_mean",
    );
}

#[test]
fn an_empty_document_scores_like_sentence_transformers() {
    let f = load();
    let mut docs = f.docs.clone();
    docs.push(Embeddings::empty(f.docs[0].dims()));
    let got = maxsim_matrix(&f.queries, &docs, MaxSimOptions::default());
    check(
        &got,
        &expected(&f.meta, "with_empty_doc"),
        1e-5,
        "with_empty_doc",
    );
    assert_eq!(got[docs.len() - 1], EMPTY_DOCUMENT_SCORE);
}
