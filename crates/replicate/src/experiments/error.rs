//! The error of every experiment kind: one variant per concern it can fail in.

use crate::data::DataSetupError;
use crate::io::IoError;
use crate::plan::PlanError;
use crate::records::RecordsError;
use crate::trainer::TrainError;

/// Why an experiment failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Writing a result failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The results folder is in use by another process.
    #[error(transparent)]
    Lock(#[from] crate::io::LockError),
    /// A metrics file could not be read or written.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// A training run stopped.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A run could not be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The data the manifest names could not be had.
    #[error(transparent)]
    DataSetup(#[from] DataSetupError),
    /// Batching data failed.
    #[error(transparent)]
    Data(#[from] explr_data::DataError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Building or running a model failed.
    #[error(transparent)]
    Zoo(#[from] explr_zoo::ZooError),
    /// Parameters could not be built, saved or loaded.
    #[error(transparent)]
    Nn(#[from] explr_nn::NnError),
    /// A schedule or the optimizer failed.
    #[error(transparent)]
    Schedule(#[from] explr_schedule::ScheduleError),
    /// A toy run failed.
    #[error(transparent)]
    Toy(#[from] ToyError),
    /// A split that the experiment reads a probe batch from is empty.
    #[error("the {split} split is empty: the experiment needs at least one {split} image (set data.{split}_size >= 1)")]
    EmptySplit {
        /// `train` or `test`.
        split: &'static str,
    },
    /// A unit of the manifest's work is not complete on disk, so there is nothing to summarize.
    #[error("{unit} is not complete ({state}); run it (again) before collecting")]
    Incomplete {
        /// The unit (`model/run/seed-N`, or `experiment`).
        unit: String,
        /// Where it stands.
        state: String,
    },
    /// `explr replicate --task` named a unit the manifest does not have.
    #[error("{manifest} has no unit `{unit}`; its units are: {}", known.join(", "))]
    UnknownUnit {
        /// The unit asked for.
        unit: String,
        /// The manifest's name.
        manifest: String,
        /// Its units.
        known: Vec<String>,
    },
    /// Submitting to Slurm, or reading what was submitted, failed.
    #[error(transparent)]
    Slurm(#[from] crate::slurm::SlurmError),
    /// A worker thread running independent runs panicked (a bug: please report it).
    #[error("the worker thread training {run} panicked")]
    WorkerPanicked {
        /// The run it was training.
        run: String,
    },
}

impl RunError {
    /// Whether the run stopped because the process was asked to (a signal), with its last
    /// epoch checkpointed: the work is worth resuming, not a failure.
    pub fn is_stop(&self) -> bool {
        matches!(self, RunError::Train(TrainError::Stopped { .. }))
    }
}

/// Errors of a toy run's configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ToyError {
    /// An impossible value (validation rejects it first, when the manifest is parsed).
    #[error("toy config: `{field}` {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}
