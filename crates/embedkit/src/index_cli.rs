//! `embedkit index build`: a corpus streamed through the model into an index file of float32, int8 or binary
//! vectors (binary with int8 or float32 vectors kept for rescoring), written atomically. Multi-vector
//! (late-interaction) indexes are built by [`crate::multivector_cli`] from the same flags.

use crate::documents::{Doc, DocReader, embed_docs};
use crate::input::InputFormat;
use crate::{CHUNK, progress};
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use embedkit_core::{Embedder, Embeddings, EncodeOptions, Metric};
use embedkit_vectors::{CalibrationRanges, IndexSpec, IndexWriter, Precision};
use std::path::PathBuf;

/// What a binary index stores for rescoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RescoreStore {
    /// int8 vectors (8× the bits; rescoring close to float).
    Int8,
    /// float32 vectors (32× the bits; exact rescoring).
    Float32,
    /// Nothing: rescore against the bits, as sentence-transformers does (smallest index).
    None,
}

/// `embedkit index build --input corpus.jsonl --precision P --output X.idx`.
#[derive(Args, Debug, Clone)]
pub struct IndexBuildArgs {
    /// The corpus: .txt (one document per line; ids are line numbers from 0) or JSONL with `_id`, `title`
    /// and `text` (a BEIR corpus.jsonl). `title` and `text` are joined with a space, as BEIR does.
    #[arg(long, short, value_name = "FILE")]
    pub input: PathBuf,
    /// Layout of --input (default: from its extension).
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormat>,
    /// Index file to write (atomically: a build that dies leaves no file there).
    #[arg(long, short, value_name = "X.idx")]
    pub output: PathBuf,
    /// Stored precision: float32, int8 or binary.
    #[arg(long, short, value_name = "P", default_value = "float32")]
    pub precision: Precision,
    /// Binary indexes: vectors kept for rescoring the Hamming candidates.
    #[arg(long, value_enum, default_value = "int8")]
    pub rescore_vectors: RescoreStore,
    /// Ranking function: cosine (vectors are normalized) or dot.
    #[arg(long, default_value = "cosine")]
    pub metric: Metric,
    /// int8 ranges from FILE (JSON or numpy .npy); default: from the first --calibration-size documents.
    #[arg(long, value_name = "FILE")]
    pub ranges: Option<PathBuf>,
    /// Documents embedded first to compute the int8 ranges (the whole corpus when smaller: then the bytes
    /// equal sentence-transformers' quantize_embeddings of all vectors).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub calibration_size: usize,
    /// Write the int8 ranges used to FILE.
    #[arg(long, value_name = "FILE")]
    pub save_ranges: Option<PathBuf>,
    /// JSONL field holding the document id.
    #[arg(long, default_value = "_id")]
    pub id_field: String,
    /// JSONL field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// JSONL field holding the title (optional in each record; empty to ignore titles).
    #[arg(long, default_value = "title")]
    pub title_field: String,
    /// Store every token vector (late interaction: ColBERT models, or any model's token states) and search
    /// by MaxSim.
    #[arg(long)]
    pub multi_vector: bool,
}

impl IndexBuildArgs {
    /// A reader of --input with the record fields the flags name.
    pub(crate) fn open_input(&self) -> Result<DocReader> {
        DocReader::open(
            &self.input,
            self.input_format,
            &self.id_field,
            &self.text_field,
            &self.title_field,
        )
    }
}

/// What an index stores: its primary precision (`F32`, `Int8`, or `Ubinary` for either binary flag) and, for a
/// binary index, the precision of the vectors kept for rescoring. `flag` names the option in the error.
pub(crate) fn index_precisions(
    flag: &str,
    precision: Precision,
    store: RescoreStore,
) -> Result<(Precision, Option<Precision>)> {
    let precision = match precision {
        Precision::F32 | Precision::Int8 => precision,
        Precision::Binary | Precision::Ubinary => Precision::Ubinary,
        p => bail!("{flag} {p}: an index stores float32, int8 or binary vectors"),
    };
    let rescore = match (precision, store) {
        (Precision::Ubinary, RescoreStore::Int8) => Some(Precision::Int8),
        (Precision::Ubinary, RescoreStore::Float32) => Some(Precision::F32),
        _ => None,
    };
    Ok((precision, rescore))
}

/// Runs `embedkit index build` with `embedder` and the encode `options` from the model flags.
pub fn run_index_build(
    args: &IndexBuildArgs,
    embedder: &dyn Embedder,
    options: &EncodeOptions,
    quiet: bool,
) -> Result<()> {
    let (precision, rescore) =
        index_precisions("--precision", args.precision, args.rescore_vectors)?;
    if !matches!(args.metric, Metric::Cosine | Metric::Dot) {
        bail!("--metric {}: an index ranks by cosine or dot", args.metric);
    }
    let needs_ranges = precision == Precision::Int8 || rescore == Some(Precision::Int8);
    let mut options = options.clone();
    if args.metric == Metric::Cosine {
        // Cosine indexes hold unit vectors; asking the model for them avoids a second normalization.
        options.normalize = Some(true);
    }
    let mut reader = args.open_input()?;
    let bar = progress::bytes(reader.total_bytes, quiet, "indexing");

    // int8 needs ranges before the first row is written: from a file, or from the first documents, whose
    // vectors are kept and written afterwards (embedded once).
    let mut pending: Vec<(Vec<Doc>, Embeddings)> = Vec::new();
    let mut ranges = match &args.ranges {
        Some(p) if needs_ranges => Some(CalibrationRanges::load(p)?),
        Some(_) => {
            bail!("--ranges is only used by int8 indexes and binary indexes with int8 rescoring")
        }
        None => None,
    };
    if needs_ranges && ranges.is_none() {
        let mut seen = 0;
        let mut r: Option<CalibrationRanges> = None;
        while seen < args.calibration_size.max(2) {
            let docs = reader.next_batch(CHUNK.min(args.calibration_size.max(2) - seen))?;
            if docs.is_empty() {
                break;
            }
            let e = embed_docs(embedder, &docs, &options)?;
            match r.as_mut() {
                Some(r) => r.update(&e)?,
                None => r = Some(CalibrationRanges::from_calibration(&e)?),
            }
            seen += docs.len();
            bar.set_position(reader.bytes_read);
            bar.set_message(format!("{seen} docs (calibrating)"));
            pending.push((docs, e));
        }
        if seen < 2 {
            bail!(
                "cannot compute int8 ranges from {seen} document(s) in '{}': give --ranges FILE",
                args.input.display()
            );
        }
        ranges = r;
    }
    if let (Some(path), Some(r)) = (&args.save_ranges, &ranges) {
        r.save(path)?;
    }

    let mut extra = serde_json::Map::new();
    extra.insert("input".into(), args.input.display().to_string().into());
    if let Some(p) = &options.prompt {
        extra.insert("prompt".into(), p.clone().into());
    }
    if let Some(p) = &options.prompt_name {
        extra.insert("prompt_name".into(), p.clone().into());
    }
    let mut writer: Option<IndexWriter> = None;
    let write = |docs: &[Doc], e: &Embeddings, writer: &mut Option<IndexWriter>| -> Result<()> {
        if e.is_empty() {
            return Ok(());
        }
        let w = match writer {
            Some(w) => w,
            None => writer.insert(IndexWriter::create(
                &args.output,
                IndexSpec {
                    model: embedder.name().to_string(),
                    fingerprint: embedder.fingerprint(),
                    precision,
                    rescore,
                    metric: args.metric,
                    dims: e.dims(),
                    ranges: ranges.clone(),
                    extra: extra.clone(),
                },
            )?),
        };
        if docs.first().is_some_and(|d| d.id.is_some()) {
            let ids: Vec<&str> = docs.iter().map(|d| d.id.as_deref().unwrap_or("")).collect();
            w.add(&ids, e)?;
        } else {
            w.add_unnamed(e)?;
        }
        Ok(())
    };
    for (docs, e) in &pending {
        write(docs, e, &mut writer)?;
    }
    drop(pending);
    loop {
        let docs = reader.next_batch(CHUNK)?;
        if docs.is_empty() {
            break;
        }
        let e = embed_docs(embedder, &docs, &options)?;
        write(&docs, &e, &mut writer)?;
        bar.set_position(reader.bytes_read);
        bar.set_message(format!(
            "{} docs",
            writer.as_ref().map_or(0, IndexWriter::len)
        ));
    }
    let Some(writer) = writer else {
        bail!("no documents in '{}'", args.input.display());
    };
    let summary = writer.finish()?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "indexed {} documents with {} ({} vectors{}, {:.1} MB) into {}",
            summary.count,
            embedder.name(),
            precision,
            rescore.map_or(String::new(), |p| format!(" + {p} for rescoring")),
            summary.file_bytes as f64 / 1e6,
            args.output.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Toy, build_args};
    use embedkit_vectors::Index;

    #[test]
    fn txt_corpus_uses_line_numbers_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c.txt");
        std::fs::write(&corpus, "alpha\nbeta\n\ngamma\n").unwrap();
        let out = dir.path().join("t.idx");
        run_index_build(
            &build_args(&corpus, &out, "f32"),
            &Toy { fp: "x" },
            &EncodeOptions::default(),
            true,
        )
        .unwrap();
        let index = Index::open(&out).unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(index.id(3).unwrap(), "3");

        let bad = dir.path().join("bad.jsonl");
        std::fs::write(
            &bad,
            "{\"_id\": \"a\", \"text\": \"x\"}\n{\"text\": \"y\"}\n",
        )
        .unwrap();
        let err = run_index_build(
            &build_args(&bad, &out, "f32"),
            &Toy { fp: "x" },
            &EncodeOptions::default(),
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad.jsonl:2") && err.contains("_id"), "{err}");
        // The earlier index at that path is untouched by the failed build.
        assert_eq!(Index::open(&out).unwrap().len(), 4);
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        let err = run_index_build(
            &build_args(&empty, &dir.path().join("e.idx"), "f32"),
            &Toy { fp: "x" },
            &EncodeOptions::default(),
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no documents"), "{err}");
        assert!(!dir.path().join("e.idx").exists());
    }
}
