//! `explr-replicate`: the runner that replays every claim of the paper from a YAML manifest,
//! on top of the layers below it (docs/ARCHITECTURE.md draws them):
//!
//! - [`commands`]: the `explr` commands (replicate, schedule, data) as entry points that the
//!   binary calls with typed requests, and their [`error::CommandError`];
//! - [`runner`]: one resolved manifest → its [`Experiment`](explr_experiments::Experiment)'s
//!   units of work, handed to an [`Executor`](explr_execute::executor::Executor) (the local
//!   thread pool or a Slurm job array), then collected into its summary, metadata and figures;
//! - `explr-experiments`: the four experiment kinds; `explr-execute`: executors over opaque
//!   units; `explr-train`: one training run; `explr-results`: summaries, goldens, index, report
//!   and figures; `explr-manifest`: the manifests, validated and planned; `explr-io`: files.
//!
//! The layers are re-exported under their module names, so that one dependency gives the
//! whole runner:
//!
//! ```
//! use explr_replicate::manifest;
//! use explr_replicate::spec::Experiment;
//!
//! let text = "id: T1\ntitle: toy\npaper: §7\nclaim: c\ntoy:\n  \
//!   population: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1}\n  \
//!   minibatch: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1, batch_size: 4}\n";
//! let resolved = manifest::parse(text, "t1.yaml".as_ref(), "t1", "smoke")?;
//! assert!(matches!(resolved.experiment(), Experiment::Toy(_)));
//! # Ok::<(), manifest::ManifestError>(())
//! ```

pub mod commands;
pub mod error;
pub mod runner;

pub use explr_execute::{executor, slurm};
pub use explr_experiments as experiments;
pub use explr_manifest::{dataset, manifest, plan, spec, validate};
pub use explr_results::{golden, index, plot, report, summary};
pub use explr_train::{checkpoint, context, device, records, trainer};
