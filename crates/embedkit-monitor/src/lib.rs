//! Drift monitoring for embeddings: has the distribution of the vectors you serve moved away from a reference?
//!
//! * [`detect`] runs calibrated two-sample tests on a reference and a current sample of vectors
//!   ([`Method`]): MMD² with an RBF kernel and a permutation p-value ([`mmd`]), a cross-validated logistic-
//!   regression domain classifier ([`classifier`]), the centroid distance ([`centroid`]) and per-dimension
//!   Kolmogorov–Smirnov tests with Bonferroni / Benjamini–Hochberg ([`ks`]), all under one shared set of
//!   relabellings ([`permutation`]); the overall verdict is their min-p combination, so "no drift" is rejected
//!   at rate α, not 4α.
//! * What drifted: the MMD witness function ranks the current vectors the reference explains worst, and
//!   [`cluster`] compares the shares of k-means clusters of the reference before and after.
//! * [`canary`]: recorded texts and vectors that must come back unchanged from the same model and options.
//! * [`profile`]: a saved reference (sample, cluster centres, canary) for later checks, e.g. by the server.
//!
//! Every statistic is checked against numpy / scipy / scikit-learn on the fixtures of
//! `tools/make_drift_fixtures.py`; the calibration (200 no-drift trials) and power on real Debian package
//! descriptions are tests of this crate (`tests/calibration.rs`).
//!
//! ```
//! use embedkit_core::Embeddings;
//! use embedkit_monitor::{DriftOptions, detect};
//! let rows = |shift: f32| (0..60).map(|i| vec![(i as f32 * 0.37).sin() + shift, (i as f32 * 0.11).cos()]).collect();
//! let reference = Embeddings::from_rows(rows(0.0)).unwrap();
//! let current = Embeddings::from_rows(rows(2.0)).unwrap();
//! let report = detect(&reference, &current, &DriftOptions { permutations: 100, ..Default::default() }).unwrap();
//! assert!(report.drift);
//! ```

pub mod canary;
pub mod centroid;
pub mod classifier;
pub mod cluster;
mod detect;
pub mod ks;
pub mod logistic;
pub mod mmd;
pub mod permutation;
pub mod profile;
pub mod projection;
pub mod report;
pub mod rng;
pub mod stats;

pub use canary::{Canary, CanaryCheck};
pub use detect::{DriftOptions, DriftReport, Method, MethodResult, WitnessRow, detect};
pub use profile::{Profile, ProfileMeta};

/// Why a drift test or canary could not run.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// Too few vectors for a meaningful test.
    #[error("the {sample} sample has {rows} vectors; a drift test needs at least {need}")]
    TooFew {
        /// "reference" or "current".
        sample: &'static str,
        /// Vectors given.
        rows: usize,
        /// Vectors needed.
        need: usize,
    },
    /// The two samples have different dimensions (different models?).
    #[error(
        "the reference has {reference} dimensions and the current sample {current}: not the same model"
    )]
    DimsMismatch {
        /// Reference dimensions.
        reference: usize,
        /// Current dimensions.
        current: usize,
    },
    /// A NaN or infinite value.
    #[error("the {sample} sample has a non-finite value in row {row}")]
    NonFinite {
        /// "reference" or "current".
        sample: &'static str,
        /// The first such row.
        row: usize,
    },
    /// An option out of range.
    #[error("invalid drift option: {0}")]
    InvalidOption(String),
    /// A canary or profile file that cannot be used.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}
