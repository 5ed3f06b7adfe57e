//! `embedkit parts check DIR` and `embedkit parts merge DIR --output all.parquet`: the folder of part files
//! a sharded `embed --shard K/N --output DIR` run writes.

use anyhow::{Result, bail};
use clap::Subcommand;
use std::path::PathBuf;

/// Subcommands of `embedkit parts`.
#[derive(Subcommand)]
pub enum PartsCommand {
    /// Verify a folder: all N parts present, nothing partial, the same model and options, every id once.
    Check {
        /// The --output folder of the shards.
        dir: PathBuf,
    },
    /// Check the folder, then concatenate its parts in order into one Parquet file (atomically).
    Merge {
        /// The --output folder of the shards.
        dir: PathBuf,
        /// The merged file.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
}

/// Runs a `parts` subcommand; results go to stdout, a failed check is an error (exit status 1).
pub fn run_parts(command: PartsCommand, quiet: bool) -> Result<()> {
    match command {
        PartsCommand::Check { dir } => {
            let report = embedkit_parquet::check(&dir)?;
            if !report.problems.is_empty() {
                for p in &report.problems {
                    println!("problem: {p}");
                }
                bail!(
                    "{}: {} problem(s); first: {}",
                    dir.display(),
                    report.problems.len(),
                    report.problems[0]
                );
            }
            let s = |k: &str| report.settings.get(k).map_or("?", String::as_str);
            println!(
                "ok: {} parts of {}, {} rows, every id once; model {}, fingerprint {}, precision {}, dims {}",
                report.parts,
                report.shards,
                report.rows,
                s("model"),
                s("fingerprint"),
                s("precision"),
                s("dims")
            );
        }
        PartsCommand::Merge { dir, output } => {
            let rows =
                embedkit_parquet::merge(&dir, &output, embedkit_parquet::DEFAULT_ROW_GROUP_ROWS)?;
            if !quiet {
                eprintln!("merged {rows} rows into {}", output.display());
            }
        }
    }
    Ok(())
}
