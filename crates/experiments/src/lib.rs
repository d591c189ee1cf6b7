//! `explr-experiments`: the four kinds of experiment a manifest can describe, behind one
//! trait, [`Experiment`]: its units of work, where each stands on disk
//! ([`UnitState`](explr_execute::executor::UnitState)), how to run one, and the
//! [`Summary`](explr_results::summary::Summary) and figures once all are complete. [`plan`]
//! gives a resolved manifest's:
//!
//! - [`training`]: epoch-level runs compared as curves (E1–E6, N1, A1), through the trainer,
//!   judged by [`checks`] (the claim's rules and its negative controls);
//! - [`exactness`]: a weight-decay run and its exponential twins in lockstep (X1–X3);
//! - [`scale_invariance`]: L(cθ) = L(θ) for every model in its declared group (S1);
//! - [`toy`]: THEORY.md §7's example (T1).
//!
//! The last three run in one process, as one unit ([`OneProcess`]).
//!
//! ```
//! use explr_execute::executor::UnitKey;
//! use explr_manifest::manifest;
//!
//! let text = "id: T1\ntitle: toy\npaper: §7\nclaim: c\ntoy:\n  \
//!   population: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1}\n  \
//!   minibatch: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1, batch_size: 4}\n";
//! let resolved = manifest::parse(text, "t1.yaml".as_ref(), "t1", "smoke")?;
//! let dir = std::env::temp_dir().join("explr-experiments-doc");
//! let opts = explr_train::context::RunnerOptions::on_cpu(&dir);
//! let experiment = explr_experiments::plan(&resolved, &dir, &opts)?;
//! assert_eq!(experiment.units(), vec![UnitKey("experiment".into())]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checks;
pub mod exactness;
pub mod scale_invariance;
pub mod toy;
pub mod training;

mod error;
mod experiment;

pub use error::ExperimentError;
pub use experiment::{plan, Experiment, OneProcess, OneProcessKind, Summarized, EXPERIMENT_LOCK};
