//! Search benchmark over seeded random unit vectors (default 1,000,000 × 384): ms per query for f32 exact
//! top-10, int8, and binary + rescore, one query at a time and in batches, with recall against f32 exact.
//!
//! Also writes the corpus and queries as `.npy` (and our f32 top-10) so `tools/bench_search_numpy.py` can
//! time numpy on exactly the same data:
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p embedkit-vectors --example search_bench -- [--rows N]
//!     [--dims D] [--queries Q] [--top-k K] [--rescore R] [--dir DIR] [--seed S]
//! ```

use embedkit_core::{Embeddings, Metric};
use embedkit_vectors::{
    CalibrationRanges, Hit, Index, IndexSpec, IndexWriter, Precision, RescoreWith, SearchOptions,
};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    rows: usize,
    dims: usize,
    queries: usize,
    top_k: usize,
    rescore: usize,
    dir: PathBuf,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        rows: 1_000_000,
        dims: 384,
        queries: 100,
        top_k: 10,
        rescore: 4,
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tmp/search-bench"),
        seed: 42,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--rows" => a.rows = num(value()?)?,
            "--dims" => a.dims = num(value()?)?,
            "--queries" => a.queries = num(value()?)?,
            "--top-k" => a.top_k = num(value()?)?,
            "--rescore" => a.rescore = num(value()?)?,
            "--seed" => a.seed = num(value()?)? as u64,
            "--dir" => a.dir = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// SplitMix64: tiny, seedable, and good enough for benchmark data.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Two standard normals (Box–Muller).
    fn normals(&mut self) -> (f32, f32) {
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let t = std::f64::consts::TAU * v;
        ((r * t.cos()) as f32, (r * t.sin()) as f32)
    }
}

/// `rows` random unit vectors (uniform on the sphere), generated in parallel with one seed per chunk so the
/// data does not depend on the thread count.
fn unit_vectors(rows: usize, dims: usize, seed: u64) -> Embeddings {
    const CHUNK: usize = 4096;
    let mut data = vec![0.0f32; rows * dims];
    data.par_chunks_mut(CHUNK * dims)
        .enumerate()
        .for_each(|(c, out)| {
            let mut rng = SplitMix(seed ^ (c as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
            for row in out.chunks_exact_mut(dims) {
                let mut i = 0;
                while i < dims {
                    let (a, b) = rng.normals();
                    row[i] = a;
                    if i + 1 < dims {
                        row[i + 1] = b;
                    }
                    i += 2;
                }
                embedkit_core::l2_normalize(row);
            }
        });
    Embeddings::new(data, rows, dims).unwrap_or_else(|e| panic!("shape: {e}"))
}

fn write_npy_f32(path: &Path, e: &Embeddings) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    embedkit_vectors::npy::write_npy_header(&mut w, "<f4", &[e.rows(), e.dims()])?;
    w.write_all(bytemuck::cast_slice(e.as_slice()))?;
    w.flush()
}

fn build(path: &Path, spec: IndexSpec, corpus: &Embeddings) -> Res<(Index, f64)> {
    let t = Instant::now();
    let mut w = IndexWriter::create(path, spec)?;
    let dims = corpus.dims();
    for chunk in corpus.as_slice().chunks(65_536 * dims) {
        w.add_unnamed(&Embeddings::new(chunk.to_vec(), chunk.len() / dims, dims)?)?;
    }
    w.finish()?;
    let secs = t.elapsed().as_secs_f64();
    Ok((Index::open(path)?, secs))
}

/// Median ms per query, one query per call (latency), over the first `n` queries. The median, not the mean,
/// so that a burst of other work on a shared machine does not set the number.
fn time_single(index: &Index, queries: &Embeddings, n: usize, opts: &SearchOptions) -> Res<f64> {
    let dims = queries.dims();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let q = Embeddings::new(queries.row(i).to_vec(), 1, dims)?;
        let t = Instant::now();
        std::hint::black_box(index.search(&q, opts)?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// ms per query with all queries in one call (throughput), the best of `reps` runs, and the hits.
fn time_batch(
    index: &Index,
    queries: &Embeddings,
    opts: &SearchOptions,
    reps: usize,
) -> Res<(f64, Vec<Vec<Hit>>)> {
    let mut best = f64::INFINITY;
    let mut hits = Vec::new();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        hits = index.search(queries, opts)?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3 / queries.rows() as f64);
    }
    Ok((best, hits))
}

/// The 1-minute load average, to show how busy the machine was.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn recall(got: &[Vec<Hit>], want: &[Vec<Hit>]) -> f64 {
    let total: usize = want.iter().map(Vec::len).sum();
    let hit: usize = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            g.iter()
                .filter(|h| w.iter().any(|x| x.row == h.row))
                .count()
        })
        .sum();
    hit as f64 / total.max(1) as f64
}

fn main() -> Res<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.dir)?;
    let (rows, dims) = (args.rows, args.dims);
    eprintln!("load average at start: {}", load());
    eprintln!(
        "{rows} × {dims} random unit vectors, {} queries, top-{}, rescore {}, {} threads, SIMD {}",
        args.queries,
        args.top_k,
        args.rescore,
        rayon::current_num_threads(),
        embedkit_vectors::simd::active().level()
    );
    let t = Instant::now();
    let corpus = unit_vectors(rows, dims, args.seed);
    let queries = unit_vectors(args.queries, dims, args.seed.wrapping_add(1) ^ 0x5555);
    eprintln!("generated in {:.1} s", t.elapsed().as_secs_f64());
    write_npy_f32(&args.dir.join("corpus.npy"), &corpus)?;
    write_npy_f32(&args.dir.join("queries.npy"), &queries)?;

    let spec = |precision, rescore, ranges| IndexSpec {
        model: "random".into(),
        fingerprint: "random".into(),
        precision,
        rescore,
        metric: Metric::Cosine,
        dims,
        ranges,
        extra: Default::default(),
    };
    let ranges = CalibrationRanges::from_embeddings(&corpus)?;
    let (f32_index, b_f32) = build(
        &args.dir.join("f32.idx"),
        spec(Precision::F32, None, None),
        &corpus,
    )?;
    let (int8_index, b_i8) = build(
        &args.dir.join("int8.idx"),
        spec(Precision::Int8, None, Some(ranges.clone())),
        &corpus,
    )?;
    let (bin_index, b_bin) = build(
        &args.dir.join("binary-int8.idx"),
        spec(Precision::Binary, Some(Precision::Int8), Some(ranges)),
        &corpus,
    )?;
    let (bits_index, b_bits) = build(
        &args.dir.join("binary.idx"),
        spec(Precision::Ubinary, None, None),
        &corpus,
    )?;
    drop(corpus);
    eprintln!(
        "built f32 in {b_f32:.1} s, int8 in {b_i8:.1} s, binary+int8 in {b_bin:.1} s, binary in {b_bits:.1} s"
    );
    eprintln!(
        "ubinary index: {} bytes, {:.1}× smaller than the f32 index ({} bytes)",
        bits_index.file_bytes(),
        f32_index.file_bytes() as f64 / bits_index.file_bytes() as f64,
        f32_index.file_bytes()
    );
    // Opening validates the header and maps the file; it reads no vectors, so it does not grow with size.
    let t = Instant::now();
    let reopened = Index::open(f32_index.path())?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "opened the {:.0} MB f32 index in {open_ms:.2} ms",
        reopened.file_bytes() as f64 / 1e6
    );
    drop(reopened);

    let base = SearchOptions {
        top_k: args.top_k,
        rescore: args.rescore,
        rescore_with: None,
        query_batch: 64,
    };
    let cases: Vec<(&str, &Index, SearchOptions)> = vec![
        ("f32 exact", &f32_index, base.clone()),
        ("int8 exact (dequantized dot)", &int8_index, base.clone()),
        (
            "binary + rescore (int8)",
            &bin_index,
            SearchOptions {
                rescore_with: Some(RescoreWith::Int8),
                ..base.clone()
            },
        ),
        (
            "binary + rescore (bits, as sentence-transformers; no int8 stored)",
            &bits_index,
            SearchOptions {
                rescore_with: Some(RescoreWith::Bits),
                ..base.clone()
            },
        ),
        (
            "binary, Hamming only",
            &bits_index,
            SearchOptions {
                rescore: 0,
                ..base.clone()
            },
        ),
    ];
    let single_n = args.queries.min(20);
    let mut exact: Option<Vec<Vec<Hit>>> = None;
    let mut results = Vec::new();
    println!(
        "| search | index MB | ms/query, 1 at a time (median of {single_n}) | ms/query, batch of {} (best of 3) | recall@{} vs f32 |",
        args.queries, args.top_k
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, index, opts) in cases {
        // Warm-up: fault the mapped pages in and let the CPU clocks settle.
        index.search(&queries, &opts)?;
        let single = time_single(index, &queries, single_n, &opts)?;
        let (batch, hits) = time_batch(index, &queries, &opts, 3)?;
        let r = match &exact {
            None => {
                exact = Some(hits.clone());
                1.0
            }
            Some(e) => recall(&hits, e),
        };
        println!(
            "| {name} | {:.0} | {single:.2} | {batch:.2} | {r:.3} |",
            index.file_bytes() as f64 / 1e6
        );
        results.push(serde_json::json!({
            "search": name, "index_bytes": index.file_bytes(), "ms_single": single, "ms_batch": batch, "recall": r,
        }));
    }
    eprintln!("load average at end: {}", load());
    // Our f32 top-k rows for the numpy script to compare against.
    if let Some(e) = &exact {
        let mut flat = Vec::new();
        for h in e {
            for x in h {
                flat.extend_from_slice(&(x.row as i64).to_le_bytes());
            }
        }
        let mut w = std::fs::File::create(args.dir.join("rust_f32_top.npy"))?;
        embedkit_vectors::npy::write_npy(&mut w, "<i8", &[e.len(), args.top_k], &flat)?;
    }
    let summary = serde_json::json!({
        "rows": rows, "dims": dims, "queries": args.queries, "top_k": args.top_k, "rescore": args.rescore,
        "threads": rayon::current_num_threads(), "simd": embedkit_vectors::simd::active().level().to_string(),
        "open_ms": open_ms, "ubinary_bytes": bits_index.file_bytes(), "f32_bytes": f32_index.file_bytes(),
        "results": results,
    });
    std::fs::write(
        args.dir.join("rust_results.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(())
}
