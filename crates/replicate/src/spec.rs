//! The experiment sections of a manifest, as plain data (configs are data; runtime objects are
//! built from them by the runner).

use std::collections::BTreeMap;

use explr_schedule::Unit;
use serde::{Deserialize, Serialize};

use crate::manifest::FieldError;

/// A model, as the zoo describes it (`arch`, `depth`, `norm`, `width`, `freeze_norm_affine`,
/// `freeze_head`, `eps`, …).
pub type ModelSection = explr_zoo::ModelSpec;
/// An LR schedule, as the schedule crate describes it (`kind: multistep`, …). In manifests every
/// step count (milestones, `t_max`, …) is in **epochs**: the runner builds the schedule with
/// `Unit::Epochs` of the data's steps per epoch, so one manifest serves every profile.
pub type ScheduleSection = explr_schedule::ScheduleSpec;

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

impl Experiment<'_> {
    /// Checks values that parse but are impossible.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            Experiment::Training(t) => t.validate(),
            Experiment::Exactness(e) => e.validate(),
            Experiment::ScaleInvariance(s) => s.validate(),
            Experiment::Toy(t) => t.validate(),
        }
    }
}

/// Which dataset feeds a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    /// The deterministic synthetic CIFAR-shaped twin (no download).
    Synthetic,
    /// CIFAR-10 from the official binary files.
    Cifar10,
    /// CIFAR-100 from the official binary files.
    Cifar100,
}

/// Data section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Dataset.
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

fn first_epoch() -> usize {
    1
}

/// The default `factor` of `within_seed_noise`. When the two runs really are as different as
/// two seeds (chaos has decorrelated them), the two gaps are draws of one distribution and
/// their ratio scatters around 1, so a bound of 1 would fail about half of the true cases; 1.5
/// leaves room for that scatter, while a systematic difference half the size of the seed gap
/// already lifts the ratio to about 1.5.
fn seed_noise_factor() -> f64 {
    1.5
}

fn default_momentum() -> f64 {
    0.9
}

/// A named check that decides the claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "check")]
pub enum Check {
    /// Two runs' curves of `metric` differ by at most `tolerance` (max over epochs
    /// `from_epoch..` of the absolute difference, or of |a/b − 1| when `relative`, after
    /// averaging seeds).
    CurvesOverlap {
        /// First run.
        a: String,
        /// Second run.
        b: String,
        /// Metric name (`train_loss`, `train_acc`, `test_acc`, …).
        metric: String,
        /// Largest allowed difference.
        tolerance: f64,
        /// Compare |a/b − 1| instead of |a − b|.
        #[serde(default)]
        relative: bool,
        /// First epoch (1-based) compared.
        #[serde(default = "first_epoch")]
        from_epoch: usize,
    },
    /// Two runs' curves of `metric` are as close as two seeds of the same run are: the gap
    /// between `a` and `b` trained from the same seed (max over epochs `from_epoch..` of the
    /// absolute difference, averaged over seeds) is at most `factor` times the seed-to-seed gap
    /// (the same distance between two seeds of one run, averaged over the seed pairs of `a` and
    /// of `b`). Needs at least two seeds. This is "overlap within seed noise" as a check.
    WithinSeedNoise {
        /// First run.
        a: String,
        /// Second run.
        b: String,
        /// Metric name (`train_loss`, `train_acc`, `test_acc`, …).
        metric: String,
        /// Largest allowed ratio of the a-vs-b gap to the seed-to-seed gap (default 1.5).
        #[serde(default = "seed_noise_factor")]
        factor: f64,
        /// First epoch (1-based) compared.
        #[serde(default = "first_epoch")]
        from_epoch: usize,
    },
    /// The mean angular update per step of `run` over epochs `from_epoch..` matches the
    /// equilibrium prediction sqrt(2ηλ/(1+γ)) (THEORY.md §8) within `tolerance` (relative).
    AngularUpdate {
        /// A run with weight decay.
        run: String,
        /// First epoch (1-based) of the average.
        from_epoch: usize,
        /// Largest allowed relative error.
        tolerance: f64,
    },
    /// `metric` of `run` stays within a factor `1 + tolerance` of its mean over epochs
    /// `from_epoch..=to_epoch` (e.g. ‖w‖²/η̃ of an exponential run, THEORY.md §3).
    NearlyConstant {
        /// The run.
        run: String,
        /// Metric name.
        metric: String,
        /// First epoch (1-based).
        from_epoch: usize,
        /// Last epoch (1-based).
        to_epoch: usize,
        /// Largest allowed relative spread.
        tolerance: f64,
    },
    /// `metric` of run `a` at the end exceeds that of `b` by at least `margin` (seed means).
    /// "At the end" is the last epoch, or with `from_epoch` the mean over epochs
    /// `from_epoch..` (for a noisy metric such as a test accuracy after a milestone).
    FinalGreater {
        /// Run expected higher.
        a: String,
        /// Run expected lower.
        b: String,
        /// Metric name.
        metric: String,
        /// Required margin.
        margin: f64,
        /// First epoch (1-based) of the mean compared; the last epoch when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_epoch: Option<usize>,
    },
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
    /// Write a checkpoint every this many epochs (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: usize,
}

impl Training {
    fn validate(&self) -> Result<(), FieldError> {
        positive("training.epochs", self.epochs)?;
        positive("training.data.batch_size", self.data.batch_size)?;
        if self.seeds.is_empty() {
            return Err(FieldError::new(
                "training.seeds",
                "give at least one seed, e.g. [0]",
            ));
        }
        if self.models.is_empty() {
            return Err(FieldError::new(
                "training.models",
                "give at least one model",
            ));
        }
        validate_runs("training.runs", &self.runs, Some(self.epochs))?;
        for (i, c) in self.checks.iter().enumerate() {
            let from_epoch_in_range = |from: usize| {
                if from == 0 || from > self.epochs {
                    return Err(FieldError::new(
                        format!("training.checks.{i}.from_epoch"),
                        format!("must lie in 1..={} (the epochs)", self.epochs),
                    ));
                }
                Ok(())
            };
            let named: Vec<&String> = match c {
                Check::CurvesOverlap {
                    a, b, from_epoch, ..
                } => {
                    from_epoch_in_range(*from_epoch)?;
                    vec![a, b]
                }
                Check::WithinSeedNoise {
                    a,
                    b,
                    factor,
                    from_epoch,
                    ..
                } => {
                    from_epoch_in_range(*from_epoch)?;
                    if !(factor.is_finite() && *factor > 0.0) {
                        return Err(FieldError::new(
                            format!("training.checks.{i}.factor"),
                            format!("must be a positive number (1: no larger than the seed-to-seed gap; the default is 1.5), got {factor}"),
                        ));
                    }
                    if self.seeds.len() < 2 {
                        return Err(FieldError::new(
                            format!("training.checks.{i}"),
                            format!(
                                "within_seed_noise measures the gap between seeds, so it needs at least two seeds; `training.seeds` has {} (give e.g. [0, 1], or use curves_overlap with a fixed tolerance)",
                                self.seeds.len()
                            ),
                        ));
                    }
                    vec![a, b]
                }
                Check::FinalGreater {
                    a, b, from_epoch, ..
                } => {
                    if let Some(from) = from_epoch {
                        from_epoch_in_range(*from)?;
                    }
                    vec![a, b]
                }
                Check::AngularUpdate {
                    run, from_epoch, ..
                } => {
                    from_epoch_in_range(*from_epoch)?;
                    vec![run]
                }
                Check::NearlyConstant {
                    run,
                    from_epoch,
                    to_epoch,
                    ..
                } => {
                    if *from_epoch == 0 || from_epoch > to_epoch || *to_epoch > self.epochs {
                        return Err(FieldError::new(
                            format!("training.checks.{i}"),
                            format!(
                                "needs 1 <= from_epoch <= to_epoch <= {} (the epochs), got {from_epoch}..={to_epoch}",
                                self.epochs
                            ),
                        ));
                    }
                    vec![run]
                }
            };
            for r in named {
                if !self.runs.contains_key(r) {
                    return Err(FieldError::new(
                        format!("training.checks.{i}"),
                        format!(
                            "names run `{r}`, which is not in `runs` ({})",
                            names(&self.runs)
                        ),
                    ));
                }
            }
        }
        Ok(())
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

impl Exactness {
    fn validate(&self) -> Result<(), FieldError> {
        positive("exactness.steps", self.steps)?;
        positive("exactness.data.batch_size", self.data.batch_size)?;
        validate_runs("exactness.runs", &self.runs, None)?;
        let derived: Vec<&str> = self
            .runs
            .iter()
            .filter(|(_, r)| r.derive.is_some())
            .map(|(n, _)| n.as_str())
            .collect();
        let named = self
            .tolerance
            .keys()
            .map(|n| (n, format!("exactness.tolerance.{n}")))
            .chain(
                self.variants
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n, format!("exactness.variants.{i}"))),
            );
        for (name, field) in named {
            if !derived.contains(&name.as_str()) {
                return Err(FieldError::new(
                    field,
                    format!(
                        "must name a derived run; derived runs here: {}",
                        derived.join(", ")
                    ),
                ));
            }
        }
        for name in derived {
            let bounded = self.tolerance.contains_key(name);
            let recorded = self.variants.iter().filter(|v| *v == name).count();
            if usize::from(bounded) + recorded != 1 {
                return Err(FieldError::new(
                    format!("exactness.runs.{name}"),
                    "a derived run is either held to a bound (`tolerance`) or recorded as a \
                     variant (`variants`), exactly once",
                ));
            }
        }
        Ok(())
    }
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

impl ScaleInvariance {
    fn validate(&self) -> Result<(), FieldError> {
        positive("scale_invariance.batch_size", self.batch_size)?;
        if self.factors.iter().any(|c| !(c.is_finite() && *c > 0.0)) || self.factors.is_empty() {
            return Err(FieldError::new(
                "scale_invariance.factors",
                "give positive finite factors, e.g. [0.1, 10]",
            ));
        }
        Ok(())
    }
}

/// T1: the toy example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toy {
    /// Population gradient descent.
    pub population: crate::toy::ToyConfig,
    /// Minibatch SGD.
    pub minibatch: crate::toy::ToyConfig,
}

impl Toy {
    fn validate(&self) -> Result<(), FieldError> {
        if self.population.batch_size.is_some() {
            return Err(FieldError::new(
                "toy.population.batch_size",
                "must be absent (population gradients are exact expectations)",
            ));
        }
        if self.minibatch.batch_size.is_none() {
            return Err(FieldError::new(
                "toy.minibatch.batch_size",
                "give a minibatch size, e.g. 32",
            ));
        }
        Ok(())
    }
}

fn positive(field: &str, v: usize) -> Result<(), FieldError> {
    if v == 0 {
        return Err(FieldError::new(field, "must be a positive integer"));
    }
    Ok(())
}

fn names<V>(m: &BTreeMap<String, V>) -> String {
    m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn validate_runs(
    field: &str,
    runs: &BTreeMap<String, RunSpec>,
    epochs: Option<usize>,
) -> Result<(), FieldError> {
    if runs.is_empty() {
        return Err(FieldError::new(field, "give at least one run"));
    }
    for (name, r) in runs {
        let here = format!("{field}.{name}");
        if !(0.0..1.0).contains(&r.momentum) {
            return Err(FieldError::new(
                format!("{here}.momentum"),
                format!("must lie in [0, 1), got {}", r.momentum),
            ));
        }
        if !(r.weight_decay.is_finite() && r.weight_decay >= 0.0) {
            return Err(FieldError::new(
                format!("{here}.weight_decay"),
                format!("must be >= 0, got {}", r.weight_decay),
            ));
        }
        if let Some(wd) = &r.weight_decay_schedule {
            if r.weight_decay != 0.0 {
                return Err(FieldError::new(
                    format!("{here}.weight_decay"),
                    "give either `weight_decay` or `weight_decay_schedule`, not both",
                ));
            }
            if r.derive.is_some() {
                return Err(FieldError::new(
                    format!("{here}.weight_decay_schedule"),
                    "a derived run has no weight decay on its scale-invariant group (the \
                     transform removes it); drop the field",
                ));
            }
            if let Err(e) = wd.build(Unit::Steps) {
                return Err(FieldError::new(
                    format!("{here}.weight_decay_schedule"),
                    e.to_string(),
                ));
            }
            if let (Some(m), Some(epochs)) = (wd.last_milestone(), epochs) {
                if m >= epochs as u64 {
                    return Err(FieldError::new(
                        format!("{here}.weight_decay_schedule.milestones"),
                        format!(
                            "milestone {m} is not before the end of training ({epochs} epochs); \
                             milestones are in epochs and must be < epochs"
                        ),
                    ));
                }
            }
        }
        match (&r.schedule, &r.derive) {
            (Some(spec), None) => {
                if let Err(e) = spec.build(Unit::Steps) {
                    return Err(FieldError::new(format!("{here}.schedule"), e.to_string()));
                }
                if let (Some(m), Some(epochs)) = (spec.last_milestone(), epochs) {
                    if m >= epochs as u64 {
                        return Err(FieldError::new(
                            format!("{here}.schedule.milestones"),
                            format!(
                                "milestone {m} is not before the end of training ({epochs} epochs); \
                                 milestones are in epochs and must be < epochs"
                            ),
                        ));
                    }
                }
            }
            (None, Some(_)) if r.weight_decay != 0.0 => {
                return Err(FieldError::new(
                    format!("{here}.weight_decay"),
                    format!(
                        "a derived run has no weight decay on its scale-invariant group (the \
                         transform removes it); drop the field, got {}",
                        r.weight_decay
                    ),
                ));
            }
            (None, Some(d)) => match runs.get(&d.from) {
                Some(base) if base.derive.is_none() => {
                    // Building the twin checks that an exponential equivalent exists (§3).
                    if let Err(e) = crate::plan::plan(runs, name, 1) {
                        return Err(FieldError::new(format!("{here}.derive"), e.to_string()));
                    }
                }
                Some(_) => {
                    return Err(FieldError::new(
                        format!("{here}.derive.from"),
                        format!(
                            "`{}` is itself derived; derive from a run with a schedule",
                            d.from
                        ),
                    ))
                }
                None => {
                    return Err(FieldError::new(
                        format!("{here}.derive.from"),
                        format!("no run named `{}`; runs: {}", d.from, names(runs)),
                    ))
                }
            },
            _ => {
                return Err(FieldError::new(
                    here,
                    "give exactly one of `schedule` or `derive`",
                ))
            }
        }
    }
    Ok(())
}
