//! `explr schedule`: print any schedule of explr-schedule per step or per epoch, and for an
//! exponential twin its scale P_t, its momentum corrections c_k and its LR against the exact
//! §4 recursion's (THEORY.md §4–§5).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use explr_schedule::{alpha, Schedule, ScheduleError, ScheduleSpec, Twin, Unit, WeightDecay};
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
    /// TEXP-- (growth change only at the boundaries): the twin of `--lr` with the weight
    /// decay multiplied by `--gamma` at the milestones.
    TexpMinus,
}

/// The exponential twins `--twin` builds from the schedule and its weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TwinArg {
    /// The §4 recursion (THEORY.md §4): exact without corrections, for any schedule.
    Exact,
    /// TEXP (THEORY.md §5): §3's root at every update, corrected where it jumps.
    Texp,
    /// TEXP--: no instant decay (a multistep with a constant weight decay, or a constant LR
    /// with any weight decay).
    TexpMinus,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `step,epoch,lr` rows (twins add `scale,correction,lr_over_exact`), derived values as
    /// `#` comment lines first.
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
/// `--total-iters`, and those of `--spec` and `--weight-decay-schedule`) are in epochs when
/// `--steps-per-epoch` is given, else in steps.
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
    /// Weight decay λ (TEXP, `--twin`, and the derived α).
    #[arg(
        long,
        allow_negative_numbers = true,
        conflicts_with = "weight_decay_schedule"
    )]
    pub weight_decay: Option<f64>,
    /// The weight decay as a YAML schedule, inline (for `--twin`), e.g.
    /// '{kind: multistep, lr: 5.0e-4, milestones: [80, 120], gamma: 0.1}'.
    #[arg(long)]
    pub weight_decay_schedule: Option<String>,
    /// Momentum γ (TEXP, `--twin`, and the derived α).
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Print an exponential twin of the schedule run with its weight decay instead
    /// (THEORY.md §4–§5): its LR, P_t, momentum corrections and LR over the exact one's.
    #[arg(long, value_enum)]
    pub twin: Option<TwinArg>,
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

/// A value of a flag as it is typed (`texp-minus`).
fn flag_value(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
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
    let name = flag_value(kind);
    let lr = need(a.lr, "--lr", &name)?;
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
        },
        KindArg::Step => ScheduleSpec::Step {
            lr,
            step_size: need(a.step_size, "--step-size", &name)?,
            gamma: need(a.gamma, "--gamma", &name)?,
        },
        KindArg::Exponential => ScheduleSpec::Exponential {
            lr,
            factor: need(a.factor, "--factor", &name)?,
        },
        KindArg::Cosine => ScheduleSpec::Cosine {
            lr,
            t_max: need(a.t_max, "--t-max", &name)?,
            eta_min: a.eta_min,
        },
        KindArg::Warmup => ScheduleSpec::Warmup {
            lr,
            start_factor: need(a.start_factor, "--start-factor", &name)?,
            end_factor: a.end_factor,
            total_iters: need(a.total_iters, "--total-iters", &name)?,
        },
        KindArg::Texp => ScheduleSpec::Texp {
            lr,
            milestones: milestones()?,
            gamma: need(a.gamma, "--gamma", &name)?,
            weight_decay: need(a.weight_decay, "--weight-decay", &name)?,
            momentum: need(a.momentum, "--momentum", &name)?,
        },
        KindArg::TexpMinus => ScheduleSpec::TexpMinus {
            lr,
            milestones: milestones()?,
            gamma: need(a.gamma, "--gamma", &name)?,
            weight_decay: need(a.weight_decay, "--weight-decay", &name)?,
            momentum: need(a.momentum, "--momentum", &name)?,
        },
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
    /// The base run's LR at the start (the step-decay LR η_I for TEXP).
    pub base_lr: f64,
    /// A twin's base-run weight decay at the start (divided at the milestones for TEXP--).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// α of THEORY.md §3 (None for plain exponential schedules).
    pub alpha: Option<f64>,
    /// LR growth factor per step.
    pub per_step_growth: f64,
    /// LR growth factor per epoch (with `--steps-per-epoch`).
    pub per_epoch_growth: Option<f64>,
    /// A twin's momentum correction c at the phase's first update (THEORY.md §5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correction: Option<f64>,
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
    /// A twin's P_t: its weights are P_t times the base run's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// A twin's momentum correction c_t (THEORY.md §5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correction: Option<f64>,
    /// A twin's LR over the exact §4 twin's LR of the same base run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_over_exact: Option<f64>,
}

/// What a twin adds to the output.
#[derive(Debug, Serialize)]
pub struct TwinInfo {
    /// How α is chosen (`recursion` or `root`).
    pub rule: explr_schedule::AlphaRule,
    /// Momentum γ.
    pub momentum: f64,
    /// The momentum pre-fill coefficient p (ṽ_0 = p·θ_0, THEORY.md §3).
    pub prefill: f64,
}

/// The JSON document.
#[derive(Debug, Serialize)]
pub struct Output {
    /// The resolved spec.
    pub spec: ScheduleSpec,
    /// α for (lr, weight decay, momentum) when all are known (a twin's α_0).
    pub alpha: Option<f64>,
    /// The twin's rule, momentum and pre-fill, for twins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twin: Option<TwinInfo>,
    /// Growth phases of exponential kinds (empty otherwise).
    pub phases: Vec<Phase>,
    /// The rows.
    pub rows: Vec<Row>,
}

/// The base run's weight decay from `--weight-decay` or `--weight-decay-schedule`.
fn weight_decay(a: &ScheduleArgs, unit: Unit) -> Result<Option<WeightDecay>> {
    Ok(match (&a.weight_decay_schedule, a.weight_decay) {
        (Some(yaml), _) => {
            let spec = ScheduleSpec::from_yaml(yaml).context("parsing --weight-decay-schedule")?;
            let schedule = Schedule::build(&spec, unit).context("--weight-decay-schedule")?;
            Some(WeightDecay::Schedule(schedule))
        }
        (None, Some(lambda)) => Some(WeightDecay::Constant(lambda)),
        (None, None) => None,
    })
}

/// The twin `--twin` asks for, of `base` run with the flags' weight decay and momentum.
fn twin_of(kind: TwinArg, base: &Schedule, a: &ScheduleArgs, unit: Unit) -> Result<Twin> {
    let flag = format!("--twin {}", flag_value(kind));
    let wd = weight_decay(a, unit)?.ok_or_else(|| {
        anyhow!("{flag} needs --weight-decay or --weight-decay-schedule (the base run's)")
    })?;
    let momentum = a
        .momentum
        .ok_or_else(|| anyhow!("{flag} needs --momentum"))?;
    let twin = match kind {
        TwinArg::Exact => Twin::exact(base, wd, momentum),
        TwinArg::Texp => Twin::texp(base, wd, momentum),
        TwinArg::TexpMinus => Twin::texp_minus(base, wd, momentum),
    };
    twin.map_err(|e| explain(e, true).context(flag))
}

/// Builds the schedule and its rows and derived values.
pub fn compute(a: &ScheduleArgs) -> Result<Output> {
    let from_flags = a.spec.is_none();
    let spec = match &a.spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --spec {}", path.display()))?;
            ScheduleSpec::from_yaml(&text)
                .with_context(|| format!("parsing --spec {}", path.display()))?
        }
        None => spec_from_flags(a)?,
    };
    let spe = a.steps_per_epoch;
    if spe == Some(0) {
        bail!("--steps-per-epoch must be >= 1");
    }
    let unit = spe.map_or(Unit::Steps, Unit::Epochs);
    let base = Schedule::build(&spec, unit).map_err(|e| explain(e, from_flags))?;
    // `texp`, `texp_minus` and `exp_equivalent` schedules are twins themselves.
    let twin = match a.twin {
        Some(kind) => Some(twin_of(kind, &base, a, unit)?),
        None => base.twin().ok(),
    };
    let exact = twin.as_ref().map(Twin::exact_counterpart).transpose()?;
    let schedule = twin.as_ref().map_or(&base, Twin::schedule);
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
        let (scale, correction, lr_over_exact) = match (&twin, &exact) {
            (Some(t), Some(x)) => (
                Some(t.scale(k)?),
                Some(t.correction(k)?),
                Some(lr / x.lr(k)?),
            ),
            _ => (None, None, None),
        };
        rows.push(Row {
            step: k,
            epoch: spe.map(|s| k as f64 / s as f64),
            lr,
            scale,
            correction,
            lr_over_exact,
        });
        k += stride;
    }
    let per_epoch = |g: f64| spe.map(|s| g.powf(s as f64));
    let mut phases = Vec::new();
    let mut alpha_out = None;
    let mut twin_info = None;
    if let Some(t) = &twin {
        alpha_out = Some(t.alpha(0)?);
        twin_info = Some(TwinInfo {
            rule: t.rule(),
            momentum: t.momentum(),
            prefill: t.prefill_coefficient(),
        });
        for p in t.phases(total)? {
            phases.push(Phase {
                start_step: p.start,
                base_lr: p.base_lr,
                weight_decay: Some(p.weight_decay),
                alpha: Some(p.alpha),
                per_step_growth: p.per_step_growth,
                per_epoch_growth: per_epoch(p.per_step_growth),
                correction: Some(p.correction),
            });
        }
    } else if let ScheduleSpec::Exponential { lr, factor } = &spec {
        let (per_step, per_epoch_growth) = match spe {
            Some(s) => (factor.powf(1.0 / s as f64), Some(*factor)),
            None => (*factor, None),
        };
        phases.push(Phase {
            start_step: 0,
            base_lr: *lr,
            weight_decay: None,
            alpha: None,
            per_step_growth: per_step,
            per_epoch_growth,
            correction: None,
        });
    } else if let (Some(lr), Some(wd), Some(m)) = (a.lr, a.weight_decay, a.momentum) {
        alpha_out = Some(alpha(lr, wd, m).map_err(|e| explain(e, true))?);
    }
    Ok(Output {
        spec: schedule.spec().clone(),
        alpha: alpha_out,
        twin: twin_info,
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
            if let Some(t) = &o.twin {
                writeln!(
                    out,
                    "# twin rule={} momentum={:e} prefill={:e}",
                    t.rule, t.momentum, t.prefill
                )?;
            }
            for p in &o.phases {
                write!(
                    out,
                    "# phase start_step={} base_lr={:e} per_step_growth={:e}",
                    p.start_step, p.base_lr, p.per_step_growth
                )?;
                if let Some(w) = p.weight_decay {
                    write!(out, " weight_decay={w:e}")?;
                }
                if let Some(g) = p.per_epoch_growth {
                    write!(out, " per_epoch_growth={g:e}")?;
                }
                if let Some(c) = p.correction {
                    write!(out, " correction={c:e}")?;
                }
                writeln!(out)?;
            }
            let twin = o.twin.is_some();
            writeln!(
                out,
                "step,epoch,lr{}",
                if twin {
                    ",scale,correction,lr_over_exact"
                } else {
                    ""
                }
            )?;
            let num = |v: Option<f64>| v.map(|v| format!("{v:e}")).unwrap_or_default();
            for r in &o.rows {
                let epoch = r.epoch.map(|e| e.to_string()).unwrap_or_default();
                write!(out, "{},{},{:e}", r.step, epoch, r.lr)?;
                if twin {
                    let (s, c, x) = (num(r.scale), num(r.correction), num(r.lr_over_exact));
                    write!(out, ",{s},{c},{x}")?;
                }
                writeln!(out)?;
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
