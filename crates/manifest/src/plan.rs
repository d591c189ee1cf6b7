//! From a manifest's runs to optimizer plans: schedules are built in epochs, derived runs get
//! their exponential twins (THEORY.md §4–§5).

use std::collections::BTreeMap;

use explr_nn::Role;
use explr_schedule::{GroupLr, ParamGroup, Schedule, ScheduleSpec, Sgd, SgdConfig, Twin, Unit};
use explr_zoo::Model;

pub use explr_schedule::WeightDecay;

use crate::spec::{RunSpec, Transform};

/// Why a run could not be planned. Validation plans every run of a manifest, so at run time
/// these arise only from a manifest that skipped it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A schedule or twin could not be built (no exponential equivalent, a breakdown of §4, …).
    #[error(transparent)]
    Schedule(#[from] explr_schedule::ScheduleError),
    /// A run name that the manifest does not have.
    #[error("no run named `{0}`")]
    UnknownRun(String),
    /// The schedule of a derived run was asked for: it has none of its own (plan it with
    /// [`plan`], which derives it from its base).
    #[error("run `{0}` is derived: it has no schedule of its own")]
    Derived(String),
    /// The twin of a run with a schedule was asked for.
    #[error("run `{0}` is not derived, so it has no twin")]
    NotDerived(String),
}

/// The LR and weight decay of one parameter group.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// The group's LR: its own schedule, or an exponential twin (whose pre-fill and momentum
    /// corrections the optimizer applies too).
    pub lr: GroupLr,
    /// The group's coupled weight decay.
    pub weight_decay: WeightDecay,
}

impl GroupPlan {
    /// The group's LR at update `step` (a planned group has a schedule or twin of its own).
    pub fn lr_at(&self, step: u64) -> Result<f64, PlanError> {
        Ok(self.lr.lr(None, step)?)
    }

    /// The plan as JSON, for the run's configuration fingerprint.
    pub fn describe(&self) -> serde_json::Value {
        let GroupPlan { lr, weight_decay } = self;
        serde_json::json!({
            "lr": match lr {
                GroupLr::Schedule(s) => serde_json::json!(s.spec()),
                GroupLr::Twin(t) => serde_json::json!({
                    "twin": t.schedule().spec(),
                    "corrected": t.is_corrected(),
                }),
                GroupLr::Scale(s) => serde_json::json!({ "scale": s }),
            },
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
}

impl OptimizerPlan {
    /// P_t of THEORY.md §3–§5 after `step` updates: this run's scale-invariant weights are P_t
    /// times those of the run it was derived from (1 for a run with its own schedule).
    pub fn scale(&self, step: u64) -> Result<f64, PlanError> {
        match &self.scale_invariant.lr {
            GroupLr::Twin(t) => Ok(t.scale(step)?),
            GroupLr::Schedule(_) | GroupLr::Scale(_) => Ok(1.0),
        }
    }

    /// Builds the optimizer of this plan over `model`'s trainable groups: the scale-invariant
    /// group on `scale_invariant`, every other group on `others`. Every field of the plan is
    /// destructured here, so a field added to the plan and not applied is a compile error.
    pub fn build_sgd(&self, model: &Model) -> Result<Sgd, PlanError> {
        let OptimizerPlan {
            scale_invariant,
            others,
            momentum,
        } = self;
        let mut groups = Vec::new();
        for (role, vars) in model.trainable_groups() {
            let GroupPlan { lr, weight_decay } = if role == Role::ScaleInvariant {
                scale_invariant
            } else {
                others
            };
            groups.push(
                ParamGroup::new(role.as_str(), vars)
                    .lr(lr.clone())
                    .weight_decay(weight_decay.clone()),
            );
        }
        // A twin group pre-fills its momentum buffer and applies its corrections itself.
        Ok(Sgd::from_groups(groups, SgdConfig::momentum(*momentum))?)
    }
}

/// The unit of a manifest's schedules: epochs of the run's data.
fn epochs(steps_per_epoch: u64) -> Unit {
    Unit::Epochs(steps_per_epoch)
}

/// The built LR schedule of a run with a schedule (not derived), in epochs.
pub fn base_schedule(
    name: &str,
    spec: &RunSpec,
    steps_per_epoch: u64,
) -> Result<Schedule, PlanError> {
    let s = spec
        .schedule
        .as_ref()
        .ok_or_else(|| PlanError::Derived(name.to_string()))?;
    Ok(Schedule::build(s, epochs(steps_per_epoch))?)
}

/// The built weight decay of a run with a schedule (a constant, or its own schedule in epochs).
pub fn base_weight_decay(spec: &RunSpec, steps_per_epoch: u64) -> Result<WeightDecay, PlanError> {
    Ok(match &spec.weight_decay_schedule {
        Some(w) => WeightDecay::Schedule(Schedule::build(w, epochs(steps_per_epoch))?),
        None => WeightDecay::Constant(spec.weight_decay),
    })
}

fn run<'a>(runs: &'a BTreeMap<String, RunSpec>, name: &str) -> Result<&'a RunSpec, PlanError> {
    runs.get(name)
        .ok_or_else(|| PlanError::UnknownRun(name.to_string()))
}

/// The exponential twin of derived run `name`, built from its `derive.from` base run (THEORY.md
/// §4–§5): its LR, P_t, pre-fill and momentum corrections. With a `weight_decay_factor`, the
/// twin is built as if the base run's weight decay were that many times larger (a control).
pub fn twin(
    runs: &BTreeMap<String, RunSpec>,
    name: &str,
    steps_per_epoch: u64,
) -> Result<Twin, PlanError> {
    let derive = run(runs, name)?
        .derive
        .as_ref()
        .ok_or_else(|| PlanError::NotDerived(name.to_string()))?;
    let base = run(runs, &derive.from)?;
    let lr = base_schedule(&derive.from, base, steps_per_epoch)?;
    let weight_decay = match base_weight_decay(base, steps_per_epoch)? {
        w if derive.weight_decay_factor == 1.0 => w,
        WeightDecay::Constant(lambda) => WeightDecay::Constant(lambda * derive.weight_decay_factor),
        WeightDecay::Schedule(s) => WeightDecay::Schedule(Schedule::build(
            &ScheduleSpec::Product {
                schedules: vec![
                    s.spec().clone(),
                    ScheduleSpec::Constant {
                        lr: derive.weight_decay_factor,
                    },
                ],
            },
            epochs(steps_per_epoch),
        )?),
    };
    let momentum = base.momentum;
    Ok(match derive.transform {
        Transform::Exact => Twin::exact(&lr, weight_decay, momentum)?,
        Transform::Texp => Twin::texp(&lr, weight_decay, momentum)?,
        Transform::TexpPlain => Twin::texp(&lr, weight_decay, momentum)?.plain(),
        Transform::TexpMinus => Twin::texp_minus(&lr, weight_decay, momentum)?,
        Transform::TexpMinusPlain => Twin::texp_minus(&lr, weight_decay, momentum)?.plain(),
    })
}

/// The optimizer plan of run `name`.
pub fn plan(
    runs: &BTreeMap<String, RunSpec>,
    name: &str,
    steps_per_epoch: u64,
) -> Result<OptimizerPlan, PlanError> {
    let this = run(runs, name)?;
    let Some(derive) = &this.derive else {
        let group = GroupPlan {
            lr: GroupLr::Schedule(base_schedule(name, this, steps_per_epoch)?),
            weight_decay: base_weight_decay(this, steps_per_epoch)?,
        };
        return Ok(OptimizerPlan {
            scale_invariant: group.clone(),
            others: group,
            momentum: this.momentum,
        });
    };
    let base = run(runs, &derive.from)?;
    Ok(OptimizerPlan {
        scale_invariant: GroupPlan {
            lr: GroupLr::Twin(twin(runs, name, steps_per_epoch)?),
            weight_decay: WeightDecay::Constant(0.0),
        },
        others: GroupPlan {
            lr: GroupLr::Schedule(base_schedule(&derive.from, base, steps_per_epoch)?),
            weight_decay: base_weight_decay(base, steps_per_epoch)?,
        },
        momentum: base.momentum,
    })
}
