//! The default cache: one SQLite file in a folder, shared safely by every process that opens it.
//!
//! Why SQLite and not redb: redb takes an exclusive `flock` on its file (`DatabaseError::DatabaseAlreadyOpen`
//! for any second opener, even a reader in another process), so a server and a CLI run could not share a
//! cache without opening and closing the database — a full write transaction and several fsyncs — around
//! every lookup. SQLite in WAL mode lets any number of processes read while one writes, waits for the write
//! lock with a timeout, and, like redb, keeps every committed transaction and nothing half-written after a
//! `kill -9` (the WAL is replayed on the next open).
//!
//! Layout: one row per entry (key, value, expiry, last access, size), a `meta` table with the schema version,
//! the lookup counters and running totals of entries and bytes (kept by triggers inside the same
//! transactions, so they cannot drift from the rows even across crashes).

use crate::error::CacheError;
use crate::{Cache, CacheKey, CacheStats, DEFAULT_NAMESPACE, DEFAULT_TTL, PruneReport};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File name of the store inside the cache folder (SQLite adds `-wal` and `-shm` next to it).
pub const STORE_FILE: &str = "embeddings.sqlite3";

/// Layout version of the store; a file with another version is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

/// Evictions go this far below the bound so that the next few writes do not each evict again.
const EVICT_TO: f64 = 0.9;

/// Counters buffered in memory are written at least this often (with other writes, or on their own).
const COUNTER_FLUSH: Duration = Duration::from_secs(5);

/// Milliseconds since the Unix epoch, the store's notion of now. Tests pass a manual clock to step over
/// TTLs and order accesses without sleeping.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }))
    }

    /// A clock that reads `f` (milliseconds since the Unix epoch).
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    fn now_ms(&self) -> i64 {
        // SQLite integers are i64; u64 milliseconds overflow it only in the year 292 million.
        i64::try_from((self.0)()).unwrap_or(i64::MAX)
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Settings of an [`EmbeddedCache`].
#[derive(Debug, Clone)]
pub struct EmbeddedCacheOptions {
    /// Entries expire this long after they were written; zero means never. Default 24 hours.
    pub ttl: Duration,
    /// Bound on the bytes of keys and values; when a write goes over it, expired entries and then the least
    /// recently used ones are evicted. Zero means unbounded. Default 1 GiB.
    pub max_bytes: u64,
    /// A hit updates the entry's last-access time only when the stored time is older than this, so that
    /// reads do not each turn into a write. Eviction order is therefore exact to this granularity.
    /// Default 5 minutes.
    pub touch_interval: Duration,
    /// How long a write waits for another process that holds the write lock before giving up (the caller
    /// then computes without the cache). Default 5 s.
    pub busy_timeout: Duration,
    /// Key namespace. Default [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// Source of the current time.
    pub clock: Clock,
}

impl Default for EmbeddedCacheOptions {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            max_bytes: 1 << 30,
            touch_interval: Duration::from_secs(300),
            busy_timeout: Duration::from_secs(5),
            namespace: DEFAULT_NAMESPACE.to_string(),
            clock: Clock::system(),
        }
    }
}

/// The on-disk cache: a SQLite database in WAL mode (see the module notes for why), with TTL, a size bound
/// with least-recently-used eviction, and persistent hit/miss counters.
///
/// Safe to open from several threads (calls are serialized on one connection) and several processes at
/// once; after a crash or `kill -9` at any point it opens with every committed batch intact.
pub struct EmbeddedCache {
    path: PathBuf,
    options: EmbeddedCacheOptions,
    conn: Mutex<Connection>,
    pending_hits: AtomicU64,
    pending_misses: AtomicU64,
    last_flush_ms: AtomicU64,
}

impl fmt::Debug for EmbeddedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedCache")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EmbeddedCache {
    /// Opens (creating if needed) the cache in folder `dir`.
    pub fn open(dir: &Path, options: EmbeddedCacheOptions) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(STORE_FILE);
        let conn = open_connection(&path, &options)?;
        let now = options.clock.now_ms();
        Ok(Self {
            path,
            options,
            conn: Mutex::new(conn),
            pending_hits: AtomicU64::new(0),
            pending_misses: AtomicU64::new(0),
            last_flush_ms: AtomicU64::new(u64::try_from(now).unwrap_or(0)),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings it was opened with.
    pub fn options(&self) -> &EmbeddedCacheOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: an open rusqlite Transaction rolls
        // back when dropped during unwinding.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> CacheError + '_ {
        move |e| CacheError::Store {
            path: self.path.clone(),
            what,
            source: Box::new(e),
        }
    }

    /// Takes the buffered counters for writing in a transaction; [`Self::restore_counters`] puts them back
    /// if that transaction fails.
    fn take_counters(&self) -> (u64, u64) {
        (
            self.pending_hits.swap(0, Ordering::Relaxed),
            self.pending_misses.swap(0, Ordering::Relaxed),
        )
    }

    fn restore_counters(&self, (hits, misses): (u64, u64)) {
        self.pending_hits.fetch_add(hits, Ordering::Relaxed);
        self.pending_misses.fetch_add(misses, Ordering::Relaxed);
    }

    fn write_counters(
        tx: &rusqlite::Transaction<'_>,
        (hits, misses): (u64, u64),
    ) -> rusqlite::Result<()> {
        if hits > 0 {
            tx.execute(
                "UPDATE meta SET value = value + ?1 WHERE name = 'hits'",
                [hits as i64],
            )?;
        }
        if misses > 0 {
            tx.execute(
                "UPDATE meta SET value = value + ?1 WHERE name = 'misses'",
                [misses as i64],
            )?;
        }
        Ok(())
    }

    /// A write transaction: `f` runs inside it, the buffered counters are written with it.
    fn write<T>(
        &self,
        conn: &mut Connection,
        what: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, CacheError> {
        let counters = self.take_counters();
        let result = (|| {
            // IMMEDIATE takes the write lock up front, so a busy store fails here (after busy_timeout)
            // rather than half-way through.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            Self::write_counters(&tx, counters)?;
            tx.commit()?;
            Ok(out)
        })();
        match result {
            Ok(v) => {
                self.last_flush_ms
                    .store(self.options.clock.now_ms().max(0) as u64, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                self.restore_counters(counters);
                Err(self.err(what)(e))
            }
        }
    }

    /// Best-effort write that must not stall a read: waits at most a few milliseconds for the lock.
    fn write_quick(
        &self,
        conn: &mut Connection,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) {
        if conn.busy_timeout(Duration::from_millis(20)).is_err() {
            return;
        }
        // Losing a touch or some counts when another process holds the lock is harmless.
        let _ = self.write(conn, "updating access times", f);
        let _ = conn.busy_timeout(self.options.busy_timeout);
    }

    /// Removes expired entries, then least recently used ones until the bytes are at most `target`.
    fn evict(
        tx: &rusqlite::Transaction<'_>,
        now: i64,
        target: u64,
    ) -> rusqlite::Result<(u64, u64)> {
        let expired = tx.execute(
            "DELETE FROM entries WHERE expires_ms > 0 AND expires_ms <= ?1",
            [now],
        )? as u64;
        let mut evicted = 0u64;
        loop {
            let (entries, bytes) = totals(tx)?;
            if bytes <= target || entries == 0 {
                break;
            }
            // Delete about as many of the oldest as the excess needs at the average entry size, then
            // check again; entries vary little in size, so this converges in one or two rounds.
            let avg = (bytes / entries).max(1);
            let n = (bytes - target).div_ceil(avg).max(1);
            let deleted = tx.execute(
                "DELETE FROM entries WHERE id IN \
                 (SELECT id FROM entries ORDER BY accessed_ms, id LIMIT ?1)",
                [n as i64],
            )? as u64;
            if deleted == 0 {
                // Totals say there is more than the table holds; nothing left to evict.
                break;
            }
            evicted += deleted;
        }
        Ok((expired, evicted))
    }

    fn maybe_flush_counters(&self, conn: &mut Connection, now: i64) {
        let last = self.last_flush_ms.load(Ordering::Relaxed) as i64;
        let pending =
            self.pending_hits.load(Ordering::Relaxed) + self.pending_misses.load(Ordering::Relaxed);
        if pending > 0 && now.saturating_sub(last) >= COUNTER_FLUSH.as_millis() as i64 {
            self.write_quick(conn, |_| Ok(()));
        }
    }
}

fn totals(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    conn.query_row(
        "SELECT (SELECT value FROM meta WHERE name = 'entries'), \
                (SELECT value FROM meta WHERE name = 'bytes')",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        },
    )
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    value       BLOB NOT NULL,
    expires_ms  INTEGER NOT NULL,
    accessed_ms INTEGER NOT NULL,
    size        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_access ON entries (accessed_ms, id);
CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries (expires_ms) WHERE expires_ms > 0;
CREATE TRIGGER IF NOT EXISTS entries_insert AFTER INSERT ON entries BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'entries';
    UPDATE meta SET value = value + NEW.size WHERE name = 'bytes';
END;
CREATE TRIGGER IF NOT EXISTS entries_delete AFTER DELETE ON entries BEGIN
    UPDATE meta SET value = value - 1 WHERE name = 'entries';
    UPDATE meta SET value = value - OLD.size WHERE name = 'bytes';
END;
CREATE TRIGGER IF NOT EXISTS entries_resize AFTER UPDATE OF size ON entries BEGIN
    UPDATE meta SET value = value - OLD.size + NEW.size WHERE name = 'bytes';
END;
INSERT OR IGNORE INTO meta (name, value) VALUES
    ('hits', 0), ('misses', 0), ('entries', 0), ('bytes', 0);
";

fn open_connection(path: &Path, options: &EmbeddedCacheOptions) -> Result<Connection, CacheError> {
    let store_err = |what: &'static str| {
        move |e: rusqlite::Error| CacheError::Store {
            path: path.to_path_buf(),
            what,
            source: Box::new(e),
        }
    };
    let mut conn = Connection::open(path).map_err(store_err("opening"))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(store_err("setting the busy timeout"))?;
    // Switching to WAL needs a moment of exclusive access; when several processes create the store at the
    // same instant one of them may see SQLITE_BUSY despite the busy handler, so retry for busy_timeout.
    let deadline = std::time::Instant::now() + options.busy_timeout;
    loop {
        let attempt = (|| -> rusqlite::Result<()> {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode is {mode}, WAL is needed for several processes"
                )));
            }
            // NORMAL in WAL mode: a commit is durable against a crash of the process (kill -9), and a power
            // loss can only lose the last commits, never corrupt the file; FULL would fsync every batch.
            conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            let version: Option<i64> = tx
                .query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if version.is_none() {
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            tx.commit()?;
            Ok(())
        })();
        match attempt {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(store_err("creating the tables")(e)),
        }
    }
    let version: i64 = conn
        .query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
            r.get(0)
        })
        .map_err(store_err("reading the layout version"))?;
    if version != SCHEMA_VERSION {
        return Err(CacheError::Version {
            path: path.to_path_buf(),
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

impl Cache for EmbeddedCache {
    fn describe(&self) -> String {
        self.path
            .parent()
            .unwrap_or(&self.path)
            .display()
            .to_string()
    }

    fn namespace(&self) -> &str {
        &self.options.namespace
    }

    fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.options.clock.now_ms();
        let touch_before = now.saturating_sub(self.options.touch_interval.as_millis() as i64);
        let mut conn = self.lock();
        let mut out = Vec::with_capacity(keys.len());
        let mut touch = Vec::new();
        {
            // One read transaction: a consistent snapshot, and one WAL lookup instead of one per key.
            let tx = conn.transaction().map_err(self.err("starting a read"))?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT value, expires_ms, accessed_ms FROM entries WHERE key = ?1",
                    )
                    .map_err(self.err("reading entries"))?;
                for key in keys {
                    let row = stmt
                        .query_row([key.as_str()], |r| {
                            Ok((
                                r.get::<_, Vec<u8>>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, i64>(2)?,
                            ))
                        })
                        .optional()
                        .map_err(self.err("reading entries"))?;
                    match row {
                        Some((_, expires, _)) if expires > 0 && expires <= now => out.push(None),
                        Some((value, _, accessed)) => {
                            if accessed <= touch_before {
                                touch.push(key);
                            }
                            out.push(Some(value));
                        }
                        None => out.push(None),
                    }
                }
            }
            tx.commit().map_err(self.err("ending a read"))?;
        }
        if !touch.is_empty() {
            self.write_quick(&mut conn, |tx| {
                let mut stmt =
                    tx.prepare_cached("UPDATE entries SET accessed_ms = ?1 WHERE key = ?2")?;
                for key in &touch {
                    stmt.execute(params![now, key.as_str()])?;
                }
                Ok(())
            });
        } else {
            self.maybe_flush_counters(&mut conn, now);
        }
        Ok(out)
    }

    fn put_many(&self, entries: &[(CacheKey, Vec<u8>)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = self.options.clock.now_ms();
        let expires = if self.options.ttl.is_zero() {
            0
        } else {
            now.saturating_add(self.options.ttl.as_millis().max(1) as i64)
        };
        let max_bytes = self.options.max_bytes;
        let mut conn = self.lock();
        self.write(&mut conn, "writing entries", |tx| {
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO entries (key, value, expires_ms, accessed_ms, size) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                     expires_ms = excluded.expires_ms, accessed_ms = excluded.accessed_ms, \
                     size = excluded.size",
                )?;
                for (key, value) in entries {
                    let size = (key.as_str().len() + value.len()) as i64;
                    stmt.execute(params![key.as_str(), value, expires, now, size])?;
                }
            }
            if max_bytes > 0 && totals(tx)?.1 > max_bytes {
                Self::evict(tx, now, (max_bytes as f64 * EVICT_TO) as u64)?;
            }
            Ok(())
        })
    }

    fn record_lookups(&self, hits: u64, misses: u64) {
        self.pending_hits.fetch_add(hits, Ordering::Relaxed);
        self.pending_misses.fetch_add(misses, Ordering::Relaxed);
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        let mut conn = self.lock();
        // Write what this process has buffered so the numbers include it (best effort: a store another
        // process is busy writing still answers from the last commit).
        if self.pending_hits.load(Ordering::Relaxed) + self.pending_misses.load(Ordering::Relaxed)
            > 0
        {
            let _ = self.write(&mut conn, "writing counters", |_| Ok(()));
        }
        let mut stmt = conn
            .prepare("SELECT name, value FROM meta")
            .map_err(self.err("reading counters"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.err("reading counters"))?;
        let mut stats = CacheStats::default();
        for row in rows {
            let (name, value) = row.map_err(self.err("reading counters"))?;
            let value = value.max(0) as u64;
            match name.as_str() {
                "hits" => stats.hits = value,
                "misses" => stats.misses = value,
                "entries" => stats.entries = value,
                "bytes" => stats.bytes = value,
                _ => {}
            }
        }
        Ok(stats)
    }

    fn clear(&self) -> Result<u64, CacheError> {
        let mut conn = self.lock();
        let _ = self.take_counters();
        let removed = self.write(&mut conn, "clearing", |tx| {
            let n = tx.execute("DELETE FROM entries", [])? as u64;
            tx.execute(
                "UPDATE meta SET value = 0 WHERE name IN ('hits', 'misses', 'entries', 'bytes')",
                [],
            )?;
            Ok(n)
        })?;
        // Give the space back to the file system; skipped if another process is using the store.
        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;");
        Ok(removed)
    }

    fn prune(&self) -> Result<PruneReport, CacheError> {
        let now = self.options.clock.now_ms();
        let max_bytes = self.options.max_bytes;
        let mut conn = self.lock();
        let (expired, evicted) = self.write(&mut conn, "pruning", |tx| {
            Self::evict(tx, now, if max_bytes == 0 { u64::MAX } else { max_bytes })
        })?;
        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        let (entries, bytes) = totals(&conn).map_err(self.err("reading totals"))?;
        Ok(PruneReport {
            expired,
            evicted,
            entries,
            bytes,
        })
    }
}

impl Drop for EmbeddedCache {
    fn drop(&mut self) {
        if self.pending_hits.load(Ordering::Relaxed) + self.pending_misses.load(Ordering::Relaxed)
            > 0
        {
            let mut conn = self.lock();
            let _ = conn.busy_timeout(Duration::from_millis(200));
            let _ = self.write(&mut conn, "writing counters", |_| Ok(()));
        }
    }
}
