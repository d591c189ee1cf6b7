//! CIFAR readers on small files written here in the official binary layout.

use std::fs;
use std::path::{Path, PathBuf};

use explr_data::{
    load_cifar10, load_cifar100, resolve_data_dir, user_cache_dir, Cifar100Labels, Completeness,
    DataError, DatasetName,
};

/// A pixel value that encodes (image, channel, row, column), so any reordering shows.
fn pixel(i: usize, c: usize, y: usize, x: usize) -> u8 {
    (i * 31 + c * 101 + y * 7 + x * 3) as u8
}

/// Writes records for images `first..first + labels.len()`: label byte(s), then R, G, B planes.
fn write_records(path: &Path, first: usize, labels: &[Vec<u8>]) {
    let mut bytes = Vec::new();
    for (k, lab) in labels.iter().enumerate() {
        bytes.extend_from_slice(lab);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    bytes.push(pixel(first + k, c, y, x));
                }
            }
        }
    }
    fs::write(path, bytes).unwrap();
}

fn labels10(v: &[u8]) -> Vec<Vec<u8>> {
    v.iter().map(|&l| vec![l]).collect()
}

fn assert_pixels(split: &explr_data::Split, first: usize) {
    for i in 0..split.len() {
        let img = split.image(i);
        for (c, y, x) in [
            (0, 0, 0),
            (0, 0, 1),
            (0, 1, 0),
            (1, 0, 0),
            (2, 31, 31),
            (1, 17, 5),
        ] {
            assert_eq!(
                img[c * 1024 + y * 32 + x],
                pixel(first + i, c, y, x),
                "image {i} ({c},{y},{x})"
            );
        }
    }
}

#[test]
fn cifar10_pixel_order_label_order_and_planes() {
    let dir = tempfile::tempdir().unwrap();
    write_records(
        &dir.path().join("data_batch_1.bin"),
        0,
        &labels10(&[3, 9, 0]),
    );
    write_records(&dir.path().join("data_batch_2.bin"), 3, &labels10(&[1, 7]));
    write_records(
        &dir.path().join("test_batch.bin"),
        100,
        &labels10(&[5, 2, 8, 4]),
    );
    let data = load_cifar10(dir.path(), Completeness::AllowSubset).unwrap();
    assert_eq!(data.train().labels(), [3, 9, 0, 1, 7]);
    assert_eq!(data.test().labels(), [5, 2, 8, 4]);
    assert_pixels(data.train(), 0);
    assert_pixels(data.test(), 100);
    assert_eq!(data.num_classes(), 10);
    assert_eq!(data.class_names()[0], "airplane");
    assert_eq!(data.class_names()[9], "truck");
    // The fetch-data layout: files under cifar-10-batches-bin/.
    let root = tempfile::tempdir().unwrap();
    let sub = root.path().join("cifar-10-batches-bin");
    fs::create_dir(&sub).unwrap();
    write_records(&sub.join("data_batch_1.bin"), 0, &labels10(&[6]));
    write_records(&sub.join("test_batch.bin"), 0, &labels10(&[6]));
    assert_eq!(
        load_cifar10(root.path(), Completeness::AllowSubset)
            .unwrap()
            .train()
            .len(),
        1
    );
}

/// Reads the PyTorch-made fixture: the official-layout bytes and torchvision's decoding of them.
#[test]
fn cifar10_matches_torchvision_decoding() {
    let bytes = fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/data_reference.safetensors"
    ))
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let records = st.tensor("records").unwrap().data().to_vec();
    let images = st.tensor("images").unwrap().data().to_vec();
    let labels: Vec<u32> = st
        .tensor("labels")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("data_batch_1.bin"), &records).unwrap();
    fs::write(dir.path().join("test_batch.bin"), &records).unwrap();
    let data = load_cifar10(dir.path(), Completeness::AllowSubset).unwrap();
    assert_eq!(data.train().images(), images.as_slice());
    assert_eq!(data.train().labels(), labels.as_slice());
}

#[derive(Debug)]
enum Setup {
    /// (file, record labels) written with [`write_records`].
    Records(&'static str, Vec<Vec<u8>>),
    /// (file, length) of a sparse zero file: all labels 0, valid.
    Sized(&'static str, u64),
}

/// Builds a directory from `files`, loads it and returns the error (panics if it loads).
fn load_err(
    files: Vec<Setup>,
    load: impl Fn(&Path) -> Result<explr_data::Dataset, DataError>,
) -> DataError {
    let dir = tempfile::tempdir().unwrap();
    for f in &files {
        match f {
            Setup::Records(name, labels) => write_records(&dir.path().join(name), 0, labels),
            Setup::Sized(name, len) => fs::File::create(dir.path().join(name))
                .unwrap()
                .set_len(*len)
                .unwrap(),
        }
    }
    match load(dir.path()) {
        Ok(d) => panic!(
            "expected an error for {files:?}, loaded {} train images",
            d.train().len()
        ),
        Err(e) => e,
    }
}

/// Each case: files, then substrings the error message must contain.
fn check10(completeness: Completeness, files: Vec<Setup>, expect: &[&str]) {
    let err = load_err(files, |p| load_cifar10(p, completeness));
    let msg = err.to_string();
    for e in expect {
        assert!(msg.contains(e), "{e:?} not in {msg:?}");
    }
    assert!(
        msg.contains("cargo xtask fetch-data cifar10"),
        "no remedy in {msg:?}"
    );
}

const OFFICIAL: u64 = 3073 * 10_000;

#[test]
fn cifar10_bad_directories_are_typed_errors() {
    use Completeness::*;
    use Setup::*;
    let one = || Records("data_batch_1.bin", labels10(&[1, 2, 3]));
    let test = || Records("test_batch.bin", labels10(&[0]));
    check10(
        AllowSubset,
        vec![],
        &["CIFAR-10 not found", "data_batch_1.bin", "--data-dir"],
    );
    check10(
        AllowSubset,
        vec![one()],
        &["test_batch.bin", "does not exist"],
    );
    check10(
        AllowSubset,
        vec![Sized("data_batch_1.bin", 3 * 3073 - 1), test()],
        &["data_batch_1.bin has 9218 bytes", "3073-byte records"],
    );
    check10(
        AllowSubset,
        vec![Sized("data_batch_1.bin", OFFICIAL + 3073), test()],
        &["30733073 bytes", "between 1 and 10000"],
    );
    check10(
        AllowSubset,
        vec![Sized("data_batch_1.bin", 0), test()],
        &["has 0 bytes"],
    );
    check10(
        AllowSubset,
        vec![Records("data_batch_1.bin", labels10(&[1, 9, 10])), test()],
        &["data_batch_1.bin: record 2", "label 10", "0..10"],
    );
    check10(
        AllowSubset,
        vec![Records("data_batch_1.bin", labels10(&[255])), test()],
        &["label 255"],
    );
    check10(
        AllowSubset,
        vec![one(), Records("data_batch_3.bin", labels10(&[1])), test()],
        &["data_batch_3.bin is present but data_batch_2.bin is missing"],
    );
    check10(
        AllowSubset,
        vec![Records("data_batch_2.bin", labels10(&[1])), test()],
        &["data_batch_1.bin"],
    );
    check10(
        Full,
        vec![one(), test()],
        &["only 1 of 5", "data_batch_2.bin is missing"],
    );
    let mut full: Vec<Setup> = (1..=5)
        .map(|i| {
            Sized(
                [
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ][i - 1],
                OFFICIAL,
            )
        })
        .collect();
    full.push(Sized("test_batch.bin", OFFICIAL - 3073));
    check10(
        Full,
        full,
        &[
            "test_batch.bin has 30726927 bytes",
            "expected exactly 30730000",
        ],
    );
}

#[test]
fn cifar10_full_set_loads_50000_plus_10000() {
    let dir = tempfile::tempdir().unwrap();
    for f in explr_data::CIFAR10_TRAIN_FILES
        .iter()
        .chain([&explr_data::CIFAR10_TEST_FILE])
    {
        fs::File::create(dir.path().join(f))
            .unwrap()
            .set_len(OFFICIAL)
            .unwrap();
    }
    let data = load_cifar10(dir.path(), Completeness::Full).unwrap();
    assert_eq!((data.train().len(), data.test().len()), (50_000, 10_000));
}

#[test]
fn cifar100_sample_fine_and_coarse() {
    let dir = tempfile::tempdir().unwrap();
    let train = vec![vec![4, 99], vec![19, 0], vec![0, 57]];
    write_records(&dir.path().join("train.bin"), 0, &train);
    write_records(
        &dir.path().join("test.bin"),
        50,
        &[vec![11, 3], vec![7, 42]],
    );
    let fine = load_cifar100(dir.path(), Completeness::AllowSubset, Cifar100Labels::Fine).unwrap();
    assert_eq!(fine.train().labels(), [99, 0, 57]);
    assert_eq!(fine.test().labels(), [3, 42]);
    assert_eq!(fine.num_classes(), 100);
    assert_eq!(fine.class_names()[99], "worm");
    assert_pixels(fine.train(), 0);
    assert_pixels(fine.test(), 50);
    let coarse = load_cifar100(
        dir.path(),
        Completeness::AllowSubset,
        Cifar100Labels::Coarse,
    )
    .unwrap();
    assert_eq!(coarse.train().labels(), [4, 19, 0]);
    assert_eq!(coarse.num_classes(), 20);
    assert_eq!(coarse.class_names()[19], "vehicles_2");
    assert_eq!(coarse.train().images(), fine.train().images());
}

#[test]
fn cifar100_bad_files_are_typed_errors() {
    use Setup::*;
    let check = |files: Vec<Setup>, expect: &[&str]| {
        let err = load_err(files, |p| {
            load_cifar100(p, Completeness::AllowSubset, Cifar100Labels::Fine)
        });
        let msg = err.to_string();
        for e in expect {
            assert!(msg.contains(e), "{e:?} not in {msg:?}");
        }
        assert!(msg.contains("cargo xtask fetch-data cifar100"), "{msg}");
    };
    let test = || Records("test.bin", vec![vec![0, 0]]);
    check(vec![test()], &["CIFAR-100 not found", "train.bin"]);
    check(
        vec![Records("train.bin", vec![vec![1, 100]]), test()],
        &["fine label 100", "0..100"],
    );
    check(
        vec![Records("train.bin", vec![vec![20, 5]]), test()],
        &["coarse label 20", "0..20"],
    );
    check(
        vec![Sized("train.bin", 3074 * 2 + 1), test()],
        &["train.bin has 6149 bytes", "3074-byte"],
    );
    check(
        vec![Sized("train.bin", 3074 * 50_001), test()],
        &["between 1 and 50000"],
    );
}

#[test]
fn data_dir_resolution_order() {
    let p = |s: &str| PathBuf::from(s);
    let os = |s: &'static str| Some(std::ffi::OsStr::new(s));
    let cache = user_cache_dir(None, os("/home/u"));
    assert_eq!(cache, Some(p("/home/u/.cache/explr/data")));
    assert_eq!(
        user_cache_dir(os("/x"), os("/home/u")),
        Some(p("/x/explr/data"))
    );
    assert_eq!(
        user_cache_dir(os(""), os("/home/u")),
        Some(p("/home/u/.cache/explr/data"))
    );
    assert_eq!(user_cache_dir(None, None), None);
    let check =
        |flag: Option<&str>, env: Option<&'static str>, cache: Option<&str>, want: Option<&str>| {
            let got = resolve_data_dir(flag.map(Path::new), env.and_then(os), cache.map(Path::new));
            match (got, want) {
                (Ok(g), Some(w)) => assert_eq!(g, p(w)),
                (Err(DataError::NoDataDir), None) => {}
                (g, w) => panic!("{flag:?} {env:?} {cache:?}: got {g:?}, want {w:?}"),
            }
        };
    check(Some("/flag"), Some("/env"), Some("/cache"), Some("/flag"));
    check(None, Some("/env"), Some("/cache"), Some("/env"));
    check(None, Some(""), Some("/cache"), Some("/cache"));
    check(None, None, Some("/cache"), Some("/cache"));
    check(None, None, None, None);
}

#[test]
fn dataset_names_parse() {
    let ok = |s: &str, want: DatasetName| assert_eq!(s.parse::<DatasetName>().unwrap(), want);
    ok("cifar10", DatasetName::Cifar10);
    ok("CIFAR-10", DatasetName::Cifar10);
    ok("cifar100", DatasetName::Cifar100(Cifar100Labels::Fine));
    ok(
        "cifar100-coarse",
        DatasetName::Cifar100(Cifar100Labels::Coarse),
    );
    ok("synthetic", DatasetName::Synthetic);
    let err = "mnist".parse::<DatasetName>().unwrap_err();
    assert!(
        matches!(&err, DataError::UnknownDataset { name } if name == "mnist"),
        "{err}"
    );
}

/// A data folder that cannot be looked into is reported as such, with the OS's reason, not as
/// a dataset that "does not exist": here a file stands where the folder's parent should be
/// (the error a folder without permission gives a user other than root, who is never refused).
#[test]
fn a_folder_that_cannot_be_looked_into_is_not_called_missing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    fs::write(&file, b"x").unwrap();
    let root = file.join("cifar10");
    for err in [
        load_cifar10(&root, Completeness::AllowSubset).unwrap_err(),
        load_cifar100(&root, Completeness::AllowSubset, Cifar100Labels::Fine).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(
            matches!(err, DataError::Io { .. }),
            "{msg}: not an I/O error"
        );
        assert!(!msg.contains("does not exist"), "{msg}");
        assert!(msg.contains("cannot read"), "{msg}");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            source
                .as_deref()
                .is_some_and(|s| s.contains("Not a directory")),
            "{source:?}"
        );
    }
}
