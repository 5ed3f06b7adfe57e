//! The `embedkit` command: wires the crates into subcommands. All logic lives in the library crates.

mod alloc;
mod analogy_cli;
mod bench_cli;
mod cache_cli;
mod cross_cli;
mod documents;
mod drift_cli;
mod eval_cli;
mod hits_output;
mod index_cli;
mod input;
mod models_cli;
mod multivector_cli;
mod output;
mod parts_cli;
mod progress;
mod providers_cli;
mod quantize_cli;
mod rerank_cli;
mod search_cli;
mod serve_cli;
mod shards;
mod similarity_cli;
#[cfg(test)]
mod test_support;
mod train_cli;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use embedkit_core::{Embedder, EncodeOptions};
use embedkit_cpu::{Compute, CpuOptions};
use embedkit_cuda::Device;
use embedkit_model::LocalEmbedder;
use embedkit_sources::SourceConfig;
use indicatif::ProgressBar;
use input::InputFormat;
use output::{OutputFormat, Sink, VectorWriter};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// The model used when --model is not given.
const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";

/// Texts handed to the model per call while streaming a file; bounds memory for any input size.
const CHUNK: usize = 1024;

#[derive(Parser)]
#[command(
    name = "embedkit",
    version,
    about = "Text embedding models in one binary: exact sentence-transformers vectors, fast on CPU",
    long_about = None,
    after_help = "Models: a catalog name (all-MiniLM-L6-v2, all-mpnet-base-v2; fetched once into EMBEDKIT_HOME, \
                  default ~/.cache/embedkit), a folder in the sentence-transformers layout, or hf:org/name[@revision]; \
                  API models: openai:NAME, azure:DEPLOYMENT, cohere:NAME, voyage:NAME (keys from OPENAI_API_KEY, \
                  AZURE_OPENAI_API_KEY, CO_API_KEY, VOYAGE_API_KEY; --base-url for OpenAI-compatible servers)."
)]
struct Cli {
    /// No progress bars or status messages on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, list and describe models.
    Models {
        #[command(subcommand)]
        command: models_cli::ModelsCommand,
    },
    /// Embed texts into vectors (JSON, JSONL, .npy, CSV or Parquet; --shard K/N for one part of a job array).
    Embed(EmbedArgs),
    /// Compare texts: a similarity matrix, or documents ranked against a query.
    Similarity(similarity_cli::SimilarityArgs),
    /// Measure speed: throughput, single-text latency, load time, memory, and cost by length and batch size.
    Bench(bench_cli::BenchArgs),
    /// Convert float32 vectors (.npy) to float16, bfloat16, int8, uint8, binary or ubinary.
    Quantize(quantize_cli::QuantizeArgs),
    /// Build vector index files.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Search an index with query texts: exact, int8, or binary with rescoring.
    Search(SearchCmd),
    /// Word analogies (king − man + woman) over an embedded vocabulary, or accuracy on questions-words.txt.
    Analogy(analogy_cli::AnalogyArgs),
    /// Rank documents against a query: MaxSim over token vectors (late interaction, ColBERT) or cosine.
    Rerank(rerank_cli::RerankArgs),
    /// Test whether embeddings drifted (exit 3 if so); `drift canary record|check`, `drift profile`.
    Drift(drift_cli::DriftArgs),
    /// Compare models on retrieval (BEIR layout) and similarity tasks: tables, JSON, a report with a plot.
    Eval(eval_cli::EvalArgs),
    /// Evaluation data from the package index (gensim's Lee-50, WordSim-353, SimLex-999, analogies).
    Data {
        #[command(subcommand)]
        command: eval_cli::DataCommand,
    },
    /// Inspect and maintain the vector cache: hits, misses, entries, bytes; clear; prune.
    Cache {
        #[command(subcommand)]
        command: cache_cli::CacheCommand,
    },
    /// Check and merge the part files of a sharded `embed --shard K/N` run.
    Parts {
        #[command(subcommand)]
        command: parts_cli::PartsCommand,
    },
    /// Serve models over HTTP: OpenAI- and TEI-compatible routes with cross-request batching.
    Serve(serve_cli::ServeArgs),
    /// Fine-tune a model on pairs or triplets and save it in the sentence-transformers layout.
    Train(Box<train_cli::TrainArgs>),
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Embed a corpus (.txt, or a BEIR corpus.jsonl) into an index file.
    Build(IndexBuildCmd),
}

#[derive(Args)]
struct IndexBuildCmd {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    encode: EncodeArgs,
    #[command(flatten)]
    index: index_cli::IndexBuildArgs,
}

#[derive(Args)]
struct SearchCmd {
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the query model runs: cpu, cuda[:N] or auto (see `embed --help`).
    #[arg(long, default_value = "cpu", value_name = "cpu|auto|cuda[:N]")]
    device: Device,
    #[command(flatten)]
    encode: EncodeArgs,
    #[command(flatten)]
    search: search_cli::SearchArgs,
    #[command(flatten)]
    api: providers_cli::ApiArgs,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Catalog name, model folder, or hf:org/name[@revision].
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Linear-layer arithmetic: f32 (exact) or int8 (dynamically quantized, faster; cosine ≥ 0.99 to f32).
    #[arg(long, default_value = "f32")]
    compute: Compute,
    /// Where the model runs: cpu, cuda[:N] (an NVIDIA GPU; +f16, +bf16 or +f32, f16 by default) or auto (the
    /// GPU when one can be used, else the CPU).
    #[arg(long, default_value = "cpu", value_name = "cpu|auto|cuda[:N]")]
    device: Device,
    #[command(flatten)]
    api: providers_cli::ApiArgs,
}

#[derive(Args, Clone)]
struct EncodeArgs {
    /// Texts per forward pass.
    #[arg(long, default_value_t = embedkit_model::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// L2-normalize the vectors (default: as the model's modules say).
    #[arg(long, overrides_with = "no_normalize")]
    normalize: bool,
    /// Do not L2-normalize, even if the model does.
    #[arg(long)]
    no_normalize: bool,
    /// Keep the first N dimensions (Matryoshka), then normalize if normalizing.
    #[arg(long, value_name = "N")]
    truncate_dim: Option<usize>,
    /// A literal prompt to prepend to every text ("" for none).
    #[arg(long, conflicts_with = "prompt_name")]
    prompt: Option<String>,
    /// One of the model's named prompts (e.g. query, passage).
    #[arg(long)]
    prompt_name: Option<String>,
    /// Truncate texts to at most N tokens (never more than the model's limit).
    #[arg(long, value_name = "N")]
    max_length: Option<usize>,
}

impl EncodeArgs {
    fn options(&self) -> EncodeOptions {
        EncodeOptions {
            batch_size: Some(self.batch_size),
            normalize: if self.no_normalize {
                Some(false)
            } else if self.normalize {
                Some(true)
            } else {
                None
            },
            truncate_dim: self.truncate_dim,
            prompt: self.prompt.clone(),
            prompt_name: self.prompt_name.clone(),
            max_length: self.max_length,
        }
    }
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    encode: EncodeArgs,
    #[command(flatten)]
    cache: cache_cli::CacheArgs,
    #[command(flatten)]
    precision: quantize_cli::PrecisionArgs,
    /// Texts to embed (or use --input).
    texts: Vec<String>,
    /// A file of texts: .txt (one per line) or .jsonl; `-` reads stdin.
    #[arg(long, short, value_name = "FILE")]
    input: Option<String>,
    /// Layout of --input (default: from its extension; stdin is txt).
    #[arg(long, value_enum)]
    input_format: Option<InputFormat>,
    /// JSONL field that holds the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// Output encoding (default: the one --output's extension names — .npy, .parquet or .pq, .csv, .json,
    /// .jsonl or .ndjson — else jsonl; Parquet parts with --shard).
    #[arg(long, short, value_enum)]
    format: Option<OutputFormat>,
    /// Write to FILE (atomically) instead of stdout; with --shard, the folder of part files.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    parquet: shards::ParquetArgs,
    /// Token-level vectors instead of one vector per text (JSONL: index, token_ids, embeddings).
    #[arg(long)]
    tokens: bool,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", error_line(&e));
        std::process::exit(1);
    }
}

/// One line: the chain of causes joined by ": ", newlines from library messages flattened. A cause whose text
/// its parent's message already ends with (library errors that print their source, `"…: {source}"`) is not
/// repeated.
fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Models { command } => models_cli::run(command, quiet),
        Command::Embed(args) => embed(args, quiet),
        Command::Similarity(args) => similarity_cli::run(args, quiet),
        Command::Bench(args) => bench_cli::run(args, quiet),
        Command::Quantize(args) => quantize_cli::run_quantize(&args, quiet),
        Command::Index {
            command: IndexCommand::Build(args),
        } => {
            if args.index.multi_vector {
                let model = load_model(&args.model, quiet)?;
                return multivector_cli::run_build(
                    &args.index,
                    &model,
                    &args.encode.options(),
                    quiet,
                );
            }
            let model = load_embedder(&args.model, quiet)?;
            index_cli::run_index_build(&args.index, &*model, &args.encode.options(), quiet)
        }
        Command::Search(args) => {
            let (model, compute) = search_cli::search_model(&args.search)?;
            if let Some(api) = providers_cli::load(&model, &args.api)? {
                return search_cli::run_search(&args.search, &api, &args.encode.options(), quiet);
            }
            let model = load_model(
                &ModelArgs {
                    model,
                    threads: args.threads,
                    compute,
                    device: args.device,
                    api: Default::default(),
                },
                quiet,
            )?;
            search_cli::run_search(&args.search, &model, &args.encode.options(), quiet)
        }
        Command::Eval(args) => {
            let threads = args.threads;
            let api = args.api.clone();
            // A quarter of the bench corpus: enough for a stable texts/s figure in a report.
            let corpus: Vec<String> = bench_cli::BENCH_SENTENCES
                .lines()
                .take(512)
                .map(str::to_string)
                .collect();
            let long_text: String = bench_cli::BENCH_LONG
                .lines()
                .take(6)
                .collect::<Vec<_>>()
                .join(" ");
            eval_cli::run_eval(
                args,
                &source_config(quiet),
                quiet,
                &|model, compute| {
                    if let Some(api) = providers_cli::load(model, &api)? {
                        return Ok(eval_cli::LoadedModel {
                            embedder: Arc::new(api),
                            count_tokens: Box::new(providers_cli::count_tokens),
                        });
                    }
                    let local = Arc::new(load_model(
                        &ModelArgs {
                            model: model.to_string(),
                            threads,
                            compute,
                            device: Device::Cpu,
                            api: api.clone(),
                        },
                        quiet,
                    )?);
                    let counter = local.clone();
                    Ok(eval_cli::LoadedModel {
                        embedder: local,
                        count_tokens: Box::new(move |t: &str, max: Option<usize>| {
                            counter
                                .tokenizer()
                                .encode_batch(&[t.to_string()], max)
                                .map_or(0, |e| e.first().map_or(0, |x| x.ids.len()))
                        }),
                    })
                },
                &corpus,
                &long_text,
            )
        }
        Command::Data { command } => eval_cli::run_data(command, &source_config(quiet)),
        Command::Analogy(args) => analogy_cli::run_analogy(&args, quiet),
        Command::Rerank(args) => rerank_cli::run_rerank(&args, quiet),
        Command::Drift(args) => drift_cli::run_drift(args, quiet),
        Command::Cache { command } => cache_cli::cache_command(
            command,
            &source_config(quiet).home,
            &mut std::io::stdout().lock(),
        ),
        Command::Parts { command } => parts_cli::run_parts(command, quiet),
        Command::Serve(args) => serve_cli::run_serve(args, quiet),
        Command::Train(args) => train_cli::run_train(*args, quiet),
    }
}

fn source_config(quiet: bool) -> SourceConfig {
    let mut cfg = SourceConfig::from_env();
    cfg.quiet = quiet;
    cfg
}

fn load_model(args: &ModelArgs, quiet: bool) -> Result<LocalEmbedder> {
    // The device is checked before anything is fetched: `--device cuda` without a GPU fails at once.
    let gpu = match args.device {
        Device::Cpu => None,
        Device::Cuda(d) => {
            embedkit_cuda::probe::require(d.ordinal)
                .with_context(|| format!("--device {}", args.device))?;
            Some(d)
        }
        Device::Auto(d) => embedkit_cuda::probe::available(d.ordinal).then_some(d),
    };
    if gpu.is_some() && args.compute != Compute::F32 {
        bail!(
            "--compute is for the CPU; on a GPU choose the type with --device cuda+f16|+bf16|+f32"
        );
    }
    let cfg = source_config(quiet);
    let dir = embedkit_sources::resolve(&args.model, &cfg)?;
    if let Some(device) = gpu {
        let options = embedkit_cuda::CudaOptions {
            device,
            workers: 1,
            cache_dir: Some(cfg.home.join("cuda")),
        };
        match embedkit_cuda::load_model(&args.model, &dir, &options) {
            Ok(model) => return Ok(model),
            // auto: a model the GPU backend does not run (or a GPU that fails) falls back to the CPU.
            Err(e) if matches!(args.device, Device::Auto(_)) => {
                if !quiet {
                    eprintln!("warning: --device auto: {e}; running on the CPU");
                }
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)).with_context(|| {
                    format!("cannot load model '{}' on {}", args.model, args.device)
                });
            }
        }
    }
    let options = CpuOptions {
        threads: args.threads,
        compute: args.compute,
        ..Default::default()
    };
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let model = embedkit_cpu::load_model(&args.model, &dir, &options)
        .with_context(|| format!("cannot load model '{}'", args.model))?;
    Ok(model)
}

/// A local model or an API model (`openai:…`, `cohere:…`, …), as the commands that only embed need it.
fn load_embedder(args: &ModelArgs, quiet: bool) -> Result<Arc<dyn Embedder>> {
    Ok(match providers_cli::load(&args.model, &args.api)? {
        Some(api) => Arc::new(api),
        None => Arc::new(load_model(args, quiet)?),
    })
}

fn gather_texts(
    texts: Vec<String>,
    input: Option<&str>,
    format: Option<InputFormat>,
    field: &str,
) -> Result<Vec<String>> {
    match input {
        Some(path) if !texts.is_empty() => {
            bail!("give texts as arguments or with --input {path}, not both")
        }
        Some(path) => input::read_texts(path, format, field),
        None if texts.is_empty() => {
            bail!("no texts: pass them as arguments or with --input FILE (- for stdin)")
        }
        None => Ok(texts),
    }
}

fn embed(args: EmbedArgs, quiet: bool) -> Result<()> {
    // Before the model's worker threads start: see alloc.rs.
    alloc::one_arena();
    // With --shard, --output is a folder of part files and its name says nothing about the format.
    let format = args.format.unwrap_or_else(|| {
        args.output
            .as_deref()
            .filter(|_| !args.parquet.sharded())
            .and_then(OutputFormat::from_extension)
            .unwrap_or(OutputFormat::Jsonl)
    });
    if args
        .parquet
        .wanted(format == OutputFormat::Parquet, args.format.is_none())?
    {
        if args.tokens {
            bail!("--tokens writes JSONL or JSON only (token counts differ per text)");
        }
        let model = load_embedder(&args.model, quiet)?;
        let model = cache_cli::with_cache(model, args.cache.open(&source_config(quiet).home)?);
        let source = shards::Source {
            texts: &args.texts,
            input: args.input.as_deref(),
            format: args.input_format,
            field: &args.field,
        };
        return shards::embed_parquet(
            &source,
            args.output.as_deref(),
            &args.parquet,
            &*model,
            &args.encode.options(),
            &args.precision,
            quiet,
        );
    }
    let texts = gather_texts(
        args.texts,
        args.input.as_deref(),
        args.input_format,
        &args.field,
    )?;
    if args.tokens && !matches!(format, OutputFormat::Jsonl | OutputFormat::Json) {
        bail!("--tokens writes JSONL or JSON only (token counts differ per text)");
    }
    let model = load_embedder(&args.model, quiet)?;
    let cache = args.cache.open(&source_config(quiet).home)?;
    let model = cache_cli::with_cache(model, cache);
    let options = args.encode.options();
    if args.precision.precision.is_some() {
        if args.tokens {
            bail!("--precision applies to sentence vectors, not --tokens");
        }
        return quantize_cli::embed_quantized(
            &*model,
            &texts,
            &options,
            &args.precision,
            format,
            args.output.as_deref(),
            quiet,
        );
    }
    let bar = progress::texts(texts.len(), quiet);
    let sink = Sink::open(args.output.as_deref())?;
    if args.tokens {
        return embed_tokens(&*model, &texts, &options, sink, format, &bar);
    }
    let dims = options.truncate_dim.unwrap_or(model.dims());
    let mut writer = VectorWriter::begin(sink, format, model.name(), texts.len(), dims)?;
    for chunk in texts.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let vectors = model.embed(&refs, &options)?;
        writer.write(&vectors)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    writer.finish()
}

fn embed_tokens(
    model: &dyn Embedder,
    texts: &[String],
    options: &EncodeOptions,
    mut sink: Sink,
    format: OutputFormat,
    bar: &ProgressBar,
) -> Result<()> {
    let json = format == OutputFormat::Json;
    if json {
        write!(
            sink,
            "{{\"model\":{},\"texts\":[",
            serde_json::to_string(model.name())?
        )?;
    }
    let mut index = 0usize;
    for chunk in texts.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for t in model.embed_tokens(&refs, options)? {
            if json && index > 0 {
                sink.write_all(b",")?;
            }
            write!(
                sink,
                "{{\"index\":{index},\"token_ids\":{},\"embeddings\":[",
                serde_json::to_string(&t.token_ids)?
            )?;
            for (i, row) in t.vectors.iter().enumerate() {
                if i > 0 {
                    sink.write_all(b",")?;
                }
                output::write_json_array(&mut sink, row)?;
            }
            sink.write_all(if json { b"]}" } else { b"]}\n" })?;
            index += 1;
        }
        bar.inc(chunk.len() as u64);
    }
    if json {
        sink.write_all(b"]}\n")?;
    }
    bar.finish_and_clear();
    sink.finish()
}

/// A text shortened to one display line.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    } else {
        flat
    }
}

#[cfg(test)]
mod error_line_tests {
    use super::error_line;

    #[test]
    fn a_cause_already_in_its_parents_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let inner = anyhow::Error::new(io).context("cannot read 'x.txt': no such file");
        let outer = inner.context("cannot load model 'm'");
        assert_eq!(
            error_line(&outer),
            "cannot load model 'm': cannot read 'x.txt': no such file"
        );
    }

    #[test]
    fn distinct_causes_are_joined_and_newlines_flattened() {
        let e = anyhow::anyhow!("bad\nvalue").context("parsing line 3");
        assert_eq!(error_line(&e), "parsing line 3: bad value");
    }
}
