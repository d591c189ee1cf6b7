//! `explr-execute`: how a manifest's units of work run, knowing nothing of what they are.
//!
//! - [`executor`]: the [`executor::Executor`] trait over a [`executor::Job`] of opaque units
//!   ([`executor::UnitKey`], with a [`executor::UnitState`] each), and its local thread pool
//!   ([`executor::LocalPool`]) and Slurm job array ([`executor::SlurmArray`]);
//! - [`slurm`]: the array script, `sbatch`/`squeue`, and the submissions recorded per folder.
//!
//! ```
//! use explr_execute::slurm::array_spec;
//!
//! assert_eq!(array_spec(&[0, 1, 2, 5]), "0-2,5");
//! ```

pub mod executor;
pub mod slurm;
