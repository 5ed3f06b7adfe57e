//! Measuring embedders: how good (retrieval metrics on BEIR/MTEB folders, correlation with human similarity on
//! sentence, document and word pairs) and how fast (the speed benchmark behind `embedkit bench`), with
//! comparison reports. Works on any [`embedkit_core::Embedder`]: a local model, an API provider, a cached one.
//!
//! ```
//! use embedkit_eval::metrics::{evaluate, Qrels, Run};
//! let mut qrels = Qrels::new();
//! qrels.entry("q1".into()).or_default().insert("d1".into(), 2);
//! let mut run = Run::new();
//! run.entry("q1".into()).or_default().extend([("d2".to_string(), 0.9), ("d1".to_string(), 0.8)]);
//! let scores = evaluate(&qrels, &run, &[10]);
//! assert_eq!(scores.mean["mrr@10"], 0.5);
//! ```

pub mod datasets;
mod error;
pub mod metrics;
pub mod report;
pub mod rerank;
pub mod speed;
pub mod stats;
pub mod tasks;

pub use error::EvalError;
