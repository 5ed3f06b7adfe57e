//! Cross-encoders on the command line: recognizing and loading a `*ForSequenceClassification` folder, its
//! `models info`, and the scores `rerank` and `eval --rerank` use.

use anyhow::{Context, Result, bail};
use embedkit_cpu::{Compute, CpuOptions};
use embedkit_model::{CrossEncoder, CrossEncoderInfo, SentenceTransformerLayout};
use embedkit_sources::SourceConfig;
use std::path::{Path, PathBuf};

/// The model folder `spec` names, when it is a cross-encoder (config.json names a sequence-classification
/// class); `None` for anything else, API models included.
pub fn cross_encoder_dir(spec: &str, cfg: &SourceConfig) -> Result<Option<PathBuf>> {
    if spec.contains(':') && !Path::new(spec).exists() && !spec.starts_with("hf:") {
        return Ok(None);
    }
    let dir = embedkit_sources::resolve(spec, cfg)?;
    Ok(is_cross_encoder(&dir)?.then_some(dir))
}

/// Whether the folder holds a sequence-classification model.
pub fn is_cross_encoder(dir: &Path) -> Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let tdir = SentenceTransformerLayout::read(dir)
        .map(|l| l.transformer_dir)
        .unwrap_or_else(|_| dir.to_path_buf());
    Ok(
        embedkit_model::sequence_classification_class(&tdir.join("config.json"))
            .with_context(|| format!("cannot read '{}'", tdir.join("config.json").display()))?
            .is_some(),
    )
}

/// Loads a cross-encoder folder on the CPU backend.
pub fn load_cross_encoder(
    name: &str,
    dir: &Path,
    threads: Option<usize>,
    compute: Compute,
) -> Result<CrossEncoder> {
    if threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let options = CpuOptions {
        threads,
        compute,
        ..Default::default()
    };
    CrossEncoder::load_with(name, dir, |config, files| {
        embedkit_cpu::load_backend(config, files, &options)
    })
    .with_context(|| format!("cannot load cross-encoder '{name}'"))
}

/// Resolves and loads `spec` as a cross-encoder; a model that is not one is an error saying so.
pub fn load_spec(
    spec: &str,
    cfg: &SourceConfig,
    threads: Option<usize>,
    compute: Compute,
) -> Result<CrossEncoder> {
    let dir = embedkit_sources::resolve(spec, cfg)?;
    load_cross_encoder(spec, &dir, threads, compute)
}

/// `models info` of a cross-encoder.
pub fn print_info(info: &CrossEncoderInfo, json: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(info)?;
        v["kind"] = "cross-encoder".into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows = [
        ("name", info.name.clone()),
        ("folder", info.path.display().to_string()),
        (
            "architecture",
            format!("{} ({} encoder)", info.architecture, info.encoder),
        ),
        (
            "kind",
            format!(
                "cross-encoder, {} label{}, {} activation",
                info.num_labels,
                if info.num_labels == 1 { "" } else { "s" },
                info.activation
            ),
        ),
        ("labels", info.labels.join(", ")),
        ("head", info.head.clone()),
        ("hidden size", info.hidden_size.to_string()),
        (
            "layers × heads",
            format!("{} × {}", info.layers, info.heads),
        ),
        ("max tokens", format!("{} per pair", info.max_tokens)),
        (
            "parameters",
            format!("{:.1} M", info.parameters as f64 / 1e6),
        ),
        (
            "size on disk",
            format!("{:.1} MB", info.size_on_disk as f64 / 1e6),
        ),
        ("backend", info.backend.clone()),
    ];
    for (k, v) in rows {
        println!("{k:<15} {v}");
    }
    Ok(())
}
