//! `cargo xtask test`: the project's test command, whole. It installs what the tests need from
//! the system when it is missing (the Slurm packages that `crates/replicate/tests/slurm.rs`
//! starts a one-node cluster with), then runs `cargo test --workspace` and the main job
//! (`cargo xtask replicate`: every manifest at the smoke profile against its golden). The
//! README names this command and `.ci/run` runs it, so CI can be no greener than a new user's
//! machine.

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Arguments of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Run the unit and integration tests only, not the main job afterwards.
    #[arg(long)]
    no_replicate: bool,
    /// Check for the system packages and install them, but run nothing.
    #[arg(long)]
    setup_only: bool,
    /// Arguments for `cargo test --workspace` (after `--`), e.g. `-- --test-threads 1`.
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

/// The programs the Slurm test runs, and the Debian packages that bring them.
const SLURM_TOOLS: [&str; 9] = [
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
];
const SLURM_PACKAGES: [&str; 4] = ["munge", "slurmctld", "slurmd", "slurm-client"];

/// The tools of `tools` that are neither on `PATH` nor in `/usr/sbin` (where Debian puts the
/// daemons, outside a normal user's `PATH`).
fn missing(tools: &[&'static str]) -> Vec<&'static str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    dirs.push("/usr/sbin".into());
    tools
        .iter()
        .copied()
        .filter(|tool| !dirs.iter().any(|d| d.join(tool).is_file()))
        .collect()
}

/// Runs `program args`, as root (through `sudo` when this user is not root).
fn as_root(program: &str, args: &[&str]) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    };
    let status = cmd
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Installs the Slurm packages when a tool of theirs is missing.
fn install_slurm() -> Result<()> {
    let absent = missing(&SLURM_TOOLS);
    if absent.is_empty() {
        return Ok(());
    }
    let manual = format!(
        "install the Debian packages by hand (`apt-get install -y --no-install-recommends {}`) \
         and run `cargo xtask test` again",
        SLURM_PACKAGES.join(" ")
    );
    eprintln!(
        "cargo xtask test: the Slurm test needs {} (not installed): installing the Debian \
         packages {}",
        absent.join(", "),
        SLURM_PACKAGES.join(" ")
    );
    if !missing(&["apt-get"]).is_empty() {
        bail!("apt-get is not available here: {manual}");
    }
    as_root("apt-get", &["update", "-qq"]).with_context(|| manual.clone())?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(SLURM_PACKAGES);
    as_root("apt-get", &install).with_context(|| manual.clone())?;
    let still = missing(&SLURM_TOOLS);
    if !still.is_empty() {
        bail!(
            "after installing, {} still cannot be found: {manual}",
            still.join(", ")
        );
    }
    Ok(())
}

/// Runs the test command.
pub fn run(args: &TestArgs) -> Result<()> {
    install_slurm()?;
    if args.setup_only {
        return Ok(());
    }
    let root = crate::workspace_root()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--workspace"])
        .args(&args.cargo_test_args)
        .status()
        .context("starting cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    if args.no_replicate {
        return Ok(());
    }
    eprintln!("cargo xtask test: the main job, every manifest at the smoke profile");
    crate::explr(&["replicate".into(), "--check".into()], false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_is_missing_unless_it_is_on_the_path_or_in_sbin() {
        // `sh` is on every machine this runs on; a name with a NUL-free random tail is not.
        assert!(missing(&["sh"]).is_empty());
        assert_eq!(
            missing(&["sh", "explr-no-such-tool-7f3a"]),
            vec!["explr-no-such-tool-7f3a"]
        );
    }
}
