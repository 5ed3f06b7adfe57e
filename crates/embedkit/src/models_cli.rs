//! `embedkit models fetch | list | info`: the catalog, what is already fetched, and what a model is (local
//! embedders, cross-encoders and API models alike).

use crate::{ModelArgs, cross_cli, load_model, providers_cli, source_config};
use anyhow::Result;
use clap::Subcommand;
use embedkit_cpu::Compute;
use embedkit_cuda::Device;

/// `embedkit models …`.
#[derive(Subcommand)]
pub(crate) enum ModelsCommand {
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

/// Runs an `embedkit models` command.
pub(crate) fn run(command: ModelsCommand, quiet: bool) -> Result<()> {
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
