//! Analogies against gensim 4.4's `most_similar` and `evaluate_word_analogies` on the same all-MiniLM-L6-v2
//! vectors (tests/fixtures/analogy, made by tools/make_analogy_fixture.py).

use embedkit_vectors::npy::read_npy;
use embedkit_vectors::{EvaluateOptions, WordVectors};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/analogy")
}

fn load() -> (WordVectors, serde_json::Value, String) {
    let words: Vec<String> = std::fs::read_to_string(dir().join("vocab.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let vectors = read_npy(&dir().join("vectors.npy"))
        .unwrap()
        .to_embeddings()
        .unwrap();
    let expected =
        serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap();
    let questions = std::fs::read_to_string(dir().join("questions.txt")).unwrap();
    (
        WordVectors::new(words, vectors).unwrap(),
        expected,
        questions,
    )
}

fn words(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn most_similar_matches_gensim() {
    let (vocab, expected, _) = load();
    for case in expected["most_similar"].as_array().unwrap() {
        let pos = words(&case["positive"]);
        let neg = words(&case["negative"]);
        let p: Vec<&str> = pos.iter().map(String::as_str).collect();
        let n: Vec<&str> = neg.iter().map(String::as_str).collect();
        let got = vocab.most_similar(&p, &n, 5).unwrap();
        let want = case["result"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (ww, ws) = (w[0].as_str().unwrap(), w[1].as_f64().unwrap());
            assert!(
                (g.score as f64 - ws).abs() < 1e-5,
                "{pos:?}-{neg:?} #{i}: {} {} vs {ww} {ws}",
                g.word,
                g.score
            );
            // Words with the same vector (MiniLM lowercases: King/KING) tie to float noise; their order is free.
            let tied = want.iter().any(|o| {
                o[0].as_str() == Some(g.word.as_str()) && (o[1].as_f64().unwrap() - ws).abs() < 1e-6
            });
            assert!(
                g.word == ww || tied,
                "{pos:?}-{neg:?} #{i}: {} vs {ww}",
                g.word
            );
        }
    }
}

#[test]
fn evaluation_matches_gensim_per_section() {
    let (vocab, expected, questions) = load();
    for (name, want) in expected["evaluate"].as_object().unwrap() {
        let restrict = want["restrict_vocab"].as_u64().unwrap() as usize;
        let r = vocab
            .evaluate(
                &questions,
                EvaluateOptions {
                    restrict_vocab: restrict,
                    case_insensitive: true,
                },
            )
            .unwrap();
        let want_sections = want["sections"].as_array().unwrap();
        let got: Vec<_> = r.sections.iter().chain(std::iter::once(&r.total)).collect();
        assert_eq!(got.len(), want_sections.len(), "{name}");
        for (g, w) in got.iter().zip(want_sections) {
            assert_eq!(g.section, w["section"].as_str().unwrap(), "{name}");
            assert_eq!(
                (g.correct as u64, g.incorrect as u64),
                (
                    w["correct"].as_u64().unwrap(),
                    w["incorrect"].as_u64().unwrap()
                ),
                "{name} {}",
                g.section
            );
        }
        assert_eq!(r.oov as u64, want["oov"].as_u64().unwrap(), "{name}");
        assert!((r.total.accuracy() - want["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    }
}
