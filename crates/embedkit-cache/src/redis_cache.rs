//! A cache in Redis or a Redis Cluster, for processes (on one machine or many) that share vectors.
//!
//! One batch costs one round trip: a single `MGET` (on a cluster, one `MGET` per slot, pipelined per node)
//! and one pipeline of `SET … EX` for the misses. Connections are pooled and reused; a broken one is
//! replaced. After a failure (server down, timeout) the cache answers `Unavailable` at once for
//! `retry_after`, so a dead server does not add a timeout to every call, and then tries again.

use crate::error::CacheError;
use crate::{Cache, CacheKey, CacheStats, DEFAULT_NAMESPACE, DEFAULT_TTL, PruneReport};
use redis::{Connection, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod cluster;

use cluster::{Node, Route, group_by_slot, parse_slots};

/// Counters buffered in memory are sent at least this often.
const COUNTER_FLUSH: Duration = Duration::from_secs(5);

/// Keys per `SCAN` step and per pipeline in `stats` and `clear`.
const SCAN_COUNT: usize = 1000;

/// Settings of a [`RedisCache`].
#[derive(Debug, Clone)]
pub struct RedisCacheOptions {
    /// Key namespace (keys are `namespace:hex`; counters live in the hash `namespace#stats`).
    pub namespace: String,
    /// Entries expire this long after they were written (`SET … EX`); zero means never. Default 24 h.
    pub ttl: Duration,
    /// Limit on opening a connection. Default 500 ms.
    pub connect_timeout: Duration,
    /// Limit on each read and write of a command; a slower server counts as down. Default 1 s.
    pub io_timeout: Duration,
    /// After a failure, how long to skip Redis before trying again. Default 2 s.
    pub retry_after: Duration,
    /// Idle connections kept per server for reuse. Default 8.
    pub max_idle_connections: usize,
}

impl Default for RedisCacheOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_string(),
            ttl: DEFAULT_TTL,
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(1),
            retry_after: Duration::from_secs(2),
            max_idle_connections: 8,
        }
    }
}

/// An error inside an operation, before it becomes a [`CacheError`].
#[derive(Debug)]
enum Failure {
    Redis(&'static str, redis::RedisError),
    Cluster(String),
}

impl Failure {
    /// A cluster telling us our slot table is out of date, as opposed to a server that is down.
    fn is_redirect(&self) -> bool {
        match self {
            Failure::Redis(_, e) => matches!(
                e.kind(),
                ErrorKind::Moved
                    | ErrorKind::Ask
                    | ErrorKind::TryAgain
                    | ErrorKind::ClusterDown
                    | ErrorKind::CrossSlot
                    | ErrorKind::MasterDown
            ),
            Failure::Cluster(_) => true,
        }
    }
}

fn rf(what: &'static str) -> impl FnOnce(redis::RedisError) -> Failure {
    move |e| Failure::Redis(what, e)
}

#[derive(Debug, Default)]
struct Health {
    down_until: Option<Instant>,
    last_error: String,
}

/// A cache in Redis (`redis://[user:pass@]host:port/db`, `rediss://…` for TLS) or a Redis Cluster, found
/// automatically when the server named has cluster mode on.
///
/// Every call either completes within the configured timeouts or fails;
/// [`CachedEmbedder`](crate::CachedEmbedder) turns failures into computed vectors.
pub struct RedisCache {
    info: ConnectionInfo,
    seed: Node,
    display: String,
    options: RedisCacheOptions,
    stats_key: String,
    route: Mutex<Option<Route>>,
    health: Mutex<Health>,
    pool: Mutex<HashMap<Node, Vec<Connection>>>,
    pending_hits: AtomicU64,
    pending_misses: AtomicU64,
    last_flush: Mutex<Instant>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("server", &self.display)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data (a route, a pool, a timestamp) is valid whatever a panicking holder was doing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) if !user.is_empty() => format!("{user}:***@{host}"),
                    _ => format!("***@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{host}{tail}")
        }
        None => url.to_string(),
    }
}

impl RedisCache {
    /// A cache at `url` (`redis://…` or `rediss://…`). Nothing is contacted yet: the first call connects,
    /// so a server that is down at start-up does not stop the caller.
    pub fn open(url: &str, options: RedisCacheOptions) -> Result<Self, CacheError> {
        let display = redact(url);
        let config_err = |reason: String| CacheError::Config {
            setting: display.clone(),
            reason,
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(config_err(
                "expected redis://[user:pass@]host:port/db or rediss://…".into(),
            ));
        }
        if options.namespace.is_empty() {
            return Err(config_err("the namespace must not be empty".into()));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| config_err(e.to_string()))?;
        let seed = match &info.addr {
            ConnectionAddr::Tcp(host, port) => Node {
                host: host.clone(),
                port: *port,
            },
            ConnectionAddr::TcpTls { host, port, .. } => {
                // rustls needs a process-wide crypto provider; install ring's unless the program chose one.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Node {
                    host: host.clone(),
                    port: *port,
                }
            }
            ConnectionAddr::Unix(_) => {
                return Err(config_err("unix sockets are not supported".into()));
            }
        };
        Ok(Self {
            stats_key: format!("{}#stats", options.namespace),
            info,
            seed,
            display,
            options,
            route: Mutex::new(None),
            health: Mutex::new(Health::default()),
            pool: Mutex::new(HashMap::new()),
            pending_hits: AtomicU64::new(0),
            pending_misses: AtomicU64::new(0),
            last_flush: Mutex::new(Instant::now()),
        })
    }

    /// `true` once a call has found that the server is a cluster node (and the slot table loaded).
    pub fn is_cluster(&self) -> bool {
        matches!(*lock(&self.route), Some(Route::Cluster(_)))
    }

    /// Node addresses of the cluster as currently known (`host:port`), empty when not a cluster.
    pub fn cluster_nodes(&self) -> Vec<String> {
        match &*lock(&self.route) {
            Some(Route::Cluster(t)) => t
                .nodes
                .iter()
                .map(|n| format!("{}:{}", n.host, n.port))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn connect(&self, node: &Node, cluster: bool) -> redis::RedisResult<Connection> {
        let mut info = self.info.clone();
        info.addr = match &self.info.addr {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: node.host.clone(),
                port: node.port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(node.host.clone(), node.port),
        };
        if cluster {
            // A cluster has only database 0; SELECT n would fail on every node.
            info.redis.db = 0;
        }
        let conn =
            redis::Client::open(info)?.get_connection_with_timeout(self.options.connect_timeout)?;
        conn.set_read_timeout(Some(self.options.io_timeout))?;
        conn.set_write_timeout(Some(self.options.io_timeout))?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection to `node` (or a new one). A pooled connection that turns out to be
    /// dead (the server restarted since) is replaced and `f` retried once on a fresh one; every command
    /// this cache sends is idempotent.
    fn with_conn<T>(
        &self,
        node: &Node,
        cluster: bool,
        what: &'static str,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Failure> {
        let pooled = lock(&self.pool).get_mut(node).and_then(Vec::pop);
        let (mut conn, was_pooled) = match pooled {
            Some(c) => (c, true),
            None => (
                self.connect(node, cluster).map_err(rf("connecting"))?,
                false,
            ),
        };
        let result = match f(&mut conn) {
            // Not after a timeout: a hung server would accept the new connection and hang again.
            Err(e)
                if was_pooled
                    && !e.is_timeout()
                    && (e.is_io_error() || e.is_connection_dropped()) =>
            {
                // Every idle connection to this node is probably just as dead.
                lock(&self.pool).remove(node);
                conn = self.connect(node, cluster).map_err(rf("connecting"))?;
                f(&mut conn)
            }
            other => other,
        };
        match result {
            Ok(v) => {
                let mut pool = lock(&self.pool);
                let idle = pool.entry(node.clone()).or_default();
                if idle.len() < self.options.max_idle_connections {
                    idle.push(conn);
                }
                Ok(v)
            }
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    lock(&self.pool).remove(node);
                }
                Err(Failure::Redis(what, e))
            }
        }
    }

    /// Finds out whether the seed is a cluster node and, if so, loads the slot table.
    fn discover(&self, previous: Option<&Route>) -> Result<Route, Failure> {
        let info: Result<String, Failure> =
            self.with_conn(&self.seed, false, "reading INFO cluster", |c| {
                redis::cmd("INFO").arg("cluster").query(c)
            });
        // A cluster whose seed is down can still be asked through the other nodes we know.
        let info = match (info, previous) {
            (Ok(i), _) => i,
            (Err(e), Some(Route::Cluster(t))) => {
                return self.load_slots(&t.nodes).map_err(|_| e);
            }
            (Err(e), _) => return Err(e),
        };
        let cluster = info.lines().any(|l| l.trim() == "cluster_enabled:1");
        if !cluster {
            return Ok(Route::Single(self.seed.clone()));
        }
        let mut candidates = vec![self.seed.clone()];
        if let Some(Route::Cluster(t)) = previous {
            candidates.extend(t.nodes.iter().cloned());
        }
        self.load_slots(&candidates)
    }

    fn load_slots(&self, candidates: &[Node]) -> Result<Route, Failure> {
        let mut last = Failure::Cluster("no node to ask for the slot table".into());
        for node in candidates {
            let reply = self.with_conn(node, true, "reading CLUSTER SLOTS", |c| {
                redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(c)
            });
            match reply.and_then(|v| parse_slots(&v, node)) {
                Ok(t) => return Ok(Route::Cluster(Arc::new(t))),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn current_route(&self) -> Result<Route, Failure> {
        let mut route = lock(&self.route);
        if let Some(r) = &*route {
            return Ok(r.clone());
        }
        let r = self.discover(None)?;
        *route = Some(r.clone());
        Ok(r)
    }

    /// Runs one operation with the health bookkeeping: refuses at once while Redis is marked down, marks it
    /// down (for `retry_after`) on failure, and forgets the slot table when the cluster says it is stale.
    fn guarded<T>(&self, op: impl FnOnce(&Route) -> Result<T, Failure>) -> Result<T, CacheError> {
        {
            let health = lock(&self.health);
            if let Some(until) = health.down_until {
                let now = Instant::now();
                if now < until {
                    return Err(CacheError::Unavailable {
                        addr: self.display.clone(),
                        last: health.last_error.clone(),
                        retry_in: until - now,
                    });
                }
            }
        }
        let result = match self.current_route() {
            Ok(route) => op(&route).map_err(|e| (e, Some(route))),
            Err(e) => Err((e, None)),
        };
        let mut health = lock(&self.health);
        match result {
            Ok(v) => {
                health.down_until = None;
                Ok(v)
            }
            Err((failure, Some(route))) if failure.is_redirect() => {
                // The cluster's layout changed (resharding, failover): reload the slot table for the next
                // call, without backing off; this batch is computed instead.
                drop(health);
                let fresh = self.discover(Some(&route)).ok();
                *lock(&self.route) = fresh;
                Err(self.to_error(failure))
            }
            Err((failure, _)) => {
                let err = self.to_error(failure);
                health.last_error = err.to_string();
                health.down_until = Some(Instant::now() + self.options.retry_after);
                let mut route = lock(&self.route);
                if matches!(*route, Some(Route::Cluster(_))) {
                    // A node may have failed over; rediscover when Redis is tried again.
                    *route = None;
                }
                Err(err)
            }
        }
    }

    fn to_error(&self, f: Failure) -> CacheError {
        match f {
            Failure::Redis(what, e) => CacheError::Redis {
                addr: self.display.clone(),
                what,
                source: Box::new(e),
            },
            Failure::Cluster(reason) => CacheError::Cluster {
                addr: self.display.clone(),
                reason,
            },
        }
    }

    fn set_cmd(&self, pipe: &mut redis::Pipeline, key: &str, value: &[u8]) {
        let c = pipe.cmd("SET").arg(key).arg(value);
        let ttl = self.options.ttl;
        if !ttl.is_zero() {
            if ttl.subsec_nanos() == 0 {
                c.arg("EX").arg(ttl.as_secs());
            } else {
                c.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
        }
        c.ignore();
    }

    fn flush_counters(&self, force: bool) -> Result<(), CacheError> {
        let hits = self.pending_hits.load(Ordering::Relaxed);
        let misses = self.pending_misses.load(Ordering::Relaxed);
        if hits + misses == 0 {
            return Ok(());
        }
        {
            let mut last = lock(&self.last_flush);
            if !force && last.elapsed() < COUNTER_FLUSH {
                return Ok(());
            }
            *last = Instant::now();
        }
        let hits = self.pending_hits.swap(0, Ordering::Relaxed);
        let misses = self.pending_misses.swap(0, Ordering::Relaxed);
        let key = self.stats_key.clone();
        let result = self.guarded(|route| {
            let node = route.node_for(&key)?;
            let cluster = matches!(route, Route::Cluster(_));
            self.with_conn(&node, cluster, "counting lookups", |c| {
                redis::pipe()
                    .cmd("HINCRBY")
                    .arg(&key)
                    .arg("hits")
                    .arg(hits)
                    .ignore()
                    .cmd("HINCRBY")
                    .arg(&key)
                    .arg("misses")
                    .arg(misses)
                    .ignore()
                    .query::<()>(c)
            })
        });
        if result.is_err() {
            self.pending_hits.fetch_add(hits, Ordering::Relaxed);
            self.pending_misses.fetch_add(misses, Ordering::Relaxed);
        }
        result
    }

    /// Visits every key of this namespace on every node: `f(node, cluster, keys)` per SCAN step.
    fn scan(
        &self,
        route: &Route,
        mut f: impl FnMut(&Node, bool, &[String]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let pattern = format!("{}:*", glob_escape(&self.options.namespace));
        let cluster = matches!(route, Route::Cluster(_));
        for node in route.all_nodes() {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) =
                    self.with_conn(&node, cluster, "scanning keys", |c| {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(SCAN_COUNT)
                            .query(c)
                    })?;
                if !keys.is_empty() {
                    f(&node, cluster, &keys)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Cache for RedisCache {
    fn describe(&self) -> String {
        self.display.clone()
    }

    fn namespace(&self) -> &str {
        &self.options.namespace
    }

    fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.guarded(|route| match route {
            Route::Single(node) => {
                let values: Vec<Option<Vec<u8>>> =
                    self.with_conn(node, false, "reading (MGET)", |c| {
                        redis::cmd("MGET")
                            .arg(keys.iter().map(CacheKey::as_str).collect::<Vec<_>>())
                            .query(c)
                    })?;
                if values.len() != keys.len() {
                    return Err(Failure::Cluster(format!(
                        "MGET of {} keys returned {} values",
                        keys.len(),
                        values.len()
                    )));
                }
                Ok(values)
            }
            Route::Cluster(table) => {
                let groups = group_by_slot(table, keys.iter().map(|k| k.as_str()).enumerate())?;
                let mut out = vec![None; keys.len()];
                for (node, slots) in groups {
                    let node = &table.nodes[usize::from(node)];
                    let mut pipe = redis::pipe();
                    for idx in slots.values() {
                        pipe.cmd("MGET")
                            .arg(idx.iter().map(|&i| keys[i].as_str()).collect::<Vec<_>>());
                    }
                    let replies: Vec<Vec<Option<Vec<u8>>>> =
                        self.with_conn(node, true, "reading (MGET per slot)", |c| pipe.query(c))?;
                    if replies.len() != slots.len() {
                        return Err(Failure::Cluster("pipeline reply count differs".into()));
                    }
                    for (idx, values) in slots.values().zip(replies) {
                        if values.len() != idx.len() {
                            return Err(Failure::Cluster("MGET reply count differs".into()));
                        }
                        for (&i, v) in idx.iter().zip(values) {
                            out[i] = v;
                        }
                    }
                }
                Ok(out)
            }
        })?;
        // Counters are best effort; their failure must not turn these hits into misses.
        let _ = self.flush_counters(false);
        Ok(out)
    }

    fn put_many(&self, entries: &[(CacheKey, Vec<u8>)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.guarded(|route| match route {
            Route::Single(node) => {
                let mut pipe = redis::pipe();
                for (k, v) in entries {
                    self.set_cmd(&mut pipe, k.as_str(), v);
                }
                self.with_conn(node, false, "writing (SET EX)", |c| pipe.query::<()>(c))
            }
            Route::Cluster(table) => {
                let groups =
                    group_by_slot(table, entries.iter().map(|(k, _)| k.as_str()).enumerate())?;
                for (node, slots) in groups {
                    let node = &table.nodes[usize::from(node)];
                    let mut pipe = redis::pipe();
                    for &i in slots.values().flatten() {
                        let (k, v) = &entries[i];
                        self.set_cmd(&mut pipe, k.as_str(), v);
                    }
                    self.with_conn(node, true, "writing (SET EX)", |c| pipe.query::<()>(c))?;
                }
                Ok(())
            }
        })?;
        let _ = self.flush_counters(false);
        Ok(())
    }

    fn record_lookups(&self, hits: u64, misses: u64) {
        self.pending_hits.fetch_add(hits, Ordering::Relaxed);
        self.pending_misses.fetch_add(misses, Ordering::Relaxed);
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        self.flush_counters(true)?;
        let key = self.stats_key.clone();
        self.guarded(|route| {
            let node = route.node_for(&key)?;
            let cluster = matches!(route, Route::Cluster(_));
            let (hits, misses): (Option<u64>, Option<u64>) =
                self.with_conn(&node, cluster, "reading counters", |c| {
                    redis::cmd("HMGET")
                        .arg(&key)
                        .arg("hits")
                        .arg("misses")
                        .query(c)
                })?;
            let mut stats = CacheStats {
                hits: hits.unwrap_or(0),
                misses: misses.unwrap_or(0),
                ..CacheStats::default()
            };
            self.scan(route, |node, cluster, keys| {
                let lens: Vec<u64> = self.with_conn(node, cluster, "measuring values", |c| {
                    let mut pipe = redis::pipe();
                    for k in keys {
                        pipe.cmd("STRLEN").arg(k);
                    }
                    pipe.query(c)
                })?;
                // A key that expired between SCAN and STRLEN reads as length 0; do not count it.
                for (k, len) in keys.iter().zip(lens) {
                    if len > 0 {
                        stats.entries += 1;
                        stats.bytes += k.len() as u64 + len;
                    }
                }
                Ok(())
            })?;
            Ok(stats)
        })
    }

    fn clear(&self) -> Result<u64, CacheError> {
        self.pending_hits.store(0, Ordering::Relaxed);
        self.pending_misses.store(0, Ordering::Relaxed);
        let key = self.stats_key.clone();
        self.guarded(|route| {
            let mut removed = 0u64;
            self.scan(route, |node, cluster, keys| {
                let counts: Vec<u64> = self.with_conn(node, cluster, "removing keys", |c| {
                    // One UNLINK per key: keys of one SCAN step may sit in different slots.
                    let mut pipe = redis::pipe();
                    for k in keys {
                        pipe.cmd("UNLINK").arg(k);
                    }
                    pipe.query(c)
                })?;
                removed += counts.iter().sum::<u64>();
                Ok(())
            })?;
            let node = route.node_for(&key)?;
            let cluster = matches!(route, Route::Cluster(_));
            self.with_conn(&node, cluster, "resetting counters", |c| {
                redis::cmd("DEL").arg(&key).query::<()>(c)
            })?;
            Ok(removed)
        })
    }

    /// Redis expires entries itself (`EX`) and bounds its memory with its own `maxmemory-policy`
    /// (`allkeys-lru` is the one to set for a cache), so there is nothing to remove; reports what is left.
    fn prune(&self) -> Result<PruneReport, CacheError> {
        let stats = self.stats()?;
        Ok(PruneReport {
            expired: 0,
            evicted: 0,
            entries: stats.entries,
            bytes: stats.bytes,
        })
    }
}

impl Drop for RedisCache {
    fn drop(&mut self) {
        // Send the last counts; skipped at once if Redis is marked down.
        let _ = self.flush_counters(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:6379/2"),
            "redis://user:***@host:6379/2"
        );
        assert_eq!(
            redact("rediss://:secret@host:6380"),
            "rediss://***@host:6380"
        );
        assert_eq!(redact("redis://host:6379/0"), "redis://host:6379/0");
    }

    #[test]
    fn only_redis_urls_are_accepted() {
        assert!(RedisCache::open("http://host", RedisCacheOptions::default()).is_err());
        assert!(RedisCache::open("redis://", RedisCacheOptions::default()).is_err());
        let c =
            RedisCache::open("redis://u:pw@127.0.0.1:1/3", RedisCacheOptions::default()).unwrap();
        assert_eq!(c.describe(), "redis://u:***@127.0.0.1:1/3");
        assert!(RedisCache::open("rediss://127.0.0.1:1/0", RedisCacheOptions::default()).is_ok());
    }
}
