//! Keeps freed tensor memory in the process during training.
//!
//! Every candle op allocates its output, and a training step allocates and frees gigabytes of tensors of the
//! same few sizes. glibc serves blocks above 32 MiB (attention scores) by `mmap` and returns freed heap tops to
//! the kernel, so each step paid again for page faults and for the kernel clearing fresh pages: a quarter of
//! the profile. With `mmap` off and trimming off, freed blocks are reused from the heap instead.

/// Tunes glibc's allocator for the training loop; a no-op on other C libraries. Process-wide: only the `train`
/// entry point calls it. The price is that memory freed during training is not handed back to the system
/// until the process exits.
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters (it takes glibc's arena locks itself); it has no
    // memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
