//! `embedkit search`: queries (arguments or a .txt/JSONL file) embedded with the index's model and ranked
//! against an index file; multi-vector indexes are searched by MaxSim in [`crate::multivector_cli`].

use crate::documents::{Doc, DocReader, embed_docs};
use crate::hits_output::{HitWriter, SearchFormat};
use crate::{CHUNK, multivector_cli, progress};
use anyhow::{Result, bail};
use clap::Args;
use embedkit_core::{Embedder, EncodeOptions, Metric};
use embedkit_vectors::{Index, RescoreWith, SearchOptions};
use std::path::PathBuf;

/// `embedkit search --index X.idx (QUERY ... | --queries FILE)`.
#[derive(Args, Debug, Clone)]
pub struct SearchArgs {
    /// The index to search.
    #[arg(long, value_name = "X.idx")]
    pub index: PathBuf,
    /// Query texts (or use --queries).
    #[arg(value_name = "QUERY")]
    pub query: Vec<String>,
    /// Queries from a file: .txt (one per line; ids are line numbers from 0) or JSONL with `_id` and `text`
    /// (a BEIR queries.jsonl).
    #[arg(long, value_name = "FILE", conflicts_with = "query")]
    pub queries: Option<PathBuf>,
    /// Query model (default: the one the index was built with; any other is refused).
    #[arg(long, short, value_name = "MODEL")]
    pub model: Option<String>,
    /// Hits per query.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub top_k: usize,
    /// Binary indexes: rescore the best rescore × k by Hamming distance with the float query (0: no rescoring).
    #[arg(long, default_value_t = 4)]
    pub rescore: usize,
    /// Binary indexes: rescore against bits, int8 or float32 (default: the stored vectors, else bits).
    #[arg(long, value_name = "WITH")]
    pub rescore_with: Option<RescoreWith>,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    pub format: SearchFormat,
    /// Write to FILE (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// JSONL field of --queries holding the id.
    #[arg(long, default_value = "_id")]
    pub id_field: String,
    /// JSONL field of --queries holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
}

/// The model `search` must load — `--model`, else the one recorded in the index — and the arithmetic the
/// index was built with (its fingerprint ends in the backend's, e.g. `+cpu-int8`).
pub fn search_model(args: &SearchArgs) -> Result<(String, embedkit_cpu::Compute)> {
    let index = Index::open(&args.index)?;
    let compute = if index.meta().fingerprint.ends_with("+cpu-int8") {
        embedkit_cpu::Compute::Int8
    } else {
        embedkit_cpu::Compute::F32
    };
    let model = match &args.model {
        Some(m) => m.clone(),
        None => index.meta().model.clone(),
    };
    Ok((model, compute))
}

/// The queries of `embedkit search`: arguments (ids 0, 1, …) or a .txt/JSONL file.
pub(crate) fn read_queries(args: &SearchArgs) -> Result<Vec<Doc>> {
    let queries: Vec<Doc> = match &args.queries {
        Some(path) => {
            let mut r = DocReader::open(path, None, &args.id_field, &args.text_field, "")?;
            let docs = r.next_batch(usize::MAX)?;
            docs.into_iter()
                .enumerate()
                .map(|(i, d)| Doc {
                    id: Some(d.id.unwrap_or_else(|| i.to_string())),
                    text: d.text,
                })
                .collect()
        }
        None if args.query.is_empty() => {
            bail!("no queries: pass them as arguments or with --queries FILE")
        }
        None => args
            .query
            .iter()
            .enumerate()
            .map(|(i, q)| Doc {
                id: Some(i.to_string()),
                text: q.clone(),
            })
            .collect(),
    };
    Ok(queries)
}

/// Runs `embedkit search` with the query `embedder` (which must be the index's model).
pub fn run_search(
    args: &SearchArgs,
    embedder: &dyn Embedder,
    options: &EncodeOptions,
    quiet: bool,
) -> Result<()> {
    let index = Index::open(&args.index)?;
    index.check_model(embedder.name(), &embedder.fingerprint())?;
    let queries = read_queries(args)?;
    let mut out = HitWriter::open(args.output.as_deref(), args.format)?;
    if index.multi_vector().is_some() {
        multivector_cli::search(
            embedder, options, &index, &queries, args.top_k, &mut out, quiet,
        )?;
        return out.finish();
    }
    let meta = index.meta();
    let mut options = options.clone();
    if meta.metric == Metric::Cosine {
        options.normalize = Some(true);
    }
    if embedder.dims() != meta.dims {
        // An index of Matryoshka-truncated vectors: queries are truncated the same way.
        options.truncate_dim = Some(meta.dims);
    }
    let search = SearchOptions {
        top_k: args.top_k,
        rescore: args.rescore,
        rescore_with: args.rescore_with,
        ..SearchOptions::default()
    };
    let bar = progress::bar(
        queries.len() as u64,
        quiet || queries.len() < CHUNK,
        "searching",
        "queries",
    );
    for chunk in queries.chunks(CHUNK) {
        let e = embed_docs(embedder, chunk, &options)?;
        let hits = index.search(&e, &search)?;
        for (q, h) in chunk.iter().zip(&hits) {
            out.write(&index, q, h)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index_cli::{IndexBuildArgs, RescoreStore, run_index_build};
    use crate::quantize_cli::{PrecisionArgs, QuantizeArgs};
    use crate::test_support::{Toy, build_args};
    use embedkit_vectors::Precision;

    #[test]
    fn build_and_search_a_beir_corpus() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus.jsonl");
        std::fs::write(
            &corpus,
            "{\"_id\": \"d1\", \"title\": \"Cats\", \"text\": \"cats purr\"}\n\n\
             {\"_id\": 7, \"text\": \"dogs bark loudly\"}\n\
             {\"_id\": \"d3\", \"title\": \"\", \"text\": \"fish swim\"}\n\
             {\"_id\": \"d4\", \"text\": \"birds sing\"}\n",
        )
        .unwrap();
        let toy = Toy { fp: "toy-1" };
        for precision in ["float32", "int8", "binary"] {
            let out = dir.path().join(format!("{precision}.idx"));
            let mut args = build_args(&corpus, &out, precision);
            args.save_ranges = Some(dir.path().join("ranges.json"));
            run_index_build(&args, &toy, &EncodeOptions::default(), true).unwrap();
            let index = Index::open(&out).unwrap();
            assert_eq!(index.len(), 4);
            assert_eq!(index.id(1).unwrap(), "7");
            let hits_path = dir.path().join("hits.jsonl");
            let search = SearchArgs {
                index: out.clone(),
                query: vec!["dogs bark loudly".into(), "Cats cats purr".into()],
                queries: None,
                model: None,
                top_k: 2,
                rescore: 4,
                rescore_with: None,
                format: SearchFormat::Jsonl,
                output: Some(hits_path.clone()),
                id_field: "_id".into(),
                text_field: "text".into(),
            };
            assert_eq!(search_model(&search).unwrap().0, "toy");
            run_search(&search, &toy, &EncodeOptions::default(), true).unwrap();
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(&hits_path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 4, "{precision}");
            // Identical texts embed identically, so each query finds its document first.
            assert_eq!(lines[0]["query_id"], "0");
            assert_eq!(lines[0]["doc_id"], "7", "{precision}");
            assert_eq!(lines[0]["rank"], 1);
            assert_eq!(
                lines[2]["doc_id"], "d1",
                "{precision}: title joined with text"
            );

            // Another model is refused with a clear error.
            let err = run_search(
                &search,
                &Toy { fp: "toy-2" },
                &EncodeOptions::default(),
                true,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("toy-1") && err.contains("toy-2"), "{err}");
        }
        assert!(dir.path().join("ranges.json").exists());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Quantize(QuantizeArgs),
        Build(IndexBuildArgs),
        Search(SearchArgs),
        Embed(PrecisionArgs),
    }

    #[test]
    fn flags_parse() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let parse =
            |args: &[&str]| Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()));
        let Ok(Cli {
            command: Cmd::Quantize(q),
        }) = parse(&["quantize", "in.npy", "-p", "ubinary", "-o", "out.npy"])
        else {
            panic!("quantize did not parse");
        };
        assert_eq!(q.precision, Precision::Ubinary);
        let Ok(Cli {
            command: Cmd::Build(b),
        }) = parse(&[
            "build",
            "-i",
            "c.jsonl",
            "-o",
            "x.idx",
            "--precision",
            "binary",
            "--rescore-vectors",
            "none",
        ])
        else {
            panic!("build did not parse");
        };
        assert_eq!(
            (b.precision, b.rescore_vectors, b.metric),
            (Precision::Binary, RescoreStore::None, Metric::Cosine)
        );
        let Ok(Cli {
            command: Cmd::Search(s),
        }) = parse(&[
            "search",
            "--index",
            "x.idx",
            "-k",
            "3",
            "--rescore-with",
            "int8",
            "--format",
            "jsonl",
            "a",
            "b",
        ])
        else {
            panic!("search did not parse");
        };
        assert_eq!(
            (s.top_k, s.rescore, s.rescore_with),
            (3, 4, Some(RescoreWith::Int8))
        );
        assert_eq!(s.query, vec!["a", "b"]);
        assert!(parse(&["search", "--index", "x.idx", "--queries", "q.jsonl", "a"]).is_err());
        assert!(
            parse(&["embed", "--ranges", "r.json"]).is_err(),
            "--ranges needs --precision"
        );
        let err = parse(&["quantize", "in.npy", "-p", "int4", "-o", "o.npy"])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("unknown precision 'int4'")));
    }
}
