//! `embed --format parquet` and `embed --shard K/N --output DIR`: texts streamed from the input by record
//! position, embedded in calls of [`crate::CHUNK`] texts, converted to the output precision row by row and
//! written as Parquet (embedkit-parquet). A shard commits a chunk file every `--chunk-size` records and
//! resumes after its last committed chunk when started again.

use crate::input::{self, InputFormat, Record};
use crate::output::Sink;
use crate::quantize_cli::PrecisionArgs;
use anyhow::{Context, Result, bail};
use clap::Args;
use embedkit_core::{Embedder, EncodeOptions};
use embedkit_parquet::{
    DEFAULT_ROW_GROUP_ROWS, Element, FileMeta, IdType, Ids, InputInfo, Layout, ParquetVectorWriter,
    ShardJob, ShardSpec, ShardState, TextFile,
};
use embedkit_vectors::{CalibrationRanges, Precision, Quantizer};
use std::path::{Path, PathBuf};

/// Options of `embed` for Parquet output and shards.
#[derive(Args, Clone, Debug, Default)]
pub struct ParquetArgs {
    /// JSONL field or Parquet column that holds each record's id (default: the record's position, from 0).
    #[arg(long, value_name = "NAME")]
    pub id_field: Option<String>,
    /// Also write each text (Parquet output: a `text` column).
    #[arg(long)]
    pub keep_text: bool,
    /// Embed the K-th of N slices of --input (K from 0) into --output DIR as part-KKKKK-of-NNNNN.parquet.
    #[arg(long, value_name = "K/N", conflicts_with = "shard_from_env")]
    pub shard: Option<String>,
    /// Take K from this environment variable (JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID,
    /// AWS_BATCH_JOB_ARRAY_INDEX); N from --num-shards.
    #[arg(long, value_name = "VAR", requires = "num_shards")]
    pub shard_from_env: Option<String>,
    /// N, with --shard-from-env.
    #[arg(long, value_name = "N")]
    pub num_shards: Option<u32>,
    /// Records per committed chunk of a shard (rounded up to a multiple of 1,024, the texts per model call):
    /// a killed worker loses at most one chunk of work.
    #[arg(long, value_name = "N", default_value_t = 10_240)]
    pub chunk_size: u64,
    /// Replace a finished part (or committed chunks) made with other settings instead of refusing.
    #[arg(long)]
    pub overwrite: bool,
}

impl ParquetArgs {
    /// Whether a shard was asked for.
    pub fn sharded(&self) -> bool {
        self.shard.is_some() || self.shard_from_env.is_some()
    }

    /// Whether `embed` writes Parquet: `--format parquet` or a shard (whose parts are Parquet whatever the
    /// default format says); an error for options that only Parquet output takes, or another explicit format.
    pub fn wanted(&self, parquet_format: bool, default_format: bool) -> Result<bool> {
        if self.sharded() && !(parquet_format || default_format) {
            bail!("--shard writes Parquet part files: leave --format out or say --format parquet");
        }
        if !(parquet_format || self.sharded()) && (self.id_field.is_some() || self.keep_text) {
            bail!("--id-field and --keep-text are for --format parquet (or --shard)");
        }
        Ok(parquet_format || self.sharded())
    }

    /// (K, N) from --shard or --shard-from-env + --num-shards.
    fn shard(&self) -> Result<(u32, u32)> {
        let (k, n) = match (&self.shard, &self.shard_from_env) {
            (Some(s), _) => {
                let (k, n) = s
                    .split_once('/')
                    .with_context(|| format!("--shard {s}: expected K/N, e.g. 0/4"))?;
                let parse = |x: &str| {
                    x.trim()
                        .parse::<u32>()
                        .with_context(|| format!("--shard {s}: '{x}' is not a whole number"))
                };
                (parse(k)?, parse(n)?)
            }
            (None, Some(var)) => {
                let v = std::env::var(var)
                    .with_context(|| format!("--shard-from-env {var}: the variable is not set"))?;
                let k = v.trim().parse::<u32>().with_context(|| {
                    format!("--shard-from-env {var}: '{v}' is not a whole number")
                })?;
                (
                    k,
                    self.num_shards
                        .context("--shard-from-env needs --num-shards N")?,
                )
            }
            (None, None) => bail!("no shard given"),
        };
        if n == 0 || k >= n {
            bail!("shard {k}/{n} does not exist: K counts from 0 to N-1");
        }
        Ok((k, n))
    }
}

/// Where `embed` takes its texts from, as given on the command line.
pub struct Source<'a> {
    /// Texts given as arguments.
    pub texts: &'a [String],
    /// --input.
    pub input: Option<&'a str>,
    /// --input-format.
    pub format: Option<InputFormat>,
    /// --field.
    pub field: &'a str,
}

/// Everything that turns records into rows of one layout.
struct Rows<'a> {
    model: &'a dyn Embedder,
    options: &'a EncodeOptions,
    quantizer: Quantizer,
    layout: Layout,
}

impl Rows<'_> {
    /// Embeds `records` (one model call; their positions start at `first`) and writes those whose position
    /// is in `keep`. Returns the rows written.
    fn write<W: std::io::Write + Send>(
        &self,
        w: &mut ParquetVectorWriter<W>,
        first: u64,
        records: &[Record],
        keep: (u64, u64),
    ) -> Result<u64> {
        let refs: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
        let vectors = self.model.embed(&refs, self.options)?;
        let from = keep.0.saturating_sub(first).min(records.len() as u64) as usize;
        let to = keep.1.saturating_sub(first).min(records.len() as u64) as usize;
        if from >= to {
            return Ok(0);
        }
        {
            let chunk = &records[from..to];
            let refs = &refs[from..to];
            let mut bytes = Vec::with_capacity(chunk.len() * self.layout.row_bytes());
            for row in vectors.iter().skip(from).take(to - from) {
                self.quantizer.quantize_row(row, &mut bytes);
            }
            let ids = match self.layout.ids {
                IdType::Int64 if chunk.iter().all(|r| r.id.is_none()) => {
                    let at = first + from as u64;
                    Ids::Int((at..at + chunk.len() as u64).map(|i| i as i64).collect())
                }
                IdType::Int64 => Ids::Int(
                    chunk
                        .iter()
                        .map(|r| {
                            r.id.as_deref()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or_default()
                        })
                        .collect(),
                ),
                IdType::Utf8 => Ids::Text(
                    chunk
                        .iter()
                        .map(|r| r.id.clone().unwrap_or_default())
                        .collect(),
                ),
            };
            let texts = self.layout.text.then_some(refs);
            w.write(&ids, &bytes, texts)?;
        }
        Ok((to - from) as u64)
    }
}

/// The input file of a Parquet run: its format and how to read a range of it.
enum Input<'a> {
    Args(&'a [String]),
    Lines {
        path: &'a Path,
        format: InputFormat,
        field: &'a str,
        id_field: Option<&'a str>,
    },
    Parquet(TextFile),
}

impl Input<'_> {
    fn records(&self) -> Result<u64> {
        Ok(match self {
            Input::Args(t) => t.len() as u64,
            Input::Lines { path, format, .. } => input::count_records(path, *format)?,
            Input::Parquet(f) => f.rows(),
        })
    }

    /// Streams records `start..end` to `each` in groups of exactly [`crate::CHUNK`] (the last may be
    /// shorter), with the position of each group's first record.
    fn read(
        &self,
        range: (u64, u64),
        mut each: impl FnMut(u64, Vec<Record>) -> Result<()>,
    ) -> Result<()> {
        let mut at = range.0;
        let mut pending: Vec<Record> = Vec::with_capacity(crate::CHUNK);
        let mut emit = |recs: Vec<Record>| -> Result<()> {
            let n = recs.len() as u64;
            each(at, recs)?;
            at += n;
            Ok(())
        };
        self.read_raw(range, &mut |recs: Vec<Record>| -> Result<()> {
            for r in recs {
                pending.push(r);
                if pending.len() == crate::CHUNK {
                    emit(std::mem::take(&mut pending))?;
                }
            }
            Ok(())
        })?;
        if !pending.is_empty() {
            emit(pending)?;
        }
        Ok(())
    }

    fn read_raw(
        &self,
        range: (u64, u64),
        take: &mut dyn FnMut(Vec<Record>) -> Result<()>,
    ) -> Result<()> {
        match self {
            Input::Args(t) => {
                let recs: Vec<Record> = t[range.0 as usize..range.1 as usize]
                    .iter()
                    .map(|t| Record {
                        id: None,
                        text: t.clone(),
                    })
                    .collect();
                for c in recs.chunks(crate::CHUNK) {
                    take(c.to_vec())?;
                }
                Ok(())
            }
            Input::Lines {
                path,
                format,
                field,
                id_field,
            } => {
                input::read_record_range(path, *format, field, *id_field, range, crate::CHUNK, take)
            }
            Input::Parquet(f) => f.read_range(range.0, range.1, crate::CHUNK, |ids, texts| {
                let ids: Vec<Option<String>> = match ids {
                    None => vec![None; texts.len()],
                    Some(Ids::Int(v)) => v.into_iter().map(|i| Some(i.to_string())).collect(),
                    Some(Ids::Text(v)) => v.into_iter().map(Some).collect(),
                };
                let recs = ids
                    .into_iter()
                    .zip(texts)
                    .map(|(id, text)| Record { id, text })
                    .collect();
                take(recs)
            }),
        }
    }
}

/// `embed` with `--format parquet` or a shard: streams the input through `model` into Parquet.
pub fn embed_parquet(
    source: &Source,
    output: Option<&Path>,
    args: &ParquetArgs,
    model: &dyn Embedder,
    options: &EncodeOptions,
    precision: &PrecisionArgs,
    quiet: bool,
) -> Result<()> {
    let input = match source.input {
        Some(p) if !source.texts.is_empty() => {
            bail!("give texts as arguments or with --input {p}, not both")
        }
        Some("-") => bail!(
            "Parquet output streams its input twice (count, then read): give --input a file, not stdin"
        ),
        Some(p) => match input::detect_format(p, source.format) {
            InputFormat::Parquet => Input::Parquet(TextFile::open(
                Path::new(p),
                source.field,
                args.id_field.as_deref(),
            )?),
            format => {
                if !Path::new(p).is_file() {
                    bail!("input file '{p}' does not exist");
                }
                Input::Lines {
                    path: Path::new(p),
                    format,
                    field: source.field,
                    id_field: args.id_field.as_deref(),
                }
            }
        },
        None if source.texts.is_empty() => {
            bail!("no texts: pass them as arguments or with --input FILE")
        }
        None if args.sharded() => bail!("--shard needs --input FILE"),
        None if args.id_field.is_some() => bail!("--id-field needs --input (JSONL or Parquet)"),
        None => Input::Args(source.texts),
    };
    let id_type = match (&input, &args.id_field) {
        (_, None) => IdType::Int64,
        (Input::Parquet(f), Some(_)) => f.id_type().unwrap_or(IdType::Utf8),
        _ => IdType::Utf8,
    };
    let p = precision.precision.unwrap_or(Precision::F32);
    let ranges = match &precision.ranges {
        Some(path) => Some(CalibrationRanges::load(path)?),
        None if p.needs_ranges() => bail!(
            "--precision {p} with Parquet output needs --ranges FILE: vectors are streamed, and every shard must \
             use the same ranges (make them once with `embedkit embed --precision {p} --save-ranges r.json` on a sample)"
        ),
        None => None,
    };
    if precision.save_ranges.is_some() {
        bail!(
            "--save-ranges needs the whole set in memory; with Parquet output pass --ranges instead"
        );
    }
    let dims = options.truncate_dim.unwrap_or(model.dims());
    let layout = Layout {
        ids: id_type,
        element: Element::for_precision(&p.to_string())
            .context("an embedkit precision has an element type")?,
        width: p.values_per_row(dims),
        text: args.keep_text,
    };
    let meta = file_meta(model, options, p, ranges.as_ref(), dims, args)?;
    let rows = Rows {
        model,
        options,
        quantizer: Quantizer::new(p, dims, ranges.as_ref())?,
        layout,
    };
    if args.sharded() {
        let dir = output.context("--shard needs --output DIR (the folder of part files)")?;
        let path = Path::new(source.input.unwrap_or_default());
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        return run_shard(&input, dir, args, meta, rows, bytes, path, quiet);
    }
    let total = input.records()?;
    let name = output.map_or(PathBuf::from("<stdout>"), Path::to_path_buf);
    let mut meta = meta;
    meta.info.insert("rows".into(), total.to_string());
    let mut w = ParquetVectorWriter::new(
        Sink::open(output)?,
        &name,
        layout,
        &meta,
        DEFAULT_ROW_GROUP_ROWS,
    )?;
    let bar = crate::progress::texts(total as usize, quiet);
    input.read((0, total), |first, recs| {
        rows.write(&mut w, first, &recs, (0, total))?;
        bar.inc(recs.len() as u64);
        Ok(())
    })?;
    bar.finish_and_clear();
    w.finish()?.finish()
}

/// The settings recorded in every file (see [`FileMeta`]).
fn file_meta(
    model: &dyn Embedder,
    options: &EncodeOptions,
    precision: Precision,
    ranges: Option<&CalibrationRanges>,
    dims: usize,
    args: &ParquetArgs,
) -> Result<FileMeta> {
    let key = embedkit_cache::KeyOptions::from_encode(options);
    let mut meta = FileMeta::default();
    let s = &mut meta.settings;
    s.insert("model".into(), model.name().to_string());
    s.insert("fingerprint".into(), model.fingerprint());
    s.insert("precision".into(), precision.to_string());
    s.insert("dims".into(), dims.to_string());
    s.insert(
        "options".into(),
        serde_json::json!({
            "normalize": key.normalize, "truncate_dim": key.truncate_dim, "prompt": key.prompt,
            "prompt_name": key.prompt_name, "max_length": key.max_length,
        })
        .to_string(),
    );
    if let Some(r) = ranges.filter(|_| precision.needs_ranges()) {
        s.insert("ranges".into(), serde_json::to_string(r)?);
    }
    s.insert(
        "ids".into(),
        args.id_field
            .as_ref()
            .map_or("position".to_string(), |f| format!("field:{f}")),
    );
    s.insert("text".into(), args.keep_text.to_string());
    meta.info
        .insert("version".into(), env!("CARGO_PKG_VERSION").to_string());
    Ok(meta)
}

#[allow(clippy::too_many_arguments)]
fn run_shard(
    input: &Input,
    dir: &Path,
    args: &ParquetArgs,
    meta: FileMeta,
    rows: Rows,
    bytes: u64,
    path: &Path,
    quiet: bool,
) -> Result<()> {
    let (k, n) = args.shard()?;
    // Model calls take the records of one 1,024-slot of the input's grid (as a one-process run does), and
    // chunks end on that grid; a shard boundary inside a slot embeds the whole slot and keeps its own rows.
    // So every text is embedded in the same call, with the same neighbours, as in a one-process run: the
    // same batches, hence the same bits (batch composition can move the last bit of a vector).
    let call = crate::CHUNK as u64;
    let chunk_size = args.chunk_size.max(1).div_ceil(call) * call;
    let total_records = input.records()?;
    let say = |m: String| {
        if !quiet {
            eprintln!("shard {k}/{n}: {m}");
        }
    };
    let spec = ShardSpec {
        dir: dir.to_path_buf(),
        shard: k,
        shards: n,
        meta,
        layout: rows.layout,
        input: InputInfo {
            name: path.display().to_string(),
            records: total_records,
            bytes,
        },
        chunk_size,
        row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        overwrite: args.overwrite,
    };
    let part = dir.join(embedkit_parquet::parts::part_file_name(k, n));
    let mut job = match ShardJob::open(spec)? {
        ShardState::Complete { rows } => {
            say(format!(
                "already complete ({rows} rows in {}); nothing to do",
                part.display()
            ));
            return Ok(());
        }
        ShardState::Pending(job) => job,
    };
    let (start, end) = job.range();
    let remaining = job.remaining();
    if job.resumed_chunks() > 0 {
        say(format!(
            "resuming after {} committed chunks ({} records); embedding records {}..{end} ({} chunks)",
            job.resumed_chunks(),
            job.committed_records(),
            start + job.committed_records(),
            remaining.len()
        ));
    } else {
        say(format!(
            "records {start}..{end}, {} chunks of up to {}",
            remaining.len(),
            chunk_size
        ));
    }
    let bar = crate::progress::texts((end - start - job.committed_records()) as usize, quiet);
    let mut embedded = 0u64;
    for (i, s, e) in remaining {
        job.write_chunk(i, s, e, |w| -> Result<()> {
            let slots = (
                s / call * call,
                e.div_ceil(call).saturating_mul(call).min(total_records),
            );
            input.read(slots, |first, recs| {
                let kept = rows.write(w, first, &recs, (s, e))?;
                bar.inc(kept);
                Ok(())
            })
        })?;
        embedded += e - s;
        bar.suspend(|| say(format!("chunk {i} committed (records {s}..{e})")));
    }
    bar.finish_and_clear();
    let total = job.finish()?;
    say(format!(
        "wrote {} ({total} rows; embedded {embedded} records in this run)",
        part.display()
    ));
    Ok(())
}
