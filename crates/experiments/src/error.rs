//! The error of every experiment kind: one variant per concern it can fail in.

use explr_execute::executor::ExecError;
use explr_io::IoError;
use explr_io::LockError;
use explr_manifest::dataset::DataSetupError;
use explr_manifest::plan::PlanError;
use explr_train::records::RecordsError;
use explr_train::trainer::TrainError;

/// Why an experiment failed: its own failures, or one of the layer below it, each reached one
/// way. Everything a training run can fail in (files, records, tensors, the model, the
/// schedule, the plan) comes through [`TrainError`], whichever experiment hit it; executing
/// the units through [`ExecError`].
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A training run, or what it is built of, failed.
    #[error(transparent)]
    Train(Box<TrainError>),
    /// Running or submitting the units failed.
    #[error(transparent)]
    Exec(Box<ExecError>),
    /// The results folder is in use by another process.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The data the manifest names could not be had.
    #[error(transparent)]
    DataSetup(Box<DataSetupError>),
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
}

/// The errors of the layers below that reach an experiment through a training run's error.
macro_rules! through_train {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for ExperimentError {
            fn from(e: $t) -> Self {
                ExperimentError::Train(Box::new(TrainError::from(e)))
            }
        }
    )*};
}

through_train!(
    IoError,
    RecordsError,
    PlanError,
    candle_core::Error,
    explr_data::DataError,
    explr_zoo::ZooError,
    explr_nn::NnError,
    explr_schedule::ScheduleError,
);

impl From<TrainError> for ExperimentError {
    fn from(e: TrainError) -> Self {
        ExperimentError::Train(Box::new(e))
    }
}

impl From<DataSetupError> for ExperimentError {
    fn from(e: DataSetupError) -> Self {
        ExperimentError::DataSetup(Box::new(e))
    }
}

impl From<ExecError> for ExperimentError {
    fn from(e: ExecError) -> Self {
        ExperimentError::Exec(Box::new(e))
    }
}

impl From<explr_execute::slurm::SlurmError> for ExperimentError {
    fn from(e: explr_execute::slurm::SlurmError) -> Self {
        ExperimentError::from(ExecError::from(e))
    }
}

impl ExperimentError {
    /// Whether the run stopped because the process was asked to (a signal), with its last
    /// epoch checkpointed: the work is worth resuming, not a failure.
    pub fn is_stop(&self) -> bool {
        matches!(self, ExperimentError::Train(e) if matches!(**e, TrainError::Stopped { .. }))
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
