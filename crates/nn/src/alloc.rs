//! Allocator tuning for the binaries that train with explr.

/// Keeps freed memory in the process instead of returning it to the kernel after every
/// training step. With glibc's defaults, the activation-sized buffers of a step are mapped
/// fresh and unmapped again, so each step faults ~0.5 GiB of new pages back in: about a fifth
/// of a CPU step's time (docs/PERFORMANCE.md). Same effect as setting `MALLOC_TRIM_THRESHOLD_`
/// and `MALLOC_MMAP_THRESHOLD_` in the environment; a no-op off glibc.
///
/// This changes process-wide allocator settings, so the library never calls it: a binary
/// (the `explr` command, the benchmarks) calls it once at the start of `main`, before it
/// starts any thread.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; its failure (return 0)
    // leaves the defaults in place.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}
