//! Seeded, resumable batching with background prefetch.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use candle_core::{DType, Device, Tensor};

use crate::augment::{Augment, CropFlip, Element, Normalize, NormalizeTable};
use crate::dataset::{Split, CHANNELS, HEIGHT, IMAGE_BYTES, WIDTH};
use crate::error::{DataError, Result};
use crate::rng;

/// How a [`Loader`] batches a split.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Visit the split in a seeded random order that changes every epoch.
    pub shuffle: bool,
    /// Drop the last partial batch (off by default: 50 000 images at 128 give 391 steps).
    pub drop_last: bool,
    /// Random crop + flip, or `None` for the plain images.
    pub augment: Option<Augment>,
    /// Per-channel normalization (default: CIFAR-10's statistics).
    pub normalize: Normalize,
    /// Image dtype: `F32` or `F64`.
    pub dtype: DType,
    /// Seed of the shuffle and the augmentation.
    pub seed: u64,
    /// Batches prepared ahead by the background thread (at least 1).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Training defaults: shuffled, standard augmentation, CIFAR-10 normalization, f32, keep the
    /// last partial batch, 2 batches prefetched.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            shuffle: true,
            drop_last: false,
            augment: Some(Augment::STANDARD),
            normalize: Normalize::CIFAR10,
            dtype: DType::F32,
            seed,
            prefetch: 2,
        }
    }

    /// Evaluation defaults: in order, no augmentation, CIFAR-10 normalization, f32.
    pub fn eval(batch_size: usize) -> Self {
        Self {
            shuffle: false,
            augment: None,
            ..Self::train(batch_size, 0)
        }
    }

    /// Same settings with another dtype.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
}

/// One batch: images `(N, 3, 32, 32)` in the configured dtype, labels `(N,)` as `u32`, and the
/// split indices the rows came from.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Normalized (and augmented) images.
    pub images: Tensor,
    /// Class labels.
    pub labels: Tensor,
    /// Index in the split of each row.
    pub indices: Vec<usize>,
}

/// Batches of one split on one device. The order of epoch `e` is a pure function of
/// `(seed, e)` and the augmentation of image `i` in epoch `e` a pure function of `(seed, e, i)`,
/// so any epoch can be replayed alone (e.g. after resuming).
#[derive(Clone, Debug)]
pub struct Loader {
    split: Split,
    config: LoaderConfig,
    device: Device,
}

impl Loader {
    /// A loader over `split` (shared, not copied) producing tensors on `device`.
    pub fn new(split: &Split, config: LoaderConfig, device: &Device) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::InvalidConfig {
                field: "batch_size",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if config.prefetch == 0 {
            return Err(DataError::InvalidConfig {
                field: "prefetch",
                value: "0".into(),
                reason: "must be at least 1 batch",
            });
        }
        if !matches!(config.dtype, DType::F32 | DType::F64) {
            return Err(DataError::InvalidConfig {
                field: "dtype",
                value: format!("{:?}", config.dtype),
                reason: "images are produced as f32 or f64",
            });
        }
        if split.len() > u32::MAX as usize {
            return Err(DataError::InvalidConfig {
                field: "split.len()",
                value: split.len().to_string(),
                reason: "a split holds at most 2^32 - 1 images",
            });
        }
        config.normalize.validate()?;
        if let Some(a) = &config.augment {
            a.validate()?;
        }
        Ok(Self {
            split: split.clone(),
            config,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The device every batch is created on (each batch is copied there once, whole).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of images in the split.
    pub fn num_images(&self) -> usize {
        self.split.len()
    }

    /// Batches per epoch: `ceil(n / batch_size)`, or `floor` with `drop_last`.
    pub fn steps_per_epoch(&self) -> usize {
        let (n, b) = (self.split.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order in which epoch `epoch` visits the split (identity without shuffle).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        if self.config.shuffle {
            let mut r = rng::stream(self.config.seed, rng::SHUFFLE, epoch);
            rng::permutation(&mut r, self.split.len())
        } else {
            (0..self.split.len()).collect()
        }
    }

    /// The augmentation image `index` gets in `epoch` (identity without augmentation).
    pub fn crop_flip(&self, epoch: u64, index: usize) -> CropFlip {
        match &self.config.augment {
            Some(a) => a.draw(self.config.seed, epoch, index),
            None => CropFlip::IDENTITY,
        }
    }

    /// Builds the batch of the given split indices in `epoch`, on the calling thread.
    pub fn batch_of(&self, epoch: u64, indices: &[usize]) -> Result<Batch> {
        match self.config.dtype {
            DType::F64 => build::<f64>(
                self,
                &NormalizeTable::new(&self.config.normalize),
                epoch,
                indices,
            ),
            _ => build::<f32>(
                self,
                &NormalizeTable::new(&self.config.normalize),
                epoch,
                indices,
            ),
        }
    }

    /// The batches of `epoch`, prepared by a background thread `prefetch` batches ahead.
    /// Dropping the iterator early stops the thread.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        let steps = self.steps_per_epoch();
        let (tx, rx) = sync_channel(self.config.prefetch);
        let loader = self.clone();
        let handle = std::thread::spawn(move || {
            let order = loader.epoch_order(epoch);
            let b = loader.config.batch_size;
            match loader.config.dtype {
                DType::F64 => {
                    let table = NormalizeTable::<f64>::new(&loader.config.normalize);
                    for s in 0..steps {
                        let idx = &order[s * b..((s + 1) * b).min(order.len())];
                        if tx.send(build(&loader, &table, epoch, idx)).is_err() {
                            return;
                        }
                    }
                }
                _ => {
                    let table = NormalizeTable::<f32>::new(&loader.config.normalize);
                    for s in 0..steps {
                        let idx = &order[s * b..((s + 1) * b).min(order.len())];
                        if tx.send(build(&loader, &table, epoch, idx)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        EpochBatches {
            rx: Some(rx),
            handle: Some(handle),
            remaining: steps,
            epoch,
        }
    }
}

fn build<T: Element>(
    loader: &Loader,
    table: &NormalizeTable<T>,
    epoch: u64,
    indices: &[usize],
) -> Result<Batch> {
    let n = indices.len();
    let zero = T::from_f64(0.0);
    let mut images = vec![zero; n * IMAGE_BYTES];
    let mut labels = Vec::with_capacity(n);
    for (out, &i) in images.chunks_exact_mut(IMAGE_BYTES).zip(indices) {
        table.transform(loader.split.image(i), loader.crop_flip(epoch, i), out);
        labels.push(loader.split.label(i));
    }
    let images = Tensor::from_vec(images, (n, CHANNELS, HEIGHT, WIDTH), &loader.device)?;
    let labels = Tensor::from_vec(labels, n, &loader.device)?;
    Ok(Batch {
        images,
        labels,
        indices: indices.to_vec(),
    })
}

/// Iterator over one epoch's batches (see [`Loader::epoch`]).
#[derive(Debug)]
pub struct EpochBatches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
    epoch: u64,
}

impl Iterator for EpochBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(batch) => {
                self.remaining -= 1;
                Some(batch)
            }
            Err(_) => {
                self.remaining = 0;
                self.rx = None;
                Some(Err(DataError::PrefetchStopped { epoch: self.epoch }))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for EpochBatches {}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Closing the channel first makes a worker blocked on `send` return.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
