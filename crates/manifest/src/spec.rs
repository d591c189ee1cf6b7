//! The experiment sections of a manifest, as plain data (configs are data; runtime objects are
//! built from them by the runner), and the vocabulary they share: [`Metric`] names what a
//! training run records, [`FieldError`] says which field of a section is wrong.

use std::collections::BTreeMap;

use explr_data::DatasetName;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// A model, as the zoo describes it (`arch`, `depth`, `norm`, `width`, `freeze_norm_affine`,
/// `freeze_head`, `eps`, …).
pub type ModelSection = explr_zoo::ModelSpec;
/// An LR schedule, as the schedule crate describes it (`kind: multistep`, …). In manifests every
/// step count (milestones, `t_max`, …) is in **epochs**: the runner builds the schedule with
/// `Unit::Epochs` of the data's steps per epoch, so one manifest serves every profile.
pub type ScheduleSection = explr_schedule::ScheduleSpec;

/// A manifest as written in the file (profiles not yet applied).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The claim's id in EXPERIMENTS.md (`E1`, `X2`, …).
    pub id: String,
    /// One line saying what is claimed.
    pub title: String,
    /// Where in the paper (section / figure).
    pub paper: String,
    /// The claim in a sentence or two, and what decides it.
    pub claim: String,
    /// A training experiment (E1–E6, N1, A1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// A step-by-step exactness check on a real network (X1, X2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exactness: Option<Exactness>,
    /// A scale-invariance check over zoo models (S1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_invariance: Option<ScaleInvariance>,
    /// The toy example of THEORY.md §7 (T1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toy: Option<Toy>,
    /// Relative tolerance for the numbers of this manifest's golden summary, replacing the
    /// golden check's default (2e-3). Only for runs whose dynamics are chaotic, where a change of
    /// summation order moves the final numbers by percent; verdicts, booleans and strings
    /// still compare equal. Between 0 and 1 (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_tolerance: Option<f64>,
    /// What one Slurm array task of this manifest asks for (`explr replicate --executor
    /// slurm`); [`SlurmSection::default`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmSection>,
    /// Overrides per profile, deep-merged onto the fields above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, Value>,
}

impl Manifest {
    /// The one experiment section present.
    pub fn experiment(&self) -> Result<Experiment<'_>, FieldError> {
        let present: Vec<Experiment<'_>> = [
            self.training.as_ref().map(Experiment::Training),
            self.exactness.as_ref().map(Experiment::Exactness),
            self.scale_invariance
                .as_ref()
                .map(Experiment::ScaleInvariance),
            self.toy.as_ref().map(Experiment::Toy),
        ]
        .into_iter()
        .flatten()
        .collect();
        match present.as_slice() {
            [one] => Ok(*one),
            _ => Err(FieldError::new(
                "id",
                format!(
                    "a manifest needs exactly one of `training`, `exactness`, `scale_invariance`, \
                     `toy`; found {}",
                    present.len()
                ),
            )),
        }
    }
}

/// The resources of one Slurm array task (one run of a training manifest, or the whole
/// experiment of another kind) for `explr replicate --executor slurm`. The GPU comes from
/// `--device` (one per task for `cuda`); the partition, account and the like belong to the
/// cluster and go on the command line (`--slurm-opt partition=gpu`), which also overrides
/// these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmSection {
    /// Time limit of one task (`--time`): `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or
    /// `D-HH:MM:SS`. A run that needs longer checkpoints before the limit and requeues itself.
    pub time: String,
    /// CPUs of one task (`--cpus-per-task`): the loader's and the CPU kernels' threads.
    pub cpus_per_task: u32,
    /// Memory of one task (`--mem`: a whole number with an optional `K`, `M`, `G` or `T`
    /// suffix); the cluster's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// Seconds before the time limit at which Slurm signals the task (`--signal=B:USR1@N`):
    /// the run finishes its epoch, checkpoints, and the task requeues itself. It must cover an
    /// epoch and a checkpoint write, and be at least 60 (Slurm may signal up to 60 s early).
    pub stop_before_limit_s: u64,
}

impl Default for SlurmSection {
    fn default() -> Self {
        Self {
            time: "04:00:00".into(),
            cpus_per_task: 1,
            mem: None,
            stop_before_limit_s: 300,
        }
    }
}

impl SlurmSection {
    /// [`Self::time`] in seconds; `None` when it is not one of Slurm's time formats.
    pub fn time_limit_s(&self) -> Option<u64> {
        let (days, rest) = match self.time.split_once('-') {
            Some((d, rest)) => (Some(d.parse::<u64>().ok()?), rest),
            None => (None, self.time.as_str()),
        };
        let parts: Vec<u64> = rest
            .split(':')
            .map(|p| {
                (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| p.parse().ok())
                    .flatten()
            })
            .collect::<Option<_>>()?;
        // Checked: a time too long to count in seconds is no time limit either.
        let (d, h, m, s) = match (days, parts.as_slice()) {
            (None, [m]) => (0, 0, *m, 0),
            (None, [m, s]) => (0, 0, *m, *s),
            (None, [h, m, s]) => (0, *h, *m, *s),
            (Some(d), [h]) => (d, *h, 0, 0),
            (Some(d), [h, m]) => (d, *h, *m, 0),
            (Some(d), [h, m, s]) => (d, *h, *m, *s),
            _ => return None,
        };
        d.checked_mul(86400)?
            .checked_add(h.checked_mul(3600)?)?
            .checked_add(m.checked_mul(60)?)?
            .checked_add(s)
    }
}

/// Floating-point precision of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32.
    #[default]
    F32,
    /// float64.
    F64,
}

/// The one experiment a manifest describes.
#[derive(Clone, Copy, Debug)]
pub enum Experiment<'a> {
    /// Epoch-level training runs compared as curves.
    Training(&'a Training),
    /// Step-level exactness of the equivalence on a real network.
    Exactness(&'a Exactness),
    /// L(cθ) = L(θ) over zoo models.
    ScaleInvariance(&'a ScaleInvariance),
    /// THEORY.md §7.
    Toy(&'a Toy),
}

/// Data section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Dataset (`synthetic`, `cifar10`, `cifar100`, `cifar100-coarse`).
    pub dataset: DatasetName,
    /// Use only the first N training images (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_size: Option<usize>,
    /// Use only the first N test images (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_size: Option<usize>,
    /// Minibatch size.
    pub batch_size: usize,
    /// Standard CIFAR augmentation (pad 4 + random crop, random flip).
    #[serde(default = "yes")]
    pub augment: bool,
    /// Seed of the synthetic dataset.
    #[serde(default)]
    pub synthetic_seed: u64,
    /// Share of the class colour in the synthetic dataset's shapes (`explr_data`'s
    /// `SyntheticConfig::tint`; default 0.35, a weak cue; 1 makes the task easy enough for a
    /// tiny network to learn in a few hundred steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_tint: Option<f32>,
}

fn yes() -> bool {
    true
}

/// How a derived run is obtained from its base run (THEORY.md §4–§5). Every twin starts from
/// the pre-filled momentum buffer of §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// TEXP, the tapered exponential equivalent of a step decay, with the one-time momentum
    /// correction at each phase start that makes it exact.
    Texp,
    /// TEXP without the corrections (the paper's plain TEXP): a control, not exact.
    TexpPlain,
    /// TEXP-- (growth-rate change without the instant decay), corrected: the exact twin of
    /// keeping the LR and dividing the weight decay.
    TexpMinus,
    /// TEXP-- without the corrections: a control, not exact.
    TexpMinusPlain,
    /// The §4 recursion applied to any schedule and weight decay (schedule): exact without
    /// corrections.
    Exact,
}

/// A derived run: the exponential twin of another run, without weight decay on the
/// scale-invariant group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derive {
    /// The base run's name.
    pub from: String,
    /// Which transform.
    pub transform: Transform,
    /// Build the twin as if the base run's weight decay were this many times larger (default
    /// 1): a twin that grows at the wrong rate, for negative controls.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight_decay_factor: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// One optimizer + schedule configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Momentum γ.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Weight decay λ (coupled, PyTorch's form).
    #[serde(default)]
    pub weight_decay: f64,
    /// A schedule whose value at each step is the weight decay of every group (e.g.
    /// `{kind: multistep, lr: 5.0e-4, milestones: [80, 120], gamma: 0.1}` divides the WD by 10
    /// at epochs 80 and 120). Exclusive with `weight_decay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay_schedule: Option<ScheduleSection>,
    /// The LR schedule (absent for derived runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSection>,
    /// Derive this run from another one instead of giving a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive: Option<Derive>,
}

fn default_momentum() -> f64 {
    0.9
}

/// An inclusive range of epochs (1-based), written `[from, to]`.
pub type Window = [usize; 2];

/// A rule that decides the claim: what is measured, its bound, and a one-line `reason` saying
/// where the bound comes from (the maths, or a control it must reject). Every rule averages:
/// over the epochs of a window and over seeds, pairing runs trained from the same seed (same
/// initial weights, same batches). A rule that names run `X` is also applied, with `X`
/// replaced, to every control that replaces `X` (see [`Control`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "check")]
pub enum Check {
    /// Paired weight-space distance of the scale-invariant group at the end of `epoch`:
    /// ‖(P^b_t/P^a_t)·θ^a_t − θ^b_t‖ / ‖θ^b_t‖ (P_t the run's own scale: 1 for a run with a
    /// schedule, the twin's for a derived run; THEORY.md §3–§5), averaged over seeds, at most
    /// `bound`. An equivalent pair starts at rounding level and separates only through chaos;
    /// a wrong twin differs from its first step.
    WeightDistance {
        /// First run.
        a: String,
        /// Second run.
        b: String,
        /// The epoch (1-based) at whose end the weights are compared.
        epoch: usize,
        /// Updates (the runs' update counts, from 1, before the end of `epoch`) after which the
        /// distance is also measured and recorded, not held to the bound: how it grows from
        /// rounding (e.g. 1, 2, 4, …, 256 in float32).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        steps: Vec<u64>,
        /// Largest allowed mean distance.
        bound: f64,
        /// Where the bound comes from.
        reason: String,
    },
    /// Paired gap of `metric` over windows of epochs: for each seed and window, the mean of
    /// metric(a) − metric(b) over the window (or, when `relative`, the ratio of the two window
    /// means minus 1); the largest over the windows of |mean over seeds|, at most `bound`.
    /// Windows at the ends of the LR phases compare what the paper's curves show.
    WindowGap {
        /// First run.
        a: String,
        /// Second run.
        b: String,
        /// The metric compared.
        metric: Metric,
        /// The windows, `[from, to]` in epochs (inclusive).
        windows: Vec<Window>,
        /// Largest allowed gap.
        bound: f64,
        /// Compare the ratio of the window means with 1 instead of their difference.
        #[serde(default)]
        relative: bool,
        /// Derive the bound from how a run's seeds scatter (see [`SeedSpread`]); `bound` is
        /// then its floor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed_spread: Option<SeedSpread>,
        /// Where the bound comes from.
        reason: String,
    },
    /// A premise of the profile, not of the claim: `run` reaches `at_least` in `metric` (the
    /// mean over seeds of its mean over `window`), e.g. step decay's final test accuracy, so
    /// that the profile trains the kind of network the claim is about. When it does not, no
    /// other check can be read as evidence for or against the claim, and the verdict is
    /// inconclusive (never fail).
    Reaches {
        /// The run.
        run: String,
        /// The metric.
        metric: Metric,
        /// The window, `[from, to]` in epochs (inclusive).
        window: Window,
        /// The level it must reach.
        at_least: f64,
        /// Where the level comes from.
        reason: String,
    },
    /// Run `a` ends higher than `b`: the paired mean over seeds of the mean of metric(a) −
    /// metric(b) over `window` is at least `margin`.
    Greater {
        /// Run expected higher.
        a: String,
        /// Run expected lower.
        b: String,
        /// The metric.
        metric: Metric,
        /// The window, `[from, to]` in epochs (inclusive).
        window: Window,
        /// Required margin.
        margin: f64,
        /// Where the margin comes from.
        reason: String,
    },
    /// The mean angular update per step of `run` over `window` matches the equilibrium
    /// prediction sqrt(2ηλ/(1+γ)) (THEORY.md §8, with the run's η at each epoch, its λ and γ)
    /// within `tolerance` (relative), averaged over seeds.
    AngularUpdate {
        /// A run with a schedule and a constant weight decay.
        run: String,
        /// The window, `[from, to]` in epochs (inclusive).
        window: Window,
        /// Largest allowed relative error.
        tolerance: f64,
        /// Where the tolerance comes from.
        reason: String,
    },
    /// `metric` of `run` (mean over seeds) stays within a factor `1 ± tolerance` of its mean
    /// over `window` (e.g. ‖w‖²/η̃ of an exponential run, THEORY.md §3).
    NearlyConstant {
        /// The run.
        run: String,
        /// The metric.
        metric: Metric,
        /// The window, `[from, to]` in epochs (inclusive).
        window: Window,
        /// Largest allowed relative spread.
        tolerance: f64,
        /// Where the tolerance comes from.
        reason: String,
    },
}

/// A [`Check::WindowGap`] bound taken from the seeds' own scatter: `factor` times the sample
/// standard deviation over seeds of `run`'s window means (the largest over the windows), or
/// the check's `bound` where that is larger. The bound is then itself the noise the gap is
/// weighed against, so the check is decided on the mean gap over seeds, without a confidence
/// interval on top (the interval is still reported). It needs two seeds or more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSpread {
    /// The claimed run whose seeds measure the scatter (e.g. step decay).
    pub run: String,
    /// How many standard deviations the bound is.
    pub factor: f64,
}

impl Check {
    /// Whether this is a premise of the profile ([`Check::Reaches`]) rather than a test of the
    /// claim: controls are not judged by it, and its failure makes the verdict inconclusive.
    pub fn is_premise(&self) -> bool {
        matches!(self, Check::Reaches { .. })
    }

    /// The runs the check names, in order (`a`, `b` or `run`).
    pub fn runs(&self) -> Vec<&str> {
        match self {
            Check::WeightDistance { a, b, .. }
            | Check::WindowGap { a, b, .. }
            | Check::Greater { a, b, .. } => vec![a, b],
            Check::AngularUpdate { run, .. }
            | Check::NearlyConstant { run, .. }
            | Check::Reaches { run, .. } => vec![run],
        }
    }

    /// The same check with run `from` replaced by `to` wherever it is named.
    pub fn with_run_replaced(&self, from: &str, to: &str) -> Check {
        let swap = |r: &String| if r == from { to.to_string() } else { r.clone() };
        let mut c = self.clone();
        match &mut c {
            Check::WeightDistance { a, b, .. }
            | Check::WindowGap { a, b, .. }
            | Check::Greater { a, b, .. } => {
                *a = swap(a);
                *b = swap(b);
            }
            Check::AngularUpdate { run, .. }
            | Check::NearlyConstant { run, .. }
            | Check::Reaches { run, .. } => {
                *run = swap(run);
            }
        }
        c
    }

    /// The epochs the check reads, as (first, last); `None` for a check of one epoch's weights.
    pub fn windows(&self) -> Vec<Window> {
        match self {
            Check::WeightDistance { epoch, .. } => vec![[*epoch, *epoch]],
            Check::WindowGap { windows, .. } => windows.clone(),
            Check::Greater { window, .. }
            | Check::AngularUpdate { window, .. }
            | Check::NearlyConstant { window, .. }
            | Check::Reaches { window, .. } => vec![*window],
        }
    }

    /// The check's `reason`.
    pub fn reason(&self) -> &str {
        match self {
            Check::WeightDistance { reason, .. }
            | Check::WindowGap { reason, .. }
            | Check::Greater { reason, .. }
            | Check::AngularUpdate { reason, .. }
            | Check::NearlyConstant { reason, .. }
            | Check::Reaches { reason, .. } => reason,
        }
    }
}

/// A control run, trained like the claimed runs (same seeds, same data) and judged by every
/// check that names `replaces`, with the control in its place (EXPERIMENTS.md, "Verdicts that
/// can fail").
///
/// A *negative* control (the default) is deliberately not equivalent to the run it replaces (a
/// twin built for the wrong weight decay, TEXP-- where TEXP is claimed, the weight decay
/// removed, …): it must fail at least one of those checks, or the profile cannot tell right
/// from wrong. A *positive* control is a run that the claim's premise says must pass them (for
/// E5, a run that never decays its learning rate, which TEXP must beat if decaying helps at
/// all): when it fails, the profile cannot see the effect the claim is about, and a failing
/// check is no evidence against the claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The claimed run it stands in for.
    pub replaces: String,
    /// Negative (must fail a check; the default) or positive (must pass every check).
    #[serde(default, skip_serializing_if = "ControlKind::is_negative")]
    pub kind: ControlKind,
    /// Why it is not equivalent (negative) or why it must pass (positive), in one line.
    pub why: String,
    /// The control run (a schedule, or a twin derived from a claimed run).
    pub run: RunSpec,
    /// The seeds it trains, some of `training.seeds` (all when absent): a control that a
    /// profile cannot afford over every seed. Its checks pair it with the claimed runs on these
    /// seeds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
    /// The models it trains on, some of `training.models` (all when absent): a control that
    /// only one regime can reject (in float32, rounding hides TEXP without its momentum
    /// correction as well as it hides the exact twin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// Whether a control must fail the claim's checks or pass them (see [`Control`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// Not equivalent to the run it replaces: it must fail a check.
    #[default]
    Negative,
    /// What the claim's premise says must pass every check: the profile can see the effect.
    Positive,
}

impl ControlKind {
    /// `negative` or `positive`.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Negative => "negative",
            ControlKind::Positive => "positive",
        }
    }

    /// Whether this is the default kind (kept out of serialized manifests).
    pub fn is_negative(&self) -> bool {
        *self == ControlKind::Negative
    }
}

/// The outcome of a claim at a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check holds for the claimed runs, every negative control fails one and every
    /// positive control passes them all.
    Pass,
    /// A check does not hold for the claimed runs, while every positive control passes (the
    /// profile can see the effect).
    Fail,
    /// This profile cannot tell right from wrong: the checks hold for the claimed runs and
    /// also for some negative control, or some positive control fails them (whatever the
    /// claimed runs do).
    Inconclusive,
}

impl Verdict {
    /// `pass`, `fail` or `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// A verdict other than `pass` that a profile is known to reach, with the reason written down
/// before the run (the smoke profile's tiny models, a budget too short for the mechanism).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The expected verdict (`inconclusive` or `fail`).
    pub verdict: Verdict,
    /// Why, in a sentence.
    pub reason: String,
}

/// Epoch-level training runs (E1–E6, N1, A1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Models by name (every run is trained on every model).
    pub models: BTreeMap<String, ModelSection>,
    /// Data.
    pub data: DataSection,
    /// Precision.
    #[serde(default)]
    pub dtype: Precision,
    /// Seeds (model init, shuffling, augmentation).
    pub seeds: Vec<u64>,
    /// Epochs.
    pub epochs: usize,
    /// Runs by name.
    pub runs: BTreeMap<String, RunSpec>,
    /// What decides the claim.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Negative controls by name (trained like the runs; see [`Control`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub controls: BTreeMap<String, Control>,
    /// The verdict this profile is known to reach when it is not `pass`, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expectation>,
    /// Write a checkpoint every this many epochs (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// What a model does differently from this section, by model name (see [`PerModel`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_model: BTreeMap<String, PerModel>,
}

/// What one model of a training section does differently: its own precision and its own
/// checks. One profile then trains two regimes side by side, e.g. the paper's float64 model
/// with eps 0, where the equivalence is exact, and a float32 twin with eps 1e-5, judged by
/// rules for float32.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerModel {
    /// The model's precision, in place of `dtype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
    /// The model's checks, in place of `checks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<Check>>,
}

impl Training {
    /// The precision `model` trains in: its own ([`PerModel`]) or `dtype`.
    pub fn dtype_of(&self, model: &str) -> Precision {
        self.per_model
            .get(model)
            .and_then(|p| p.dtype)
            .unwrap_or(self.dtype)
    }

    /// The checks that judge `model`: its own ([`PerModel`]) or `checks`.
    pub fn checks_of(&self, model: &str) -> &[Check] {
        self.per_model
            .get(model)
            .and_then(|p| p.checks.as_deref())
            .unwrap_or(&self.checks)
    }

    /// Every list of checks that judges some model, with its field (`training.checks`,
    /// `training.per_model.NAME.checks`).
    pub fn check_lists(&self) -> Vec<(String, &[Check])> {
        let mut lists = Vec::new();
        if self
            .models
            .keys()
            .any(|m| self.per_model.get(m).is_none_or(|p| p.checks.is_none()))
        {
            lists.push(("training.checks".to_string(), self.checks.as_slice()));
        }
        for (name, p) in &self.per_model {
            if let Some(checks) = &p.checks {
                lists.push((
                    format!("training.per_model.{name}.checks"),
                    checks.as_slice(),
                ));
            }
        }
        lists
    }

    /// Whether `run` (a claimed run or a control) trains on `model`: every run does, except a
    /// control that lists other models.
    pub fn trains(&self, run: &str, model: &str) -> bool {
        self.controls
            .get(run)
            .and_then(|c| c.models.as_ref())
            .is_none_or(|models| models.iter().any(|m| m == model))
    }
    /// Every run trained: the claimed runs, then the controls' runs, by name.
    pub fn all_runs(&self) -> BTreeMap<String, RunSpec> {
        let mut all = self.runs.clone();
        for (name, c) in &self.controls {
            all.insert(name.clone(), c.run.clone());
        }
        all
    }

    /// The seeds `run` trains: a control's own `seeds` where it gives them, else `seeds`.
    pub fn seeds_of(&self, run: &str) -> &[u64] {
        self.controls
            .get(run)
            .and_then(|c| c.seeds.as_deref())
            .unwrap_or(&self.seeds)
    }

    /// The seeds every one of `runs` trains, in `seeds` order: what a check pairs them on.
    pub fn common_seeds(&self, runs: &[&str]) -> Vec<u64> {
        self.seeds
            .iter()
            .copied()
            .filter(|s| runs.iter().all(|r| self.seeds_of(r).contains(s)))
            .collect()
    }
}

/// Step-level exactness (X1–X3): base runs and the twins derived from them, each twin trained in
/// lockstep with its own `derive.from` and compared after rescaling by its own P_t.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exactness {
    /// The (tiny, eps 0) model.
    pub model: ModelSection,
    /// Data.
    pub data: DataSection,
    /// Number of steps.
    pub steps: usize,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
    /// Runs by name: base runs and derived twins.
    pub runs: BTreeMap<String, RunSpec>,
    /// Largest allowed relative deviation ‖P_t·θ_t − θ̃_t‖/‖θ̃_t‖ (and logit difference) per
    /// twin that claims exactness.
    pub tolerance: BTreeMap<String, f64>,
    /// Twins measured and recorded without a bound (controls such as plain TEXP, whose
    /// deviation is a result, not a claim). Every derived run is in `tolerance` or here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
}

/// S1: every listed model is scale invariant in its declared group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleInvariance {
    /// Models by name.
    pub models: BTreeMap<String, ModelSection>,
    /// Scale factors c.
    pub factors: Vec<f64>,
    /// Batch size of the probe batch.
    pub batch_size: usize,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
    /// Largest allowed relative loss difference.
    pub tolerance: f64,
}

/// T1: the toy example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toy {
    /// Population gradient descent.
    pub population: ToyConfig,
    /// Minibatch SGD.
    pub minibatch: ToyConfig,
}

/// Settings of one toy run (THEORY.md §7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyConfig {
    /// Learning rate η.
    pub lr: f64,
    /// Weight decay λ (ignored by the BN-only variant).
    pub weight_decay: f64,
    /// Number of updates.
    pub steps: usize,
    /// Initial weights (the population gradient uses only the first two coordinates).
    pub w0: Vec<f64>,
    /// Input dimension m for minibatch runs (w0 is zero-padded to it).
    pub dim: usize,
    /// Minibatch size; `None` for exact population gradients.
    pub batch_size: Option<usize>,
    /// Seed of the minibatch sampler.
    pub seed: u64,
    /// Record the trace every this many steps (step 0 and the last step always).
    pub record_every: usize,
}

/// Most updates one run may make: steps per epoch × epochs for training, `steps` for
/// exactness and for each toy run (the paper's longest training run makes 391 × 160 = 62 560).
/// Defined here, with the schema, so that the toy's own check reads it without the schema
/// depending on the validator.
pub const MAX_UPDATES: u64 = 10_000_000;

/// Largest `dim` and `batch_size` of a toy run (each update draws batch_size vectors of dim
/// numbers).
pub const TOY_MAX_SIZE: usize = 100_000;

impl ToyConfig {
    /// The first impossible value, as (field, what is wrong).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(("lr", format!("must be a positive number, got {}", self.lr)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err((
                "weight_decay",
                format!("must be >= 0, got {}", self.weight_decay),
            ));
        }
        let norm_sq: f64 = self.w0.iter().map(|x| x * x).sum();
        if self.w0.len() < 2 || norm_sq == 0.0 || self.w0.iter().any(|x| !x.is_finite()) {
            return Err((
                "w0",
                format!(
                    "needs at least two finite coordinates, not all zero, got {:?}",
                    self.w0
                ),
            ));
        }
        if self.batch_size.is_some() && self.dim < self.w0.len() {
            return Err((
                "dim",
                format!(
                    "must be at least the length of w0 ({}), got {}",
                    self.w0.len(),
                    self.dim
                ),
            ));
        }
        for (field, value) in [
            ("steps", self.steps),
            ("record_every", self.record_every),
            ("batch_size", self.batch_size.unwrap_or(1)),
        ] {
            if value == 0 {
                return Err((field, "must be a positive integer".into()));
            }
        }
        let max_steps = MAX_UPDATES;
        if u64::try_from(self.steps).map_or(true, |s| s > max_steps) {
            return Err((
                "steps",
                format!(
                    "{} is more than the limit of {max_steps} updates per run; lower it",
                    self.steps
                ),
            ));
        }
        for (field, value) in [
            ("dim", self.dim),
            ("batch_size", self.batch_size.unwrap_or(1)),
        ] {
            if value > TOY_MAX_SIZE {
                return Err((
                    field,
                    format!("{value} is more than the limit of {TOY_MAX_SIZE}; lower it"),
                ));
            }
        }
        Ok(())
    }
}

/// What a training run records each epoch, by the name manifests use (`metric: test_acc`).
/// An unknown name is a parse error that lists these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// LR of the scale-invariant group at the epoch's last update.
    Lr,
    /// Mean training loss over the epoch.
    TrainLoss,
    /// Training accuracy over the epoch.
    TrainAcc,
    /// Test loss (evaluation mode).
    TestLoss,
    /// Test accuracy (evaluation mode).
    TestAcc,
    /// ‖θ‖ of the scale-invariant group.
    SiNorm,
    /// ‖w‖ of one tracked conv layer.
    LayerNorm,
    /// ‖θ‖²/η of the scale-invariant group (THEORY.md §3).
    NormSqOverLr,
    /// Effective LR η/‖θ‖² (THEORY.md §8).
    EffectiveLr,
    /// Mean angle per step between consecutive θ over the epoch (THEORY.md §8).
    AngularUpdate,
}

impl Metric {
    /// Every metric, in the order of the metrics CSV's columns.
    pub const ALL: [Metric; 10] = [
        Metric::Lr,
        Metric::TrainLoss,
        Metric::TrainAcc,
        Metric::TestLoss,
        Metric::TestAcc,
        Metric::SiNorm,
        Metric::LayerNorm,
        Metric::NormSqOverLr,
        Metric::EffectiveLr,
        Metric::AngularUpdate,
    ];

    /// The manifest's name of the metric (`test_acc`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Lr => "lr",
            Metric::TrainLoss => "train_loss",
            Metric::TrainAcc => "train_acc",
            Metric::TestLoss => "test_loss",
            Metric::TestAcc => "test_acc",
            Metric::SiNorm => "si_norm",
            Metric::LayerNorm => "layer_norm",
            Metric::NormSqOverLr => "norm_sq_over_lr",
            Metric::EffectiveLr => "effective_lr",
            Metric::AngularUpdate => "angular_update",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A value that parses but is impossible, before it is located in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path of the offending field (`training.runs.step_decay.schedule.milestones`).
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl FieldError {
    /// A new error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip_and_unknown_names_list_the_valid_ones() {
        for m in Metric::ALL {
            let parsed: Metric = serde_yaml::from_str(m.name()).unwrap();
            assert_eq!(parsed, m);
        }
        let err = serde_yaml::from_str::<Metric>("train_accuracy").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("train_accuracy") && text.contains("train_acc"),
            "{text}"
        );
    }
}
