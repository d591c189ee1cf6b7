//! `cargo xtask gpu-check`: the one prepared command for a machine with an NVIDIA GPU.
//!
//! 1. **parity**: the `cuda_parity` tests of explr-replicate (CPU against CUDA in f32 within
//!    1e-5 relative: the four norms forward and backward, `conv2d`, SGD steps, a PreResNet-20
//!    forward/backward);
//! 2. **timing**: a PreResNet-32 training step at batch 128 in f32 on the GPU, ours
//!    (`crates/zoo/examples/step_bench.rs`) next to the PyTorch twin
//!    (`scripts/pytorch/step_bench.py --device cuda`): images/s and the ratio;
//! 3. **e3**: one epoch of every E3 run at the paper profile
//!    (`explr replicate e3 --profile paper --device cuda --max-epochs 1`, CIFAR-10 needed).
//!
//! It writes a markdown report (default `target/gpu-check.md`) ready to paste into
//! docs/PERFORMANCE.md, also when a part fails, and exits non-zero if any part failed.
//!
//! Before anything it loads the NVIDIA driver and asks it for the GPU, and fails at once with a
//! clear message where there is none. A GPU machine may have no network and no Rust: then build
//! on any machine with the CUDA toolchain (`--build-only DIR`, no GPU needed) and run the copied
//! binaries there (`DIR/xtask gpu-check --prebuilt DIR`, from the repository root).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::bench::{run_json, Measurement};
use crate::cuda;

/// The parts of the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// CPU/CUDA parity tests.
    Parity,
    /// PreResNet-32 step timing against PyTorch.
    Timing,
    /// One epoch of E3 at the paper profile.
    E3,
}

/// Options of `cargo xtask gpu-check`.
#[derive(Args, Debug)]
pub struct GpuCheckArgs {
    /// The report (markdown).
    #[arg(long, default_value = "target/gpu-check.md")]
    pub out: PathBuf,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// CIFAR-10 folder for the E3 epoch (else $EXPLR_DATA, else the per-user cache).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The Python interpreter whose torch has CUDA.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Timed training steps per side (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Parts to skip (comma-separated: parity, timing, e3).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<Part>,
    /// Only build the CUDA binaries (needs the CUDA toolchain, not a GPU) and copy them, with
    /// this xtask, into DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "prebuilt")]
    pub build_only: Option<PathBuf>,
    /// Run the binaries that `--build-only` copied into DIR (no cargo, no toolkit needed).
    #[arg(long, value_name = "DIR")]
    pub prebuilt: Option<PathBuf>,
}

/// The three programs the check runs.
struct Binaries {
    explr: PathBuf,
    parity: PathBuf,
    step_bench: PathBuf,
}

const NAMES: [&str; 3] = ["explr", "cuda_parity", "step_bench"];

impl Binaries {
    fn in_dir(dir: &Path) -> Result<Self> {
        let [explr, parity, step_bench] = NAMES.map(|n| dir.join(n));
        for p in [&explr, &parity, &step_bench] {
            if !p.is_file() {
                bail!(
                    "--prebuilt {}: no {} there; make the folder with \
                     `cargo xtask gpu-check --build-only {}`",
                    dir.display(),
                    p.display(),
                    dir.display()
                );
            }
        }
        Ok(Self {
            explr,
            parity,
            step_bench,
        })
    }
}

/// Runs cargo with `args` (`--message-format=json` added) and returns the executable of the
/// artifact named `target`.
fn cargo_artifact(root: &Path, args: &[&str], target: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("gpu-check: cargo {}", args.join(" "));
    let out = Command::new(cargo)
        .current_dir(root)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo")?;
    if !out.status.success() {
        bail!("cargo {} failed ({})", args.join(" "), out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == target)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo reported no `{target}` executable"))
}

/// Builds the three programs with `--features cuda` in the `gpu` profile (release, no debug
/// info, stripped: small enough to copy to a GPU machine).
fn build(root: &Path) -> Result<Binaries> {
    cuda::check_build_toolchain()?;
    let common = ["--profile", "gpu", "--features", "cuda"];
    // The subcommand first, then the shared options.
    let with = |command: &[&'static str]| -> Vec<&str> { [command, &common[..]].concat() };
    Ok(Binaries {
        explr: cargo_artifact(
            root,
            &with(&["build", "-p", "explr-replicate", "--bin", "explr"]),
            "explr",
        )?,
        parity: cargo_artifact(
            root,
            &with(&[
                "test",
                "--no-run",
                "-p",
                "explr-replicate",
                "--test",
                "cuda_parity",
            ]),
            "cuda_parity",
        )?,
        step_bench: cargo_artifact(
            root,
            &with(&["build", "-p", "explr-zoo", "--example", "step_bench"]),
            "step_bench",
        )?,
    })
}

/// Folders that hold the CUDA libraries a CUDA build of explr loads (cuBLAS, cuRAND, NVRTC,
/// the runtime) on a typical GPU machine: the toolkit's, and those of Python's `nvidia-*`
/// wheels (which PyTorch installs).
fn cuda_library_dirs(python: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(d) = std::env::var_os(var) {
            dirs.push(PathBuf::from(&d).join("lib64"));
            dirs.push(PathBuf::from(&d).join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    let probe = "import nvidia, os\n\
                 for p in nvidia.__path__:\n    \
                 for d in sorted(os.listdir(p)):\n        \
                 print(os.path.join(p, d, 'lib'))";
    if let Ok(out) = Command::new(python)
        .args(["-c", probe])
        .stderr(Stdio::null())
        .output()
    {
        dirs.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(PathBuf::from),
        );
    }
    let mut seen = Vec::new();
    for d in dirs {
        if d.is_dir() && !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen
}

/// `LD_LIBRARY_PATH` with `extra` after what is already there.
fn library_path(extra: &[PathBuf]) -> std::ffi::OsString {
    let mut all: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    all.extend(extra.iter().cloned());
    std::env::join_paths(all).unwrap_or_default()
}

/// Runs `cmd` and returns (success, stdout + stderr).
fn run_captured(cmd: &mut Command, what: &str) -> Result<(bool, String)> {
    eprintln!("gpu-check: {what}…");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if text.contains("error while loading shared libraries") {
        text.push_str(
            "\n(gpu-check: a CUDA library is missing: install the CUDA toolkit or the \
             nvidia-cublas/-cuda-runtime/-cuda-nvrtc/-curand wheels, or add their folder to \
             LD_LIBRARY_PATH)\n",
        );
    }
    Ok((out.status.success(), text))
}

/// The output of a short command, trimmed, or `fallback`.
fn probe_output(cmd: &mut Command, fallback: &str) -> String {
    cmd.stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// The last `n` lines of `text`, as a fenced block.
fn tail_block(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    format!("```\n{}\n```\n", tail.join("\n"))
}

/// One part's section of the report and whether it passed.
struct Section {
    title: String,
    passed: bool,
    body: String,
}

fn parity(bins: &Binaries, env: &[(&str, std::ffi::OsString)]) -> Result<Section> {
    let mut cmd = Command::new(&bins.parity);
    cmd.args(["--test-threads=1", "--nocapture"])
        .envs(env.iter().cloned());
    let started = Instant::now();
    let (ok, text) = run_captured(&mut cmd, "parity tests")?;
    let mut body = format!(
        "`cuda_parity` (explr-replicate), {:.1} s: {}.\n\n\
         | comparison | max \\|CPU − CUDA\\| / max \\|CPU\\| | ≤ 1e-5 |\n|---|---|---|\n",
        started.elapsed().as_secs_f64(),
        if ok { "all tests pass" } else { "**FAILED**" }
    );
    let mut rows = 0;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some("PARITY"), Some(name), Some(v)) = (it.next(), it.next(), it.next()) {
            let good = v.parse::<f64>().is_ok_and(|x| x <= 1e-5);
            writeln!(
                body,
                "| {name} | {v} | {} |",
                if good { "yes" } else { "**no**" }
            )?;
            rows += 1;
        }
    }
    if rows == 0 || !ok {
        body.push('\n');
        body.push_str(&tail_block(&text, 40));
    }
    Ok(Section {
        title: "Parity, CPU against CUDA (f32)".into(),
        passed: ok && rows > 0,
        body,
    })
}

fn timing(
    root: &Path,
    bins: &Binaries,
    args: &GpuCheckArgs,
    env: &[(&str, std::ffi::OsString)],
) -> Result<Section> {
    let device = format!("cuda:{}", args.gpu);
    let common: Vec<String> = [
        "--model",
        "preresnet-32",
        "--batch",
        "128",
        "--dtype",
        "f32",
        "--warmup",
        "3",
        "--steps",
        &args.steps.to_string(),
        "--device",
        &device,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut ours_cmd = Command::new(&bins.step_bench);
    ours_cmd.args(&common).envs(env.iter().cloned());
    eprintln!("gpu-check: timing ours…");
    let ours = run_json(ours_cmd, "step_bench (ours, CUDA)");
    let mut torch_cmd = Command::new(&args.python);
    torch_cmd
        .current_dir(root)
        .arg(root.join("scripts/pytorch/step_bench.py"))
        .args(&common);
    eprintln!("gpu-check: timing PyTorch…");
    let torch = run_json(torch_cmd, "step_bench.py (PyTorch, CUDA)");
    let mut body = format!(
        "PreResNet-32, BatchNorm, batch 128, f32, SGD (momentum 0.9, weight decay 5e-4), \
         3 warm-up and {} timed steps, each phase ended by a device synchronization; median \
         step.\n\n| side | step (ms) | forward (ms) | backward (ms) | optimizer (ms) | images/s |\n\
         |---|---|---|---|---|---|\n",
        args.steps
    );
    let mut row = |name: &str, m: &Measurement| {
        let _ = writeln!(
            body,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            m.median_s * 1e3,
            m.phases[0] * 1e3,
            m.phases[1] * 1e3,
            m.phases[2] * 1e3,
            m.images_per_s
        );
    };
    let mut failures = Vec::new();
    let ours_m = match &ours {
        Ok(v) => Some(Measurement::from_json(v)?),
        Err(e) => {
            failures.push(format!("ours: {e:#}"));
            None
        }
    };
    let torch_m = match &torch {
        Ok(v) => Some(Measurement::from_json(v)?),
        Err(e) => {
            failures.push(format!("PyTorch: {e:#}"));
            None
        }
    };
    if let Some(m) = &ours_m {
        row("explr (candle CUDA)", m);
    }
    if let Some(m) = &torch_m {
        let label = match &torch {
            Ok(v) => format!(
                "PyTorch {} (cuDNN TF32 {})",
                v["torch"].as_str().unwrap_or("?"),
                if v["cudnn_allow_tf32"].as_bool() == Some(true) {
                    "allowed"
                } else {
                    "off"
                }
            ),
            Err(_) => "PyTorch".into(),
        };
        row(&label, m);
    }
    if let (Some(o), Some(t)) = (&ours_m, &torch_m) {
        writeln!(
            body,
            "\nThroughput ratio explr / PyTorch: **{:.2}** (the goal is ≥ 1).",
            o.images_per_s / t.images_per_s
        )?;
    }
    for f in &failures {
        writeln!(body, "\n**failed**: {f}")?;
    }
    Ok(Section {
        title: "Training step, PreResNet-32 at batch 128".into(),
        passed: failures.is_empty(),
        body,
    })
}

fn e3(
    root: &Path,
    bins: &Binaries,
    args: &GpuCheckArgs,
    env: &[(&str, std::ffi::OsString)],
) -> Result<Section> {
    let results = root.join("target/gpu-check/results");
    let mut cmd = Command::new(&bins.explr);
    cmd.current_dir(root)
        .args(["replicate", "e3", "--profile", "paper", "--max-epochs", "1"])
        .args(["--device", &format!("cuda:{}", args.gpu)])
        .arg("--results-dir")
        .arg(&results)
        .envs(env.iter().cloned());
    if let Some(d) = &args.data_dir {
        cmd.arg("--data-dir").arg(d);
    }
    let started = Instant::now();
    let (ok, text) = run_captured(&mut cmd, "one epoch of E3 (paper profile)")?;
    let wall = started.elapsed().as_secs_f64();
    let mut body = format!(
        "`explr replicate e3 --profile paper --device cuda:{} --max-epochs 1`: every run \
         (step decay and TEXP, 3 seeds) of PreResNet-32 on CIFAR-10 trains its first epoch; \
         {wall:.1} s in all, {}.\n\n",
        args.gpu,
        if ok { "finished" } else { "**FAILED**" }
    );
    let mut records = Vec::new();
    collect_metrics(&results.join("e3/paper"), &mut records);
    records.sort();
    if !records.is_empty() {
        body.push_str(
            "| run | epoch wall (s) | train loss | train acc | test acc |\n|---|---|---|---|---|\n",
        );
        for (name, line) in &records {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            writeln!(
                body,
                "| {name} | {:.1} | {:.4} | {:.4} | {:.4} |",
                f("wall_s"),
                f("train_loss"),
                f("train_acc"),
                f("test_acc")
            )?;
        }
    }
    if !ok || records.is_empty() {
        body.push('\n');
        body.push_str(&tail_block(&text, 30));
    }
    Ok(Section {
        title: "One epoch of E3 at the paper profile".into(),
        passed: ok && !records.is_empty(),
        body,
    })
}

/// The first record of every `metrics.jsonl` under `dir`, named by its folder relative to `dir`.
fn collect_metrics(dir: &Path, out: &mut Vec<(String, String)>) {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.file_name().is_some_and(|n| n == "metrics.jsonl") {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    if let Some(line) = text.lines().next() {
                        let name = dir.strip_prefix(base).unwrap_or(dir).display().to_string();
                        out.push((name, line.to_string()));
                    }
                }
            }
        }
    }
    walk(dir, dir, out);
}

/// `cargo xtask gpu-check`.
pub fn run(root: &Path, args: &GpuCheckArgs) -> Result<()> {
    if let Some(dir) = &args.build_only {
        let bins = build(root)?;
        let dir = if dir.is_absolute() {
            dir.clone()
        } else {
            root.join(dir)
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let me = std::env::current_exe().context("finding this xtask's executable")?;
        for (from, name) in [
            (&bins.explr, NAMES[0]),
            (&bins.parity, NAMES[1]),
            (&bins.step_bench, NAMES[2]),
            (&me, "xtask"),
        ] {
            std::fs::copy(from, dir.join(name))
                .with_context(|| format!("copying {} to {}", from.display(), dir.display()))?;
        }
        eprintln!(
            "gpu-check: binaries in {}; on the GPU machine, from the repository root: \
             {}/xtask gpu-check --prebuilt {}",
            dir.display(),
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    // No GPU, no point in building: say so at once.
    let gpus = cuda::probe_driver(args.gpu, "gpu-check")?;
    let bins = match &args.prebuilt {
        Some(dir) => Binaries::in_dir(dir)?,
        None => build(root)?,
    };
    let libs = cuda_library_dirs(&args.python);
    let env = [("LD_LIBRARY_PATH", library_path(&libs))];

    let gpu_name = probe_output(
        Command::new("nvidia-smi").args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
            &format!("--id={}", args.gpu),
        ]),
        "unknown (nvidia-smi did not answer)",
    );
    let commit = probe_output(
        Command::new("git")
            .current_dir(root)
            .args(["rev-parse", "--short", "HEAD"]),
        "unknown",
    );
    let date = probe_output(Command::new("date").args(["-u", "+%Y-%m-%d"]), "unknown");
    let mut sections = Vec::new();
    if !args.skip.contains(&Part::Parity) {
        sections.push(parity(&bins, &env)?);
    }
    if !args.skip.contains(&Part::Timing) {
        sections.push(timing(root, &bins, args, &env)?);
    }
    if !args.skip.contains(&Part::E3) {
        sections.push(e3(root, &bins, args, &env)?);
    }

    let mut md = format!(
        "### GPU check ({date}, commit {commit})\n\n\
         `cargo xtask gpu-check` on GPU {} of {gpus}: {gpu_name}. CUDA libraries searched in: {}.\n\n",
        args.gpu,
        if libs.is_empty() {
            "the system's default paths only".to_string()
        } else {
            libs.iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for s in &sections {
        write!(
            md,
            "#### {} — {}\n\n{}\n",
            s.title,
            if s.passed { "pass" } else { "FAIL" },
            s.body
        )?;
    }
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    println!("{md}");
    let failed: Vec<&str> = sections
        .iter()
        .filter(|s| !s.passed)
        .map(|s| s.title.as_str())
        .collect();
    eprintln!("gpu-check: report written to {}", out.display());
    if !failed.is_empty() {
        bail!(
            "gpu-check: {} part(s) failed: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_collected_per_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("preresnet32/texp/seed-1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("metrics.jsonl"), "{\"epoch\":1}\n{\"epoch\":2}\n").unwrap();
        std::fs::write(dir.path().join("summary.yaml"), "x: 1\n").unwrap();
        let mut out = Vec::new();
        collect_metrics(dir.path(), &mut out);
        assert_eq!(
            out,
            vec![(
                "preresnet32/texp/seed-1".to_string(),
                "{\"epoch\":1}".to_string()
            )]
        );
    }

    #[test]
    fn prebuilt_folder_must_hold_every_binary() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("explr"), "").unwrap();
        let e = Binaries::in_dir(dir.path()).err().unwrap().to_string();
        assert!(e.contains("cuda_parity"), "{e}");
        assert!(e.contains("--build-only"), "{e}");
    }

    #[test]
    fn tail_block_keeps_the_last_lines() {
        assert_eq!(tail_block("a\nb\nc", 2), "```\nb\nc\n```\n");
    }
}
