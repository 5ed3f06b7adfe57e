//! The vector cache on the command line: `--cache DIR|URL`, `--no-cache` (and the TTL and size options)
//! for the commands that embed, and `embedkit cache stats|clear|prune`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use embedkit_cache::{Cache, CachedEmbedder, DEFAULT_TTL, EmbeddedCache, EmbeddedCacheOptions};
use embedkit_core::Embedder;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Folder of the default cache inside EMBEDKIT_HOME.
pub const CACHE_DIR: &str = "cache";

/// Default size bound of the on-disk cache.
pub const DEFAULT_MAX_SIZE: u64 = embedkit_cache::DEFAULT_MAX_BYTES;

/// Cache options shared by embed, index, search and serve.
#[derive(Args, Clone, Debug)]
pub struct CacheArgs {
    /// Cache vectors in DIR (default: EMBEDKIT_HOME/cache) or in Redis:
    /// redis://[user:pass@]host:port/db, rediss://… for TLS; a Redis Cluster node URL uses the cluster.
    #[arg(long, value_name = "DIR|URL")]
    pub cache: Option<String>,
    /// Neither read nor write the vector cache.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    /// How long new cache entries live: 24h, 30m, 90s, 7d; 0 = forever.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub cache_ttl: Duration,
    /// Size bound of an on-disk cache (least recently used entries go first): 1G, 500M; 0 = none.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub cache_max_size: u64,
}

impl Default for CacheArgs {
    fn default() -> Self {
        Self {
            cache: None,
            no_cache: false,
            cache_ttl: DEFAULT_TTL,
            cache_max_size: DEFAULT_MAX_SIZE,
        }
    }
}

impl CacheArgs {
    /// The cache these options name, or `None` for `--no-cache` (or a default cache that cannot be opened,
    /// after a warning: the default must never stop a command).
    pub fn open(&self, home: &Path) -> Result<Option<Arc<dyn Cache>>> {
        open_cache_with(
            self.cache.as_deref(),
            self.no_cache,
            home,
            self.cache_ttl,
            self.cache_max_size,
        )
    }
}

/// Opens the cache `spec` names with default TTL and size bound: `None` → the on-disk cache in
/// `home/cache`; `redis://…` or `rediss://…` → Redis; anything else → an on-disk cache in that folder.
/// `no_cache` → `Ok(None)`.
pub fn open_cache(
    spec: Option<&str>,
    no_cache: bool,
    home: &Path,
) -> Result<Option<Arc<dyn Cache>>> {
    open_cache_with(spec, no_cache, home, DEFAULT_TTL, DEFAULT_MAX_SIZE)
}

/// [`open_cache`] with an explicit TTL (zero = forever) and size bound (zero = none; on-disk only —
/// Redis bounds itself with its `maxmemory` settings).
pub fn open_cache_with(
    spec: Option<&str>,
    no_cache: bool,
    home: &Path,
    ttl: Duration,
    max_bytes: u64,
) -> Result<Option<Arc<dyn Cache>>> {
    if no_cache {
        return Ok(None);
    }
    match spec {
        Some(spec) => {
            // The library's errors name the folder or the Redis server (without its password).
            let cache = embedkit_cache::open_cache(spec, ttl, max_bytes).context("--cache")?;
            Ok(Some(cache))
        }
        None => {
            let dir = home.join(CACHE_DIR);
            match EmbeddedCache::open(&dir, embedded_options(ttl, max_bytes)) {
                Ok(cache) => Ok(Some(Arc::new(cache))),
                Err(e) => {
                    eprintln!(
                        "warning: running without the vector cache: {e} (pass --cache DIR or --no-cache)"
                    );
                    Ok(None)
                }
            }
        }
    }
}

fn embedded_options(ttl: Duration, max_bytes: u64) -> EmbeddedCacheOptions {
    EmbeddedCacheOptions {
        ttl,
        max_bytes,
        ..EmbeddedCacheOptions::default()
    }
}

/// `model` behind `cache` when there is one.
pub fn with_cache<E: Embedder + 'static>(
    model: E,
    cache: Option<Arc<dyn Cache>>,
) -> Arc<dyn Embedder> {
    match cache {
        Some(cache) => Arc::new(CachedEmbedder::new(model, cache)),
        None => Arc::new(model),
    }
}

/// Which cache a `cache` subcommand works on.
#[derive(Args, Clone, Debug, Default)]
pub struct CacheTarget {
    /// The cache: a folder (default: EMBEDKIT_HOME/cache) or a redis:// / rediss:// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub cache: Option<String>,
}

/// `embedkit cache …`
#[derive(Subcommand, Clone, Debug)]
pub enum CacheCommand {
    /// Show lookups (hits, misses) and what is stored (entries, bytes).
    Stats {
        #[command(flatten)]
        target: CacheTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every cached vector and reset the counters.
    Clear {
        #[command(flatten)]
        target: CacheTarget,
    },
    /// Remove expired entries, then least recently used ones over the size bound.
    Prune {
        #[command(flatten)]
        target: CacheTarget,
        /// Size bound to prune to (on-disk caches): 1G, 500M; 0 = none.
        #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
        max_size: u64,
    },
}

/// Runs a `cache` subcommand, printing to `out`.
pub fn cache_command(cmd: CacheCommand, home: &Path, out: &mut dyn Write) -> Result<()> {
    let open = |target: &CacheTarget, max_bytes: u64| -> Result<Arc<dyn Cache>> {
        let spec = target
            .cache
            .clone()
            .unwrap_or_else(|| home.join(CACHE_DIR).display().to_string());
        // Named explicitly, a cache that cannot be opened is an error here (not open_cache's warning).
        let cache = if max_bytes == DEFAULT_MAX_SIZE {
            open_cache(Some(&spec), false, home)?
        } else {
            open_cache_with(Some(&spec), false, home, DEFAULT_TTL, max_bytes)?
        };
        cache.context("no cache to work on")
    };
    match cmd {
        CacheCommand::Stats { target, json } => {
            let cache = open(&target, DEFAULT_MAX_SIZE)?;
            let s = cache
                .stats()
                .with_context(|| format!("reading the statistics of {}", cache.describe()))?;
            if json {
                let v = serde_json::json!({
                    "cache": cache.describe(),
                    "hits": s.hits,
                    "misses": s.misses,
                    "entries": s.entries,
                    "bytes": s.bytes,
                });
                writeln!(out, "{v}")?;
            } else {
                let lookups = s.hits + s.misses;
                let rate = if lookups == 0 {
                    String::new()
                } else {
                    format!(
                        " ({:.1} % of {lookups} lookups)",
                        100.0 * s.hits as f64 / lookups as f64
                    )
                };
                writeln!(out, "cache    {}", cache.describe())?;
                writeln!(out, "hits     {}{rate}", s.hits)?;
                writeln!(out, "misses   {}", s.misses)?;
                writeln!(out, "entries  {}", s.entries)?;
                writeln!(out, "bytes    {} ({})", s.bytes, human_bytes(s.bytes))?;
            }
        }
        CacheCommand::Clear { target } => {
            let cache = open(&target, DEFAULT_MAX_SIZE)?;
            let n = cache
                .clear()
                .with_context(|| format!("clearing {}", cache.describe()))?;
            writeln!(out, "removed {n} entries from {}", cache.describe())?;
        }
        CacheCommand::Prune { target, max_size } => {
            let cache = open(&target, max_size)?;
            let r = cache
                .prune()
                .with_context(|| format!("pruning {}", cache.describe()))?;
            writeln!(
                out,
                "removed {} expired and {} least recently used entries; {} entries, {} left",
                r.expired,
                r.evicted,
                r.entries,
                human_bytes(r.bytes)
            )?;
        }
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `90s`, `30m`, `24h`, `7d`, or plain seconds; `0` = forever.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 24h, 7d or 0"))?;
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// `500M`, `1G`, `64K`, `1T` (powers of 1024, optional trailing `B`/`iB`), or plain bytes; `0` = none.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['B', 'b']).trim_end_matches('i');
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        Some((i, 't' | 'T')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 500M, 1G or 0"))?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(format!("{s:?} is not a size"));
    }
    Ok((n * mult as f64) as u64)
}
