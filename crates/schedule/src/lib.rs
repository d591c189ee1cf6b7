//! `explr-schedule`: LR schedules, PyTorch-exact SGD and the exponential-LR equivalence of
//! Li & Arora (ICLR 2020) as a reusable crate.
//!
//! - [`ScheduleSpec`] is a schedule as written in YAML (`kind: multistep`, `kind: texp`, …);
//!   [`Schedule`] is the validated pure function step → LR built from it, including TEXP,
//!   TEXP-- and the exact §4 transform of any schedule ([`Schedule::exp_twin`]).
//! - [`alpha`] solves THEORY.md §3 for the per-step factor α.
//! - [`Sgd`] is `torch.optim.SGD` over [`ParamGroup`]s (own LR scale or schedule, own weight
//!   decay), with momentum pre-fill and atomic state save/load.
//! - [`check_equivalence`] runs a weight-decay run and its exponential twin side by side.
//!
//! Step decay with weight decay, and its TEXP twin without weight decay, stepping an SGD:
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use explr_schedule::{ParamGroup, Schedule, Sgd, SgdConfig};
//!
//! let texp = Schedule::from_yaml(
//!     "kind: texp\nlr: 0.1\nmilestones: [80, 120]\ngamma: 0.1\n\
//!      weight_decay: 5.0e-4\nmomentum: 0.9\nsteps_per_epoch: 391",
//! )?;
//! assert!((texp.lr(391)? - 0.148198).abs() < 1e-6);
//! let w = Var::from_tensor(&Tensor::new(&[3.0f64, 4.0], &Device::Cpu)?)?;
//! let group = ParamGroup::new("scale_invariant", vec![("w".into(), w.clone())]);
//! let mut sgd = Sgd::new(texp.clone(), vec![group], SgdConfig::momentum(0.9))?;
//! sgd.prefill_momentum(texp.prefill_coefficient()?, &[])?; // ṽ_0 = (α−1)θ_0/(αη)
//! let loss = (w.as_tensor() / w.as_tensor().sqr()?.sum_all()?.sqrt()?.broadcast_as(2)?)?
//!     .narrow(0, 0, 1)?.sum_all()?;
//! sgd.step(&loss.backward()?)?;
//! assert_eq!(sgd.step_count(), 1);
//! # let _ = DType::F64;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod alpha;
mod equivalence;
mod error;
mod schedule;
mod sgd;

pub use alpha::alpha;
pub use equivalence::{
    check_equivalence, CheckOptions, EquivalenceReport, Objective, StepDeviation,
};
pub use error::{Result, ScheduleError};
pub use schedule::{Schedule, ScheduleSpec, TexpPhase};
pub use sgd::{GroupLr, ParamGroup, Sgd, SgdConfig, SgdVariant};
