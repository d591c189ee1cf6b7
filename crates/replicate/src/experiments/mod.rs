//! The four kinds of experiment a manifest can describe, each turning its section into a
//! [`Summary`](crate::summary::Summary) and figures:
//!
//! - [`training`]: epoch-level runs compared as curves (E1–E6, N1, A1), through the trainer,
//!   judged by [`checks`] (the claim's rules and its negative controls);
//! - [`exactness`]: a weight-decay run and its exponential twins in lockstep (X1–X3);
//! - [`scale_invariance`]: L(cθ) = L(θ) for every model in its declared group (S1);
//! - [`toy`]: THEORY.md §7's example (T1).

pub mod checks;
pub mod exactness;
pub mod scale_invariance;
pub mod toy;
pub mod training;

mod error;

pub use error::RunError;
