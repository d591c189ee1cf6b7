//! `cargo xtask gpu-check`: the one prepared command for a machine with an NVIDIA GPU.
//!
//! 1. **parity**: the `cuda_parity` tests of explr-replicate (CPU against CUDA in f32 within
//!    1e-5 relative: the four norms forward and backward, `conv2d`, SGD steps, a PreResNet-8
//!    forward/backward), which write their comparisons as JSON to the file that
//!    `EXPLR_PARITY_JSON` names (next to the report: `gpu-check.parity.json`);
//! 2. **smoke**: every manifest at the smoke profile on the GPU (`explr replicate --device
//!    cuda`), checked against the goldens the CPU recorded;
//! 3. **timing**: a PreResNet-32 training step at batch 128 in f32 on the GPU, ours
//!    (`crates/zoo/examples/step_bench.rs`) next to the PyTorch twin
//!    (`scripts/pytorch/step_bench.py --device cuda`): images/s and the ratio;
//! 4. **e3**: one epoch of every E3 run at the paper profile
//!    (`explr replicate e3 --profile paper --device cuda --max-epochs 1`, CIFAR-10 needed).
//!
//! It writes a markdown report (default `target/gpu-check.md`) ready to paste into
//! docs/PERFORMANCE.md, rewritten after each part (a run stopped early keeps what it measured),
//! also when a part fails, and exits non-zero if any part failed. Each program runs under
//! `--part-timeout` and has its output echoed, indented, to stderr as it comes.
//!
//! Before anything it loads the NVIDIA driver and asks it for the GPU, and fails at once with a
//! clear message where there is none. A GPU machine may have no network and no Rust: then build
//! on any machine with the CUDA toolchain (`--build-only DIR`, no GPU needed; DIR/BUILD_INFO
//! records the commit and compute capability) and run the copied binaries there
//! (`DIR/xtask gpu-check --prebuilt DIR`, from the repository root). `scripts/gpu-bundle.sh`
//! wraps both ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::Value;

use explr_results::index::{IndexEntry, IndexError, ResultsIndex};

use crate::bench::{last_json_line, Measurement};
use crate::cuda;

/// The parts of the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// CPU/CUDA parity tests.
    Parity,
    /// Every manifest at the smoke profile on the GPU, against the (CPU-recorded) goldens.
    Smoke,
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
    /// Parts to skip (comma-separated: parity, smoke, timing, e3).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<Part>,
    /// Only build the CUDA binaries (needs the CUDA toolchain, not a GPU) and copy them, with
    /// this xtask, into DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "prebuilt")]
    pub build_only: Option<PathBuf>,
    /// Run the binaries that `--build-only` copied into DIR (no cargo, no toolkit needed).
    #[arg(long, value_name = "DIR")]
    pub prebuilt: Option<PathBuf>,
    /// Seconds each program of the check may run before it is killed and its part reported as
    /// failed (each step bench, the parity tests, the E3 epoch).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub part_timeout: u64,
}

impl GpuCheckArgs {
    fn part_timeout(&self) -> Duration {
        Duration::from_secs(self.part_timeout)
    }
}

/// The environment the check's programs run with (the library path).
type Env = [(&'static str, std::ffi::OsString)];

/// The file in a `--build-only` folder that says what the binaries were built from.
const BUILD_INFO: &str = "BUILD_INFO";

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

/// How a program the check started ended, and what it printed.
struct Finished {
    /// Its exit status; `None` when it was killed at the time limit.
    status: Option<ExitStatus>,
    /// The time limit it ran under.
    limit: Duration,
    stdout: String,
    stderr: String,
    /// Wall seconds from start to exit (or kill).
    seconds: f64,
}

impl Finished {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// How it ended, in words: "exit status: 1", "killed after the 300 s limit".
    fn ending(&self) -> String {
        match self.status {
            Some(s) => s.to_string(),
            None => format!(
                "killed after the {} s limit (--part-timeout)",
                self.limit.as_secs()
            ),
        }
    }

    /// `success` when it exited with success, else "**FAILED** (how it ended)".
    fn outcome(&self, success: &str) -> String {
        if self.ok() {
            success.to_string()
        } else {
            format!("**FAILED** ({})", self.ending())
        }
    }

    /// stdout then stderr, with a hint when a CUDA library could not be loaded.
    fn text(&self) -> String {
        let mut text = format!("{}{}", self.stdout, self.stderr);
        if text.contains("error while loading shared libraries") {
            text.push_str(
                "\n(gpu-check: a CUDA library is missing: install the CUDA toolkit or the \
                 nvidia-cublas/-cuda-runtime/-cuda-nvrtc/-curand wheels, or add their folder to \
                 LD_LIBRARY_PATH)\n",
            );
        }
        if self.status.is_none() {
            writeln!(text, "(gpu-check: {})", self.ending()).ok();
        }
        text
    }
}

/// Runs `cmd`, echoing its output to stderr line by line as it comes (so that a log shows
/// progress), and kills it once it has run for `limit`: one part that hangs must not take the
/// time of the others on a machine lent for minutes.
fn run_limited(cmd: &mut Command, what: &str, limit: Duration) -> Result<Finished> {
    eprintln!("gpu-check: {what} (at most {} s)…", limit.as_secs());
    let started = Instant::now();
    // Its own process group, so that the kill below also reaches what it started (which would
    // otherwise hold the pipes open, and the readers with them).
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = echo_lines(child.stdout.take().context("no stdout pipe")?);
    let stderr = echo_lines(child.stderr.take().context("no stderr pipe")?);
    let group = child.id();
    let kill_group = || {
        if let Ok(pid) = libc::pid_t::try_from(group) {
            // SAFETY: kill(2) with a negative pid signals that process group: the child's own
            // (process_group(0) above), whose id is the child's pid. No member left: ESRCH.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    };
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the child")? {
            break Some(status);
        }
        if started.elapsed() >= limit {
            kill_group();
            // Already exited in between is fine: the status is dropped either way.
            let _ = child.kill();
            child.wait().context("waiting for the killed child")?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever it left running would hold the pipes open and the readers below with them.
    kill_group();
    let seconds = started.elapsed().as_secs_f64();
    let join = |h: std::thread::JoinHandle<String>| h.join().unwrap_or_default();
    Ok(Finished {
        status,
        limit,
        stdout: join(stdout),
        stderr: join(stderr),
        seconds,
    })
}

/// A thread that copies `pipe` to stderr, each line indented, and returns all of it.
fn echo_lines(pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let (mut kept, mut line) = (String::new(), Vec::new());
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            eprint!("    {text}");
            if !text.ends_with('\n') {
                eprintln!();
            }
            kept.push_str(&text);
            line.clear();
        }
        kept
    })
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

impl Section {
    /// The section of a part whose program ended as `run` and whose output gave `found` rows:
    /// it passes when both hold, and otherwise ends with the last `tail` lines of the output.
    fn of_run(title: &str, mut body: String, run: &Finished, found: bool, tail: usize) -> Self {
        let passed = run.ok() && found;
        if !passed {
            body.push('\n');
            body.push_str(&tail_block(&run.text(), tail));
        }
        Self {
            title: title.into(),
            passed,
            body,
        }
    }
}

/// The environment variable that names the file the `cuda_parity` tests write their
/// comparisons to.
const PARITY_JSON_VAR: &str = "EXPLR_PARITY_JSON";

/// What the `cuda_parity` tests write to the file [`PARITY_JSON_VAR`] names
/// (`crates/replicate/tests/cuda_parity.rs`, `write_parity_json`).
#[derive(Debug, Deserialize, PartialEq)]
struct ParityResults {
    /// The relative difference each comparison must not exceed (the tests assert it).
    tolerance: f64,
    /// `case/output` → max|CPU − CUDA| / max|CPU|; `None` where it was not finite.
    relative: BTreeMap<String, Option<f64>>,
}

impl ParityResults {
    /// The results in `path`; `None` when there is no such file (no comparison was made).
    fn read(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display()))
    }

    /// The markdown table: each comparison, its value and whether it is within the tolerance.
    fn table(&self) -> String {
        let mut s = format!(
            "| comparison | max \\|CPU − CUDA\\| / max \\|CPU\\| | ≤ {:e} |\n|---|---|---|\n",
            self.tolerance
        );
        for (name, value) in &self.relative {
            let (shown, good) = match value {
                Some(v) => (format!("{v:.3e}"), *v <= self.tolerance),
                None => ("not finite".to_string(), false),
            };
            let good = if good { "yes" } else { "**no**" };
            let _ = writeln!(s, "| {name} | {shown} | {good} |");
        }
        s
    }
}

/// The parity tests, with [`PARITY_JSON_VAR`] set to `json` (removed first: a former check's
/// comparisons must not stand in for this one's); the section tabulates what they wrote there.
fn parity(bins: &Binaries, env: &Env, json: &Path, limit: Duration) -> Result<Section> {
    match std::fs::remove_file(json) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the former {}", json.display()))
        }
        _ => {}
    }
    let mut cmd = Command::new(&bins.parity);
    cmd.args(["--test-threads=1", "--nocapture"])
        .envs(env.iter().cloned())
        .env(PARITY_JSON_VAR, json);
    let run = run_limited(&mut cmd, "parity tests", limit)?;
    let mut body = format!(
        "`cuda_parity` (explr-replicate), {:.1} s: {}.\n\n",
        run.seconds,
        run.outcome("all tests pass")
    );
    let results = ParityResults::read(json);
    match &results {
        Ok(Some(results)) => body.push_str(&results.table()),
        Ok(None) => writeln!(
            body,
            "The tests wrote no comparison to `{}`.",
            json.display()
        )?,
        Err(e) => writeln!(body, "**{e:#}**")?,
    }
    let found = matches!(&results, Ok(Some(r)) if !r.relative.is_empty());
    Ok(Section::of_run(
        "Parity, CPU against CUDA (f32)",
        body,
        &run,
        found,
        40,
    ))
}

/// `explr replicate ARGS --device cuda:N --results-dir DIR` from the repository root, with
/// `DIR` emptied first: a former check's runs must not stand in for this one's.
fn replicate_on_gpu(
    root: &Path,
    bins: &Binaries,
    args: &GpuCheckArgs,
    env: &Env,
    replicate_args: &[&str],
    results: &Path,
) -> Result<Command> {
    if results.exists() {
        std::fs::remove_dir_all(results)
            .with_context(|| format!("removing the former results in {}", results.display()))?;
    }
    let mut cmd = Command::new(&bins.explr);
    cmd.current_dir(root)
        .arg("replicate")
        .args(replicate_args)
        .args(["--device", &format!("cuda:{}", args.gpu)])
        .arg("--results-dir")
        .arg(results)
        .envs(env.iter().cloned());
    Ok(cmd)
}

/// `explr replicate` at the smoke profile on the GPU: every manifest, checked against the
/// goldens that the CPU recorded (f64 except where a manifest says otherwise).
fn smoke(root: &Path, bins: &Binaries, args: &GpuCheckArgs, env: &Env) -> Result<Section> {
    let results = root.join("target/gpu-check/smoke");
    let mut cmd = replicate_on_gpu(root, bins, args, env, &["--check"], &results)?;
    let run = run_limited(
        &mut cmd,
        "every manifest at the smoke profile",
        args.part_timeout(),
    )?;
    let rows = index_rows(&results);
    let mut body = format!(
        "`explr replicate --device cuda:{}`: every manifest at the smoke profile, checked \
         against the goldens the CPU recorded; {:.1} s in all, {}.\n\n",
        args.gpu,
        run.seconds,
        run.outcome("all match")
    );
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            writeln!(body, "The results index could not be read: {e}.")?;
            Vec::new()
        }
    };
    if !rows.is_empty() {
        body.push_str("| claim | verdict | golden | s |\n|---|---|---|---|\n");
        for r in &rows {
            writeln!(
                body,
                "| {} | {} | {} | {:.1} |",
                r.id,
                r.verdict.as_str(),
                r.golden.as_str(),
                r.wall_s
            )?;
        }
    }
    Ok(Section::of_run(
        "Every manifest on the GPU, against the CPU goldens",
        body,
        &run,
        !rows.is_empty(),
        40,
    ))
}

/// The claims of the results index (`index.json`, written by `explr replicate` after each
/// manifest) in `results`, in the index's order: none when there is no index yet.
fn index_rows(results: &Path) -> Result<Vec<IndexEntry>, IndexError> {
    Ok(ResultsIndex::load(results)?.entries)
}

/// Runs a step bench under `limit` and reads the JSON object it prints last.
fn measure(cmd: &mut Command, what: &str, limit: Duration) -> Result<(Value, Measurement)> {
    let run = run_limited(cmd, what, limit)?;
    if !run.ok() {
        bail!(
            "{what} failed ({}):\n{}",
            run.ending(),
            tail_block(&run.text(), 20)
        );
    }
    let v = last_json_line(&run.stdout, what)?;
    let m = Measurement::from_json(&v)?;
    Ok((v, m))
}

fn timing(root: &Path, bins: &Binaries, args: &GpuCheckArgs, env: &Env) -> Result<Section> {
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
    let limit = args.part_timeout();
    let mut ours_cmd = Command::new(&bins.step_bench);
    ours_cmd.args(&common).envs(env.iter().cloned());
    let ours = measure(&mut ours_cmd, "step_bench (ours, CUDA)", limit);
    let mut torch_cmd = Command::new(&args.python);
    torch_cmd
        .current_dir(root)
        .arg(root.join("scripts/pytorch/step_bench.py"))
        .args(&common);
    let torch = measure(&mut torch_cmd, "step_bench.py (PyTorch, CUDA)", limit);
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
    match &ours {
        Ok((_, m)) => row("explr (candle CUDA)", m),
        Err(e) => failures.push(format!("ours: {e:#}")),
    }
    match &torch {
        Ok((v, m)) => {
            let tf32 = if v["cudnn_allow_tf32"].as_bool() == Some(true) {
                "allowed"
            } else {
                "off"
            };
            let label = format!(
                "PyTorch {} (cuDNN TF32 {tf32})",
                v["torch"].as_str().unwrap_or("?")
            );
            row(&label, m);
        }
        Err(e) => failures.push(format!("PyTorch: {e:#}")),
    }
    if let (Ok((_, o)), Ok((_, t))) = (&ours, &torch) {
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

fn e3(root: &Path, bins: &Binaries, args: &GpuCheckArgs, env: &Env) -> Result<Section> {
    let results = root.join("target/gpu-check/results");
    let e3_args = ["e3", "--profile", "paper", "--max-epochs", "1"];
    let mut cmd = replicate_on_gpu(root, bins, args, env, &e3_args, &results)?;
    if let Some(d) = &args.data_dir {
        cmd.arg("--data-dir").arg(d);
    }
    let run = run_limited(
        &mut cmd,
        "one epoch of E3 (paper profile)",
        args.part_timeout(),
    )?;
    let mut body = format!(
        "`explr replicate e3 --profile paper --device cuda:{} --max-epochs 1`: every run \
         (step decay and TEXP, 3 seeds) of PreResNet-32 on CIFAR-10 trains its first epoch; \
         {:.1} s in all, {}. Data: {}.\n\n",
        args.gpu,
        run.seconds,
        run.outcome("finished"),
        match &args.data_dir {
            Some(d) => format!("`{}`", d.strip_prefix(root).unwrap_or(d).display()),
            None => "CIFAR-10 from $EXPLR_DATA or the per-user cache".into(),
        }
    );
    let mut records = Vec::new();
    collect_metrics(&results.join("e3/paper"), &mut records);
    records.sort();
    if !records.is_empty() {
        body.push_str(
            "| run | steps | epoch wall (s) | train loss | train acc | test acc |\n\
             |---|---|---|---|---|---|\n",
        );
        for (name, line) in &records {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            writeln!(
                body,
                "| {name} | {} | {:.1} | {:.4} | {:.4} | {:.4} |",
                v["step"].as_u64().map_or("?".into(), |n| n.to_string()),
                f("wall_s"),
                f("train_loss"),
                f("train_acc"),
                f("test_acc")
            )?;
        }
    }
    Ok(Section::of_run(
        "One epoch of E3 at the paper profile",
        body,
        &run,
        !records.is_empty(),
        30,
    ))
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

/// `--build-only DIR`: builds the binaries and copies them, this xtask and a [`BUILD_INFO`]
/// file into `dir`.
fn build_only(root: &Path, dir: &Path) -> Result<()> {
    let bins = build(root)?;
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
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
    let info = BuildInfo::of_checkout(root);
    std::fs::write(dir.join(BUILD_INFO), info.to_text())
        .with_context(|| format!("writing {}", dir.join(BUILD_INFO).display()))?;
    eprintln!(
        "gpu-check: binaries of commit {} in {}; on the GPU machine, from the repository \
         root: {}/xtask gpu-check --prebuilt {}",
        info.commit,
        dir.display(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// What a `--build-only` folder was built from.
#[derive(Debug, PartialEq)]
struct BuildInfo {
    /// `git rev-parse --short HEAD`, with `+dirty` when tracked files had changed.
    commit: String,
    /// `CUDA_COMPUTE_CAP` at build time (candle's kernels are PTX for that architecture and
    /// load on GPUs of that compute capability or newer).
    compute_cap: Option<String>,
}

impl BuildInfo {
    /// What a build from the checkout at `root` now, with this environment, is built from.
    fn of_checkout(root: &Path) -> Self {
        Self {
            commit: git_commit(root),
            compute_cap: std::env::var("CUDA_COMPUTE_CAP").ok(),
        }
    }

    fn to_text(&self) -> String {
        format!(
            "commit {}\ncompute_cap {}\n",
            self.commit,
            self.compute_cap.as_deref().unwrap_or("unset")
        )
    }

    fn parse(text: &str) -> Self {
        let field = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.trim().to_string())
        };
        Self {
            commit: field("commit").unwrap_or_else(|| "unknown".into()),
            compute_cap: field("compute_cap").filter(|c| c != "unset"),
        }
    }
}

/// The checkout's commit, `+dirty` when tracked files differ from it; "unknown" without git
/// (a GPU machine may get a copy of the working tree without `.git`).
fn git_commit(root: &Path) -> String {
    let commit = probe_output(
        Command::new("git")
            .current_dir(root)
            .args(["rev-parse", "--short", "HEAD"]),
        "unknown",
    );
    let dirty = probe_output(
        Command::new("git").current_dir(root).args([
            "status",
            "--porcelain",
            "--untracked-files=no",
        ]),
        "",
    );
    if dirty.is_empty() {
        commit
    } else {
        format!("{commit}+dirty")
    }
}

/// Compute capability "9.0" (nvidia-smi) or "90" (`CUDA_COMPUTE_CAP`) as a number, 90.
fn compute_cap_number(text: &str) -> Option<u32> {
    let digits: String = text.chars().filter(|c| *c != '.').collect();
    digits.trim().parse().ok()
}

/// Writes `text` to `path` atomically ([`explr_io::write_atomic`]), so that a reader (or a run
/// killed mid-write) never sees half a report.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    Ok(explr_io::write_atomic(path, text.as_bytes())?)
}

/// The report: `header`, then one section per finished part.
fn report(header: &str, sections: &[Section]) -> String {
    let mut md = header.to_string();
    for s in sections {
        let verdict = if s.passed { "pass" } else { "FAIL" };
        md.push_str(&format!("#### {} — {verdict}\n\n{}\n", s.title, s.body));
    }
    md
}

/// The binaries of the check and what they were built from: those `--prebuilt` names, or
/// built now from the checkout at `root`.
fn binaries(root: &Path, args: &GpuCheckArgs) -> Result<(Binaries, BuildInfo)> {
    Ok(match &args.prebuilt {
        Some(dir) => {
            let bins = Binaries::in_dir(dir)?;
            let info = std::fs::read_to_string(dir.join(BUILD_INFO))
                .map(|t| BuildInfo::parse(&t))
                .unwrap_or(BuildInfo {
                    commit: "unknown (no BUILD_INFO)".into(),
                    compute_cap: None,
                });
            (bins, info)
        }
        None => (build(root)?, BuildInfo::of_checkout(root)),
    })
}

/// The report's header: the date, the commit, the GPU (of `gpus`) as nvidia-smi names it, the
/// compute capability `built` for and the CUDA library folders `libs`. An error when the GPU is
/// older than the binaries were built for.
fn header(args: &GpuCheckArgs, gpus: usize, built: &BuildInfo, libs: &[PathBuf]) -> Result<String> {
    let smi = |fields: &str, fallback: &str| {
        probe_output(
            Command::new("nvidia-smi").args([
                &format!("--query-gpu={fields}"),
                "--format=csv,noheader",
                &format!("--id={}", args.gpu),
            ]),
            fallback,
        )
    };
    let gpu_name = smi(
        "name,driver_version,memory.total",
        "unknown (nvidia-smi did not answer)",
    );
    let gpu_cap = smi("compute_cap", "");
    if let (Some(gpu), Some(built_for)) = (
        compute_cap_number(&gpu_cap),
        built.compute_cap.as_deref().and_then(compute_cap_number),
    ) {
        if gpu < built_for {
            bail!(
                "gpu-check: the binaries were built for compute capability {built_for} \
                 (CUDA_COMPUTE_CAP) but GPU {} has {gpu_cap}, and candle's kernels do not load \
                 on an older GPU: build again with CUDA_COMPUTE_CAP={gpu}",
                args.gpu
            );
        }
    }
    let date = probe_output(Command::new("date").args(["-u", "+%Y-%m-%d"]), "unknown");
    Ok(format!(
        "### GPU check ({date}, commit {})\n\n\
         `cargo xtask gpu-check` on GPU {} of {gpus}: {gpu_name}; binaries built for compute \
         capability {}. CUDA libraries searched in: {}.\n\n",
        built.commit,
        args.gpu,
        built
            .compute_cap
            .as_deref()
            .unwrap_or("(CUDA_COMPUTE_CAP unset)"),
        if libs.is_empty() {
            "the system's default paths only".to_string()
        } else {
            libs.iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))
}

/// `cargo xtask gpu-check`.
pub fn run(root: &Path, args: &GpuCheckArgs) -> Result<()> {
    if let Some(dir) = &args.build_only {
        return build_only(root, dir);
    }
    // No GPU, no point in building: say so at once.
    let gpus = cuda::probe_driver(args.gpu, "gpu-check")?;
    let (bins, built) = binaries(root, args)?;
    let libs = cuda_library_dirs(&args.python);
    let env = [("LD_LIBRARY_PATH", library_path(&libs))];
    let header = header(args, gpus, &built, &libs)?;
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    let parity_json = out.with_extension("parity.json");
    // The report is rewritten after each part: a run stopped early keeps what it measured.
    let mut sections = Vec::new();
    for part in [Part::Parity, Part::Smoke, Part::Timing, Part::E3] {
        if args.skip.contains(&part) {
            continue;
        }
        sections.push(match part {
            Part::Parity => parity(&bins, &env, &parity_json, args.part_timeout())?,
            Part::Smoke => smoke(root, &bins, args, &env)?,
            Part::Timing => timing(root, &bins, args, &env)?,
            Part::E3 => e3(root, &bins, args, &env)?,
        });
        write_atomically(&out, &report(&header, &sections))?;
    }
    let md = report(&header, &sections);
    write_atomically(&out, &md)?;
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

    /// `sh -c script` under `run_limited` with a limit of `secs`.
    fn sh(script: &str, secs: u64) -> Finished {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        run_limited(&mut cmd, script, Duration::from_secs(secs)).unwrap()
    }

    #[test]
    fn a_program_past_its_limit_is_killed_and_reported() {
        let run = sh("echo started; sleep 30", 1);
        assert!(!run.ok());
        assert!(run.status.is_none());
        assert_eq!(run.stdout, "started\n");
        assert!(run.ending().contains("the 1 s limit"), "{}", run.ending());
        assert!(run.text().contains("killed after"), "{}", run.text());
    }

    #[test]
    fn what_a_finished_program_leaves_running_does_not_block_the_check() {
        let started = Instant::now();
        let run = sh("sleep 30 & echo done", 60);
        assert!(run.ok());
        assert_eq!(run.stdout, "done\n");
        // Not a timing assertion on the machine's speed: without the group kill this call
        // waits for the 30 s sleep that holds the pipe.
        assert!(started.elapsed() < Duration::from_secs(25));
    }

    #[test]
    fn a_finished_program_keeps_both_streams_and_its_status() {
        let run = sh("echo out; echo err >&2; printf 'no newline'; exit 3", 60);
        assert!(!run.ok());
        assert_eq!(run.status.and_then(|s| s.code()), Some(3));
        assert_eq!(run.stdout, "out\nno newline");
        assert_eq!(run.stderr, "err\n");
        let run = sh("echo '{\"a\": 1}'", 60);
        assert!(run.ok());
        assert_eq!(last_json_line(&run.stdout, "passing").unwrap()["a"], 1);
    }

    #[test]
    fn build_info_round_trips_and_tolerates_missing_fields() {
        let info = BuildInfo {
            commit: "abc1234+dirty".into(),
            compute_cap: Some("90".into()),
        };
        assert_eq!(BuildInfo::parse(&info.to_text()), info);
        let unset = BuildInfo {
            commit: "abc1234".into(),
            compute_cap: None,
        };
        assert_eq!(BuildInfo::parse(&unset.to_text()), unset);
        assert_eq!(BuildInfo::parse("").commit, "unknown");
    }

    #[test]
    fn compute_capabilities_compare_across_spellings() {
        assert_eq!(compute_cap_number("9.0"), Some(90));
        assert_eq!(compute_cap_number("90"), Some(90));
        assert_eq!(compute_cap_number("8.6\n"), Some(86));
        assert_eq!(compute_cap_number(""), None);
        assert_eq!(compute_cap_number("[N/A]"), None);
    }

    #[test]
    fn the_report_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub/gpu-check.md");
        let section = |passed| Section {
            title: "Part".into(),
            passed,
            body: "body\n".into(),
        };
        write_atomically(&out, &report("# head\n\n", &[section(true)])).unwrap();
        write_atomically(
            &out,
            &report("# head\n\n", &[section(true), section(false)]),
        )
        .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.matches("#### Part").count(), 2, "{text}");
        assert!(text.contains("— FAIL"), "{text}");
        let left: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "a temporary file was left behind");
    }

    #[test]
    fn claims_are_read_from_the_results_index() {
        let dir = std::env::temp_dir().join(format!("explr-gpu-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(index_rows(&dir).unwrap().is_empty());
        std::fs::write(
            dir.join("index.json"),
            r#"{"entries": [
                {"manifest": "a1", "id": "A1", "profile": "smoke", "verdict": "pass",
                 "golden": "match", "checks": {}, "device": "cuda:0", "wall_s": 6.31},
                {"manifest": "e1", "id": "E1", "profile": "smoke", "verdict": "fail",
                 "golden": "differs", "checks": {}, "device": "cuda:0", "wall_s": 12.0}
            ]}"#,
        )
        .unwrap();
        let rows: Vec<(String, &str, &str, f64)> = index_rows(&dir)
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e.verdict.as_str(), e.golden.as_str(), e.wall_s))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("A1".into(), "pass", "match", 6.31),
                ("E1".into(), "fail", "differs", 12.0),
            ]
        );
        // An index that does not parse is an error, not an empty table.
        std::fs::write(dir.join("index.json"), "{").unwrap();
        assert!(index_rows(&dir).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn parity_results_are_read_from_the_tests_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gpu-check.parity.json");
        assert_eq!(ParityResults::read(&path).unwrap(), None);
        // As the test writes it (pretty-printed), with one value that was not finite.
        std::fs::write(
            &path,
            r#"{
  "relative": {
    "conv2d/dw": 3.21e-7,
    "norm/bn/y": 2.5e-5,
    "sgd/a": null
  },
  "tolerance": 1e-5
}
"#,
        )
        .unwrap();
        let results = ParityResults::read(&path).unwrap().unwrap();
        assert_eq!(
            results,
            ParityResults {
                tolerance: 1e-5,
                relative: BTreeMap::from([
                    ("conv2d/dw".into(), Some(3.21e-7)),
                    ("norm/bn/y".into(), Some(2.5e-5)),
                    ("sgd/a".into(), None),
                ]),
            }
        );
        assert_eq!(
            results.table(),
            "| comparison | max \\|CPU − CUDA\\| / max \\|CPU\\| | ≤ 1e-5 |\n|---|---|---|\n\
             | conv2d/dw | 3.210e-7 | yes |\n\
             | norm/bn/y | 2.500e-5 | **no** |\n\
             | sgd/a | not finite | **no** |\n"
        );
        std::fs::write(&path, r#"{"relative": {"conv2d/dw": 1e-7}}"#).unwrap();
        let err = ParityResults::read(&path).unwrap_err();
        assert!(
            format!("{err:#}").contains("missing field `tolerance`"),
            "{err:#}"
        );
    }

    #[test]
    fn tail_block_keeps_the_last_lines() {
        assert_eq!(tail_block("a\nb\nc", 2), "```\nb\nc\n```\n");
    }
}
