//! Parquet output and sharded runs of the real binary: shards killed and resumed, parts checked and merged,
//! vectors equal to a one-process `.npy` run bit for bit, Parquet read back by pyarrow and DuckDB, reruns
//! that do nothing or name what changed, and memory flat in the corpus size.

#[path = "support/python.rs"]
mod python;
use embedkit_parquet::{Ids, VectorFile, batch_ids, embedding_bytes};
use python::python_with;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny BERT fixture (32 dims): the sharding, commit and resume machinery does not depend on the model,
/// and all-MiniLM-L6-v2 over 20,000 texts twice (one-process and sharded) takes about two minutes of an idle
/// 2-core machine, more under a loaded CI. The real model's vectors go through Parquet in
/// `pyarrow_and_duckdb_read_what_npy_has` (1,500 texts, bit for bit).
fn tiny() -> String {
    fixtures()
        .join("tiny/bert-mean")
        .to_string_lossy()
        .into_owned()
}

fn embedkit(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the embedkit binary runs");
    assert!(
        o.status.success(),
        "embedkit {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A real corpus of 20,134 texts: the 4,000 Debian package descriptions of the retrieval fixture, each of
/// their sentences, the 828 queries, bench/sentences.txt (2,000 news sentences) and bench/long.txt (200).
fn write_corpus(path: &Path) -> usize {
    let read = |p: PathBuf| std::fs::read_to_string(&p).expect("fixture");
    let field = |line: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(line).expect("fixture JSONL");
        v["text"].as_str().expect("text field").to_string()
    };
    let eval = fixtures().join("eval/debian-desc");
    let docs: Vec<String> = read(eval.join("corpus.jsonl")).lines().map(field).collect();
    let mut texts = docs.clone();
    for d in &docs {
        texts.extend(
            d.split(". ")
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string),
        );
    }
    texts.extend(read(eval.join("queries.jsonl")).lines().map(field));
    for f in ["bench/sentences.txt", "bench/long.txt"] {
        texts.extend(read(repo().join(f)).lines().map(str::to_string));
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("corpus file"));
    for (i, t) in texts.iter().enumerate() {
        let rec = serde_json::json!({"doc": format!("doc-{i:05}"), "text": t});
        writeln!(out, "{rec}").expect("write corpus");
    }
    out.flush().expect("write corpus");
    texts.len()
}

/// The float32 payload of a `.npy` file (after its header).
fn npy_payload(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).expect("npy file");
    let header = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + header..].to_vec()
}

/// Ids and vector bytes of a vector file, in row order.
fn read_parquet(path: &Path) -> (Ids, Vec<u8>) {
    let f = VectorFile::open(path).expect("a vector file");
    let (mut bytes, mut ints, mut texts) = (Vec::new(), Vec::new(), Vec::new());
    for b in f.batches().expect("batches") {
        let b = b.expect("batch");
        bytes.extend(embedding_bytes(&b).expect("embedding column"));
        match batch_ids(&b, path).expect("ids") {
            Ids::Int(v) => ints.extend(v),
            Ids::Text(v) => texts.extend(v),
        }
    }
    (
        if texts.is_empty() {
            Ids::Int(ints)
        } else {
            Ids::Text(texts)
        },
        bytes,
    )
}

/// A shard worker whose stderr lines are collected as they come.
struct Worker {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

fn start_shard(args: &[String]) -> Worker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the embedkit binary runs");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(l);
        }
    });
    Worker {
        child,
        lines,
        reader,
    }
}

impl Worker {
    fn wait(mut self) -> Vec<String> {
        let status = self.child.wait().expect("wait");
        self.reader.join().expect("stderr reader");
        let lines = self.lines.lock().expect("lines").clone();
        assert!(status.success(), "shard failed: {lines:#?}");
        lines
    }

    fn committed(&self) -> usize {
        let l = self.lines.lock().expect("lines");
        l.iter()
            .filter(|l| l.contains(" committed (records "))
            .count()
    }
}

/// The number in `line` after `prefix`, up to the next non-digit.
fn number_after(lines: &[String], prefix: &str) -> Option<u64> {
    lines.iter().find_map(|l| {
        let rest = &l[l.find(prefix)? + prefix.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// Issue 15's scenario: 4 shards of a 20,134-text corpus run as 2 concurrent workers (two shards each, as a
/// job array with parallelism 2 runs them); the first shard of one worker is SIGKILLed after it committed
/// two chunks and started again. Then `parts check` passes, every id is there once, the merged vectors are
/// the one-process `--format npy` vectors bit for bit, and the restarted shard redid at most the chunk that
/// was in flight.
#[test]
fn killed_shard_resumes_and_parts_equal_one_process_npy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let corpus = dir.path().join("corpus.jsonl");
    let n = write_corpus(&corpus);
    assert!(n >= 20_000, "{n} texts");
    let corpus = corpus.to_string_lossy().into_owned();
    let out = dir.path().join("parts");
    let out_s = out.to_string_lossy().into_owned();
    let model = tiny();
    let npy = dir.path().join("all.npy");
    embedkit(&[
        "-q",
        "embed",
        "-m",
        &model,
        "--no-cache",
        "--input",
        &corpus,
        "--format",
        "npy",
        "--output",
        &npy.to_string_lossy(),
    ]);
    let shard_args = |k: u32| -> Vec<String> {
        [
            "embed",
            "-m",
            &model,
            "--no-cache",
            "--input",
            &corpus,
            "--shard",
            &format!("{k}/4"),
            "--output",
            &out_s,
            "--chunk-size",
            "1024",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let plain = {
        let a0 = shard_args(0);
        let a2 = shard_args(2);
        std::thread::spawn(move || {
            start_shard(&a0).wait();
            start_shard(&a2).wait();
        })
    };
    // The other worker: shard 1 is killed once two of its chunks are committed.
    let mut victim = start_shard(&shard_args(1));
    let t0 = std::time::Instant::now();
    while victim.committed() < 2 {
        assert!(
            t0.elapsed().as_secs() < 300,
            "no chunk committed: {:?}",
            victim.lines.lock().expect("lines")
        );
        assert!(
            victim.child.try_wait().expect("try_wait").is_none(),
            "shard 1 ended before it could be killed: {:?}",
            victim.lines.lock().expect("lines")
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    victim.child.kill().expect("SIGKILL");
    victim.child.wait().expect("reap");
    victim.reader.join().expect("stderr reader");
    let printed = victim.lines.lock().expect("lines").clone();
    let committed_before = printed
        .iter()
        .filter(|l| l.contains(" committed (records "))
        .count() as u64;
    assert!(
        !printed.iter().any(|l| l.contains("wrote ")),
        "killed mid-shard: {printed:#?}"
    );
    assert!(
        !out.join("part-00001-of-00004.parquet").exists(),
        "nothing partial is visible"
    );
    let restarted = start_shard(&shard_args(1)).wait();
    eprintln!("restarted shard 1: {restarted:#?}");
    let resumed = number_after(&restarted, "resuming after ").expect("a resume message");
    // A kill between the manifest's update and the printed line leaves one more committed chunk than printed.
    assert!(
        (committed_before..=committed_before + 1).contains(&resumed),
        "the killed worker printed {committed_before} committed chunks, the restart resumed after {resumed}"
    );
    let shard_len = number_after(&restarted, ".parquet (").expect("rows of the part");
    let kept = number_after(&restarted, "committed chunks (").expect("records kept");
    let embedded = number_after(&restarted, "embedded ").expect("records embedded by the restart");
    assert_eq!(
        embedded,
        shard_len - kept,
        "the restart embeds only what was not committed: {restarted:#?}"
    );
    eprintln!(
        "shard 1 restarted: {resumed} chunks ({kept} records) kept, {embedded} of {shard_len} records embedded \
         again; work lost to the kill: at most the one chunk in flight"
    );
    start_shard(&shard_args(3)).wait();
    plain.join().expect("the other worker");

    let check = embedkit(&["parts", "check", &out_s]);
    assert!(
        text(&check.stdout).starts_with(&format!("ok: 4 parts of 4, {n} rows, every id once")),
        "{}",
        text(&check.stdout)
    );
    // Every id once, in order, across the parts; then the merged file.
    let mut all_ids = Vec::new();
    let mut all_bytes = Vec::new();
    for k in 0..4 {
        let (ids, bytes) = read_parquet(&out.join(format!("part-{k:05}-of-00004.parquet")));
        let Ids::Int(ids) = ids else {
            panic!("positional ids are integers")
        };
        all_ids.extend(ids);
        all_bytes.extend(bytes);
    }
    assert_eq!(all_ids, (0..n as i64).collect::<Vec<_>>());
    let want = npy_payload(&npy);
    assert!(all_bytes == want, "parts differ from the one-process npy");
    let merged = dir.path().join("all.parquet");
    embedkit(&[
        "parts",
        "merge",
        &out_s,
        "--output",
        &merged.to_string_lossy(),
    ]);
    let (ids, bytes) = read_parquet(&merged);
    assert_eq!(ids, Ids::Int((0..n as i64).collect()));
    assert!(
        bytes == want,
        "merged file differs from the one-process npy"
    );
    let meta = VectorFile::open(&merged).expect("merged").meta;
    assert_eq!(meta.settings["precision"], "float32");
    assert_eq!(meta.info["rows"], n.to_string());
}

/// A finished shard is not redone; other options are an error naming them, unless --overwrite; `parts
/// check` names missing parts and leftovers.
#[test]
fn rerun_is_a_no_op_and_changed_options_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("t.txt");
    let lines: Vec<String> = (0..300).map(|i| format!("sentence number {i}")).collect();
    std::fs::write(&input, lines.join("\n")).expect("input");
    let out = dir.path().join("parts");
    let (i, o, m) = (
        input.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
        tiny(),
    );
    let base = [
        "embed",
        "-m",
        &m,
        "--no-cache",
        "--input",
        &i,
        "--output",
        &o,
    ];
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_embedkit"))
            .args(base.iter().chain(extra))
            .output()
            .expect("runs")
    };
    assert!(
        run(&["--shard", "0/2", "--chunk-size", "64"])
            .status
            .success()
    );
    let part = out.join("part-00000-of-00002.parquet");
    let before = std::fs::read(&part).expect("part");
    let again = run(&["--shard", "0/2", "--chunk-size", "64"]);
    assert!(
        text(&again.stderr).contains("already complete (150 rows"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&part).expect("part"), before);
    let changed = run(&["--shard", "0/2", "--truncate-dim", "16"]);
    let err = text(&changed.stderr);
    assert_eq!(changed.status.code(), Some(1), "{err}");
    assert!(
        err.contains("dims: \"32\" → \"16\"") && err.contains("--overwrite"),
        "{err}"
    );
    let unfinished = embedkit_parquet::check(&out).expect("check");
    assert!(
        unfinished.problems == ["missing part-00001-of-00002.parquet"],
        "{:?}",
        unfinished.problems
    );
    let o = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(["parts", "check", &o])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("problem: missing part-00001-of-00002.parquet"));
    let replaced = run(&["--shard", "0/2", "--truncate-dim", "16", "--overwrite"]);
    assert!(replaced.status.success(), "{}", text(&replaced.stderr));
    let f = VectorFile::open(&part).expect("part");
    assert_eq!(
        (f.meta.settings["dims"].as_str(), f.layout.width),
        ("16", 16)
    );
    // K from the environment, as a Kubernetes Indexed Job or a Slurm array sets it.
    let from_env = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(base.iter().chain(&[
            "--shard-from-env",
            "JOB_COMPLETION_INDEX",
            "--num-shards",
            "2",
            "--truncate-dim",
            "16",
        ]))
        .env("JOB_COMPLETION_INDEX", "1")
        .output()
        .expect("runs");
    assert!(from_env.status.success(), "{}", text(&from_env.stderr));
    assert!(
        embedkit_parquet::check(&out)
            .expect("check")
            .problems
            .is_empty()
    );
}

/// all-MiniLM-L6-v2 vectors of 1,500 real texts written as Parquet (ids from a JSONL field, texts kept) and
/// as `.npy`: pyarrow and DuckDB read the schema, the metadata and the same float32 bits; that Parquet file
/// read back as input (`--field text --id-field doc`) embeds to the same vectors again.
#[test]
fn pyarrow_and_duckdb_read_what_npy_has() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = dir.path().join("all.jsonl");
    write_corpus(&all);
    let corpus = dir.path().join("corpus.jsonl");
    let text_all = std::fs::read_to_string(&all).expect("corpus");
    // Every 13th record: descriptions, sentences, queries and news lines alike.
    let picked: Vec<&str> = text_all.lines().step_by(13).take(1500).collect();
    std::fs::write(&corpus, picked.join("\n") + "\n").expect("corpus");
    let (c, pq, npy, again) = (
        corpus.to_string_lossy().into_owned(),
        dir.path().join("v.parquet"),
        dir.path().join("v.npy"),
        dir.path().join("again.npy"),
    );
    let common = ["-q", "embed", "--no-cache", "-m", "all-MiniLM-L6-v2"];
    let with = |extra: &[&str]| -> Vec<String> {
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |a: Vec<String>| embedkit(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let pq_s = pq.to_string_lossy().into_owned();
    run(with(&[
        "--input",
        &c,
        "--format",
        "parquet",
        "--id-field",
        "doc",
        "--keep-text",
        "--output",
        &pq_s,
    ]));
    run(with(&[
        "--input",
        &c,
        "--format",
        "npy",
        "--output",
        &npy.to_string_lossy(),
    ]));
    let (ids, bytes) = read_parquet(&pq);
    let Ids::Text(ids) = ids else {
        panic!("ids from a JSON string field are strings")
    };
    assert_eq!(ids.len(), 1500);
    assert_eq!(ids[1], "doc-00013");
    assert!(bytes == npy_payload(&npy), "Parquet and npy vectors differ");
    run(with(&[
        "--input",
        &pq_s,
        "--field",
        "text",
        "--format",
        "npy",
        "--output",
        &again.to_string_lossy(),
    ]));
    assert!(
        npy_payload(&again) == npy_payload(&npy),
        "Parquet input embeds to other vectors"
    );
    let Some(python) = python_with(&["pyarrow", "duckdb"]) else {
        return;
    };
    let script = r#"
import json, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, duckdb
path, npy = sys.argv[1], sys.argv[2]
want = np.load(npy)
t = pq.read_table(path)
assert t.schema.field("id").type == pa.string(), t.schema
assert t.schema.field("embedding").type == pa.list_(pa.field("item", pa.float32(), nullable=False), 384), t.schema
assert t.schema.field("text").type == pa.string(), t.schema
meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items() if k.startswith(b"embedkit.")}
assert meta["embedkit.model"] == "all-MiniLM-L6-v2" and meta["embedkit.precision"] == "float32", meta
assert meta["embedkit.dims"] == "384" and meta["embedkit.fingerprint"].endswith("+cpu-f32"), meta
assert json.loads(meta["embedkit.options"])["truncate_dim"] is None, meta
got = np.asarray(t.column("embedding").combine_chunks().flatten()).reshape(-1, 384)
assert got.dtype == np.float32 and got.shape == want.shape, (got.dtype, got.shape)
assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), "pyarrow values differ"
kv = dict(duckdb.sql(f"select key::varchar, value::varchar from parquet_kv_metadata('{path}')").fetchall())
assert kv["embedkit.fingerprint"] == meta["embedkit.fingerprint"], kv
rows = duckdb.sql(f"select id, embedding from '{path}' order by id").fetchall()
assert len(rows) == len(want) and len({r[0] for r in rows}) == len(want)
ids = t.column("id").to_pylist()
for rid, emb in rows[::100]:
    i = ids.index(rid)
    assert np.array_equal(np.array(emb, dtype=np.float32).view(np.uint32), want[i].view(np.uint32)), rid
print("ok", len(rows))
"#;
    let o = Command::new(python)
        .args(["-c", script, &pq_s, &npy.to_string_lossy()])
        .output()
        .expect("python runs");
    assert!(
        o.status.success() && text(&o.stdout).starts_with("ok 1500"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Peak resident memory of a finished child (Linux `ru_maxrss`, via wait4), and its exit status.
fn run_measuring_rss(args: &[&str]) -> u64 {
    // One malloc arena: glibc gives each thread its own, and their fragmentation creeps up with run time
    // whatever is allocated (tiny model, 16 tokens, default arenas: 39.6 MB at 10k texts, 45.5 MB at 100k,
    // 47.7 MB at 200k; one arena: 36.7, 39.4, 39.5 MB) — the corpus-size growth this test is about is not it.
    let child = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .env("MALLOC_ARENA_MAX", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes into the two out-parameters, which live for the call; the child is ours and
    // `Child` never waits for it afterwards (it is only dropped).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "embedkit {args:?} failed"
    );
    drop(child);
    usage.ru_maxrss as u64 * 1024
}

/// Streaming in the corpus size: embedding 200,000 texts to Parquet peaks at most a quarter of the output file's
/// size above 10,000 texts. Holding the texts or vectors until the end would add at least the whole file; a
/// ratio of peaks (the first version of this test) failed on ±2 MB of allocator noise around a 38 MB baseline.
#[test]
fn parquet_memory_is_flat_in_corpus_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sentences =
        std::fs::read_to_string(repo().join("bench/sentences.txt")).expect("bench sentences");
    let sentences: Vec<&str> = sentences.lines().collect();
    let model = tiny();
    let mut rss = Vec::new();
    let mut output_bytes = 0;
    for n in [10_000usize, 200_000] {
        let input = dir.path().join(format!("{n}.txt"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).expect("input"));
        for i in 0..n {
            writeln!(f, "{} ({i})", sentences[i % sentences.len()]).expect("write");
        }
        f.flush().expect("write");
        drop(f);
        let out = dir.path().join(format!("{n}.parquet"));
        rss.push(run_measuring_rss(&[
            "-q",
            "embed",
            "-m",
            &model,
            "--no-cache",
            "--max-length",
            "16",
            "--keep-text",
            "--input",
            &input.to_string_lossy(),
            "--format",
            "parquet",
            "--output",
            &out.to_string_lossy(),
        ]));
        assert_eq!(VectorFile::open(&out).expect("output").rows, n as u64);
        output_bytes = std::fs::metadata(&out).expect("output size").len();
    }
    let growth = rss[1].saturating_sub(rss[0]);
    eprintln!(
        "peak RSS: 10k texts {:.1} MB, 200k texts {:.1} MB (+{:.1} MB; the 200k file is {:.1} MB)",
        rss[0] as f64 / 1e6,
        rss[1] as f64 / 1e6,
        growth as f64 / 1e6,
        output_bytes as f64 / 1e6
    );
    assert!(
        growth <= output_bytes / 4,
        "peak RSS grew {:.1} MB from 10k to 200k texts, more than a quarter of the {:.1} MB output",
        growth as f64 / 1e6,
        output_bytes as f64 / 1e6
    );
}

/// A redis-server on a free loopback port, killed when dropped. Fails (never skips) without redis-server:
/// scripts/test installs it.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server; scripts/test does it)");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed().as_secs() < 20, "redis-server did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Redis(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 15, item 4: workers sharing a Redis cache; a shard whose output was lost (or that a second worker
/// ran as well) is computed again from cache reads only — no miss, and the same vectors.
#[test]
fn retried_shard_costs_only_cache_reads() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.1);
    let dir = tempfile::tempdir().expect("temp dir");
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus);
    let (c, m) = (corpus.to_string_lossy().into_owned(), tiny());
    let stats = || -> serde_json::Value {
        let o = embedkit(&["cache", "stats", "--cache", &url, "--json"]);
        serde_json::from_slice(&o.stdout).expect("stats JSON")
    };
    let mut runs = Vec::new();
    for attempt in ["first", "retry"] {
        let out = dir.path().join(attempt);
        let t0 = std::time::Instant::now();
        embedkit(&[
            "-q",
            "embed",
            "-m",
            &m,
            "--cache",
            &url,
            "--input",
            &c,
            "--shard",
            "5/8",
            "--output",
            &out.to_string_lossy(),
        ]);
        let secs = t0.elapsed().as_secs_f64();
        runs.push((
            secs,
            stats(),
            read_parquet(&out.join("part-00005-of-00008.parquet")).1,
        ));
    }
    let (first, retry) = (&runs[0], &runs[1]);
    eprintln!(
        "shard 5/8 ({} texts): first run {:.2} s, {} misses; retry {:.2} s, {} new misses, {} new hits",
        first.2.len() / 128,
        first.0,
        first.1["misses"],
        retry.0,
        retry.1["misses"].as_u64().unwrap_or(0) - first.1["misses"].as_u64().unwrap_or(0),
        retry.1["hits"].as_u64().unwrap_or(0) - first.1["hits"].as_u64().unwrap_or(0),
    );
    assert!(
        first.1["misses"].as_u64().is_some_and(|m| m > 1000),
        "{:?}",
        first.1
    );
    assert_eq!(
        retry.1["misses"], first.1["misses"],
        "the retry computed nothing"
    );
    assert!(retry.1["hits"].as_u64() > first.1["hits"].as_u64());
    assert!(
        retry.2 == first.2,
        "cached vectors are the computed ones, bit for bit"
    );
}
