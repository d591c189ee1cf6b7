//! In-memory datasets: images kept once as `u8` in CIFAR's channel-plane order.

use std::sync::Arc;

use crate::error::{DataError, Result};

/// Image channels (RGB).
pub const CHANNELS: usize = 3;
/// Image height in pixels.
pub const HEIGHT: usize = 32;
/// Image width in pixels.
pub const WIDTH: usize = 32;
/// Bytes per image: three 32×32 planes (R, then G, then B), each row-major.
pub const IMAGE_BYTES: usize = CHANNELS * HEIGHT * WIDTH;

/// One split (train or test): `len` images of [`IMAGE_BYTES`] bytes each, in CHW order, and one
/// label per image. Cloning is cheap (the buffers are shared), so loaders never copy the data.
#[derive(Clone, Debug)]
pub struct Split {
    images: Arc<[u8]>,
    labels: Arc<[u32]>,
}

impl Split {
    /// Builds a split from CHW `u8` images laid end to end and their labels.
    ///
    /// Errors if `images.len()` is not `labels.len() * IMAGE_BYTES`.
    pub fn new(images: Vec<u8>, labels: Vec<u32>) -> Result<Self> {
        if images.len() != labels.len() * IMAGE_BYTES {
            return Err(DataError::InvalidConfig {
                field: "images.len()",
                value: images.len().to_string(),
                reason: "must be labels.len() * 3072 (one 3×32×32 u8 image per label)",
            });
        }
        Ok(Self {
            images: images.into(),
            labels: labels.into(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` as [`IMAGE_BYTES`] bytes: plane R, plane G, plane B, each 32 rows of 32 pixels.
    /// Panics if `i >= len()` (an indexing bug, like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// Label of image `i`. Panics if `i >= len()`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// All images, end to end.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Per-channel mean of the pixel values scaled to [0, 1] (compare with the normalization
    /// constants, e.g. CIFAR-10's 0.4914/0.4822/0.4465).
    pub fn channel_means(&self) -> [f64; CHANNELS] {
        let mut sums = [0u64; CHANNELS];
        for img in self.images.chunks_exact(IMAGE_BYTES) {
            for (c, plane) in img.chunks_exact(HEIGHT * WIDTH).enumerate() {
                sums[c] += plane.iter().map(|&v| u64::from(v)).sum::<u64>();
            }
        }
        let count = (self.len() * HEIGHT * WIDTH).max(1) as f64;
        sums.map(|s| s as f64 / 255.0 / count)
    }

    /// Per-channel (population) standard deviation of the pixel values scaled to [0, 1].
    pub fn channel_stds(&self) -> [f64; CHANNELS] {
        let means = self.channel_means();
        let mut sq = [0f64; CHANNELS];
        for img in self.images.chunks_exact(IMAGE_BYTES) {
            for (c, plane) in img.chunks_exact(HEIGHT * WIDTH).enumerate() {
                sq[c] += plane
                    .iter()
                    .map(|&v| (f64::from(v) / 255.0 - means[c]).powi(2))
                    .sum::<f64>();
            }
        }
        let count = (self.len() * HEIGHT * WIDTH).max(1) as f64;
        sq.map(|s| (s / count).sqrt())
    }
}

/// A dataset: train and test splits plus class names (label `k` is `class_names()[k]`).
#[derive(Clone, Debug)]
pub struct Dataset {
    name: String,
    train: Split,
    test: Split,
    class_names: Vec<String>,
}

impl Dataset {
    /// Assembles a dataset. Errors if a label is `>= class_names.len()`.
    pub fn new(
        name: impl Into<String>,
        train: Split,
        test: Split,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let n = class_names.len();
        if let Some(&bad) = train
            .labels()
            .iter()
            .chain(test.labels())
            .find(|&&l| l as usize >= n)
        {
            return Err(DataError::InvalidConfig {
                field: "label",
                value: bad.to_string(),
                reason: "every label must be below the number of class names",
            });
        }
        Ok(Self {
            name: name.into(),
            train,
            test,
            class_names,
        })
    }

    /// A short name, e.g. "cifar10", "cifar100", "synthetic".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The training split.
    pub fn train(&self) -> &Split {
        &self.train
    }

    /// The test split.
    pub fn test(&self) -> &Split {
        &self.test
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Class names, indexed by label.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
}
