//! Loading a model holds at most about one layer's f32 tensors beside what stays loaded.
//!
//! The peak resident memory of `embedkit embed` was reached while loading (all-MiniLM-L6-v2: 203 MB to embed
//! one text, against 115 MB loaded): the weights file was memory-mapped (every page read stayed resident) and
//! every f32 tensor was read before the layers were packed. The loader now reads each tensor with positioned
//! reads and packs and drops one layer at a time. This test counts the bytes the process asks the heap for (a
//! counting global allocator: exact, independent of how the C allocator keeps freed memory). In f32 the packed
//! panels are as large as the tensors they replace, so the check bites in int8 and bf16: reading every layer
//! before packing peaked 33.5 MB above the loaded int8 model, against a bound of 14.2 MB. (A loader that maps
//! the file again is caught by `tensor_files`' truncation test, which a mapping would end with SIGBUS.)
//! The test is alone in its file because the counter is process-wide.

use embedkit_cpu::{Compute, CpuOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes currently allocated from the heap.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` has been since it was last reset.
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grow(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

fn shrink(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::SeqCst);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a move (old and new blocks both live for a moment), the most it can cost.
        grow(new_size);
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            shrink(new_size);
        } else {
            shrink(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Loads all-MiniLM-L6-v2 in each arithmetic and checks the load's peak heap use against what stays.
#[test]
fn loading_holds_about_one_layer_beside_the_loaded_model() {
    let dir = embedkit_sources::resolve(
        "all-MiniLM-L6-v2",
        &embedkit_sources::SourceConfig::from_env(),
    )
    .expect("fetching all-MiniLM-L6-v2");
    let config_path = dir.join("config.json");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("config.json"))
            .expect("config.json is JSON");
    let dim = |key: &str| config[key].as_u64().expect("config dimension") as usize;
    let (h, inter) = (dim("hidden_size"), dim("intermediate_size"));
    // One layer's f32 weights and biases: Q, K, V, O, up and down projections, two LayerNorms.
    let layer_bytes = 4 * (4 * h * h + 2 * h * inter + 4 * h + inter + h + 4 * h);
    for compute in [Compute::F32, Compute::Int8, Compute::Bf16] {
        let rss_peak_reset = reset_rss_peak();
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let options = CpuOptions {
            compute,
            threads: Some(1),
            ..Default::default()
        };
        let model = match embedkit_cpu::load_model("minilm", &dir, &options) {
            Ok(model) => model,
            // bf16 needs AVX512_BF16: elsewhere the refusal is the expected outcome.
            Err(e) if compute == Compute::Bf16 && e.to_string().contains("AVX512_BF16") => {
                eprintln!("bf16 skipped: {e}");
                continue;
            }
            Err(e) => panic!("loading {compute:?}: {e}"),
        };
        let after = LIVE.load(Ordering::SeqCst);
        let peak = PEAK.load(Ordering::SeqCst);
        let (kept, transient) = (after - before, peak - after);
        eprintln!(
            "{compute:?}: loaded model {:.1} MB, load peak {:.1} MB above it (one layer's f32: {:.1} MB)",
            kept as f64 / 1e6,
            transient as f64 / 1e6,
            layer_bytes as f64 / 1e6
        );
        // The counter sees the model: at least its 30522 x 384 f32 word embeddings.
        assert!(kept >= 4 * 30522 * h, "{compute:?}: only {kept} bytes kept");
        assert!(
            transient <= 2 * layer_bytes,
            "{compute:?}: loading peaked {transient} bytes above the loaded model, more than two layers' \
             f32 weights ({layer_bytes} bytes each): is the loader holding every tensor at once again?"
        );
        // Resident memory too (Linux): a mapped weights file stays resident until it is unmapped after the
        // load, so its pages would put the peak a whole file (90 MB) above the memory the model keeps.
        if rss_peak_reset && let Some((rss, hwm)) = rss_and_peak() {
            eprintln!(
                "{compute:?}: resident {:.1} MB after loading, peak {:.1} MB",
                rss as f64 / 1e6,
                hwm as f64 / 1e6
            );
            assert!(
                hwm - rss <= 4 * layer_bytes,
                "{compute:?}: resident memory peaked {} bytes above what stays after loading: is the file \
                 mapped again?",
                hwm - rss
            );
        }
        drop(model);
    }
}

/// Resets the kernel's record of this process's peak resident memory (`VmHWM`); false where it cannot.
fn reset_rss_peak() -> bool {
    // Writing 5 to clear_refs resets the peak (Linux 4.0+); refused or absent elsewhere.
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's resident memory now and its peak since the last reset, in bytes (Linux).
fn rss_and_peak() -> Option<(usize, usize)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<usize> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: usize = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
