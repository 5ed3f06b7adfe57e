//! The C allocator's policy for the batch commands.

/// Has glibc's malloc serve every thread from one arena; a no-op on other C libraries. Must run before the
/// worker threads start (a thread keeps the arena of its first allocation).
///
/// glibc gives each thread that allocates its own arena (up to 8 per core), and freed memory stays in the arena
/// that served it, so the resident memory of `embedkit embed` held each thread's own high-water mark: over
/// 10,000 texts with all-MiniLM-L6-v2 on 2 threads, 168–173 MB resident for at most 100 MB of live heap
/// (heaptrack). With one arena it was 144 MB, at the same CPU time (40.3 vs 40.4 s user, three alternated runs;
/// docs/PERFORMANCE.md, Issue 19). The forward pass allocates little per batch (the thread-local tcache serves
/// its small blocks without the arena lock), which is why one arena costs the batch commands nothing; the server,
/// whose many request threads allocate all the time, keeps glibc's default.
pub(crate) fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter (taking glibc's own locks); it has no memory-safety
    // preconditions.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
