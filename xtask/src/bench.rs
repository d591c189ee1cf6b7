//! `cargo xtask bench`: the training-step benchmark, ours against PyTorch on the same machine,
//! and both against the machine's peak.
//!
//! For every configuration (model × batch × dtype) it runs `crates/zoo/examples/step_bench.rs`
//! once per *variant* of our side (a cargo profile × a convolution kernel set,
//! `explr_nn::ConvKernels`) and its twin `scripts/pytorch/step_bench.py` once, in rounds whose
//! order rotates by one place each round, so that no side always runs first or last on a
//! machine whose load drifts. One process per configuration, side and round, so each peak
//! resident size is that run's own. Both programs print one JSON object; this module turns them
//! into markdown tables (step time with its spread over the rounds, the ratios and the goals they
//! meet, the profiles against each other, and a roofline: FLOPs per phase, GFLOP/s and the
//! fraction of the machine's peak that `step_bench --peak` measures), prints them and writes
//! them, with every run's JSON and the load average at its start, to `target/bench/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::Value;

/// Options of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Fewer configurations (PreResNet-20 only) and steps (1 warm-up, 3 timed).
    #[arg(long)]
    pub quick: bool,
    /// Keep only configurations whose name (`preresnet-20/b128/f32`, `preresnet-14/w8/b32/f64`)
    /// contains one of these comma-separated substrings, e.g. `--configs b128/f32,preresnet-32`.
    #[arg(long, value_delimiter = ',')]
    pub configs: Vec<String>,
    /// Warm-up steps per run (default 2; 1 with --quick).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed steps per run (default 10; 3 with --quick).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Rounds per configuration: each runs every variant of our side and PyTorch once, the
    /// order rotated by one place per round. Tables show the median over the rounds with the
    /// range (more rounds, less noise).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Threads on both sides (RAYON_NUM_THREADS for ours, torch.set_num_threads for PyTorch).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Cargo profiles of our side, comma-separated: `release`, `dev` (the build `cargo test` and
    /// `cargo xtask replicate` share), or `dev,release` to compare them in one run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "release")]
    pub profile: Vec<BuildProfile>,
    /// Convolution kernel sets of our side, comma-separated: `detected` (the widest this CPU
    /// runs), `all`, or any of `avx512`, `avx2`, `im2col`. A set this CPU lacks is reported as
    /// not measured.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "detected")]
    pub kernels: Vec<KernelsArg>,
    /// The Python interpreter that has torch.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Run only our side (no Python needed; the table has no PyTorch columns filled).
    #[arg(long)]
    pub ours_only: bool,
}

/// Which cargo profile builds the example.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BuildProfile {
    /// `cargo build --release`.
    Release,
    /// The workspace's dev profile (shared with `cargo test` and `cargo xtask replicate`).
    Dev,
}

impl BuildProfile {
    /// The cargo profile's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "dev",
        }
    }
}

/// A `--kernels` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelsArg {
    /// The widest set this CPU runs (what explr uses by default).
    Detected,
    /// Every set, each forced in turn.
    All,
    /// Direct kernels, 512-bit vectors.
    Avx512,
    /// Direct kernels, 256-bit vectors with FMA.
    Avx2,
    /// im2col + gemm.
    Im2col,
}

/// Every kernel set, widest first, as `step_bench --kernels` names them.
const KERNEL_SETS: [&str; 3] = ["avx512", "avx2", "im2col"];

/// The kernel sets `args` asks for, in [`KERNEL_SETS`] order, split into those this CPU runs
/// (`supported`; `detected` is the widest) and those it does not.
pub fn resolve_kernels(
    args: &[KernelsArg],
    supported: &[String],
    detected: &str,
) -> (Vec<String>, Vec<String>) {
    let wanted = |set: &str| {
        args.iter().any(|a| match a {
            KernelsArg::Detected => set == detected,
            KernelsArg::All => true,
            KernelsArg::Avx512 => set == "avx512",
            KernelsArg::Avx2 => set == "avx2",
            KernelsArg::Im2col => set == "im2col",
        })
    };
    KERNEL_SETS
        .iter()
        .filter(|s| wanted(s))
        .map(|s| s.to_string())
        .partition(|s| supported.contains(s))
}

/// One benchmarked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `ARCH-DEPTH`, as both step_bench programs take it.
    pub model: String,
    /// The base width (`--width`), `None` for the architecture's own (16 for the ResNets).
    pub width: Option<usize>,
    /// Batch size.
    pub batch: usize,
    /// `f32` or `f64`.
    pub dtype: &'static str,
}

impl Config {
    /// `preresnet-20/b128/f32`, or with a width `preresnet-14/w8/b32/f64`: what `--configs`
    /// matches against.
    pub fn name(&self) -> String {
        let width = self.width.map(|w| format!("/w{w}")).unwrap_or_default();
        format!("{}{width}/b{}/{}", self.model, self.batch, self.dtype)
    }

    fn args(&self, warmup: usize, steps: usize) -> Vec<String> {
        let width = self.width.map(|w| vec!["--width".into(), w.to_string()]);
        [
            "--model".into(),
            self.model.clone(),
            "--batch".into(),
            self.batch.to_string(),
            "--dtype".into(),
            self.dtype.into(),
            "--warmup".into(),
            warmup.to_string(),
            "--steps".into(),
            steps.to_string(),
        ]
        .into_iter()
        .chain(width.into_iter().flatten())
        .collect()
    }
}

/// The network the cpu profile's training claims train (experiments/*.yaml): PreResNet-14 at
/// width 8 (8, 16 and 32 channels), batch 32, float64.
const CPU_PROFILE_NETWORK: (&str, usize, usize, &str) = ("preresnet-14", 8, 32, "f64");

/// The issue's matrix (PreResNet-20 and -32, batch 128 and 32, f32 and f64) and the cpu
/// profile's network ([`CPU_PROFILE_NETWORK`]), or PreResNet-20 only with `quick`, filtered by
/// `filters` (a config is kept if its name contains any filter; no filters keeps all).
pub fn configs(quick: bool, filters: &[String]) -> Vec<Config> {
    let models: &[&str] = if quick {
        &["preresnet-20"]
    } else {
        &["preresnet-20", "preresnet-32"]
    };
    let mut out = Vec::new();
    for model in models {
        for batch in [128, 32] {
            for dtype in ["f32", "f64"] {
                out.push(Config {
                    model: (*model).into(),
                    width: None,
                    batch,
                    dtype,
                });
            }
        }
    }
    if !quick {
        let (model, width, batch, dtype) = CPU_PROFILE_NETWORK;
        out.push(Config {
            model: model.into(),
            width: Some(width),
            batch,
            dtype,
        });
    }
    out.retain(|c| {
        let name = c.name();
        filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
    });
    out
}

/// Our side in one build: a cargo profile and a convolution kernel set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The profile the executable was built with.
    pub profile: BuildProfile,
    /// The `--kernels` it runs with.
    pub kernels: String,
}

impl Variant {
    /// `release / avx2`.
    pub fn label(&self) -> String {
        format!("{} / {}", self.profile.name(), self.kernels)
    }
}

/// What one run measured (the step_bench JSON keys these tables use).
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Median seconds per training step.
    pub median_s: f64,
    /// Fastest step, seconds: on a loaded machine the least disturbed estimate of the cost.
    pub min_s: f64,
    /// batch / median_s.
    pub images_per_s: f64,
    /// Peak resident set (VmHWM), MiB.
    pub peak_rss_mb: f64,
    /// Median forward + loss, backward and optimizer seconds.
    pub phases: [f64; 3],
    /// Floating-point operations of one step's forward and backward pass, counted from the
    /// layer shapes (absent where the program does not count them, e.g. on a GPU).
    pub flops: Option<[f64; 2]>,
}

impl Measurement {
    /// Reads the fields from a step_bench JSON object.
    pub fn from_json(v: &Value) -> Result<Self> {
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .with_context(|| format!("step_bench output has no number `{k}`: {v}"))
        };
        let flops = match (v.get("flops_forward"), v.get("flops_backward")) {
            (None, None) => None,
            _ => Some([num("flops_forward")?, num("flops_backward")?]),
        };
        Ok(Self {
            median_s: num("median_s")?,
            min_s: num("min_s")?,
            images_per_s: num("images_per_s")?,
            peak_rss_mb: num("peak_rss_mb")?,
            phases: [num("forward_s")?, num("backward_s")?, num("optimizer_s")?],
            flops,
        })
    }
}

/// The median of `values` (the mean of the middle two for an even count; NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Median over the rounds with the range: `0.552 (0.531–0.601)`; one value alone.
fn spread(values: &[f64], digits: usize) -> String {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    match values.len() {
        0 => "–".into(),
        1 => format!("{:.digits$}", values[0]),
        _ => format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(values)),
    }
}

/// One side's runs of one configuration, a measurement per round.
#[derive(Clone, Debug, Default)]
pub struct Rounds(pub Vec<Measurement>);

impl Rounds {
    fn each(&self, f: impl Fn(&Measurement) -> f64) -> Vec<f64> {
        self.0.iter().map(f).collect()
    }

    fn median(&self, f: impl Fn(&Measurement) -> f64) -> f64 {
        median(&self.each(f))
    }

    fn min_step(&self) -> f64 {
        self.each(|m| m.min_s)
            .into_iter()
            .fold(f64::INFINITY, f64::min)
    }

    fn peak_rss(&self) -> f64 {
        self.each(|m| m.peak_rss_mb).into_iter().fold(0.0, f64::max)
    }

    /// Round by round `self / other` of `f` (rounds paired in order: they ran side by side).
    fn paired(&self, other: &Rounds, f: impl Fn(&Measurement) -> f64) -> Vec<f64> {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| f(a) / f(b))
            .collect()
    }

    /// The FLOP count of the runs, if they agree (they count the same shapes).
    fn flops(&self) -> Option<[f64; 2]> {
        let first = self.0.first()?.flops?;
        self.0
            .iter()
            .all(|m| m.flops == Some(first))
            .then_some(first)
    }
}

/// One configuration's results: each variant of our side, PyTorch (absent with --ours-only),
/// and the load averages at the start of its runs.
#[derive(Clone, Debug)]
pub struct Row {
    /// The configuration.
    pub config: Config,
    /// Our side, per variant in the order of [`Report::variants`].
    pub ours: Vec<Rounds>,
    /// PyTorch's side.
    pub torch: Option<Rounds>,
    /// 1-minute load average at the start of each run.
    pub loads: Vec<f64>,
}

/// The machine's peak, GFLOP/s, as `step_bench --peak` measured it, for the widest vector
/// instructions the CPU has.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    /// The instruction set (`avx512`, `avx2`).
    pub isa: String,
    /// f32 GFLOP/s.
    pub f32: f64,
    /// f64 GFLOP/s.
    pub f64: f64,
}

impl Peak {
    /// The peak of the widest instruction set in a `--peak` JSON object (`None` when the CPU
    /// has no vector FMA the microkernel knows).
    pub fn from_json(v: &Value) -> Option<Self> {
        let gflops = v.get("gflops")?;
        KERNEL_SETS.iter().find_map(|isa| {
            let g = gflops.get(*isa)?;
            Some(Self {
                isa: (*isa).into(),
                f32: g.get("f32")?.as_f64()?,
                f64: g.get("f64")?.as_f64()?,
            })
        })
    }

    /// The better of two measurements of the same machine (each dtype's maximum).
    fn max(self, other: Option<Peak>) -> Peak {
        match other {
            Some(o) if o.isa == self.isa => Peak {
                f32: self.f32.max(o.f32),
                f64: self.f64.max(o.f64),
                ..self
            },
            _ => self,
        }
    }

    fn of(&self, dtype: &str) -> f64 {
        if dtype == "f64" {
            self.f64
        } else {
            self.f32
        }
    }
}

/// Everything a bench run produced, what the tables are rendered from.
#[derive(Clone, Debug)]
pub struct Report {
    /// Our variants, in the order of each [`Row::ours`].
    pub variants: Vec<Variant>,
    /// Requested kernel sets this CPU cannot run.
    pub unsupported: Vec<String>,
    /// One row per configuration.
    pub rows: Vec<Row>,
    /// The machine's peak (`None` where not measured).
    pub peak: Option<Peak>,
}

fn ratio_cell(values: &[f64]) -> String {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        "–".into()
    } else {
        spread(values, 2)
    }
}

fn verdict(value: f64) -> &'static str {
    if value.is_nan() {
        "–"
    } else if value <= 1.0 {
        "met"
    } else {
        "missed"
    }
}

/// `a / b` to two places, or – when `b` is missing.
fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

/// The markdown tables of `report`:
/// 1. step time per configuration and variant against PyTorch: medians over the rounds with
///    their range, the time ratio (ours / PyTorch, paired round by round: ≤ 1.00 means we are
///    at least as fast), the fastest steps' ratio, peak memory and its ratio, and whether the
///    goals (time and memory ratio ≤ 1.00) are met;
/// 2. with more than one profile, each profile's step time against the last one's (paired);
/// 3. the roofline: GFLOP per phase, GFLOP/s and percent of the machine's peak for each phase
///    and the whole step, ours per variant and PyTorch.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    step_table(&mut s, report);
    profile_table(&mut s, report);
    roofline_table(&mut s, report);
    flop_count_note(&mut s, report);
    s
}

/// `items` without repeats, in the order of their first appearance.
fn distinct<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    items.into_iter().fold(Vec::new(), |mut kept, item| {
        if !kept.contains(&item) {
            kept.push(item);
        }
        kept
    })
}

/// Table 1 of [`render`]: step time and peak memory, ours per variant against PyTorch, and a
/// row per configuration for each kernel set this CPU lacks.
fn step_table(s: &mut String, report: &Report) {
    s.push_str(
        "| config | ours: profile / kernels | ours s/step | PyTorch s/step | time ratio \
         | min ratio | ours peak MiB | PyTorch peak MiB | memory ratio | time goal | memory goal \
         | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &report.rows {
        let load = spread(&r.loads, 1);
        for (v, ours) in report.variants.iter().zip(&r.ours) {
            let t = r.torch.as_ref();
            let time = t.map(|t| ours.paired(t, |m| m.median_s));
            let memory = t.map(|t| ours.peak_rss() / t.peak_rss());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | **{}** | {} | {:.0} | {} | {} | {} | {} | {load} |",
                r.config.name(),
                v.label(),
                spread(&ours.each(|m| m.median_s), 3),
                t.map_or("–".into(), |t| spread(&t.each(|m| m.median_s), 3)),
                time.as_deref().map_or("–".into(), ratio_cell),
                ratio(ours.min_step(), t.map(Rounds::min_step)),
                ours.peak_rss(),
                t.map_or("–".into(), |t| format!("{:.0}", t.peak_rss())),
                memory.map_or("–".into(), |m| format!("{m:.2}")),
                verdict(time.as_deref().map_or(f64::NAN, median)),
                verdict(memory.unwrap_or(f64::NAN)),
            );
        }
        for k in &report.unsupported {
            let _ = writeln!(
                s,
                "| {} | {k} | not run: this CPU lacks it | | | | | | | | | |",
                r.config.name()
            );
        }
    }
}

/// Table 2 of [`render`], only with more than one profile: each variant's step time against
/// the variant of the last profile with the same kernel set.
fn profile_table(s: &mut String, report: &Report) {
    let profiles = distinct(report.variants.iter().map(|v| v.profile));
    let [others @ .., base] = profiles.as_slice() else {
        return;
    };
    if others.is_empty() {
        return;
    }
    let _ = write!(
        s,
        "\nProfiles against {0} (per-round ratios paired: each round ran both):\n\n\
         | config | kernels | profile | s/step | {0} s/step | ratio to {0} |\n\
         |---|---|---|---|---|---|\n",
        base.name()
    );
    for r in &report.rows {
        let variants = || report.variants.iter().zip(&r.ours);
        for (v, ours) in variants().filter(|(v, _)| v.profile != *base) {
            let Some((_, b)) =
                variants().find(|(b, _)| b.profile == *base && b.kernels == v.kernels)
            else {
                continue;
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | **{}** |",
                r.config.name(),
                v.kernels,
                v.profile.name(),
                spread(&ours.each(|m| m.median_s), 3),
                spread(&b.each(|m| m.median_s), 3),
                ratio_cell(&ours.paired(b, |m| m.median_s)),
            );
        }
    }
}

/// Table 3 of [`render`]: the roofline of every side of every configuration.
fn roofline_table(s: &mut String, report: &Report) {
    let _ = write!(
        s,
        "\nRoofline: GFLOP per step (convolutions and the linear head, two per multiply-add, \
         counted from the layer shapes), median phase times over the rounds, GFLOP/s and the \
         percentage of the machine's peak ({}):\n\n\
         | config | side | GFLOP fwd / bwd | forward s | forward GFLOP/s | fwd % peak \
         | backward s | backward GFLOP/s | bwd % peak | step GFLOP/s | step % peak | optimizer s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        report.peak.as_ref().map_or("not measured".into(), |p| format!(
            "{}: f32 {:.1}, f64 {:.1} GFLOP/s",
            p.isa, p.f32, p.f64
        )),
    );
    for r in &report.rows {
        let peak = report.peak.as_ref().map(|p| p.of(r.config.dtype));
        let ours = report
            .variants
            .iter()
            .zip(&r.ours)
            .map(|(v, o)| (format!("ours {}", v.label()), o));
        let torch = r.torch.iter().map(|t| ("PyTorch".to_string(), t));
        for (label, rounds) in ours.chain(torch) {
            roofline_line(s, &r.config.name(), &label, rounds, peak);
        }
    }
}

/// One side's line of the roofline: phase times, and with a FLOP count the rates and their
/// percentages of `peak` (GFLOP/s of the configuration's dtype).
fn roofline_line(s: &mut String, config: &str, label: &str, rounds: &Rounds, peak: Option<f64>) {
    let times = [0, 1, 2].map(|i| rounds.median(|m| m.phases[i]));
    let Some([fwd, bwd]) = rounds.flops() else {
        let _ = writeln!(
            s,
            "| {config} | {label} | not counted | {:.3} | | | {:.3} | | | | | {:.3} |",
            times[0], times[1], times[2]
        );
        return;
    };
    let rate = |flops: f64, secs: f64| flops / secs / 1e9;
    let pct = |gflops: f64| peak.map_or("–".into(), |p| format!("{:.0}%", 100.0 * gflops / p));
    let step = rate(fwd + bwd, rounds.median(|m| m.median_s));
    let (rf, rb) = (rate(fwd, times[0]), rate(bwd, times[1]));
    let _ = writeln!(
        s,
        "| {config} | {label} | {:.2} / {:.2} | {:.3} | {rf:.1} | {} | {:.3} | {rb:.1} | {} \
         | {step:.1} | {} | {:.3} |",
        fwd / 1e9,
        bwd / 1e9,
        times[0],
        pct(rf),
        times[1],
        pct(rb),
        pct(step),
        times[2],
    );
}

/// Below the roofline, where PyTorch ran: whether our FLOP counts (the first variant's) equal
/// PyTorch's in every configuration both counted, and where they differ.
fn flop_count_note(s: &mut String, report: &Report) {
    if report.rows.iter().all(|r| r.torch.is_none()) {
        // Nothing to compare the counts with.
        return;
    }
    let mismatches: Vec<String> = report
        .rows
        .iter()
        .filter_map(|r| {
            let ours = r.ours.first().and_then(Rounds::flops)?;
            let torch = r.torch.as_ref().and_then(Rounds::flops)?;
            (ours != torch).then(|| {
                format!(
                    "{}: ours {:.4} / {:.4}, PyTorch {:.4} / {:.4} GFLOP",
                    r.config.name(),
                    ours[0] / 1e9,
                    ours[1] / 1e9,
                    torch[0] / 1e9,
                    torch[1] / 1e9
                )
            })
        })
        .collect();
    if mismatches.is_empty() {
        s.push_str(
            "\nOur FLOP counts equal PyTorch's (`torch.utils.flop_counter`) in every \
             configuration both counted.\n",
        );
    } else {
        let _ = writeln!(
            s,
            "\n**FLOP counts differ from PyTorch's**: {}",
            mismatches.join("; ")
        );
    }
}

/// The order of round `round` (0-based) over `n` slots: `0..n` rotated left by `round`.
pub fn round_order(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|j| (j + round) % n.max(1)).collect()
}

/// The 1-minute load average from /proc/loadavg (NaN where unavailable).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Runs `cmd`, returns the JSON object its last stdout line holds.
pub(crate) fn run_json(mut cmd: Command, what: &str) -> Result<Value> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            stdout.trim(),
            stderr.trim()
        );
    }
    last_json_line(&stdout, what)
}

/// The JSON object on the last line of `stdout` that starts with `{` (what the step benches
/// print last).
pub(crate) fn last_json_line(stdout: &str, what: &str) -> Result<Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON object: {stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("parsing {what}'s output: {line}"))
}

/// Checks that `python` runs and imports torch; returns torch's version.
fn torch_version(python: &str) -> Result<String> {
    let out = Command::new(python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "cannot run `{python}`: install Python 3 or pass --python PATH (or --ours-only)"
            )
        })?;
    if !out.status.success() {
        bail!(
            "`{python}` cannot import torch: install PyTorch (pip install torch) or pass \
             --python with one that has it (or --ours-only)\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds the step_bench example and returns its executable, from cargo's JSON messages.
fn build_example(root: &Path, profile: BuildProfile) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args([
        "build",
        "--package",
        "explr-zoo",
        "--example",
        "step_bench",
        "--message-format=json-render-diagnostics",
    ]);
    if profile == BuildProfile::Release {
        cmd.arg("--release");
    }
    eprintln!("building step_bench ({} profile)…", profile.name());
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo build")?;
    if !out.status.success() {
        bail!("building the step_bench example failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "step_bench")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo reported no step_bench executable")
}

/// `step_bench --peak` on `threads` threads: the peak JSON object.
fn probe(exe: &Path, threads: usize) -> Result<Value> {
    let mut cmd = Command::new(exe);
    cmd.env("RAYON_NUM_THREADS", threads.to_string())
        .arg("--peak");
    run_json(cmd, "step_bench --peak")
}

/// The configurations `args` selects, once the options are checked: at least one configuration
/// and one round.
fn selected_configs(args: &BenchArgs) -> Result<Vec<Config>> {
    let list = configs(args.quick, &args.configs);
    if list.is_empty() {
        bail!(
            "--configs {} matches none of {}",
            args.configs.join(","),
            configs(false, &[])
                .iter()
                .map(Config::name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    Ok(list)
}

/// The kernel sets `asked` that this CPU runs, and those it lacks, from a `--peak` JSON object
/// (which lists the CPU's sets); an error when it runs none of them.
fn kernel_sets(asked: &[KernelsArg], probe: &Value) -> Result<(Vec<String>, Vec<String>)> {
    let supported: Vec<String> = probe["kernels_supported"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let detected = probe["kernels_detected"].as_str().unwrap_or("im2col");
    let (kernels, unsupported) = resolve_kernels(asked, &supported, detected);
    if kernels.is_empty() {
        bail!(
            "this CPU runs none of the kernel sets asked for ({}): it runs {}; pass --kernels \
             detected or all",
            unsupported.join(", "),
            supported.join(", ")
        );
    }
    Ok((kernels, unsupported))
}

/// What every configuration of one bench run is measured with.
struct Plan<'a> {
    args: &'a BenchArgs,
    /// The repository root, where PyTorch's script runs.
    root: &'a Path,
    /// Warm-up steps of each run.
    warmup: usize,
    /// Timed steps of each run.
    steps: usize,
    /// Each profile asked for, once, with its step_bench executable.
    exes: Vec<(BuildProfile, PathBuf)>,
    /// The kernel sets run.
    kernels: Vec<String>,
    /// Our side: every profile × kernel set.
    variants: Vec<Variant>,
    /// PyTorch's version (`None` with --ours-only).
    torch: Option<String>,
}

impl<'a> Plan<'a> {
    fn new(
        root: &'a Path,
        args: &'a BenchArgs,
        exes: Vec<(BuildProfile, PathBuf)>,
        kernels: Vec<String>,
        torch: Option<String>,
    ) -> Self {
        let variants = exes
            .iter()
            .flat_map(|&(profile, _)| {
                kernels.iter().map(move |k| Variant {
                    profile,
                    kernels: k.clone(),
                })
            })
            .collect();
        Self {
            args,
            root,
            warmup: args.warmup.unwrap_or(if args.quick { 1 } else { 2 }),
            steps: args.steps.unwrap_or(if args.quick { 3 } else { 10 }),
            exes,
            kernels,
            variants,
            torch,
        }
    }

    /// Every round of `c`: each variant of ours and PyTorch once per round, in the round's
    /// order. Appends each run's JSON line, with its round, load and profile, to `raw`.
    fn measure(&self, c: &Config, raw: &mut String) -> Result<Row> {
        let mut row = Row {
            config: c.clone(),
            ours: vec![Rounds::default(); self.variants.len()],
            torch: self.torch.as_ref().map(|_| Rounds::default()),
            loads: Vec::new(),
        };
        let slots = self.variants.len() + usize::from(self.torch.is_some());
        for round in 0..self.args.rounds {
            for slot in round_order(slots, round) {
                let load = load_average();
                let variant = self.variants.get(slot);
                let (mut v, target) = match variant {
                    Some(variant) => (self.run_ours(c, variant, round)?, &mut row.ours[slot]),
                    None => (
                        self.run_torch(c, round)?,
                        row.torch.as_mut().expect("PyTorch runs"),
                    ),
                };
                target.0.push(Measurement::from_json(&v)?);
                row.loads.push(load);
                v["round"] = round.into();
                v["load"] = load.into();
                if let Some(variant) = variant {
                    v["profile"] = variant.profile.name().into();
                }
                raw.push_str(&format!("{v}\n"));
            }
        }
        Ok(row)
    }

    /// One run of our step_bench: `variant` on configuration `c`.
    fn run_ours(&self, c: &Config, variant: &Variant, round: usize) -> Result<Value> {
        eprintln!(
            "{} round {}/{}: ours ({})…",
            c.name(),
            round + 1,
            self.args.rounds,
            variant.label()
        );
        let (_, exe) = self
            .exes
            .iter()
            .find(|(p, _)| *p == variant.profile)
            .expect("built");
        let mut cmd = Command::new(exe);
        cmd.env("RAYON_NUM_THREADS", self.args.threads.to_string())
            .args(c.args(self.warmup, self.steps))
            .args(["--kernels", &variant.kernels]);
        let what = format!("step_bench {} ({})", c.name(), variant.label());
        run_json(cmd, &what)
    }

    /// One run of PyTorch's step_bench.py on configuration `c`.
    fn run_torch(&self, c: &Config, round: usize) -> Result<Value> {
        eprintln!(
            "{} round {}/{}: PyTorch…",
            c.name(),
            round + 1,
            self.args.rounds
        );
        let mut cmd = Command::new(&self.args.python);
        cmd.current_dir(self.root)
            .arg(self.root.join("scripts/pytorch/step_bench.py"))
            .args(c.args(self.warmup, self.steps))
            .args(["--threads", &self.args.threads.to_string()]);
        run_json(cmd, &format!("step_bench.py {}", c.name()))
    }

    /// The paragraph above the tables: how the steps were run, what was compared, the load
    /// average at the start and the end (`loads`) and the machine's `cores`.
    fn preamble(&self, unsupported: &[String], loads: [f64; 2], cores: usize) -> String {
        let [load_start, load_end] = loads;
        format!(
            "Training step (train-mode forward, cross-entropy, backward, SGD momentum 0.9 / \
             weight decay 5e-4), CPU, {} threads, {} round(s) of {} warm-up + {} timed steps \
             (each round runs every side once, the order rotated by one per round); our \
             profiles: {}; kernel sets: {}{}; PyTorch {}. Peak: best of two `step_bench --peak` \
             runs (FMA microkernel on {} threads). Load average {load_start:.2} at the start, \
             {load_end:.2} at the end ({cores} cores).\n\n",
            self.args.threads,
            self.args.rounds,
            self.warmup,
            self.steps,
            self.exes
                .iter()
                .map(|(p, _)| p.name())
                .collect::<Vec<_>>()
                .join(", "),
            self.kernels.join(", "),
            if unsupported.is_empty() {
                String::new()
            } else {
                format!(" ({} not on this CPU)", unsupported.join(", "))
            },
            self.torch.as_deref().unwrap_or("not run"),
            self.args.threads,
        )
    }
}

/// Prints `md` and writes it, and `raw` (every run's JSON), to `target/bench/`.
fn publish(root: &Path, md: &str, raw: &str) -> Result<()> {
    println!("{md}");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let table = dir.join("step.md");
    std::fs::write(&table, md).with_context(|| format!("writing {}", table.display()))?;
    let jsonl = dir.join("step.jsonl");
    std::fs::write(&jsonl, raw).with_context(|| format!("writing {}", jsonl.display()))?;
    eprintln!("wrote {} and {}", table.display(), jsonl.display());
    Ok(())
}

/// `cargo xtask bench`.
pub fn run(root: &Path, args: &BenchArgs) -> Result<()> {
    let list = selected_configs(args)?;
    let torch = if args.ours_only {
        None
    } else {
        Some(torch_version(&args.python)?)
    };
    let exes = distinct(args.profile.iter().copied())
        .into_iter()
        .map(|p| Ok((p, build_example(root, p)?)))
        .collect::<Result<Vec<_>>>()?;
    let load_start = load_average();

    eprintln!("measuring the peak…");
    let first_probe = probe(&exes[0].1, args.threads)?;
    let (kernels, unsupported) = kernel_sets(&args.kernels, &first_probe)?;
    let plan = Plan::new(root, args, exes, kernels, torch);
    let mut rows = Vec::new();
    let mut raw = String::new();
    for c in &list {
        rows.push(plan.measure(c, &mut raw)?);
    }

    eprintln!("measuring the peak again…");
    let last_probe = probe(&plan.exes[0].1, args.threads)?;
    raw.push_str(&format!("{first_probe}\n{last_probe}\n"));
    let report = Report {
        variants: plan.variants.clone(),
        unsupported,
        rows,
        peak: Peak::from_json(&first_probe).map(|p| p.max(Peak::from_json(&last_probe))),
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = plan.preamble(&report.unsupported, [load_start, load_average()], cores);
    md.push_str(&render(&report));
    publish(root, &md, &raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_configs(quick: bool, filters: &[&str], expected: &[&str]) {
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let names: Vec<String> = configs(quick, &filters).iter().map(Config::name).collect();
        assert_eq!(names, expected, "quick={quick} filters={filters:?}");
    }

    #[test]
    fn config_matrix_and_filters() {
        check_configs(
            false,
            &[],
            &[
                "preresnet-20/b128/f32",
                "preresnet-20/b128/f64",
                "preresnet-20/b32/f32",
                "preresnet-20/b32/f64",
                "preresnet-32/b128/f32",
                "preresnet-32/b128/f64",
                "preresnet-32/b32/f32",
                "preresnet-32/b32/f64",
                "preresnet-14/w8/b32/f64",
            ],
        );
        check_configs(
            true,
            &[],
            &[
                "preresnet-20/b128/f32",
                "preresnet-20/b128/f64",
                "preresnet-20/b32/f32",
                "preresnet-20/b32/f64",
            ],
        );
        check_configs(
            false,
            &["b128/f32"],
            &["preresnet-20/b128/f32", "preresnet-32/b128/f32"],
        );
        check_configs(
            false,
            &["20/b32", "32/b128/f64"],
            &[
                "preresnet-20/b32/f32",
                "preresnet-20/b32/f64",
                "preresnet-32/b128/f64",
            ],
        );
        check_configs(true, &["preresnet-32"], &[]);
        // The cpu profile's network is matched by its width, and is not part of --quick.
        check_configs(false, &["/w8/"], &["preresnet-14/w8/b32/f64"]);
        check_configs(true, &["/w8/"], &[]);
    }

    #[test]
    fn a_width_reaches_both_step_benches() {
        let c = Config {
            model: "preresnet-14".into(),
            width: Some(8),
            batch: 32,
            dtype: "f64",
        };
        assert_eq!(
            c.args(1, 3).join(" "),
            "--model preresnet-14 --batch 32 --dtype f64 --warmup 1 --steps 3 --width 8"
        );
        assert_eq!(
            config(32, "f64")
                .args(1, 3)
                .join(" ")
                .matches("--width")
                .count(),
            0
        );
    }

    fn check_measurement(json: &str, expected: std::result::Result<Measurement, &str>) {
        let v: Value = serde_json::from_str(json).unwrap();
        match (Measurement::from_json(&v), expected) {
            (Ok(m), Ok(e)) => assert_eq!(m, e),
            (Err(err), Err(needle)) => {
                assert!(format!("{err:#}").contains(needle), "{err:#}")
            }
            (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn measurement_from_step_bench_json() {
        let full = r#"{"median_s": 2.0, "min_s": 1.5, "images_per_s": 64.0, "peak_rss_mb": 300.5,
            "forward_s": 0.5, "backward_s": 1.25, "optimizer_s": 0.25, "extra": "x"}"#;
        let m = Measurement {
            median_s: 2.0,
            min_s: 1.5,
            images_per_s: 64.0,
            peak_rss_mb: 300.5,
            phases: [0.5, 1.25, 0.25],
            flops: None,
        };
        check_measurement(full, Ok(m.clone()));
        let counted = full.replace(
            "\"extra\"",
            "\"flops_forward\": 10, \"flops_backward\": 20, \"x\"",
        );
        check_measurement(
            &counted,
            Ok(Measurement {
                flops: Some([10.0, 20.0]),
                ..m
            }),
        );
        check_measurement(
            &full.replace("\"extra\"", "\"flops_forward\": 10, \"x\""),
            Err("no number `flops_backward`"),
        );
        check_measurement(
            r#"{"median_s": 2.0, "images_per_s": 64.0}"#,
            Err("no number `min_s`"),
        );
        check_measurement(
            r#"{"median_s": "fast", "images_per_s": 64.0, "peak_rss_mb": 1}"#,
            Err("no number `median_s`"),
        );
    }

    #[test]
    fn kernel_sets_resolve_against_the_cpu() {
        let check =
            |args: &[KernelsArg], supported: &[&str], detected: &str, want: (&[&str], &[&str])| {
                let supported: Vec<String> = supported.iter().map(|s| s.to_string()).collect();
                let (run, lacking) = resolve_kernels(args, &supported, detected);
                fn strs(v: &[String]) -> Vec<&str> {
                    v.iter().map(String::as_str).collect()
                }
                assert_eq!(
                    (strs(&run), strs(&lacking)),
                    (want.0.to_vec(), want.1.to_vec()),
                    "{args:?} on {supported:?}"
                );
            };
        use KernelsArg::*;
        let avx2_cpu: &[&str] = &["avx2", "im2col"];
        check(&[Detected], avx2_cpu, "avx2", (&["avx2"], &[]));
        check(&[All], avx2_cpu, "avx2", (&["avx2", "im2col"], &["avx512"]));
        check(
            &[All],
            &["avx512", "avx2", "im2col"],
            "avx512",
            (&["avx512", "avx2", "im2col"], &[]),
        );
        // Order follows the sets (widest first), duplicates collapse.
        check(
            &[Im2col, Avx512, Detected],
            avx2_cpu,
            "avx2",
            (&["avx2", "im2col"], &["avx512"]),
        );
        check(&[Avx2], &["im2col"], "im2col", (&[], &["avx2"]));
    }

    #[test]
    fn rounds_rotate_the_order() {
        assert_eq!(round_order(3, 0), [0, 1, 2]);
        assert_eq!(round_order(3, 1), [1, 2, 0]);
        assert_eq!(round_order(3, 5), [2, 0, 1]);
        assert_eq!(round_order(1, 4), [0]);
        assert!(round_order(0, 2).is_empty());
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(spread(&[0.5, 0.7, 0.6], 2), "0.60 (0.50–0.70)");
        assert_eq!(spread(&[0.5], 3), "0.500");
        assert_eq!(spread(&[], 3), "–");
    }

    #[test]
    fn peak_is_the_widest_isa() {
        let v: Value = serde_json::from_str(
            r#"{"gflops": {"avx2": {"f32": 100.0, "f64": 50.0},
                           "avx512": {"f32": 200.0, "f64": 100.0}}}"#,
        )
        .unwrap();
        let p = Peak::from_json(&v).unwrap();
        assert_eq!((p.isa.as_str(), p.f32, p.f64), ("avx512", 200.0, 100.0));
        // Each dtype's maximum, whichever measurement it comes from; another set is ignored.
        let later = |isa: &str, f32, f64| Peak {
            isa: isa.into(),
            f32,
            f64,
        };
        let both = |q: Peak| (q.f32, q.f64);
        assert_eq!(
            both(p.clone().max(Some(later("avx512", 190.0, 120.0)))),
            (200.0, 120.0)
        );
        assert_eq!(
            both(p.clone().max(Some(later("avx512", 210.0, 90.0)))),
            (210.0, 100.0)
        );
        assert_eq!(
            both(p.clone().max(Some(later("avx2", 300.0, 300.0)))),
            (200.0, 100.0)
        );
        assert_eq!(both(p.max(None)), (200.0, 100.0));
        assert!(Peak::from_json(&serde_json::json!({"gflops": {}})).is_none());
    }

    /// A measurement whose step takes `s` seconds split 1:2:0 into phases, with `flops`.
    fn m(s: f64, peak: f64, flops: Option<[f64; 2]>) -> Measurement {
        Measurement {
            median_s: s,
            min_s: s * 0.9,
            images_per_s: 128.0 / s,
            peak_rss_mb: peak,
            phases: [s / 3.0, 2.0 * s / 3.0, 0.0],
            flops,
        }
    }

    /// A configuration of PreResNet-20 at `batch` in `dtype`.
    fn config(batch: usize, dtype: &'static str) -> Config {
        Config {
            model: "preresnet-20".into(),
            width: None,
            batch,
            dtype,
        }
    }

    fn variant(profile: BuildProfile, kernels: &str) -> Variant {
        Variant {
            profile,
            kernels: kernels.into(),
        }
    }

    /// A row of `config`: two variants of ours and PyTorch, their rounds, and the loads.
    fn row(
        config: Config,
        ours: [Vec<Measurement>; 2],
        torch: Vec<Measurement>,
        loads: &[f64],
    ) -> Row {
        Row {
            config,
            ours: ours.into_iter().map(Rounds).collect(),
            torch: Some(Rounds(torch)),
            loads: loads.to_vec(),
        }
    }

    /// Two rows, one profile: a FLOP count that differs from PyTorch's, a row whose counts
    /// disagree across rounds (not counted) and no peak; and the same without PyTorch.
    fn single_profile_reports() -> [Report; 2] {
        let counted = Some([10e9, 20e9]);
        let with_torch = Report {
            variants: vec![
                variant(BuildProfile::Release, "avx2"),
                variant(BuildProfile::Release, "im2col"),
            ],
            unsupported: vec![],
            rows: vec![
                row(
                    config(32, "f64"),
                    [vec![m(0.25, 120.0, counted)], vec![m(0.5, 150.0, counted)]],
                    vec![m(0.2, 400.0, Some([10e9, 22e9]))],
                    &[0.25, 0.5, 0.75],
                ),
                row(
                    config(128, "f32"),
                    [
                        vec![m(1.5, 300.0, counted), m(1.75, 305.0, None)],
                        vec![m(2.0, 330.0, None), m(2.5, 340.0, None)],
                    ],
                    vec![m(1.0, 900.0, None), m(1.25, 950.0, None)],
                    &[1.0, 1.5, 2.0, 2.5, 3.0, 3.5],
                ),
            ],
            peak: None,
        };
        let mut ours_only = with_torch.clone();
        for r in &mut ours_only.rows {
            r.torch = None;
        }
        [with_torch, ours_only]
    }

    /// One row (PreResNet-20, batch 128, f32), two profiles, a kernel set this CPU lacks, a peak.
    fn two_profile_report() -> Report {
        let flops = Some([10e9, 20e9]);
        Report {
            variants: vec![
                variant(BuildProfile::Dev, "avx2"),
                variant(BuildProfile::Release, "avx2"),
            ],
            unsupported: vec!["avx512".into()],
            rows: vec![row(
                config(128, "f32"),
                // Rounds paired: dev 1.0 and 3.0 against release 0.5 and 2.0 → 2.0 and 1.5.
                [
                    vec![m(1.0, 300.0, flops), m(3.0, 310.0, flops)],
                    vec![m(0.5, 290.0, flops), m(2.0, 280.0, flops)],
                ],
                // Against PyTorch's 1.0 and 1.0: release 0.5 and 2.0.
                vec![m(1.0, 1000.0, flops), m(1.0, 900.0, flops)],
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            )],
            peak: Some(Peak {
                isa: "avx2".into(),
                f32: 100.0,
                f64: 50.0,
            }),
        }
    }

    /// The rendering of three reports, each after a `<!-- name -->` line: what
    /// `testdata/bench_render.md` holds (written by `render` before it was split into parts).
    fn rendered_samples() -> String {
        let [one_profile, ours_only] = single_profile_reports();
        let mut all = String::new();
        for (name, report) in [
            ("two profiles", two_profile_report()),
            ("one profile", one_profile),
            ("ours only", ours_only),
        ] {
            all.push_str(&format!("<!-- {name} -->\n{}", render(&report)));
        }
        all
    }

    #[test]
    fn tables_are_rendered_as_before() {
        assert_eq!(
            rendered_samples(),
            include_str!("../testdata/bench_render.md")
        );
    }

    fn bench_args(threads: usize, rounds: usize, quick: bool) -> BenchArgs {
        BenchArgs {
            quick,
            configs: vec![],
            warmup: None,
            steps: None,
            rounds,
            threads,
            profile: vec![],
            kernels: vec![],
            python: "python3".into(),
            ours_only: false,
        }
    }

    #[test]
    fn the_preamble_is_written_as_before() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (full, quick) = (bench_args(2, 3, false), bench_args(1, 1, true));
        let both = vec![
            (BuildProfile::Dev, PathBuf::new()),
            (BuildProfile::Release, PathBuf::new()),
        ];
        let plans = [
            Plan::new(
                Path::new("."),
                &full,
                both,
                strings(&["avx2", "im2col"]),
                Some("2.5.1".into()),
            ),
            Plan::new(
                Path::new("."),
                &quick,
                vec![(BuildProfile::Release, PathBuf::new())],
                strings(&["im2col"]),
                None,
            ),
        ];
        let text = [
            plans[0].preamble(&strings(&["avx512"]), [1.25, 0.5], 2),
            plans[1].preamble(&[], [f64::NAN, 3.0], 0),
        ]
        .map(|p| p + "<!-- next -->\n")
        .concat();
        assert_eq!(text, include_str!("../testdata/bench_preamble.md"));
        assert_eq!(plans[0].variants.len(), 4);
        assert_eq!(plans[0].variants[1].label(), "dev / im2col");
    }

    #[test]
    fn kernel_sets_come_from_the_probe() {
        let probe = serde_json::json!({"kernels_supported": ["avx2", "im2col"],
                                       "kernels_detected": "avx2"});
        let (run, lacking) = kernel_sets(&[KernelsArg::All], &probe).unwrap();
        assert_eq!(
            (run, lacking),
            (vec!["avx2".into(), "im2col".into()], vec!["avx512".into()])
        );
        let err = kernel_sets(&[KernelsArg::Avx512], &probe).unwrap_err();
        assert!(err.to_string().contains("it runs avx2, im2col"), "{err}");
    }

    /// A shell script at `path` that prints a line of log, then a step_bench JSON object with
    /// `side` and its arguments.
    ///
    /// Written by a `sh` child, not by this process: a file this process had open for writing
    /// can be inherited, for an instant, by a child another test thread forks, and executing it
    /// meanwhile fails with ETXTBSY ("Text file busy", seen in CI).
    fn fake_bench(path: &Path, side: &str) {
        use std::io::Write as _;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let script = format!(
            "#!/bin/sh\necho 'log line'\nprintf '{{\"side\": \"{side}\", \"args\": \"%s\", \
             \"median_s\": 2, \"min_s\": 1, \"images_per_s\": 64, \"peak_rss_mb\": 100, \
             \"forward_s\": 0.5, \"backward_s\": 1, \"optimizer_s\": 0.5}}\\n' \"$*\"\n"
        );
        let mut writer = std::process::Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writer
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(writer.wait().unwrap().success(), "writing {path:?}");
    }

    #[test]
    fn rounds_run_every_side_in_turn_and_log_each_run() {
        let root = tempfile::tempdir().unwrap();
        let ours = root.path().join("ours");
        fake_bench(&ours, "ours");
        fake_bench(&root.path().join("scripts/pytorch/step_bench.py"), "torch");
        let mut args = bench_args(3, 2, true);
        args.python = "sh".into();
        let exes = vec![(BuildProfile::Dev, ours)];
        let plan = Plan::new(
            root.path(),
            &args,
            exes,
            vec!["im2col".into()],
            Some("2".into()),
        );
        let mut raw = String::new();
        let row = plan.measure(&config(32, "f64"), &mut raw).unwrap();
        assert_eq!((row.ours[0].0.len(), row.loads.len()), (2, 4));
        assert_eq!(row.torch.unwrap().0.len(), 2);
        let lines: Vec<Value> = raw
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let sides: Vec<(&str, u64, Option<&str>)> = lines
            .iter()
            .map(|v| {
                (
                    v["side"].as_str().unwrap(),
                    v["round"].as_u64().unwrap(),
                    v["profile"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            sides,
            [
                ("ours", 0, Some("dev")),
                ("torch", 0, None),
                ("torch", 1, None),
                ("ours", 1, Some("dev"))
            ]
        );
        assert!(lines.iter().all(|v| v.get("load").is_some()));
        assert_eq!(
            lines[0]["args"],
            "--model preresnet-20 --batch 32 --dtype f64 --warmup 1 --steps 3 --kernels im2col"
        );
        assert_eq!(
            lines[1]["args"],
            "--model preresnet-20 --batch 32 --dtype f64 --warmup 1 --steps 3 --threads 3"
        );
    }

    #[test]
    fn tables_show_ratios_goals_profiles_and_roofline() {
        let report = two_profile_report();
        let md = render(&report);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[2],
            "| preresnet-20/b128/f32 | dev / avx2 | 2.000 (1.000–3.000) | 1.000 (1.000–1.000) \
             | **2.00 (1.00–3.00)** | 1.00 | 310 | 1000 | 0.31 | missed | met | 3.5 (1.0–6.0) |"
        );
        assert_eq!(
            lines[3],
            "| preresnet-20/b128/f32 | release / avx2 | 1.250 (0.500–2.000) | 1.000 (1.000–1.000) \
             | **1.25 (0.50–2.00)** | 0.50 | 290 | 1000 | 0.29 | missed | met | 3.5 (1.0–6.0) |"
        );
        assert_eq!(
            lines[4],
            "| preresnet-20/b128/f32 | avx512 | not run: this CPU lacks it | | | | | | | | | |"
        );
        assert!(
            md.contains(
                "| preresnet-20/b128/f32 | avx2 | dev | 2.000 (1.000–3.000) \
                         | 1.250 (0.500–2.000) | **1.75 (1.50–2.00)** |"
            ),
            "{md}"
        );
        // Release: forward 10 GFLOP in 1.25/3 s = 24.0 GFLOP/s, 24% of 100; backward 20 in
        // 2.5/3 s = 24.0; the step 30 GFLOP in 1.25 s = 24.0.
        assert!(
            md.contains(
                "| preresnet-20/b128/f32 | ours release / avx2 | 10.00 / 20.00 | 0.417 \
                         | 24.0 | 24% | 0.833 | 24.0 | 24% | 24.0 | 24% | 0.000 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| PyTorch | 10.00 / 20.00 | 0.333 | 30.0 | 30% |"),
            "{md}"
        );
        assert!(md.contains("Our FLOP counts equal PyTorch's"), "{md}");

        // A count that differs is reported; ours-only has no PyTorch cells and no verdicts.
        let mut other = report.clone();
        other.rows[0].torch = Some(Rounds(vec![m(1.0, 900.0, Some([10e9, 21e9]))]));
        assert!(render(&other).contains("**FLOP counts differ from PyTorch's**"));
        other.rows[0].torch = None;
        let md = render(&other);
        assert!(
            md.contains("| 2.000 (1.000–3.000) | – | **–** | – | 310 | – | – | – | – |"),
            "{md}"
        );
        assert!(
            !md.contains("FLOP counts"),
            "no PyTorch counts to compare: {md}"
        );
    }

    #[test]
    fn missing_python_or_torch_is_a_clear_error() {
        let check = |python: &str, needle: &str| {
            let err = torch_version(python).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{python}: {err:#}");
        };
        check(
            "./no-such-python-interpreter",
            "cannot run `./no-such-python-interpreter`",
        );
        // `false` runs but fails, as a Python without torch fails the import.
        check("false", "cannot import torch");
    }
}
