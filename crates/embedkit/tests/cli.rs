//! The `embedkit` binary end to end: real model folders, real files and pipes, exit codes and messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn tiny(name: &str) -> PathBuf {
    fixtures().join("tiny").join(name)
}

fn embedkit(args: &[&str]) -> Output {
    embedkit_stdin(args, None)
}

fn embedkit_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the embedkit binary runs");
    if let Some(data) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(data)
            .expect("write stdin");
    }
    child.wait_with_output().expect("embedkit finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

/// Runs embedkit expecting failure; returns the error line after checking it is one line, not a panic.
fn fails(args: &[&str]) -> String {
    let o = embedkit(args);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "expected failure for {args:?}, got success: {}",
        stdout(&o)
    );
    assert_eq!(o.status.code(), Some(1), "exit code for {args:?}: {err}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error for {args:?}: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(tiny("expected.json")).expect("tiny fixture"))
        .expect("json")
}

fn vec_of(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    d / (na * nb)
}

/// A copy of a tiny model folder that a test may break.
fn copy_model(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&tiny(name), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixture dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

#[test]
fn embed_jsonl_file_matches_sentence_transformers() {
    let exp = expected();
    let texts = exp["texts"].as_array().expect("texts");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    for t in texts {
        writeln!(f, "{}", serde_json::json!({"id": 1, "body": t})).unwrap();
    }
    drop(f);
    let model = tiny("bert-mean");
    let o = embedkit(&[
        "embed",
        "--quiet",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--field",
        "body",
        "--batch-size",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSONL line"))
        .collect();
    assert_eq!(lines.len(), texts.len());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i);
        let want = vec_of(&exp["models"]["bert-mean"]["embeddings"][i]);
        let got = vec_of(&line["embedding"]);
        assert!(cosine(&got, &want) >= 0.9999, "text {i}");
    }
}

#[test]
fn every_output_format_carries_the_same_vectors() {
    let model = tiny("bert-dense");
    let m = model.to_str().unwrap();
    let texts = ["first text", "second, longer text here", ""];
    let mut args = vec!["embed", "-q", "--model", m];
    args.extend(texts);
    let jsonl = embedkit(&[&args[..], &["--format", "jsonl"]].concat());
    assert!(jsonl.status.success(), "{}", stderr(&jsonl));
    let want: Vec<Vec<f32>> = stdout(&jsonl)
        .lines()
        .map(|l| vec_of(&serde_json::from_str::<serde_json::Value>(l).unwrap()["embedding"]))
        .collect();
    assert_eq!(want.len(), 3);
    assert_eq!(want[0].len(), 16);

    let json = embedkit(&[&args[..], &["--format", "json"]].concat());
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("one JSON document");
    assert_eq!(doc["dimensions"], 16);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&vec_of(&doc["embeddings"][i]), w);
    }

    let csv = embedkit(&[&args[..], &["--format", "csv"]].concat());
    for (line, w) in stdout(&csv).lines().zip(&want) {
        let row: Vec<f32> = line.split(',').map(|x| x.parse().expect("float")).collect();
        assert_eq!(&row, w);
    }

    // .npy to a file: numpy's v1.0 header, then little-endian f32 rows.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.npy");
    let npy = embedkit(
        &[
            &args[..],
            &["--format", "npy", "--output", out.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(npy.status.success(), "{}", stderr(&npy));
    assert!(stdout(&npy).is_empty());
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (3, 16)"),
        "{header}"
    );
    let data: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(data, want.concat());
    // As readable as any file the user makes, not the owner-only mode of the temp file it was written through.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    // Only the output file: the temp file it was written through is gone.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("v.npy")]);
}

#[test]
fn output_format_follows_the_extension_unless_given() {
    let model = tiny("bert-dense");
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec!["embed", "-q", "--model", m, "one text", "another text"];
        args.extend(extra);
        args.extend(["--output", out.to_str().unwrap()]);
        let o = embedkit(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        std::fs::read(&out).unwrap()
    };
    assert!(write("v.npy", &[]).starts_with(b"\x93NUMPY"));
    let parquet = write("v.parquet", &[]);
    assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1"));
    assert!(write("v.pq", &[]).starts_with(b"PAR1"));
    let csv = String::from_utf8(write("V.CSV", &[])).unwrap();
    assert_eq!(csv.lines().count(), 2);
    assert_eq!(csv.lines().next().unwrap().split(',').count(), 16);
    let json: serde_json::Value = serde_json::from_slice(&write("v.json", &[])).unwrap();
    assert_eq!(json["dimensions"], 16);
    // Unknown extensions and none keep the default, JSON lines; an explicit --format wins over the name.
    for (name, extra) in [
        ("v.vectors", &[][..]),
        ("vectors", &[][..]),
        ("v.npy", &["--format", "jsonl"][..]),
    ] {
        let text = String::from_utf8(write(name, extra)).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["index"], 0, "{name} {extra:?}");
    }
    // --tokens cannot be a numpy array: the extension's format is refused as an explicit one would be.
    let out = dir.path().join("t.npy");
    let o = embedkit(&[
        "embed",
        "-q",
        "--model",
        m,
        "--tokens",
        "a text",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--tokens writes JSONL or JSON only"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn stdin_text_lines_in_order() {
    let model = tiny("bert-mean");
    let o = embedkit_stdin(
        &[
            "embed",
            "-q",
            "--model",
            model.to_str().unwrap(),
            "--input",
            "-",
            "--format",
            "json",
        ],
        Some("Hello world\nCafé naïve résumé — señor\n".as_bytes()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let exp = expected();
    for (row, text_index) in [(0, 1), (1, 2)] {
        let want = vec_of(&exp["models"]["bert-mean"]["embeddings"][text_index]);
        assert!(cosine(&vec_of(&doc["embeddings"][row]), &want) >= 0.9999);
    }
}

#[test]
fn options_change_the_output() {
    let model = tiny("bert-prompts");
    let m = model.to_str().unwrap();
    let run = |extra: &[&str]| {
        let o = embedkit(
            &[
                &[
                    "embed",
                    "-q",
                    "--model",
                    m,
                    "Hello world",
                    "--format",
                    "json",
                ][..],
                extra,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        vec_of(&doc["embeddings"][0])
    };
    let exp = expected();
    let p = &exp["models"]["bert-prompts"];
    assert!(cosine(&run(&[]), &vec_of(&p["embeddings"][1])) >= 0.9999);
    assert!(
        cosine(
            &run(&["--prompt-name", "passage"]),
            &vec_of(&p["prompt_passage"][1])
        ) >= 0.9999
    );
    assert!(cosine(&run(&["--prompt", ""]), &vec_of(&p["prompt_none"][1])) >= 0.9999);
    let t = run(&["--truncate-dim", "8"]);
    assert_eq!(t.len(), 8);
    assert!((t.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    let raw = run(&["--no-normalize"]);
    assert!(
        (raw.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() > 1e-3,
        "tiny model output is not unit length"
    );
}

#[test]
fn token_vectors_as_jsonl() {
    let model = tiny("xlmr-mean");
    let o = embedkit(&[
        "embed",
        "-q",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        "Hello world",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let exp = expected();
    let want_ids = &exp["models"]["xlmr-mean"]["token_ids"][1];
    assert_eq!(&line["token_ids"], want_ids);
    let want = &exp["models"]["xlmr-mean"]["token_embeddings"][1];
    assert_eq!(
        line["embeddings"].as_array().unwrap().len(),
        want.as_array().unwrap().len()
    );
    assert!(cosine(&vec_of(&line["embeddings"][0]), &vec_of(&want[0])) >= 0.9999);
}

#[test]
fn models_info_describes_the_folder() {
    let model = tiny("bert-dense");
    let o = embedkit(&["models", "info", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(info["architecture"], "BERT");
    assert_eq!(info["dims"], 16);
    assert_eq!(info["hidden_size"], 32);
    assert_eq!(info["max_tokens"], 64);
    assert_eq!(info["pooling"], "mean");
    assert_eq!(info["dense_layers"], 1);
    assert_eq!(info["normalize"], true);
    assert!(info["parameters"].as_u64().unwrap() > 10_000);
    let table = embedkit(&["models", "info", tiny("xlmr-cls").to_str().unwrap()]);
    assert!(stdout(&table).contains("XLM-RoBERTa"), "{}", stdout(&table));
}

#[test]
fn models_list_names_the_catalog() {
    let home = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(["models", "list"])
        .env("EMBEDKIT_HOME", home.path())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        out.contains("all-MiniLM-L6-v2") && out.contains("all-mpnet-base-v2"),
        "{out}"
    );
    assert!(
        out.contains(" no "),
        "nothing is fetched in an empty home: {out}"
    );
}

#[test]
fn missing_model_path() {
    let err = fails(&["embed", "--model", "./no/such/model", "x"]);
    assert!(err.contains("'./no/such/model' does not exist"), "{err}");
}

#[test]
fn unknown_catalog_name_lists_the_known_ones() {
    let err = fails(&["embed", "--model", "all-MiniLM-L12-v9", "x"]);
    assert!(err.contains("unknown model 'all-MiniLM-L12-v9'"), "{err}");
    assert!(
        err.contains("all-MiniLM-L6-v2") && err.contains("all-mpnet-base-v2"),
        "{err}"
    );
}

#[test]
fn folder_without_weights() {
    let dir = copy_model("bert-mean");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = fails(&["embed", "--model", dir.path().to_str().unwrap(), "x"]);
    assert!(err.contains("has no weights (model.safetensors"), "{err}");
}

#[test]
fn pytorch_only_folder_asks_for_conversion() {
    let dir = copy_model("bert-mean");
    std::fs::rename(
        dir.path().join("model.safetensors"),
        dir.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let err = fails(&["embed", "--model", dir.path().to_str().unwrap(), "x"]);
    assert!(
        err.contains("has only pytorch_model.bin") && err.contains("safe_serialization=True"),
        "{err}"
    );
}

#[test]
fn truncated_safetensors() {
    let dir = copy_model("bert-mean");
    let path = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = fails(&["embed", "--model", dir.path().to_str().unwrap(), "x"]);
    assert!(
        err.contains("invalid safetensors file") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn unknown_architecture() {
    let dir = copy_model("bert-mean");
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["model_type"] = "gpt2".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = fails(&["embed", "--model", dir.path().to_str().unwrap(), "x"]);
    assert!(
        err.contains("unsupported architecture model_type 'gpt2'") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn missing_tokenizer() {
    let dir = copy_model("bert-mean");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    std::fs::remove_file(dir.path().join("vocab.txt")).unwrap();
    let err = fails(&["embed", "--model", dir.path().to_str().unwrap(), "x"]);
    assert!(
        err.contains("has no tokenizer (tokenizer.json, or vocab.txt"),
        "{err}"
    );
}

#[test]
fn malformed_config_json_names_file_and_position() {
    let dir = copy_model("bert-mean");
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"bert\",").unwrap();
    let err = fails(&["embed", "--model", dir.path().to_str().unwrap(), "x"]);
    assert!(
        err.contains("invalid JSON in") && err.contains("config.json") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_input_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, b"fine\nalso fine\nbroken \xc3\x28 here\n").unwrap();
    let err = fails(&[
        "embed",
        "--model",
        tiny("bert-mean").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(err.contains("in.txt:3: invalid UTF-8"), "{err}");
}

#[test]
fn jsonl_line_without_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.jsonl");
    std::fs::write(&input, "{\"text\": \"a\"}\n{\"title\": \"b\"}\n").unwrap();
    let err = fails(&[
        "embed",
        "--model",
        tiny("bert-mean").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(
        err.contains("docs.jsonl:2: record has no field 'text'"),
        "{err}"
    );
}

#[test]
fn failed_run_leaves_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let err = fails(&[
        "embed",
        "--model",
        tiny("bert-mean").to_str().unwrap(),
        "--truncate-dim",
        "999",
        "--output",
        out.to_str().unwrap(),
        "x",
    ]);
    assert!(err.contains("truncate_dim"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial or temp file"
    );
}

#[test]
fn no_texts_is_an_error() {
    let err = fails(&["embed", "--model", tiny("bert-mean").to_str().unwrap()]);
    assert!(err.contains("no texts"), "{err}");
}

#[test]
fn similarity_matrix_and_ranking() {
    let m = tiny("bert-mean");
    let m = m.to_str().unwrap();
    let o = embedkit(&[
        "similarity",
        "-q",
        "--model",
        m,
        "--json",
        "Hello world",
        "Hello world",
        "Zebra ☃",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["metric"], "cosine");
    let mat: Vec<Vec<f32>> = doc["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .map(vec_of)
        .collect();
    assert!((mat[0][1] - 1.0).abs() < 1e-5 && (mat[0][0] - 1.0).abs() < 1e-5);
    assert!(mat[0][2] < 0.9999);
    assert!((mat[0][2] - mat[2][0]).abs() < 1e-6);

    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs.txt");
    std::fs::write(&docs, "Zebra ☃\nHello world\nsomething else entirely\n").unwrap();
    let o = embedkit(&[
        "similarity",
        "-q",
        "--model",
        m,
        "--json",
        "--query",
        "Hello world",
        "--docs",
        docs.to_str().unwrap(),
        "--metric",
        "dot",
        "--top-k",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hits: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 2);
    assert_eq!(hits[0]["text"], "Hello world");
    assert_eq!(hits[0]["rank"], 1);
    assert!(hits[0]["score"].as_f64().unwrap() >= hits[1]["score"].as_f64().unwrap());
}

/// The real default model through the binary: similarities equal the cosine of sentence-transformers' vectors.
#[test]
fn real_model_similarity_matches_golden_vectors() {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("golden/all-MiniLM-L6-v2.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = golden["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let pick = [25usize, 26, 3, 7];
    let mut args = vec!["similarity", "-q", "--model", "all-MiniLM-L6-v2", "--json"];
    args.extend(pick.iter().map(|&i| texts[i]));
    let o = embedkit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for (a, &i) in pick.iter().enumerate() {
        for (b, &j) in pick.iter().enumerate() {
            let want = cosine(
                &vec_of(&golden["embeddings"][i]),
                &vec_of(&golden["embeddings"][j]),
            );
            let got = doc["matrix"][a][b].as_f64().unwrap();
            assert!((got - want).abs() < 1e-4, "texts {i},{j}: {got} vs {want}");
        }
    }
}

/// index build → search over loopback-free files: a BEIR-style corpus, f32 and binary with rescoring.
#[test]
fn index_build_and_search() {
    let m = tiny("bert-mean");
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let docs = [
        ("d1", "Kubernetes", "How do I set up a Kubernetes cluster?"),
        ("d2", "Pizza", "Best pizza recipes in Naples"),
        ("d3", "Rust", "Rust ownership and borrowing explained"),
        ("d4", "Zebra", "Zebra ☃ Ωμέγα ∑ quokka ⅞"),
    ];
    let mut f = std::fs::File::create(&corpus).unwrap();
    for (id, title, text) in docs {
        writeln!(
            f,
            "{}",
            serde_json::json!({"_id": id, "title": title, "text": text})
        )
        .unwrap();
    }
    drop(f);
    for precision in ["float32", "binary"] {
        let idx = dir.path().join(format!("{precision}.idx"));
        let o = embedkit(&[
            "index",
            "build",
            "-q",
            "--model",
            m,
            "--input",
            corpus.to_str().unwrap(),
            "--output",
            idx.to_str().unwrap(),
            "--precision",
            precision,
        ]);
        assert!(o.status.success(), "{precision}: {}", stderr(&o));
        let o = embedkit(&[
            "search",
            "-q",
            "--index",
            idx.to_str().unwrap(),
            "--format",
            "jsonl",
            "--top-k",
            "2",
            "Pizza Best pizza recipes in Naples",
        ]);
        assert!(o.status.success(), "{precision}: {}", stderr(&o));
        let hits: Vec<serde_json::Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSONL"))
            .collect();
        assert_eq!(hits.len(), 2, "{precision}");
        assert_eq!(hits[0]["doc_id"], "d2", "{precision}: {hits:?}");
        assert_eq!(hits[0]["rank"], 1);
        // A query embedded with another model is refused by name.
        let o = embedkit(&[
            "search",
            "--index",
            idx.to_str().unwrap(),
            "--model",
            tiny("bert-cls").to_str().unwrap(),
            "x",
        ]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            !err.contains("panicked") && err.contains("error: "),
            "{err}"
        );
    }
    let f32_size = std::fs::metadata(dir.path().join("float32.idx"))
        .unwrap()
        .len();
    assert!(f32_size > 0);
}

#[test]
fn embed_precision_ubinary_npy() {
    let m = tiny("bert-mean");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.npy");
    let b = dir.path().join("b.npy");
    let base = [
        "embed",
        "-q",
        "--model",
        m.to_str().unwrap(),
        "--format",
        "npy",
        "Hello world",
        "Café naïve",
    ];
    let o = embedkit(&[&base[..], &["--output", f.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = embedkit(
        &[
            &base[..],
            &["--precision", "ubinary", "--output", b.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let fb = std::fs::read(&f).unwrap();
    let bb = std::fs::read(&b).unwrap();
    let fh = u16::from_le_bytes([fb[8], fb[9]]) as usize + 10;
    let bh = u16::from_le_bytes([bb[8], bb[9]]) as usize + 10;
    let floats: Vec<f32> = fb[fh..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // numpy.packbits(x > 0), big-endian bit order: 32 dims → 4 bytes per vector.
    let packed = &bb[bh..];
    assert_eq!(packed.len(), 2 * 4);
    for (row, chunk) in floats.chunks_exact(32).enumerate() {
        for (i, v) in chunk.iter().enumerate() {
            let bit = packed[row * 4 + i / 8] >> (7 - i % 8) & 1;
            assert_eq!(bit == 1, *v > 0.0, "row {row} dim {i}");
        }
    }
}
