//! The four kinds of experiment a manifest can describe, each turning its section into a
//! [`Summary`](crate::summary::Summary) and figures, and [`UnitState`], where one unit of that
//! work (a training run, or a whole experiment of another kind) stands on disk:
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

/// Where one unit of a manifest's work (a training run, or the whole experiment of another
/// kind) stands, as its folder shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitState {
    /// Finished: its results are on disk and verify.
    Complete,
    /// `epoch` of `epochs` epochs trained: a resume continues from its checkpoint.
    Partial {
        /// Epochs done.
        epoch: usize,
        /// Epochs of the run.
        epochs: usize,
    },
    /// Nothing usable on disk yet.
    NotStarted,
    /// Another process holds its folder's lock: it is running, here or on another node.
    Busy {
        /// The holder, as its lock file names it (pid, command line, host).
        holder: String,
    },
    /// What is on disk cannot be resumed (written by another configuration, inconsistent, or
    /// finished without a file it needs).
    Unusable {
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete => write!(f, "complete"),
            Self::Partial { epoch, epochs } => {
                write!(f, "partial: {epoch} of {epochs} epochs checkpointed")
            }
            Self::NotStarted => write!(f, "not started"),
            Self::Busy { holder } => write!(f, "running ({holder})"),
            Self::Unusable { reason } => write!(f, "unusable: {reason}"),
        }
    }
}
