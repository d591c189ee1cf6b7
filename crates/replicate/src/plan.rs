//! From a manifest's runs to optimizer plans: schedules are built in epochs, derived runs get
//! their exponential twins (THEORY.md §4–§5).

use std::collections::BTreeMap;

use explr_schedule::{GroupLr, Schedule, Twin, Unit};

pub use explr_schedule::WeightDecay;

use crate::runner::RunError;
use crate::spec::{RunSpec, Transform};

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
    pub fn lr_at(&self, step: u64) -> Result<f64, RunError> {
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

/// The unit of a manifest's schedules: epochs of the run's data.
fn epochs(steps_per_epoch: u64) -> Unit {
    Unit::Epochs(steps_per_epoch)
}

/// The built LR schedule of a run with a schedule (not derived), in epochs.
pub fn base_schedule(spec: &RunSpec, steps_per_epoch: u64) -> Result<Schedule, RunError> {
    let s = spec
        .schedule
        .as_ref()
        .ok_or_else(|| RunError::Unsupported("a derived run has no schedule of its own".into()))?;
    Ok(Schedule::build(s, epochs(steps_per_epoch))?)
}

/// The built weight decay of a run with a schedule (a constant, or its own schedule in epochs).
pub fn base_weight_decay(spec: &RunSpec, steps_per_epoch: u64) -> Result<WeightDecay, RunError> {
    Ok(match &spec.weight_decay_schedule {
        Some(w) => WeightDecay::Schedule(Schedule::build(w, epochs(steps_per_epoch))?),
        None => WeightDecay::Constant(spec.weight_decay),
    })
}

fn run<'a>(runs: &'a BTreeMap<String, RunSpec>, name: &str) -> Result<&'a RunSpec, RunError> {
    runs.get(name)
        .ok_or_else(|| RunError::Unsupported(format!("no run named `{name}`")))
}

/// The exponential twin of derived run `name`, built from its `derive.from` base run (THEORY.md
/// §4–§5): its LR, P_t, pre-fill and momentum corrections.
pub fn twin(
    runs: &BTreeMap<String, RunSpec>,
    name: &str,
    steps_per_epoch: u64,
) -> Result<Twin, RunError> {
    let derive = run(runs, name)?.derive.as_ref().ok_or_else(|| {
        RunError::Unsupported(format!("run `{name}` is not derived, so it has no twin"))
    })?;
    let base = run(runs, &derive.from)?;
    let lr = base_schedule(base, steps_per_epoch)?;
    let weight_decay = base_weight_decay(base, steps_per_epoch)?;
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
) -> Result<OptimizerPlan, RunError> {
    let this = run(runs, name)?;
    let Some(derive) = &this.derive else {
        let group = GroupPlan {
            lr: GroupLr::Schedule(base_schedule(this, steps_per_epoch)?),
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
            lr: GroupLr::Schedule(base_schedule(base, steps_per_epoch)?),
            weight_decay: base_weight_decay(base, steps_per_epoch)?,
        },
        momentum: base.momentum,
    })
}
