//! `kill -9` in the middle of writing: the store opens afterwards, serves every committed batch, holds no
//! half-written batch, and takes new entries.
//!
//! The test binary re-runs itself as the writer (EMBEDKIT_CACHE_CRASH_CHILD set): it writes batches in a
//! loop and prints `committed N` after each commit; the parent reads those lines and SIGKILLs it.

use embedkit_cache::{
    Cache, CacheKey, EmbeddedCache, EmbeddedCacheOptions, STORE_FILE, decode_f32, encode_f32,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "EMBEDKIT_CACHE_CRASH_CHILD";
const BATCH: usize = 200;
const DIMS: usize = 96;

fn key(batch: usize, i: usize) -> CacheKey {
    CacheKey::from_raw(format!("crash:{batch}:{i}"))
}

fn value(batch: usize, i: usize) -> Vec<f32> {
    (0..DIMS)
        .map(|d| (batch * 1_000_000 + i * 1000 + d) as f32)
        .collect()
}

/// Not a test of its own: the writer process of `kill_9_while_writing`.
#[test]
fn crash_writer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, start) = spec.split_once('|').expect("dir|start");
    let start: usize = start.parse().expect("first batch");
    let cache = EmbeddedCache::open(std::path::Path::new(dir), EmbeddedCacheOptions::default())
        .expect("writer opens the store");
    let mut out = std::io::stdout().lock();
    for batch in start.. {
        let entries: Vec<_> = (0..BATCH)
            .map(|i| (key(batch, i), encode_f32(&value(batch, i))))
            .collect();
        cache.put_many(&entries).expect("writer commits a batch");
        cache.record_lookups(1, 0);
        writeln!(out, "committed {batch}").expect("writing to the parent");
        out.flush().expect("flushing to the parent");
    }
}

/// Batches fully present, and whether any batch is partly present (which would be corruption).
fn check_store(dir: &std::path::Path, upto: usize) -> (Vec<usize>, Option<usize>) {
    let cache = EmbeddedCache::open(dir, EmbeddedCacheOptions::default())
        .expect("the store opens after kill -9");
    let mut complete = Vec::new();
    let mut partial = None;
    for batch in 0..upto {
        let keys: Vec<_> = (0..BATCH).map(|i| key(batch, i)).collect();
        let got = cache.get_many(&keys).expect("reading after kill -9");
        let present = got.iter().filter(|v| v.is_some()).count();
        for (i, v) in got.iter().enumerate() {
            if let Some(v) = v {
                assert_eq!(
                    decode_f32(v, DIMS),
                    Some(value(batch, i)),
                    "entry {batch}:{i} is damaged"
                );
            }
        }
        if present == BATCH {
            complete.push(batch);
        } else if present > 0 {
            partial = Some(batch);
        }
    }
    // The running totals are kept in the same transactions as the rows, so they agree after a crash too.
    let stats = cache.stats().unwrap();
    assert_eq!(
        stats.entries,
        (complete.len() * BATCH) as u64,
        "entry count after the crash"
    );
    (complete, partial)
}

#[test]
fn kill_9_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut next = 0usize;
    let mut committed_total = 0usize;
    // Several kills at different points, on the same store; each round starts where the last one
    // committed, so every batch number is written by exactly one writer.
    for (round, kill_after) in [3usize, 11, 1, 25].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, format!("{}|{next}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the writer");
        let stdout = child.stdout.take().expect("writer stdout");
        let mut last_committed = None;
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading the writer");
            if let Some(n) = line.strip_prefix("committed ") {
                last_committed = Some(n.parse::<usize>().expect("batch number"));
                seen += 1;
                if seen >= kill_after {
                    // The writer is already inside its next transaction (it never pauses).
                    child.kill().expect("SIGKILL the writer");
                    break;
                }
            }
        }
        let status = child.wait().expect("reaping the writer");
        assert!(
            !status.success(),
            "round {round}: the writer must have been killed"
        );
        let last =
            last_committed.unwrap_or_else(|| panic!("round {round}: writer committed nothing"));
        // Batches up to `last` were reported committed. The writer may have committed a few more before
        // the signal landed (it runs ahead of the pipe), so the store must hold batches 0..=k for some
        // k >= last, with no gap and no batch partly written.
        let (complete, partial) = check_store(dir.path(), last + 500);
        assert_eq!(partial, None, "round {round}: a batch was half written");
        for b in 0..=last {
            assert!(
                complete.contains(&b),
                "round {round}: committed batch {b} lost"
            );
        }
        assert!(
            complete.iter().enumerate().all(|(i, &b)| i == b),
            "round {round}: batches with a gap: {complete:?}"
        );
        committed_total = complete.len();
        next = complete.last().map_or(0, |b| b + 1);
    }
    assert!(committed_total > 0);

    // The store takes new entries and passes SQLite's own integrity check.
    let cache = EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap();
    let fresh: Vec<_> = (0..BATCH)
        .map(|i| (key(9999, i), encode_f32(&value(9999, i))))
        .collect();
    cache.put_many(&fresh).unwrap();
    let keys: Vec<_> = (0..BATCH).map(|i| key(9999, i)).collect();
    assert!(cache.get_many(&keys).unwrap().iter().all(Option::is_some));
    assert_eq!(
        cache.stats().unwrap().entries,
        ((committed_total + 1) * BATCH) as u64
    );
    drop(cache);
    let conn = rusqlite::Connection::open(dir.path().join(STORE_FILE)).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
