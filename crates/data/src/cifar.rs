//! CIFAR-10 and CIFAR-100 in the official binary layout, validated, kept as `u8`.
//!
//! Layout (<https://www.cs.toronto.edu/~kriz/cifar.html>, the same one
//! `candle_datasets::vision::cifar` reads): each record is the label byte(s) followed by 3072
//! pixel bytes: the 1024 red values, then green, then blue, each plane row-major (32 rows of 32).
//! CIFAR-10 records have one label byte (0..10); CIFAR-100 records have a coarse (0..20) then a
//! fine (0..100) label byte.

use std::fs;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Split, IMAGE_BYTES};
use crate::error::{DataError, Result};

/// Records in each official CIFAR-10 file (`data_batch_1..5.bin`, `test_batch.bin`).
pub const CIFAR10_RECORDS_PER_FILE: usize = 10_000;
/// Records in CIFAR-100's `train.bin`.
pub const CIFAR100_TRAIN_RECORDS: usize = 50_000;
/// Records in CIFAR-100's `test.bin`.
pub const CIFAR100_TEST_RECORDS: usize = 10_000;
/// Directory the official CIFAR-10 tarball extracts to.
pub const CIFAR10_DIR: &str = "cifar-10-batches-bin";
/// Directory the official CIFAR-100 tarball extracts to.
pub const CIFAR100_DIR: &str = "cifar-100-binary";
/// CIFAR-10 training files, in order.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// CIFAR-10 test file.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";

/// CIFAR-10 class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100 coarse (superclass) names, by coarse label.
pub const CIFAR100_COARSE_CLASSES: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// CIFAR-100 fine class names, by fine label.
pub const CIFAR100_FINE_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// How complete a CIFAR directory must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Completeness {
    /// Every official file with its official record count (CIFAR-10: 5 × 10 000 + 10 000;
    /// CIFAR-100: 50 000 + 10 000).
    Full,
    /// Also accept a subset: CIFAR-10 `data_batch_1.bin..data_batch_k.bin` (k ≥ 1, no gaps)
    /// plus `test_batch.bin`, and any file holding a whole number of records, at least one and at
    /// most the official count. This is what a directory like `cifar10-subset` (batch 1 plus a
    /// 2 000-image test batch) needs. A file cut exactly at a record boundary then reads as a
    /// smaller subset; use [`Completeness::Full`] to rule that out.
    #[default]
    AllowSubset,
}

/// Which CIFAR-100 label becomes the class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 100 fine classes.
    #[default]
    Fine,
    /// The 20 coarse superclasses.
    Coarse,
}

/// The directory holding CIFAR-10's `.bin` files under `root`: `root` itself when it holds
/// `data_batch_1.bin` or `test_batch.bin`, else `root/cifar-10-batches-bin` (where
/// `cargo xtask fetch-data cifar10` puts it).
pub fn cifar10_dir(root: &Path) -> PathBuf {
    // A file that cannot be looked at (no permission) counts as there: reading it then says
    // why it cannot be read, instead of calling it missing.
    let here = |f: &str| root.join(f).try_exists().unwrap_or(true);
    if here(CIFAR10_TRAIN_FILES[0]) || here(CIFAR10_TEST_FILE) {
        root.to_path_buf()
    } else {
        root.join(CIFAR10_DIR)
    }
}

/// The directory holding CIFAR-100's `train.bin`/`test.bin` under `root`: `root` itself when it
/// holds `train.bin`, else `root/cifar-100-binary`.
pub fn cifar100_dir(root: &Path) -> PathBuf {
    let here = |f: &str| root.join(f).try_exists().unwrap_or(true);
    if here("train.bin") || here("test.bin") {
        root.to_path_buf()
    } else {
        root.join(CIFAR100_DIR)
    }
}

/// Where data lives: `flag` (`--data-dir`) if given, else `explr_data_env` (the value of
/// `$EXPLR_DATA`) if set and non-empty, else `user_cache_dir` (see [`user_cache_dir`]).
/// The caller reads the environment; this function never does.
pub fn resolve_data_dir(
    flag: Option<&Path>,
    explr_data_env: Option<&std::ffi::OsStr>,
    user_cache_dir: Option<&Path>,
) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(env) = explr_data_env.filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(env));
    }
    user_cache_dir
        .map(Path::to_path_buf)
        .ok_or(DataError::NoDataDir)
}

/// The per-user cache directory for explr data: `$XDG_CACHE_HOME/explr/data` if that is set and
/// non-empty, else `$HOME/.cache/explr/data`; `None` when neither is set. The caller passes the
/// two environment values.
pub fn user_cache_dir(
    xdg_cache_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    if let Some(x) = xdg_cache_home.filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("explr").join("data"));
    }
    home.filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("explr").join("data"))
}

/// Whether `path` exists. Only "not found" means absent: any other failure to look (no
/// permission on the folder, a file where a folder should be) is an error that names the path
/// and the cause, not a missing dataset.
fn is_present(path: &Path, fetch: &'static str) -> Result<bool> {
    path.try_exists().map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
        fetch,
    })
}

/// The shape of one CIFAR file to read.
struct FileSpec<'a> {
    dataset: &'static str,
    fetch: &'static str,
    path: &'a Path,
    label_bytes: usize,
    official_records: usize,
    completeness: Completeness,
}

/// Reads one file: validates its size and labels, returns (pixels, label bytes per record).
fn read_records(spec: &FileSpec<'_>) -> Result<(Vec<u8>, Vec<[u8; 2]>)> {
    let path = spec.path;
    let record = spec.label_bytes + IMAGE_BYTES;
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound {
            dataset: spec.dataset,
            path: path.to_path_buf(),
            expected: format!(
                "the official binary file {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            fetch: spec.fetch,
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source: e,
            fetch: spec.fetch,
        },
    })?;
    let size = meta.len();
    let official = (spec.official_records * record) as u64;
    let size_ok = match spec.completeness {
        Completeness::Full => size == official,
        Completeness::AllowSubset => size > 0 && size % record as u64 == 0 && size <= official,
    };
    if !size_ok {
        let expected = match spec.completeness {
            Completeness::Full => format!(
                "expected exactly {official} ({} records of {record} bytes)",
                spec.official_records
            ),
            Completeness::AllowSubset => format!(
                "expected a whole number of {record}-byte records, between 1 and {} \
                 ({official} bytes)",
                spec.official_records
            ),
        };
        return Err(DataError::BadSize {
            dataset: spec.dataset,
            path: path.to_path_buf(),
            actual: size,
            expected,
            fetch: spec.fetch,
        });
    }
    let bytes = fs::read(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
        fetch: spec.fetch,
    })?;
    if bytes.len() as u64 != size {
        // The file changed between metadata and read.
        return Err(DataError::BadSize {
            dataset: spec.dataset,
            path: path.to_path_buf(),
            actual: bytes.len() as u64,
            expected: format!("expected {size} (its size a moment before)"),
            fetch: spec.fetch,
        });
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for rec in bytes.chunks_exact(record) {
        let (lab, px) = rec.split_at(spec.label_bytes);
        let mut l = [0u8; 2];
        l[..spec.label_bytes].copy_from_slice(lab);
        labels.push(l);
        pixels.extend_from_slice(px);
    }
    Ok((pixels, labels))
}

fn check_labels(
    path: &Path,
    labels: &[u32],
    kind: &'static str,
    num_classes: usize,
    fetch: &'static str,
) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= num_classes) {
        Some(record) => Err(DataError::BadLabel {
            path: path.to_path_buf(),
            record,
            kind,
            label: labels[record] as u8,
            num_classes,
            fetch,
        }),
        None => Ok(()),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn read_cifar10_file(path: &Path, completeness: Completeness) -> Result<(Vec<u8>, Vec<u32>)> {
    let (px, labs) = read_records(&FileSpec {
        dataset: "CIFAR-10",
        fetch: "cifar10",
        path,
        label_bytes: 1,
        official_records: CIFAR10_RECORDS_PER_FILE,
        completeness,
    })?;
    let labels: Vec<u32> = labs.iter().map(|l| u32::from(l[0])).collect();
    check_labels(path, &labels, "CIFAR-10", 10, "cifar10")?;
    Ok((px, labels))
}

/// Loads CIFAR-10 from `root` (see [`cifar10_dir`] for where the files may sit). The training
/// split is the present batches `data_batch_1..k` in order; the test split is `test_batch.bin`.
pub fn load_cifar10(root: &Path, completeness: Completeness) -> Result<Dataset> {
    let dir = cifar10_dir(root);
    let present: Vec<bool> = CIFAR10_TRAIN_FILES
        .iter()
        .map(|f| is_present(&dir.join(f), "cifar10"))
        .collect::<Result<_>>()?;
    let k = present.iter().take_while(|&&p| p).count();
    if k == 0 {
        return Err(DataError::NotFound {
            dataset: "CIFAR-10",
            path: dir.join(CIFAR10_TRAIN_FILES[0]),
            expected: "data_batch_1.bin..data_batch_5.bin and test_batch.bin \
                       (at least data_batch_1.bin for a subset)"
                .to_string(),
            fetch: "cifar10",
        });
    }
    if let Some(gap) = present[k..].iter().position(|&p| p) {
        return Err(DataError::Incomplete {
            dataset: "CIFAR-10",
            dir,
            problem: format!(
                "{} is present but {} is missing",
                CIFAR10_TRAIN_FILES[k + gap],
                CIFAR10_TRAIN_FILES[k]
            ),
            fetch: "cifar10",
        });
    }
    if completeness == Completeness::Full && k < CIFAR10_TRAIN_FILES.len() {
        return Err(DataError::Incomplete {
            dataset: "CIFAR-10",
            dir,
            problem: format!(
                "only {k} of 5 training batches are present ({} is missing) and the full set was required",
                CIFAR10_TRAIN_FILES[k]
            ),
            fetch: "cifar10",
        });
    }
    let mut train_px = Vec::new();
    let mut train_labels = Vec::new();
    for f in &CIFAR10_TRAIN_FILES[..k] {
        let (px, labels) = read_cifar10_file(&dir.join(f), completeness)?;
        train_px.extend_from_slice(&px);
        train_labels.extend_from_slice(&labels);
    }
    let (test_px, test_labels) = read_cifar10_file(&dir.join(CIFAR10_TEST_FILE), completeness)?;
    Dataset::new(
        "cifar10",
        Split::new(train_px, train_labels)?,
        Split::new(test_px, test_labels)?,
        names(&CIFAR10_CLASSES),
    )
}

fn read_cifar100_file(
    path: &Path,
    official_records: usize,
    completeness: Completeness,
    which: Cifar100Labels,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let (px, labs) = read_records(&FileSpec {
        dataset: "CIFAR-100",
        fetch: "cifar100",
        path,
        label_bytes: 2,
        official_records,
        completeness,
    })?;
    let coarse: Vec<u32> = labs.iter().map(|l| u32::from(l[0])).collect();
    let fine: Vec<u32> = labs.iter().map(|l| u32::from(l[1])).collect();
    // Both labels are validated whichever one is used.
    check_labels(path, &coarse, "coarse", 20, "cifar100")?;
    check_labels(path, &fine, "fine", 100, "cifar100")?;
    Ok((
        px,
        match which {
            Cifar100Labels::Fine => fine,
            Cifar100Labels::Coarse => coarse,
        },
    ))
}

/// Loads CIFAR-100 (`train.bin`, `test.bin`) from `root` (see [`cifar100_dir`]) with the fine or
/// coarse labels as classes.
pub fn load_cifar100(
    root: &Path,
    completeness: Completeness,
    labels: Cifar100Labels,
) -> Result<Dataset> {
    let dir = cifar100_dir(root);
    let (train_px, train_labels) = read_cifar100_file(
        &dir.join("train.bin"),
        CIFAR100_TRAIN_RECORDS,
        completeness,
        labels,
    )?;
    let (test_px, test_labels) = read_cifar100_file(
        &dir.join("test.bin"),
        CIFAR100_TEST_RECORDS,
        completeness,
        labels,
    )?;
    let (name, classes) = match labels {
        Cifar100Labels::Fine => ("cifar100", names(&CIFAR100_FINE_CLASSES)),
        Cifar100Labels::Coarse => ("cifar100-coarse", names(&CIFAR100_COARSE_CLASSES)),
    };
    Dataset::new(
        name,
        Split::new(train_px, train_labels)?,
        Split::new(test_px, test_labels)?,
        classes,
    )
}
