//! `explr-replicate`: the runner that replays every claim of the paper from a YAML manifest.
//!
//! Modules, top to bottom (each uses only the ones below it; docs/ARCHITECTURE.md draws the
//! layers):
//!
//! - [`runner`]: one resolved manifest → its units of work, handed to an [`executor`] (the
//!   local thread pool, or a Slurm job array: [`slurm`]), then collected into its summary,
//!   metadata and figures;
//! - [`experiments`]: the four experiment kinds (training curves, lockstep exactness, scale
//!   invariance, the toy example);
//! - [`trainer`]: one training run with its [`records`] and checkpoints;
//! - [`manifest`] (parse, profiles) → [`validate`] (everything a run would reject) →
//!   [`plan`] (runs → optimizer plans) and [`data`] (the data a manifest names);
//! - [`context`] (options, provenance, progress) and [`spec`] (the manifest's plain data);
//! - [`summary`], [`golden`], [`report`], [`plot`], [`io`], [`device`], [`slurm`]: leaves.
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
pub mod checkpoint;
pub mod context;
pub mod data;
pub mod device;
pub mod executor;
pub mod experiments;
pub mod golden;
pub mod index;
pub mod io;
pub mod manifest;
pub mod plan;
pub mod plot;
pub mod records;
pub mod report;
pub mod runner;
pub mod slurm;
pub mod spec;
pub mod summary;
pub mod trainer;
pub mod validate;
