//! `cargo xtask`: thin project tasks; each lives in its own module or calls the `explr` runner.
//!
//! - `cargo xtask test [--no-replicate] [-- ARGS]`: the test command: installs the Slurm
//!   packages when missing, then `cargo test --workspace` and `cargo xtask replicate`.
//! - `cargo xtask replicate [IDS…] [--profile smoke|cpu|cpu-long|paper] [--device cpu|cuda]
//!   [--data-dir D] [--check|--bless] [--jobs N]`: replays the manifests in `experiments/`
//!   (default: all, smoke profile, CPU, synthetic data, checked against `golden/`).
//!   With `--device cuda[:N]` it builds `explr` with `--features cuda`, after checking for the
//!   CUDA compiler and the GPU driver.
//! - `cargo xtask fetch-data cifar10|cifar100 [--data-dir D]`: download, verify, install.
//! - `cargo xtask bench [--quick] [--configs F,…] [--steps N]`: training-step time, images/s
//!   and peak memory, ours against PyTorch back to back, as a table in `target/bench/step.md`.
//! - `cargo xtask check-cuda [--toolchain DIR] [--clippy]`: installs the CUDA compiler from
//!   PyPI (no GPU needed) and checks that the workspace compiles with `--features cuda`.
//! - `cargo xtask unused-deps`: fails when a `[workspace.dependencies]` entry or a member's
//!   dependency is not used (offline; CI runs it).
//! - `cargo xtask layout`: fails when a crate holds over a quarter of the source lines, a
//!   function outside explr-nn's kernels is over 120 lines, the `explr` binary's own code is
//!   500 lines or more, or a crate has a module cycle (CI runs it).
//! - `cargo xtask gpu-check`: on a GPU machine, CPU/CUDA parity, every manifest at the smoke
//!   profile against the goldens, a PreResNet-32 step against PyTorch and one E3 epoch at the
//!   paper profile, reported in `target/gpu-check.md`.

mod bench;
mod cuda;
mod deps;
mod fetch;
mod gpu_check;
mod layout;
mod test_command;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "explr project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Replay the paper's experiments (arguments go to `explr replicate`; see its --help).
    Replicate {
        /// Arguments for `explr replicate`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Download a dataset's official binary tarball, verify its MD5 and install it.
    FetchData {
        /// Which dataset.
        dataset: FetchDataset,
        /// Where to install (default: $EXPLR_DATA, else the per-user cache directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Time training steps of PreResNet-20/32 (ours, then the PyTorch twin) and print a table.
    Bench(bench::BenchArgs),
    /// Install the CUDA compiler from PyPI (no GPU needed) and check that the workspace
    /// compiles with `--features cuda`.
    CheckCuda(cuda::CheckCudaArgs),
    /// On a machine with an NVIDIA GPU: CPU/CUDA parity, every manifest at the smoke profile
    /// against the goldens, a PreResNet-32 training step against PyTorch, one E3 epoch at the
    /// paper profile; writes a markdown report.
    GpuCheck(gpu_check::GpuCheckArgs),
    /// The test command: install the system packages the tests need when they are missing
    /// (Slurm), then `cargo test --workspace` and the main job (`replicate`, smoke, checked).
    Test(test_command::TestArgs),
    /// Check the workspace's shape: no crate over a quarter of the source lines, no function
    /// over 120 lines outside explr-nn's kernels, a thin `explr` binary, no module cycle.
    Layout,
    /// Fail when a `[workspace.dependencies]` entry is no member's dependency, or a member's
    /// dependency is not used by the code that can use it (offline).
    UnusedDeps,
}

#[derive(Clone, Copy, ValueEnum)]
enum FetchDataset {
    Cifar10,
    Cifar100,
}

/// The workspace root: the parent of xtask's manifest directory, read at run time from the
/// `CARGO_MANIFEST_DIR` that `cargo run` sets. The compile-time value would be wrong when the
/// binary was built from another checkout sharing the target directory.
///
/// Run directly (a copied binary: `gpu-check --prebuilt`), with no `CARGO_MANIFEST_DIR`, it is
/// the current directory when that is a checkout of the workspace.
fn workspace_root() -> Result<std::path::PathBuf> {
    if std::env::var_os("CARGO_MANIFEST_DIR").is_none() {
        if let Ok(cwd) = std::env::current_dir() {
            if cwd.join("xtask/Cargo.toml").is_file() && cwd.join("experiments").is_dir() {
                return Ok(cwd);
            }
        }
    }
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Ok(manifest_dir
        .parent()
        .context("xtask lives inside the workspace")?
        .to_path_buf())
}

/// Runs the `explr` binary (dev profile, whose explr crates are optimized, so it shares the
/// test build) with `args`, from the workspace root; built with `--features cuda` when `cuda`.
fn explr(args: &[String], cuda: bool) -> Result<()> {
    let root = workspace_root()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let features: &[&str] = if cuda { &["--features", "cuda"] } else { &[] };
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["run", "--quiet", "--package", "explr-replicate"])
        .args(features)
        .args(["--bin", "explr", "--"])
        .args(args)
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!("explr {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Replicate { args } => {
            let cuda = cuda::wants_cuda(&args);
            if cuda {
                // Before a long build: is there a GPU to run on, and a compiler to build with?
                if !args.iter().any(|a| a == "--dry-run") {
                    let ordinal = cuda::cuda_ordinal(&args).unwrap_or(0);
                    cuda::probe_driver(ordinal, "replicate --device cuda")?;
                }
                cuda::check_build_toolchain()?;
            }
            // The goldens are checked by the runner itself (`--check`, which leaves insta's
            // pending snapshots for `cargo insta review`): at the smoke profile by default, at
            // any profile with --check; not when blessing, only validating, stopping runs early,
            // submitting to Slurm (the check comes with --collect) or running one unit.
            let flag = |f: &str| args.iter().any(|a| a == f);
            let value = |f: &str| {
                args.iter()
                    .position(|a| a == f)
                    .and_then(|i| args.get(i + 1))
                    .cloned()
            };
            let profile = value("--profile").unwrap_or_else(|| "smoke".into());
            let check = (flag("--check") || profile == "smoke")
                && !flag("--bless")
                && !flag("--dry-run")
                && value("--max-epochs").is_none()
                && (value("--executor").as_deref() != Some("slurm") || flag("--collect"))
                && value("--task").is_none()
                && !flag("--help");
            let mut forwarded = vec!["replicate".to_string()];
            forwarded.extend(args.iter().filter(|a| *a != "--check").cloned());
            if check {
                forwarded.push("--check".into());
            }
            explr(&forwarded, cuda)
        }
        Task::FetchData { dataset, data_dir } => {
            let spec = match dataset {
                FetchDataset::Cifar10 => fetch::FetchSpec::cifar10(),
                FetchDataset::Cifar100 => fetch::FetchSpec::cifar100(),
            };
            fetch::run(&spec, data_dir.as_deref())
        }
        Task::Bench(args) => {
            let root = workspace_root()?;
            bench::run(&root, &args)
        }
        Task::CheckCuda(args) => cuda::check_cuda(&workspace_root()?, &args),
        Task::GpuCheck(args) => gpu_check::run(&workspace_root()?, &args),
        Task::Test(args) => test_command::run(&args),
        Task::UnusedDeps => deps::run(&workspace_root()?),
        Task::Layout => layout::run(&workspace_root()?),
    }
}
