//! The vocabulary every other embedkit crate speaks: an [`Embeddings`] matrix, the [`EncodeOptions`] a caller
//! asks for, the [`Embedder`] trait that local models, API providers and caches all implement, and the
//! similarity functions and top-k search that consumers run on the vectors; and [`AtomicFile`], how every
//! crate writes a file a user reads (whole under its name or not at all).
//!
//! This crate knows nothing about models, tokenizers or the network.
//!
//! ```
//! use embedkit_core::{Embeddings, Metric};
//! let e = Embeddings::from_rows(vec![vec![1.0, 0.0], vec![0.6, 0.8]]).unwrap();
//! let sim = Metric::Cosine.score(e.row(0), e.row(1));
//! assert!((sim - 0.6).abs() < 1e-6);
//! ```

pub mod atomic;
mod embedder;
mod embeddings;
mod similarity;

pub use atomic::{AtomicFile, write_atomic};
pub use embedder::{EmbedError, Embedder, EncodeOptions, TokenEmbeddings, Usage};
pub use embeddings::{Embeddings, ShapeError, l2_normalize};
pub use similarity::{Metric, UnknownMetric, similarity_matrix, top_k};
