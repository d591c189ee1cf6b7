//! Schedules: serde specs and the pure functions step → LR built from them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::alpha::check_positive;
use crate::error::{invalid, Result, ScheduleError};
use crate::twin::{AlphaRule, Twin, TwinCore};
use crate::unit::Unit;
use crate::weight_decay::WeightDecay;

/// A schedule as written in a manifest (`kind: multistep`, …). Unknown fields are rejected.
///
/// Its counts (`milestones`, `step_size`, `t_max`, `total_iters`, an exponential's period) are
/// in the [`Unit`] the schedule is built with ([`Schedule::build`]); nested specs inherit it.
/// The LR of update `k` (k = 0 is the first update) is what PyTorch's optimizer uses after `k`
/// calls of `scheduler.step()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// A fixed LR.
    Constant {
        /// The LR.
        lr: f64,
    },
    /// `lr · gamma^(number of milestones ≤ k)` (torch `MultiStepLR`).
    Multistep {
        /// Initial LR.
        lr: f64,
        /// Strictly increasing milestones.
        milestones: Vec<u64>,
        /// Factor applied at each milestone (0.1 divides by 10).
        gamma: f64,
    },
    /// `lr · gamma^floor(k / step_size)` (torch `StepLR`).
    Step {
        /// Initial LR.
        lr: f64,
        /// Period.
        step_size: u64,
        /// Factor applied every period.
        gamma: f64,
    },
    /// `lr · factor^k` per step, or `lr · factor^floor(k / steps_per_epoch)` when built in
    /// epochs (torch `ExponentialLR`); any positive factor, growth (> 1) included.
    Exponential {
        /// Initial LR.
        lr: f64,
        /// Factor per step (per epoch when built in epochs).
        factor: f64,
    },
    /// `eta_min + (lr − eta_min)(1 + cos(π k / t_max)) / 2` (torch `CosineAnnealingLR`'s
    /// closed form, periodic past `t_max` like torch's). In epochs, `t_max` is in epochs but the
    /// LR still changes every step.
    Cosine {
        /// Initial LR.
        lr: f64,
        /// Half period.
        t_max: u64,
        /// The floor.
        #[serde(default)]
        eta_min: f64,
    },
    /// Linear warmup `lr · (start + (end − start)·min(k, total_iters)/total_iters)`
    /// (torch `LinearLR`).
    Warmup {
        /// The LR the factors multiply.
        lr: f64,
        /// Factor at step 0.
        start_factor: f64,
        /// Factor from `total_iters` on.
        #[serde(default = "one")]
        end_factor: f64,
        /// Length of the ramp.
        total_iters: u64,
    },
    /// Schedules joined at boundaries; each restarts at its own step 0 (torch `SequentialLR`).
    Sequential {
        /// The parts, in order.
        schedules: Vec<ScheduleSpec>,
        /// `schedules.len() − 1` strictly increasing boundaries.
        milestones: Vec<u64>,
    },
    /// TEXP (THEORY.md §5): the LR without weight decay of the exponential twin of the step
    /// decay (`lr`, `milestones`, `gamma`) run with `weight_decay` and `momentum`. The same as
    /// `exp_equivalent` of that step decay with `alpha: root`.
    Texp {
        /// Initial LR of the step decay.
        lr: f64,
        /// Decay milestones.
        milestones: Vec<u64>,
        /// Step-decay factor (0.1 divides by 10).
        gamma: f64,
        /// Weight decay λ of the step-decay run.
        weight_decay: f64,
        /// Momentum γ.
        momentum: f64,
    },
    /// TEXP-- (THEORY.md §5): like TEXP, but at a boundary only the growth rate changes (no
    /// instant decay): the twin of keeping `lr` and multiplying the *weight decay* by `gamma`
    /// at each milestone. The same as `exp_equivalent` of `constant lr` with that weight-decay
    /// schedule and `alpha: root`.
    TexpMinus {
        /// The LR (of the step decay's first phase).
        lr: f64,
        /// Milestones.
        milestones: Vec<u64>,
        /// Factor of the step decay (or of the weight decay) at each milestone.
        gamma: f64,
        /// Initial weight decay λ.
        weight_decay: f64,
        /// Momentum γ.
        momentum: f64,
    },
    /// The product of several schedules' LRs at every step; e.g. an exponential twin times a
    /// step decay of factor 1 gives instant decays without tapering the growth (EXPERIMENTS.md
    /// E2). Each part sees the same step.
    Product {
        /// The factors (at least one).
        schedules: Vec<ScheduleSpec>,
    },
    /// The exponential twin of THEORY.md §4–§5 of any schedule: the LR without weight decay
    /// whose run equals `base` with its weight decay up to the scale P_t (for `alpha: root`
    /// together with the momentum corrections that [`Twin`] gives the optimizer).
    ExpEquivalent {
        /// The schedule of the weight-decay run.
        base: Box<ScheduleSpec>,
        /// Weight decay λ of the base run (exclusive with `weight_decay_schedule`).
        #[serde(default)]
        weight_decay: f64,
        /// A schedule whose value at update k is the base run's weight decay λ_k.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight_decay_schedule: Option<Box<ScheduleSpec>>,
        /// Momentum γ.
        momentum: f64,
        /// How the twin picks α_{k+1}: `recursion` (§4, the default) or `root` (§3's root of
        /// η_k·λ_k at each update, as TEXP does).
        #[serde(default, skip_serializing_if = "AlphaRule::is_recursion")]
        alpha: AlphaRule,
    },
}

fn one() -> f64 {
    1.0
}

impl ScheduleSpec {
    /// Parses a YAML spec (unknown fields and kinds are errors).
    pub fn from_yaml(text: &str) -> Result<Self> {
        Ok(serde_yaml::from_str(text)?)
    }

    /// Validates the spec and builds the schedule with its counts in `unit`.
    pub fn build(&self, unit: Unit) -> Result<Schedule> {
        Schedule::build(self, unit)
    }

    /// Every milestone of the spec, sorted without repeats: the boundaries of `multistep`,
    /// `texp`, `texp_minus` and `sequential`, and of the schedules inside `exp_equivalent`
    /// (its base and its weight-decay schedule) and `product`. In the spec's own unit.
    pub fn milestones(&self) -> Vec<u64> {
        let mut m = match self {
            ScheduleSpec::Multistep { milestones, .. }
            | ScheduleSpec::Texp { milestones, .. }
            | ScheduleSpec::TexpMinus { milestones, .. }
            | ScheduleSpec::Sequential { milestones, .. } => milestones.clone(),
            ScheduleSpec::ExpEquivalent {
                base,
                weight_decay_schedule,
                ..
            } => {
                let mut m = base.milestones();
                m.extend(weight_decay_schedule.iter().flat_map(|w| w.milestones()));
                m
            }
            ScheduleSpec::Product { schedules } => schedules
                .iter()
                .flat_map(ScheduleSpec::milestones)
                .collect(),
            ScheduleSpec::Constant { .. }
            | ScheduleSpec::Step { .. }
            | ScheduleSpec::Exponential { .. }
            | ScheduleSpec::Cosine { .. }
            | ScheduleSpec::Warmup { .. } => Vec::new(),
        };
        m.sort_unstable();
        m.dedup();
        m
    }

    /// The largest milestone ([`ScheduleSpec::milestones`]), if any.
    pub fn last_milestone(&self) -> Option<u64> {
        self.milestones().last().copied()
    }
}

/// TEXP (or TEXP-- when `minus`) written as the general `exp_equivalent` it stands for
/// (THEORY.md §5): the twin with §3's root at every update of the step decay (`lr`,
/// `milestones`, `gamma`) with `weight_decay`, or for TEXP-- of the constant `lr` with the
/// weight decay multiplied by `gamma` at each milestone.
fn tapered(
    minus: bool,
    lr: f64,
    milestones: &[u64],
    gamma: f64,
    weight_decay: f64,
    momentum: f64,
) -> Result<ScheduleSpec> {
    if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
        return Err(invalid(
            "weight_decay",
            weight_decay,
            "a finite number >= 0",
        ));
    }
    let step_decay = |lr: f64| ScheduleSpec::Multistep {
        lr,
        milestones: milestones.to_vec(),
        gamma,
    };
    // Validates milestones and gamma also where TEXP-- has no weight decay to divide.
    Schedule::build(&step_decay(lr), Unit::Steps)?;
    let (base, weight_decay, weight_decay_schedule) = match minus {
        false => (step_decay(lr), weight_decay, None),
        // Without weight decay there is nothing to divide: the twin of the constant LR.
        true if weight_decay == 0.0 => (ScheduleSpec::Constant { lr }, 0.0, None),
        true => (
            ScheduleSpec::Constant { lr },
            0.0,
            Some(Box::new(step_decay(weight_decay))),
        ),
    };
    Ok(ScheduleSpec::ExpEquivalent {
        base: Box::new(base),
        weight_decay,
        weight_decay_schedule,
        momentum,
        alpha: AlphaRule::Root,
    })
}

fn increasing(field: &str, ms: &[u64], unit: Unit) -> Result<Vec<u64>> {
    let steps = ms
        .iter()
        .map(|&m| unit.to_steps(field, m))
        .collect::<Result<Vec<_>>>()?;
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(
            field,
            format!("{ms:?}"),
            "strictly increasing values",
        ));
    }
    Ok(steps)
}

/// A count that must be at least one update.
fn positive_steps(field: &str, n: u64, unit: Unit) -> Result<u64> {
    let steps = unit.to_steps(field, n)?;
    if steps == 0 {
        return Err(invalid(field, 0, "an integer >= 1"));
    }
    Ok(steps)
}

/// A built, validated schedule: a pure function of the step. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: Kind,
    spec: ScheduleSpec,
    unit: Unit,
}

#[derive(Clone, Debug)]
enum Kind {
    Constant(f64),
    MultiStep {
        lr: f64,
        milestones: Vec<u64>,
        gamma: f64,
    },
    Step {
        lr: f64,
        step_size: u64,
        gamma: f64,
    },
    Exponential {
        lr: f64,
        factor: f64,
        period: u64,
    },
    Cosine {
        lr: f64,
        t_max: u64,
        eta_min: f64,
    },
    Warmup {
        lr: f64,
        start: f64,
        end: f64,
        total: u64,
    },
    Sequential {
        parts: Vec<Schedule>,
        milestones: Vec<u64>,
    },
    Twin(Arc<TwinCore>),
    Product(Vec<Schedule>),
}

impl Schedule {
    /// Validates `spec` and builds the schedule, its counts in `unit` (nested specs inherit it).
    ///
    /// ```
    /// use explr_schedule::{Schedule, ScheduleSpec, Unit};
    ///
    /// let spec = ScheduleSpec::from_yaml("kind: multistep\nlr: 0.1\nmilestones: [80, 120]\ngamma: 0.1")?;
    /// let epochs = Schedule::build(&spec, Unit::Epochs(391))?;
    /// assert_eq!(epochs.lr(80 * 391 - 1)?, 0.1);
    /// assert!((epochs.lr(80 * 391)? - 0.01).abs() < 1e-17);
    /// assert!((Schedule::build(&spec, Unit::Steps)?.lr(80)? - 0.01).abs() < 1e-17);
    /// # Ok::<(), explr_schedule::ScheduleError>(())
    /// ```
    pub fn build(spec: &ScheduleSpec, unit: Unit) -> Result<Self> {
        unit.validate()?;
        let kind = match spec {
            ScheduleSpec::Constant { lr } => {
                check_positive("lr", *lr)?;
                Kind::Constant(*lr)
            }
            ScheduleSpec::Multistep {
                lr,
                milestones,
                gamma,
            } => {
                check_positive("lr", *lr)?;
                check_positive("gamma", *gamma)?;
                Kind::MultiStep {
                    lr: *lr,
                    milestones: increasing("milestones", milestones, unit)?,
                    gamma: *gamma,
                }
            }
            ScheduleSpec::Step {
                lr,
                step_size,
                gamma,
            } => {
                check_positive("lr", *lr)?;
                check_positive("gamma", *gamma)?;
                Kind::Step {
                    lr: *lr,
                    step_size: positive_steps("step_size", *step_size, unit)?,
                    gamma: *gamma,
                }
            }
            ScheduleSpec::Exponential { lr, factor } => {
                check_positive("lr", *lr)?;
                check_positive("factor", *factor)?;
                Kind::Exponential {
                    lr: *lr,
                    factor: *factor,
                    period: unit.to_steps("steps_per_epoch", 1)?,
                }
            }
            ScheduleSpec::Cosine { lr, t_max, eta_min } => {
                check_positive("lr", *lr)?;
                if !(*eta_min >= 0.0 && eta_min < lr) {
                    return Err(invalid(
                        "eta_min",
                        eta_min,
                        &format!("a number in [0, lr = {lr})"),
                    ));
                }
                Kind::Cosine {
                    lr: *lr,
                    t_max: positive_steps("t_max", *t_max, unit)?,
                    eta_min: *eta_min,
                }
            }
            ScheduleSpec::Warmup {
                lr,
                start_factor,
                end_factor,
                total_iters,
            } => {
                check_positive("lr", *lr)?;
                check_positive("start_factor", *start_factor)?;
                check_positive("end_factor", *end_factor)?;
                Kind::Warmup {
                    lr: *lr,
                    start: *start_factor,
                    end: *end_factor,
                    total: positive_steps("total_iters", *total_iters, unit)?,
                }
            }
            ScheduleSpec::Sequential {
                schedules,
                milestones,
            } => {
                if schedules.is_empty() || milestones.len() + 1 != schedules.len() {
                    return Err(invalid(
                        "milestones",
                        format!("{milestones:?}"),
                        &format!("one boundary fewer than the {} schedules", schedules.len()),
                    ));
                }
                let milestones = increasing("milestones", milestones, unit)?;
                if milestones.first() == Some(&0) {
                    return Err(invalid("milestones", 0, "boundaries >= 1"));
                }
                let parts = schedules
                    .iter()
                    .map(|s| Schedule::build(s, unit))
                    .collect::<Result<Vec<_>>>()?;
                Kind::Sequential { parts, milestones }
            }
            ScheduleSpec::Product { schedules } => {
                if schedules.is_empty() {
                    return Err(invalid("schedules", "[]", "at least one schedule"));
                }
                Kind::Product(
                    schedules
                        .iter()
                        .map(|s| Schedule::build(s, unit))
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            ScheduleSpec::ExpEquivalent {
                base,
                weight_decay,
                weight_decay_schedule,
                momentum,
                alpha,
            } => {
                let weight_decay =
                    match weight_decay_schedule {
                        None => WeightDecay::Constant(*weight_decay),
                        Some(_) if *weight_decay != 0.0 => return Err(invalid(
                            "weight_decay",
                            weight_decay,
                            "0 (absent) when `weight_decay_schedule` is given: give one of them",
                        )),
                        Some(w) => WeightDecay::Schedule(Schedule::build(w, unit)?),
                    };
                Kind::Twin(Arc::new(TwinCore::new(
                    Schedule::build(base, unit)?,
                    weight_decay,
                    *momentum,
                    *alpha,
                )?))
            }
            ScheduleSpec::Texp {
                lr,
                milestones,
                gamma,
                weight_decay,
                momentum,
            } => {
                Schedule::build(
                    &tapered(false, *lr, milestones, *gamma, *weight_decay, *momentum)?,
                    unit,
                )?
                .kind
            }
            ScheduleSpec::TexpMinus {
                lr,
                milestones,
                gamma,
                weight_decay,
                momentum,
            } => {
                Schedule::build(
                    &tapered(true, *lr, milestones, *gamma, *weight_decay, *momentum)?,
                    unit,
                )?
                .kind
            }
        };
        Ok(Self {
            kind,
            spec: spec.clone(),
            unit,
        })
    }

    /// Parses a YAML spec and builds it with its counts in `unit`.
    pub fn from_yaml(text: &str, unit: Unit) -> Result<Self> {
        Schedule::build(&ScheduleSpec::from_yaml(text)?, unit)
    }

    /// A fixed LR.
    pub fn constant(lr: f64) -> Result<Self> {
        Schedule::build(&ScheduleSpec::Constant { lr }, Unit::Steps)
    }

    /// `lr · gamma^(number of milestones ≤ k)` (torch `MultiStepLR`), milestones in `unit`:
    /// `Schedule::multistep(0.1, &[80, 120], 0.1, Unit::Epochs(391))`.
    pub fn multistep(lr: f64, milestones: &[u64], gamma: f64, unit: Unit) -> Result<Self> {
        let spec = ScheduleSpec::Multistep {
            lr,
            milestones: milestones.to_vec(),
            gamma,
        };
        Schedule::build(&spec, unit)
    }

    /// `lr · gamma^floor(k / step_size)` (torch `StepLR`), `step_size` in `unit`.
    pub fn step(lr: f64, step_size: u64, gamma: f64, unit: Unit) -> Result<Self> {
        let spec = ScheduleSpec::Step {
            lr,
            step_size,
            gamma,
        };
        Schedule::build(&spec, unit)
    }

    /// `lr · factor` per step, or per epoch in [`Unit::Epochs`] (torch `ExponentialLR`).
    pub fn exponential(lr: f64, factor: f64, unit: Unit) -> Result<Self> {
        Schedule::build(&ScheduleSpec::Exponential { lr, factor }, unit)
    }

    /// Cosine annealing from `lr` to `eta_min` over `t_max` (in `unit`; torch
    /// `CosineAnnealingLR`).
    pub fn cosine(lr: f64, t_max: u64, eta_min: f64, unit: Unit) -> Result<Self> {
        let spec = ScheduleSpec::Cosine { lr, t_max, eta_min };
        Schedule::build(&spec, unit)
    }

    /// Linear warmup from `start_factor · lr` to `end_factor · lr` over `total_iters` (in
    /// `unit`; torch `LinearLR`).
    pub fn warmup(
        lr: f64,
        start_factor: f64,
        end_factor: f64,
        total_iters: u64,
        unit: Unit,
    ) -> Result<Self> {
        let spec = ScheduleSpec::Warmup {
            lr,
            start_factor,
            end_factor,
            total_iters,
        };
        Schedule::build(&spec, unit)
    }

    /// The spec this schedule was built from.
    pub fn spec(&self) -> &ScheduleSpec {
        &self.spec
    }

    /// The unit of the spec's counts.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// The spec's `kind` tag.
    pub fn kind_name(&self) -> &'static str {
        match self.spec {
            ScheduleSpec::Constant { .. } => "constant",
            ScheduleSpec::Multistep { .. } => "multistep",
            ScheduleSpec::Step { .. } => "step",
            ScheduleSpec::Exponential { .. } => "exponential",
            ScheduleSpec::Cosine { .. } => "cosine",
            ScheduleSpec::Warmup { .. } => "warmup",
            ScheduleSpec::Sequential { .. } => "sequential",
            ScheduleSpec::Texp { .. } => "texp",
            ScheduleSpec::TexpMinus { .. } => "texp_minus",
            ScheduleSpec::ExpEquivalent { .. } => "exp_equivalent",
            ScheduleSpec::Product { .. } => "product",
        }
    }

    /// The LR of update `step` (0 is the first update). Errors only for a twin whose
    /// recursion breaks down.
    pub fn lr(&self, step: u64) -> Result<f64> {
        Ok(match &self.kind {
            Kind::Constant(lr) => *lr,
            Kind::MultiStep {
                lr,
                milestones,
                gamma,
            } => {
                let n = milestones.partition_point(|&m| m <= step);
                lr * gamma.powi(n as i32)
            }
            Kind::Step {
                lr,
                step_size,
                gamma,
            } => lr * gamma.powf((step / step_size) as f64),
            Kind::Exponential { lr, factor, period } => lr * factor.powf((step / period) as f64),
            Kind::Cosine { lr, t_max, eta_min } => {
                let x = std::f64::consts::PI * step as f64 / *t_max as f64;
                eta_min + (lr - eta_min) * (1.0 + x.cos()) / 2.0
            }
            Kind::Warmup {
                lr,
                start,
                end,
                total,
            } => {
                let k = step.min(*total) as f64;
                lr * (start + (end - start) * k / *total as f64)
            }
            Kind::Sequential { parts, milestones } => {
                let i = milestones.partition_point(|&m| m <= step);
                let offset = if i == 0 { 0 } else { milestones[i - 1] };
                return parts[i].lr(step - offset);
            }
            Kind::Twin(twin) => return twin.lr(step),
            Kind::Product(parts) => {
                let mut lr = 1.0;
                for p in parts {
                    lr *= p.lr(step)?;
                }
                lr
            }
        })
    }

    /// The twin this schedule is the LR of (`texp`, `texp_minus`, `exp_equivalent`), with its
    /// corrections on: what [`ParamGroup::twin`](crate::ParamGroup::twin) trains with. Other
    /// kinds error.
    pub fn twin(&self) -> Result<Twin> {
        match &self.kind {
            Kind::Twin(core) => Ok(Twin::new(self.clone(), core.clone())),
            _ => Err(ScheduleError::NotAvailable {
                kind: self.kind_name(),
                what: "exponential twin",
                hint: "build one with `Twin::exact`, `Twin::texp` or `Twin::texp_minus` from it",
            }),
        }
    }
}
