//! Schedule specs as a manifest writes them (`kind: multistep`, …) and the [`AlphaRule`] of a
//! twin: plain serde data, validated and built into a [`Schedule`](crate::Schedule) by
//! [`Schedule::build`](crate::Schedule::build).

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A schedule as written in a manifest (`kind: multistep`, …). Unknown fields are rejected.
///
/// Its counts (`milestones`, `step_size`, `t_max`, `total_iters`, an exponential's period) are
/// in the [`Unit`](crate::Unit) the schedule is built with
/// ([`Schedule::build`](crate::Schedule::build)); nested specs inherit it. The LR of update `k`
/// (k = 0 is the first update) is what PyTorch's optimizer uses after `k` calls of
/// `scheduler.step()`.
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
    /// together with the momentum corrections that [`Twin`](crate::Twin) gives the optimizer).
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
