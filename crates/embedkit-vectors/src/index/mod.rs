//! The index file: vectors of one model at one precision, their ids, and what is needed to search them.
//!
//! # Layout (version 1, little-endian)
//!
//! | offset | bytes | content |
//! | --- | --- | --- |
//! | 0 | 128 | fixed header (below) |
//! | 128 | `count × row_bytes` | primary vectors, row-major (f32, int8, or packed sign bits), 64-byte aligned |
//! | 64-aligned | `count × row_bytes` | optional rescoring vectors of a binary index (int8 or f32) |
//! | 8-aligned | `(count + 1) × 8` | optional id offsets (u64, into the id bytes; absent when ids are row numbers) |
//! | next | … | id bytes: the UTF-8 ids back to back |
//! | next | … | metadata JSON ([`IndexMeta`]): model, fingerprint, precision, metric, ranges, … |
//!
//! The fixed header: magic `EMBKIDX\0`, version u32, header length u32 (128), count u64, dims u32,
//! precision u8, rescore precision u8 (255 = none), metric u8, flags u8 (bit 0: rows are unit length),
//! then (offset u64, length u64) of the metadata, vectors, rescoring vectors, id offsets and id bytes, the
//! total file length u64, and an FNV-1a 64 checksum of the first 120 header bytes plus the metadata.
//!
//! The vectors come right after the header, before the ids, because the writer streams them straight into
//! the file without knowing the count; the smaller sections are spooled to unnamed temp files and appended
//! by [`IndexWriter::finish`], which writes the real header last and renames the file into place. A build
//! that dies leaves at most a hidden temp file (with a zero header) and never a file at the target path.
//!
//! # Multi-vector indexes (version 2)
//!
//! A late-interaction index stores every token vector of every document as a row (the same sections,
//! precisions and quantization), with flags bit 1 set and format version 2, so that a reader that only knows
//! version 1 refuses it instead of treating tokens as documents. Its ids are per document (`documents + 1`
//! id offsets), and a token-offset table of `documents + 1` u64 row numbers (0 first, `count` last) follows
//! the id bytes, 8-aligned; [`IndexMeta::multi_vector`] (inside the checksummed metadata) records where.
//! Documents are scored by exact MaxSim ([`Index::search_maxsim`]). Version 1 files load as before.
//!
//! Binary indexes store the raw `packbits(x > 0)` bytes — sentence-transformers' `ubinary`; its `binary`
//! is the same bytes XOR 0x80 — so their precision is recorded as `ubinary`.

mod reader;
mod writer;

pub use reader::Index;
pub use writer::{IndexSpec, IndexSummary, IndexWriter};

use crate::quantize::{CalibrationRanges, Precision, QuantizeError};
use embedkit_core::Metric;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The first 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"EMBKIDX\0";
/// The format version of single-vector indexes (written and read).
pub const FORMAT_VERSION: u32 = 1;
/// The format version of multi-vector (late-interaction) indexes (written and read).
pub const MULTI_VECTOR_VERSION: u32 = 2;
/// Header flag: rows are unit length.
pub(crate) const FLAG_NORMALIZED: u8 = 1;
/// Header flag: rows are token vectors of documents (a multi-vector index).
pub(crate) const FLAG_MULTI_VECTOR: u8 = 2;
/// Length of the fixed header; the vectors start here (a multiple of 64).
pub(crate) const HEADER_LEN: usize = 128;
/// Alignment of the vector sections (a cache line, and enough for any SIMD load).
pub(crate) const VECTOR_ALIGN: u64 = 64;
/// Rescore precision code for "none".
const NO_RESCORE: u8 = 255;

/// Everything about an index besides its vectors and ids, stored as JSON in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Name of the model that made the vectors (for messages and as the default query model).
    pub model: String,
    /// The model's [`embedkit_core::Embedder::fingerprint`]; queries must come from the same one.
    pub fingerprint: String,
    /// Precision of the primary vectors: `float32`, `int8` or `ubinary`.
    pub precision: Precision,
    /// Precision of the rescoring vectors of a binary index (`int8` or `float32`), if stored.
    pub rescore: Option<Precision>,
    /// `cosine` or `dot`.
    #[serde(with = "metric_serde")]
    pub metric: Metric,
    /// Dimensions of the vectors.
    pub dims: usize,
    /// Number of vectors.
    pub count: usize,
    /// Whether the stored vectors have unit length (true for cosine indexes, which normalize on write).
    pub normalized: bool,
    /// The int8 calibration ranges (for int8 primary or rescoring vectors).
    pub ranges: Option<CalibrationRanges>,
    /// Whether string ids are stored; otherwise a row's id is its row number.
    pub has_ids: bool,
    /// The program that wrote the file.
    pub created_by: String,
    /// Free-form notes from the builder (input file, prompt, options).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Set for a multi-vector (late-interaction) index: rows are token vectors, ids are per document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_vector: Option<MultiVectorInfo>,
}

/// The document structure of a multi-vector index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiVectorInfo {
    /// Number of documents.
    pub documents: usize,
    /// (offset, length) of the token-offset table: `documents + 1` little-endian u64 row numbers.
    pub token_offsets: (u64, u64),
}

mod metric_serde {
    use embedkit_core::Metric;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(m: &Metric, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(m)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Metric, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a binary index's candidates are rescored with the float query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescoreWith {
    /// The query dotted with the candidate's bits as 0/1 — what sentence-transformers'
    /// `semantic_search_usearch`/`_faiss` do for (u)binary corpora; needs no extra storage.
    Bits,
    /// The query dotted with the dequantized int8 vector (stored in the index).
    Int8,
    /// The query dotted with the float32 vector (stored in the index).
    F32,
}

impl std::str::FromStr for RescoreWith {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bits" | "binary" => Ok(RescoreWith::Bits),
            "int8" => Ok(RescoreWith::Int8),
            "f32" | "float32" => Ok(RescoreWith::F32),
            _ => Err(format!(
                "unknown rescoring source '{s}': expected bits, int8 or float32"
            )),
        }
    }
}

impl std::fmt::Display for RescoreWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RescoreWith::Bits => "bits",
            RescoreWith::Int8 => "int8",
            RescoreWith::F32 => "float32",
        })
    }
}

/// What a search does.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// Hits per query.
    pub top_k: usize,
    /// Binary indexes: keep `rescore × top_k` candidates by Hamming distance and rescore them with the float
    /// query; 0 returns the Hamming ranking itself (score = −distance). Ignored by f32 and int8 indexes,
    /// whose scores are already final.
    pub rescore: usize,
    /// What to rescore against (default: the index's stored float32 or int8 vectors, else the bits).
    pub rescore_with: Option<RescoreWith>,
    /// Queries scanned together in one pass over the corpus.
    pub query_batch: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            top_k: 10,
            rescore: 4,
            rescore_with: None,
            query_batch: 64,
        }
    }
}

/// Why an index could not be written, opened or searched. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A filesystem operation failed.
    #[error("cannot {action} index '{path}': {source}")]
    Io {
        /// The index file.
        path: PathBuf,
        /// What was being done (`create`, `write`, `read`, …).
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the index magic.
    #[error("'{path}' is not an embedkit index (it does not start with the index magic bytes)")]
    NotAnIndex {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer or older format.
    #[error("index '{path}' has format version {found}; this embedkit reads version {supported}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The file's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is shorter than its header says.
    #[error(
        "index '{path}' is truncated: its header says {expected} bytes but the file has {actual} \
         (an interrupted copy?)"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Length the header records.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// Inconsistent or damaged contents.
    #[error("index '{path}' is corrupted: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The queries come from another model than the index.
    #[error(
        "index '{path}' was built with model '{index_model}' (fingerprint {index_fingerprint}), but the \
         queries are embedded with '{model}' (fingerprint {fingerprint}); search with the index's model or \
         rebuild the index"
    )]
    ModelMismatch {
        /// The file.
        path: PathBuf,
        /// Model recorded in the index.
        index_model: String,
        /// Fingerprint recorded in the index.
        index_fingerprint: String,
        /// The query model.
        model: String,
        /// The query model's fingerprint.
        fingerprint: String,
    },
    /// Query or batch vectors of the wrong width.
    #[error(
        "vectors have {found} dimensions but index '{path}' holds {expected}-dimensional vectors"
    )]
    Dims {
        /// The file.
        path: PathBuf,
        /// The index's dims.
        expected: usize,
        /// The vectors' dims.
        found: usize,
    },
    /// Settings that cannot make or search an index.
    #[error("index '{path}': {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Quantizing the vectors failed.
    #[error("index '{path}': {source}")]
    Quantize {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: QuantizeError,
    },
}

/// The fixed 128-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RawHeader {
    pub version: u32,
    pub count: u64,
    pub dims: u32,
    pub precision: u8,
    pub rescore: u8,
    pub metric: u8,
    pub flags: u8,
    pub meta: (u64, u64),
    pub vectors: (u64, u64),
    pub rescore_vectors: (u64, u64),
    pub id_offsets: (u64, u64),
    pub id_bytes: (u64, u64),
    pub file_len: u64,
    pub checksum: u64,
}

impl RawHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.count.to_le_bytes());
        b[24..28].copy_from_slice(&self.dims.to_le_bytes());
        b[28] = self.precision;
        b[29] = self.rescore;
        b[30] = self.metric;
        b[31] = self.flags;
        let sections = [
            self.meta,
            self.vectors,
            self.rescore_vectors,
            self.id_offsets,
            self.id_bytes,
        ];
        for (i, (off, len)) in sections.iter().enumerate() {
            let at = 32 + i * 16;
            b[at..at + 8].copy_from_slice(&off.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
        }
        b[112..120].copy_from_slice(&self.file_len.to_le_bytes());
        b[120..128].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Decodes the fields; the magic has been checked by the caller.
    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> RawHeader {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        let section = |i: usize| (u64_at(32 + i * 16), u64_at(40 + i * 16));
        RawHeader {
            version: u32_at(8),
            count: u64_at(16),
            dims: u32_at(24),
            precision: b[28],
            rescore: b[29],
            metric: b[30],
            flags: b[31],
            meta: section(0),
            vectors: section(1),
            rescore_vectors: section(2),
            id_offsets: section(3),
            id_bytes: section(4),
            file_len: u64_at(112),
            checksum: u64_at(120),
        }
    }
}

/// FNV-1a 64 over the header's first 120 bytes and the metadata: catches a damaged header or metadata.
pub(crate) fn checksum(header: &[u8], meta: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in header[..120].iter().chain(meta) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn precision_code(p: Precision) -> u8 {
    match p {
        Precision::F32 => 0,
        Precision::F16 => 1,
        Precision::BF16 => 2,
        Precision::Int8 => 3,
        Precision::Uint8 => 4,
        Precision::Binary => 5,
        Precision::Ubinary => 6,
    }
}

pub(crate) fn precision_from_code(c: u8) -> Option<Precision> {
    Precision::ALL.into_iter().find(|p| precision_code(*p) == c)
}

pub(crate) fn rescore_code(p: Option<Precision>) -> u8 {
    p.map_or(NO_RESCORE, precision_code)
}

pub(crate) fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::Dot => 1,
        Metric::Euclidean => 2,
        Metric::Manhattan => 3,
    }
}
