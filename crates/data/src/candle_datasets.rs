//! `TryFrom<candle_datasets::vision::Dataset>`: candle's own CIFAR-10 loaders
//! (`cifar::load_dir`, `cifar::load`) into a [`Dataset`] (feature `candle-datasets`).

use candle_core::{DType, Device, Tensor};

use crate::dataset::{Dataset, Split, CHANNELS, HEIGHT, IMAGE_BYTES, WIDTH};
use crate::error::{DataError, Result};

/// How far `v · 255` of an f32 pixel may sit from an integer: candle-datasets stores `u8 / 255`
/// in f32, whose relative rounding error 2⁻²⁴ moves `v · 255` by at most 255 · 2⁻²⁴ ≈ 1.5e-5.
const PIXEL_TOLERANCE: f64 = 1e-3;

/// Images converted at a time.
const CHUNK_IMAGES: usize = 1000;

/// Converts candle-datasets' tensors (images `(N, 3, 32, 32)` as `u8 / 255` in f32 or f64, or
/// as `u8`; labels `(N,)` of any integer dtype below `labels`) into a [`Dataset`] named
/// `candle-datasets` whose class names are the label numbers (`"0"`, `"1"`, …); rename it with
/// [`Dataset::new`] from its splits. The conversion is lossless: a pixel that is not a multiple
/// of 1/255, an image of another shape (MNIST's `(N, 784)`) or a label out of range is a
/// [`DataError::CandleDataset`] that names the tensor.
impl TryFrom<&candle_datasets::vision::Dataset> for Dataset {
    type Error = DataError;

    fn try_from(data: &candle_datasets::vision::Dataset) -> Result<Self> {
        let train = split(
            ("train_images", &data.train_images),
            ("train_labels", &data.train_labels),
            data.labels,
        )?;
        let test = split(
            ("test_images", &data.test_images),
            ("test_labels", &data.test_labels),
            data.labels,
        )?;
        let class_names = (0..data.labels).map(|k| k.to_string()).collect();
        Dataset::new("candle-datasets", train, test, class_names)
    }
}

/// The same conversion, consuming the dataset.
impl TryFrom<candle_datasets::vision::Dataset> for Dataset {
    type Error = DataError;

    fn try_from(data: candle_datasets::vision::Dataset) -> Result<Self> {
        Dataset::try_from(&data)
    }
}

/// One split from its named image and label tensors.
fn split(
    (images_name, images): (&'static str, &Tensor),
    (labels_name, labels): (&'static str, &Tensor),
    classes: usize,
) -> Result<Split> {
    let bad = |tensor: &'static str, reason: String| DataError::CandleDataset { tensor, reason };
    let n = match images.dims() {
        [n, CHANNELS, HEIGHT, WIDTH] => *n,
        dims => {
            return Err(bad(
                images_name,
                format!(
                    "has shape {dims:?}, but explr-data holds 3×32×32 RGB images, shape \
                     (N, 3, 32, 32); resize or pad other images before converting"
                ),
            ))
        }
    };
    if labels.dims() != [n] {
        return Err(bad(
            labels_name,
            format!(
                "has shape {:?}, expected ({n},): one label per image",
                labels.dims()
            ),
        ));
    }
    let images = images.to_device(&Device::Cpu)?;
    let pixels: Vec<u8> = match images.dtype() {
        DType::U8 => images.flatten_all()?.to_vec1()?,
        dtype if dtype.is_float() => {
            let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
            // In chunks of images, so that the f64 copy stays small (CIFAR-10's training
            // split is 153.6 million values).
            for first in (0..n).step_by(CHUNK_IMAGES) {
                let chunk = images.narrow(0, first, CHUNK_IMAGES.min(n - first))?;
                let values: Vec<f64> = chunk.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
                for (i, v) in values.into_iter().enumerate() {
                    let level = (v * 255.0).round();
                    if !(0.0..=255.0).contains(&level)
                        || (v * 255.0 - level).abs() > PIXEL_TOLERANCE
                    {
                        return Err(bad(
                            images_name,
                            format!(
                                "element {} is {v}, which is not a u8 value divided by 255; \
                                 convert images as candle-datasets loads them (values k/255 in \
                                 [0, 1]), before any normalization or augmentation",
                                first * IMAGE_BYTES + i
                            ),
                        ));
                    }
                    pixels.push(level as u8);
                }
            }
            pixels
        }
        other => {
            return Err(bad(
                images_name,
                format!("has dtype {other:?}; expected u8, or a float dtype holding u8/255"),
            ))
        }
    };
    let labels: Vec<u32> = match labels.dtype() {
        dtype if dtype.is_int() => labels
            .to_device(&Device::Cpu)?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                u32::try_from(l)
                    .ok()
                    .filter(|&l| (l as usize) < classes)
                    .ok_or_else(|| {
                        bad(
                            labels_name,
                            format!(
                                "element {i} is {l}, outside 0..{classes} (the dataset's \
                                 `labels` count)"
                            ),
                        )
                    })
            })
            .collect::<Result<_>>()?,
        other => {
            return Err(bad(
                labels_name,
                format!("has dtype {other:?}; expected an integer dtype"),
            ))
        }
    };
    Split::new(pixels, labels)
}
