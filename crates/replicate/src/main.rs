//! The `explr` binary: a thin dispatcher over the subcommands in `cli/`.

mod cli;

use clap::Parser;

/// Keeps freed memory in the process instead of returning it to the kernel after every training
/// step: with glibc's defaults each step faults ~0.5 GiB of fresh pages back in, about a fifth of
/// a CPU step's time (docs/PERFORMANCE.md). Same effect as MALLOC_TRIM_THRESHOLD_ and
/// MALLOC_MMAP_THRESHOLD_ set in the environment.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called once, before any
    // other thread exists, and its failure (return 0) leaves the defaults in place.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
