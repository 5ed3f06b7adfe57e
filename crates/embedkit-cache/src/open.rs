//! A cache from the string a user gives (`--cache`, Python's `cache=`): one rule for every front end.

use crate::{
    Cache, CacheError, EmbeddedCache, EmbeddedCacheOptions, RedisCache, RedisCacheOptions,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Opens the cache `spec` names: `redis://…` or `rediss://…` is Redis (a cluster node URL uses the
/// cluster); anything else is a folder for an on-disk cache. `ttl` zero keeps entries forever; `max_bytes`
/// bounds an on-disk cache (zero: no bound; Redis bounds itself with its `maxmemory` settings).
pub fn open_cache(spec: &str, ttl: Duration, max_bytes: u64) -> Result<Arc<dyn Cache>, CacheError> {
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        let options = RedisCacheOptions {
            ttl,
            ..RedisCacheOptions::default()
        };
        return Ok(Arc::new(RedisCache::open(spec, options)?));
    }
    if spec.contains("://") || spec.starts_with("redis:") {
        return Err(CacheError::Config {
            // Only the scheme: the rest of a URL may hold a password.
            setting: format!("{}://…", spec.split("://").next().unwrap_or_default()),
            reason: "expected a folder, redis://[user:pass@]host:port/db or rediss://…".into(),
        });
    }
    let options = EmbeddedCacheOptions {
        ttl,
        max_bytes,
        ..EmbeddedCacheOptions::default()
    };
    Ok(Arc::new(EmbeddedCache::open(Path::new(spec), options)?))
}
