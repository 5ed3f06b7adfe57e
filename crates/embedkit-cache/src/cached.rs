//! [`CachedEmbedder`]: any embedder with a cache in front.

use crate::{Cache, CacheError, CacheKey, KeyBuilder, KeyOptions, decode_f32_into, encode_f32};
use embedkit_core::{EmbedError, Embedder, Embeddings, EncodeOptions, TokenEmbeddings};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Receives the cache's warnings (one when the cache starts failing, one when it works again).
pub type WarnHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What a [`CachedEmbedder`] has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Distinct texts found in the cache.
    pub hits: u64,
    /// Distinct texts not in the cache (or unreadable there).
    pub misses: u64,
    /// Texts sent to the inner embedder.
    pub computed: u64,
    /// Missing texts another concurrent call was already computing, taken from that call.
    pub coalesced: u64,
    /// Texts that repeated inside one batch, served from the first occurrence.
    pub duplicates: u64,
    /// Cache operations that failed (each one computed instead).
    pub errors: u64,
}

#[derive(Default)]
struct AtomicCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    computed: AtomicU64,
    coalesced: AtomicU64,
    duplicates: AtomicU64,
    errors: AtomicU64,
}

/// One key being computed by some call; others that miss the same key wait for it instead of computing it
/// again (single flight).
struct Flight {
    /// `None` while running; then `Some(Some(vector))`, or `Some(None)` when the computing call failed
    /// (the waiters then compute the text themselves).
    result: Mutex<Option<Option<Arc<[f32]>>>>,
    done: Condvar,
}

impl Flight {
    fn new() -> Self {
        Self {
            result: Mutex::new(None),
            done: Condvar::new(),
        }
    }

    fn finish(&self, value: Option<Arc<[f32]>>) {
        let mut r = self.result.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(value);
        }
        self.done.notify_all();
    }

    fn wait(&self) -> Option<Arc<[f32]>> {
        let mut r = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = &*r {
                return v.clone();
            }
            r = self.done.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The keys being computed now, and how many computations have finished so far (a call that sees this
/// number change between its cache lookup and claiming a key looks that key up again, since the finished
/// computation may have stored it in between).
#[derive(Default)]
struct FlightTable {
    running: HashMap<CacheKey, Arc<Flight>>,
    finished: u64,
}

type Flights = Mutex<FlightTable>;

/// The flights one call leads. Dropping it — after the results are stored, or when the call fails or
/// panics — finishes any flight still open as failed (so no waiter hangs) and removes them all from the
/// table, so that later calls go to the cache.
struct Leading<'a> {
    table: &'a Flights,
    flights: Vec<(CacheKey, Arc<Flight>)>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.flights.is_empty() {
            return;
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.finished += 1;
        for (key, flight) in self.flights.drain(..) {
            flight.finish(None);
            table.running.remove(&key);
        }
    }
}

/// An [`Embedder`] that asks a [`Cache`] first and computes only what is missing.
///
/// One call looks the whole batch up at once, sends only the misses to the inner embedder in one call,
/// stores them in one write and returns rows in the caller's order. A text that repeats inside a batch is
/// looked up and computed once. Concurrent calls that miss the same text compute it once: the first one
/// computes, the others wait for its result.
///
/// A failing or unreachable cache never fails a call: the error is counted, a warning goes to the warn
/// hook (once, until the cache works again), and the vectors are computed.
pub struct CachedEmbedder<E: Embedder> {
    inner: E,
    cache: Arc<dyn Cache>,
    fingerprint: String,
    flights: Flights,
    counters: AtomicCounters,
    degraded: AtomicBool,
    warn: WarnHook,
}

impl<E: Embedder> fmt::Debug for CachedEmbedder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedEmbedder")
            .field("model", &self.inner.name())
            .field("cache", &self.cache.describe())
            .field("counters", &self.counters())
            .finish()
    }
}

impl<E: Embedder> CachedEmbedder<E> {
    /// `inner` behind `cache`. Warnings go to stderr; see [`CachedEmbedder::with_warn_hook`].
    pub fn new(inner: E, cache: Arc<dyn Cache>) -> Self {
        let fingerprint = inner.fingerprint();
        Self {
            inner,
            cache,
            fingerprint,
            flights: Mutex::new(FlightTable::default()),
            counters: AtomicCounters::default(),
            degraded: AtomicBool::new(false),
            warn: Arc::new(|msg| eprintln!("warning: {msg}")),
        }
    }

    /// Sends warnings to `hook` instead of stderr (a server's log, a test's buffer).
    pub fn with_warn_hook(mut self, hook: WarnHook) -> Self {
        self.warn = hook;
        self
    }

    /// The inner embedder.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.cache
    }

    /// What this embedder has done so far.
    pub fn counters(&self) -> Counters {
        let c = &self.counters;
        Counters {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            computed: c.computed.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    fn cache_failed(&self, e: &CacheError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            (self.warn)(&format!(
                "embedding cache {} failed; computing vectors without it until it works again: {e}",
                self.cache.describe()
            ));
        }
    }

    fn cache_worked(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            (self.warn)(&format!(
                "embedding cache {} works again",
                self.cache.describe()
            ));
        }
    }

    fn table(&self) -> MutexGuard<'_, FlightTable> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Computes `texts` with the inner embedder and checks it returned one row per text.
    fn compute(&self, texts: &[&str], options: &EncodeOptions) -> Result<Embeddings, EmbedError> {
        self.counters
            .computed
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        let e = self.inner.embed(texts, options)?;
        if e.rows() != texts.len() {
            return Err(EmbedError::Backend(
                format!(
                    "{} returned {} vectors for {} texts",
                    self.inner.name(),
                    e.rows(),
                    texts.len()
                )
                .into(),
            ));
        }
        Ok(e)
    }

    fn store(&self, entries: Vec<(CacheKey, Vec<u8>)>) {
        if entries.is_empty() {
            return;
        }
        match self.cache.put_many(&entries) {
            Ok(()) => self.cache_worked(),
            Err(e) => self.cache_failed(&e),
        }
    }
}

impl<E: Embedder> Embedder for CachedEmbedder<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn dims(&self) -> usize {
        self.inner.dims()
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn embed(&self, texts: &[&str], options: &EncodeOptions) -> Result<Embeddings, EmbedError> {
        if texts.is_empty() {
            return self.inner.embed(texts, options);
        }
        let full = self.inner.dims();
        let dims = options.truncate_dim.map_or(full, |d| d.min(full));

        // Distinct texts, in order of first appearance; `slot[i]` is text i's distinct index.
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(texts.len());
        let mut unique: Vec<&str> = Vec::with_capacity(texts.len());
        let slot: Vec<usize> = texts
            .iter()
            .map(|&t| {
                *first.entry(t).or_insert_with(|| {
                    unique.push(t);
                    unique.len() - 1
                })
            })
            .collect();
        self.counters
            .duplicates
            .fetch_add((texts.len() - unique.len()) as u64, Ordering::Relaxed);
        let builder = KeyBuilder::new(
            self.cache.namespace(),
            &self.fingerprint,
            &KeyOptions::from_encode(options),
        );
        let keys: Vec<CacheKey> = unique.iter().map(|t| builder.key(t)).collect();

        // Distinct rows, filled from the cache, then from computing.
        let mut rows = vec![0f32; unique.len() * dims];
        let mut missing: Vec<usize> = Vec::new();
        let generation = self.table().finished;
        match self.cache.get_many(&keys) {
            Ok(values) if values.len() == keys.len() => {
                self.cache_worked();
                for (u, value) in values.iter().enumerate() {
                    let row = &mut rows[u * dims..(u + 1) * dims];
                    if !value.as_deref().is_some_and(|v| decode_f32_into(v, row)) {
                        missing.push(u);
                    }
                }
            }
            Ok(values) => {
                self.cache_failed(&CacheError::Config {
                    setting: self.cache.describe(),
                    reason: format!("returned {} values for {} keys", values.len(), keys.len()),
                });
                missing = (0..unique.len()).collect();
            }
            Err(e) => {
                self.cache_failed(&e);
                missing = (0..unique.len()).collect();
            }
        }
        let hits = (unique.len() - missing.len()) as u64;
        self.counters.hits.fetch_add(hits, Ordering::Relaxed);
        self.counters
            .misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        self.cache.record_lookups(hits, missing.len() as u64);

        if !missing.is_empty() {
            // Claim the missing keys nobody is computing; wait for the others afterwards. A call computes and
            // publishes its own keys before it waits on anyone, so two calls waiting on each other cannot
            // deadlock.
            let mut lead = Leading {
                table: &self.flights,
                flights: Vec::new(),
            };
            let mut lead_idx = Vec::new();
            let mut follow: Vec<(usize, Arc<Flight>)> = Vec::new();
            let recheck = {
                let mut table = self.table();
                for &u in &missing {
                    match table.running.get(&keys[u]) {
                        Some(f) => follow.push((u, f.clone())),
                        None => {
                            let f = Arc::new(Flight::new());
                            table.running.insert(keys[u].clone(), f.clone());
                            lead.flights.push((keys[u].clone(), f));
                            lead_idx.push(u);
                        }
                    }
                }
                table.finished != generation
            };
            if recheck && !lead_idx.is_empty() {
                // Another call finished computing since our lookup and may have stored some of our keys.
                let lead_keys: Vec<CacheKey> = lead_idx.iter().map(|&u| keys[u].clone()).collect();
                if let Ok(values) = self.cache.get_many(&lead_keys) {
                    let mut still = Vec::with_capacity(lead_idx.len());
                    let mut still_flights = Vec::with_capacity(lead_idx.len());
                    for ((u, flight), value) in lead_idx
                        .iter()
                        .zip(std::mem::take(&mut lead.flights))
                        .zip(values.iter().map(Some).chain(std::iter::repeat(None)))
                    {
                        let row = &mut rows[u * dims..(u + 1) * dims];
                        if value
                            .and_then(|v| v.as_deref())
                            .is_some_and(|v| decode_f32_into(v, row))
                        {
                            flight.1.finish(Some(Arc::from(&*row)));
                            self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                            lead.flights.push(flight);
                        } else {
                            still.push(*u);
                            still_flights.push(flight);
                        }
                    }
                    // Finished flights stay in `lead` only to be removed from the table on drop; keep the
                    // ones still to compute first, in the same order as `lead_idx`.
                    let done = std::mem::replace(&mut lead.flights, still_flights);
                    lead.flights.extend(done);
                    lead_idx = still;
                }
            }
            if !lead_idx.is_empty() {
                let lead_texts: Vec<&str> = lead_idx.iter().map(|&u| unique[u]).collect();
                let computed = self.compute(&lead_texts, options)?;
                if computed.dims() != dims {
                    // The embedder's output dims differ from what dims() and truncate_dim promise, so its
                    // rows cannot be mixed with cached ones: answer uncached (and store nothing).
                    drop(lead);
                    if lead_idx.len() == texts.len() {
                        // Every text was a distinct miss, computed in order: that is the answer.
                        return Ok(computed);
                    }
                    return self.inner.embed(texts, options);
                }
                let mut entries = Vec::with_capacity(lead_idx.len());
                for (j, &u) in lead_idx.iter().enumerate() {
                    let v = computed.row(j);
                    rows[u * dims..(u + 1) * dims].copy_from_slice(v);
                    lead.flights[j].1.finish(Some(Arc::from(v)));
                    entries.push((keys[u].clone(), encode_f32(v)));
                }
                self.store(entries);
            }
            // Only now leave the table: a call arriving before this point waits on the finished flight, one
            // arriving after finds the stored entry. And before waiting on others, so no cycle can form.
            drop(lead);
            let mut retry = Vec::new();
            for (u, flight) in follow {
                match flight.wait() {
                    Some(v) if v.len() == dims => {
                        rows[u * dims..(u + 1) * dims].copy_from_slice(&v);
                        self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => retry.push(u),
                }
            }
            if !retry.is_empty() {
                // The call we waited for failed; compute these ourselves.
                let retry_texts: Vec<&str> = retry.iter().map(|&u| unique[u]).collect();
                let computed = self.compute(&retry_texts, options)?;
                if computed.dims() != dims {
                    return self.inner.embed(texts, options);
                }
                let mut entries = Vec::with_capacity(retry.len());
                for (j, &u) in retry.iter().enumerate() {
                    let v = computed.row(j);
                    rows[u * dims..(u + 1) * dims].copy_from_slice(v);
                    entries.push((keys[u].clone(), encode_f32(v)));
                }
                self.store(entries);
            }
        }

        if unique.len() == texts.len() {
            // No repeats: the distinct rows are the answer, in order.
            return Embeddings::new(rows, texts.len(), dims)
                .map_err(|e| EmbedError::Backend(Box::new(e)));
        }
        let mut out = Vec::with_capacity(texts.len() * dims);
        for &u in &slot {
            out.extend_from_slice(&rows[u * dims..(u + 1) * dims]);
        }
        Embeddings::new(out, texts.len(), dims).map_err(|e| EmbedError::Backend(Box::new(e)))
    }

    /// Token vectors are not cached (they are large and used once, for late interaction); passed through.
    fn embed_tokens(
        &self,
        texts: &[&str],
        options: &EncodeOptions,
    ) -> Result<Vec<TokenEmbeddings>, EmbedError> {
        self.inner.embed_tokens(texts, options)
    }

    /// The inner embedder's usage: what a cache hit saved never reaches it.
    fn usage(&self) -> Option<embedkit_core::Usage> {
        self.inner.usage()
    }
}
