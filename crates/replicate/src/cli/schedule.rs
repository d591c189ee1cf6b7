//! `explr schedule`: print any schedule of explr-schedule per step or per epoch.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use explr_schedule::{alpha, Schedule, ScheduleError, ScheduleSpec};
use serde::Serialize;

/// The schedule kinds, as flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// A fixed LR (`--lr`).
    Constant,
    /// `--lr` times `--gamma` at each of `--milestones`.
    Multistep,
    /// `--lr` times `--gamma` every `--step-size`.
    Step,
    /// `--lr` times `--factor` per step (per epoch with `--steps-per-epoch`).
    Exponential,
    /// Cosine from `--lr` to `--eta-min` over `--t-max`.
    Cosine,
    /// Linear warmup from `--start-factor`·lr to `--end-factor`·lr over `--total-iters`.
    Warmup,
    /// TEXP of the multistep decay with `--weight-decay` and `--momentum`.
    Texp,
    /// TEXP-- (growth change only at the boundaries).
    TexpMinus,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `step,epoch,lr` rows, derived values as `#` comment lines first.
    Csv,
    /// One JSON object with the spec, the derived values and the rows.
    Json,
}

/// Row granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Per {
    /// Every step.
    Step,
    /// The first step of every epoch (needs `--steps-per-epoch`).
    Epoch,
}

/// Arguments of `explr schedule`. Counts (`--milestones`, `--step-size`, `--t-max`,
/// `--total-iters`) are in epochs when `--steps-per-epoch` is given, else in steps.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// The schedule kind (or use `--spec`).
    #[arg(
        long,
        value_enum,
        required_unless_present = "spec",
        conflicts_with = "spec"
    )]
    pub kind: Option<KindArg>,
    /// A YAML schedule spec (`kind: multistep`, …) instead of the flags.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Initial learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Decay milestones, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub milestones: Vec<u64>,
    /// Decay factor (0.1 divides by 10).
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
    /// Period of the step decay.
    #[arg(long)]
    pub step_size: Option<u64>,
    /// Factor of the exponential schedule.
    #[arg(long, allow_negative_numbers = true)]
    pub factor: Option<f64>,
    /// Cosine half period.
    #[arg(long)]
    pub t_max: Option<u64>,
    /// Cosine floor.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eta_min: f64,
    /// Warmup start factor.
    #[arg(long, allow_negative_numbers = true)]
    pub start_factor: Option<f64>,
    /// Warmup end factor.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub end_factor: f64,
    /// Warmup length.
    #[arg(long)]
    pub total_iters: Option<u64>,
    /// Weight decay λ (TEXP, `--exp-twin`, and the derived α).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Momentum γ (TEXP, `--exp-twin`, and the derived α).
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Print the exact exponential twin (THEORY.md §4) of the schedule instead.
    #[arg(long)]
    pub exp_twin: bool,
    /// Steps per epoch (makes counts epochs and enables `--per epoch`).
    #[arg(long)]
    pub steps_per_epoch: Option<u64>,
    /// Number of epochs to print (needs `--steps-per-epoch`).
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Number of steps to print.
    #[arg(long)]
    pub steps: Option<u64>,
    /// One row per step or per epoch.
    #[arg(long, value_enum, default_value_t = Per::Step)]
    pub per: Per,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Also write an SVG plot (log-scale LR axis) to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

fn need<T: Copy>(v: Option<T>, flag: &str, kind: &str) -> Result<T> {
    v.ok_or_else(|| anyhow!("--kind {kind} needs {flag}"))
}

fn flag_name(field: &str) -> String {
    format!(
        "--{}",
        field.rsplit('.').next().unwrap_or(field).replace('_', "-")
    )
}

/// The spec described by the flags.
pub fn spec_from_flags(a: &ScheduleArgs) -> Result<ScheduleSpec> {
    let kind = a.kind.ok_or_else(|| anyhow!("give --kind or --spec"))?;
    let name = format!("{kind:?}").to_lowercase();
    let lr = need(a.lr, "--lr", &name)?;
    let spe = a.steps_per_epoch;
    let milestones = || -> Result<Vec<u64>> {
        if a.milestones.is_empty() {
            bail!("--kind {name} needs --milestones (comma separated, e.g. 80,120)")
        }
        Ok(a.milestones.clone())
    };
    Ok(match kind {
        KindArg::Constant => ScheduleSpec::Constant { lr },
        KindArg::Multistep => ScheduleSpec::Multistep {
            lr,
            milestones: milestones()?,
            gamma: need(a.gamma, "--gamma", &name)?,
            steps_per_epoch: spe,
        },
        KindArg::Step => ScheduleSpec::Step {
            lr,
            step_size: need(a.step_size, "--step-size", &name)?,
            gamma: need(a.gamma, "--gamma", &name)?,
            steps_per_epoch: spe,
        },
        KindArg::Exponential => ScheduleSpec::Exponential {
            lr,
            factor: need(a.factor, "--factor", &name)?,
            steps_per_epoch: spe,
        },
        KindArg::Cosine => ScheduleSpec::Cosine {
            lr,
            t_max: need(a.t_max, "--t-max", &name)?,
            eta_min: a.eta_min,
            steps_per_epoch: spe,
        },
        KindArg::Warmup => ScheduleSpec::Warmup {
            lr,
            start_factor: need(a.start_factor, "--start-factor", &name)?,
            end_factor: a.end_factor,
            total_iters: need(a.total_iters, "--total-iters", &name)?,
            steps_per_epoch: spe,
        },
        KindArg::Texp | KindArg::TexpMinus => {
            let (milestones, gamma) = (milestones()?, need(a.gamma, "--gamma", &name)?);
            let weight_decay = need(a.weight_decay, "--weight-decay", &name)?;
            let momentum = need(a.momentum, "--momentum", &name)?;
            ScheduleSpec::texp(
                kind == KindArg::TexpMinus,
                lr,
                milestones,
                gamma,
                weight_decay,
                momentum,
                spe,
            )
        }
    })
}

/// Library errors name YAML fields; on the command line, name the flag.
fn explain(e: ScheduleError, from_flags: bool) -> anyhow::Error {
    match (&e, from_flags) {
        (ScheduleError::InvalidField { field, .. }, true) => {
            let flag = flag_name(field);
            anyhow::Error::new(e).context(format!("{flag} is wrong"))
        }
        (ScheduleError::NoRealAlpha { .. }, true) => {
            anyhow::Error::new(e).context("--lr, --weight-decay and --momentum do not fit together")
        }
        _ => anyhow::Error::new(e),
    }
}

/// Derived quantities of one phase of an exponential schedule.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// First step.
    pub start_step: u64,
    /// The step-decay LR η_I (TEXP) or the base LR at the start.
    pub base_lr: f64,
    /// α of THEORY.md §3 (None for plain exponential schedules).
    pub alpha: Option<f64>,
    /// LR growth factor per step.
    pub per_step_growth: f64,
    /// LR growth factor per epoch (with `--steps-per-epoch`).
    pub per_epoch_growth: Option<f64>,
}

/// One printed row.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Update index (0 is the first update).
    pub step: u64,
    /// `step / steps_per_epoch`, when known.
    pub epoch: Option<f64>,
    /// The LR of that update.
    pub lr: f64,
}

/// The JSON document.
#[derive(Debug, Serialize)]
pub struct Output {
    /// The resolved spec.
    pub spec: ScheduleSpec,
    /// α for (lr, weight decay, momentum) when all are known.
    pub alpha: Option<f64>,
    /// Growth phases of exponential kinds (empty otherwise).
    pub phases: Vec<Phase>,
    /// The rows.
    pub rows: Vec<Row>,
}

fn steps_per_epoch_of(spec: &ScheduleSpec) -> Option<u64> {
    match spec {
        ScheduleSpec::Multistep {
            steps_per_epoch, ..
        }
        | ScheduleSpec::Step {
            steps_per_epoch, ..
        }
        | ScheduleSpec::Exponential {
            steps_per_epoch, ..
        }
        | ScheduleSpec::Cosine {
            steps_per_epoch, ..
        }
        | ScheduleSpec::Warmup {
            steps_per_epoch, ..
        }
        | ScheduleSpec::Sequential {
            steps_per_epoch, ..
        }
        | ScheduleSpec::Texp {
            steps_per_epoch, ..
        }
        | ScheduleSpec::TexpMinus {
            steps_per_epoch, ..
        } => *steps_per_epoch,
        ScheduleSpec::ExpEquivalent { base, .. } => steps_per_epoch_of(base),
        ScheduleSpec::Product { schedules } => schedules.iter().find_map(steps_per_epoch_of),
        ScheduleSpec::Constant { .. } => None,
    }
}

/// Builds the schedule and its rows and derived values.
pub fn compute(a: &ScheduleArgs) -> Result<Output> {
    let from_flags = a.spec.is_none();
    let mut spec = match &a.spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --spec {}", path.display()))?;
            ScheduleSpec::from_yaml(&text)
                .with_context(|| format!("parsing --spec {}", path.display()))?
        }
        None => spec_from_flags(a)?,
    };
    if a.exp_twin {
        spec = ScheduleSpec::ExpEquivalent {
            base: Box::new(spec),
            weight_decay: a
                .weight_decay
                .ok_or_else(|| anyhow!("--exp-twin needs --weight-decay"))?,
            momentum: a
                .momentum
                .ok_or_else(|| anyhow!("--exp-twin needs --momentum"))?,
        };
    }
    let schedule = Schedule::from_spec(&spec).map_err(|e| explain(e, from_flags))?;
    let spe = a.steps_per_epoch.or_else(|| steps_per_epoch_of(&spec));
    if spe == Some(0) {
        bail!("--steps-per-epoch must be >= 1");
    }
    let total = match (a.steps, a.epochs, spe) {
        (Some(s), _, _) => s,
        (None, Some(e), Some(s)) => e
            .checked_mul(s)
            .ok_or_else(|| anyhow!("--epochs × --steps-per-epoch overflows"))?,
        (None, Some(_), None) => bail!("--epochs needs --steps-per-epoch"),
        (None, None, _) => bail!("give --steps, or --epochs with --steps-per-epoch"),
    };
    let stride = match (a.per, spe) {
        (Per::Step, _) => 1,
        (Per::Epoch, Some(s)) => s,
        (Per::Epoch, None) => bail!("--per epoch needs --steps-per-epoch"),
    };
    let mut rows = Vec::new();
    let mut k = 0;
    while k < total {
        let lr = schedule.lr(k).map_err(|e| explain(e, from_flags))?;
        rows.push(Row {
            step: k,
            epoch: spe.map(|s| k as f64 / s as f64),
            lr,
        });
        k += stride;
    }
    let per_epoch = |g: f64| spe.map(|s| g.powf(s as f64));
    let mut phases = Vec::new();
    let mut alpha_out = None;
    if let Some(ps) = schedule.texp_phases() {
        alpha_out = ps.first().map(|p| p.alpha);
        for p in ps {
            phases.push(Phase {
                start_step: p.start,
                base_lr: p.base_lr,
                alpha: Some(p.alpha),
                per_step_growth: p.per_step_growth,
                per_epoch_growth: per_epoch(p.per_step_growth),
            });
        }
    } else if let ScheduleSpec::Exponential {
        lr,
        factor,
        steps_per_epoch,
    } = &spec
    {
        let (per_step, per_epoch_growth) = match steps_per_epoch {
            Some(s) => (factor.powf(1.0 / *s as f64), Some(*factor)),
            None => (*factor, per_epoch(*factor)),
        };
        phases.push(Phase {
            start_step: 0,
            base_lr: *lr,
            alpha: None,
            per_step_growth: per_step,
            per_epoch_growth,
        });
    } else if let ScheduleSpec::ExpEquivalent {
        weight_decay,
        momentum,
        ..
    } = &spec
    {
        let base_lr = schedule.lr(0)? / schedule.twin_scale(1)?; // η_0 = η̃_0 / (P_0 P_1), P_0 = 1
        let a0 = alpha(base_lr, *weight_decay, *momentum)?;
        alpha_out = Some(a0);
        let g = a0.powi(-2);
        phases.push(Phase {
            start_step: 0,
            base_lr,
            alpha: Some(a0),
            per_step_growth: g,
            per_epoch_growth: per_epoch(g),
        });
    } else if let (Some(lr), Some(wd), Some(m)) = (a.lr, a.weight_decay, a.momentum) {
        alpha_out = Some(alpha(lr, wd, m).map_err(|e| explain(e, true))?);
    }
    Ok(Output {
        spec,
        alpha: alpha_out,
        phases,
        rows,
    })
}

/// Runs `explr schedule`, writing the table to `out`.
pub fn run(a: &ScheduleArgs, out: &mut dyn Write) -> Result<()> {
    let o = compute(a)?;
    match a.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &o).context("writing JSON")?;
            writeln!(out)?;
        }
        Format::Csv => {
            if let Some(al) = o.alpha {
                writeln!(out, "# alpha={al:e}")?;
            }
            for p in &o.phases {
                write!(
                    out,
                    "# phase start_step={} base_lr={:e} per_step_growth={:e}",
                    p.start_step, p.base_lr, p.per_step_growth
                )?;
                if let Some(g) = p.per_epoch_growth {
                    write!(out, " per_epoch_growth={g:e}")?;
                }
                writeln!(out)?;
            }
            writeln!(out, "step,epoch,lr")?;
            for r in &o.rows {
                let epoch = r.epoch.map(|e| e.to_string()).unwrap_or_default();
                writeln!(out, "{},{},{:e}", r.step, epoch, r.lr)?;
            }
        }
    }
    if let Some(path) = &a.plot {
        std::fs::write(path, svg(&o.rows))
            .with_context(|| format!("writing --plot {}", path.display()))?;
    }
    Ok(())
}

/// A small SVG line plot of log10(lr) against the step.
pub fn svg(rows: &[Row]) -> String {
    let (w, h, m) = (800.0, 420.0, 60.0);
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.lr > 0.0)
        .map(|r| (r.step as f64, r.lr.log10()))
        .collect();
    let x_max = pts.last().map(|p| p.0).unwrap_or(1.0).max(1.0);
    let y_lo = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .floor();
    let y_hi = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max)
        .ceil()
        .max(y_lo + 1.0);
    let sx = |x: f64| m + (w - 2.0 * m) * x / x_max;
    let sy = |y: f64| h - m - (h - 2.0 * m) * (y - y_lo) / (y_hi - y_lo);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - m,
        w - m,
        h - m,
        h - m
    );
    let decades = (y_hi - y_lo) as i64;
    let every = (decades / 10 + 1).max(1);
    for d in (y_lo as i64..=y_hi as i64).step_by(every as usize) {
        let y = sy(d as f64);
        s += &format!("<line x1=\"{m}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">1e{d}</text>\n", w - m, m - 6.0, y + 4.0);
    }
    for i in 0..=4 {
        let x = x_max * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            sx(x),
            h - m + 18.0,
            x.round()
        );
    }
    s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">learning rate (log scale)</text>\n", w / 2.0, h - 14.0, h / 2.0, h / 2.0);
    let stride = (pts.len() / 4000).max(1);
    let line: Vec<String> = pts
        .iter()
        .step_by(stride)
        .chain(pts.last())
        .map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y)))
        .collect();
    s += &format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>\n</svg>\n",
        line.join(" ")
    );
    s
}
