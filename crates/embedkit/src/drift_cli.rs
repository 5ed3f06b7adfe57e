//! `embedkit drift`: has the distribution of embeddings moved? Two samples (.npy vectors, or texts embedded with
//! `--model` through the cache) go through embedkit-monitor's calibrated tests; `drift canary record|check`
//! catches an embedding function that changed, exactly; `drift profile` saves a reference for later checks.
//! Exit status 0 = no drift / canary equal, 3 = drift / canary changed (1 = an error), for cron and CI.

use crate::{EncodeArgs, ModelArgs, cache_cli, input, load_embedder, source_config};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use embedkit_core::{Embedder, Embeddings, EncodeOptions};
use embedkit_monitor::cluster::kmeans;
use embedkit_monitor::rng::{SplitMix64, subsample};
use embedkit_monitor::{Canary, DriftOptions, DriftReport, Method, detect};
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
    /// Reference sample: .npy vectors, or texts (.txt one per line, .jsonl) embedded with --model.
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

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
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
    use serde_json::json;
    let text_of = |s: &Sample, i: usize| s.texts.as_ref().and_then(|t| t.get(i)).cloned();
    let methods: BTreeMap<&String, serde_json::Value> = r
        .methods
        .iter()
        .map(|(k, m)| (k, json!({"p_value": m.p_value, "statistic": m.statistic, "drift": m.drift, "details": m.details})))
        .collect();
    let clusters: Vec<serde_json::Value> = r.clusters.as_ref().map_or_else(Vec::new, |c| {
        c.clusters
            .iter()
            .map(|cl| {
                let names: Vec<String> = cl.central.iter().filter_map(|&i| text_of(reference, i)).collect();
                json!({"id": cl.id, "reference_share": cl.reference_share, "current_share": cl.current_share,
                       "central": cl.central, "names": names})
            })
            .collect()
    });
    let rows = |v: &[embedkit_monitor::WitnessRow], s: &Sample| -> Vec<serde_json::Value> {
        v.iter()
            .map(|w| json!({"index": w.index, "witness": w.witness, "text": text_of(s, w.index)}))
            .collect()
    };
    json!({
        "drift": r.drift,
        "p_value": r.p_value,
        "alpha": r.alpha,
        "rows": {"reference": r.rows.0, "current": r.rows.1},
        "sampled": {"reference": r.sampled.0, "current": r.sampled.1},
        "methods": methods,
        "clusters": clusters,
        "cluster_shift": r.clusters.as_ref().map(|c| json!({"hellinger": c.hellinger, "chi2": c.chi2, "p_value": c.chi2_p_value})),
        "novel": rows(&r.novel, current),
        "emptied": rows(&r.emptied, reference),
    })
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
    let tmp = output.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string(&canary)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
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
    if e.rows() < 2 {
        bail!("{}: a profile needs at least 2 vectors", a.input.display());
    }
    let mut rng = SplitMix64::stream(a.seed, 0x5A);
    let idx = subsample(e.rows(), a.max_samples, &mut rng);
    let d = e.dims();
    let sample: Vec<f32> = idx.iter().flat_map(|&i| e.row(i).iter().copied()).collect();
    let (centres, _) = kmeans(&sample, idx.len(), d, a.clusters, a.seed, 100);
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("cannot create {}", a.output.display()))?;
    let write = |name: &str, data: &[f32], rows: usize| -> Result<()> {
        let path = a.output.join(name);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        );
        embedkit_vectors::npy::write_npy(&mut f, "<f4", &[rows, d], &le_bytes(data))?;
        f.flush()?;
        Ok(())
    };
    write("reference.npy", &sample, idx.len())?;
    write("centres.npy", &centres, centres.len() / d)?;
    if let Some(canary) = &a.canary {
        // Read it first: a profile must never carry a canary file that `check` would refuse.
        let c = Canary::read(canary)?;
        if let Some(v) = c.vectors.first().filter(|v| v.len() != d) {
            bail!(
                "{}: canary vectors have {} dimensions, the reference {d}",
                canary.display(),
                v.len()
            );
        }
        std::fs::copy(canary, a.output.join("canary.json"))
            .with_context(|| format!("cannot copy {}", canary.display()))?;
    }
    let meta = serde_json::json!({"version": 1, "source": a.input.display().to_string(), "rows": e.rows(),
        "sampled": idx.len(), "dims": d, "clusters": centres.len() / d, "seed": a.seed,
        "canary": a.canary.is_some()});
    std::fs::write(
        a.output.join("profile.json"),
        serde_json::to_string_pretty(&meta)?,
    )?;
    println!("{}", a.output.display());
    Ok(())
}

/// The little-endian bytes of f32 values (what `<f4` in an .npy header promises).
fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
