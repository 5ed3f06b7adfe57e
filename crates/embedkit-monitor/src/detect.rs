//! The drift test as a whole: validate and subsample the two samples, draw one set of relabellings, run the
//! chosen methods under it, decide each method's verdict (p < α and an effect floor), and combine them into one
//! calibrated verdict.
//!
//! The overall p-value is the single-step min-p over the methods (see [`crate::permutation`]): exact under no
//! drift whatever the dependence between the methods. Overall drift = min-p p < α **and** at least one method's
//! own verdict is drift (so its effect floor holds too).

use crate::DriftError;
use crate::centroid::centroid_test;
use crate::classifier::{ClassifierOptions, domain_classifier};
use crate::cluster::{ClusterShift, assign_to, cluster_shift, compare_shares};
use crate::ks::ks_test;
use crate::mmd::KernelMatrix;
use crate::permutation::{min_p, relabellings};
use crate::rng::{SplitMix64, subsample};
use embedkit_core::Embeddings;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A two-sample test of the drift test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Unbiased MMD² with an RBF kernel (median-heuristic bandwidth), permutation p-value.
    Mmd,
    /// Logistic-regression domain classifier, cross-validated ROC-AUC.
    Classifier,
    /// Euclidean and cosine distance of the means, permutation p-value.
    Centroid,
    /// Per-dimension Kolmogorov–Smirnov with Bonferroni and Benjamini–Hochberg; permutation p-value of max D.
    Ks,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 4] = [
        Method::Mmd,
        Method::Classifier,
        Method::Centroid,
        Method::Ks,
    ];

    /// The method's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Mmd => "mmd",
            Method::Classifier => "classifier",
            Method::Centroid => "centroid",
            Method::Ks => "ks",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = DriftError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                DriftError::InvalidOption(format!(
                    "unknown method '{s}' (mmd, classifier, centroid, ks)"
                ))
            })
    }
}

/// How a drift test runs. The defaults are the ones calibrated on the Debian corpus (docs/MONITORING.md).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftOptions {
    /// Methods to run (at least one).
    pub methods: Vec<Method>,
    /// Significance level of every verdict.
    pub alpha: f64,
    /// Permutations of the MMD and centroid tests.
    pub permutations: usize,
    /// Seed of every random choice (subsamples, permutations, folds, k-means).
    pub seed: u64,
    /// At most this many vectors a side enter the tests (a seeded subsample): MMD's kernel matrix is quadratic.
    pub max_samples: usize,
    /// Fewer current vectors than this is refused: the tests have little power and the classifier's folds are tiny.
    pub min_current: usize,
    /// The classifier's verdict also needs AUC ≥ this (an effect-size floor: at large samples a trivial but
    /// real difference is "significant").
    pub auc_floor: f64,
    /// The domain classifier's settings.
    pub classifier: ClassifierOptions,
    /// Reference clusters for the cluster report; 0 = no cluster report.
    pub clusters: usize,
    /// How many current rows the witness ranking reports (and reference rows for emptied regions).
    pub novel: usize,
    /// Compute the 2-D projection of both samples for the report's plot.
    pub projection: bool,
    /// Fixed cluster centres (`k × dims` row-major, e.g. a profile's) for the cluster report instead of k-means of
    /// the reference: the same clusters in every check, so their shares can be followed over time.
    pub centres: Option<Vec<f32>>,
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self {
            methods: Method::ALL.to_vec(),
            alpha: 0.05,
            permutations: 500,
            seed: 0,
            max_samples: 2000,
            min_current: 50,
            auc_floor: 0.52,
            classifier: ClassifierOptions::default(),
            clusters: 16,
            novel: 10,
            projection: true,
            centres: None,
        }
    }
}

/// One method's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodResult {
    /// The method's p-value.
    pub p_value: f64,
    /// Its statistic: MMD², AUC, Euclidean centroid distance, largest KS D.
    pub statistic: f64,
    /// p < α and the effect floor holds.
    pub drift: bool,
    /// Further numbers (cosine distance and its p-value, dimensions rejected, the kernel bandwidth …).
    pub details: BTreeMap<String, f64>,
}

/// A row the witness function singles out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WitnessRow {
    /// Index into the sample given to [`detect`] (not the subsample).
    pub index: usize,
    /// The witness value: mean kernel to the reference minus mean kernel to the current sample.
    pub witness: f64,
}

/// The drift test's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// The overall verdict.
    pub drift: bool,
    /// The min-p combination of the methods' p-values over the shared relabellings.
    pub p_value: f64,
    /// The level the verdicts used.
    pub alpha: f64,
    /// Rows given (reference, current).
    pub rows: (usize, usize),
    /// Rows tested after subsampling (reference, current).
    pub sampled: (usize, usize),
    /// Per-method results, by name.
    pub methods: BTreeMap<String, MethodResult>,
    /// Current rows the reference explains worst (most negative witness first); needs MMD.
    pub novel: Vec<WitnessRow>,
    /// Reference rows the current sample covers least (largest witness first); needs MMD.
    pub emptied: Vec<WitnessRow>,
    /// The cluster report (indices into the reference given to [`detect`]).
    pub clusters: Option<ClusterShift>,
    /// Up to 500 rows a side in the plane of their first two principal components (for the report's plot).
    #[serde(skip)]
    pub projection: Vec<crate::projection::Point>,
}

/// Runs the drift test of `current` against `reference`.
pub fn detect(
    reference: &Embeddings,
    current: &Embeddings,
    opts: &DriftOptions,
) -> Result<DriftReport, DriftError> {
    validate(reference, current, opts)?;
    let d = reference.dims();
    let mut rng = SplitMix64::stream(opts.seed, 0x5A);
    let rx = subsample(reference.rows(), opts.max_samples, &mut rng);
    let ry = subsample(current.rows(), opts.max_samples, &mut rng);
    let gather = |e: &Embeddings, idx: &[usize]| -> Vec<f32> {
        idx.iter().flat_map(|&i| e.row(i).iter().copied()).collect()
    };
    let mut x = gather(reference, &rx);
    let mut y = gather(current, &ry);
    let (nx, ny) = (rx.len(), ry.len());
    let dead = dead_dimensions(&x, &y, d);
    for row in x.chunks_exact_mut(d).chain(y.chunks_exact_mut(d)) {
        dead.iter().for_each(|&j| row[j] = 0.0);
    }
    let mut methods = BTreeMap::new();
    let mut novel = Vec::new();
    let mut emptied = Vec::new();
    let mut methods_sorted = opts.methods.clone();
    methods_sorted.sort();
    methods_sorted.dedup();
    let perms = relabellings(nx, ny, opts.permutations, opts.seed);
    let mut nulls = Vec::new();
    for method in methods_sorted {
        let seed = opts.seed ^ (method as u64 + 1).wrapping_mul(0x9E37_79B9);
        let (result, null) = match method {
            Method::Mmd => {
                let km = KernelMatrix::new(&x, nx, &y, ny, d, None);
                let null = km.null_distribution(&perms);
                let p = null.p_value();
                let (wx, wy) = km.witness();
                novel = rank(&wy, &ry, opts.novel, false);
                emptied = rank(&wx, &rx, opts.novel, true);
                let details = BTreeMap::from([("sigma".to_string(), km.sigma)]);
                (
                    MethodResult {
                        p_value: p,
                        statistic: km.mmd2(),
                        drift: p < opts.alpha,
                        details,
                    },
                    null,
                )
            }
            Method::Classifier => {
                let r = domain_classifier(&x, nx, &y, ny, d, &opts.classifier, &perms, seed);
                let (p, auc) = (r.auc.p_value(), r.auc.observed);
                let drift = p < opts.alpha && auc >= opts.auc_floor;
                let details = BTreeMap::from([("auc_floor".to_string(), opts.auc_floor)]);
                (
                    MethodResult {
                        p_value: p,
                        statistic: auc,
                        drift,
                        details,
                    },
                    r.auc,
                )
            }
            Method::Centroid => {
                let r = centroid_test(&x, nx, &y, ny, d, &perms);
                let p = r.euclidean.p_value();
                let details = BTreeMap::from([
                    ("cosine".to_string(), r.cosine.observed),
                    ("cosine_p_value".to_string(), r.cosine.p_value()),
                ]);
                (
                    MethodResult {
                        p_value: p,
                        statistic: r.euclidean.observed,
                        drift: p < opts.alpha,
                        details,
                    },
                    r.euclidean,
                )
            }
            Method::Ks => {
                let r = ks_test(&x, nx, &y, ny, d, &perms);
                let p = r.max_d.p_value();
                let count = |v: &[f64]| v.iter().filter(|&&q| q < opts.alpha).count() as f64;
                let details = BTreeMap::from([
                    ("dims_rejected_bonferroni".to_string(), count(&r.bonferroni)),
                    ("dims_rejected_bh".to_string(), count(&r.bh)),
                    ("dims".to_string(), d as f64),
                    ("dims_dead".to_string(), dead.len() as f64),
                    ("simes_p_value".to_string(), r.simes),
                ]);
                (
                    MethodResult {
                        p_value: p,
                        statistic: r.max_statistic,
                        drift: p < opts.alpha,
                        details,
                    },
                    r.max_d,
                )
            }
        };
        methods.insert(method.name().to_string(), result);
        nulls.push(null);
    }
    let p_value = min_p(&nulls.iter().collect::<Vec<_>>());
    let drift = p_value < opts.alpha && methods.values().any(|m| m.drift);
    let given = opts.centres.as_ref().filter(|c| !c.is_empty());
    let clusters = (opts.clusters > 0 || given.is_some()).then(|| {
        let mut c = match given {
            Some(centres) => {
                let ax = assign_to(&x, nx, d, centres);
                compare_shares(&x, nx, &ax, &y, ny, d, centres.clone())
            }
            None => cluster_shift(&x, nx, &y, ny, d, opts.clusters, opts.seed),
        };
        // Report reference rows as the caller numbered them.
        for cl in &mut c.clusters {
            cl.central.iter_mut().for_each(|i| *i = rx[*i]);
        }
        c
    });
    Ok(DriftReport {
        drift,
        p_value,
        alpha: opts.alpha,
        rows: (reference.rows(), current.rows()),
        sampled: (nx, ny),
        methods,
        novel,
        emptied,
        clusters,
        projection: if opts.projection {
            crate::projection::project(&x, nx, &y, ny, d, opts.seed)
        } else {
            Vec::new()
        },
    })
}

/// Dimensions without spread: pooled standard deviation at most 1e-6 of the median dimension's. Their values
/// are numerical residue (all-MiniLM-L6-v2 has three, at ~1e-33 and ~1e-8) that float16 storage flushes to
/// zero and another summation order changes; KS would call that a perfect separation and the classifier's
/// standardization would blow it up. They are set to zero in both samples: they carry no similarity anyway.
fn dead_dimensions(x: &[f32], y: &[f32], d: usize) -> Vec<usize> {
    let n = (x.len() + y.len()) / d.max(1);
    if n < 2 || d == 0 {
        return Vec::new();
    }
    let mut sum = vec![0.0f64; d];
    let mut sq = vec![0.0f64; d];
    for row in x.chunks_exact(d).chain(y.chunks_exact(d)) {
        for (j, &v) in row.iter().enumerate() {
            sum[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let std: Vec<f64> = (0..d)
        .map(|j| {
            let mu = sum[j] / n as f64;
            (sq[j] / n as f64 - mu * mu).max(0.0).sqrt()
        })
        .collect();
    let mut sorted = std.clone();
    sorted.sort_by(f64::total_cmp);
    let floor = 1e-6 * sorted[d / 2];
    (0..d).filter(|&j| std[j] <= floor).collect()
}

fn rank(w: &[f64], original: &[usize], k: usize, descending: bool) -> Vec<WitnessRow> {
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| {
        if descending {
            w[b].total_cmp(&w[a])
        } else {
            w[a].total_cmp(&w[b])
        }
    });
    order
        .into_iter()
        .take(k)
        .map(|i| WitnessRow {
            index: original[i],
            witness: w[i],
        })
        .collect()
}

fn validate(
    reference: &Embeddings,
    current: &Embeddings,
    opts: &DriftOptions,
) -> Result<(), DriftError> {
    if opts.methods.is_empty() {
        return Err(DriftError::InvalidOption("no method chosen".into()));
    }
    if !(opts.alpha > 0.0 && opts.alpha < 1.0) {
        return Err(DriftError::InvalidOption(format!(
            "alpha must be in (0, 1), got {}",
            opts.alpha
        )));
    }
    if opts.permutations == 0 {
        return Err(DriftError::InvalidOption(
            "permutations must be at least 1".into(),
        ));
    }
    if opts.max_samples < 2 {
        return Err(DriftError::InvalidOption(
            "max_samples must be at least 2".into(),
        ));
    }
    if let Some(c) = &opts.centres
        && c.len() % reference.dims().max(1) != 0
    {
        return Err(DriftError::InvalidOption(format!(
            "{} centre values are not whole rows of {} dimensions",
            c.len(),
            reference.dims()
        )));
    }
    if reference.dims() != current.dims() {
        return Err(DriftError::DimsMismatch {
            reference: reference.dims(),
            current: current.dims(),
        });
    }
    let need = opts.min_current.max(2);
    if current.rows() < need {
        return Err(DriftError::TooFew {
            sample: "current",
            rows: current.rows(),
            need,
        });
    }
    if reference.rows() < need {
        return Err(DriftError::TooFew {
            sample: "reference",
            rows: reference.rows(),
            need,
        });
    }
    for (sample, e) in [("reference", reference), ("current", current)] {
        if let Some(row) = (0..e.rows()).find(|&i| e.row(i).iter().any(|v| !v.is_finite())) {
            return Err(DriftError::NonFinite { sample, row });
        }
    }
    Ok(())
}
