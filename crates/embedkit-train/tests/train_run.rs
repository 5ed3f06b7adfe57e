//! End-to-end training on the tiny random BERT: data errors with line numbers, a short run that writes a
//! sentence-transformers folder which embedkit loads, checkpoints and resume giving the same weights as an
//! uninterrupted run.

use embedkit_train::{
    AdamWConfig, DataKind, Loss, LossKind, TrainConfig, TrainError, read_dataset, train,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/bert-mean")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write data");
    p
}

fn data_error(dir: &Path, name: &str, text: &str, kind: DataKind) -> String {
    let p = write(dir, name, text);
    match read_dataset(&p, kind) {
        Err(e @ (TrainError::Data { .. } | TrainError::DataFile { .. })) => e.to_string(),
        other => panic!("{name}: expected a data error, got {other:?}"),
    }
}

#[test]
fn bad_rows_are_reported_with_line_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let e = data_error(
        d,
        "a.csv",
        "text1,text2,label\nx,y,0.5\nx,y,high\nx,y,0.1\n",
        DataKind::Pairs,
    );
    assert!(
        e.ends_with("a.csv:3: label 'high' is not a finite number"),
        "{e}"
    );
    let e = data_error(
        d,
        "b.csv",
        "text1,text2,label\nx,y\nx,y,1\nx,y,z,1\n",
        DataKind::Pairs,
    );
    assert!(
        e.ends_with("b.csv:2: 2 fields, the header has 3 (and 1 more bad rows)"),
        "{e}"
    );
    let e = data_error(
        d,
        "c.tsv",
        "text1\ttext2\tlabel\nx\ty\tNaN\n",
        DataKind::Pairs,
    );
    assert!(
        e.ends_with("c.tsv:2: label 'NaN' is not a finite number"),
        "{e}"
    );
    let e = data_error(
        d,
        "d.jsonl",
        "{\"anchor\":\"a\",\"positive\":\"b\"}\n\n{\"anchor\":\"a\"}\nnot json\n",
        DataKind::Triplets,
    );
    assert!(
        e.ends_with("d.jsonl:3: no \"positive\" field (and 1 more bad rows)"),
        "{e}"
    );
    let e = data_error(d, "e.csv", "foo,bar\nx,y\n", DataKind::Pairs);
    assert!(
        e.contains("e.csv: no first text column (found: foo, bar)"),
        "{e}"
    );
    let e = data_error(d, "f.txt", "x\n", DataKind::Pairs);
    assert!(e.contains("unknown format"), "{e}");
    let e = data_error(d, "g.csv", "text1,text2,label\n", DataKind::Pairs);
    assert!(e.ends_with("g.csv: no rows"), "{e}");
    // Quoted CSV fields with commas and newlines count lines as the file has them.
    let p = write(
        d,
        "ok.csv",
        "sentence1,sentence2,score\n\"a, b\",\"c\nd\",0.5\nx,y,1\n",
    );
    let ds = read_dataset(&p, DataKind::Pairs).expect("valid");
    assert_eq!(ds.examples.len(), 2);
    assert_eq!(
        ds.examples[0].texts,
        vec!["a, b".to_string(), "c\nd".to_string()]
    );
    assert_eq!(ds.examples[1].line, 4);
}

fn pairs_file(dir: &Path) -> PathBuf {
    let rows = [
        (
            "A man is eating food.",
            "A man is eating a piece of bread.",
            0.9,
        ),
        (
            "The quick brown fox jumps over the lazy dog.",
            "Machine learning is fun.",
            0.1,
        ),
        (
            "Where is the nearest train station?",
            "How do I set up a Kubernetes cluster?",
            0.2,
        ),
        ("Hello world", "Hello there world", 0.8),
        ("Le café est très bon.", "Der Kaffee ist sehr gut.", 0.9),
        ("Visit https://example.com", "The cat sits outside.", 0.0),
    ];
    let mut text = String::from("text1,text2,label\n");
    for (a, b, l) in rows {
        text.push_str(&format!("\"{a}\",\"{b}\",{l}\n"));
    }
    write(dir, "pairs.csv", &text)
}

fn config(dir: &Path, out: &str) -> TrainConfig {
    TrainConfig {
        model_dir: tiny(),
        train_path: pairs_file(dir),
        eval_path: Some(pairs_file(dir)),
        loss: Loss::new(LossKind::Cosine, vec![32, 16]),
        epochs: 2,
        batch_size: 2,
        adamw: AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        },
        warmup_steps: Some(1),
        max_grad_norm: Some(1.0),
        seed: 7,
        max_seq_length: None,
        output: dir.join(out),
        checkpoint_dir: Some(dir.join(format!("{out}.ckpt"))),
        checkpoint_every: 2,
        resume: false,
        max_steps: None,
        threads: Some(1),
        quiet: true,
    }
}

fn weights(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn short_run_writes_a_loadable_folder_and_resume_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let never = Arc::new(AtomicBool::new(false));

    let full = train(&config(d, "full"), never.clone()).expect("training runs");
    assert_eq!(full.steps, 6);
    assert!(!full.interrupted);
    assert_eq!(full.evals.len(), 3, "before training and after each epoch");
    for f in [
        "config.json",
        "model.safetensors",
        "modules.json",
        "1_Pooling/config.json",
        "2_Normalize",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "tokenizer.json",
        "vocab.txt",
    ] {
        assert!(d.join("full").join(f).exists(), "output has {f}");
    }
    // Same tensor names, dtypes and shapes as the source (pooler and buffers kept); the encoder changed.
    let before = weights(&tiny());
    let after = weights(&d.join("full"));
    assert_eq!(
        before.iter().map(|x| &x.0).collect::<Vec<_>>(),
        after.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    let changed = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.1 != b.1)
        .count();
    assert!(changed >= 30, "only {changed} tensors changed");

    // The same run stopped after 3 steps (checkpoint), then resumed: byte-identical weights, dropout included.
    let mut first = config(d, "resumed");
    first.max_steps = Some(3);
    let part = train(&first, never.clone()).expect("first half");
    assert!(part.interrupted);
    assert_eq!(part.steps, 3);
    assert!(
        part.checkpoint
            .as_ref()
            .is_some_and(|c| c.join("state.json").is_file())
    );
    assert!(
        !d.join("resumed").exists(),
        "no model folder before the schedule ends"
    );
    let mut second = config(d, "resumed");
    second.resume = true;
    let rest = train(&second, never).expect("resume");
    assert_eq!(rest.steps, 6);
    assert_eq!(weights(&d.join("full")), weights(&d.join("resumed")));

    // A resume with a different setup is refused.
    let mut other = config(d, "resumed");
    other.resume = true;
    other.batch_size = 3;
    let e = train(&other, Arc::new(AtomicBool::new(false))).expect_err("refused");
    assert!(e.to_string().contains("other data, loss, seed"), "{e}");
}

#[test]
fn stop_flag_saves_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(AtomicBool::new(true));
    let r = train(&config(dir.path(), "stopped"), stop).expect("stops cleanly");
    assert!(r.interrupted);
    assert_eq!(r.steps, 0);
    assert!(
        r.checkpoint
            .is_some_and(|c| c.join("params.safetensors").is_file())
    );
}
