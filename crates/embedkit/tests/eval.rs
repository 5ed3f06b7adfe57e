//! `embedkit eval` and `embedkit data` end to end with the real all-MiniLM-L6-v2: every number against
//! sentence-transformers + scipy + pytrec_eval (tests/fixtures/eval/references.json, made by
//! tools/make_eval_references.py), and bad input.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn embedkit(args: &[&str], home: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedkit"));
    cmd.args(args).stdin(Stdio::null());
    if let Some(home) = home {
        cmd.env("EMBEDKIT_HOME", home);
    }
    cmd.output().expect("the embedkit binary runs")
}

fn fails(args: &[&str]) -> String {
    let o = embedkit(args, None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    err
}

fn references() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("eval/references.json")).unwrap())
        .unwrap()
}

fn result<'a>(report: &'a Value, task: &str) -> &'a serde_json::Map<String, Value> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == task)
        .unwrap_or_else(|| panic!("no result for {task}: {report}"))["metrics"]
        .as_object()
        .unwrap()
}

#[test]
fn minilm_matches_sentence_transformers_on_every_task() {
    let debian = fixtures().join("eval/debian-desc");
    let retrieval = format!("retrieval:{}", debian.display());
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let o = embedkit(
        &[
            "eval",
            "-q",
            "--cache",
            cache_dir,
            "--json",
            "-m",
            "all-MiniLM-L6-v2",
            "--task",
            "lee",
            "--task",
            "wordsim",
            "--task",
            "simlex",
            "--task",
            &retrieval,
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let refs = &references()["models"]["all-MiniLM-L6-v2"];

    for (task, key) in [
        ("lee", "lee"),
        ("wordsim", "wordsim353"),
        ("simlex", "simlex999"),
    ] {
        let got = result(&report, task);
        for metric in ["cosine", "dot", "euclidean", "manhattan"] {
            for stat in ["pearson", "spearman"] {
                let want = refs[key][metric][stat].as_f64().unwrap();
                let g = got[&format!("{metric}_{stat}")].as_f64().unwrap();
                eprintln!(
                    "{task} {metric} {stat}: embedkit {g:.6}, sentence-transformers {want:.6}"
                );
                // The issue asks 0.005 on Lee-50; identical vectors give far closer numbers.
                assert!(
                    (g - want).abs() < 2e-3,
                    "{task} {metric} {stat}: {g} vs {want}"
                );
            }
        }
        assert_eq!(got["spearman"], got["cosine_spearman"]);
    }

    let got = result(&report, "debian-desc");
    let want = &refs["debian-desc"];
    for k in [1, 3, 5, 10, 100, 1000] {
        for m in ["ndcg", "map", "recall", "precision", "mrr"] {
            let key = format!("{m}@{k}");
            let (g, w) = (got[&key].as_f64().unwrap(), want[&key].as_f64().unwrap());
            eprintln!(
                "debian-desc {key}: embedkit {g:.6}, sentence-transformers + pytrec_eval {w:.6}"
            );
            assert!((g - w).abs() < 1e-4, "{key}: {g} vs {w}");
        }
    }
    let models = report["models"].as_array().unwrap();
    assert_eq!(models[0]["dims"], 384);

    // Binary index + rescoring 4×k with int8 vectors, on the cached vectors: ≥ 95% of exact f32 nDCG@10.
    let exact = got["ndcg@10"].as_f64().unwrap();
    for (rescore, floor) in [("4", 0.95), ("0", 0.5)] {
        let o = embedkit(
            &[
                "eval",
                "-q",
                "--cache",
                cache_dir,
                "--json",
                "-m",
                "all-MiniLM-L6-v2",
                "--task",
                &retrieval,
                "--index-precision",
                "binary",
                "--rescore",
                rescore,
            ],
            None,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        let binary = result(&report, "debian-desc")["ndcg@10"].as_f64().unwrap();
        eprintln!(
            "debian-desc nDCG@10: binary rescore {rescore} {binary:.4}, exact f32 {exact:.4} ({:.1}%)",
            100.0 * binary / exact
        );
        assert!(
            binary >= floor * exact,
            "rescore {rescore}: {binary} vs {exact}"
        );
        // Rescoring must matter: without it binary ranks by Hamming distance alone.
        if rescore == "0" {
            assert!(
                binary < 0.99 * exact,
                "Hamming-only ranking {binary} vs {exact}"
            );
        }
    }
}

#[test]
fn int8_engine_keeps_lee_correlations() {
    let o = embedkit(
        &[
            "eval",
            "-q",
            "--no-cache",
            "--json",
            "-m",
            "all-MiniLM-L6-v2+int8",
            "--task",
            "lee",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["results"][0]["model"], "all-MiniLM-L6-v2 (int8)");
    let got = result(&report, "lee");
    let refs = &references()["models"]["all-MiniLM-L6-v2"]["lee"]["cosine"];
    for stat in ["pearson", "spearman"] {
        let (g, w) = (got[stat].as_f64().unwrap(), refs[stat].as_f64().unwrap());
        eprintln!("lee {stat}: int8 {g:.4}, sentence-transformers f32 {w:.4}");
        assert!((g - w).abs() < 5e-3, "int8 lee {stat}: {g} vs f32 {w}");
    }
}

#[test]
fn report_folder_has_markdown_json_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let sts = dir.path().join("pairs.tsv");
    std::fs::write(
        &sts,
        "sentence1\tsentence2\tscore\nA man plays a guitar.\tSomeone plays music.\t4.2\n\
         A cat sleeps.\tThe stock market fell.\t0.1\nA dog runs.\tA puppy is running.\t4.8\n\
         Rain is falling.\tIt is raining.\t4.9\n",
    )
    .unwrap();
    let report = dir.path().join("report");
    let task = format!("sts:{}", sts.display());
    let o = embedkit(
        &[
            "eval",
            "-q",
            "--no-cache",
            "-m",
            "all-MiniLM-L6-v2",
            "--task",
            &task,
            "--report",
            report.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8(o.stdout).unwrap();
    assert!(md.contains("| all-MiniLM-L6-v2 |"), "{md}");
    let svg = std::fs::read_to_string(report.join("quality_vs_speed.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("all-MiniLM-L6-v2 (384d)"),
        "{svg}"
    );
    let json: Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let spearman = json["results"][0]["metrics"]["spearman"].as_f64().unwrap();
    // Four pairs whose gold order is obvious: paraphrases above the unrelated pair.
    assert!(spearman > 0.7, "{spearman}");
    assert!(
        json["models"][0]["throughput_texts_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        std::fs::read_to_string(report.join("report.md"))
            .unwrap()
            .contains("quality_vs_speed.svg")
    );
}

#[test]
fn bad_tasks_and_data_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&["eval", "-m", "all-MiniLM-L6-v2", "--task", "mteb:ArguAna"]);
    assert!(err.contains("unknown task kind 'mteb'"), "{err}");
    let err = fails(&["eval", "-m", "all-MiniLM-L6-v2", "--task", "retrieval"]);
    assert!(err.contains("needs a dir"), "{err}");

    let beir = dir.path().join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    std::fs::write(
        beir.join("corpus.jsonl"),
        "{\"_id\": \"d1\", \"text\": \"one\"}\n{\"_id\": \"d2\"}\n",
    )
    .unwrap();
    std::fs::write(
        beir.join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"one?\"}\n",
    )
    .unwrap();
    std::fs::write(
        beir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    )
    .unwrap();
    let task = format!("retrieval:{}", beir.display());
    let err = fails(&[
        "eval",
        "-m",
        "all-MiniLM-L6-v2",
        "--no-cache",
        "--task",
        &task,
    ]);
    assert!(
        err.contains("corpus.jsonl:2: record has no field 'text'"),
        "{err}"
    );

    std::fs::write(
        beir.join("corpus.jsonl"),
        "{\"_id\": \"d1\", \"text\": \"one\"}\n",
    )
    .unwrap();
    std::fs::write(
        beir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\tx\n",
    )
    .unwrap();
    let err = fails(&[
        "eval",
        "-m",
        "all-MiniLM-L6-v2",
        "--no-cache",
        "--task",
        &task,
    ]);
    assert!(
        err.contains("test.tsv:3: relevance 'x' is not an integer"),
        "{err}"
    );

    std::fs::write(beir.join("qrels/test.tsv"), "q1\td9\t1\n").unwrap();
    let err = fails(&[
        "eval",
        "-m",
        "all-MiniLM-L6-v2",
        "--no-cache",
        "--task",
        &task,
    ]);
    assert!(err.contains("judges document 'd9'"), "{err}");

    let sts = dir.path().join("pairs.tsv");
    std::fs::write(&sts, "a\tb\t1.0\nc\td\tnot-a-number\n").unwrap();
    let task = format!("sts:{}", sts.display());
    let err = fails(&[
        "eval",
        "-m",
        "all-MiniLM-L6-v2",
        "--no-cache",
        "--task",
        &task,
    ]);
    assert!(
        err.contains("pairs.tsv:2: score 'not-a-number' is not a number"),
        "{err}"
    );

    let err = fails(&["data", "fetch", "mteb"]);
    assert!(
        err.contains("unknown dataset 'mteb'") && err.contains("gensim"),
        "{err}"
    );
}

#[test]
fn data_fetch_is_verified_and_idempotent() {
    let home = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let o = embedkit(&["data", "fetch", "gensim", "-q"], Some(home.path()));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dir = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
        assert_eq!(dir, home.path().join("data/gensim"));
        for f in [
            "lee.cor",
            "similarities0-1.txt",
            "wordsim353.tsv",
            "simlex999.txt",
            "questions-words.txt",
        ] {
            assert!(dir.join(f).is_file(), "{f}");
        }
    }
    let o = embedkit(&["data", "list"], Some(home.path()));
    assert!(String::from_utf8_lossy(&o.stdout).contains("data/gensim"));
    // No staging folders left behind.
    let leftovers: Vec<_> = std::fs::read_dir(home.path().join("data"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn analogy_task_agrees_with_the_analogy_command() {
    let questions = fixtures().join("analogy/questions.txt");
    let q = questions.to_str().unwrap();
    let task = format!("analogy:{q}");
    let o = embedkit(
        &[
            "eval",
            "-q",
            "--no-cache",
            "--json",
            "-m",
            "all-MiniLM-L6-v2",
            "--task",
            &task,
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let got = result(&report, "analogy");
    let o = embedkit(
        &["analogy", "-q", "--no-cache", "--json", "--questions", q],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got["accuracy"], cli["accuracy"]);
    assert_eq!(got["questions"].as_f64(), cli["questions"].as_f64());
    for section in cli["sections"].as_array().unwrap() {
        let name = section["section"].as_str().unwrap();
        let (c, i) = (
            section["correct"].as_f64().unwrap(),
            section["incorrect"].as_f64().unwrap(),
        );
        assert_eq!(
            got[&format!("accuracy:{name}")].as_f64().unwrap(),
            c / (c + i),
            "{name}"
        );
    }
}
