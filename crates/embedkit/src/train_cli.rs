//! `embedkit train`: argument parsing and Ctrl-C handling around `embedkit_train::train`.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use embedkit_train::{AdamWConfig, Loss, LossKind, TrainConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The loss to train with.
#[derive(Clone, Copy, ValueEnum)]
pub enum LossArg {
    /// CosineSimilarityLoss on (text1, text2, label) rows.
    Cosine,
    /// MultipleNegativesRankingLoss on (anchor, positive[, negative]) rows, in-batch negatives, scale 20.
    Mnrl,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Model to start from: catalog name, folder, or hf:org/name[@revision] (BERT-family, mean or CLS pooling).
    #[arg(long, short)]
    model: String,
    /// Training data: .csv/.tsv with a header, or .jsonl (text1,text2,label or anchor,positive[,negative]).
    #[arg(long)]
    train: PathBuf,
    /// Loss function.
    #[arg(long, value_enum)]
    loss: LossArg,
    /// Wrap the loss in MatryoshkaLoss over these widths, e.g. 384,256,128.
    #[arg(long, value_delimiter = ',', value_name = "DIMS")]
    matryoshka_dims: Vec<usize>,
    /// Dev data (same columns), scored before training and after each epoch.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Passes over the training data.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Folder to write the trained model to (sentence-transformers layout; replaced if it exists).
    #[arg(long, short)]
    output: PathBuf,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 2e-5)]
    lr: f64,
    /// AdamW weight decay (not applied to biases and LayerNorm weights).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Linear warmup steps (default: 10% of all steps), then linear decay to 0.
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Clip gradients to this total L2 norm (0 = no clipping).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Seed for data order and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Truncate texts to N tokens (default: the model's max_seq_length).
    #[arg(long, value_name = "N")]
    max_seq_length: Option<usize>,
    /// Save a checkpoint every N steps (0: only when interrupted).
    #[arg(long, default_value_t = 0, value_name = "N")]
    checkpoint_every: usize,
    /// Checkpoint folder (default: OUTPUT.checkpoints).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Continue from the newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop (with a checkpoint) after N steps in this run.
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the run's report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run_train(args: TrainArgs, quiet: bool) -> Result<()> {
    let dir = embedkit_sources::resolve(&args.model, &crate::source_config(quiet))?;
    if args.max_grad_norm < 0.0 || !args.max_grad_norm.is_finite() {
        bail!("--max-grad-norm must be a number ≥ 0");
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be a positive number");
    }
    let cfg = TrainConfig {
        model_dir: dir,
        train_path: args.train,
        eval_path: args.eval,
        loss: Loss::new(
            match args.loss {
                LossArg::Cosine => LossKind::Cosine,
                LossArg::Mnrl => LossKind::Mnrl,
            },
            args.matryoshka_dims,
        ),
        epochs: args.epochs,
        batch_size: args.batch_size,
        adamw: AdamWConfig {
            lr: args.lr,
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        warmup_steps: args.warmup_steps,
        max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
        seed: args.seed,
        max_seq_length: args.max_seq_length,
        output: args.output,
        checkpoint_dir: args.checkpoint_dir,
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
        max_steps: args.max_steps,
        threads: args.threads,
        quiet,
    };
    // First Ctrl-C: finish the current step, save a checkpoint, exit. Second: exit at once.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupted: saving a checkpoint after this step (Ctrl-C again to quit now)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let report = embedkit_train::train(&cfg, stop.clone())
        .with_context(|| format!("cannot train '{}'", args.model))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for e in &report.evals {
            println!("epoch {}: {} {:.4}", e.epoch, e.metric, e.value);
        }
        println!(
            "{} of {} steps, last loss {:.4}, {:.1} examples/s",
            report.steps, report.total_steps, report.last_loss, report.examples_per_sec
        );
        if let Some(c) = &report.checkpoint {
            println!("checkpoint: {}", c.display());
        }
        if let Some(o) = &report.output {
            println!("model: {}", o.display());
        }
    }
    if report.interrupted && stop.load(Ordering::SeqCst) {
        std::process::exit(130);
    }
    Ok(())
}
