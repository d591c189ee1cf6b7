//! The unit a schedule's step counts are written in.

use crate::error::{invalid, Result};

/// What the counts of a [`ScheduleSpec`](crate::ScheduleSpec) (`milestones`, `step_size`,
/// `t_max`, `total_iters`, an exponential's period) are measured in. A schedule is built with
/// its unit ([`Schedule::build`](crate::Schedule::build)); nested specs (`sequential`,
/// `product`, `exp_equivalent`) inherit it. The LR itself is always a function of the update
/// index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unit {
    /// Counts are updates (optimizer steps).
    #[default]
    Steps,
    /// Counts are epochs of this many updates (an `exponential` then applies its factor once
    /// per epoch).
    Epochs(u64),
}

impl Unit {
    /// Updates per epoch, for [`Unit::Epochs`].
    pub fn steps_per_epoch(self) -> Option<u64> {
        match self {
            Unit::Steps => None,
            Unit::Epochs(n) => Some(n),
        }
    }

    /// `Epochs(0)` is an error; every other unit is valid.
    pub(crate) fn validate(self) -> Result<()> {
        match self {
            Unit::Epochs(0) => Err(invalid("steps_per_epoch", 0, "an integer >= 1")),
            _ => Ok(()),
        }
    }

    /// `n` counts of this unit in updates.
    pub(crate) fn to_steps(self, field: &str, n: u64) -> Result<u64> {
        match self {
            Unit::Steps => Ok(n),
            Unit::Epochs(per_epoch) => n.checked_mul(per_epoch).ok_or_else(|| {
                invalid(
                    field,
                    n,
                    "a count whose product with steps_per_epoch fits in u64",
                )
            }),
        }
    }
}
