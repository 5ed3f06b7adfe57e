//! What consumers do with vectors: precision conversion (quantize), SIMD similarity kernels, the
//! memory-mapped index file and exact/rescored search.
//!
//! * [`quantize`](mod@quantize): float16, bfloat16, int8/uint8 with [`CalibrationRanges`], binary and ubinary —
//!   byte for byte what `sentence_transformers.quantization.quantize_embeddings` returns.
//! * [`simd`]: dot / L2 / L1 / f32×i8 / i8×i8 / Hamming kernels at the best level the CPU has (AVX-512,
//!   AVX2, portable), chosen at run time.
//! * [`similarity`]: cosine, dot, Euclidean and Manhattan on those kernels — pairwise, matrix, top-k.
//! * [`Index`] / [`IndexWriter`]: the index file (streamed in, renamed into place when complete,
//!   memory-mapped out) and its exact f32/int8 and binary + rescoring search.
//! * [`analogy`]: word analogies (gensim's `most_similar` and `evaluate_word_analogies`) over any embedder's vectors.
//! * [`maxsim`](mod@maxsim): late-interaction scoring of token vectors, as `sentence_transformers.util.maxsim`.
//!
//! ```
//! use embedkit_core::Embeddings;
//! use embedkit_vectors::{Precision, quantize};
//! let e = Embeddings::from_rows(vec![vec![0.5, -0.25, 0.0], vec![-0.5, 0.75, 1.0]]).unwrap();
//! let q = quantize(&e, Precision::Ubinary, None).unwrap();
//! assert_eq!(q.as_bytes(), &[0b1000_0000, 0b0110_0000]);
//! ```

pub mod analogy;
pub mod index;
pub mod maxsim;
pub mod npy;
pub mod quantize;
mod search;
pub mod simd;
pub mod similarity;
mod topk;

pub use analogy::{
    AnalogyError, AnalogyReport, EvaluateOptions, Neighbour, SectionScore, WordVectors,
    question_words,
};
pub use index::{
    Index, IndexError, IndexMeta, IndexSpec, IndexSummary, IndexWriter, MultiVectorInfo,
    RescoreWith, SearchOptions,
};
pub use maxsim::{EMPTY_DOCUMENT_SCORE, MaxSimOptions, maxsim, maxsim_matrix};
pub use quantize::{
    CalibrationRanges, Precision, QuantizeError, QuantizedEmbeddings, Quantizer, UnknownPrecision,
    dequantize, quantize,
};
pub use simd::{Kernels, SimdLevel};
pub use topk::{Hit, TopK};
