//! Standard CIFAR augmentation (zero padding + random crop, random horizontal flip) and
//! per-channel normalization, done as one table lookup per output value.
//!
//! Order, as torchvision's `RandomCrop(32, padding=4)`, `RandomHorizontalFlip()`, `ToTensor()`,
//! `Normalize(mean, std)`: the `u8` image is padded with 0, cropped, flipped, then each value `v`
//! becomes `(v / 255 - mean[c]) / std[c]`. A padded pixel therefore becomes `-mean[c] / std[c]`.

use rand::RngCore;

use crate::dataset::{CHANNELS, HEIGHT, IMAGE_BYTES, WIDTH};
use crate::error::{DataError, Result};
use crate::rng;

/// Per-channel normalization `(v / 255 - mean[c]) / std[c]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    /// Per-channel mean of the [0, 1]-scaled pixels (R, G, B).
    pub mean: [f64; CHANNELS],
    /// Per-channel standard deviation of the [0, 1]-scaled pixels (R, G, B).
    pub std: [f64; CHANNELS],
}

impl Normalize {
    /// CIFAR-10's statistics: mean 0.4914/0.4822/0.4465, std 0.2470/0.2435/0.2616 (the default).
    pub const CIFAR10: Self = Self {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };

    /// No normalization beyond scaling to [0, 1].
    pub const UNIT: Self = Self {
        mean: [0.0; CHANNELS],
        std: [1.0; CHANNELS],
    };

    /// Errors unless every std is finite and positive and every mean finite.
    pub fn validate(&self) -> Result<()> {
        for c in 0..CHANNELS {
            if !(self.std[c].is_finite() && self.std[c] > 0.0) {
                return Err(DataError::InvalidConfig {
                    field: "normalize.std",
                    value: format!("{:?}", self.std),
                    reason: "every channel's std must be finite and > 0",
                });
            }
            if !self.mean[c].is_finite() {
                return Err(DataError::InvalidConfig {
                    field: "normalize.mean",
                    value: format!("{:?}", self.mean),
                    reason: "every channel's mean must be finite",
                });
            }
        }
        Ok(())
    }

    /// The normalized value of byte `v` in channel `c`, in f64.
    pub fn apply(&self, c: usize, v: u8) -> f64 {
        (f64::from(v) / 255.0 - self.mean[c]) / self.std[c]
    }
}

impl Default for Normalize {
    fn default() -> Self {
        Self::CIFAR10
    }
}

/// Random-crop-with-padding and horizontal-flip settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding on each side before the random 32×32 crop (the paper: 4).
    pub padding: usize,
    /// Flip horizontally with probability 1/2.
    pub hflip: bool,
}

impl Augment {
    /// 4-pixel padding + random crop, random horizontal flip.
    pub const STANDARD: Self = Self {
        padding: 4,
        hflip: true,
    };

    /// Errors if the padding exceeds 32.
    pub fn validate(&self) -> Result<()> {
        if self.padding > WIDTH {
            return Err(DataError::InvalidConfig {
                field: "augment.padding",
                value: self.padding.to_string(),
                reason: "padding must be at most 32 pixels",
            });
        }
        Ok(())
    }

    /// The crop and flip of image `index` in `epoch` under `seed`: a pure function of the
    /// four, so a resumed run redraws exactly the same augmentation.
    pub fn draw(&self, seed: u64, epoch: u64, index: usize) -> CropFlip {
        let mut r = rng::stream(seed, rng::AUGMENT, epoch);
        r.set_word_pos(index as u128 * rng::AUGMENT_WORDS_PER_INDEX);
        let span = (2 * self.padding + 1) as u32;
        let dx = rng::below(&mut r, span) as usize;
        let dy = rng::below(&mut r, span) as usize;
        let flip = self.hflip && (r.next_u32() >> 31) == 1;
        CropFlip {
            padding: self.padding,
            dx,
            dy,
            flip,
        }
    }
}

/// One concrete augmentation: crop the zero-padded image at column `dx`, row `dy` (both in
/// `0..=2*padding`, in padded coordinates), then mirror left-right if `flip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropFlip {
    /// Padding the offsets refer to.
    pub padding: usize,
    /// Column of the crop's left edge in the padded image.
    pub dx: usize,
    /// Row of the crop's top edge in the padded image.
    pub dy: usize,
    /// Mirror left-right after cropping.
    pub flip: bool,
}

impl CropFlip {
    /// The identity: no shift, no flip.
    pub const IDENTITY: Self = Self {
        padding: 0,
        dx: 0,
        dy: 0,
        flip: false,
    };
}

/// An output element type of the loader: `f32` or `f64` (conversion from f64 rounds to nearest).
pub trait Element: candle_core::WithDType + Send + Sync {}

impl Element for f32 {}
impl Element for f64 {}

/// Per-channel lookup table byte → normalized value, computed once per loader.
#[derive(Clone, Debug)]
pub struct NormalizeTable<T> {
    table: Vec<[T; 256]>,
}

impl<T: Element> NormalizeTable<T> {
    /// Tabulates `norm` (values computed in f64, then rounded to `T`).
    pub fn new(norm: &Normalize) -> Self {
        let table = (0..CHANNELS)
            .map(|c| std::array::from_fn(|v| T::from_f64(norm.apply(c, v as u8))))
            .collect();
        Self { table }
    }

    /// Writes the augmented, normalized image `src` (CHW `u8`, [`IMAGE_BYTES`] long) into `out`
    /// (CHW, [`IMAGE_BYTES`] long). Panics if a length is wrong or the crop lies outside the
    /// padded image (both are bugs in the caller; [`Augment::draw`] never produces one).
    pub fn transform(&self, src: &[u8], crop: CropFlip, out: &mut [T]) {
        assert_eq!(src.len(), IMAGE_BYTES);
        assert_eq!(out.len(), IMAGE_BYTES);
        assert!(crop.dx <= 2 * crop.padding && crop.dy <= 2 * crop.padding);
        let pad = crop.padding as isize;
        for c in 0..CHANNELS {
            let lut = &self.table[c];
            let zero = lut[0];
            let plane = &src[c * HEIGHT * WIDTH..(c + 1) * HEIGHT * WIDTH];
            let out_plane = &mut out[c * HEIGHT * WIDTH..(c + 1) * HEIGHT * WIDTH];
            for y in 0..HEIGHT {
                let row_out = &mut out_plane[y * WIDTH..(y + 1) * WIDTH];
                let sy = y as isize + crop.dy as isize - pad;
                if !(0..HEIGHT as isize).contains(&sy) {
                    row_out.fill(zero);
                    continue;
                }
                let row = &plane[sy as usize * WIDTH..(sy as usize + 1) * WIDTH];
                let shift = crop.dx as isize - pad;
                for (x, o) in row_out.iter_mut().enumerate() {
                    let cx = if crop.flip { WIDTH - 1 - x } else { x };
                    let sx = cx as isize + shift;
                    *o = if (0..WIDTH as isize).contains(&sx) {
                        lut[row[sx as usize] as usize]
                    } else {
                        zero
                    };
                }
            }
        }
    }
}
