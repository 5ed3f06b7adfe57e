//! `embedkit serve`: loads the models and runs the HTTP server of `embedkit-server`.

use crate::{ModelArgs, load_model, source_config};
use anyhow::{Context, Result, bail};
use clap::Args;
use embedkit_cache::CachedEmbedder;
use embedkit_cpu::Compute;
use embedkit_server::{ServedModel, ServerConfig};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Options of `embedkit serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Model to serve (catalog name, folder or hf:org/name); repeat for several. Requests choose one by this
    /// name (a folder by its last component) in their `model` field; the first answers when it is empty.
    #[arg(long, short, default_value = crate::DEFAULT_MODEL)]
    model: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0 picks a free one; the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Worker threads of each model's forward pass (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Linear-layer arithmetic: f32 (exact) or int8.
    #[arg(long, default_value = "f32")]
    compute: Compute,
    /// Where the models run: cpu, cuda[:N] (+f16, +bf16 or +f32) or auto (see `embed --help`).
    #[arg(long, default_value = "cpu", value_name = "cpu|auto|cuda[:N]")]
    device: embedkit_cuda::Device,
    /// Tokens per forward pass, summed over the requests batched together.
    #[arg(long, default_value_t = 16384)]
    max_batch_tokens: usize,
    /// Requests admitted at once; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Inputs per request; more are answered 413.
    #[arg(long, default_value_t = 512)]
    max_client_batch_size: usize,
    /// Request body bytes; more are answered 413.
    #[arg(long, default_value_t = 2 << 20)]
    max_body_bytes: usize,
    /// Nice value added to the HTTP and tokenizer threads (Linux), so that they use the cores inference
    /// leaves idle instead of interrupting a forward pass; 0 keeps them at normal priority.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    io_nice: i32,
    /// Require `Authorization: Bearer KEY` on every route but /health (default: $EMBEDKIT_API_KEY if set).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Cache vectors in DIR or Redis (redis://…); cached models are served one request at a time per call
    /// to the cache, without cross-request batching.
    #[arg(long, value_name = "DIR|URL")]
    cache: Option<String>,
    /// How long new cache entries live: 24h, 30m, 90s, 7d; 0 = forever.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = crate::cache_cli::parse_duration)]
    cache_ttl: Duration,
    /// Watch the served vectors for drift against a profile (`embedkit drift profile`): MODEL=DIR for another
    /// model than the first; repeat for several. Results on /metrics and GET /drift.
    #[arg(long, value_name = "[MODEL=]DIR")]
    drift_reference: Vec<String>,
    /// Vectors per drift-checked window.
    #[arg(long, default_value_t = embedkit_server::DEFAULT_WINDOW, value_name = "N")]
    drift_window: usize,
    /// How often the profile's canary texts are re-embedded and compared: 60s, 5m, 1h; 0 = never.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::cache_cli::parse_duration)]
    drift_canary_interval: Duration,
    /// At most this share of one core goes to drift checks (the monitor rests between checks; vectors offered
    /// meanwhile are dropped); 1 = check every window as soon as it is full.
    #[arg(long, default_value_t = embedkit_server::DEFAULT_MAX_CPU, value_name = "SHARE")]
    drift_max_cpu: f64,
}

/// Runs `embedkit serve` until SIGTERM or Ctrl-C.
pub fn run_serve(args: ServeArgs, quiet: bool) -> Result<()> {
    if args.max_batch_tokens == 0
        || args.max_concurrent_requests == 0
        || args.max_client_batch_size == 0
    {
        bail!(
            "--max-batch-tokens, --max-concurrent-requests and --max-client-batch-size must be at least 1"
        );
    }
    embedkit_server::init_logging(quiet);
    let cache = match &args.cache {
        Some(spec) => crate::cache_cli::open_cache_with(
            Some(spec),
            false,
            &source_config(quiet).home,
            args.cache_ttl,
            crate::cache_cli::DEFAULT_MAX_SIZE,
        )?,
        None => None,
    };
    let mut models = Vec::new();
    for spec in &args.model {
        let name = served_name(spec);
        // An API model is served like any other embedder (a gateway with one key and one cache).
        if let Some(api) = crate::providers_cli::load(spec, &Default::default())? {
            let served: Arc<dyn embedkit_core::Embedder> = match &cache {
                Some(c) => Arc::new(CachedEmbedder::new(api, c.clone())),
                None => Arc::new(api),
            };
            models.push((name, ServedModel::Other(served)));
            continue;
        }
        // A cross-encoder answers /rerank and /predict (scores of pairs), never /embed.
        if let Some(dir) = crate::cross_cli::cross_encoder_dir(spec, &source_config(quiet))? {
            let ce = crate::cross_cli::load_cross_encoder(spec, &dir, args.threads, args.compute)?;
            models.push((name, ServedModel::CrossEncoder(Arc::new(ce))));
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
        let served = match &cache {
            Some(c) => ServedModel::Other(Arc::new(CachedEmbedder::new(model, c.clone()))),
            None => ServedModel::Local(Arc::new(model)),
        };
        models.push((name, served));
    }
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("EMBEDKIT_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let drift = args
        .drift_reference
        .iter()
        .map(|spec| drift_config(spec, &args))
        .collect::<Result<Vec<_>>>()?;
    let config = ServerConfig {
        max_batch_tokens: args.max_batch_tokens,
        max_concurrent_requests: args.max_concurrent_requests,
        max_client_batch_size: args.max_client_batch_size,
        max_body_bytes: args.max_body_bytes,
        api_key,
        io_nice: args.io_nice,
        drift,
        ..ServerConfig::default()
    };
    let names: Vec<String> = models.iter().map(|(n, _)| n.clone()).collect();
    embedkit_server::run_blocking(
        SocketAddr::new(args.host, args.port),
        models,
        config,
        |addr| {
            // stdout, always: scripts and tests read the port from this line.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{addr} ({})", names.join(", "));
            let _ = out.flush();
        },
    )
    .context("the server stopped")?;
    Ok(())
}

/// One `--drift-reference [MODEL=]DIR`: the profile read and checked now, so that a bad one stops the start.
fn drift_config(spec: &str, args: &ServeArgs) -> Result<embedkit_server::DriftConfig> {
    // A model name never holds '=', a path may: split at the first '=' only when the left side is served.
    let (model, dir) = match spec.split_once('=') {
        Some((m, d)) if args.model.iter().any(|s| served_name(s) == m) => (Some(m.to_string()), d),
        _ => (None, spec),
    };
    let profile = embedkit_monitor::Profile::read(std::path::Path::new(dir))
        .with_context(|| format!("--drift-reference {spec}"))?;
    let mut config = embedkit_server::DriftConfig::new(profile);
    config.model = model;
    config.window = args.drift_window;
    config.max_cpu = args.drift_max_cpu;
    config.canary_interval =
        (!args.drift_canary_interval.is_zero()).then_some(args.drift_canary_interval);
    Ok(config)
}

/// The name requests use for a model: a folder's last component, otherwise the spec as given.
fn served_name(spec: &str) -> String {
    let path = std::path::Path::new(spec);
    if path.is_dir()
        && let Some(name) = path.file_name().and_then(|n| n.to_str())
    {
        return name.to_string();
    }
    spec.to_string()
}
