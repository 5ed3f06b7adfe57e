//! `embedkit drift` end to end: exit statuses (0 no drift / equal, 3 drift / changed, 1 errors), the JSON shape,
//! the report folder, profiles, and canaries that must catch every change of the embedding function and nothing
//! else. Vectors are the committed Debian-sections corpus (tests/fixtures/drift/debian-sections); canaries run the
//! real all-MiniLM-L6-v2 (fetched by scripts/test).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/drift/debian-sections")
}

fn embedkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .output()
        .expect("embedkit runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Corpus {
    vectors: Vec<f32>,
    dims: usize,
    sections: Vec<String>,
    texts: Vec<String>,
}

fn corpus() -> Corpus {
    let arr =
        embedkit_vectors::npy::read_npy(&corpus_dir().join("vectors.f16.npy")).expect("vectors");
    let read = |f: &str| {
        std::fs::read_to_string(corpus_dir().join(f))
            .expect(f)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    Corpus {
        dims: arr.shape[1],
        vectors: arr.to_f32_values().expect("f16"),
        sections: read("sections.txt"),
        texts: read("texts.txt"),
    }
}

fn write_rows(c: &Corpus, rows: &[usize], path: &Path) {
    let data: Vec<u8> = rows
        .iter()
        .flat_map(|&i| {
            c.vectors[i * c.dims..(i + 1) * c.dims]
                .iter()
                .flat_map(|v| v.to_le_bytes())
        })
        .collect();
    let mut f = std::fs::File::create(path).expect("create npy");
    embedkit_vectors::npy::write_npy(&mut f, "<f4", &[rows.len(), c.dims], &data)
        .expect("write npy");
}

/// Rows of the given sections, and rows of all the others, in corpus order (the corpus is shuffled).
fn split(c: &Corpus, novel: &[&str]) -> (Vec<usize>, Vec<usize>) {
    (0..c.sections.len()).partition(|&i| !novel.contains(&c.sections[i].as_str()))
}

#[test]
fn drift_exits_3_with_json_naming_the_novel_rows_and_0_without() {
    let c = corpus();
    let dir = tempfile::tempdir().unwrap();
    let (seen, new) = split(&c, &["games", "fonts", "haskell", "mail"]);
    let (r, cur, same) = (
        dir.path().join("ref.npy"),
        dir.path().join("cur.npy"),
        dir.path().join("same.npy"),
    );
    write_rows(&c, &seen[..1000], &r);
    let mut current: Vec<usize> = seen[1000..1400].to_vec();
    current.extend_from_slice(&new[..100]);
    write_rows(&c, &current, &cur);
    write_rows(&c, &seen[1400..1900], &same);

    let o = embedkit(&[
        "drift",
        "-q",
        "--reference",
        r.to_str().unwrap(),
        "--current",
        cur.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(j["drift"], true);
    for m in ["mmd", "classifier", "centroid", "ks"] {
        let p = j["methods"][m]["p_value"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&p), "{m}: {p}");
        assert!(j["methods"][m]["statistic"].is_number() && j["methods"][m]["drift"].is_boolean());
    }
    assert_eq!(j["clusters"].as_array().map(Vec::len), Some(16));
    // The witness ranking must put rows of the novel sections (current rows 400..500) first.
    let novel: Vec<u64> = j["novel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["index"].as_u64().unwrap())
        .collect();
    assert_eq!(novel.len(), 10);
    assert!(
        novel.iter().filter(|&&i| i >= 400).count() >= 8,
        "{novel:?}"
    );

    let o = embedkit(&[
        "drift",
        "-q",
        "-r",
        r.to_str().unwrap(),
        "-c",
        same.to_str().unwrap(),
        "--method",
        "mmd,centroid",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).starts_with("no drift"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn too_few_current_vectors_is_refused_and_bad_options_are_errors() {
    let c = corpus();
    let dir = tempfile::tempdir().unwrap();
    let (r, cur) = (dir.path().join("ref.npy"), dir.path().join("cur.npy"));
    write_rows(&c, &(0..200).collect::<Vec<_>>(), &r);
    write_rows(&c, &(200..249).collect::<Vec<_>>(), &cur);
    let o = embedkit(&[
        "drift",
        "-q",
        "-r",
        r.to_str().unwrap(),
        "-c",
        cur.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("49 vectors") && text(&o.stderr).contains("at least 50"),
        "{}",
        text(&o.stderr)
    );
    let o = embedkit(&[
        "drift",
        "-q",
        "-r",
        r.to_str().unwrap(),
        "-c",
        r.to_str().unwrap(),
        "--method",
        "mmd,magic",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("unknown method 'magic'"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn report_folder_and_profile_are_written() {
    let c = corpus();
    let dir = tempfile::tempdir().unwrap();
    let (seen, new) = split(&c, &["games", "fonts"]);
    let (r, cur) = (dir.path().join("ref.npy"), dir.path().join("cur.npy"));
    write_rows(&c, &seen[..600], &r);
    write_rows(&c, &[&seen[600..800], &new[..100]].concat(), &cur);
    let report = dir.path().join("report");
    let o = embedkit(&[
        "drift",
        "-q",
        "-r",
        r.to_str().unwrap(),
        "-c",
        cur.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--permutations",
        "200",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let md = std::fs::read_to_string(report.join("report.md")).expect("report.md");
    assert!(
        md.starts_with("# Drift report") && md.contains("| mmd |"),
        "{md}"
    );
    for f in [
        "results.json",
        "pvalues.svg",
        "clusters.svg",
        "projection.svg",
    ] {
        let s = std::fs::read_to_string(report.join(f)).expect(f);
        assert!(s.len() > 100, "{f}");
    }
    let profile = dir.path().join("profile");
    let o = embedkit(&[
        "drift",
        "profile",
        "--input",
        r.to_str().unwrap(),
        "--output",
        profile.to_str().unwrap(),
        "--clusters",
        "8",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let centres =
        embedkit_vectors::npy::read_npy(&profile.join("centres.npy")).expect("centres.npy");
    assert_eq!(centres.shape, vec![8, c.dims]);
    let sample =
        embedkit_vectors::npy::read_npy(&profile.join("reference.npy")).expect("reference.npy");
    assert_eq!(sample.shape, vec![600, c.dims]);
    // A canary goes into the profile when its vectors fit the reference, and is refused when they do not.
    let canary = |dims: usize| {
        let p = dir.path().join(format!("canary{dims}.json"));
        let v: Vec<f32> = (0..dims).map(|i| (i as f32).sin()).collect();
        let c = serde_json::json!({"version": 1, "model": "m", "options": {}, "texts": ["a"], "vectors": [v]});
        std::fs::write(&p, c.to_string()).unwrap();
        p
    };
    let (good, bad) = (canary(c.dims), canary(2));
    let (p2, p3) = (dir.path().join("p2"), dir.path().join("p3"));
    let o = embedkit(&[
        "drift",
        "profile",
        "-i",
        r.to_str().unwrap(),
        "-o",
        p2.to_str().unwrap(),
        "--canary",
        good.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(p2.join("canary.json").exists());
    let o = embedkit(&[
        "drift",
        "profile",
        "-i",
        r.to_str().unwrap(),
        "-o",
        p3.to_str().unwrap(),
        "--canary",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("2 dimensions"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn texts_are_embedded_with_the_model_and_clusters_are_named() {
    let c = corpus();
    let dir = tempfile::tempdir().unwrap();
    let (seen, new) = split(&c, &["games"]);
    let write = |name: &str, rows: &[usize]| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            rows.iter()
                .map(|&i| format!("{}\n", c.texts[i]))
                .collect::<String>(),
        )
        .unwrap();
        p
    };
    let r = write("ref.txt", &seen[..120]);
    let cur = write("cur.txt", &[&seen[120..180], &new[..60]].concat());
    let o = embedkit(&[
        "drift",
        "-q",
        "--no-cache",
        "-m",
        "all-MiniLM-L6-v2",
        "-r",
        r.to_str().unwrap(),
        "-c",
        cur.to_str().unwrap(),
        "--json",
        "--clusters",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names = j["clusters"][0]["names"].as_array().expect("names");
    assert!(!names.is_empty() && names[0].as_str().is_some_and(|s| s.len() > 20));
    // The most novel text is a game's description.
    let first = j["novel"][0]["text"].as_str().expect("text");
    assert!(
        c.texts
            .iter()
            .zip(&c.sections)
            .any(|(t, s)| t == first && s == "games"),
        "{first}"
    );
}

#[test]
fn parquet_vector_files_from_embed_are_read_like_npy_and_keep_their_texts() {
    let c = corpus();
    let dir = tempfile::tempdir().unwrap();
    let (seen, new) = split(&c, &["games"]);
    let txt = |name: &str, rows: &[usize]| {
        let p = dir.path().join(name);
        let body: String = rows.iter().map(|&i| format!("{}\n", c.texts[i])).collect();
        std::fs::write(&p, body).unwrap();
        p
    };
    let (r, cur) = (
        txt("ref.txt", &seen[..80]),
        txt("cur.txt", &[&seen[80..110], &new[..30]].concat()),
    );
    // The same texts through `embed` as .npy and as Parquet (float32 with texts, float16 without).
    let embed = |input: &Path, out: &str, extra: &[&str]| {
        let p = dir.path().join(out);
        let mut args = vec!["embed", "-q", "--no-cache", "-m", "all-MiniLM-L6-v2", "-i"];
        args.extend([input.to_str().unwrap(), "-o", p.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = embedkit(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        p
    };
    let npy = ["-f", "npy"];
    let pq = ["-f", "parquet", "--keep-text"];
    let pq16 = ["-f", "parquet", "--precision", "float16"];
    let run = |a: &Path, b: &Path| {
        let o = embedkit(&[
            "drift",
            "-q",
            "-r",
            a.to_str().unwrap(),
            "-c",
            b.to_str().unwrap(),
            "--json",
            "--clusters",
            "4",
        ]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let from_npy = run(&embed(&r, "r.npy", &npy), &embed(&cur, "c.npy", &npy));
    let from_pq = run(&embed(&r, "r.parquet", &pq), &embed(&cur, "c.parquet", &pq));
    // Same vectors, same tests: the same p-values and statistics.
    assert_eq!(from_pq["methods"], from_npy["methods"]);
    assert_eq!(from_pq["p_value"], from_npy["p_value"]);
    // The Parquet files keep their texts: clusters and novel rows are named.
    let first = from_pq["novel"][0]["text"].as_str().expect("a text");
    assert!(
        c.texts
            .iter()
            .zip(&c.sections)
            .any(|(t, s)| t == first && s == "games"),
        "{first}"
    );
    assert!(from_npy["novel"][0]["text"].is_null());
    // float16 Parquet is widened to float32 and tested too.
    let from_16 = run(
        &embed(&r, "r16.parquet", &pq16),
        &embed(&cur, "c16.parquet", &pq16),
    );
    assert_eq!(from_16["rows"], from_npy["rows"]);
    // Quantized vectors are refused with a message naming the file.
    let q = embed(
        &r,
        "rbin.parquet",
        &["-f", "parquet", "--precision", "binary"],
    );
    let o = embedkit(&[
        "drift",
        "-q",
        "-r",
        q.to_str().unwrap(),
        "-c",
        q.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("rbin.parquet") && text(&o.stderr).contains("float"),
        "{}",
        text(&o.stderr)
    );
}

/// Records a canary with all-MiniLM-L6-v2 and the given options, then checks it with other options.
fn canary_case(dir: &Path, record: &[&str], check: &[&str]) -> (Option<i32>, String) {
    let texts = dir.join("canary.txt");
    if !texts.exists() {
        // Long texts, so that truncation to 32 tokens changes them.
        let c = corpus();
        let long: Vec<&String> = c.texts.iter().filter(|t| t.len() > 400).take(8).collect();
        std::fs::write(
            &texts,
            long.iter().map(|t| format!("{t}\n")).collect::<String>(),
        )
        .unwrap();
    }
    let file = dir.join(format!(
        "canary-{}.json",
        record.join("_").replace(['-', '/', ' '], "")
    ));
    let mut args = vec![
        "drift",
        "canary",
        "record",
        "-q",
        "-m",
        "all-MiniLM-L6-v2",
        "--no-cache",
        "--texts",
        texts.to_str().unwrap(),
        "--output",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(record);
    let o = embedkit(&args);
    assert!(o.status.success(), "record {record:?}: {}", text(&o.stderr));
    let mut args = vec![
        "drift",
        "canary",
        "check",
        "-q",
        "--canary",
        file.to_str().unwrap(),
    ];
    if !check.contains(&"-m") {
        args.extend_from_slice(&["-m", "all-MiniLM-L6-v2"]);
    }
    args.extend_from_slice(check);
    let o = embedkit(&args);
    (
        o.status.code(),
        format!("{}{}", text(&o.stdout), text(&o.stderr)),
    )
}

#[test]
fn canary_flags_every_change_of_the_embedding_function() {
    let dir = tempfile::tempdir().unwrap();
    let tiny =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/bert-mean");
    let cases: [(&[&str], &[&str], &str); 5] = [
        (
            &[],
            &["-m", tiny.to_str().unwrap(), "--no-cache"],
            "another model",
        ),
        (
            &[],
            &["--no-normalize", "--no-cache"],
            "normalization dropped",
        ),
        (&[], &["--compute", "int8", "--no-cache"], "int8 compute"),
        (
            &[],
            &["--max-length", "32", "--no-cache"],
            "truncation to 32 tokens",
        ),
        (
            &["--prompt", "query: "],
            &["--no-cache"],
            "a missing query prompt",
        ),
    ];
    for (record, check, what) in cases {
        let (code, out) = canary_case(dir.path(), record, check);
        assert_eq!(code, Some(3), "{what} not flagged: {out}");
        assert!(out.contains("CHANGED"), "{what}: {out}");
    }
}

#[test]
fn canary_does_not_flag_threads_batch_size_or_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let cases: [&[&str]; 4] = [
        &["--threads", "1", "--no-cache"],
        &["--batch-size", "1", "--no-cache"],
        &["--cache", cache], // fills the cache
        &["--cache", cache], // served from it
    ];
    for check in cases {
        let (code, out) = canary_case(dir.path(), &[], check);
        assert_eq!(code, Some(0), "{check:?} flagged: {out}");
        assert!(out.starts_with("equal"), "{check:?}: {out}");
    }
}
