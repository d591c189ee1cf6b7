//! Built schedules, the pure functions of the step: [`Schedule`] (an LR, or as a weight-decay
//! schedule the λ of every update), [`WeightDecay`] (λ_k: a constant or a schedule) and
//! `TwinCore`, the cached sequences α_t, P_t and c_k (THEORY.md §4–§5) from which a twin's LR
//! is computed. The three contain one another (a twin's LR needs its base schedule and weight
//! decay, and a weight decay may be a schedule), so they live together here; `build` validates
//! specs into them and `twin` presents a twin's sequences as [`Twin`](crate::Twin).

use std::sync::{Arc, Mutex};

use crate::alpha::alpha;
use crate::error::{invalid, Result, ScheduleError};
use crate::spec::{AlphaRule, ScheduleSpec};
use crate::unit::Unit;

/// A built, validated schedule: a pure function of the step. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: Kind,
    spec: ScheduleSpec,
    unit: Unit,
}

/// What a schedule computes, its counts in updates (validated by [`Schedule::build`]).
#[derive(Clone, Debug)]
pub(crate) enum Kind {
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
    /// A schedule of `kind`, built from `spec` in `unit` (by [`Schedule::build`], which
    /// validates them).
    pub(crate) fn new(kind: Kind, spec: ScheduleSpec, unit: Unit) -> Self {
        Self { kind, spec, unit }
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
    /// recursion breaks down. A weight-decay schedule's λ_k is read with [`WeightDecay::at`].
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

    /// The sequences of a twin's LR (`texp`, `texp_minus`, `exp_equivalent`); `None` for other
    /// kinds.
    pub(crate) fn twin_core(&self) -> Option<&Arc<TwinCore>> {
        match &self.kind {
            Kind::Twin(core) => Some(core),
            _ => None,
        }
    }
}

/// The coupled weight decay λ_k of update `k`: a constant, or the value of a schedule (e.g. the
/// weight decay divided by 10 at milestones, EXPERIMENTS.md E6). `From<f64>` and
/// `From<Schedule>` let a builder take either.
#[derive(Clone, Debug)]
pub enum WeightDecay {
    /// The same λ at every update.
    Constant(f64),
    /// λ_k is the schedule's value at update `k`.
    Schedule(Schedule),
}

impl WeightDecay {
    /// λ_k, the weight decay of update `step`: the constant, or the schedule's value at `step`
    /// (what [`Schedule::lr`] computes for it, whatever the schedule scales). Callers read a
    /// weight decay through this, never through the schedule.
    pub fn at(&self, step: u64) -> Result<f64> {
        match self {
            WeightDecay::Constant(lambda) => Ok(*lambda),
            WeightDecay::Schedule(s) => s.lr(step),
        }
    }

    /// A constant λ must be finite and ≥ 0 (a schedule's values are positive by construction).
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        match self {
            WeightDecay::Constant(lambda) if !(*lambda >= 0.0 && lambda.is_finite()) => {
                Err(invalid(field, lambda, "a finite number >= 0"))
            }
            _ => Ok(()),
        }
    }

    /// `Constant(0)`: no weight decay.
    pub fn is_zero(&self) -> bool {
        matches!(self, WeightDecay::Constant(lambda) if *lambda == 0.0)
    }
}

impl Default for WeightDecay {
    fn default() -> Self {
        WeightDecay::Constant(0.0)
    }
}

impl From<f64> for WeightDecay {
    fn from(lambda: f64) -> Self {
        WeightDecay::Constant(lambda)
    }
}

impl From<Schedule> for WeightDecay {
    fn from(schedule: Schedule) -> Self {
        WeightDecay::Schedule(schedule)
    }
}

/// α_t, P_t and c_{t−1} of one step of a twin.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TwinStep {
    pub(crate) alpha: f64,
    pub(crate) scale: f64,
    pub(crate) correction_before: f64,
}

/// The sequences of a twin, extended on demand and cached: a pure function of the step (the
/// cache only remembers what was computed, so a resumed run recomputes the same values).
pub(crate) struct TwinCore {
    pub(crate) base: Schedule,
    pub(crate) weight_decay: WeightDecay,
    pub(crate) momentum: f64,
    pub(crate) rule: AlphaRule,
    pub(crate) alpha0: f64,
    pub(crate) lr0: f64,
    /// Entry t: α_t, P_t and c_{t−1} (THEORY.md §4–§5).
    steps: Mutex<Vec<TwinStep>>,
}

impl std::fmt::Debug for TwinCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cache can hold millions of entries: show its length only.
        let cached = self.steps.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("TwinCore")
            .field("base", &self.base)
            .field("weight_decay", &self.weight_decay)
            .field("momentum", &self.momentum)
            .field("rule", &self.rule)
            .field("alpha0", &self.alpha0)
            .field("cached_steps", &cached)
            .finish()
    }
}

impl TwinCore {
    /// The twin of `base` run with `weight_decay` and `momentum`. α_0 is §3's root for the
    /// first update (with η_{−1} = η_0 it fixes the momentum pre-fill), P_0 = 1.
    pub(crate) fn new(
        base: Schedule,
        weight_decay: WeightDecay,
        momentum: f64,
        rule: AlphaRule,
    ) -> Result<Self> {
        weight_decay.validate("weight_decay")?;
        let lr0 = base.lr(0)?;
        let alpha0 = alpha(lr0, weight_decay.at(0)?, momentum)?;
        Ok(Self {
            base,
            weight_decay,
            momentum,
            rule,
            alpha0,
            lr0,
            steps: Mutex::new(vec![TwinStep {
                alpha: alpha0,
                scale: 1.0,
                correction_before: 0.0,
            }]),
        })
    }

    /// The entry after `now`, entry `k`: the update k from θ̃_k to θ̃_{k+1} fixes α_{k+1},
    /// P_{k+1} and c_k.
    pub(crate) fn after(&self, k: u64, now: TwinStep) -> Result<TwinStep> {
        let eta = self.base.lr(k)?;
        let eta_before = if k >= 1 {
            self.base.lr(k - 1)?
        } else {
            self.lr0
        };
        if eta_before.is_nan() || eta_before <= 0.0 {
            return Err(ScheduleError::TransformBreaksDown {
                step: k + 1,
                alpha: f64::NAN,
                lr: eta_before,
            });
        }
        let lambda = self.weight_decay.at(k)?;
        // THEORY.md §4: α_rec = 1 − η_kλ_k + γ(η_k/η_{k−1})(1 − 1/α_k).
        let recursion =
            1.0 - eta * lambda + self.momentum * (eta / eta_before) * (1.0 - 1.0 / now.alpha);
        let next = match self.rule {
            AlphaRule::Recursion => recursion,
            AlphaRule::Root => alpha(eta, lambda, self.momentum)?,
        };
        if !(next > 0.0 && next.is_finite()) {
            return Err(ScheduleError::TransformBreaksDown {
                step: k + 1,
                alpha: next,
                lr: eta,
            });
        }
        // THEORY.md §5: c_k = (α_{k+1} − α_rec)/(η_k·P_k²), zero for the recursion itself.
        let correction = match self.rule {
            AlphaRule::Recursion => 0.0,
            AlphaRule::Root => (next - recursion) / (eta * now.scale * now.scale),
        };
        Ok(TwinStep {
            alpha: next,
            scale: now.scale / next,
            correction_before: correction,
        })
    }

    /// The first entry (t = 0): α_0, P_0 = 1.
    pub(crate) fn first(&self) -> TwinStep {
        TwinStep {
            alpha: self.alpha0,
            scale: 1.0,
            correction_before: 0.0,
        }
    }

    /// Entry `t`, extending the cached sequences as needed.
    pub(crate) fn at(&self, t: u64) -> Result<TwinStep> {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let t = usize::try_from(t).map_err(|_| invalid("step", t, "a step that fits in usize"))?;
        while steps.len() <= t {
            let k = steps.len() - 1;
            let next = self.after(k as u64, steps[k])?;
            steps.push(next);
        }
        Ok(steps[t])
    }

    /// The twin's LR η̃_t of update `t`.
    pub(crate) fn lr(&self, t: u64) -> Result<f64> {
        // THEORY.md §4: η̃_t = P_t·P_{t+1}·η_t.
        Ok(self.at(t)?.scale * self.at(t + 1)?.scale * self.base.lr(t)?)
    }
}
