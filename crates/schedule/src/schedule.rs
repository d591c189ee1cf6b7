//! Schedules: serde specs and the pure functions step → LR built from them.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::alpha::{alpha, check_positive};
use crate::error::{invalid, Result, ScheduleError};

/// A schedule as written in a manifest (`kind: multistep`, …). Unknown fields are rejected.
///
/// Where a spec has `steps_per_epoch`, its step counts (`milestones`, `step_size`, `t_max`,
/// `total_iters`) are in epochs and converted to steps; without it they are in steps. The LR
/// of update `k` (k = 0 is the first update) is what PyTorch's optimizer uses after `k`
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
        /// Strictly increasing milestones (steps, or epochs with `steps_per_epoch`).
        milestones: Vec<u64>,
        /// Factor applied at each milestone (0.1 divides by 10).
        gamma: f64,
        /// When set, milestones are in epochs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
    },
    /// `lr · gamma^floor(k / step_size)` (torch `StepLR`).
    Step {
        /// Initial LR.
        lr: f64,
        /// Period (steps, or epochs with `steps_per_epoch`).
        step_size: u64,
        /// Factor applied every period.
        gamma: f64,
        /// When set, `step_size` is in epochs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
    },
    /// `lr · factor^k` per step, or `lr · factor^floor(k / steps_per_epoch)` per epoch
    /// (torch `ExponentialLR`); any positive factor, growth (> 1) included.
    Exponential {
        /// Initial LR.
        lr: f64,
        /// Factor per step (or per epoch with `steps_per_epoch`).
        factor: f64,
        /// When set, the factor is applied once per epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
    },
    /// `eta_min + (lr − eta_min)(1 + cos(π k / t_max)) / 2` (torch `CosineAnnealingLR`'s
    /// closed form, periodic past `t_max` like torch's).
    Cosine {
        /// Initial LR.
        lr: f64,
        /// Half period (steps, or epochs with `steps_per_epoch`).
        t_max: u64,
        /// The floor.
        #[serde(default)]
        eta_min: f64,
        /// When set, `t_max` is in epochs (the LR still changes every step).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
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
        /// Length of the ramp (steps, or epochs with `steps_per_epoch`).
        total_iters: u64,
        /// When set, `total_iters` is in epochs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
    },
    /// Schedules joined at boundaries; each restarts at its own step 0 (torch `SequentialLR`).
    Sequential {
        /// The parts, in order.
        schedules: Vec<ScheduleSpec>,
        /// `schedules.len() − 1` strictly increasing boundaries (steps, or epochs).
        milestones: Vec<u64>,
        /// When set, milestones are in epochs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
    },
    /// TEXP (THEORY.md §5): the exponential schedule without weight decay equivalent to the
    /// step decay (`lr`, `milestones`, `gamma`) with `weight_decay` and `momentum`.
    Texp {
        /// Initial LR of the step decay.
        lr: f64,
        /// Decay milestones (steps, or epochs with `steps_per_epoch`).
        milestones: Vec<u64>,
        /// Step-decay factor (0.1 divides by 10).
        gamma: f64,
        /// Weight decay λ of the step-decay run.
        weight_decay: f64,
        /// Momentum γ.
        momentum: f64,
        /// When set, milestones are in epochs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
    },
    /// TEXP-- (THEORY.md §5): like TEXP, but at a boundary only the growth rate changes (no
    /// instant decay).
    TexpMinus {
        /// Initial LR of the step decay.
        lr: f64,
        /// Decay milestones (steps, or epochs with `steps_per_epoch`).
        milestones: Vec<u64>,
        /// Step-decay factor.
        gamma: f64,
        /// Weight decay λ.
        weight_decay: f64,
        /// Momentum γ.
        momentum: f64,
        /// When set, milestones are in epochs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
    },
    /// The product of several schedules' LRs at every step; e.g. an exponential twin times a
    /// step decay of factor 1 gives instant decays without tapering the growth (EXPERIMENTS.md
    /// E2). Each part sees the same step.
    Product {
        /// The factors (at least one).
        schedules: Vec<ScheduleSpec>,
    },
    /// The exact transform of THEORY.md §4 applied to any schedule: the LR without weight
    /// decay whose run equals `base` with `weight_decay` up to the scale P_t.
    ExpEquivalent {
        /// The schedule of the weight-decay run.
        base: Box<ScheduleSpec>,
        /// Weight decay λ of the base run.
        weight_decay: f64,
        /// Momentum γ.
        momentum: f64,
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

    /// TEXP (or TEXP-- when `minus`) for the step decay (`lr`, `milestones`, `gamma`) run with
    /// `weight_decay` and `momentum` (THEORY.md §5).
    pub fn texp(
        minus: bool,
        lr: f64,
        milestones: Vec<u64>,
        gamma: f64,
        weight_decay: f64,
        momentum: f64,
        steps_per_epoch: Option<u64>,
    ) -> Self {
        if minus {
            ScheduleSpec::TexpMinus {
                lr,
                milestones,
                gamma,
                weight_decay,
                momentum,
                steps_per_epoch,
            }
        } else {
            ScheduleSpec::Texp {
                lr,
                milestones,
                gamma,
                weight_decay,
                momentum,
                steps_per_epoch,
            }
        }
    }

    /// Validates the spec and builds the schedule.
    pub fn build(&self) -> Result<Schedule> {
        Schedule::from_spec(self)
    }
}

fn to_steps(field: &str, n: u64, spe: Option<u64>) -> Result<u64> {
    match spe {
        None => Ok(n),
        Some(0) => Err(invalid("steps_per_epoch", 0, "an integer >= 1")),
        Some(s) => n.checked_mul(s).ok_or_else(|| {
            invalid(
                field,
                n,
                "a count whose product with steps_per_epoch fits in u64",
            )
        }),
    }
}

fn increasing(field: &str, ms: &[u64], spe: Option<u64>) -> Result<Vec<u64>> {
    let steps = ms
        .iter()
        .map(|&m| to_steps(field, m, spe))
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

fn factor(field: &str, v: f64) -> Result<()> {
    check_positive(field, v)
}

/// A built, validated schedule: a pure function of the step. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: Kind,
    spec: ScheduleSpec,
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
    Texp(Arc<Texp>),
    ExpEquivalent(Arc<ExpEquivalent>),
    Product(Vec<Schedule>),
}

/// One phase of a step decay and its TEXP counterpart (THEORY.md §5).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TexpPhase {
    /// First step of the phase.
    pub start: u64,
    /// The step-decay LR η_I in this phase.
    pub base_lr: f64,
    /// α*_I, the §3 root for η_I.
    pub alpha: f64,
    /// The TEXP LR at the phase's first step.
    pub start_lr: f64,
    /// The per-step growth (α*_I)^(−2).
    pub per_step_growth: f64,
}

#[derive(Debug)]
struct Texp {
    phases: Vec<TexpPhase>,
    prefill: f64,
}

impl Texp {
    fn new(
        lr: f64,
        milestones: &[u64],
        gamma: f64,
        wd: f64,
        momentum: f64,
        minus: bool,
    ) -> Result<Self> {
        let mut phases: Vec<TexpPhase> = Vec::new();
        let mut base = lr;
        let a0 = alpha(lr, wd, momentum)?;
        phases.push(TexpPhase {
            start: 0,
            base_lr: lr,
            alpha: a0,
            start_lr: lr / a0, // THEORY.md §5: η̃_0 = η_0/α*_0
            per_step_growth: a0.powi(-2),
        });
        for &m in milestones {
            let prev = phases.last().cloned().expect("phase 0 exists");
            let next_base = base * gamma;
            let a = alpha(next_base, wd, momentum)?;
            // THEORY.md §5: η̃_{T_I} = η̃_{T_I−1}·(η_I/η_{I−1})·(α*_{I−1}α*_I)^(−1); TEXP-- drops the ratio.
            let before = prev.start_lr * prev.alpha.powf(-2.0 * (m - 1 - prev.start) as f64);
            let decay = if minus { 1.0 } else { next_base / base };
            phases.push(TexpPhase {
                start: m,
                base_lr: next_base,
                alpha: a,
                start_lr: before * decay / (prev.alpha * a),
                per_step_growth: a.powi(-2),
            });
            base = next_base;
        }
        Ok(Self {
            phases,
            prefill: (a0 - 1.0) / (a0 * lr),
        })
    }

    fn lr(&self, step: u64) -> f64 {
        let i = self.phases.partition_point(|p| p.start <= step) - 1;
        let p = &self.phases[i];
        // THEORY.md §5: η̃_t = η̃_{t−1}·(α*_I)^(−2) inside phase I.
        p.start_lr * p.alpha.powf(-2.0 * (step - p.start) as f64)
    }
}

/// The §4 recursion, extended on demand and cached (the schedule stays a pure function).
struct ExpEquivalent {
    base: Schedule,
    weight_decay: f64,
    momentum: f64,
    alpha0: f64,
    lr0: f64,
    /// (α_t, P_t) for t = 0, 1, … (THEORY.md §4).
    scales: Mutex<Vec<(f64, f64)>>,
}

impl std::fmt::Debug for ExpEquivalent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cache can hold millions of entries: show its length only.
        let cached = self.scales.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("ExpEquivalent")
            .field("base", &self.base)
            .field("weight_decay", &self.weight_decay)
            .field("momentum", &self.momentum)
            .field("alpha0", &self.alpha0)
            .field("cached_steps", &cached)
            .finish()
    }
}

impl ExpEquivalent {
    fn new(base: Schedule, weight_decay: f64, momentum: f64) -> Result<Self> {
        let lr0 = base.lr(0)?;
        let alpha0 = alpha(lr0, weight_decay, momentum)?;
        Ok(Self {
            base,
            weight_decay,
            momentum,
            alpha0,
            lr0,
            // P_0 = α_{−1}^{−1}·α_0^{−1} = 1 with α_{−1} = 1/α_0.
            scales: Mutex::new(vec![(alpha0, 1.0)]),
        })
    }

    /// P_t, extending the recursion as needed.
    fn scale(&self, t: u64) -> Result<f64> {
        let mut scales = self.scales.lock().unwrap_or_else(|e| e.into_inner());
        let t = usize::try_from(t).map_err(|_| invalid("step", t, "a step that fits in usize"))?;
        while scales.len() <= t {
            let s = scales.len() as u64; // computing α_s, s ≥ 1
            let eta1 = self.base.lr(s - 1)?;
            let eta2 = if s >= 2 {
                self.base.lr(s - 2)?
            } else {
                self.lr0
            };
            let (prev_alpha, prev_scale) = scales[s as usize - 1];
            if eta2.is_nan() || eta2 <= 0.0 {
                return Err(ScheduleError::TransformBreaksDown {
                    step: s,
                    alpha: f64::NAN,
                    lr: eta2,
                });
            }
            // THEORY.md §4: α_t = 1 − η_{t−1}λ + γ(η_{t−1}/η_{t−2})(1 − 1/α_{t−1}).
            let a = 1.0 - eta1 * self.weight_decay
                + self.momentum * (eta1 / eta2) * (1.0 - 1.0 / prev_alpha);
            if !(a > 0.0 && a.is_finite()) {
                return Err(ScheduleError::TransformBreaksDown {
                    step: s,
                    alpha: a,
                    lr: eta1,
                });
            }
            scales.push((a, prev_scale / a));
        }
        Ok(scales[t].1)
    }

    fn lr(&self, t: u64) -> Result<f64> {
        // THEORY.md §4: η̃_t = P_t·P_{t+1}·η_t.
        Ok(self.scale(t)? * self.scale(t + 1)? * self.base.lr(t)?)
    }
}

impl Schedule {
    /// Validates `spec` and builds the schedule.
    pub fn from_spec(spec: &ScheduleSpec) -> Result<Self> {
        let kind = match spec {
            ScheduleSpec::Constant { lr } => {
                check_positive("lr", *lr)?;
                Kind::Constant(*lr)
            }
            ScheduleSpec::Multistep {
                lr,
                milestones,
                gamma,
                steps_per_epoch,
            } => {
                check_positive("lr", *lr)?;
                factor("gamma", *gamma)?;
                Kind::MultiStep {
                    lr: *lr,
                    milestones: increasing("milestones", milestones, *steps_per_epoch)?,
                    gamma: *gamma,
                }
            }
            ScheduleSpec::Step {
                lr,
                step_size,
                gamma,
                steps_per_epoch,
            } => {
                check_positive("lr", *lr)?;
                factor("gamma", *gamma)?;
                let step_size = to_steps("step_size", *step_size, *steps_per_epoch)?;
                if step_size == 0 {
                    return Err(invalid("step_size", 0, "an integer >= 1"));
                }
                Kind::Step {
                    lr: *lr,
                    step_size,
                    gamma: *gamma,
                }
            }
            ScheduleSpec::Exponential {
                lr,
                factor: f,
                steps_per_epoch,
            } => {
                check_positive("lr", *lr)?;
                factor("factor", *f)?;
                Kind::Exponential {
                    lr: *lr,
                    factor: *f,
                    period: to_steps("steps_per_epoch", 1, *steps_per_epoch)?,
                }
            }
            ScheduleSpec::Cosine {
                lr,
                t_max,
                eta_min,
                steps_per_epoch,
            } => {
                check_positive("lr", *lr)?;
                if !(*eta_min >= 0.0 && eta_min < lr) {
                    return Err(invalid(
                        "eta_min",
                        eta_min,
                        &format!("a number in [0, lr = {lr})"),
                    ));
                }
                let t_max = to_steps("t_max", *t_max, *steps_per_epoch)?;
                if t_max == 0 {
                    return Err(invalid("t_max", 0, "an integer >= 1"));
                }
                Kind::Cosine {
                    lr: *lr,
                    t_max,
                    eta_min: *eta_min,
                }
            }
            ScheduleSpec::Warmup {
                lr,
                start_factor,
                end_factor,
                total_iters,
                steps_per_epoch,
            } => {
                check_positive("lr", *lr)?;
                factor("start_factor", *start_factor)?;
                factor("end_factor", *end_factor)?;
                let total = to_steps("total_iters", *total_iters, *steps_per_epoch)?;
                if total == 0 {
                    return Err(invalid("total_iters", 0, "an integer >= 1"));
                }
                Kind::Warmup {
                    lr: *lr,
                    start: *start_factor,
                    end: *end_factor,
                    total,
                }
            }
            ScheduleSpec::Sequential {
                schedules,
                milestones,
                steps_per_epoch,
            } => {
                if schedules.is_empty() || milestones.len() + 1 != schedules.len() {
                    return Err(invalid(
                        "milestones",
                        format!("{milestones:?}"),
                        &format!("one boundary fewer than the {} schedules", schedules.len()),
                    ));
                }
                let milestones = increasing("milestones", milestones, *steps_per_epoch)?;
                if milestones.first() == Some(&0) {
                    return Err(invalid("milestones", 0, "boundaries >= 1"));
                }
                let parts = schedules
                    .iter()
                    .map(Schedule::from_spec)
                    .collect::<Result<Vec<_>>>()?;
                Kind::Sequential { parts, milestones }
            }
            ScheduleSpec::Texp {
                lr,
                milestones,
                gamma,
                weight_decay,
                momentum,
                steps_per_epoch,
            }
            | ScheduleSpec::TexpMinus {
                lr,
                milestones,
                gamma,
                weight_decay,
                momentum,
                steps_per_epoch,
            } => {
                check_positive("lr", *lr)?;
                factor("gamma", *gamma)?;
                let ms = increasing("milestones", milestones, *steps_per_epoch)?;
                if ms.first() == Some(&0) {
                    return Err(invalid("milestones", 0, "milestones >= 1"));
                }
                let minus = matches!(spec, ScheduleSpec::TexpMinus { .. });
                Kind::Texp(Arc::new(Texp::new(
                    *lr,
                    &ms,
                    *gamma,
                    *weight_decay,
                    *momentum,
                    minus,
                )?))
            }
            ScheduleSpec::Product { schedules } => {
                if schedules.is_empty() {
                    return Err(invalid("schedules", "[]", "at least one schedule"));
                }
                Kind::Product(
                    schedules
                        .iter()
                        .map(Schedule::from_spec)
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            ScheduleSpec::ExpEquivalent {
                base,
                weight_decay,
                momentum,
            } => {
                let base = Schedule::from_spec(base)?;
                Kind::ExpEquivalent(Arc::new(ExpEquivalent::new(
                    base,
                    *weight_decay,
                    *momentum,
                )?))
            }
        };
        Ok(Self {
            kind,
            spec: spec.clone(),
        })
    }

    /// Parses a YAML spec and builds it.
    pub fn from_yaml(text: &str) -> Result<Self> {
        ScheduleSpec::from_yaml(text)?.build()
    }

    /// The spec this schedule was built from.
    pub fn spec(&self) -> &ScheduleSpec {
        &self.spec
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

    /// The LR of update `step` (0 is the first update). Errors only for the §4 transform
    /// when its recursion breaks down.
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
            Kind::Texp(t) => t.lr(step),
            Kind::ExpEquivalent(e) => return e.lr(step),
            Kind::Product(parts) => {
                let mut lr = 1.0;
                for p in parts {
                    lr *= p.lr(step)?;
                }
                lr
            }
        })
    }

    /// The exact exponential twin (THEORY.md §4) of this schedule run with `weight_decay`
    /// and `momentum`: no weight decay, LR P_t·P_{t+1}·η_t.
    pub fn exp_twin(&self, weight_decay: f64, momentum: f64) -> Result<Schedule> {
        ScheduleSpec::ExpEquivalent {
            base: Box::new(self.spec.clone()),
            weight_decay,
            momentum,
        }
        .build()
    }

    /// P_t of THEORY.md §4 for an `exp_equivalent` schedule: the twin's weights are
    /// P_t·θ_t. Other kinds error.
    pub fn twin_scale(&self, step: u64) -> Result<f64> {
        match &self.kind {
            Kind::ExpEquivalent(e) => e.scale(step),
            _ => Err(ScheduleError::NotAvailable {
                kind: self.kind_name(),
                what: "twin scale P_t",
                hint: "build the exact twin with `Schedule::exp_twin` and ask it",
            }),
        }
    }

    /// The momentum pre-fill coefficient c with ṽ_0 = c·θ_0, c = (α_0 − 1)/(α_0·η_0)
    /// (THEORY.md §3; the same holds for §4 and TEXP), for `texp`, `texp_minus` and
    /// `exp_equivalent` schedules.
    pub fn prefill_coefficient(&self) -> Result<f64> {
        match &self.kind {
            Kind::Texp(t) => Ok(t.prefill),
            Kind::ExpEquivalent(e) => Ok((e.alpha0 - 1.0) / (e.alpha0 * e.lr0)),
            _ => Err(ScheduleError::NotAvailable {
                kind: self.kind_name(),
                what: "momentum pre-fill",
                hint: "only texp, texp_minus and exp_equivalent schedules have one",
            }),
        }
    }

    /// The phases of a `texp`/`texp_minus` schedule (start, base LR, α*, growth).
    pub fn texp_phases(&self) -> Option<&[TexpPhase]> {
        match &self.kind {
            Kind::Texp(t) => Some(&t.phases),
            _ => None,
        }
    }
}
