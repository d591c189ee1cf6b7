//! `TryFrom<candle_datasets::vision::Dataset>` (feature `candle-datasets`): CIFAR-10 files read
//! by candle-datasets' own `cifar::load_dir` convert losslessly; what explr-data cannot hold is
//! a typed error naming the tensor.
//!
//! `load_dir` reads exactly 10 000 records from each of the six files, so the files are full
//! size; they are sparse (`set_len`), all-zero records except a few written with known bytes.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_datasets::vision::Dataset as CandleDataset;
use explr_data::{DataError, Dataset, IMAGE_BYTES};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const RECORDS: usize = 10_000;
const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records written with content in every file; the others stay zero (label 0, black image).
const WRITTEN: [usize; 3] = [0, 4_321, RECORDS - 1];

/// The label and image bytes of record `record` of file `file`: every byte value occurs.
fn record(file: usize, record: usize) -> (u8, Vec<u8>) {
    let label = ((3 * file + record) % 10) as u8;
    let image = (0..IMAGE_BYTES)
        .map(|i| ((i * 7 + file * 13 + record) % 256) as u8)
        .collect();
    (label, image)
}

fn write_cifar10(dir: &Path) -> std::io::Result<()> {
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (file, name) in names.iter().enumerate() {
        let mut f = File::create(dir.join(name))?;
        f.set_len((RECORDS * RECORD_BYTES) as u64)?;
        for r in WRITTEN {
            let (label, image) = record(file, r);
            f.seek(SeekFrom::Start((r * RECORD_BYTES) as u64))?;
            f.write_all(&[label])?;
            f.write_all(&image)?;
        }
    }
    Ok(())
}

#[test]
fn cifar10_from_candle_datasets_load_dir_converts_losslessly() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_cifar10(dir.path())?;
    let candle = candle_datasets::vision::cifar::load_dir(dir.path())?;
    assert_eq!(
        candle.train_images.dtype(),
        DType::F32,
        "candle-datasets gives u8/255 in f32"
    );
    let data = Dataset::try_from(candle)?;

    assert_eq!(
        (data.train().len(), data.test().len()),
        (5 * RECORDS, RECORDS)
    );
    assert_eq!(data.name(), "candle-datasets");
    assert_eq!(data.num_classes(), 10);
    assert_eq!(data.class_names()[3], "3");
    for file in 0..6 {
        let (split, offset) = match file {
            5 => (data.test(), 0),
            _ => (data.train(), file * RECORDS),
        };
        for r in WRITTEN {
            let (label, image) = record(file, r);
            assert_eq!(
                split.label(offset + r),
                u32::from(label),
                "file {file} record {r}"
            );
            assert_eq!(
                split.image(offset + r),
                image.as_slice(),
                "file {file} record {r}"
            );
        }
        let untouched = offset + 1;
        assert_eq!(split.label(untouched), 0);
        assert!(split.image(untouched).iter().all(|&v| v == 0));
    }
    Ok(())
}

/// A two-image candle-datasets dataset with these train tensors (the test split is valid).
fn with_train(images: Tensor, labels: Tensor) -> candle_core::Result<CandleDataset> {
    let dev = Device::Cpu;
    Ok(CandleDataset {
        train_images: images,
        train_labels: labels,
        test_images: Tensor::zeros((2, 3, 32, 32), DType::F32, &dev)?,
        test_labels: Tensor::new(&[0u8, 1], &dev)?,
        labels: 10,
    })
}

fn check_err(data: CandleDataset, tensor: &str, says: &str) {
    match Dataset::try_from(&data) {
        Err(DataError::CandleDataset { tensor: t, reason }) => {
            assert_eq!(t, tensor, "{reason}");
            assert!(reason.contains(says), "`{reason}` lacks `{says}`");
        }
        other => panic!("expected a CandleDataset error on {tensor}, got {other:?}"),
    }
}

#[test]
fn what_explr_data_cannot_hold_is_a_typed_error() -> TestResult {
    let dev = Device::Cpu;
    let labels = Tensor::new(&[1u8, 2], &dev)?;
    let image = |v: f64| Tensor::full(v as f32, (2, 3, 32, 32), &dev);
    // MNIST from candle-datasets: (N, 784) grey images.
    let mnist = Tensor::zeros((2, 784), DType::F32, &dev)?;
    check_err(
        with_train(mnist, labels.clone())?,
        "train_images",
        "has shape [2, 784]",
    );
    // Normalized pixels are no longer k/255.
    check_err(
        with_train(image(-0.5)?, labels.clone())?,
        "train_images",
        "element 0 is -0.5",
    );
    check_err(
        with_train(image(0.3)?, labels.clone())?,
        "train_images",
        "not a u8 value",
    );
    let bad_label = Tensor::new(&[1u8, 10], &dev)?;
    check_err(
        with_train(image(0.0)?, bad_label)?,
        "train_labels",
        "element 1 is 10, outside 0..10",
    );
    let float_labels = Tensor::new(&[1f32, 2.0], &dev)?;
    check_err(
        with_train(image(0.0)?, float_labels)?,
        "train_labels",
        "integer dtype",
    );
    let one_label = Tensor::new(&[1u8], &dev)?;
    check_err(
        with_train(image(0.0)?, one_label)?,
        "train_labels",
        "one label per image",
    );

    // u8 images and i64 labels are taken as they are.
    let pixels = Tensor::full(200u8, (2, 3, 32, 32), &dev)?;
    let data = Dataset::try_from(with_train(pixels, Tensor::new(&[9i64, 0], &dev)?)?)?;
    assert_eq!((data.train().label(0), data.train().image(1)[5]), (9, 200));
    // 51/255 in f32 is 0.2 to f32 rounding: read back as 51.
    let data = Dataset::try_from(with_train(image(51.0 / 255.0)?, labels)?)?;
    assert!(data.train().images().iter().all(|&v| v == 51));
    Ok(())
}
