//! [`Sgd`] as a `candle_nn::Optimizer`, for code written against candle-nn's trait.

use candle_core::backprop::GradStore;
use candle_core::Var;

use crate::error::ScheduleError;
use crate::schedule::{Schedule, WeightDecay};
use crate::sgd::{GroupLr, ParamGroup, Sgd, SgdConfig};
use crate::twin::Twin;

/// The configuration of [`Sgd`] built through `candle_nn::Optimizer::new`: one group, named
/// `params`, holding every floating-point variable handed in (named `param.0`, `param.1`, … in
/// the order given), on a schedule or an exponential twin. For several groups (a head on its
/// own LR, weight decay on some parameters only) build the [`Sgd`] with [`Sgd::new`]; it is
/// the same type, so it serves candle-nn's trait just as well.
///
/// The names follow the order of the variables handed in, and [`Sgd::save`]/[`Sgd::load`]
/// match buffers by name: `VarMap::all_vars()` returns its variables in a different order in
/// every process, so an optimizer that is saved and resumed should take its variables from
/// [`ParamGroup::from_varmap`] (sorted by the map's names) instead.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{Optimizer, VarMap};
/// use explr_schedule::{Schedule, Sgd, SgdConfig, SgdOptimizerConfig, Unit};
///
/// let varmap = VarMap::new();
/// let w = varmap.get((2,), "w", candle_nn::Init::Const(1.0), DType::F64, &Device::Cpu)?;
/// let schedule = Schedule::multistep(0.1, &[80, 120], 0.1, Unit::Epochs(391))?;
/// let config = SgdOptimizerConfig::new(schedule, SgdConfig::momentum(0.9)).weight_decay(5e-4);
/// let mut sgd = Sgd::new_optimizer(varmap.all_vars(), config)?;
/// sgd.backward_step(&w.sum_all()?)?; // candle_nn::Optimizer's method
/// assert_eq!(sgd.learning_rate(), 0.1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SgdOptimizerConfig {
    lr: GroupLr,
    weight_decay: WeightDecay,
    sgd: SgdConfig,
}

impl SgdOptimizerConfig {
    /// Every variable on `schedule` (the optimizer's main schedule, which
    /// `set_learning_rate` replaces), no weight decay.
    pub fn new(schedule: Schedule, sgd: SgdConfig) -> Self {
        Self {
            lr: GroupLr::Schedule(schedule),
            weight_decay: WeightDecay::Constant(0.0),
            sgd,
        }
    }

    /// Every variable trained as the exponential twin `twin` (its LR, pre-fill and
    /// corrections; no weight decay). `set_learning_rate` cannot change a twin's LR.
    pub fn twin(twin: Twin, sgd: SgdConfig) -> Self {
        Self {
            lr: GroupLr::Twin(twin),
            weight_decay: WeightDecay::Constant(0.0),
            sgd,
        }
    }

    /// Sets the weight decay: a constant or a schedule.
    pub fn weight_decay(mut self, weight_decay: impl Into<WeightDecay>) -> Self {
        self.weight_decay = weight_decay.into();
        self
    }
}

impl Sgd {
    /// `candle_nn::Optimizer::new` under a name of its own (the inherent [`Sgd::new`] takes
    /// groups): one group `params` over the floating-point variables of `vars`.
    pub fn new_optimizer(vars: Vec<Var>, config: SgdOptimizerConfig) -> crate::Result<Self> {
        let vars: Vec<Var> = vars.into_iter().filter(|v| v.dtype().is_float()).collect();
        let width = vars.len().saturating_sub(1).to_string().len();
        let named = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("param.{i:0width$}"), v))
            .collect();
        let SgdOptimizerConfig {
            lr,
            weight_decay,
            sgd,
        } = config;
        let group = ParamGroup::new("params", named).weight_decay(weight_decay);
        match lr {
            // The schedule is the main one, so that `set_learning_rate` reaches the group.
            GroupLr::Schedule(schedule) => Sgd::new(schedule, vec![group], sgd),
            lr => Sgd::from_groups(vec![group.lr(lr)], sgd),
        }
    }
}

/// candle's error for one of this crate's (candle's own errors pass through unwrapped).
fn to_candle(e: ScheduleError) -> candle_core::Error {
    match e {
        ScheduleError::Candle(e) => e,
        other => candle_core::Error::wrap(other),
    }
}

impl candle_nn::Optimizer for Sgd {
    type Config = SgdOptimizerConfig;

    fn new(vars: Vec<Var>, config: SgdOptimizerConfig) -> candle_core::Result<Self> {
        Sgd::new_optimizer(vars, config).map_err(to_candle)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        Sgd::step(self, grads).map_err(to_candle)
    }

    /// The LR the next update applies to the first group (NaN if its twin's recursion broke
    /// down; the next `step` reports why).
    fn learning_rate(&self) -> f64 {
        self.group_lr(0).unwrap_or(f64::NAN)
    }

    /// Makes the main schedule the constant `lr` from the next update on. An `lr` that is not
    /// a finite number > 0, or an optimizer without a group on the main schedule (every group
    /// on its own schedule or twin), makes the next `step` fail with an error saying so.
    fn set_learning_rate(&mut self, lr: f64) {
        let on_main = self
            .groups()
            .iter()
            .any(|g| matches!(g.lr, GroupLr::Scale(_)));
        self.rejected_lr = match Schedule::constant(lr) {
            Ok(_) if !on_main => Some((
                lr,
                "an optimizer with a group on the main schedule (groups on their own schedule \
                 or twin keep it)",
            )),
            Ok(schedule) => {
                self.set_schedule(schedule);
                None
            }
            Err(_) => Some((lr, "a finite number > 0")),
        };
    }
}
