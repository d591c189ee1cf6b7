//! The data a manifest's `data:` section names: how much of it there is (known before anything
//! is read, so that a manifest is validated with the steps per epoch its runs will have), and
//! the one loader every experiment kind uses. A profile gets all the data it asks for or an
//! error: `train_size`/`test_size` are the first N images of each split, and without them the
//! whole dataset is required.

use std::path::{Path, PathBuf};

use candle_core::DType;
use explr_data::{Completeness, Dataset, DatasetName, Split, SyntheticConfig};

use crate::spec::{DataSection, Precision};

/// Images per split of a dataset as published (the synthetic twin: its default sizes).
pub fn full_sizes(name: DatasetName) -> (usize, usize) {
    match name {
        DatasetName::Cifar10 | DatasetName::Cifar100(_) => (50_000, 10_000),
        DatasetName::Synthetic => (10_000, 2_000),
    }
}

/// The (train, test) images a data section asks for.
pub fn sizes(data: &DataSection) -> (usize, usize) {
    let (train, test) = full_sizes(data.dataset);
    (
        data.train_size.unwrap_or(train),
        data.test_size.unwrap_or(test),
    )
}

/// Updates per epoch (the last partial batch is kept).
pub fn steps_per_epoch(data: &DataSection) -> u64 {
    sizes(data).0.div_ceil(data.batch_size.max(1)) as u64
}

/// Candle dtype of a precision.
pub fn dtype(p: Precision) -> DType {
    match p {
        Precision::F32 => DType::F32,
        Precision::F64 => DType::F64,
    }
}

/// Why the data a manifest names could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DataSetupError {
    /// The manifest needs CIFAR files and no folder was given.
    #[error(
        "this manifest needs {dataset} but no data directory is known: pass --data-dir DIR, set \
         $EXPLR_DATA, or run `cargo xtask fetch-data {fetch}`"
    )]
    NoDataDir {
        /// The dataset.
        dataset: DatasetName,
        /// The `fetch-data` argument that downloads it.
        fetch: &'static str,
    },
    /// Reading the dataset failed (a missing or truncated file names itself).
    #[error(transparent)]
    Data(#[from] explr_data::DataError),
    /// The folder holds fewer images than the profile asks for.
    #[error(
        "{dataset} in {} has {available} {split} images but this profile asks for {requested} \
         ({field}); fetch the whole dataset with `cargo xtask fetch-data {fetch}` and pass its \
         folder with --data-dir, or lower {field}",
        dir.display()
    )]
    Shortfall {
        /// The dataset.
        dataset: DatasetName,
        /// The folder read.
        dir: PathBuf,
        /// `training` or `test`.
        split: &'static str,
        /// The manifest field that asks (`data.train_size`).
        field: &'static str,
        /// Images asked for.
        requested: usize,
        /// Images there.
        available: usize,
        /// The `fetch-data` argument that downloads it.
        fetch: &'static str,
    },
}

fn fetch_name(name: DatasetName) -> &'static str {
    match name {
        DatasetName::Cifar100(_) => "cifar100",
        _ => "cifar10",
    }
}

/// Loads the data a manifest names: the synthetic twin (no files), or CIFAR from `data_dir`,
/// cut to the sizes asked for. Asking for more images than the folder holds is an error, and
/// so is a folder short of the official files when no size is given.
pub fn load_data(data: &DataSection, data_dir: Option<&Path>) -> Result<Dataset, DataSetupError> {
    let (train, test) = sizes(data);
    if data.dataset == DatasetName::Synthetic {
        return Ok(explr_data::load_synthetic(&SyntheticConfig {
            seed: data.synthetic_seed,
            train_size: train,
            test_size: test,
            tint: data
                .synthetic_tint
                .unwrap_or(SyntheticConfig::default().tint),
            ..SyntheticConfig::default()
        })?);
    }
    let fetch = fetch_name(data.dataset);
    let root = data_dir.ok_or(DataSetupError::NoDataDir {
        dataset: data.dataset,
        fetch,
    })?;
    // Without sizes the profile asks for the whole dataset: every official file, whole.
    let completeness = if data.train_size.is_some() && data.test_size.is_some() {
        Completeness::AllowSubset
    } else {
        Completeness::Full
    };
    let full = explr_data::load_dataset(
        data.dataset,
        root,
        completeness,
        &SyntheticConfig::default(),
    )?;
    let shortfall = |split, field, requested, available| DataSetupError::Shortfall {
        dataset: data.dataset,
        dir: root.to_path_buf(),
        split,
        field,
        requested,
        available,
        fetch,
    };
    if full.train().len() < train {
        return Err(shortfall(
            "training",
            "data.train_size",
            train,
            full.train().len(),
        ));
    }
    if full.test().len() < test {
        return Err(shortfall("test", "data.test_size", test, full.test().len()));
    }
    if (full.train().len(), full.test().len()) == (train, test) {
        return Ok(full);
    }
    Ok(Dataset::new(
        full.name().to_string(),
        head(full.train(), train)?,
        head(full.test(), test)?,
        full.class_names().to_vec(),
    )?)
}

/// The first `n` images of `split`.
fn head(split: &Split, n: usize) -> Result<Split, explr_data::DataError> {
    Split::new(
        split.images()[..n * explr_data::IMAGE_BYTES].to_vec(),
        split.labels()[..n].to_vec(),
    )
}

/// The identity of the data a run trains and is tested on: its name and a digest of every
/// image and label byte of both splits, in order, and of its classes. Another synthetic seed
/// or tint, another subset, or other files under the same name give another identity.
/// Hashing CIFAR-10 (180 MB with its test split) takes a few tens of milliseconds.
pub fn identity(dataset: &Dataset) -> String {
    let labels = |split: &Split| -> Vec<u8> {
        split
            .labels()
            .iter()
            .flat_map(|l| l.to_le_bytes())
            .collect()
    };
    let (train_labels, test_labels) = (labels(dataset.train()), labels(dataset.test()));
    let classes = dataset.class_names().join("\n");
    let digest = explr_io::digest_parts([
        dataset.train().images(),
        &train_labels[..],
        dataset.test().images(),
        &test_labels[..],
        classes.as_bytes(),
    ]);
    format!("{} {digest}", dataset.name())
}
