//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in explr-data. Each variant carries the offending values and its
/// message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A required dataset file is not there.
    #[error(
        "{dataset} not found: {path} does not exist (expected {expected}); \
         run `cargo xtask fetch-data {fetch}` or pass --data-dir DIR (or set EXPLR_DATA) \
         pointing at a directory that holds the extracted binary files"
    )]
    NotFound {
        /// Dataset name, e.g. "CIFAR-10".
        dataset: &'static str,
        /// The file that was looked for.
        path: PathBuf,
        /// What the directory should contain.
        expected: String,
        /// The `fetch-data` argument that downloads it.
        fetch: &'static str,
    },
    /// A dataset file exists but cannot be read.
    #[error("cannot read {}; check its permissions or re-fetch it with `cargo xtask fetch-data {fetch}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
        /// The `fetch-data` argument that downloads it.
        fetch: &'static str,
    },
    /// A dataset file has the wrong size: truncated, oversized or not a CIFAR binary file.
    #[error(
        "{path} has {actual} bytes but {expected}; the file is truncated, oversized or not a \
         {dataset} binary file: delete it and run `cargo xtask fetch-data {fetch}`"
    )]
    BadSize {
        /// Dataset name.
        dataset: &'static str,
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        actual: u64,
        /// What the size should be, in words.
        expected: String,
        /// The `fetch-data` argument that downloads it.
        fetch: &'static str,
    },
    /// A record carries a label outside the dataset's class range.
    #[error(
        "{path}: record {record} has {kind} label {label}, outside 0..{num_classes}; the file is \
         corrupt or belongs to another dataset: delete it and run `cargo xtask fetch-data {fetch}`"
    )]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// Zero-based record index inside the file.
        record: usize,
        /// "CIFAR-10", "coarse" or "fine".
        kind: &'static str,
        /// The label byte found.
        label: u8,
        /// The number of classes it should be below.
        num_classes: usize,
        /// The `fetch-data` argument that downloads it.
        fetch: &'static str,
    },
    /// The training batches are not consecutive (e.g. batch 3 present but batch 2 missing), or a
    /// full dataset was required and some are missing.
    #[error(
        "{dataset} in {dir}: {problem}; run `cargo xtask fetch-data {fetch}` to get the complete \
         set, or keep only data_batch_1..k (k >= 1) plus test_batch.bin for a subset"
    )]
    Incomplete {
        /// Dataset name.
        dataset: &'static str,
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        problem: String,
        /// The `fetch-data` argument that downloads it.
        fetch: &'static str,
    },
    /// No data directory could be determined.
    #[error(
        "no data directory: pass --data-dir DIR, set EXPLR_DATA, or set HOME (or XDG_CACHE_HOME) \
         so the per-user cache directory can be used"
    )]
    NoDataDir,
    /// A loader, augmentation or synthetic-dataset setting is out of range.
    #[error("invalid {field} = {value}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// Its value, printed.
        value: String,
        /// Why it is invalid and what is allowed.
        reason: &'static str,
    },
    /// An unknown dataset name was given.
    #[error(
        "unknown dataset {name:?}: expected one of cifar10, cifar100, cifar100-coarse, synthetic"
    )]
    UnknownDataset {
        /// The name given.
        name: String,
    },
    /// Building a tensor failed (e.g. the device is out of memory).
    #[error("building a batch tensor failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The background prefetch thread stopped unexpectedly.
    #[error("the prefetch thread of epoch {epoch} stopped before the epoch ended (it panicked); this is a bug in explr-data")]
    PrefetchStopped {
        /// The epoch being loaded.
        epoch: u64,
    },
    /// A `candle_datasets::vision::Dataset` that explr-data cannot hold losslessly (feature
    /// `candle-datasets`).
    #[error("candle-datasets `{tensor}` {reason}")]
    CandleDataset {
        /// The offending tensor: `train_images`, `train_labels`, `test_images` or `test_labels`.
        tensor: &'static str,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// PNG encoding failed.
    #[error("encoding the preview PNG failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
