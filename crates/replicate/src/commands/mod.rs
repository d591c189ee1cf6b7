//! The `explr` commands, as library entry points: each takes its typed request (the binary
//! parses it from the command line with clap) and what the binary knows of the environment,
//! and writes what it reports to a sink the binary hands in; none reads the environment or
//! prints.
//!
//! - [`replicate`]: run manifests at a profile, check or bless the goldens, write the report;
//! - [`schedule`]: a learning-rate schedule or exponential twin per step or per epoch;
//! - [`data`]: dataset previews and statistics.

pub mod data;
pub mod replicate;
pub mod schedule;

/// Where CIFAR data is looked for besides `--data-dir`: `$EXPLR_DATA` and the per-user cache
/// folder, as the binary read them.
#[derive(Clone, Debug, Default)]
pub struct DataRoots {
    /// `$EXPLR_DATA`.
    pub explr_data: Option<std::ffi::OsString>,
    /// The per-user cache folder (`$XDG_CACHE_HOME`, else `~/.cache`).
    pub cache: Option<std::path::PathBuf>,
}

impl DataRoots {
    /// The data folder: `given` (`--data-dir`), else `$EXPLR_DATA`, else the cache's.
    pub fn resolve(
        &self,
        given: Option<&std::path::Path>,
    ) -> Result<std::path::PathBuf, explr_data::DataError> {
        explr_data::resolve_data_dir(given, self.explr_data.as_deref(), self.cache.as_deref())
    }
}
