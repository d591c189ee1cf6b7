//! `explr-schedule`: LR schedules, exact exponential twins, PyTorch-exact SGD and the
//! exponential-LR equivalence of Li & Arora (ICLR 2020) as a reusable crate.
//!
//! - [`Schedule`] is a validated pure function step → LR, built from a [`ScheduleSpec`] (YAML,
//!   `kind: multistep`, …) with the [`Unit`] its counts are in (steps, or epochs of N steps),
//!   or from a short constructor ([`Schedule::multistep`], [`Schedule::cosine`], …).
//! - [`Twin`] is the exponential twin of a weight-decay run (THEORY.md §3–§5): the LR without
//!   weight decay, the scale P_t, the momentum pre-fill and the one-time momentum corrections
//!   that make TEXP and TEXP-- exact ([`Twin::exact`], [`Twin::texp`], [`Twin::texp_minus`];
//!   [`Twin::plain`] drops the corrections). The weight decay may follow a schedule
//!   ([`WeightDecay`]).
//! - [`Sgd`] is `torch.optim.SGD` over [`ParamGroup`]s (own LR scale, schedule or twin, own
//!   weight decay or weight-decay schedule), with atomic state save/load; it is also a
//!   `candle_nn::Optimizer` ([`SgdOptimizerConfig`]), and [`GradAccumulator`] sums the
//!   gradients of several micro-batches for one step.
//! - [`alpha`] solves THEORY.md §3; [`check_equivalence`] runs a weight-decay run and its twin
//!   side by side, [`check_equivalences`] one weight-decay run and several twins.
//!
//! Step decay with weight decay for the head, and TEXP (its exact twin, without weight decay)
//! for the scale-invariant weights, stepping an SGD:
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use explr_schedule::{ParamGroup, Schedule, Sgd, SgdConfig, Twin, Unit};
//!
//! let step_decay = Schedule::multistep(0.1, &[80, 120], 0.1, Unit::Epochs(391))?;
//! let texp = Twin::texp(&step_decay, 5e-4, 0.9)?; // THEORY.md §5, corrections included
//! assert!((texp.lr(391)? - 0.148198).abs() < 1e-6);
//! let w = Var::from_tensor(&Tensor::new(&[3.0f64, 4.0], &Device::Cpu)?)?;
//! let head = Var::from_tensor(&Tensor::new(&[1.0f64], &Device::Cpu)?)?;
//! let mut sgd = Sgd::new(
//!     step_decay,
//!     vec![
//!         ParamGroup::new("scale_invariant", vec![("w".into(), w.clone())]).twin(texp),
//!         ParamGroup::new("head", vec![("head".into(), head.clone())]).weight_decay(5e-4),
//!     ],
//!     SgdConfig::momentum(0.9),
//! )?;
//! let unit = (w.as_tensor() / w.as_tensor().sqr()?.sum_all()?.sqrt()?.broadcast_as(2)?)?;
//! let loss = (unit.narrow(0, 0, 1)?.sum_all()? * head.as_tensor().sum_all()?)?;
//! sgd.step(&loss.backward()?)?;
//! assert_eq!(sgd.step_count(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Modules in layers, lowest first; each uses only modules named before it: error, unit and
// alpha; spec (the serde data); schedule (the built step functions: Schedule, WeightDecay and a
// twin's cached sequences, which contain one another); build (specs → schedules, the short
// constructors); twin (the Twin API); sgd and optimizer; accumulate and equivalence.
mod accumulate;
mod alpha;
mod build;
mod equivalence;
mod error;
mod optimizer;
mod schedule;
mod sgd;
mod spec;
mod twin;
mod unit;

pub use accumulate::GradAccumulator;
pub use alpha::alpha;
pub use equivalence::{
    check_equivalence, check_equivalences, CheckOptions, EquivalenceReport, Objective,
    StepDeviation, TwinRun,
};
pub use error::{Result, ScheduleError};
pub use optimizer::SgdOptimizerConfig;
pub use schedule::{Schedule, WeightDecay};
pub use sgd::{GroupLr, ParamGroup, Sgd, SgdConfig, SgdVariant};
pub use spec::{AlphaRule, ScheduleSpec};
pub use twin::{Twin, TwinPhase, TwinRow, TwinWalk};
pub use unit::Unit;
