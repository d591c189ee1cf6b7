//! `cargo xtask`: thin developer commands that build and call the `explr` runner.
//!
//! - `cargo xtask replicate [IDS…] [--profile smoke|cpu|paper] [--device cpu|cuda] [--data-dir D]
//!   [--check|--bless] [--jobs N]`: replays the manifests in `experiments/` (default: all, smoke
//!   profile, CPU, synthetic data, checked against `golden/`).

use std::process::Command;

use anyhow::{bail, Context, Result};

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs the `explr` binary (built in the dev profile, whose explr crates are optimized) with
/// `args`, from the workspace root.
fn explr(args: &[String], features: &[&str]) -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives inside the workspace")?;
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root).args([
        "run",
        "--quiet",
        "--package",
        "explr-replicate",
        "--bin",
        "explr",
    ]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    cmd.arg("--").args(args);
    let status = cmd.status().context("starting cargo")?;
    if !status.success() {
        bail!("explr {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn usage() -> &'static str {
    "usage: cargo xtask <command> [args]\n\
     commands:\n  \
     replicate [IDS…] [--profile smoke|cpu|paper] [--device cpu|cuda] [--data-dir D] [--check|--bless] [--jobs N]\n"
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprint!("{}", usage());
        bail!("no command given");
    }
    let command = args.remove(0);
    match command.as_str() {
        "replicate" => {
            let mut forwarded = vec!["replicate".to_string()];
            forwarded.extend(args);
            explr(&forwarded, &[])
        }
        "help" | "--help" | "-h" => {
            print!("{}", usage());
            Ok(())
        }
        other => {
            eprint!("{}", usage());
            bail!("unknown command `{other}`")
        }
    }
}
