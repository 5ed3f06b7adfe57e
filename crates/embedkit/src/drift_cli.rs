//! `embedkit drift`: has the distribution of embeddings moved? Two samples (.npy vectors, or texts embedded with
//! `--model` through the cache) go through embedkit-monitor's calibrated tests; `drift canary record|check`
//! catches an embedding function that changed, exactly; `drift profile` saves a reference for later checks.
//! Exit status 0 = no drift / canary equal, 3 = drift / canary changed (1 = an error), for cron and CI.

use crate::{EncodeArgs, ModelArgs, cache_cli, input, load_embedder, source_config};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use embedkit_core::{Embedder, Embeddings, EncodeOptions};
use embedkit_monitor::{Canary, DriftOptions, DriftReport, Method, Profile, detect};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The exit status of drift found or a changed canary.
const EXIT_CHANGED: i32 = 3;

/// `embedkit drift` and its subcommands.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DriftArgs {
    #[command(subcommand)]
    command: Option<DriftCommand>,
    #[command(flatten)]
    test: TestArgs,
}

#[derive(Subcommand)]
enum DriftCommand {
    /// Record or check canary texts: re-embedding them must give the recorded vectors.
    Canary {
        #[command(subcommand)]
        command: CanaryCommand,
    },
    /// Save a reference profile (a seeded sample, k-means cluster centres, a canary) to compare later traffic with.
    Profile(ProfileArgs),
}

#[derive(Subcommand)]
enum CanaryCommand {
    /// Embed the canary texts and record texts, vectors and options in a JSON file.
    Record(Box<CanaryArgs>),
    /// Re-embed the recorded texts and compare: exit 0 when equal, 3 when the embedding function changed.
    Check(Box<CanaryArgs>),
}

#[derive(Args)]
struct CanaryArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    encode: EncodeArgs,
    #[command(flatten)]
    cache: cache_cli::CacheArgs,
    /// record: the canary texts, one per line (.txt) or .jsonl.
    #[arg(long, value_name = "FILE")]
    texts: Option<String>,
    /// record: where to write the canary file.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// check: the canary file to check against.
    #[arg(long, value_name = "FILE")]
    canary: Option<PathBuf>,
    /// check: smallest cosine that still counts as equal.
    #[arg(long, default_value_t = 0.9999)]
    min_cosine: f64,
    /// check: print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ProfileArgs {
    /// The reference vectors (.npy, float32/float16/float64).
    #[arg(long, short, value_name = "FILE")]
    input: PathBuf,
    /// The profile folder to write (reference.npy, centres.npy, profile.json).
    #[arg(long, short, value_name = "DIR")]
    output: PathBuf,
    /// Reference vectors kept (a seeded sample).
    #[arg(long, default_value_t = 2000)]
    max_samples: usize,
    /// k-means clusters of the reference.
    #[arg(long, default_value_t = 16)]
    clusters: usize,
    /// Seed of the sample and the clustering.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A canary file (`drift canary record`) to keep in the profile, for periodic re-embedding checks.
    #[arg(long, value_name = "FILE")]
    canary: Option<PathBuf>,
}

#[derive(Args)]
struct TestArgs {
    /// Reference sample: .npy or Parquet vectors (`embed --format parquet`), or texts (.txt one per line, .jsonl,
    /// Parquet) embedded with --model.
    #[arg(long, short, value_name = "FILE", required = true)]
    reference: Option<PathBuf>,
    /// Current sample, in the same forms.
    #[arg(long, short, value_name = "FILE", required = true)]
    current: Option<PathBuf>,
    /// Tests to run, comma-separated: mmd, classifier, centroid, ks.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mmd,classifier,centroid,ks"
    )]
    method: Vec<String>,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Permutations of the permutation tests.
    #[arg(long, default_value_t = 500)]
    permutations: usize,
    /// Seed of every random choice (same seed, same samples: same result).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// At most this many vectors a side are tested (a seeded sample).
    #[arg(long, default_value_t = 2000)]
    max_samples: usize,
    /// k-means clusters of the reference in the cluster report (0 = none).
    #[arg(long, default_value_t = 16)]
    clusters: usize,
    /// Current texts listed as the most novel (MMD witness).
    #[arg(long, default_value_t = 10)]
    novel: usize,
    /// JSONL field that holds the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Also write report.md, results.json and SVG plots into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    encode: EncodeArgs,
    #[command(flatten)]
    cache: cache_cli::CacheArgs,
}

/// Runs `embedkit drift …`; exits with status 3 itself when drift is found or a canary changed.
pub fn run_drift(args: DriftArgs, quiet: bool) -> Result<()> {
    let changed = match args.command {
        Some(DriftCommand::Canary {
            command: CanaryCommand::Record(a),
        }) => record_canary(&a, quiet).map(|()| false)?,
        Some(DriftCommand::Canary {
            command: CanaryCommand::Check(a),
        }) => check_canary(&a, quiet)?,
        Some(DriftCommand::Profile(a)) => write_profile(&a).map(|()| false)?,
        None => run_test(&args.test, quiet)?,
    };
    if changed {
        std::io::stdout().flush().ok();
        std::process::exit(EXIT_CHANGED);
    }
    Ok(())
}

/// A sample as vectors, with its texts when it was given as texts.
struct Sample {
    vectors: Embeddings,
    texts: Option<Vec<String>>,
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn is_npy(path: &Path) -> bool {
    has_extension(path, "npy")
}

/// A vector file `embed --format parquet` writes (float32 or float16 embeddings), or `None` for a Parquet file
/// of texts (no `id` + `embedding` columns), which is embedded like any other text file. The flag says whether
/// the file keeps the texts too (`embed --format parquet` with a `text` column).
fn read_parquet_vectors(path: &Path) -> Result<Option<(Embeddings, bool)>> {
    use embedkit_parquet::{Element, VectorFile, embedding_bytes};
    let Ok(file) = VectorFile::open(path) else {
        return Ok(None);
    };
    let descr = match file.layout.element {
        Element::Float32 => "<f4",
        Element::Float16 => "<f2",
        other => bail!(
            "{}: the embeddings are {other:?}; drift tests need float vectors (embed with --precision float32)",
            path.display()
        ),
    };
    let mut data = Vec::new();
    for batch in file.batches()? {
        let batch = batch?;
        data.extend(
            embedding_bytes(&batch)
                .with_context(|| format!("{}: no readable embedding column", path.display()))?,
        );
    }
    let (rows, dims) = (file.rows as usize, file.layout.width);
    let arr = embedkit_vectors::npy::NpyArray {
        descr: descr.to_string(),
        shape: vec![rows, dims],
        data,
    };
    let values = arr
        .to_f32_values()
        .with_context(|| format!("{}", path.display()))?;
    if values.len() != rows * dims {
        bail!(
            "{}: {} values for {rows} rows of {dims}",
            path.display(),
            values.len()
        );
    }
    Ok(Some((
        Embeddings::new(values, rows, dims)?,
        file.layout.text,
    )))
}

fn read_npy(path: &Path) -> Result<Embeddings> {
    let arr = embedkit_vectors::npy::read_npy(path)?;
    let (rows, dims) = match arr.shape[..] {
        [rows, dims] => (rows, dims),
        _ => bail!(
            "{}: expected a 2-D (vectors, dims) array, found shape {:?}",
            path.display(),
            arr.shape
        ),
    };
    let values = arr
        .to_f32_values()
        .with_context(|| format!("{}", path.display()))?;
    Ok(Embeddings::new(values, rows, dims)?)
}

fn load_sample(
    path: &Path,
    field: &str,
    model: &mut Option<std::sync::Arc<dyn Embedder>>,
    a: &TestArgs,
    quiet: bool,
) -> Result<Sample> {
    if is_npy(path) {
        return Ok(Sample {
            vectors: read_npy(path)?,
            texts: None,
        });
    }
    if has_extension(path, "parquet")
        && let Some((vectors, has_text)) = read_parquet_vectors(path)?
    {
        // The texts kept next to the vectors name the clusters and the novel rows.
        let texts = has_text
            .then(|| input::read_texts(&path.to_string_lossy(), None, "text"))
            .transpose()?;
        return Ok(Sample { vectors, texts });
    }
    let texts = input::read_texts(&path.to_string_lossy(), None, field)?;
    if model.is_none() {
        let m = load_embedder(&a.model, quiet)?;
        *model = Some(cache_cli::with_cache(
            m,
            a.cache.open(&source_config(quiet).home)?,
        ));
    }
    let m = model.as_ref().context("model")?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = m
        .embed(&refs, &a.encode.options())
        .with_context(|| format!("embedding {}", path.display()))?;
    Ok(Sample {
        vectors,
        texts: Some(texts),
    })
}

fn run_test(a: &TestArgs, quiet: bool) -> Result<bool> {
    let (Some(ref_path), Some(cur_path)) = (&a.reference, &a.current) else {
        bail!("give --reference and --current (or a subcommand: canary, profile)");
    };
    let methods = a
        .method
        .iter()
        .map(|m| m.parse::<Method>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut model = None;
    let reference = load_sample(ref_path, &a.field, &mut model, a, quiet)?;
    let current = load_sample(cur_path, &a.field, &mut model, a, quiet)?;
    let opts = DriftOptions {
        methods,
        alpha: a.alpha,
        permutations: a.permutations,
        seed: a.seed,
        max_samples: a.max_samples,
        clusters: a.clusters,
        novel: a.novel,
        ..Default::default()
    };
    let report = detect(&reference.vectors, &current.vectors, &opts)?;
    let json = report_json(&report, &reference, &current);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_summary(&report, &json);
    }
    if let Some(dir) = &a.report {
        embedkit_monitor::report::write_report(dir, &json, &report)
            .with_context(|| format!("cannot write the report to {}", dir.display()))?;
        if !quiet {
            eprintln!("report written to {}", dir.display());
        }
    }
    Ok(report.drift)
}

/// The JSON result: the report with texts put in where the samples were texts.
fn report_json(r: &DriftReport, reference: &Sample, current: &Sample) -> serde_json::Value {
    embedkit_monitor::report::to_json(r, reference.texts.as_deref(), current.texts.as_deref())
}

fn print_summary(r: &DriftReport, json: &serde_json::Value) {
    println!(
        "{} (combined p = {:.4}, α = {}; reference {} vectors, current {}; tested {} and {})",
        if r.drift { "DRIFT" } else { "no drift" },
        r.p_value,
        r.alpha,
        r.rows.0,
        r.rows.1,
        r.sampled.0,
        r.sampled.1
    );
    for (name, m) in &r.methods {
        println!(
            "  {name:<11} p = {:<8.4} statistic = {:<10.5} {}",
            m.p_value,
            m.statistic,
            if m.drift { "drift" } else { "" }
        );
    }
    if let Some(c) = &r.clusters {
        println!(
            "  clusters: Hellinger {:.3}, χ² {:.1} (p = {:.4})",
            c.hellinger, c.chi2, c.chi2_p_value
        );
    }
    if let Some(novel) = json["novel"].as_array().filter(|v| !v.is_empty()) {
        println!("  most novel current rows:");
        for n in novel.iter().take(5) {
            let text = n["text"]
                .as_str()
                .map(|t| t.chars().take(80).collect::<String>())
                .unwrap_or_default();
            println!(
                "    #{:<6} witness {:+.4}  {text}",
                n["index"],
                n["witness"].as_f64().unwrap_or(0.0)
            );
        }
    }
}

/// The options that change vectors, as recorded in a canary.
fn canary_options(a: &CanaryArgs) -> BTreeMap<String, String> {
    let o: EncodeOptions = a.encode.options();
    let mut m = BTreeMap::new();
    m.insert(
        "compute".into(),
        format!("{:?}", a.model.compute).to_lowercase(),
    );
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("prompt", o.prompt.clone());
    put("prompt_name", o.prompt_name.clone());
    put("truncate_dim", o.truncate_dim.map(|v| v.to_string()));
    put("max_length", o.max_length.map(|v| v.to_string()));
    put("normalize", o.normalize.map(|v| v.to_string()));
    m
}

fn embed_texts(a: &CanaryArgs, texts: &[String], quiet: bool) -> Result<Vec<Vec<f32>>> {
    let model = load_embedder(&a.model, quiet)?;
    let model = cache_cli::with_cache(model, a.cache.open(&source_config(quiet).home)?);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let e = model.embed(&refs, &a.encode.options())?;
    Ok(e.iter().map(<[f32]>::to_vec).collect())
}

fn record_canary(a: &CanaryArgs, quiet: bool) -> Result<()> {
    let (Some(texts_path), Some(output)) = (&a.texts, &a.output) else {
        bail!("canary record needs --texts FILE and --output FILE");
    };
    let texts = input::read_texts(texts_path, None, "text")?;
    if texts.is_empty() {
        bail!("{texts_path}: no canary texts");
    }
    let vectors = embed_texts(a, &texts, quiet)?;
    let canary = Canary {
        version: 1,
        model: a.model.model.clone(),
        options: canary_options(a),
        texts,
        vectors,
    };
    embedkit_core::write_atomic(output, serde_json::to_string(&canary)?.as_bytes())
        .with_context(|| format!("cannot write {}", output.display()))?;
    if !quiet {
        eprintln!(
            "recorded {} canary texts of {} to {}",
            canary.texts.len(),
            canary.model,
            output.display()
        );
    }
    Ok(())
}

fn check_canary(a: &CanaryArgs, quiet: bool) -> Result<bool> {
    let Some(path) = &a.canary else {
        bail!("canary check needs --canary FILE");
    };
    let canary = Canary::read(path)?;
    let vectors = embed_texts(a, &canary.texts, quiet)?;
    let result = canary.check(&vectors, a.min_cosine);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else if result.changed {
        println!(
            "CHANGED: {} (recorded with {} {:?})",
            result.reasons.join("; "),
            canary.model,
            canary.options
        );
    } else {
        println!(
            "equal: {} texts, minimum cosine {:.6}, largest norm change {:.2e}",
            canary.texts.len(),
            result.min_cosine,
            result.max_norm_change
        );
    }
    Ok(result.changed)
}

fn write_profile(a: &ProfileArgs) -> Result<()> {
    let e = read_npy(&a.input)?;
    // Read the canary first: a profile must never carry a canary file that `check` would refuse.
    let canary = a.canary.as_deref().map(Canary::read).transpose()?;
    let profile = Profile::build(
        &e,
        &a.input.display().to_string(),
        a.max_samples,
        a.clusters,
        a.seed,
        canary,
    )
    .with_context(|| format!("cannot make a profile of {}", a.input.display()))?;
    profile.write(&a.output)?;
    println!("{}", a.output.display());
    Ok(())
}
