//! `cargo xtask bench`: the training-step benchmark, ours against PyTorch on the same machine.
//!
//! For every configuration (model × batch × dtype) it runs `crates/zoo/examples/step_bench.rs`
//! (built once, release profile by default) and then its twin `scripts/pytorch/step_bench.py`,
//! back to back, one process per configuration and side so that each peak resident size is that
//! configuration's own. Both print one JSON object; this module turns them into a markdown table
//! (median step time, images/s, peak memory, ratios), prints it and writes it, with the raw JSON
//! lines and the load average around each run, to `target/bench/`.

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
    /// Keep only configurations whose name (`preresnet-20/b128/f32`) contains one of these
    /// comma-separated substrings, e.g. `--configs b128/f32,preresnet-32`.
    #[arg(long, value_delimiter = ',')]
    pub configs: Vec<String>,
    /// Warm-up steps per configuration (default 2; 1 with --quick).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed steps per configuration (default 10; 3 with --quick).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Rounds per configuration, ours then PyTorch in each: the table shows the median of the
    /// rounds' medians and the minimum of their minima (more rounds, less noise).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Threads on both sides (RAYON_NUM_THREADS for ours, torch.set_num_threads for PyTorch).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Cargo profile of our side: `release` (no debug assertions anywhere) or `dev` (shares the
    /// test build: all code at opt-level 3 but with debug assertions on).
    #[arg(long, value_enum, default_value_t = BuildProfile::Release)]
    pub profile: BuildProfile,
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
    /// The workspace's dev profile.
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

/// One benchmarked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `ARCH-DEPTH`, as both step_bench programs take it.
    pub model: String,
    /// Batch size.
    pub batch: usize,
    /// `f32` or `f64`.
    pub dtype: &'static str,
}

impl Config {
    /// `preresnet-20/b128/f32`: what `--configs` matches against.
    pub fn name(&self) -> String {
        format!("{}/b{}/{}", self.model, self.batch, self.dtype)
    }

    fn args(&self, warmup: usize, steps: usize) -> Vec<String> {
        vec![
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
    }
}

/// The issue's matrix (PreResNet-20 and -32, batch 128 and 32, f32 and f64), or PreResNet-20
/// only with `quick`, filtered by `filters` (a config is kept if its name contains any filter;
/// no filters keeps all).
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
                let c = Config {
                    model: (*model).into(),
                    batch,
                    dtype,
                };
                let name = c.name();
                if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// What one side measured (the step_bench JSON keys this table uses).
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
}

impl Measurement {
    /// Combines rounds of one side: median of the medians (and of the images/s and phase
    /// medians), min of the minima, max of the peaks. `None` for no rounds.
    pub fn combine(rounds: &[Measurement]) -> Option<Self> {
        let med = |f: &dyn Fn(&Measurement) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                0.5 * (v[n / 2 - 1] + v[n / 2])
            }
        };
        let first = rounds.first()?;
        Some(Self {
            median_s: med(&|m| m.median_s),
            min_s: rounds.iter().map(|m| m.min_s).fold(first.min_s, f64::min),
            images_per_s: med(&|m| m.images_per_s),
            peak_rss_mb: rounds
                .iter()
                .map(|m| m.peak_rss_mb)
                .fold(first.peak_rss_mb, f64::max),
            phases: [0, 1, 2].map(|i| med(&|m| m.phases[i])),
        })
    }

    /// Reads the fields from a step_bench JSON object.
    pub fn from_json(v: &Value) -> Result<Self> {
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .with_context(|| format!("step_bench output has no number `{k}`: {v}"))
        };
        Ok(Self {
            median_s: num("median_s")?,
            min_s: num("min_s")?,
            images_per_s: num("images_per_s")?,
            peak_rss_mb: num("peak_rss_mb")?,
            phases: [num("forward_s")?, num("backward_s")?, num("optimizer_s")?],
        })
    }
}

/// One row: a configuration, our measurement, PyTorch's (absent with --ours-only), each
/// combined over the rounds, and the 1-minute load average before the first and after the last
/// run.
#[derive(Clone, Debug)]
pub struct Row {
    /// The configuration.
    pub config: Config,
    /// Our side.
    pub ours: Measurement,
    /// PyTorch's side.
    pub torch: Option<Measurement>,
    /// Load average (1 min) before our run and after PyTorch's.
    pub load: (f64, f64),
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// The markdown tables: the main one (time ratio = ours / PyTorch, so ≤ 1.00 means we are at
/// least as fast; memory ratio likewise), then the phase split.
pub fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| config | ours s/step | PyTorch s/step | time ratio | ours min s | PyTorch min s \
         | min ratio | ours img/s | PyTorch img/s | ours peak MiB | PyTorch peak MiB \
         | memory ratio | load before → after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let t = r.torch.as_ref();
        let _ = writeln!(
            s,
            "| {} | {:.3} | {} | **{}** | {:.3} | {} | {} | {:.1} | {} | {:.0} | {} | {} \
             | {:.1} → {:.1} |",
            r.config.name(),
            r.ours.median_s,
            opt(t.map(|t| t.median_s), 3),
            ratio(r.ours.median_s, t.map(|t| t.median_s)),
            r.ours.min_s,
            opt(t.map(|t| t.min_s), 3),
            ratio(r.ours.min_s, t.map(|t| t.min_s)),
            r.ours.images_per_s,
            opt(t.map(|t| t.images_per_s), 1),
            r.ours.peak_rss_mb,
            opt(t.map(|t| t.peak_rss_mb), 0),
            ratio(r.ours.peak_rss_mb, t.map(|t| t.peak_rss_mb)),
            r.load.0,
            r.load.1,
        );
    }
    s.push_str(
        "\nMedian phase times in seconds (forward includes the loss), ours / PyTorch:\n\n\
         | config | forward | backward | optimizer |\n|---|---|---|---|\n",
    );
    for r in rows {
        let t = r.torch.as_ref();
        let cell = |i: usize| {
            format!(
                "{:.3} / {}",
                r.ours.phases[i],
                opt(t.map(|t| t.phases[i]), 3)
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r.config.name(),
            cell(0),
            cell(1),
            cell(2)
        );
    }
    s
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

/// `cargo xtask bench`.
pub fn run(root: &Path, args: &BenchArgs) -> Result<()> {
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
    let torch = if args.ours_only {
        None
    } else {
        Some(torch_version(&args.python)?)
    };
    let exe = build_example(root, args.profile)?;
    let warmup = args.warmup.unwrap_or(if args.quick { 1 } else { 2 });
    let steps = args.steps.unwrap_or(if args.quick { 3 } else { 10 });
    let script = root.join("scripts/pytorch/step_bench.py");
    let load_start = load_average();

    let mut rows = Vec::new();
    let mut raw = String::new();
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    for c in &list {
        let before = load_average();
        let (mut ours, mut torch_rounds) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            eprintln!("{} round {round}/{}: ours…", c.name(), args.rounds);
            let mut cmd = Command::new(&exe);
            cmd.env("RAYON_NUM_THREADS", args.threads.to_string())
                .args(c.args(warmup, steps));
            let v = run_json(cmd, &format!("step_bench {}", c.name()))?;
            ours.push(Measurement::from_json(&v)?);
            raw.push_str(&format!("{v}\n"));
            if !args.ours_only {
                eprintln!("{} round {round}/{}: PyTorch…", c.name(), args.rounds);
                let mut cmd = Command::new(&args.python);
                cmd.current_dir(root)
                    .arg(&script)
                    .args(c.args(warmup, steps))
                    .args(["--threads", &args.threads.to_string()]);
                let v = run_json(cmd, &format!("step_bench.py {}", c.name()))?;
                torch_rounds.push(Measurement::from_json(&v)?);
                raw.push_str(&format!("{v}\n"));
            }
        }
        rows.push(Row {
            config: c.clone(),
            ours: Measurement::combine(&ours).context("no rounds")?,
            torch: Measurement::combine(&torch_rounds),
            load: (before, load_average()),
        });
    }

    let mut md = format!(
        "Training step (train-mode forward, cross-entropy, backward, SGD momentum 0.9 / weight \
         decay 5e-4), CPU, {} threads, {} round(s) of {warmup} warm-up + {steps} timed steps, \
         {} profile; \
         PyTorch {}. Load average {load_start:.2} at the start, {:.2} at the end \
         ({} cores).\n\n",
        args.threads,
        args.rounds,
        args.profile.name(),
        torch.as_deref().unwrap_or("not run"),
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    md.push_str(&render(&rows));
    println!("{md}");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let table = dir.join("step.md");
    std::fs::write(&table, &md).with_context(|| format!("writing {}", table.display()))?;
    let jsonl = dir.join("step.jsonl");
    std::fs::write(&jsonl, raw).with_context(|| format!("writing {}", jsonl.display()))?;
    eprintln!("wrote {} and {}", table.display(), jsonl.display());
    Ok(())
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
    }

    fn check_measurement(json: &str, expected: std::result::Result<[f64; 7], &str>) {
        let v: Value = serde_json::from_str(json).unwrap();
        match (Measurement::from_json(&v), expected) {
            (Ok(m), Ok(e)) => assert_eq!(
                [
                    m.median_s,
                    m.min_s,
                    m.images_per_s,
                    m.peak_rss_mb,
                    m.phases[0],
                    m.phases[1],
                    m.phases[2]
                ],
                e
            ),
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
        check_measurement(full, Ok([2.0, 1.5, 64.0, 300.5, 0.5, 1.25, 0.25]));
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
    fn table_shows_ratios_of_ours_to_pytorch() {
        let m = |median_s: f64, peak: f64| Measurement {
            median_s,
            min_s: median_s / 2.0,
            images_per_s: 128.0 / median_s,
            peak_rss_mb: peak,
            phases: [0.1, 0.2, 0.3],
        };
        let config = Config {
            model: "preresnet-20".into(),
            batch: 128,
            dtype: "f32",
        };
        let rows = vec![
            Row {
                config: config.clone(),
                ours: m(1.0, 300.0),
                torch: Some(m(4.0, 1200.0)),
                load: (1.0, 2.0),
            },
            Row {
                config,
                ours: m(2.0, 300.0),
                torch: None,
                load: (2.0, 2.0),
            },
        ];
        let md = render(&rows);
        let lines: Vec<&str> = md.lines().collect();
        // 128 / 1.0 and 128 / 4.0 images/s; time 1/4, min 0.5/2 and memory 300/1200 as ratios.
        assert_eq!(
            lines[2],
            "| preresnet-20/b128/f32 | 1.000 | 4.000 | **0.25** | 0.500 | 2.000 | 0.25 | 128.0 \
             | 32.0 | 300 | 1200 | 0.25 | 1.0 → 2.0 |"
        );
        assert_eq!(
            lines[3],
            "| preresnet-20/b128/f32 | 2.000 | – | **–** | 1.000 | – | – | 64.0 | – | 300 | – \
             | – | 2.0 → 2.0 |"
        );
        assert!(md
            .contains("| preresnet-20/b128/f32 | 0.100 / 0.100 | 0.200 / 0.200 | 0.300 / 0.300 |"));
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

    #[test]
    fn rounds_combine_to_median_min_and_max_peak() {
        let m = |median_s: f64, min_s: f64, peak_rss_mb: f64| Measurement {
            median_s,
            min_s,
            images_per_s: 10.0 * median_s,
            peak_rss_mb,
            phases: [median_s, 2.0 * median_s, 3.0 * median_s],
        };
        let check = |rounds: &[Measurement], want: Option<Measurement>| {
            assert_eq!(Measurement::combine(rounds), want, "{rounds:?}");
        };
        check(&[], None);
        check(&[m(2.0, 1.0, 5.0)], Some(m(2.0, 1.0, 5.0)));
        // Odd count: the middle value; min of the minima; max of the peaks.
        check(
            &[m(3.0, 2.5, 5.0), m(1.0, 0.9, 7.0), m(2.0, 0.4, 6.0)],
            Some(m(2.0, 0.4, 7.0)),
        );
        // Even count: the mean of the two middle values.
        check(
            &[m(4.0, 3.0, 1.0), m(1.0, 1.0, 1.0)],
            Some(m(2.5, 1.0, 1.0)),
        );
    }
}
