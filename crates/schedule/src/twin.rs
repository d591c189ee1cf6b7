//! Exponential twins (THEORY.md §3–§5): the run without weight decay that equals a weight-decay
//! run up to a scale, with everything the optimizer needs to make it exact.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::alpha::alpha;
use crate::error::{invalid, Result, ScheduleError};
use crate::schedule::{Schedule, ScheduleSpec};
use crate::weight_decay::WeightDecay;

/// How a twin picks α_{k+1}, the factor by which the base run's weights shrink relative to the
/// twin's at update k (THEORY.md §4–§5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlphaRule {
    /// The §4 recursion α_{k+1} = 1 − η_kλ_k + γ(η_k/η_{k−1})(1 − 1/α_k): exact without any
    /// momentum correction (the exact transform of any schedule, the exponential cosine).
    #[default]
    Recursion,
    /// §3's root for the update's own η_k·λ_k (TEXP, TEXP--): the LR jumps to the new growth
    /// rate at once where the recursion would relax over ~100 steps, and the one-time momentum
    /// corrections c_k make up the difference.
    Root,
}

impl AlphaRule {
    /// `Recursion` (the serde default, left out when writing a spec).
    pub fn is_recursion(&self) -> bool {
        *self == AlphaRule::Recursion
    }
}

impl std::fmt::Display for AlphaRule {
    /// The name as a spec writes it (`recursion`, `root`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlphaRule::Recursion => "recursion",
            AlphaRule::Root => "root",
        })
    }
}

/// α_t, P_t and c_{t−1} of one step of a twin.
#[derive(Clone, Copy, Debug)]
struct TwinStep {
    alpha: f64,
    scale: f64,
    correction_before: f64,
}

/// The sequences of a twin, extended on demand and cached: a pure function of the step (the
/// cache only remembers what was computed, so a resumed run recomputes the same values).
pub(crate) struct TwinCore {
    base: Schedule,
    weight_decay: WeightDecay,
    momentum: f64,
    rule: AlphaRule,
    alpha0: f64,
    lr0: f64,
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
    fn after(&self, k: u64, now: TwinStep) -> Result<TwinStep> {
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
    fn first(&self) -> TwinStep {
        TwinStep {
            alpha: self.alpha0,
            scale: 1.0,
            correction_before: 0.0,
        }
    }

    /// Entry `t`, extending the cached sequences as needed.
    fn at(&self, t: u64) -> Result<TwinStep> {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let t = usize::try_from(t).map_err(|_| invalid("step", t, "a step that fits in usize"))?;
        while steps.len() <= t {
            let k = steps.len() - 1;
            let next = self.after(k as u64, steps[k])?;
            steps.push(next);
        }
        Ok(steps[t])
    }

    pub(crate) fn lr(&self, t: u64) -> Result<f64> {
        // THEORY.md §4: η̃_t = P_t·P_{t+1}·η_t.
        Ok(self.at(t)?.scale * self.at(t + 1)?.scale * self.base.lr(t)?)
    }
}

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
    pub(crate) fn new(schedule: Schedule, core: Arc<TwinCore>) -> Self {
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
