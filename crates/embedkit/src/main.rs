//! The `embedkit` command: wires the crates into subcommands. All logic lives in the library crates.

mod alloc;
mod analogy_cli;
mod bench_cli;
mod cache_cli;
mod cross_cli;
mod drift_cli;
mod eval_cli;
mod input;
mod multivector_cli;
mod output;
mod parts_cli;
mod providers_cli;
mod rerank_cli;
mod serve_cli;
mod shards;
mod train_cli;
mod vectors_cli;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use embedkit_core::{Embedder, Embeddings, EncodeOptions, Metric, similarity_matrix, top_k};
use embedkit_cpu::{Compute, CpuOptions};
use embedkit_cuda::Device;
use embedkit_model::LocalEmbedder;
use embedkit_sources::SourceConfig;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
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
        command: ModelsCommand,
    },
    /// Embed texts into vectors (JSON, JSONL, .npy, CSV or Parquet; --shard K/N for one part of a job array).
    Embed(EmbedArgs),
    /// Compare texts: a similarity matrix, or documents ranked against a query.
    Similarity(SimilarityArgs),
    /// Measure speed: throughput, single-text latency, load time, memory, and cost by length and batch size.
    Bench(BenchArgs),
    /// Convert float32 vectors (.npy) to float16, bfloat16, int8, uint8, binary or ubinary.
    Quantize(vectors_cli::QuantizeArgs),
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
enum ModelsCommand {
    /// Download a catalog model (or hf:org/name) and print its folder as the last line.
    Fetch {
        /// Catalog name or hf:org/name[@revision].
        name: String,
    },
    /// List the catalog and which models are already fetched.
    List,
    /// Show a model's architecture, dimensions, token limit, pooling, parameters and size.
    Info {
        /// Catalog name, folder or hf:org/name.
        model: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    index: vectors_cli::IndexBuildArgs,
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
    search: vectors_cli::SearchArgs,
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
    precision: vectors_cli::PrecisionArgs,
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
    /// Output encoding.
    #[arg(long, short, value_enum, default_value = "jsonl")]
    format: OutputFormat,
    /// Write to FILE (atomically) instead of stdout; with --shard, the folder of part files.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    parquet: shards::ParquetArgs,
    /// Token-level vectors instead of one vector per text (JSONL: index, token_ids, embeddings).
    #[arg(long)]
    tokens: bool,
}

#[derive(Args)]
struct SimilarityArgs {
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

#[derive(Args)]
struct BenchArgs {
    /// Models to measure (repeat for several).
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Linear-layer arithmetic: f32, int8 or bf16 (bf16 only on CPUs with AVX512_BF16).
    #[arg(long, default_value = "f32")]
    compute: Compute,
    /// Skip measuring the CPU's peak (and the linear layers' share of it).
    #[arg(long)]
    no_peak: bool,
    /// Where the models run: cpu, cuda[:N] or auto (see `embed --help`).
    #[arg(long, default_value = "cpu", value_name = "cpu|auto|cuda[:N]")]
    device: Device,
    /// Corpus, one text per line (default: the built-in 2,000 news sentences).
    #[arg(long, short, value_name = "FILE")]
    input: Option<String>,
    /// Batch size of the throughput run.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Single-text encodes for the latency percentiles.
    #[arg(long, default_value_t = 200)]
    latency_runs: usize,
    /// Skip the length and batch-size sweeps.
    #[arg(long)]
    no_sweeps: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: providers_cli::ApiArgs,
}

/// The default benchmark corpus: real news sentences (tools/make_bench_corpus.py).
const BENCH_SENTENCES: &str = include_str!("../../../bench/sentences.txt");
/// Long texts for the length sweep.
const BENCH_LONG: &str = include_str!("../../../bench/long.txt");

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
        Command::Models { command } => models(command, quiet),
        Command::Embed(args) => embed(args, quiet),
        Command::Similarity(args) => similarity(args, quiet),
        Command::Bench(args) => bench(args, quiet),
        Command::Quantize(args) => vectors_cli::run_quantize(&args, quiet),
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
            vectors_cli::run_index_build(&args.index, &*model, &args.encode.options(), quiet)
        }
        Command::Search(args) => {
            let (model, compute) = vectors_cli::search_model(&args.search)?;
            if let Some(api) = providers_cli::load(&model, &args.api)? {
                return vectors_cli::run_search(&args.search, &api, &args.encode.options(), quiet);
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
            vectors_cli::run_search(&args.search, &model, &args.encode.options(), quiet)
        }
        Command::Eval(args) => {
            let threads = args.threads;
            let api = args.api.clone();
            // A quarter of the bench corpus: enough for a stable texts/s figure in a report.
            let corpus: Vec<String> = BENCH_SENTENCES
                .lines()
                .take(512)
                .map(str::to_string)
                .collect();
            let long_text: String = BENCH_LONG.lines().take(6).collect::<Vec<_>>().join(" ");
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

fn models(command: ModelsCommand, quiet: bool) -> Result<()> {
    let cfg = source_config(quiet);
    match command {
        ModelsCommand::Fetch { name } => {
            let dir = embedkit_sources::resolve(&name, &cfg)?;
            println!("{}", dir.display());
        }
        ModelsCommand::List => {
            let fetched = embedkit_sources::fetched_models(&cfg);
            println!("{:<20} {:<42} {:<8} folder", "name", "hub id", "fetched");
            for entry in embedkit_sources::catalog() {
                let local = fetched.iter().find(|(n, _)| *n == entry.name);
                println!(
                    "{:<20} {:<42} {:<8} {}",
                    entry.name,
                    entry.hub_id,
                    if local.is_some() { "yes" } else { "no" },
                    local
                        .map(|(_, p)| p.display().to_string())
                        .unwrap_or_default()
                );
            }
        }
        ModelsCommand::Info { model, json } => {
            if providers_cli::info(&model, json, &mut std::io::stdout().lock())? {
                return Ok(());
            }
            if let Some(dir) = cross_cli::cross_encoder_dir(&model, &cfg)? {
                let m = cross_cli::load_cross_encoder(&model, &dir, Some(1), Compute::F32)?;
                return cross_cli::print_info(&m.info(), json);
            }
            let m = load_model(
                &ModelArgs {
                    model,
                    threads: Some(1),
                    compute: Compute::F32,
                    device: Device::Cpu,
                    api: Default::default(),
                },
                quiet,
            )?;
            let info = m.info();
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                let prompts = if info.prompts.is_empty() {
                    "none".to_string()
                } else {
                    info.prompts
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let rows = [
                    ("name", info.name.clone()),
                    ("folder", info.path.display().to_string()),
                    ("architecture", info.architecture.clone()),
                    ("dimensions", info.dims.to_string()),
                    ("hidden size", info.hidden_size.to_string()),
                    (
                        "layers × heads",
                        format!("{} × {}", info.layers, info.heads),
                    ),
                    ("max tokens", info.max_tokens.to_string()),
                    ("pooling", info.pooling.clone()),
                    ("dense layers", info.dense_layers.to_string()),
                    ("normalized", info.normalize.to_string()),
                    ("similarity", info.similarity.clone()),
                    ("prompts", prompts),
                    (
                        "parameters",
                        format!("{:.1} M", info.parameters as f64 / 1e6),
                    ),
                    (
                        "size on disk",
                        format!("{:.1} MB", info.size_on_disk as f64 / 1e6),
                    ),
                    ("vocabulary", info.vocab_size.to_string()),
                    ("backend", info.backend.clone()),
                ];
                for (k, v) in rows {
                    println!("{k:<15} {v}");
                }
            }
        }
    }
    Ok(())
}

fn progress(len: usize, quiet: bool) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal; --quiet hides it everywhere.
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(len as u64), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} embedding {bar:40} {pos}/{len} texts ({per_sec}, eta {eta})",
        )
        .expect("the progress template is a valid literal"),
    );
    bar
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
    if args.parquet.wanted(
        args.format == OutputFormat::Parquet,
        args.format == OutputFormat::Jsonl,
    )? {
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
    if args.tokens && !matches!(args.format, OutputFormat::Jsonl | OutputFormat::Json) {
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
        return vectors_cli::embed_quantized(
            &*model,
            &texts,
            &options,
            &args.precision,
            args.format,
            args.output.as_deref(),
            quiet,
        );
    }
    let bar = progress(texts.len(), quiet);
    let sink = Sink::open(args.output.as_deref())?;
    if args.tokens {
        return embed_tokens(&*model, &texts, &options, sink, args.format, &bar);
    }
    let dims = options.truncate_dim.unwrap_or(model.dims());
    let mut writer = VectorWriter::begin(sink, args.format, model.name(), texts.len(), dims)?;
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

fn similarity(args: SimilarityArgs, quiet: bool) -> Result<()> {
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
        let bar = progress(docs.len(), quiet);
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

fn bench(args: BenchArgs, quiet: bool) -> Result<()> {
    let texts: Vec<String> = match &args.input {
        Some(path) => input::read_texts(path, None, "text")?,
        None => BENCH_SENTENCES.lines().map(str::to_string).collect(),
    };
    if texts.is_empty() {
        bail!("the benchmark corpus is empty");
    }
    let long_text: String = BENCH_LONG.lines().take(6).collect::<Vec<_>>().join(" ");
    let config = embedkit_eval::speed::SpeedConfig {
        batch_size: args.batch_size,
        latency_runs: args.latency_runs,
        lengths: if args.no_sweeps {
            vec![]
        } else {
            vec![16, 32, 64, 128, 256, 512]
        },
        batch_sizes: if args.no_sweeps {
            vec![]
        } else {
            vec![1, 8, 32, 128, 256]
        },
        ..Default::default()
    };
    let mut reports = Vec::new();
    // Requests, tokens and cost of each API model's whole run, beside the speed of local ones.
    let mut usages: Vec<(String, Option<embedkit_core::Usage>)> = Vec::new();
    // Each local model's linear-layer cost, for its share of the CPU's peak.
    let mut costs: Vec<Option<bench_cli::LinearCost>> = Vec::new();
    for spec in &args.model {
        let start = std::time::Instant::now();
        if let Some(api) = providers_cli::load(spec, &args.api)? {
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            // API models take no per-call token cap, so there is no length sweep.
            let api_config = embedkit_eval::speed::SpeedConfig {
                lengths: vec![],
                ..config.clone()
            };
            let report = embedkit_eval::speed::run_speed(
                &api,
                &texts,
                &long_text,
                &providers_cli::count_tokens,
                &api_config,
                |phase| {
                    if !quiet {
                        eprintln!("{spec}: {phase}…");
                    }
                },
            )?;
            let rss = embedkit_eval::speed::peak_rss_bytes().unwrap_or(0);
            usages.push((spec.clone(), api.usage()));
            costs.push(None);
            reports.push((report, load_ms, rss, providers_cli::backend(&api)));
            continue;
        }
        let model = load_model(
            &ModelArgs {
                model: spec.clone(),
                threads: args.threads,
                compute: args.compute,
                device: args.device,
                api: Default::default(),
            },
            quiet,
        )?;
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let count = |t: &str, max: Option<usize>| {
            model
                .tokenizer()
                .encode_batch(&[t.to_string()], max)
                .map_or(0, |e| e.first().map_or(0, |x| x.ids.len()))
        };
        let report = embedkit_eval::speed::run_speed(
            &model,
            &texts,
            &long_text,
            &count,
            &config,
            |phase| {
                if !quiet {
                    eprintln!("{spec}: {phase}…");
                }
            },
        )?;
        let rss = embedkit_eval::speed::peak_rss_bytes().unwrap_or(0);
        usages.push((spec.clone(), None));
        costs.push(bench_cli::linear_cost(model.config()));
        reports.push((report, load_ms, rss, model.info().backend));
    }
    // Measured after the models ran, so the loops do not share the cores with loading.
    let machine = (!args.no_peak).then(|| {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        bench_cli::Machine::measure(threads)
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        let v: Vec<_> = reports
            .iter()
            .zip(&usages)
            .zip(&costs)
            .map(|(((r, load_ms, rss, backend), (_, usage)), cost)| {
                let mut v = serde_json::to_value(r).expect("a speed report serializes");
                v["usage"] = providers_cli::usage_json(usage.as_ref());
                v["load_ms"] = serde_json::json!(load_ms);
                v["peak_rss_bytes"] = serde_json::json!(rss);
                v["backend"] = serde_json::json!(backend);
                v["threads"] = serde_json::json!(args.threads);
                if let Some(m) = &machine {
                    v["machine"] = m.json();
                    v["linear"] = m.linear_json(*cost, r.tokens_per_s, args.compute);
                }
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "| model | backend | texts/s | tokens/s | p50 ms | p99 ms | load ms | peak RSS MB | dims | bytes/vector |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (r, load_ms, rss, backend) in &reports {
        writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} |",
            r.model,
            backend,
            r.sentences_per_s,
            r.tokens_per_s,
            r.latency_p50_ms,
            r.latency_p99_ms,
            load_ms,
            *rss as f64 / 1e6,
            r.dims,
            r.bytes_per_vector
        )?;
    }
    writeln!(
        out,
        "\n{} texts, {:.1} tokens each on average, batch size {}",
        reports[0].0.texts, reports[0].0.mean_tokens, reports[0].0.batch_size
    )?;
    providers_cli::usage_table(&usages, &mut out)?;
    if let Some(m) = &machine {
        let rows: Vec<_> = reports
            .iter()
            .zip(&costs)
            .map(|((r, ..), c)| (r.model.clone(), *c, r.tokens_per_s))
            .collect();
        m.write_table(&mut out, &rows, args.compute)?;
    }
    for (r, ..) in &reports {
        if !r.by_length.is_empty() {
            writeln!(
                out,
                "\n{}: tokens/s by text length (batch {})",
                r.model, r.batch_size
            )?;
            writeln!(out, "| tokens | texts/s | tokens/s |\n|---:|---:|---:|")?;
            for p in &r.by_length {
                writeln!(
                    out,
                    "| {} | {:.1} | {:.0} |",
                    p.x, p.sentences_per_s, p.tokens_per_s
                )?;
            }
        }
        if !r.by_batch.is_empty() {
            writeln!(out, "\n{}: throughput by batch size", r.model)?;
            writeln!(out, "| batch | texts/s | tokens/s |\n|---:|---:|---:|")?;
            for p in &r.by_batch {
                writeln!(
                    out,
                    "| {} | {:.1} | {:.0} |",
                    p.x, p.sentences_per_s, p.tokens_per_s
                )?;
            }
        }
    }
    Ok(())
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
