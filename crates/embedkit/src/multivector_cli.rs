//! `embedkit index build --multi-vector` and `embedkit search` over such an index: every token vector of every
//! document stored (float32, int8 or binary), documents ranked by exact MaxSim. ColBERT models encode
//! documents with their [D] role and queries with [Q] + [MASK] expansion (recorded in the index); any other
//! model's token states are L2-normalized.

use crate::documents::Doc;
use crate::hits_output::HitWriter;
use crate::index_cli::{IndexBuildArgs, index_precisions};
use crate::{CHUNK, progress};
use anyhow::{Result, bail};
use embedkit_core::{Embedder, Embeddings, EncodeOptions, Metric};
use embedkit_model::LocalEmbedder;
use embedkit_vectors::{CalibrationRanges, Index, IndexSpec, IndexWriter, Precision};

/// How the index's token vectors were made, recorded in its metadata so that queries match.
const TOKENS_KEY: &str = "token_vectors";

/// Token vectors of `docs` as `role` (`document`/`query` for ColBERT models), normalized for other models.
fn tokens(
    embedder: &dyn Embedder,
    texts: &[&str],
    options: &EncodeOptions,
    normalize: bool,
) -> Result<Vec<Embeddings>> {
    Ok(embedder
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
}

/// Runs `embedkit index build --multi-vector`.
pub fn run_build(
    args: &IndexBuildArgs,
    model: &LocalEmbedder,
    options: &EncodeOptions,
    quiet: bool,
) -> Result<()> {
    let (precision, rescore) =
        index_precisions("--precision", args.precision, args.rescore_vectors)?;
    if args.metric != Metric::Cosine {
        bail!("--multi-vector indexes score by MaxSim over unit token vectors (--metric cosine)");
    }
    let colbert = model.colbert().is_some();
    let mut options = options.clone();
    if colbert && options.prompt_name.is_none() && options.prompt.is_none() {
        options.prompt_name = Some("document".into());
    }
    let normalize = !colbert;
    let mut reader = args.open_input()?;
    let bar = progress::bytes(reader.total_bytes, quiet, "indexing");
    let needs_ranges = precision == Precision::Int8 || rescore == Some(Precision::Int8);
    let embed = |docs: &[Doc]| -> Result<Vec<Embeddings>> {
        let refs: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        tokens(model, &refs, &options, normalize)
    };
    // int8 ranges: from a file, or from the token vectors of the first batch of documents.
    let first = reader.next_batch(CHUNK)?;
    if first.is_empty() {
        bail!("no documents in '{}'", args.input.display());
    }
    let first_tokens = embed(&first)?;
    let ranges = match &args.ranges {
        Some(p) => Some(CalibrationRanges::load(p)?),
        None if needs_ranges => {
            let mut all = Embeddings::empty(model.dims());
            for t in &first_tokens {
                all.append(t)?;
            }
            if all.rows() < 2 {
                bail!(
                    "cannot compute int8 ranges from {} token vector(s) in '{}': give --ranges FILE",
                    all.rows(),
                    args.input.display()
                );
            }
            Some(CalibrationRanges::from_calibration(&all)?)
        }
        None => None,
    };
    if let (Some(path), Some(r)) = (&args.save_ranges, &ranges) {
        r.save(path)?;
    }
    let mut extra = serde_json::Map::new();
    extra.insert("input".into(), args.input.display().to_string().into());
    extra.insert(
        TOKENS_KEY.into(),
        if colbert { "colbert" } else { "normalized" }.into(),
    );
    let mut writer = IndexWriter::create_multi_vector(
        &args.output,
        IndexSpec {
            model: model.name().to_string(),
            fingerprint: model.fingerprint(),
            precision,
            rescore,
            metric: Metric::Cosine,
            dims: model.dims(),
            ranges: if needs_ranges { ranges } else { None },
            extra,
        },
    )?;
    let write = |docs: &[Doc], toks: &[Embeddings], writer: &mut IndexWriter| -> Result<()> {
        for (d, t) in docs.iter().zip(toks) {
            // .txt corpora: ids are line numbers from 0, as in single-vector indexes.
            let id =
                d.id.clone()
                    .unwrap_or_else(|| writer.documents().to_string());
            writer.add_document(&id, t)?;
        }
        Ok(())
    };
    write(&first, &first_tokens, &mut writer)?;
    loop {
        let docs = reader.next_batch(CHUNK)?;
        if docs.is_empty() {
            break;
        }
        let toks = embed(&docs)?;
        write(&docs, &toks, &mut writer)?;
        bar.set_position(reader.bytes_read);
        bar.set_message(format!("{} docs", writer.documents()));
    }
    let summary = writer.finish()?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "indexed {} documents ({} token vectors) with {} ({}{}, {:.1} MB) into {}",
            summary.documents,
            summary.count,
            model.name(),
            precision,
            rescore.map_or(String::new(), |p| format!(" + {p} for rescoring")),
            summary.file_bytes as f64 / 1e6,
            args.output.display()
        );
    }
    Ok(())
}

/// Searches a multi-vector `index` (already opened and checked against the model) for `queries`, writing the
/// `top_k` documents of each to `out`.
pub(crate) fn search(
    embedder: &dyn Embedder,
    options: &EncodeOptions,
    index: &Index,
    queries: &[Doc],
    top_k: usize,
    out: &mut HitWriter,
    quiet: bool,
) -> Result<()> {
    let colbert = index.meta().extra.get(TOKENS_KEY).and_then(|v| v.as_str()) == Some("colbert");
    let mut options = options.clone();
    if colbert && options.prompt_name.is_none() && options.prompt.is_none() {
        options.prompt_name = Some("query".into());
    }
    let bar = progress::bar(
        queries.len() as u64,
        quiet || queries.len() < CHUNK,
        "searching",
        "queries",
    );
    for chunk in queries.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
        let q = tokens(embedder, &refs, &options, !colbert)?;
        let hits = index.search_maxsim(&q, top_k)?;
        for (doc, h) in chunk.iter().zip(&hits) {
            out.write(index, doc, h)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}
