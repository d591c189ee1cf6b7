//! Building schedules: [`Schedule::build`] validates a [`ScheduleSpec`] with its counts in a
//! [`Unit`] into a [`Schedule`] (a twin's sequences included), and the short constructors
//! ([`Schedule::multistep`], …) build the common kinds.

use std::sync::Arc;

use crate::alpha::check_positive;
use crate::error::{invalid, Result};
use crate::schedule::{Kind, Schedule, TwinCore, WeightDecay};
use crate::spec::{AlphaRule, ScheduleSpec};
use crate::unit::Unit;

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
        Ok(Schedule::new(kind(spec, unit)?, spec.clone(), unit))
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
}

impl ScheduleSpec {
    /// Validates the spec and builds the schedule with its counts in `unit`.
    pub fn build(&self, unit: Unit) -> Result<Schedule> {
        Schedule::build(self, unit)
    }
}

/// The validated [`Kind`] of `spec`, its counts converted from `unit` to updates.
fn kind(spec: &ScheduleSpec, unit: Unit) -> Result<Kind> {
    match spec {
        ScheduleSpec::Constant { lr } => {
            check_positive("lr", *lr)?;
            Ok(Kind::Constant(*lr))
        }
        ScheduleSpec::Multistep {
            lr,
            milestones,
            gamma,
        } => multistep(*lr, milestones, *gamma, unit),
        ScheduleSpec::Step {
            lr,
            step_size,
            gamma,
        } => step(*lr, *step_size, *gamma, unit),
        ScheduleSpec::Exponential { lr, factor } => exponential(*lr, *factor, unit),
        ScheduleSpec::Cosine { lr, t_max, eta_min } => cosine(*lr, *t_max, *eta_min, unit),
        ScheduleSpec::Warmup {
            lr,
            start_factor,
            end_factor,
            total_iters,
        } => warmup(*lr, *start_factor, *end_factor, *total_iters, unit),
        ScheduleSpec::Sequential {
            schedules,
            milestones,
        } => sequential(schedules, milestones, unit),
        ScheduleSpec::Product { schedules } => product(schedules, unit),
        ScheduleSpec::ExpEquivalent {
            base,
            weight_decay,
            weight_decay_schedule,
            momentum,
            alpha,
        } => exp_equivalent(
            base,
            *weight_decay,
            weight_decay_schedule.as_deref(),
            *momentum,
            *alpha,
            unit,
        ),
        ScheduleSpec::Texp {
            lr,
            milestones,
            gamma,
            weight_decay,
            momentum,
        }
        | ScheduleSpec::TexpMinus {
            lr,
            milestones,
            gamma,
            weight_decay,
            momentum,
        } => {
            let minus = matches!(spec, ScheduleSpec::TexpMinus { .. });
            let general = tapered(minus, *lr, milestones, *gamma, *weight_decay, *momentum)?;
            kind(&general, unit)
        }
    }
}

/// `multistep`: a positive LR and factor, strictly increasing milestones.
fn multistep(lr: f64, milestones: &[u64], gamma: f64, unit: Unit) -> Result<Kind> {
    check_positive("lr", lr)?;
    check_positive("gamma", gamma)?;
    Ok(Kind::MultiStep {
        lr,
        milestones: increasing("milestones", milestones, unit)?,
        gamma,
    })
}

/// `step`: a positive LR and factor, a period of at least one update.
fn step(lr: f64, step_size: u64, gamma: f64, unit: Unit) -> Result<Kind> {
    check_positive("lr", lr)?;
    check_positive("gamma", gamma)?;
    Ok(Kind::Step {
        lr,
        step_size: positive_steps("step_size", step_size, unit)?,
        gamma,
    })
}

/// `exponential`: a positive LR and factor, applied once per step or once per epoch.
fn exponential(lr: f64, factor: f64, unit: Unit) -> Result<Kind> {
    check_positive("lr", lr)?;
    check_positive("factor", factor)?;
    Ok(Kind::Exponential {
        lr,
        factor,
        period: unit.to_steps("steps_per_epoch", 1)?,
    })
}

/// `cosine`: a positive LR, a floor in [0, lr), a half period of at least one update.
fn cosine(lr: f64, t_max: u64, eta_min: f64, unit: Unit) -> Result<Kind> {
    check_positive("lr", lr)?;
    if !(eta_min >= 0.0 && eta_min < lr) {
        return Err(invalid(
            "eta_min",
            eta_min,
            &format!("a number in [0, lr = {lr})"),
        ));
    }
    Ok(Kind::Cosine {
        lr,
        t_max: positive_steps("t_max", t_max, unit)?,
        eta_min,
    })
}

/// `warmup`: a positive LR and factors, a ramp of at least one update.
fn warmup(
    lr: f64,
    start_factor: f64,
    end_factor: f64,
    total_iters: u64,
    unit: Unit,
) -> Result<Kind> {
    check_positive("lr", lr)?;
    check_positive("start_factor", start_factor)?;
    check_positive("end_factor", end_factor)?;
    Ok(Kind::Warmup {
        lr,
        start: start_factor,
        end: end_factor,
        total: positive_steps("total_iters", total_iters, unit)?,
    })
}

/// `sequential`: one boundary fewer than schedules, strictly increasing from 1 on.
fn sequential(schedules: &[ScheduleSpec], milestones: &[u64], unit: Unit) -> Result<Kind> {
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
    Ok(Kind::Sequential { parts, milestones })
}

/// `product`: at least one factor.
fn product(schedules: &[ScheduleSpec], unit: Unit) -> Result<Kind> {
    if schedules.is_empty() {
        return Err(invalid("schedules", "[]", "at least one schedule"));
    }
    Ok(Kind::Product(
        schedules
            .iter()
            .map(|s| Schedule::build(s, unit))
            .collect::<Result<Vec<_>>>()?,
    ))
}

/// `exp_equivalent`: the twin (THEORY.md §4–§5) of `base` run with a constant `weight_decay` or
/// with `weight_decay_schedule` (not both) and `momentum`, α picked by `rule`.
fn exp_equivalent(
    base: &ScheduleSpec,
    weight_decay: f64,
    weight_decay_schedule: Option<&ScheduleSpec>,
    momentum: f64,
    rule: AlphaRule,
    unit: Unit,
) -> Result<Kind> {
    let weight_decay = match weight_decay_schedule {
        None => WeightDecay::Constant(weight_decay),
        Some(_) if weight_decay != 0.0 => {
            return Err(invalid(
                "weight_decay",
                weight_decay,
                "0 (absent) when `weight_decay_schedule` is given: give one of them",
            ))
        }
        Some(w) => WeightDecay::Schedule(Schedule::build(w, unit)?),
    };
    Ok(Kind::Twin(Arc::new(TwinCore::new(
        Schedule::build(base, unit)?,
        weight_decay,
        momentum,
        rule,
    )?)))
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
