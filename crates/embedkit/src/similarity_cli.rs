//! `embedkit similarity`: the similarity matrix of a few texts, or documents ranked against one query, with the
//! model's own similarity function unless --metric says otherwise.

use crate::{CHUNK, EncodeArgs, ModelArgs, input, load_model, one_line, progress, providers_cli};
use anyhow::{Context, Result, bail};
use clap::Args;
use embedkit_core::{Embedder, Embeddings, EncodeOptions, Metric, similarity_matrix, top_k};
use std::io::Write;
use std::sync::Arc;

/// `embedkit similarity`: a matrix of TEXT arguments, or --docs ranked against --query.
#[derive(Args)]
pub(crate) struct SimilarityArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    encode: EncodeArgs,
    /// Texts to compare pairwise (a matrix).
    texts: Vec<String>,
    /// Rank documents against this query instead.
    #[arg(long, requires = "docs")]
    query: Option<String>,
    /// Documents to rank (.txt or .jsonl; `-` for stdin).
    #[arg(long, value_name = "FILE")]
    docs: Option<String>,
    /// JSONL field of --docs that holds the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// Similarity function (default: the model's, usually cosine).
    #[arg(long)]
    metric: Option<Metric>,
    /// Show only the best K documents.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Prompt name for the query (e.g. query); documents use --prompt-name.
    #[arg(long)]
    query_prompt_name: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `embedkit similarity`.
pub(crate) fn run(args: SimilarityArgs, quiet: bool) -> Result<()> {
    // API models compare by cosine unless told otherwise; local ones as their config says.
    let (model, model_metric): (Arc<dyn Embedder>, Option<String>) =
        match providers_cli::load(&args.model.model, &args.model.api)? {
            Some(api) => (Arc::new(api), None),
            None => {
                let m = load_model(&args.model, quiet)?;
                let metric = m.layout().similarity_fn_name.clone();
                (Arc::new(m), metric)
            }
        };
    let options = args.encode.options();
    let metric = match args.metric {
        Some(m) => m,
        None => model_metric
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or(Metric::Cosine),
    };
    let mut out = std::io::stdout().lock();
    if let Some(query) = &args.query {
        if !args.texts.is_empty() {
            bail!("give either TEXT arguments (a matrix) or --query with --docs, not both");
        }
        let docs_path = args.docs.as_deref().context("--query needs --docs FILE")?;
        let docs = input::read_texts(docs_path, None, &args.field)?;
        let query_options = EncodeOptions {
            prompt_name: args
                .query_prompt_name
                .clone()
                .or(options.prompt_name.clone()),
            ..options.clone()
        };
        let q = model.embed(&[query.as_str()], &query_options)?;
        let bar = progress::texts(docs.len(), quiet);
        let mut d = Embeddings::empty(q.dims());
        for chunk in docs.chunks(CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            d.append(&model.embed(&refs, &options)?)?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let hits = top_k(q.row(0), &d, args.top_k.unwrap_or(docs.len()), metric);
        if args.json {
            let rows: Vec<_> = hits
                .iter()
                .enumerate()
                .map(|(rank, &(i, score))| {
                    serde_json::json!({"rank": rank + 1, "index": i, "score": score, "text": docs[i]})
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        } else {
            writeln!(out, "query: {query}   ({metric})")?;
            writeln!(out, "{:>4}  {:>8}  text", "rank", "score")?;
            for (rank, &(i, score)) in hits.iter().enumerate() {
                writeln!(
                    out,
                    "{:>4}  {:>8.4}  {}",
                    rank + 1,
                    score,
                    one_line(&docs[i], 100)
                )?;
            }
        }
        return Ok(());
    }
    if args.texts.len() < 2 {
        bail!("give at least two texts to compare, or --query Q --docs FILE");
    }
    let refs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let e = model.embed(&refs, &options)?;
    let matrix = similarity_matrix(&e, &e, metric);
    if args.json {
        let v = serde_json::json!({"metric": metric.to_string(), "texts": args.texts, "matrix": matrix});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "{metric} similarity")?;
    for (i, t) in args.texts.iter().enumerate() {
        writeln!(out, "[{i}] {}", one_line(t, 100))?;
    }
    write!(out, "{:>5}", "")?;
    for j in 0..args.texts.len() {
        write!(out, " {:>8}", format!("[{j}]"))?;
    }
    writeln!(out)?;
    for (i, row) in matrix.iter().enumerate() {
        write!(out, "{:>5}", format!("[{i}]"))?;
        for v in row {
            write!(out, " {v:>8.4}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
