//! `explr schedule`: print any schedule of explr-schedule per step or per epoch, and for an
//! exponential twin its scale P_t, its momentum corrections c_k and its LR against the exact
//! §4 recursion's (THEORY.md §4–§5).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{bail, usage};
use crate::error::{CommandError, Context, Result};
use explr_schedule::{alpha, Schedule, ScheduleError, ScheduleSpec, Twin, Unit, WeightDecay};
use serde::Serialize;

use explr_results::plot::{Chart, Series};

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
    /// A YAML schedule spec instead of the flags: the YAML itself
    /// (`'{kind: multistep, lr: 0.1, milestones: [80, 120], gamma: 0.1}'`, as
    /// `--weight-decay-schedule` takes it) or the path of a file that holds it.
    #[arg(long, value_name = "YAML|FILE")]
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
    v.ok_or_else(|| usage!("--kind {kind} needs {flag}"))
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
    let kind = a.kind.ok_or_else(|| usage!("give --kind or --spec"))?;
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
fn explain(e: ScheduleError, from_flags: bool) -> CommandError {
    match (&e, from_flags) {
        (ScheduleError::InvalidField { field, .. }, true) => {
            let flag = flag_name(field);
            CommandError::failed(format!("{flag} is wrong"), e)
        }
        (ScheduleError::NoRealAlpha { .. }, true) => {
            CommandError::failed("--lr, --weight-decay and --momentum do not fit together", e)
        }
        _ => CommandError::from(e),
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

/// The JSON document: the header's fields and the rows.
#[derive(Debug, Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    header: &'a Header,
    rows: Vec<Row>,
}

/// What is known before the first row: the spec, α, the twin and its phases.
#[derive(Debug, Serialize)]
pub struct Header {
    /// The resolved spec.
    pub spec: ScheduleSpec,
    /// α for (lr, weight decay, momentum) when all are known (a twin's α_0).
    pub alpha: Option<f64>,
    /// The twin's rule, momentum and pre-fill, for twins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twin: Option<TwinInfo>,
    /// Growth phases of exponential kinds (empty otherwise).
    pub phases: Vec<Phase>,
}

/// The most rows `--format json` holds in memory; CSV streams any number.
pub const JSON_ROW_LIMIT: u64 = 1_000_000;

/// The points kept for `--plot`: per column of the x axis the lowest and the highest LR, so
/// that a jump stays visible however many steps a column holds.
const PLOT_COLUMNS: u64 = 2_000;

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
        usage!("{flag} needs --weight-decay or --weight-decay-schedule (the base run's)")
    })?;
    let momentum = a
        .momentum
        .ok_or_else(|| usage!("{flag} needs --momentum"))?;
    let twin = match kind {
        TwinArg::Exact => Twin::exact(base, wd, momentum),
        TwinArg::Texp => Twin::texp(base, wd, momentum),
        TwinArg::TexpMinus => Twin::texp_minus(base, wd, momentum),
    };
    twin.map_err(|e| CommandError::failed(flag, explain(e, true)))
}

/// A schedule ready to print: its header and a way to stream its rows.
pub struct Table {
    /// The derived values.
    pub header: Header,
    base: Schedule,
    twin: Option<Twin>,
    exact: Option<Twin>,
    from_flags: bool,
    steps_per_epoch: Option<u64>,
    total: u64,
    stride: u64,
}

impl Table {
    /// The number of rows [`Table::for_each_row`] yields.
    pub fn rows(&self) -> u64 {
        self.total.div_ceil(self.stride)
    }

    /// Calls `f` with every row in order, in constant memory (a twin is walked update by
    /// update, [`Twin::walk`]).
    pub fn for_each_row(&self, mut f: impl FnMut(Row) -> Result<()>) -> Result<()> {
        let spe = self.steps_per_epoch;
        let epoch = |k: u64| spe.map(|s| k as f64 / s as f64);
        match (&self.twin, &self.exact) {
            (Some(twin), Some(exact)) => {
                for pair in twin.walk().zip(exact.walk()).take(self.total as usize) {
                    let (t, x) = (pair.0?, pair.1?);
                    if t.step % self.stride == 0 {
                        f(Row {
                            step: t.step,
                            epoch: epoch(t.step),
                            lr: t.lr,
                            scale: Some(t.scale),
                            correction: Some(t.correction),
                            lr_over_exact: Some(t.lr / x.lr),
                        })?;
                    }
                }
            }
            _ => {
                let mut k = 0;
                while k < self.total {
                    let lr = self.base.lr(k).map_err(|e| explain(e, self.from_flags))?;
                    f(Row {
                        step: k,
                        epoch: epoch(k),
                        lr,
                        scale: None,
                        correction: None,
                        lr_over_exact: None,
                    })?;
                    k += self.stride;
                }
            }
        }
        Ok(())
    }
}

/// The spec `--spec` gives: the file it names when there is one, else the YAML it is.
fn spec_argument(arg: &Path) -> Result<ScheduleSpec> {
    if arg.is_file() {
        let text = std::fs::read_to_string(arg)
            .with_context(|| format!("reading --spec {}", arg.display()))?;
        return ScheduleSpec::from_yaml(&text)
            .with_context(|| format!("parsing --spec {}", arg.display()));
    }
    let inline = arg.to_str().filter(|t| t.contains(':'));
    match inline {
        Some(yaml) => ScheduleSpec::from_yaml(yaml).context("parsing the YAML of --spec"),
        None => bail!(
            "--spec `{}` is neither a file nor a YAML spec; give the YAML \
             (`--spec '{{kind: multistep, lr: 0.1, milestones: [80, 120], gamma: 0.1}}'`) or \
             the path of a file that holds it",
            arg.display()
        ),
    }
}

/// Builds the schedule, its derived values and the row range.
pub fn table(a: &ScheduleArgs) -> Result<Table> {
    let from_flags = a.spec.is_none();
    let spec = match &a.spec {
        Some(arg) => spec_argument(arg)?,
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
    let total = match (a.steps, a.epochs, spe) {
        (Some(s), _, _) => s,
        (None, Some(e), Some(s)) => e
            .checked_mul(s)
            .ok_or_else(|| usage!("--epochs × --steps-per-epoch overflows"))?,
        (None, Some(_), None) => bail!("--epochs needs --steps-per-epoch"),
        (None, None, _) => bail!("give --steps, or --epochs with --steps-per-epoch"),
    };
    if usize::try_from(total).is_err() {
        bail!("--steps {total} is more than this machine can count; give fewer");
    }
    let stride = match (a.per, spe) {
        (Per::Step, _) => 1,
        (Per::Epoch, Some(s)) => s,
        (Per::Epoch, None) => bail!("--per epoch needs --steps-per-epoch"),
    };
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
    let shown = twin.as_ref().map_or(&base, Twin::schedule);
    let header = Header {
        spec: shown.spec().clone(),
        alpha: alpha_out,
        twin: twin_info,
        phases,
    };
    // A twin's rows come from its walk; `base` gives the rows of any other schedule.
    Ok(Table {
        header,
        base,
        twin,
        exact,
        from_flags,
        steps_per_epoch: spe,
        total,
        stride,
    })
}

impl Table {
    /// The rows in memory, refused above [`JSON_ROW_LIMIT`] (for `--format json`).
    pub fn collect(&self) -> Result<Vec<Row>> {
        if self.rows() > JSON_ROW_LIMIT {
            bail!(
                "--format json holds every row in memory and {} rows is more than {JSON_ROW_LIMIT}; \
                 use --format csv (streamed, any length) or --per epoch",
                self.rows()
            );
        }
        let mut rows = Vec::new();
        self.for_each_row(|r| {
            rows.push(r);
            Ok(())
        })?;
        Ok(rows)
    }
}

/// Per plot column, the rows with the lowest and the highest LR, in step order.
struct PlotSampler {
    per_column: u64,
    column: u64,
    low: Option<(u64, f64)>,
    high: Option<(u64, f64)>,
    points: Vec<(f64, f64)>,
}

impl PlotSampler {
    fn new(rows: u64, stride: u64) -> Self {
        Self {
            per_column: (rows.div_ceil(PLOT_COLUMNS)).max(1) * stride,
            column: 0,
            low: None,
            high: None,
            points: Vec::new(),
        }
    }

    fn flush(&mut self) {
        let mut both: Vec<(u64, f64)> = self.low.take().into_iter().collect();
        if let Some(h) = self.high.take() {
            if both.first() != Some(&h) {
                both.push(h);
            }
        }
        both.sort_by_key(|p| p.0);
        self.points
            .extend(both.into_iter().map(|(k, lr)| (k as f64, lr)));
    }

    fn add(&mut self, step: u64, lr: f64) {
        let column = step / self.per_column;
        if column != self.column {
            self.flush();
            self.column = column;
        }
        if !(lr > 0.0 && lr.is_finite()) {
            return;
        }
        if self.low.is_none_or(|(_, l)| lr < l) {
            self.low = Some((step, lr));
        }
        if self.high.is_none_or(|(_, h)| lr > h) {
            self.high = Some((step, lr));
        }
    }

    fn finish(mut self) -> Vec<(f64, f64)> {
        self.flush();
        self.points
    }
}

fn write_csv_header(out: &mut dyn Write, h: &Header) -> Result<()> {
    if let Some(al) = h.alpha {
        writeln!(out, "# alpha={al:e}")?;
    }
    if let Some(t) = &h.twin {
        writeln!(
            out,
            "# twin rule={} momentum={:e} prefill={:e}",
            t.rule, t.momentum, t.prefill
        )?;
    }
    for p in &h.phases {
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
    let columns = if h.twin.is_some() {
        ",scale,correction,lr_over_exact"
    } else {
        ""
    };
    writeln!(out, "step,epoch,lr{columns}")?;
    Ok(())
}

fn write_csv_row(out: &mut dyn Write, r: &Row) -> std::io::Result<()> {
    let epoch = r.epoch.map(|e| e.to_string()).unwrap_or_default();
    write!(out, "{},{},{:e}", r.step, epoch, r.lr)?;
    if let (Some(s), Some(c), Some(x)) = (r.scale, r.correction, r.lr_over_exact) {
        write!(out, ",{s:e},{c:e},{x:e}")?;
    }
    writeln!(out)
}

/// Runs `explr schedule`, writing the table to `out`: CSV streams its rows (constant memory for
/// any `--steps`), JSON is one document of at most [`JSON_ROW_LIMIT`] rows.
pub fn run(a: &ScheduleArgs, out: &mut dyn Write) -> Result<()> {
    let t = table(a)?;
    let mut sampler = a
        .plot
        .as_ref()
        .map(|_| PlotSampler::new(t.rows(), t.stride));
    match a.format {
        Format::Json => {
            let rows = t.collect()?;
            if let Some(s) = sampler.as_mut() {
                rows.iter().for_each(|r| s.add(r.step, r.lr));
            }
            let doc = Document {
                header: &t.header,
                rows,
            };
            serde_json::to_writer_pretty(&mut *out, &doc).context("writing JSON")?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
            write_csv_header(&mut out, &t.header)?;
            t.for_each_row(|r| {
                write_csv_row(&mut out, &r).context("writing CSV")?;
                if let Some(s) = sampler.as_mut() {
                    s.add(r.step, r.lr);
                }
                Ok(())
            })?;
            out.flush().context("writing CSV")?;
        }
    }
    if let (Some(path), Some(sampler)) = (&a.plot, sampler) {
        let chart = Chart {
            title: "learning rate".into(),
            x_label: "step".into(),
            y_label: "learning rate (log scale)".into(),
            log_y: true,
            log_x: false,
            series: vec![Series::line("lr", sampler.finish())],
            markers: t
                .header
                .phases
                .iter()
                .skip(1)
                .map(|p| (p.start_step as f64, format!("phase at {}", p.start_step)))
                .collect(),
        };
        explr_io::write_atomic(path, chart.to_svg().as_bytes())
            .with_context(|| format!("writing --plot {}", path.display()))?;
    }
    Ok(())
}
