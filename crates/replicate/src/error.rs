//! [`CommandError`]: why an `explr` command failed, for the binary to print as a chain.

/// Why a command failed: a request that makes no sense (flags that do not fit together, a
/// value out of range), or an operation that failed, with what was being done and the error of
/// the layer that failed as its `source()` (a run's [`ExperimentError`](explr_experiments::ExperimentError),
/// a manifest's, a file's…).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request itself is wrong: the message says what to change.
    #[error("{0}")]
    Usage(String),
    /// The work ran, and what it found fails the command: goldens that differ, claims whose
    /// checks fail, units not complete (each on a line).
    #[error("{0}")]
    Problems(String),
    /// An error of a layer below, as it is.
    #[error(transparent)]
    Layer(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// An operation failed.
    #[error("{what}")]
    Failed {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl CommandError {
    /// `source`, as the failure of `what`.
    pub fn failed(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Failed {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

impl CommandError {
    /// Whether a training run stopped because the process was asked to (a signal), with its
    /// last epoch checkpointed ([`ExperimentError::is_stop`](explr_experiments::ExperimentError::is_stop)),
    /// anywhere in the error's chain.
    pub fn is_stop(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = match self {
            Self::Usage(_) | Self::Problems(_) => None,
            Self::Layer(e) | Self::Failed { source: e, .. } => Some(e.as_ref()),
        };
        while let Some(e) = next {
            if e.downcast_ref::<explr_experiments::ExperimentError>()
                .is_some_and(explr_experiments::ExperimentError::is_stop)
            {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// The errors of the layers below, passed through as they are.
macro_rules! layer_errors {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for CommandError {
            fn from(e: $t) -> Self {
                CommandError::Layer(Box::new(e))
            }
        }
    )*};
}

layer_errors!(
    explr_experiments::ExperimentError,
    explr_manifest::manifest::ManifestError,
    explr_results::golden::GoldenError,
    explr_results::index::IndexError,
    explr_results::report::TimingsError,
    explr_execute::slurm::SlurmError,
    explr_io::IoError,
    explr_train::device::DeviceError,
    explr_data::DataError,
    explr_schedule::ScheduleError,
    std::io::Error,
);

/// The result of a command.
pub type Result<T, E = CommandError> = std::result::Result<T, E>;

/// Says what was being done when an operation failed.
pub trait Context<T> {
    /// The error, as the failure of `what`.
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// The error, as the failure of what `what` says (built only on an error).
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| CommandError::failed(what, e))
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| CommandError::failed(what(), e))
    }
}

/// A [`CommandError::Usage`] from a format string.
macro_rules! usage {
    ($($arg:tt)*) => {
        $crate::error::CommandError::Usage(format!($($arg)*))
    };
}

/// Returns a [`CommandError::Usage`] from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::usage!($($arg)*))
    };
}

pub(crate) use {bail, usage};

#[cfg(test)]
mod tests {
    use super::*;
    use explr_experiments::ExperimentError;
    use explr_train::trainer::TrainError;

    fn stopped() -> ExperimentError {
        ExperimentError::from(TrainError::Stopped {
            run: "m/r/seed-0".into(),
            epoch: 1,
            epochs: 2,
            checkpoint: None,
        })
    }

    #[test]
    fn a_stop_request_is_found_wherever_it_sits_in_the_chain() {
        assert!(CommandError::from(stopped()).is_stop());
        assert!(CommandError::failed("running e3.yaml", stopped()).is_stop());
        let nested = CommandError::failed("outer", CommandError::failed("inner", stopped()));
        assert!(nested.is_stop());
        let other = ExperimentError::EmptySplit { split: "test" };
        assert!(!CommandError::failed("running e3.yaml", other).is_stop());
        assert!(!CommandError::Usage("--jobs 0".into()).is_stop());
    }

    #[test]
    fn context_names_what_failed_and_keeps_the_cause() {
        let e = std::fs::read_to_string("/nonexistent/explr")
            .context("reading the manifest")
            .unwrap_err();
        assert_eq!(e.to_string(), "reading the manifest");
        assert!(std::error::Error::source(&e).is_some());
    }
}
