//! `explr-manifest`: what an explr experiment manifest says, checked before anything runs.
//!
//! Modules, bottom to top (each uses only the ones before it):
//!
//! - [`spec`]: the manifest's plain data ([`spec::Manifest`], [`spec::Experiment`] and its four
//!   kinds, [`spec::Verdict`]);
//! - [`dataset`]: the data a manifest names (synthetic, CIFAR), its sizes and its identity;
//! - [`plan`]: a run's optimizer plan (schedule, weight decay, momentum, twins);
//! - [`validate`]: everything a run would reject, with the limits that keep a dry run small;
//! - [`manifest`]: parsing a YAML manifest at a profile into a [`manifest::Resolved`] one.
//!
//! ```
//! use explr_manifest::manifest;
//! use explr_manifest::spec::Experiment;
//!
//! let text = "id: T1\ntitle: toy\npaper: §7\nclaim: c\ntoy:\n  \
//!   population: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1}\n  \
//!   minibatch: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1, batch_size: 4}\n";
//! let resolved = manifest::parse(text, "t1.yaml".as_ref(), "t1", "smoke")?;
//! assert!(matches!(resolved.experiment(), Experiment::Toy(_)));
//! # Ok::<(), manifest::ManifestError>(())
//! ```

pub mod dataset;
pub mod manifest;
pub mod plan;
pub mod spec;
pub mod validate;
