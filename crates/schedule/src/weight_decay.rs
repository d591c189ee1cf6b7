//! The weight decay of a parameter group or of the run a twin is built for: a constant, or a
//! schedule of its own.

use crate::error::{invalid, Result};
use crate::schedule::Schedule;

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
    /// λ_k, the weight decay of update `step`.
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
