//! Exponential twins (THEORY.md §3–§5): the run without weight decay that equals a weight-decay
//! run up to a scale, with everything the optimizer needs to make it exact. A twin's sequences
//! live with its LR schedule (`TwinCore`, in `schedule`); [`Twin`] builds them from a base run
//! and presents them.

use std::sync::Arc;

use serde::Serialize;

use crate::alpha::alpha;
use crate::error::{invalid, Result, ScheduleError};
use crate::schedule::{Schedule, TwinCore, TwinStep, WeightDecay};
use crate::spec::{AlphaRule, ScheduleSpec};

/// The exponential twin of a weight-decay run (THEORY.md §3–§5): the LR to train without weight
/// decay, the scale P_t with θ̃_t = P_t·θ_t, the momentum pre-fill, and the corrections c_k
/// that [`Sgd`](crate::Sgd) adds to the momentum buffer at update k
/// (ṽ ← γṽ + ∇L(θ̃_k) + c_k·θ̃_k). Give it to a group with
/// [`ParamGroup::twin`](crate::ParamGroup::twin). Cloning is cheap.
///
/// - [`Twin::exact`]: the §4 recursion (no corrections), for any schedule, weight decay or
///   weight-decay schedule; of a constant LR it is §3's ExpLR, of a cosine the exponential
///   cosine.
/// - [`Twin::texp`]: TEXP, §3's root at every update; for a step decay a correction at each
///   phase start.
/// - [`Twin::texp_minus`]: TEXP--, the twin of keeping η and dividing the weight decay.
/// - [`Twin::plain`]: the same LR without the corrections (the paper's plain TEXP, a control:
///   not exact).
///
/// ```
/// use explr_schedule::{Schedule, Twin, Unit};
///
/// let step_decay = Schedule::multistep(0.1, &[80, 120], 0.1, Unit::Epochs(391))?;
/// let texp = Twin::texp(&step_decay, 5e-4, 0.9)?;
/// assert!((texp.lr(391)? - 0.148198).abs() < 1e-6); // THEORY.md §5
/// assert!(texp.correction(80 * 391)? != 0.0); // the one-time correction entering phase 1
/// assert_eq!(texp.clone().plain().correction(80 * 391)?, 0.0);
/// # Ok::<(), explr_schedule::ScheduleError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Twin {
    schedule: Schedule,
    core: Arc<TwinCore>,
    corrected: bool,
}

/// A run of updates with the same η·λ, and what the twin does in it (for TEXP: THEORY.md §5's
/// phases).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TwinPhase {
    /// First update of the phase.
    pub start: u64,
    /// The base run's LR η at the phase's first update.
    pub base_lr: f64,
    /// The base run's weight decay λ at the phase's first update.
    pub weight_decay: f64,
    /// α* of §3 for this η·λ: the twin's per-step factor in the phase (for the recursion, the
    /// value it relaxes to).
    pub alpha: f64,
    /// The twin's LR at the phase's first update.
    pub start_lr: f64,
    /// The LR growth per step the phase tends to, (α*)^(−2).
    pub per_step_growth: f64,
    /// The momentum correction c of the phase's first update (THEORY.md §5).
    pub correction: f64,
}

impl Twin {
    fn new(schedule: Schedule, core: Arc<TwinCore>) -> Self {
        Self {
            schedule,
            core,
            corrected: true,
        }
    }

    /// The exact twin of THEORY.md §4 of `base` run with `weight_decay` (a constant or a
    /// schedule, in the unit of `base`) and `momentum`.
    pub fn exact(
        base: &Schedule,
        weight_decay: impl Into<WeightDecay>,
        momentum: f64,
    ) -> Result<Self> {
        Self::with_rule(base, weight_decay.into(), momentum, AlphaRule::Recursion)
    }

    /// TEXP (THEORY.md §5), with the corrections that make it exact: α_{k+1} is §3's root for
    /// η_k·λ_k. For a step decay with a constant weight decay this is the paper's TEXP, with one
    /// correction at each phase start; it is defined (and exact) for any base.
    pub fn texp(
        base: &Schedule,
        weight_decay: impl Into<WeightDecay>,
        momentum: f64,
    ) -> Result<Self> {
        Self::with_rule(base, weight_decay.into(), momentum, AlphaRule::Root)
    }

    /// TEXP-- (THEORY.md §5), with its corrections: no instant decay, only the growth rate
    /// changes. It is the exact twin of keeping η_0 and multiplying the weight decay by
    /// η_t/η_0, so `base` is a `multistep` with a constant weight decay (TEXP-- of a step decay)
    /// or a `constant` LR with any weight decay (e.g. divided by 10 at milestones).
    pub fn texp_minus(
        base: &Schedule,
        weight_decay: impl Into<WeightDecay>,
        momentum: f64,
    ) -> Result<Self> {
        let weight_decay = weight_decay.into();
        let (lr, weight_decay) = match (base.spec(), &weight_decay) {
            (ScheduleSpec::Constant { lr }, _) => (*lr, weight_decay),
            (ScheduleSpec::Multistep { lr, .. }, WeightDecay::Constant(lambda))
                if *lambda == 0.0 =>
            {
                (*lr, weight_decay)
            }
            (
                ScheduleSpec::Multistep {
                    lr,
                    milestones,
                    gamma,
                },
                WeightDecay::Constant(lambda),
            ) => (
                *lr,
                Schedule::multistep(*lambda, milestones, *gamma, base.unit())?.into(),
            ),
            _ => {
                return Err(ScheduleError::NotAvailable {
                    kind: base.kind_name(),
                    what: "TEXP-- twin with this weight decay",
                    hint: "TEXP-- twins a `multistep` LR with a constant weight decay, or a \
                           `constant` LR with any weight decay; use `Twin::texp` or \
                           `Twin::exact` otherwise",
                })
            }
        };
        Self::with_rule(
            &Schedule::build(&ScheduleSpec::Constant { lr }, base.unit())?,
            weight_decay,
            momentum,
            AlphaRule::Root,
        )
    }

    fn with_rule(
        base: &Schedule,
        weight_decay: WeightDecay,
        momentum: f64,
        rule: AlphaRule,
    ) -> Result<Self> {
        let (weight_decay, weight_decay_schedule) = match weight_decay {
            WeightDecay::Constant(lambda) => (lambda, None),
            WeightDecay::Schedule(s) if s.unit() != base.unit() => {
                return Err(invalid(
                    "weight_decay_schedule",
                    format!("a schedule in {:?}", s.unit()),
                    &format!("a schedule in the base's unit, {:?}", base.unit()),
                ))
            }
            WeightDecay::Schedule(s) => (0.0, Some(Box::new(s.spec().clone()))),
        };
        let spec = ScheduleSpec::ExpEquivalent {
            base: Box::new(base.spec().clone()),
            weight_decay,
            weight_decay_schedule,
            momentum,
            alpha: rule,
        };
        Schedule::build(&spec, base.unit())?.twin()
    }

    /// The same twin without the momentum corrections (the pre-fill stays): plain TEXP or
    /// TEXP--, a control that is *not* exact (THEORY.md §5). The §4 recursion has no
    /// corrections, so its plain twin is itself.
    pub fn plain(mut self) -> Self {
        self.corrected = false;
        self
    }

    /// Whether [`Twin::correction`] returns the corrections (false after [`Twin::plain`]).
    pub fn is_corrected(&self) -> bool {
        self.corrected
    }

    /// The twin's LR as a schedule (its spec describes the twin).
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The base run's LR schedule.
    pub fn base(&self) -> &Schedule {
        &self.core.base
    }

    /// The base run's weight decay.
    pub fn weight_decay(&self) -> &WeightDecay {
        &self.core.weight_decay
    }

    /// The momentum γ of both runs.
    pub fn momentum(&self) -> f64 {
        self.core.momentum
    }

    /// How the twin picks α.
    pub fn rule(&self) -> AlphaRule {
        self.core.rule
    }

    /// The twin's LR η̃_t = P_t·P_{t+1}·η_t of update `t`.
    pub fn lr(&self, t: u64) -> Result<f64> {
        self.core.lr(t)
    }

    /// P_t (THEORY.md §4): after `t` updates the twin's weights are P_t·θ_t.
    pub fn scale(&self, t: u64) -> Result<f64> {
        Ok(self.core.at(t)?.scale)
    }

    /// α_t (THEORY.md §4): P_t = P_{t−1}/α_t; α_0 is §3's root for the first update.
    pub fn alpha(&self, t: u64) -> Result<f64> {
        Ok(self.core.at(t)?.alpha)
    }

    /// c_k, added as c_k·θ̃_k to the momentum buffer after the momentum update of update `k`
    /// (THEORY.md §5); 0 for the §4 recursion and for a [`Twin::plain`] twin.
    pub fn correction(&self, k: u64) -> Result<f64> {
        if !self.corrected {
            return Ok(0.0);
        }
        Ok(self.core.at(k + 1)?.correction_before)
    }

    /// The momentum pre-fill coefficient p with ṽ_0 = p·θ_0, p = (α_0 − 1)/(α_0·η_0)
    /// (THEORY.md §3); [`Sgd`](crate::Sgd) applies it at the first update of a twin group.
    pub fn prefill_coefficient(&self) -> f64 {
        (self.core.alpha0 - 1.0) / (self.core.alpha0 * self.core.lr0)
    }

    /// The §4 twin of the same base run: the reference whose LR this twin's is compared with.
    pub fn exact_counterpart(&self) -> Result<Twin> {
        Twin::exact(self.base(), self.weight_decay().clone(), self.momentum())
    }

    /// The updates 0, 1, 2, … in order, in constant memory: the same numbers as
    /// [`Twin::lr`], [`Twin::scale`] and [`Twin::correction`], computed forward without the
    /// cache those keep (for printing or scanning millions of updates).
    pub fn walk(&self) -> TwinWalk<'_> {
        TwinWalk {
            twin: self,
            step: 0,
            now: self.core.first(),
        }
    }

    /// The phases of the first `steps` updates: a new phase starts at update 0 and wherever
    /// the base run's η·λ changes (for a step decay: its milestones). Constant memory in
    /// `steps` ([`Twin::walk`]).
    pub fn phases(&self, steps: u64) -> Result<Vec<TwinPhase>> {
        let mut phases = Vec::new();
        let mut previous = f64::NAN;
        for row in self
            .walk()
            .take(usize::try_from(steps).unwrap_or(usize::MAX))
        {
            let row = row?;
            let k = row.step;
            let (eta, lambda) = (self.base().lr(k)?, self.weight_decay().at(k)?);
            if eta * lambda == previous {
                continue;
            }
            previous = eta * lambda;
            let a = alpha(eta, lambda, self.momentum())?;
            phases.push(TwinPhase {
                start: k,
                base_lr: eta,
                weight_decay: lambda,
                alpha: a,
                start_lr: row.lr,
                per_step_growth: a.powi(-2),
                correction: row.correction,
            });
        }
        Ok(phases)
    }
}

/// One update of a twin, from [`Twin::walk`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TwinRow {
    /// The update (0 is the first).
    pub step: u64,
    /// The twin's LR η̃_t.
    pub lr: f64,
    /// P_t.
    pub scale: f64,
    /// c_t (0 for a plain twin and for the §4 recursion).
    pub correction: f64,
}

/// The iterator of [`Twin::walk`]: it keeps the current entry only.
#[derive(Debug)]
pub struct TwinWalk<'a> {
    twin: &'a Twin,
    step: u64,
    now: TwinStep,
}

impl Iterator for TwinWalk<'_> {
    type Item = Result<TwinRow>;

    fn next(&mut self) -> Option<Self::Item> {
        let core = &self.twin.core;
        let k = self.step;
        let next = match core.after(k, self.now) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        let row = (|| -> Result<TwinRow> {
            // THEORY.md §4: η̃_t = P_t·P_{t+1}·η_t.
            let lr = self.now.scale * next.scale * core.base.lr(k)?;
            let correction = if self.twin.corrected {
                next.correction_before
            } else {
                0.0
            };
            Ok(TwinRow {
                step: k,
                lr,
                scale: self.now.scale,
                correction,
            })
        })();
        self.now = next;
        self.step += 1;
        Some(row)
    }
}

impl Schedule {
    /// The twin this schedule is the LR of (`texp`, `texp_minus`, `exp_equivalent`), with its
    /// corrections on: what [`ParamGroup::twin`](crate::ParamGroup::twin) trains with. Other
    /// kinds error.
    pub fn twin(&self) -> Result<Twin> {
        match self.twin_core() {
            Some(core) => Ok(Twin::new(self.clone(), core.clone())),
            None => Err(ScheduleError::NotAvailable {
                kind: self.kind_name(),
                what: "exponential twin",
                hint: "build one with `Twin::exact`, `Twin::texp` or `Twin::texp_minus` from it",
            }),
        }
    }
}
