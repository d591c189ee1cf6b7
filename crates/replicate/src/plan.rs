//! From a manifest's runs to optimizer plans: epochs become steps, derived runs get their
//! exponential schedules (THEORY.md §4–§5).

use std::collections::BTreeMap;

use explr_nn::Role;
use explr_schedule::{ParamGroup, Schedule, ScheduleSpec, Sgd, SgdConfig};
use explr_zoo::Model;

use crate::spec::{RunSpec, Transform};

/// Why a run could not be planned. Validation plans every run of a manifest, so at run time
/// these arise only from a manifest that skipped it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A schedule could not be built (no exponential equivalent, a breakdown of §4, …).
    #[error(transparent)]
    Schedule(#[from] explr_schedule::ScheduleError),
    /// A run name that the manifest does not have.
    #[error("no run named `{0}`")]
    UnknownRun(String),
    /// The schedule of a derived run was asked for: it has none of its own (plan it with
    /// [`plan`], which derives it from its base).
    #[error("a derived run has no schedule of its own")]
    Derived,
    /// TEXP asked of a schedule that is not a step decay.
    #[error(
        "TEXP is the twin of a step decay (`multistep` or `constant`), not of `{kind}`; use \
         `transform: exact` for other schedules"
    )]
    NotAStepDecay {
        /// The base schedule's kind.
        kind: &'static str,
    },
    /// A derived run's base has a weight-decay schedule, which the transforms do not take.
    #[error(
        "run `{run}` derives from `{base}`, whose weight decay follows a schedule; the \
         transforms need a constant weight decay"
    )]
    ScheduledWeightDecay {
        /// The derived run.
        run: String,
        /// Its base.
        base: String,
    },
}

/// The weight decay of a parameter group: a constant λ, or a schedule whose value at update
/// `k` is λ_k (E6 divides it at milestones).
#[derive(Clone, Debug)]
pub enum WeightDecay {
    /// The same λ at every update.
    Constant(f64),
    /// λ_k = the schedule's value at update `k`.
    Schedule(Schedule),
}

impl WeightDecay {
    /// The weight decay of update `step`.
    pub fn at(&self, step: u64) -> Result<f64, PlanError> {
        Ok(match self {
            WeightDecay::Constant(lambda) => *lambda,
            WeightDecay::Schedule(s) => s.lr(step)?,
        })
    }
}

/// The LR schedule and weight decay of one parameter group.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// The group's LR schedule.
    pub lr: Schedule,
    /// The group's coupled weight decay.
    pub weight_decay: WeightDecay,
}

impl GroupPlan {
    /// The plan as JSON, for the run's configuration fingerprint.
    pub fn describe(&self) -> serde_json::Value {
        let GroupPlan { lr, weight_decay } = self;
        serde_json::json!({
            "lr": lr.spec(),
            "weight_decay": match weight_decay {
                WeightDecay::Constant(lambda) => serde_json::json!(lambda),
                WeightDecay::Schedule(s) => serde_json::json!(s.spec()),
            },
        })
    }
}

/// How the optimizer treats the parameter groups of one run.
#[derive(Clone, Debug)]
pub struct OptimizerPlan {
    /// The scale-invariant group (whose LR the records report).
    pub scale_invariant: GroupPlan,
    /// Every other trainable group (head, norm affine, other): THEORY.md §1's exact
    /// alternative keeps them on the base run's LR and weight decay.
    pub others: GroupPlan,
    /// Momentum γ.
    pub momentum: f64,
    /// Momentum pre-fill coefficient of the scale-invariant group (THEORY.md §3).
    pub prefill: Option<f64>,
}

/// The same spec with every step count in epochs of `steps_per_epoch` updates.
pub fn in_epochs(spec: &ScheduleSpec, steps_per_epoch: u64) -> ScheduleSpec {
    use ScheduleSpec as S;
    let spe = Some(steps_per_epoch);
    match spec.clone() {
        S::Constant { lr } => S::Constant { lr },
        S::Multistep {
            lr,
            milestones,
            gamma,
            ..
        } => S::Multistep {
            lr,
            milestones,
            gamma,
            steps_per_epoch: spe,
        },
        S::Step {
            lr,
            step_size,
            gamma,
            ..
        } => S::Step {
            lr,
            step_size,
            gamma,
            steps_per_epoch: spe,
        },
        S::Exponential { lr, factor, .. } => S::Exponential {
            lr,
            factor,
            steps_per_epoch: spe,
        },
        S::Cosine {
            lr, t_max, eta_min, ..
        } => S::Cosine {
            lr,
            t_max,
            eta_min,
            steps_per_epoch: spe,
        },
        S::Warmup {
            lr,
            start_factor,
            end_factor,
            total_iters,
            ..
        } => S::Warmup {
            lr,
            start_factor,
            end_factor,
            total_iters,
            steps_per_epoch: spe,
        },
        S::Sequential {
            schedules,
            milestones,
            ..
        } => S::Sequential {
            schedules: schedules
                .iter()
                .map(|s| in_epochs(s, steps_per_epoch))
                .collect(),
            milestones,
            steps_per_epoch: spe,
        },
        S::Texp {
            lr,
            milestones,
            gamma,
            weight_decay,
            momentum,
            ..
        } => S::Texp {
            lr,
            milestones,
            gamma,
            weight_decay,
            momentum,
            steps_per_epoch: spe,
        },
        S::TexpMinus {
            lr,
            milestones,
            gamma,
            weight_decay,
            momentum,
            ..
        } => S::TexpMinus {
            lr,
            milestones,
            gamma,
            weight_decay,
            momentum,
            steps_per_epoch: spe,
        },
        S::Product { schedules } => S::Product {
            schedules: schedules
                .iter()
                .map(|s| in_epochs(s, steps_per_epoch))
                .collect(),
        },
        S::ExpEquivalent {
            base,
            weight_decay,
            momentum,
        } => S::ExpEquivalent {
            base: Box::new(in_epochs(&base, steps_per_epoch)),
            weight_decay,
            momentum,
        },
    }
}

/// The milestones of a schedule written in epochs (where it has them), sorted.
pub fn milestones(spec: &ScheduleSpec) -> Vec<u64> {
    use ScheduleSpec as S;
    let mut m = match spec {
        S::Multistep { milestones, .. }
        | S::Texp { milestones, .. }
        | S::TexpMinus { milestones, .. }
        | S::Sequential { milestones, .. } => milestones.clone(),
        S::ExpEquivalent { base, .. } => milestones(base),
        S::Product { schedules } => schedules.iter().flat_map(milestones).collect(),
        _ => Vec::new(),
    };
    m.sort_unstable();
    m.dedup();
    m
}

/// The built schedule of a run with a schedule (not derived).
pub fn base_schedule(spec: &RunSpec, steps_per_epoch: u64) -> Result<Schedule, PlanError> {
    match &spec.schedule {
        Some(s) => Ok(in_epochs(s, steps_per_epoch).build()?),
        None => Err(PlanError::Derived),
    }
}

impl OptimizerPlan {
    /// P_t of THEORY.md §3–§5 after `step` updates: this run's scale-invariant weights are
    /// P_t times those of the run it was derived from (1 for a run with its own schedule).
    pub fn scale(&self, step: u64) -> Result<f64, PlanError> {
        match self.prefill {
            None => Ok(1.0),
            Some(_) => Ok(self.scale_invariant.lr.twin_scale(step)?),
        }
    }

    /// Builds the optimizer of this plan over `model`'s trainable groups: the scale-invariant group
    /// on `plan.scale_invariant`, every other group on `plan.others`. Every field of the plan is
    /// destructured here, so a field added to the plan and not applied is a compile error.
    pub fn build_sgd(&self, model: &Model) -> Result<Sgd, PlanError> {
        let OptimizerPlan {
            scale_invariant,
            others,
            momentum,
            prefill,
        } = self;
        let mut groups = Vec::new();
        for (role, vars) in model.trainable_groups() {
            let GroupPlan { lr, weight_decay } = if role == Role::ScaleInvariant {
                scale_invariant
            } else {
                others
            };
            let group = ParamGroup::new(role.as_str(), vars).schedule(lr.clone());
            groups.push(match weight_decay {
                WeightDecay::Constant(lambda) => group.weight_decay(*lambda),
                WeightDecay::Schedule(s) => group.weight_decay_schedule(s.clone()),
            });
        }
        let mut sgd = Sgd::new(
            scale_invariant.lr.clone(),
            groups,
            SgdConfig::momentum(*momentum),
        )?;
        if let Some(c) = prefill {
            sgd.prefill_momentum(*c, &[Role::ScaleInvariant.as_str()])?;
        }
        Ok(sgd)
    }
}

/// The optimizer plan of run `name`.
pub fn plan(
    runs: &BTreeMap<String, RunSpec>,
    name: &str,
    steps_per_epoch: u64,
) -> Result<OptimizerPlan, PlanError> {
    let run = runs
        .get(name)
        .ok_or_else(|| PlanError::UnknownRun(name.to_string()))?;
    let Some(derive) = &run.derive else {
        let group = GroupPlan {
            lr: base_schedule(run, steps_per_epoch)?,
            weight_decay: match &run.weight_decay_schedule {
                Some(w) => WeightDecay::Schedule(in_epochs(w, steps_per_epoch).build()?),
                None => WeightDecay::Constant(run.weight_decay),
            },
        };
        return Ok(OptimizerPlan {
            scale_invariant: group.clone(),
            others: group,
            momentum: run.momentum,
            prefill: None,
        });
    };
    let base = runs
        .get(&derive.from)
        .ok_or_else(|| PlanError::UnknownRun(derive.from.clone()))?;
    if base.weight_decay_schedule.is_some() {
        return Err(PlanError::ScheduledWeightDecay {
            run: name.to_string(),
            base: derive.from.clone(),
        });
    }
    let base_schedule = base_schedule(base, steps_per_epoch)?;
    let twin = twin_schedule(
        &base_schedule,
        derive.transform,
        base.weight_decay * derive.weight_decay_factor,
        base.momentum,
    )?;
    Ok(OptimizerPlan {
        prefill: Some(twin.prefill_coefficient()?),
        scale_invariant: GroupPlan {
            lr: twin,
            weight_decay: WeightDecay::Constant(0.0),
        },
        others: GroupPlan {
            lr: base_schedule,
            weight_decay: WeightDecay::Constant(base.weight_decay),
        },
        momentum: base.momentum,
    })
}

/// The exponential twin of `base` (run with `weight_decay` and `momentum`) by `transform`.
pub fn twin_schedule(
    base: &Schedule,
    transform: Transform,
    weight_decay: f64,
    momentum: f64,
) -> Result<Schedule, PlanError> {
    let texp = |minus: bool| -> Result<Schedule, PlanError> {
        match base.spec() {
            ScheduleSpec::Multistep {
                lr,
                milestones,
                gamma,
                steps_per_epoch,
            } => {
                let spec = ScheduleSpec::texp(
                    minus,
                    *lr,
                    milestones.clone(),
                    *gamma,
                    weight_decay,
                    momentum,
                    *steps_per_epoch,
                );
                Ok(spec.build()?)
            }
            ScheduleSpec::Constant { lr } => {
                // A constant LR is a step decay without milestones.
                let spec =
                    ScheduleSpec::texp(minus, *lr, vec![], 1.0, weight_decay, momentum, None);
                Ok(spec.build()?)
            }
            _ => Err(PlanError::NotAStepDecay {
                kind: base.kind_name(),
            }),
        }
    };
    match transform {
        Transform::Texp => texp(false),
        Transform::TexpMinus => texp(true),
        Transform::Exact => Ok(base.exp_twin(weight_decay, momentum)?),
    }
}
