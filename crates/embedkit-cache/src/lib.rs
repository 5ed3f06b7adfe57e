//! Caches embedding vectors so that a text embedded once with one model and one set of options is never
//! computed again: the [`Cache`] trait, its two stores — [`EmbeddedCache`] (an on-disk SQLite file, the
//! default) and [`RedisCache`] (Redis or Redis Cluster, for processes on several machines) — and
//! [`CachedEmbedder`], which puts either in front of any [`Embedder`](embedkit_core::Embedder).
//!
//! A key names everything that changes a vector ([`KeyBuilder`]): the model fingerprint, every option of
//! the call that matters, the precision and the text. A value is the vector in a small versioned format
//! ([`encode_f32`]); a value of the wrong version, dtype or dims reads as a miss, never as garbage. A cache
//! that fails or is down never fails an embed call: [`CachedEmbedder`] warns once, counts the error and
//! computes the vectors.
//!
//! ```
//! use embedkit_cache::{Cache, CachedEmbedder, EmbeddedCache, EmbeddedCacheOptions};
//! use embedkit_core::{EmbedError, Embedder, Embeddings, EncodeOptions};
//! use std::sync::Arc;
//!
//! struct Lengths; // a toy embedder: one dimension, the text's length
//! impl Embedder for Lengths {
//!     fn name(&self) -> &str { "lengths" }
//!     fn dims(&self) -> usize { 1 }
//!     fn embed(&self, texts: &[&str], _: &EncodeOptions) -> Result<Embeddings, EmbedError> {
//!         Ok(Embeddings::new(texts.iter().map(|t| t.len() as f32).collect(), texts.len(), 1).unwrap())
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let cache: Arc<dyn Cache> = Arc::new(EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap());
//! let model = CachedEmbedder::new(Lengths, cache);
//! let first = model.embed(&["hello", "hi"], &EncodeOptions::default()).unwrap();
//! let again = model.embed(&["hi", "hello"], &EncodeOptions::default()).unwrap();
//! assert_eq!(again.row(0), first.row(1));
//! assert_eq!(model.counters().hits, 2);
//! ```

#![warn(missing_docs)]

mod cached;
mod embedded;
mod error;
mod key;
mod open;
mod redis_cache;
mod slot;
mod value;

pub use cached::{CachedEmbedder, Counters, WarnHook};
pub use embedded::{Clock, EmbeddedCache, EmbeddedCacheOptions, STORE_FILE};
pub use error::CacheError;
pub use key::{CacheKey, DEFAULT_NAMESPACE, KeyBuilder, KeyOptions};
pub use open::open_cache;
pub use redis_cache::{RedisCache, RedisCacheOptions};
pub use slot::{SLOTS, key_slot};
pub use value::{Dtype, VALUE_MAGIC, VALUE_VERSION, decode_f32, decode_f32_into, encode_f32};

use std::time::Duration;

/// Default size bound of an on-disk cache: 1 GiB (the least recently used entries go first past it).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Default time to live of an entry: 24 hours. A TTL of zero means entries never expire.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Counts a cache reports: lookups since the counters were last reset, and what it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found a vector.
    pub hits: u64,
    /// Lookups that found nothing (or an expired or unreadable value).
    pub misses: u64,
    /// Entries stored (in a Redis cache: keys under this namespace).
    pub entries: u64,
    /// Bytes of keys and values stored (not counting the store's own overhead).
    pub bytes: u64,
}

/// What [`Cache::prune`] removed and what is left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Entries removed because their TTL had passed.
    pub expired: u64,
    /// Entries removed, least recently used first, to get under the size bound.
    pub evicted: u64,
    /// Entries left.
    pub entries: u64,
    /// Bytes left.
    pub bytes: u64,
}

/// A store of encoded vectors under [`CacheKey`]s, shared by every model and process that uses it.
///
/// Calls work on whole batches so that a store on the network costs one round trip per batch. Values are
/// opaque bytes to the store; [`CachedEmbedder`] writes them with [`encode_f32`] and checks them with
/// [`decode_f32`]. Errors are returned, never logged: the caller decides (and [`CachedEmbedder`] computes
/// instead).
pub trait Cache: Send + Sync {
    /// A one-line description for messages, without secrets (e.g. `redis://cache:6379/0`).
    fn describe(&self) -> String;

    /// The namespace keys for this cache start with (see [`KeyBuilder`]).
    fn namespace(&self) -> &str;

    /// The stored value of each key, in order; `None` where there is none or it has expired.
    fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Vec<u8>>>, CacheError>;

    /// Stores every entry (replacing older values) with the cache's TTL.
    fn put_many(&self, entries: &[(CacheKey, Vec<u8>)]) -> Result<(), CacheError>;

    /// Adds to the hit and miss counters [`Cache::stats`] reports. Stores may buffer the counts and write
    /// them later; losing a few on a crash is fine.
    fn record_lookups(&self, hits: u64, misses: u64) {
        let _ = (hits, misses);
    }

    /// Hits, misses, entries and bytes.
    fn stats(&self) -> Result<CacheStats, CacheError>;

    /// Removes every entry and resets the counters; returns how many entries were removed.
    fn clear(&self) -> Result<u64, CacheError>;

    /// Removes expired entries and evicts least-recently-used ones over the size bound.
    fn prune(&self) -> Result<PruneReport, CacheError>;
}
