//! Why a cache operation failed.

use std::path::PathBuf;
use std::time::Duration;

/// The boxed cause of a failure inside a store (a SQLite or Redis error).
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why a cache operation failed. [`CachedEmbedder`](crate::CachedEmbedder) never passes these on to its
/// callers; they reach users only through `embedkit cache` commands and warnings.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache folder cannot be created or read.
    #[error("cache folder {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The on-disk store failed (locked for too long, corrupt, disk full…).
    #[error("cache store {path}: {what}: {source}")]
    Store {
        /// The store file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: Source,
    },
    /// The on-disk store was written by an incompatible version of embedkit.
    #[error(
        "cache store {path} has layout version {found}, this embedkit reads {expected}; remove the folder or use another --cache"
    )]
    Version {
        /// The store file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Version this build reads.
        expected: i64,
    },
    /// A Redis command failed or timed out.
    #[error("redis {addr}: {what}: {source}")]
    Redis {
        /// The server (no password).
        addr: String,
        /// What was being done.
        what: &'static str,
        /// The client's error.
        #[source]
        source: Source,
    },
    /// Redis failed recently; the cache is skipped until `retry_in` has passed so that a server that is
    /// down does not add a timeout to every call.
    #[error("redis {addr} is unavailable ({last}); next try in {retry_in:?}")]
    Unavailable {
        /// The server (no password).
        addr: String,
        /// The last error.
        last: String,
        /// Time until the next attempt.
        retry_in: Duration,
    },
    /// A Redis Cluster answered something this client cannot route (bad slot table, unknown node…).
    #[error("redis cluster {addr}: {reason}")]
    Cluster {
        /// The node asked.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// A cache location or option is malformed.
    #[error("invalid cache setting {setting:?}: {reason}")]
    Config {
        /// The setting as given (passwords removed).
        setting: String,
        /// What is wrong with it.
        reason: String,
    },
}
