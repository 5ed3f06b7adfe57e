//! The on-disk store: round trips, TTL, LRU eviction, persistent counters, and several processes at once.

use embedkit_cache::{
    Cache, CacheError, CacheKey, Clock, EmbeddedCache, EmbeddedCacheOptions, STORE_FILE,
    decode_f32, encode_f32,
};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn key(s: &str) -> CacheKey {
    CacheKey::from_raw(format!("test:{s}"))
}

fn entry(s: &str, v: &[f32]) -> (CacheKey, Vec<u8>) {
    (key(s), encode_f32(v))
}

/// A clock the test moves by hand (milliseconds).
fn manual_clock(start: u64) -> (Arc<AtomicU64>, Clock) {
    let now = Arc::new(AtomicU64::new(start));
    let n = now.clone();
    (now, Clock::from_fn(move || n.load(Ordering::SeqCst)))
}

#[test]
fn round_trip_miss_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let c = EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap();
    assert!(dir.path().join(STORE_FILE).exists());
    assert_eq!(c.get_many(&[]).unwrap(), Vec::<Option<Vec<u8>>>::new());
    c.put_many(&[entry("a", &[1.0, 2.0]), entry("b", &[3.0, 4.0])])
        .unwrap();
    let got = c.get_many(&[key("b"), key("missing"), key("a")]).unwrap();
    assert_eq!(
        decode_f32(got[0].as_ref().unwrap(), 2),
        Some(vec![3.0, 4.0])
    );
    assert!(got[1].is_none());
    assert_eq!(
        decode_f32(got[2].as_ref().unwrap(), 2),
        Some(vec![1.0, 2.0])
    );
    c.put_many(&[entry("a", &[5.0, 6.0])]).unwrap();
    let got = c.get_many(&[key("a")]).unwrap();
    assert_eq!(
        decode_f32(got[0].as_ref().unwrap(), 2),
        Some(vec![5.0, 6.0])
    );
    let s = c.stats().unwrap();
    assert_eq!(s.entries, 2, "{s:?}");
    let per_entry = (key("a").as_str().len() + encode_f32(&[0.0, 0.0]).len()) as u64;
    assert_eq!(s.bytes, 2 * per_entry);
}

#[test]
fn ttl_expires_entries_and_zero_means_never() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock(1_000_000);
    let c = EmbeddedCache::open(
        dir.path(),
        EmbeddedCacheOptions {
            ttl: Duration::from_secs(60),
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    c.put_many(&[entry("a", &[1.0])]).unwrap();
    now.fetch_add(59_000, Ordering::SeqCst);
    assert!(c.get_many(&[key("a")]).unwrap()[0].is_some());
    now.fetch_add(1_000, Ordering::SeqCst);
    assert!(
        c.get_many(&[key("a")]).unwrap()[0].is_none(),
        "an entry at its expiry time is a miss"
    );
    let report = c.prune().unwrap();
    assert_eq!((report.expired, report.entries, report.bytes), (1, 0, 0));
    drop(c);

    let forever = EmbeddedCache::open(
        dir.path(),
        EmbeddedCacheOptions {
            ttl: Duration::ZERO,
            clock,
            ..Default::default()
        },
    )
    .unwrap();
    forever.put_many(&[entry("b", &[2.0])]).unwrap();
    now.fetch_add(10 * 365 * 24 * 3600 * 1000, Ordering::SeqCst);
    assert!(forever.get_many(&[key("b")]).unwrap()[0].is_some());
    assert_eq!(forever.prune().unwrap().expired, 0);
}

#[test]
fn size_bound_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock(1_000);
    let size = (key("a").as_str().len() + encode_f32(&[0.0; 4]).len()) as u64;
    let c = EmbeddedCache::open(
        dir.path(),
        EmbeddedCacheOptions {
            // Room for three and a half entries; eviction goes down to 90 % of that, i.e. three.
            max_bytes: size * 7 / 2,
            touch_interval: Duration::ZERO,
            clock,
            ..Default::default()
        },
    )
    .unwrap();
    for k in ["a", "b", "c"] {
        now.fetch_add(10, Ordering::SeqCst);
        c.put_many(&[entry(k, &[1.0; 4])]).unwrap();
    }
    now.fetch_add(10, Ordering::SeqCst);
    assert!(c.get_many(&[key("a")]).unwrap()[0].is_some()); // a is now the most recently used
    now.fetch_add(10, Ordering::SeqCst);
    c.put_many(&[entry("d", &[1.0; 4])]).unwrap();
    let present: Vec<bool> = c
        .get_many(&[key("a"), key("b"), key("c"), key("d")])
        .unwrap()
        .iter()
        .map(Option::is_some)
        .collect();
    assert_eq!(
        present,
        [true, false, true, true],
        "b was the least recently used"
    );
    let s = c.stats().unwrap();
    assert_eq!((s.entries, s.bytes), (3, 3 * size));
    assert!(s.bytes <= size * 7 / 2);
}

#[test]
fn reads_update_access_time_only_after_the_touch_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock(1_000_000);
    let size = (key("a").as_str().len() + encode_f32(&[0.0; 4]).len()) as u64;
    let c = EmbeddedCache::open(
        dir.path(),
        EmbeddedCacheOptions {
            max_bytes: size * 5 / 2,
            touch_interval: Duration::from_secs(60),
            clock,
            ..Default::default()
        },
    )
    .unwrap();
    c.put_many(&[entry("a", &[1.0; 4])]).unwrap();
    now.fetch_add(1_000, Ordering::SeqCst);
    c.put_many(&[entry("b", &[1.0; 4])]).unwrap();
    // Read a within the interval: its stored access time stays, so it is still the oldest.
    now.fetch_add(1_000, Ordering::SeqCst);
    c.get_many(&[key("a")]).unwrap();
    now.fetch_add(1_000, Ordering::SeqCst);
    c.put_many(&[entry("c", &[1.0; 4])]).unwrap();
    let got = c.get_many(&[key("a"), key("b"), key("c")]).unwrap();
    assert_eq!(
        got.iter().map(Option::is_some).collect::<Vec<_>>(),
        [false, true, true]
    );
    // Read b after the interval: it is touched, so c becomes the oldest.
    now.fetch_add(120_000, Ordering::SeqCst);
    c.get_many(&[key("b")]).unwrap();
    now.fetch_add(1_000, Ordering::SeqCst);
    c.put_many(&[entry("d", &[1.0; 4])]).unwrap();
    let got = c.get_many(&[key("b"), key("c"), key("d")]).unwrap();
    assert_eq!(
        got.iter().map(Option::is_some).collect::<Vec<_>>(),
        [true, false, true]
    );
}

#[test]
fn counters_persist_across_opens_and_clear_resets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap();
        c.put_many(&[entry("a", &[1.0]), entry("b", &[2.0])])
            .unwrap();
        c.record_lookups(3, 2);
    } // dropped: buffered counts are written
    {
        let c = EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap();
        c.record_lookups(1, 0);
        let s = c.stats().unwrap();
        assert_eq!((s.hits, s.misses, s.entries), (4, 2, 2), "{s:?}");
        assert_eq!(c.clear().unwrap(), 2);
        let s = c.stats().unwrap();
        assert_eq!((s.hits, s.misses, s.entries, s.bytes), (0, 0, 0, 0));
        assert!(c.get_many(&[key("a")]).unwrap()[0].is_none());
        c.put_many(&[entry("c", &[3.0])]).unwrap();
        assert_eq!(c.stats().unwrap().entries, 1);
    }
}

#[test]
fn a_store_of_another_layout_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(STORE_FILE)).unwrap();
    conn.execute("UPDATE meta SET value = 99 WHERE name = 'schema'", [])
        .unwrap();
    drop(conn);
    match EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()) {
        Err(CacheError::Version { found: 99, .. }) => {}
        other => panic!("expected a version error, got {other:?}"),
    }
}

#[test]
fn an_unwritable_folder_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    assert!(EmbeddedCache::open(&file, EmbeddedCacheOptions::default()).is_err());
}

#[test]
fn two_handles_in_one_process_share_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap();
    let b = EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap();
    a.put_many(&[entry("x", &[1.0])]).unwrap();
    assert!(b.get_many(&[key("x")]).unwrap()[0].is_some());
    b.put_many(&[entry("y", &[2.0])]).unwrap();
    assert!(a.get_many(&[key("y")]).unwrap()[0].is_some());
}

// ---------------------------------------------------------------------------------------------------------
// Several processes: this test binary re-runs itself with EMBEDKIT_CACHE_CHILD set.

const CHILD_ENV: &str = "EMBEDKIT_CACHE_MULTI_CHILD";
const PER_CHILD: usize = 1000;
const SHARED: usize = 50;

fn child_value(owner: usize, i: usize) -> Vec<f32> {
    vec![owner as f32, i as f32, 0.5, -1.0]
}

/// Not a test of its own: the body of a child process of `several_processes_read_and_write_at_once`.
#[test]
fn multi_process_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, id) = spec.split_once('|').expect("dir|id");
    let id: usize = id.parse().expect("child id");
    let c = EmbeddedCache::open(
        std::path::Path::new(dir),
        EmbeddedCacheOptions {
            busy_timeout: Duration::from_secs(30),
            ..Default::default()
        },
    )
    .expect("child opens the store");
    for batch in 0..PER_CHILD / 20 {
        let own: Vec<_> = (batch * 20..(batch + 1) * 20)
            .map(|i| entry(&format!("{id}-{i}"), &child_value(id, i)))
            .collect();
        c.put_many(&own).expect("child write");
        // Both children write the shared keys with the same values (as two processes computing one text).
        let shared: Vec<_> = (0..SHARED)
            .map(|i| entry(&format!("shared-{i}"), &child_value(999, i)))
            .collect();
        c.put_many(&shared).expect("child shared write");
        let keys: Vec<_> = (0..SHARED).map(|i| key(&format!("shared-{i}"))).collect();
        for (i, v) in c.get_many(&keys).expect("child read").iter().enumerate() {
            let v = v.as_ref().expect("shared entry present");
            assert_eq!(decode_f32(v, 4), Some(child_value(999, i)));
        }
        c.record_lookups(1, 1);
    }
}

#[test]
fn several_processes_read_and_write_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|id| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "multi_process_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_ENV, format!("{}|{id}", dir.path().display()))
                .output_async()
        })
        .collect();
    for (id, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child {id} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap();
    for id in 0..3 {
        let keys: Vec<_> = (0..PER_CHILD).map(|i| key(&format!("{id}-{i}"))).collect();
        for (i, v) in c.get_many(&keys).unwrap().iter().enumerate() {
            let v = v
                .as_ref()
                .unwrap_or_else(|| panic!("entry {id}-{i} missing"));
            assert_eq!(decode_f32(v, 4), Some(child_value(id, i)));
        }
    }
    let s = c.stats().unwrap();
    assert_eq!(s.entries, (3 * PER_CHILD + SHARED) as u64);
    let batches = (PER_CHILD / 20) as u64;
    assert_eq!((s.hits, s.misses), (3 * batches, 3 * batches));
}

/// `Command::spawn` with piped output, so `wait_with_output` collects it.
trait SpawnPiped {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning a child test process")
    }
}
