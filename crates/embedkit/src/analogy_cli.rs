//! `embedkit analogy`: word analogies by vector arithmetic over a vocabulary embedded with any model, and
//! accuracy on gensim's questions-words.txt format. The logic is `embedkit_vectors::analogy`.

use crate::{CHUNK, EncodeArgs, ModelArgs, cache_cli, load_model, progress, source_config};
use anyhow::{Context, Result, bail};
use clap::Args;
use embedkit_core::Embeddings;
use embedkit_vectors::{EvaluateOptions, WordVectors};
use std::io::Write;

/// Arguments of `embedkit analogy`.
#[derive(Args)]
pub struct AnalogyArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    encode: EncodeArgs,
    #[command(flatten)]
    cache: cache_cli::CacheArgs,
    /// A word added to the query vector (repeat: --positive king --positive woman).
    #[arg(long, value_name = "WORD")]
    positive: Vec<String>,
    /// A word subtracted from the query vector (repeat for several).
    #[arg(long, value_name = "WORD")]
    negative: Vec<String>,
    /// Candidate words, one a line (default with --questions: the questions' own words).
    #[arg(long, value_name = "FILE")]
    vocab: Option<String>,
    /// Evaluate on an analogy test set (gensim's questions-words.txt format: ": section" lines, then
    /// four words a line) instead of answering one query.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["positive", "negative"])]
    questions: Option<String>,
    /// Only the first N vocabulary words are known and are candidates (gensim's restrict_vocab).
    #[arg(long, value_name = "N", default_value_t = 300_000)]
    restrict_vocab: usize,
    /// Compare words as written (gensim's case_insensitive=False); the default uppercases everything.
    #[arg(long)]
    case_sensitive: bool,
    /// How many nearest words to show.
    #[arg(long, value_name = "K", default_value_t = 5)]
    top_k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn read_file(path: &str, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} file '{path}'"))
}

/// Words of a vocabulary file: one a line, surrounding whitespace trimmed, empty lines and repeats dropped.
fn vocab_words(text: &str, path: &str) -> Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut words = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let w = line.trim();
        if w.is_empty() {
            continue;
        }
        if w.split_whitespace().count() > 1 {
            bail!("{path}:{}: one word a line expected, found {w:?}", n + 1);
        }
        if seen.insert(w.to_string()) {
            words.push(w.to_string());
        }
    }
    if words.is_empty() {
        bail!("vocabulary file '{path}' has no words");
    }
    Ok(words)
}

/// Runs `embedkit analogy`.
pub fn run_analogy(args: &AnalogyArgs, quiet: bool) -> Result<()> {
    if args.questions.is_none() && args.positive.is_empty() && args.negative.is_empty() {
        bail!("give --positive/--negative words, or --questions FILE to measure accuracy");
    }
    if args.restrict_vocab == 0 {
        bail!("--restrict-vocab must be at least 1");
    }
    let questions = args
        .questions
        .as_deref()
        .map(|p| read_file(p, "questions"))
        .transpose()?;
    let words = match (&args.vocab, &questions) {
        (Some(path), _) => vocab_words(&read_file(path, "vocabulary")?, path)?,
        (None, Some(q)) => embedkit_vectors::question_words(q),
        (None, None) => {
            bail!("--positive/--negative need --vocab FILE (candidate words, one a line)")
        }
    };
    let model = load_model(&args.model, quiet)?;
    let cache = args.cache.open(&source_config(quiet).home)?;
    let model = cache_cli::with_cache(model, cache);
    let options = args.encode.options();
    let bar = progress::texts(words.len(), quiet);
    let mut vectors = Embeddings::empty(options.truncate_dim.unwrap_or(model.dims()));
    for chunk in words.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        vectors.append(&model.embed(&refs, &options)?)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let vocab = WordVectors::new(words, vectors)?;
    let mut out = std::io::stdout().lock();
    if let Some(q) = &questions {
        let report = vocab
            .evaluate(
                q,
                EvaluateOptions {
                    restrict_vocab: args.restrict_vocab,
                    case_insensitive: !args.case_sensitive,
                },
            )
            .with_context(|| {
                format!(
                    "questions file '{}'",
                    args.questions.as_deref().unwrap_or("")
                )
            })?;
        if args.json {
            let mut v = serde_json::to_value(&report)?;
            v["accuracy"] = report.total.accuracy().into();
            v["vocabulary"] = vocab.len().into();
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            return Ok(());
        }
        writeln!(
            out,
            "{:<32} {:>9} {:>13}",
            "section", "accuracy", "correct/total"
        )?;
        for s in report.sections.iter().chain(std::iter::once(&report.total)) {
            writeln!(
                out,
                "{:<32} {:>8.1}% {:>13}",
                s.section,
                100.0 * s.accuracy(),
                format!("{}/{}", s.correct, s.correct + s.incorrect)
            )?;
        }
        writeln!(
            out,
            "{} questions, {} skipped for out-of-vocabulary words ({:.1}%), {} invalid lines; {} vocabulary words",
            report.questions,
            report.oov,
            100.0 * report.oov as f64 / report.questions.max(1) as f64,
            report.invalid_lines,
            vocab.len().min(args.restrict_vocab)
        )?;
        return Ok(());
    }
    let pos: Vec<&str> = args.positive.iter().map(String::as_str).collect();
    let neg: Vec<&str> = args.negative.iter().map(String::as_str).collect();
    let hits = vocab
        .most_similar(&pos, &neg, args.top_k)
        .with_context(|| format!("vocabulary '{}'", args.vocab.as_deref().unwrap_or("")))?;
    if args.json {
        let rows: Vec<_> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| serde_json::json!({"rank": i + 1, "word": h.word, "score": h.score}))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        writeln!(out, "{:>4}  {:>8}  word", "rank", "score")?;
        for (i, h) in hits.iter().enumerate() {
            writeln!(out, "{:>4}  {:>8.4}  {}", i + 1, h.score, h.word)?;
        }
    }
    Ok(())
}
