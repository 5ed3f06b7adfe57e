//! `LocalEmbedder` in steps (prepare → forward_prepared → pool_prepared → finish_vector), as the server runs
//! it with texts of several requests in one forward pass, gives exactly `embed`'s vectors — on every tiny
//! architecture and module layout (prompts in and out of pooling, Dense, max/cls/lasttoken pooling).

mod common;

use common::{fixtures, load_dir, max_abs_diff};
use embedkit_core::{Embedder, EncodeOptions};
use embedkit_model::{LocalEmbedder, PreparedText};

fn texts() -> Vec<&'static str> {
    vec![
        "The quick brown fox.",
        "  spaced  ",
        "",
        "Ünïcödé 日本語 🚀",
        "a much longer text that goes on and on to make the batch lengths differ from each other by a lot",
    ]
}

/// Runs the step API with the texts split into two "requests" whose texts interleave in one forward pass.
fn stepped(m: &LocalEmbedder, texts: &[&str], options: &EncodeOptions) -> Vec<Vec<f32>> {
    let (a, b) = texts.split_at(texts.len() / 2);
    let pa = m.prepare(a, options).expect("prepare a");
    let pb = m.prepare(b, options).expect("prepare b");
    // Interleave: b's texts first, then a's, in one pass.
    let mixed: Vec<&PreparedText> = pb.iter().chain(pa.iter()).collect();
    let mut pooled = vec![Vec::new(); mixed.len()];
    m.forward_prepared(&mixed, |i, states| {
        pooled[i] = m.pool_prepared(mixed[i], states)
    })
    .expect("forward");
    let (from_b, from_a) = pooled.split_at(pb.len());
    from_a
        .iter()
        .chain(from_b)
        .map(|v| {
            m.finish_vector(v.clone(), options.truncate_dim, options.normalize)
                .expect("finish")
        })
        .collect()
}

#[test]
fn stepped_vectors_equal_embed_on_every_tiny_model() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures().join("tiny")).expect("tiny fixtures") {
        let dir = entry.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let m = load_dir(&dir, 2);
        let mut option_sets = vec![
            EncodeOptions::default(),
            EncodeOptions {
                truncate_dim: Some(m.dims() / 2),
                normalize: Some(true),
                ..Default::default()
            },
        ];
        if !m.layout().prompts.is_empty() {
            let name = m.layout().prompts.keys().next().cloned();
            option_sets.push(EncodeOptions {
                prompt_name: name,
                ..Default::default()
            });
        }
        for options in &option_sets {
            let texts = texts();
            let want = m.embed(&texts, options).expect("embed");
            let got = stepped(&m, &texts, options);
            for (i, g) in got.iter().enumerate() {
                let d = max_abs_diff(g, want.row(i));
                assert!(
                    d <= 1e-6,
                    "{}: text {i} differs by {d} ({options:?})",
                    dir.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} model/option pairs checked");
}

#[test]
fn prepare_marks_only_texts_over_the_limit() {
    let m = load_dir(&fixtures().join("tiny/bert-maxlen"), 1);
    let limit = m.tokenizer().max_length();
    let long = "word ".repeat(limit * 2);
    let p = m
        .prepare(&["short", long.as_str()], &EncodeOptions::default())
        .expect("prepare");
    assert!(!p[0].truncated);
    assert!(p[1].truncated);
    assert_eq!(p[1].ids.len(), limit);
    // Ids given by the caller: used as they are, checked against the vocabulary.
    let ids = m.prepare_ids(vec![p[0].ids.clone()]).expect("ids");
    assert_eq!(ids[0].ids, p[0].ids);
    assert!(m.prepare_ids(vec![vec![u32::MAX]]).is_err());
    assert!(m.prepare_ids(vec![vec![]]).is_err());
}
