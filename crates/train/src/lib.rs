//! `explr-train`: one training run of an explr manifest, durable and resumable.
//!
//! - [`trainer`]: [`trainer::train`] runs a model under an optimizer plan for its epochs,
//!   recording an [`records::EpochRecord`] per epoch and stopping on a non-finite value;
//! - [`checkpoint`]: checkpoints with digests and a fingerprint of what wrote them, so that a
//!   resume continues only the same run;
//! - [`records`]: the per-epoch metrics files;
//! - [`context`]: the options, provenance and progress every run shares
//!   ([`context::RunnerOptions`], [`context::Progress`]);
//! - [`device`]: the device a run trains on ([`device::DeviceSpec`]).
//!
//! ```
//! use explr_train::device::DeviceSpec;
//!
//! let spec: DeviceSpec = "cpu".parse()?;
//! assert_eq!(spec.to_string(), "cpu");
//! # Ok::<(), explr_train::device::DeviceError>(())
//! ```

pub mod checkpoint;
pub mod context;
pub mod device;
pub mod records;
pub mod trainer;
