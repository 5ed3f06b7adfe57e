//! `embedkit rerank`: documents ranked against a query by a cross-encoder (scores of (query, document) pairs, as
//! sentence-transformers' `CrossEncoder.rank`), by late interaction (MaxSim over token vectors) or by the cosine
//! of sentence vectors. A cross-encoder folder is always used as one. ColBERT models (PyLate, Stanford) encode the
//! query with their [Q] marker and [MASK] expansion and the documents with [D] and the skiplist.

use crate::{
    CHUNK, EncodeArgs, ModelArgs, cross_cli, input, load_model, one_line, progress, source_config,
};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use embedkit_core::{Embedder, Embeddings, EncodeOptions, Metric, top_k};
use embedkit_model::{DenseActivation, LocalEmbedder, PredictOptions};
use embedkit_vectors::{MaxSimOptions, maxsim_matrix};
use std::io::Write;

/// How `rerank` scores a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RerankMode {
    /// Σ over query tokens of the best document token's dot product (token vectors L2-normalized).
    Maxsim,
    /// Cosine of one vector per text.
    Cosine,
}

/// Arguments of `embedkit rerank`.
#[derive(Args)]
pub struct RerankArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    encode: EncodeArgs,
    /// The query.
    #[arg(long)]
    query: String,
    /// Documents to rank (.txt or .jsonl; `-` for stdin).
    #[arg(long, value_name = "FILE")]
    docs: String,
    /// JSONL field of --docs that holds the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// Scoring (default: maxsim for ColBERT models, cosine otherwise).
    #[arg(long, value_enum)]
    mode: Option<RerankMode>,
    /// Show only the best K documents.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Divide MaxSim by the query's token count (MeanMaxSim), so scores of different queries compare.
    #[arg(long)]
    length_normalize: bool,
    /// Prompt name for the query (default: `query` for ColBERT models); documents use --prompt-name
    /// (default: `document` for ColBERT models).
    #[arg(long)]
    query_prompt_name: Option<String>,
    /// Cross-encoders: the raw logits, without the model's activation (sigmoid for one label).
    #[arg(long)]
    raw_scores: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `embedkit rerank`.
pub fn run_rerank(args: &RerankArgs, quiet: bool) -> Result<()> {
    let docs = input::read_texts(&args.docs, None, &args.field)?;
    if let Some(dir) = cross_cli::cross_encoder_dir(&args.model.model, &source_config(quiet))? {
        let scores = cross_encoder_scores(args, &dir, &docs, quiet)?;
        return print_ranking(args, &docs, &scores, "cross-encoder");
    }
    if args.raw_scores {
        bail!(
            "--raw-scores applies to cross-encoders; '{}' is not one",
            args.model.model
        );
    }
    let model = load_model(&args.model, quiet)?;
    let colbert = model.colbert().is_some();
    let mode = args.mode.unwrap_or(if colbert {
        RerankMode::Maxsim
    } else {
        RerankMode::Cosine
    });
    if colbert && mode == RerankMode::Cosine {
        bail!(
            "--mode cosine needs one vector per text; '{}' is a ColBERT model (use --mode maxsim)",
            args.model.model
        );
    }
    let base = args.encode.options();
    let role = |given: &Option<String>, colbert_role: &str| EncodeOptions {
        prompt_name: given
            .clone()
            .or_else(|| colbert.then(|| colbert_role.to_string())),
        ..base.clone()
    };
    let query_options = role(
        &args.query_prompt_name.clone().or(base.prompt_name.clone()),
        "query",
    );
    let doc_options = role(&base.prompt_name, "document");
    let scores = match mode {
        RerankMode::Cosine => {
            cosine_scores(&model, args, &docs, &query_options, &doc_options, quiet)?
        }
        RerankMode::Maxsim => {
            maxsim_scores(&model, args, &docs, &query_options, &doc_options, quiet)?
        }
    };
    let mode_name = match mode {
        RerankMode::Maxsim => "maxsim",
        RerankMode::Cosine => "cosine",
    };
    print_ranking(args, &docs, &scores, mode_name)
}

/// Prints the documents best first (JSON rows or a table).
fn print_ranking(
    args: &RerankArgs,
    docs: &[String],
    scores: &[f32],
    mode_name: &str,
) -> Result<()> {
    let mut order: Vec<usize> = (0..docs.len()).collect();
    // Highest score first; ties keep the documents' order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(args.top_k.unwrap_or(docs.len()));
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> = order
            .iter()
            .enumerate()
            .map(|(rank, &i)| {
                serde_json::json!({"rank": rank + 1, "index": i, "score": scores[i], "text": docs[i]})
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        writeln!(out, "query: {}   ({mode_name})", args.query)?;
        writeln!(out, "{:>4}  {:>9}  text", "rank", "score")?;
        for (rank, &i) in order.iter().enumerate() {
            writeln!(
                out,
                "{:>4}  {:>9.4}  {}",
                rank + 1,
                scores[i],
                one_line(&docs[i], 100)
            )?;
        }
    }
    Ok(())
}

fn cosine_scores(
    model: &LocalEmbedder,
    args: &RerankArgs,
    docs: &[String],
    query_options: &EncodeOptions,
    doc_options: &EncodeOptions,
    quiet: bool,
) -> Result<Vec<f32>> {
    let q = model.embed(&[args.query.as_str()], query_options)?;
    let bar = progress::texts(docs.len(), quiet);
    let mut d = Embeddings::empty(q.dims());
    for chunk in docs.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        d.append(&model.embed(&refs, doc_options)?)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let mut scores = vec![0.0f32; docs.len()];
    for (i, s) in top_k(q.row(0), &d, docs.len(), Metric::Cosine) {
        scores[i] = s;
    }
    Ok(scores)
}

fn maxsim_scores(
    model: &LocalEmbedder,
    args: &RerankArgs,
    docs: &[String],
    query_options: &EncodeOptions,
    doc_options: &EncodeOptions,
    quiet: bool,
) -> Result<Vec<f32>> {
    // ColBERT models normalize their token vectors themselves; a plain model's raw token states are
    // normalized here (unless --no-normalize), so MaxSim sums cosines.
    let normalize = model.colbert().is_none() && query_options.normalize != Some(false);
    let tokens = |texts: &[&str], options: &EncodeOptions| -> Result<Vec<Embeddings>> {
        Ok(model
            .embed_tokens(texts, options)?
            .into_iter()
            .map(|t| {
                let mut v = t.vectors;
                if normalize {
                    v.normalize();
                }
                v
            })
            .collect())
    };
    let q = tokens(&[args.query.as_str()], query_options)
        .with_context(|| format!("cannot embed the query {:?}", one_line(&args.query, 60)))?;
    let bar = progress::texts(docs.len(), quiet);
    let mut scores = Vec::with_capacity(docs.len());
    let options = MaxSimOptions {
        length_normalize: args.length_normalize,
    };
    for chunk in docs.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let d = tokens(&refs, doc_options)?;
        scores.extend(maxsim_matrix(&q, &d, options));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(scores)
}

/// Scores of a cross-encoder for (query, document) pairs, in document order.
fn cross_encoder_scores(
    args: &RerankArgs,
    dir: &std::path::Path,
    docs: &[String],
    quiet: bool,
) -> Result<Vec<f32>> {
    let name = &args.model.model;
    if args.mode.is_some() || args.length_normalize || args.query_prompt_name.is_some() {
        bail!(
            "'{name}' is a cross-encoder: it scores (query, document) pairs itself, so --mode, \
             --length-normalize and --query-prompt-name do not apply"
        );
    }
    let model = cross_cli::load_cross_encoder(name, dir, args.model.threads, args.model.compute)?;
    if model.num_labels() != 1 {
        bail!(
            "'{name}' is a cross-encoder with {} labels ({}); ranking needs one score per pair",
            model.num_labels(),
            model.labels().join(", ")
        );
    }
    let base = args.encode.options();
    let options = PredictOptions {
        batch_size: base.batch_size,
        activation: args.raw_scores.then_some(DenseActivation::Identity),
        max_length: base.max_length,
        refuse_truncation: false,
    };
    let bar = progress::texts(docs.len(), quiet);
    let mut scores = Vec::with_capacity(docs.len());
    for chunk in docs.chunks(CHUNK) {
        let pairs: Vec<(&str, &str)> = chunk
            .iter()
            .map(|d| (args.query.as_str(), d.as_str()))
            .collect();
        scores.extend(model.predict(&pairs, &options)?.into_iter().map(|s| s[0]));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(scores)
}
