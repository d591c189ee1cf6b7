//! explr-data: CIFAR-10/100 readers, a deterministic synthetic CIFAR-shaped dataset, standard
//! augmentation and seeded, resumable batching.
//!
//! - [`Dataset`] holds a train and a test [`Split`] (images kept once as `u8`, CHW) and the class
//!   names. Build one with [`load_cifar10`], [`load_cifar100`] or [`load_synthetic`].
//! - [`Loader`] turns a split into batches of `(N, 3, 32, 32)` f32/f64 tensors and `u32` labels
//!   on any candle device, prepared by a background thread. The order of epoch `e` depends only on
//!   `(seed, e)`, an image's crop and flip only on `(seed, e, index)`.
//! - With the feature `candle-datasets`, `Dataset::try_from(candle_datasets::vision::Dataset)`
//!   takes candle's own CIFAR-10 loaders' output (pixels `u8/255` in f32), losslessly; it is off
//!   by default because candle-datasets pulls in hf-hub, tokio and parquet (README).
//! - [`resolve_data_dir`] picks the data directory (`--data-dir`, then `$EXPLR_DATA`, then the
//!   per-user cache), and [`preview_png`] draws a labelled contact sheet.
//!
//! Normalization defaults to CIFAR-10's statistics, mean 0.4914/0.4822/0.4465 and std
//! 0.2470/0.2435/0.2616 ([`Normalize::CIFAR10`]); zero padding is applied to the `u8` image
//! before normalization, as torchvision does.
//!
//! ```
//! use candle_core::Device;
//! use explr_data::{load_synthetic, Loader, LoaderConfig, SyntheticConfig};
//!
//! let data = load_synthetic(&SyntheticConfig { train_size: 300, test_size: 50, ..Default::default() })?;
//! let loader = Loader::new(data.train(), LoaderConfig::train(128, 7), &Device::Cpu)?;
//! assert_eq!(loader.steps_per_epoch(), 3); // 128 + 128 + 44: the last partial batch is kept
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.images.dims()[1..], [3, 32, 32]);
//! }
//! # Ok::<(), explr_data::DataError>(())
//! ```
//!
//! Library code never reads the environment, never prints and never touches the network; the
//! download lives in `cargo xtask fetch-data`.

mod augment;
#[cfg(feature = "candle-datasets")]
mod candle_datasets;
mod cifar;
mod dataset;
mod error;
mod loader;
mod preview;
mod rng;
mod synthetic;

pub use augment::{Augment, CropFlip, Element, Normalize, NormalizeTable};
pub use cifar::{
    cifar100_dir, cifar10_dir, load_cifar10, load_cifar100, resolve_data_dir, user_cache_dir,
    Cifar100Labels, Completeness, CIFAR100_COARSE_CLASSES, CIFAR100_DIR, CIFAR100_FINE_CLASSES,
    CIFAR100_TEST_RECORDS, CIFAR100_TRAIN_RECORDS, CIFAR10_CLASSES, CIFAR10_DIR,
    CIFAR10_RECORDS_PER_FILE, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES,
};
pub use dataset::{Dataset, Split, CHANNELS, HEIGHT, IMAGE_BYTES, WIDTH};
pub use error::{DataError, Result};
pub use loader::{Batch, EpochBatches, Loader, LoaderConfig};
pub use preview::{preview_png, preview_rgb};
pub use synthetic::{load_synthetic, SyntheticConfig};

/// A dataset named on a command line or in a manifest: `cifar10`, `cifar100`,
/// `cifar100-coarse` or `synthetic` (also as YAML, through serde).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DatasetName {
    /// CIFAR-10 (`cifar10`).
    Cifar10,
    /// CIFAR-100 with fine labels (`cifar100`) or coarse labels (`cifar100-coarse`).
    Cifar100(Cifar100Labels),
    /// The synthetic twin (`synthetic`).
    Synthetic,
}

impl DatasetName {
    /// The name as written (`cifar10`, `cifar100`, `cifar100-coarse`, `synthetic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar10",
            Self::Cifar100(Cifar100Labels::Fine) => "cifar100",
            Self::Cifar100(Cifar100Labels::Coarse) => "cifar100-coarse",
            Self::Synthetic => "synthetic",
        }
    }

    /// The number of classes of the dataset (the synthetic twin's default, 10).
    pub fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 | Self::Synthetic => 10,
            Self::Cifar100(Cifar100Labels::Fine) => CIFAR100_FINE_CLASSES.len(),
            Self::Cifar100(Cifar100Labels::Coarse) => CIFAR100_COARSE_CLASSES.len(),
        }
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DatasetName {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(Self::Cifar10),
            "cifar100" | "cifar-100" => Ok(Self::Cifar100(Cifar100Labels::Fine)),
            "cifar100-coarse" => Ok(Self::Cifar100(Cifar100Labels::Coarse)),
            "synthetic" => Ok(Self::Synthetic),
            _ => Err(DataError::UnknownDataset { name: s.into() }),
        }
    }
}

impl TryFrom<String> for DatasetName {
    type Error = DataError;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DatasetName> for String {
    fn from(name: DatasetName) -> String {
        name.as_str().to_string()
    }
}

/// Loads `name`: CIFAR from `root` (see [`cifar10_dir`], [`cifar100_dir`]) with the given
/// completeness, or the synthetic dataset from `synthetic` (then `root` is not read).
pub fn load_dataset(
    name: DatasetName,
    root: &std::path::Path,
    completeness: Completeness,
    synthetic: &SyntheticConfig,
) -> Result<Dataset> {
    match name {
        DatasetName::Cifar10 => load_cifar10(root, completeness),
        DatasetName::Cifar100(labels) => load_cifar100(root, completeness, labels),
        DatasetName::Synthetic => load_synthetic(synthetic),
    }
}
