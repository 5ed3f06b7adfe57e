//! Vectors in Parquet, for the tools that read it (Spark, DuckDB, Polars, LanceDB, pyarrow, vector
//! databases), and the part files of sharded runs.
//!
//! * [`ParquetVectorWriter`]: `id`, `embedding` (a fixed-size list of float32, float16, int8 or uint8 per
//!   row) and optionally `text`, streamed in bounded row groups; the model, fingerprint, precision and every
//!   vector-changing option in the key-value metadata ([`FileMeta`], keys `embedkit.*`).
//! * [`TextFile`]: texts (and ids) to embed from any Parquet file, reading only the row groups of a range.
//! * [`parts`]: a shard's chunked, resumable commits ([`ShardJob`]), [`check`] and [`merge`] of a folder.

mod error;
mod meta;
pub mod parts;
mod reader;
mod writer;

pub use error::Error;
pub use meta::{FileMeta, INFO_KEYS, PREFIX, describe_differences};
pub use parts::{CheckReport, InputInfo, ShardJob, ShardSpec, ShardState, check, merge};
pub use reader::{TextFile, VectorFile, batch_ids};
pub use writer::{
    DEFAULT_ROW_GROUP_ROWS, Element, IdType, Ids, Layout, ParquetVectorWriter, embedding_bytes,
    layout_of,
};
