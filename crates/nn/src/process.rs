//! Process-wide settings for the binaries that train with explr on the CPU.

/// Sets up the process for CPU training; a binary (the `explr` command, the benchmarks) calls
/// it once at the start of `main`, before it starts any thread. The library never calls it,
/// because all three settings are process-wide:
///
/// - **Freed memory stays in the process** instead of going back to the kernel after every
///   training step. With glibc's defaults, a step's activation-sized buffers are mapped fresh
///   and unmapped again, so each step faults ~0.5 GiB of new pages back in (PreResNet-20,
///   batch 128, f32: 0.55 s per step instead of 0.41 s; docs/PERFORMANCE.md). Same effect as
///   `MALLOC_TRIM_THRESHOLD_` and `MALLOC_MMAP_THRESHOLD_` in the environment; a no-op off glibc.
/// - **candle's own element-wise thread pool is limited to the calling thread**, unless
///   `CANDLE_NUM_THREADS` is already set. explr's heavy kernels (convolution, the fused norms)
///   run on Rayon's pool; candle's pool is a second set of workers that spin while they wait,
///   so the two compete for the same cores (the same step: 0.37 s instead of 0.41 s on 2 cores,
///   and 0.66 s instead of 0.82 s when another process is busy).
/// - **The calling thread is one of Rayon's workers**: the global pool is built here with it as
///   worker 0 (`RAYON_NUM_THREADS` threads in all, or one per CPU). The kernels' parallel loops
///   then start on a thread of the pool, which works on them itself, instead of handing each
///   loop to the pool and sleeping until it is done. A step runs hundreds of such loops; on
///   small networks the hand-offs cost several per cent (PreResNet-14 at width 8, f64, batch 32,
///   the cpu profile's network: 0.92 × the step's time; docs/PERFORMANCE.md). The calling
///   thread should then not block outside Rayon while the pool has work, or the pool runs one
///   worker short (explr's local executor runs one of its jobs on it for that reason). If the
///   global pool already exists, it stays as it is.
///
/// # Safety
///
/// Call it before any other thread of the process exists: it may set an environment variable,
/// and a concurrent read of the environment by another thread is undefined behaviour.
pub unsafe fn tune_cpu_process() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; its failure (return 0)
    // leaves the defaults in place.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees that no other thread exists (this function's
        // contract), so nothing reads the environment concurrently; candle reads the variable
        // when it first starts its pool.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    // Last: this starts the pool's other threads. An error means the global pool already
    // exists (something used Rayon first); it then stays as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global();
}
