//! CachedEmbedder over the on-disk store with real tiny models: only misses reach the model, order is kept,
//! repeats are computed once, keys follow the model and the options, concurrent misses are computed once,
//! and a failing cache never fails a call.

mod common;

use common::{Counting, assert_close, load_tiny, refs, sentences};
use embedkit_cache::{
    Cache, CacheError, CacheKey, CacheStats, CachedEmbedder, EmbeddedCache, EmbeddedCacheOptions,
    KeyBuilder, KeyOptions, PruneReport, encode_f32,
};
use embedkit_core::{Embedder, EncodeOptions};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

fn disk_cache(dir: &std::path::Path) -> Arc<dyn Cache> {
    Arc::new(EmbeddedCache::open(dir, EmbeddedCacheOptions::default()).unwrap())
}

#[test]
fn only_misses_reach_the_model_and_order_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let plain = load_tiny("bert-mean");
    let cached = CachedEmbedder::new(
        Counting::new(load_tiny("bert-mean")),
        disk_cache(dir.path()),
    );
    let o = EncodeOptions::default();
    let first = ["alpha beta", "gamma", "delta epsilon zeta"];
    let got = cached.embed(&first, &o).unwrap();
    assert_close("cold", &got, &plain.embed(&first, &o).unwrap(), 1e-5);
    assert_eq!(cached.inner().texts(), 3);

    let second = ["delta epsilon zeta", "new text", "alpha beta"];
    let got2 = cached.embed(&second, &o).unwrap();
    assert_eq!(cached.inner().texts(), 4, "only 'new text' is computed");
    assert_eq!(cached.inner().seen()[3], "new text");
    // Hits are the stored vectors, bit for bit, in the caller's order.
    assert_eq!(got2.row(0), got.row(2));
    assert_eq!(got2.row(2), got.row(0));
    assert_close("warm", &got2, &plain.embed(&second, &o).unwrap(), 1e-5);
    let c = cached.counters();
    assert_eq!((c.hits, c.misses, c.computed, c.errors), (2, 4, 4, 0));

    // batch_size does not change vectors, so it does not change keys.
    let o2 = EncodeOptions {
        batch_size: Some(1),
        ..o.clone()
    };
    cached.embed(&second, &o2).unwrap();
    assert_eq!(cached.inner().texts(), 4);
    // An empty batch passes through.
    assert_eq!(cached.embed(&[], &o).unwrap().rows(), 0);
}

#[test]
fn a_text_repeated_in_a_batch_is_computed_once() {
    let dir = tempfile::tempdir().unwrap();
    let cached = CachedEmbedder::new(
        Counting::new(load_tiny("bert-mean")),
        disk_cache(dir.path()),
    );
    let texts = ["same", "other", "same", "same", "other", "third"];
    let got = cached.embed(&texts, &EncodeOptions::default()).unwrap();
    assert_eq!(cached.inner().texts(), 3);
    assert_eq!(cached.inner().calls(), 1, "all misses in one call");
    assert_eq!(got.rows(), 6);
    assert_eq!(got.row(0), got.row(2));
    assert_eq!(got.row(0), got.row(3));
    assert_eq!(got.row(1), got.row(4));
    assert_ne!(got.row(0), got.row(1));
    assert_eq!(cached.counters().duplicates, 3);
    // Repeats of cached texts: no model call at all.
    let again = cached
        .embed(&["third", "third", "same"], &EncodeOptions::default())
        .unwrap();
    assert_eq!(cached.inner().calls(), 1);
    assert_eq!(again.row(0), got.row(5));
    assert_eq!(again.row(1), got.row(5));
}

#[test]
fn every_option_that_changes_vectors_gets_its_own_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk_cache(dir.path());
    let plain = load_tiny("bert-prompts");
    let cached = CachedEmbedder::new(Counting::new(load_tiny("bert-prompts")), cache.clone());
    let texts = ["what is a cache", "a cache keeps results"];
    let base = EncodeOptions::default();
    let variants = [
        base.clone(),
        EncodeOptions {
            normalize: Some(true),
            ..base.clone()
        },
        EncodeOptions {
            normalize: Some(false),
            ..base.clone()
        },
        EncodeOptions {
            truncate_dim: Some(8),
            ..base.clone()
        },
        EncodeOptions {
            prompt: Some("passage: ".into()),
            ..base.clone()
        },
        EncodeOptions {
            prompt: Some(String::new()),
            ..base.clone()
        },
        EncodeOptions {
            prompt_name: Some("passage".into()),
            ..base.clone()
        },
        EncodeOptions {
            max_length: Some(4),
            ..base.clone()
        },
    ];
    for (i, o) in variants.iter().enumerate() {
        let before = cached.inner().texts();
        let got = cached.embed(&texts, o).unwrap();
        assert_eq!(
            cached.inner().texts() - before,
            2,
            "variant {i} ({o:?}) must not be served from another variant's entries"
        );
        assert_close(
            &format!("variant {i}"),
            &got,
            &plain.embed(&texts, o).unwrap(),
            1e-5,
        );
    }
    // Each variant is now cached under its own key.
    for (i, o) in variants.iter().enumerate() {
        let got = cached.embed(&texts, o).unwrap();
        assert_close(
            &format!("variant {i} cached"),
            &got,
            &plain.embed(&texts, o).unwrap(),
            1e-5,
        );
    }
    assert_eq!(cached.inner().texts(), 2 * variants.len());
    assert_eq!(cache.stats().unwrap().entries, (2 * variants.len()) as u64);
}

#[test]
fn models_with_different_fingerprints_do_not_share_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk_cache(dir.path());
    let mean = CachedEmbedder::new(Counting::new(load_tiny("bert-mean")), cache.clone());
    let cls = CachedEmbedder::new(Counting::new(load_tiny("bert-cls")), cache.clone());
    assert_ne!(mean.fingerprint(), cls.fingerprint());
    let texts = ["one text", "another text"];
    let o = EncodeOptions::default();
    let a = mean.embed(&texts, &o).unwrap();
    let b = cls.embed(&texts, &o).unwrap();
    assert_eq!(cls.inner().texts(), 2, "bert-cls computed its own vectors");
    assert_ne!(a.row(0), b.row(0));
    assert_close(
        "cls",
        &b,
        &load_tiny("bert-cls").embed(&texts, &o).unwrap(),
        1e-5,
    );
    // Both are cached now, separately.
    assert_eq!(mean.embed(&texts, &o).unwrap(), a);
    assert_eq!(cls.embed(&texts, &o).unwrap(), b);
    assert_eq!((mean.inner().texts(), cls.inner().texts()), (2, 2));
}

#[test]
fn a_stored_value_of_the_wrong_shape_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk_cache(dir.path());
    let cached = CachedEmbedder::new(Counting::new(load_tiny("bert-mean")), cache.clone());
    let o = EncodeOptions::default();
    let key = KeyBuilder::new(
        cache.namespace(),
        &cached.fingerprint(),
        &KeyOptions::from_encode(&o),
    )
    .key("poisoned");
    // Someone stored a vector of other dims (or garbage) under the key.
    cache
        .put_many(&[(key.clone(), encode_f32(&[1.0, 2.0, 3.0]))])
        .unwrap();
    let got = cached.embed(&["poisoned"], &o).unwrap();
    assert_eq!(cached.inner().texts(), 1);
    assert_close(
        "recomputed",
        &got,
        &load_tiny("bert-mean").embed(&["poisoned"], &o).unwrap(),
        1e-5,
    );
    cache.put_many(&[(key, b"not a vector".to_vec())]).unwrap();
    cached.embed(&["poisoned"], &o).unwrap();
    assert_eq!(cached.inner().texts(), 2);
    // The recomputed value replaced the garbage.
    cached.embed(&["poisoned"], &o).unwrap();
    assert_eq!(cached.inner().texts(), 2);
}

#[test]
fn concurrent_misses_are_computed_once() {
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that the threads' calls overlap; the assertions are on counts only.
    let cached = Arc::new(CachedEmbedder::new(
        Counting::slow(load_tiny("bert-mean"), Duration::from_millis(300)),
        disk_cache(dir.path()),
    ));
    let all = sentences(12, "flight");
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let plain = load_tiny("bert-mean");
    let want = plain.embed(&refs(&all), &EncodeOptions::default()).unwrap();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let cached = cached.clone();
            let barrier = barrier.clone();
            let all = all.clone();
            std::thread::spawn(move || {
                // Overlapping windows of the 12 texts, in different orders.
                let mut mine: Vec<usize> = (0..8).map(|i| (t * 2 + i) % all.len()).collect();
                if t % 2 == 1 {
                    mine.reverse();
                }
                let texts: Vec<&str> = mine.iter().map(|&i| all[i].as_str()).collect();
                barrier.wait();
                let got = cached.embed(&texts, &EncodeOptions::default()).unwrap();
                (mine, got)
            })
        })
        .collect();
    for h in handles {
        let (mine, got) = h.join().unwrap();
        for (row, &i) in mine.iter().enumerate() {
            let diff = got
                .row(row)
                .iter()
                .zip(want.row(i))
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "text {i} wrong by {diff}");
        }
    }
    let seen = cached.inner().seen();
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        seen.len(),
        distinct.len(),
        "some text reached the model twice: {seen:?}"
    );
    assert_eq!(distinct.len(), all.len());
    let c = cached.counters();
    assert_eq!(c.computed, all.len() as u64);
    assert_eq!(c.errors, 0);
}

/// A cache that fails while `broken` is set, and otherwise keeps entries in memory.
#[derive(Default)]
struct Flaky {
    broken: AtomicBool,
    map: Mutex<std::collections::HashMap<CacheKey, Vec<u8>>>,
    calls: AtomicUsize,
}

impl Flaky {
    fn fail(&self) -> Result<(), CacheError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            Err(CacheError::Unavailable {
                addr: "flaky".into(),
                last: "down for the test".into(),
                retry_in: Duration::ZERO,
            })
        } else {
            Ok(())
        }
    }
}

impl Cache for Flaky {
    fn describe(&self) -> String {
        "flaky".into()
    }
    fn namespace(&self) -> &str {
        "flaky"
    }
    fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        self.fail()?;
        let map = self.map.lock().unwrap();
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }
    fn put_many(&self, entries: &[(CacheKey, Vec<u8>)]) -> Result<(), CacheError> {
        self.fail()?;
        self.map.lock().unwrap().extend(entries.iter().cloned());
        Ok(())
    }
    fn stats(&self) -> Result<CacheStats, CacheError> {
        self.fail()?;
        Ok(CacheStats::default())
    }
    fn clear(&self) -> Result<u64, CacheError> {
        self.fail()?;
        Ok(0)
    }
    fn prune(&self) -> Result<PruneReport, CacheError> {
        self.fail()?;
        Ok(PruneReport::default())
    }
}

#[test]
fn a_failing_cache_never_fails_a_call_and_warns_once_per_outage() {
    let flaky = Arc::new(Flaky::default());
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let w = warnings.clone();
    let cached = CachedEmbedder::new(Counting::new(load_tiny("bert-mean")), flaky.clone())
        .with_warn_hook(Arc::new(move |m| w.lock().unwrap().push(m.to_string())));
    let plain = load_tiny("bert-mean");
    let o = EncodeOptions::default();
    let texts = ["a", "b", "c"];
    let want = plain.embed(&texts, &o).unwrap();

    flaky.broken.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_close("broken", &cached.embed(&texts, &o).unwrap(), &want, 1e-5);
    }
    assert_eq!(
        cached.inner().texts(),
        9,
        "everything computed while the cache is down"
    );
    assert_eq!(
        cached.counters().errors,
        6,
        "a failed get and a failed put per call"
    );
    assert_eq!(
        warnings.lock().unwrap().len(),
        1,
        "{:?}",
        warnings.lock().unwrap()
    );
    assert!(warnings.lock().unwrap()[0].contains("flaky"));

    flaky.broken.store(false, Ordering::SeqCst);
    assert_close("back", &cached.embed(&texts, &o).unwrap(), &want, 1e-5);
    assert_eq!(cached.inner().texts(), 12);
    assert_eq!(cached.embed(&texts, &o).unwrap().rows(), 3);
    assert_eq!(cached.inner().texts(), 12, "caching resumed");
    let msgs = warnings.lock().unwrap().clone();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[1].contains("works again"));

    flaky.broken.store(true, Ordering::SeqCst);
    cached.embed(&texts, &o).unwrap();
    assert_eq!(
        warnings.lock().unwrap().len(),
        3,
        "a new outage warns again"
    );
}

#[test]
fn a_model_error_is_returned_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk_cache(dir.path());
    let cached = CachedEmbedder::new(load_tiny("bert-mean"), cache.clone());
    let bad = EncodeOptions {
        prompt_name: Some("no-such-prompt".into()),
        ..Default::default()
    };
    assert!(cached.embed(&["x"], &bad).is_err());
    assert_eq!(cache.stats().unwrap().entries, 0);
    // The failed flight was released: the same text embeds fine afterwards.
    assert_eq!(
        cached
            .embed(&["x"], &EncodeOptions::default())
            .unwrap()
            .rows(),
        1
    );
}

/// Claims 3 dims but returns 2: its rows must never be mixed with cached ones.
struct WrongDims;

impl Embedder for WrongDims {
    fn name(&self) -> &str {
        "wrong-dims"
    }
    fn dims(&self) -> usize {
        3
    }
    fn embed(
        &self,
        texts: &[&str],
        _: &EncodeOptions,
    ) -> Result<embedkit_core::Embeddings, embedkit_core::EmbedError> {
        let data = texts.iter().flat_map(|t| [t.len() as f32, 1.0]).collect();
        Ok(embedkit_core::Embeddings::new(data, texts.len(), 2).unwrap())
    }
}

#[test]
fn an_embedder_whose_dims_lie_is_answered_uncached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = disk_cache(dir.path());
    let cached = CachedEmbedder::new(Counting::new(WrongDims), cache.clone());
    let got = cached
        .embed(&["ab", "abc", "ab"], &EncodeOptions::default())
        .unwrap();
    assert_eq!(got.dims(), 2);
    assert_eq!(got.row(0), &[2.0, 1.0]);
    assert_eq!(got.row(1), &[3.0, 1.0]);
    assert_eq!(got.row(2), &[2.0, 1.0]);
    assert_eq!(
        cache.stats().unwrap().entries,
        0,
        "nothing of the wrong shape stored"
    );
    let got = cached.embed(&["x"], &EncodeOptions::default()).unwrap();
    assert_eq!(got.row(0), &[1.0, 1.0]);
}
