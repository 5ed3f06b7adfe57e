//! `embedkit analogy` end to end with the real all-MiniLM-L6-v2: the same answers and per-section accuracy as
//! gensim on sentence-transformers' vectors of the same words (tests/fixtures/analogy), and bad input as
//! one-line errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/analogy")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn embedkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .output()
        .expect("the embedkit binary runs")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let o = embedkit(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
}

#[test]
fn evaluation_matches_gensim() {
    let (q, v) = (fixture("questions.txt"), fixture("vocab.txt"));
    for (_, want) in expected()["evaluate"].as_object().unwrap() {
        let restrict = want["restrict_vocab"].to_string();
        let got = ok_json(&[
            "analogy",
            "-q",
            "--no-cache",
            "--json",
            "--questions",
            &q,
            "--vocab",
            &v,
            "--restrict-vocab",
            &restrict,
        ]);
        let sections = got["sections"].as_array().unwrap();
        for (g, w) in sections
            .iter()
            .chain([&got["total"]])
            .zip(want["sections"].as_array().unwrap())
        {
            assert_eq!(g["section"], w["section"]);
            assert_eq!(
                (&g["correct"], &g["incorrect"]),
                (&w["correct"], &w["incorrect"]),
                "{}",
                w["section"]
            );
        }
        assert_eq!(got["oov"], want["oov"]);
        assert_eq!(got["invalid_lines"], 1);
    }
}

#[test]
fn king_minus_boy_plus_girl() {
    let got = ok_json(&[
        "analogy",
        "-q",
        "--no-cache",
        "--json",
        "--positive",
        "king",
        "--positive",
        "girl",
        "--negative",
        "boy",
        "--vocab",
        &fixture("vocab.txt"),
        "--top-k",
        "5",
    ]);
    let want = &expected()["most_similar"][0]["result"];
    for (i, (g, w)) in got
        .as_array()
        .unwrap()
        .iter()
        .zip(want.as_array().unwrap())
        .enumerate()
    {
        let (gs, ws) = (g["score"].as_f64().unwrap(), w[1].as_f64().unwrap());
        assert!((gs - ws).abs() < 1e-4, "#{i}: {g} vs {w}");
    }
    let words: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["word"].as_str().unwrap())
        .collect();
    assert!(
        words.contains(&"queen") && !words.contains(&"king") && !words.contains(&"boy"),
        "{words:?}"
    );
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "king\ntwo words\n").unwrap();
    let v = fixture("vocab.txt");
    for (args, want) in [
        (
            vec!["analogy", "--positive", "zzzz", "--vocab", v.as_str()],
            "'zzzz' is not in the vocabulary",
        ),
        (vec!["analogy", "--positive", "king"], "--vocab"),
        (
            vec![
                "analogy",
                "--positive",
                "king",
                "--vocab",
                bad.to_str().unwrap(),
            ],
            "bad.txt:2",
        ),
        (
            vec!["analogy", "--questions", "/nonexistent/q.txt"],
            "/nonexistent/q.txt",
        ),
    ] {
        let o = embedkit(&[&args[..], &["-q", "--no-cache"]].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
