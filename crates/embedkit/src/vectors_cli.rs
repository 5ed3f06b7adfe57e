//! The vector side of the command line, on embedkit-vectors: `embedkit quantize`, `embedkit index build`,
//! `embedkit search`, and `embedkit embed --precision`. main.rs parses the model flags, loads the model and
//! passes it in as a `&dyn Embedder`; everything here works on any embedder.

use crate::input::InputFormat;
use crate::output::{OutputFormat, Sink};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use embedkit_core::{Embedder, Embeddings, EncodeOptions, Metric};
use embedkit_vectors::npy::read_npy;
use embedkit_vectors::{
    CalibrationRanges, Hit, Index, IndexSpec, IndexWriter, Precision, QuantizedEmbeddings,
    RescoreWith, SearchOptions, quantize,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Texts handed to the model per call; bounds memory for any input size.
const CHUNK: usize = 1024;

// ------------------------------------------------------------------------------------------ embed --precision

/// Flags that `embedkit embed` flattens in: `--precision`, `--ranges`, `--save-ranges`.
#[derive(Args, Debug, Clone, Default)]
pub struct PrecisionArgs {
    /// Output precision: float32, float16, bfloat16, int8, uint8, binary or ubinary — the bytes of
    /// sentence-transformers' quantize_embeddings (int8/uint8 ranges come from all the embedded texts unless
    /// --ranges is given).
    #[arg(long, value_name = "P")]
    pub precision: Option<Precision>,
    /// int8/uint8 calibration ranges: a file written by --save-ranges (JSON) or a numpy (2, dims) .npy.
    #[arg(long, value_name = "FILE", requires = "precision")]
    pub ranges: Option<PathBuf>,
    /// Write the int8/uint8 ranges that were used to FILE (.json, or .npy for numpy).
    #[arg(long, value_name = "FILE", requires = "precision")]
    pub save_ranges: Option<PathBuf>,
}

/// `embedkit embed --precision P`: embeds all `texts` (ranges, like sentence-transformers' `encode`, come from
/// the whole set, so the vectors are gathered before quantizing), converts them, and writes them in `format`
/// (`.npy` with the precision's dtype; integers or rounded floats in JSON, JSONL and CSV).
pub fn embed_quantized(
    embedder: &dyn Embedder,
    texts: &[String],
    options: &EncodeOptions,
    args: &PrecisionArgs,
    format: OutputFormat,
    output: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let precision = args.precision.unwrap_or(Precision::F32);
    let ranges = match &args.ranges {
        Some(p) => Some(CalibrationRanges::load(p)?),
        None => None,
    };
    let bar = progress(texts.len() as u64, quiet, "embedding", "texts");
    let mut all: Option<Embeddings> = None;
    for chunk in texts.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e = embedder.embed(&refs, options)?;
        match all.as_mut() {
            Some(a) => a.append(&e)?,
            None => all = Some(e),
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let dims = options.truncate_dim.unwrap_or(embedder.dims());
    let all = all.unwrap_or_else(|| Embeddings::empty(dims));
    let (q, used) = quantize_with(&all, precision, ranges, None)?;
    if let (Some(path), Some(r)) = (&args.save_ranges, &used) {
        r.save(path)?;
    }
    write_quantized(&q, format, embedder.name(), output)
}

/// Quantizes with `ranges`, or ranges from `calibration`, or (int8/uint8) from `e` itself; returns the ranges
/// that were used.
fn quantize_with(
    e: &Embeddings,
    precision: Precision,
    ranges: Option<CalibrationRanges>,
    calibration: Option<&Embeddings>,
) -> Result<(QuantizedEmbeddings, Option<CalibrationRanges>)> {
    let ranges = match (ranges, calibration) {
        (Some(r), _) => Some(r),
        (None, Some(c)) if precision.needs_ranges() => {
            Some(CalibrationRanges::from_calibration(c)?)
        }
        (None, _) if precision.needs_ranges() && e.rows() > 1 => {
            Some(CalibrationRanges::from_embeddings(e)?)
        }
        _ => None,
    };
    let q = quantize(e, precision, ranges.as_ref())?;
    Ok((q, ranges.filter(|_| precision.needs_ranges())))
}

/// Writes quantized vectors in one of `embed`'s formats, atomically when `output` is a file.
pub fn write_quantized(
    q: &QuantizedEmbeddings,
    format: OutputFormat,
    model: &str,
    output: Option<&Path>,
) -> Result<()> {
    let mut sink = Sink::open(output)?;
    match format {
        OutputFormat::Npy => q.write_npy(&mut sink)?,
        OutputFormat::Json => {
            write!(
                sink,
                "{{\"model\":{},\"dimensions\":{},\"precision\":\"{}\",\"embeddings\":[",
                serde_json::to_string(model)?,
                q.dims(),
                q.precision()
            )?;
            for i in 0..q.rows() {
                if i > 0 {
                    sink.write_all(b",")?;
                }
                write_values(&mut sink, q, i, ",")?;
            }
            sink.write_all(b"]}\n")?;
        }
        OutputFormat::Jsonl => {
            for i in 0..q.rows() {
                write!(sink, "{{\"index\":{i},\"embedding\":")?;
                write_values(&mut sink, q, i, ",")?;
                sink.write_all(b"}\n")?;
            }
        }
        OutputFormat::Csv => {
            for i in 0..q.rows() {
                let text = values_text(q, i);
                writeln!(sink, "{}", text.join(","))?;
            }
        }
        OutputFormat::Parquet => bail!("Parquet output is streamed by `embed --format parquet`"),
    }
    sink.finish()
}

/// Row `i` as text: integers for the integer precisions, the shortest round-trip decimal for floats.
fn values_text(q: &QuantizedEmbeddings, i: usize) -> Vec<String> {
    let ints = !matches!(
        q.precision(),
        Precision::F32 | Precision::F16 | Precision::BF16
    );
    q.row_values(i)
        .into_iter()
        .map(|v| {
            if ints {
                format!("{}", v as i64)
            } else if (v as f32).is_finite() {
                format!("{}", v as f32)
            } else {
                "null".to_string()
            }
        })
        .collect()
}

fn write_values(w: &mut impl Write, q: &QuantizedEmbeddings, i: usize, sep: &str) -> Result<()> {
    write!(w, "[{}]", values_text(q, i).join(sep))?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------- quantize

/// `embedkit quantize IN.npy --precision P --output OUT.npy`.
#[derive(Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// float32 embeddings, shape (vectors, dims), e.g. from `embedkit embed --format npy` or numpy.
    #[arg(value_name = "IN.npy")]
    pub input: PathBuf,
    /// float32, float16, bfloat16, int8, uint8, binary or ubinary.
    #[arg(long, short, value_name = "P")]
    pub precision: Precision,
    /// int8/uint8 ranges from FILE (JSON from --save-ranges, or a numpy (2, dims) .npy).
    #[arg(long, value_name = "FILE", conflicts_with = "calibration")]
    pub ranges: Option<PathBuf>,
    /// int8/uint8 ranges from these float32 calibration embeddings (.npy) instead of the input itself.
    #[arg(long, value_name = "FILE.npy")]
    pub calibration: Option<PathBuf>,
    /// Write the int8/uint8 ranges that were used to FILE.
    #[arg(long, value_name = "FILE")]
    pub save_ranges: Option<PathBuf>,
    /// Where to write the quantized array (.npy; written atomically).
    #[arg(long, short, value_name = "OUT.npy")]
    pub output: PathBuf,
}

/// Runs `embedkit quantize`.
pub fn run_quantize(args: &QuantizeArgs, quiet: bool) -> Result<()> {
    let input = read_npy(&args.input)
        .and_then(|a| a.to_embeddings())
        .with_context(|| format!("cannot use '{}'", args.input.display()))?;
    let ranges = match &args.ranges {
        Some(p) => Some(CalibrationRanges::load(p)?),
        None => None,
    };
    let calibration = match &args.calibration {
        Some(p) => Some(
            read_npy(p)
                .and_then(|a| a.to_embeddings())
                .with_context(|| format!("cannot use calibration embeddings '{}'", p.display()))?,
        ),
        None => None,
    };
    let (q, used) = quantize_with(&input, args.precision, ranges, calibration.as_ref())
        .with_context(|| format!("cannot quantize '{}'", args.input.display()))?;
    if let Some(path) = &args.save_ranges {
        match &used {
            Some(r) => r.save(path)?,
            None => bail!("--save-ranges: {} uses no ranges", args.precision),
        }
    }
    write_quantized(&q, OutputFormat::Npy, "", Some(&args.output))?;
    if !quiet {
        eprintln!(
            "wrote {} × {} {} ({} bytes) to {}",
            q.rows(),
            q.values_per_row(),
            q.precision(),
            q.as_bytes().len(),
            args.output.display()
        );
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------------- index build

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
    let mut reader = DocReader::open(&args.input, args.input_format, args)?;
    let bar = progress(reader.total_bytes, quiet, "indexing", "bytes");
    bar.set_style(bytes_style()?);

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

fn embed_docs(
    embedder: &dyn Embedder,
    docs: &[Doc],
    options: &EncodeOptions,
) -> Result<Embeddings> {
    let refs: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    Ok(embedder.embed(&refs, options)?)
}

/// One document or query: its id (None for .txt input, where ids are line numbers) and text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Doc {
    pub(crate) id: Option<String>,
    pub(crate) text: String,
}

/// Streams documents from a .txt or JSONL file without reading it whole.
pub(crate) struct DocReader {
    reader: BufReader<File>,
    name: String,
    jsonl: bool,
    line_no: usize,
    pub(crate) bytes_read: u64,
    pub(crate) total_bytes: u64,
    id_field: String,
    text_field: String,
    title_field: String,
    buf: Vec<u8>,
}

impl DocReader {
    pub(crate) fn open(
        path: &Path,
        format: Option<InputFormat>,
        args: &IndexBuildArgs,
    ) -> Result<DocReader> {
        Self::open_with(
            path,
            format,
            &args.id_field,
            &args.text_field,
            &args.title_field,
        )
    }

    fn open_with(
        path: &Path,
        format: Option<InputFormat>,
        id_field: &str,
        text_field: &str,
        title_field: &str,
    ) -> Result<DocReader> {
        let file = File::open(path).with_context(|| format!("cannot open '{}'", path.display()))?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let format = format.unwrap_or_else(|| match path.extension().and_then(|e| e.to_str()) {
            Some(e) if ["jsonl", "ndjson", "json"].contains(&e.to_ascii_lowercase().as_str()) => {
                InputFormat::Jsonl
            }
            _ => InputFormat::Txt,
        });
        Ok(DocReader {
            reader: BufReader::with_capacity(1 << 20, file),
            name: path.display().to_string(),
            jsonl: format == InputFormat::Jsonl,
            line_no: 0,
            bytes_read: 0,
            total_bytes,
            id_field: id_field.to_string(),
            text_field: text_field.to_string(),
            title_field: title_field.to_string(),
            buf: Vec::new(),
        })
    }

    /// Up to `n` more documents; empty at the end of the file.
    pub(crate) fn next_batch(&mut self, n: usize) -> Result<Vec<Doc>> {
        // `n` may be usize::MAX ("the whole file", as for --queries): never reserve more than a chunk upfront.
        let mut docs = Vec::with_capacity(n.min(CHUNK));
        while docs.len() < n {
            self.buf.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .with_context(|| format!("cannot read '{}'", self.name))?;
            if read == 0 {
                break;
            }
            self.bytes_read += read as u64;
            self.line_no += 1;
            let raw = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line = std::str::from_utf8(raw).map_err(|e| {
                anyhow!(
                    "{}:{}: invalid UTF-8 at byte {} of the line",
                    self.name,
                    self.line_no,
                    e.valid_up_to() + 1
                )
            })?;
            if !self.jsonl {
                docs.push(Doc {
                    id: None,
                    text: line.to_string(),
                });
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            docs.push(self.parse_record(line)?);
        }
        Ok(docs)
    }

    fn parse_record(&self, line: &str) -> Result<Doc> {
        let at = || format!("{}:{}", self.name, self.line_no);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow!("{}: invalid JSON: {e}", at()))?;
        let id = match v.get(&self.id_field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => bail!(
                "{}: field '{}' is not a string or number",
                at(),
                self.id_field
            ),
            None => bail!(
                "{}: record has no field '{}' (choose another with --id-field)",
                at(),
                self.id_field
            ),
        };
        let text = match v.get(&self.text_field) {
            Some(serde_json::Value::String(s)) => s.as_str(),
            Some(_) => bail!("{}: field '{}' is not a string", at(), self.text_field),
            None => bail!(
                "{}: record has no field '{}' (choose another with --text-field)",
                at(),
                self.text_field
            ),
        };
        let title = if self.title_field.is_empty() {
            ""
        } else {
            v.get(&self.title_field)
                .and_then(|t| t.as_str())
                .unwrap_or("")
        };
        // BEIR's convention: title and text joined by a space, stripped.
        let text = if title.is_empty() {
            text.to_string()
        } else {
            format!("{title} {text}").trim().to_string()
        };
        Ok(Doc { id: Some(id), text })
    }
}

// ---------------------------------------------------------------------------------------------------- search

/// How `embedkit search` prints hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchFormat {
    /// A readable table per query.
    Table,
    /// One `{"query_id", "doc_id", "rank", "score"}` per line.
    Jsonl,
    /// One JSON array of `{"query_id", "query", "hits": [{"rank", "doc_id", "score"}]}`.
    Json,
}

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
            let mut r = DocReader::open_with(path, None, &args.id_field, &args.text_field, "")?;
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
    if index.multi_vector().is_some() {
        return crate::multivector_cli::run_search(
            args, embedder, options, &index, &queries, quiet,
        );
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
    let mut sink = Sink::open(args.output.as_deref())?;
    let bar = progress(
        queries.len() as u64,
        quiet || queries.len() < CHUNK,
        "searching",
        "queries",
    );
    if args.format == SearchFormat::Json {
        sink.write_all(b"[")?;
    }
    let mut first = true;
    for chunk in queries.chunks(CHUNK) {
        let e = embed_docs(embedder, chunk, &options)?;
        let hits = index.search(&e, &search)?;
        for (q, h) in chunk.iter().zip(&hits) {
            write_hits(&mut sink, args.format, &index, q, h, &mut first)?;
        }
        bar.inc(chunk.len() as u64);
    }
    if args.format == SearchFormat::Json {
        sink.write_all(b"]\n")?;
    }
    bar.finish_and_clear();
    sink.finish()
}

pub(crate) fn write_hits(
    w: &mut impl Write,
    format: SearchFormat,
    index: &Index,
    q: &Doc,
    hits: &[Hit],
    first: &mut bool,
) -> Result<()> {
    let qid = q.id.as_deref().unwrap_or("");
    match format {
        SearchFormat::Jsonl => {
            for (rank, h) in hits.iter().enumerate() {
                let line = serde_json::json!({
                    "query_id": qid, "doc_id": index.id(h.row)?, "rank": rank + 1, "score": h.score,
                });
                writeln!(w, "{line}")?;
            }
        }
        SearchFormat::Json => {
            let rows = hits
                .iter()
                .enumerate()
                .map(|(rank, h)| {
                    Ok(serde_json::json!({"rank": rank + 1, "doc_id": index.id(h.row)?, "score": h.score}))
                })
                .collect::<Result<Vec<_>>>()?;
            if !*first {
                w.write_all(b",")?;
            }
            let v = serde_json::json!({"query_id": qid, "query": q.text, "hits": rows});
            write!(w, "{v}")?;
        }
        SearchFormat::Table => {
            if !*first {
                writeln!(w)?;
            }
            writeln!(w, "query {qid}: {}", q.text)?;
            writeln!(w, "{:>4}  {:>9}  doc", "rank", "score")?;
            for (rank, h) in hits.iter().enumerate() {
                writeln!(w, "{:>4}  {:>9.4}  {}", rank + 1, h.score, index.id(h.row)?)?;
            }
        }
    }
    *first = false;
    Ok(())
}

// ------------------------------------------------------------------------------------------------- progress

pub(crate) fn progress(len: u64, quiet: bool, verb: &str, unit: &str) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal; --quiet hides it everywhere.
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let template =
        format!("{{spinner}} {verb} {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

pub(crate) fn bytes_style() -> Result<ProgressStyle> {
    ProgressStyle::with_template(
        "{spinner} indexing {bar:40} {percent:>3}% {msg} ({binary_bytes_per_sec}, eta {eta})",
    )
    .map_err(|e| anyhow!("progress template: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedkit_core::EmbedError;

    /// A deterministic toy embedder: a hash of the text spread over 8 dimensions.
    struct Toy {
        fp: &'static str,
    }
    impl Embedder for Toy {
        fn name(&self) -> &str {
            "toy"
        }
        fn dims(&self) -> usize {
            8
        }
        fn fingerprint(&self) -> String {
            self.fp.to_string()
        }
        fn embed(&self, texts: &[&str], _: &EncodeOptions) -> Result<Embeddings, EmbedError> {
            let rows = texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0f32; 8];
                    for (i, b) in t.bytes().enumerate() {
                        v[(b as usize + i) % 8] += f32::from(b) / 255.0 - 0.4;
                    }
                    v
                })
                .collect();
            Embeddings::from_rows(rows).map_err(|e| EmbedError::Backend(Box::new(e)))
        }
    }

    fn build_args(input: &Path, output: &Path, precision: &str) -> IndexBuildArgs {
        IndexBuildArgs {
            input: input.to_path_buf(),
            input_format: None,
            output: output.to_path_buf(),
            precision: precision.parse().unwrap(),
            rescore_vectors: RescoreStore::Int8,
            metric: Metric::Cosine,
            ranges: None,
            calibration_size: 3,
            save_ranges: None,
            id_field: "_id".into(),
            text_field: "text".into(),
            title_field: "title".into(),
            multi_vector: false,
        }
    }

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

    #[test]
    fn quantize_command_writes_npy_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.npy");
        let e = Toy { fp: "x" }
            .embed(&["a", "bb", "ccc"], &EncodeOptions::default())
            .unwrap();
        let q = quantize(&e, Precision::F32, None).unwrap();
        write_quantized(&q, OutputFormat::Npy, "", Some(&input)).unwrap();
        let out = dir.path().join("out.npy");
        let ranges = dir.path().join("r.json");
        let args = QuantizeArgs {
            input: input.clone(),
            precision: Precision::Int8,
            ranges: None,
            calibration: None,
            save_ranges: Some(ranges.clone()),
            output: out.clone(),
        };
        run_quantize(&args, true).unwrap();
        let got = read_npy(&out).unwrap();
        assert_eq!(got.descr, "|i1");
        assert_eq!(
            got.data,
            quantize(&e, Precision::Int8, None).unwrap().into_bytes()
        );
        // Reusing the saved ranges gives the same bytes.
        let again = dir.path().join("again.npy");
        run_quantize(
            &QuantizeArgs {
                ranges: Some(ranges),
                save_ranges: None,
                output: again.clone(),
                ..args
            },
            true,
        )
        .unwrap();
        assert_eq!(read_npy(&again).unwrap().data, got.data);
        // A float64 input is refused with the reason.
        let f64_path = dir.path().join("f64.npy");
        let mut buf = Vec::new();
        embedkit_vectors::npy::write_npy(&mut buf, "<f8", &[1, 1], &[0; 8]).unwrap();
        std::fs::write(&f64_path, buf).unwrap();
        let err = run_quantize(
            &QuantizeArgs {
                input: f64_path,
                precision: Precision::Int8,
                ranges: None,
                calibration: None,
                save_ranges: None,
                output: dir.path().join("x.npy"),
            },
            true,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("float32"), "{err:#}");
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

    #[test]
    fn quantized_text_output_uses_integers() {
        let e = Embeddings::from_rows(vec![vec![0.5, -0.5, 0.25], vec![-0.5, 0.5, 0.0]]).unwrap();
        let q = quantize(&e, Precision::Binary, None).unwrap();
        assert_eq!(values_text(&q, 0), vec!["32"]);
        let q = quantize(&e, Precision::Int8, None).unwrap();
        // As sentence-transformers: the column maxima land on 126, not 127 (floor of 254.99998).
        assert_eq!(values_text(&q, 0), vec!["126", "-128", "126"]);
        let q = quantize(&e, Precision::F16, None).unwrap();
        assert_eq!(values_text(&q, 0), vec!["0.5", "-0.5", "0.25"]);
    }
}
