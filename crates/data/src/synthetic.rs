//! A deterministic CIFAR-shaped dataset generated from a seed, for offline runs and tests.
//!
//! Each class owns a smooth random two-tone 16×16 texture cut to a disc, and a weak colour tint.
//! An image is a smooth random background, one or two distractors (plain soft ellipses of random
//! size and colour), and the class disc at a random position: the complement of the texture's colour
//! with the class texture painted over it (mirrored with probability 1/2) in a colour that mixes the class tint
//! with a random colour, then uniform pixel noise. Colour alone is a weak cue; the texture, found
//! at any position, is what a convnet learns, so translation (and hence crop augmentation and
//! depth) matters. Everything is a pure function of the seed: image `i` of a split depends only on
//! `(seed, split, i)`.

use rand::RngCore;

use crate::dataset::{Dataset, Split, CHANNELS, HEIGHT, IMAGE_BYTES, WIDTH};
use crate::error::{DataError, Result};
use crate::rng;

/// Side of a class or distractor shape in pixels.
const SHAPE: usize = 16;
/// Distractor shapes in the shared pool.
const DISTRACTORS: usize = 8;
/// ChaCha words reserved per image in the image stream.
const WORDS_PER_IMAGE: u128 = 2048;

/// Size and seed of a synthetic dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Seed of every draw.
    pub seed: u64,
    /// Training images.
    pub train_size: usize,
    /// Test images.
    pub test_size: usize,
    /// Classes (2..=100; default 10).
    pub num_classes: usize,
    /// Amplitude of the uniform pixel noise, in [0, 1] units (default 0.06).
    pub noise: f32,
    /// Share of the class's own colour in the colour of its shape, in [0, 1] (default 0.35: a
    /// weak cue, the texture decides). 1 paints every shape of a class in its class colour,
    /// which a small network learns within a few hundred steps.
    pub tint: f32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            train_size: 10_000,
            test_size: 2_000,
            num_classes: 10,
            noise: 0.06,
            tint: 0.35,
        }
    }
}

/// A shape: a 16×16 alpha mask in [0, 1].
type Mask = [f32; SHAPE * SHAPE];

/// Bilinear sample of a `g × g` grid stretched over `size` pixels, at pixel (y, x).
fn bilinear(grid: &[f32], g: usize, size: usize, y: usize, x: usize) -> f32 {
    let scale = (g - 1) as f32 / (size - 1) as f32;
    let (fy, fx) = (y as f32 * scale, x as f32 * scale);
    let (iy, ix) = ((fy as usize).min(g - 2), (fx as usize).min(g - 2));
    let (ty, tx) = (fy - iy as f32, fx - ix as f32);
    let at = |r: usize, c: usize| grid[r * g + c];
    let top = at(iy, ix) * (1.0 - tx) + at(iy, ix + 1) * tx;
    let bottom = at(iy + 1, ix) * (1.0 - tx) + at(iy + 1, ix + 1) * tx;
    top * (1.0 - ty) + bottom * ty
}

/// A class pattern: a 5×5 Gaussian field upsampled to 16×16 through a steep sigmoid (an
/// irregular two-tone texture with holes), cut to a soft disc. Returns (pattern, disc).
fn random_pattern(r: &mut impl RngCore) -> (Mask, Mask) {
    let grid: Vec<f32> = (0..25).map(|_| rng::normal_f32(r)).collect();
    let disc = soft_disc(1.0, 1.0);
    let mut mask = [0f32; SHAPE * SHAPE];
    for y in 0..SHAPE {
        for x in 0..SHAPE {
            let v = bilinear(&grid, 5, SHAPE, y, x);
            mask[y * SHAPE + x] = disc[y * SHAPE + x] / (1.0 + (-8.0 * v).exp());
        }
    }
    (mask, disc)
}

/// A plain soft ellipse with radii `ry`, `rx` (fractions of the half-side): a distractor.
fn soft_disc(ry: f32, rx: f32) -> Mask {
    let mut mask = [0f32; SHAPE * SHAPE];
    let c = (SHAPE - 1) as f32 / 2.0;
    for y in 0..SHAPE {
        for x in 0..SHAPE {
            let d2 = ((y as f32 - c) / (c * ry)).powi(2) + ((x as f32 - c) / (c * rx)).powi(2);
            mask[y * SHAPE + x] = 1.0 / (1.0 + (8.0 * (d2 - 0.8)).exp());
        }
    }
    mask
}

fn random_colour(r: &mut impl RngCore) -> [f32; CHANNELS] {
    std::array::from_fn(|_| rng::unit_f32(r))
}

/// Blends `colour` into `img` (CHW f32) through `mask` at (oy, ox), mirrored if `flip`.
fn paint(
    img: &mut [f32],
    mask: &Mask,
    oy: usize,
    ox: usize,
    flip: bool,
    colour: [f32; CHANNELS],
    alpha: f32,
) {
    for y in 0..SHAPE {
        for x in 0..SHAPE {
            let mx = if flip { SHAPE - 1 - x } else { x };
            let a = alpha * mask[y * SHAPE + mx];
            let p = (oy + y) * WIDTH + ox + x;
            for (c, &col) in colour.iter().enumerate() {
                let v = &mut img[c * HEIGHT * WIDTH + p];
                *v += a * (col - *v);
            }
        }
    }
}

struct Templates {
    classes: Vec<Mask>,
    disc: Mask,
    tints: Vec<[f32; CHANNELS]>,
    distractors: Vec<Mask>,
}

fn image(t: &Templates, cfg: &SyntheticConfig, r: &mut impl RngCore, out: &mut [u8]) -> u32 {
    let k = cfg.num_classes;
    let label = rng::below(r, k as u32);
    let mut img = [0f32; IMAGE_BYTES];
    // Background: a 3×3 grid of random colours, bilinear over the image, dimmed or brightened.
    let grid: Vec<[f32; CHANNELS]> = (0..9).map(|_| random_colour(r)).collect();
    for c in 0..CHANNELS {
        let g: Vec<f32> = grid.iter().map(|col| col[c]).collect();
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                // Halfway to grey, so objects stand out from the background.
                img[c * HEIGHT * WIDTH + y * WIDTH + x] =
                    0.25 + 0.5 * bilinear(&g, 3, HEIGHT, y, x);
            }
        }
    }
    let span = (WIDTH - SHAPE + 1) as u32;
    let n_distractors = 1 + rng::below(r, 2) as usize;
    for _ in 0..n_distractors {
        let d = &t.distractors[rng::below(r, DISTRACTORS as u32) as usize];
        let (oy, ox) = (rng::below(r, span) as usize, rng::below(r, span) as usize);
        let flip = r.next_u32() >> 31 == 1;
        let colour = random_colour(r);
        let alpha = 0.5 + 0.4 * rng::unit_f32(r);
        paint(&mut img, d, oy, ox, flip, colour, alpha);
    }
    let (oy, ox) = (rng::below(r, span) as usize, rng::below(r, span) as usize);
    let flip = r.next_u32() >> 31 == 1;
    let random = random_colour(r);
    let tint = t.tints[label as usize];
    let colour: [f32; CHANNELS] =
        std::array::from_fn(|c| cfg.tint * tint[c] + (1.0 - cfg.tint) * random[c]);
    // The disc is the complement of the texture colour, so the texture always shows.
    let base = colour.map(|v| 1.0 - v);
    let alpha = 0.75 + 0.25 * rng::unit_f32(r);
    paint(&mut img, &t.disc, oy, ox, false, base, alpha);
    paint(
        &mut img,
        &t.classes[label as usize],
        oy,
        ox,
        flip,
        colour,
        alpha,
    );
    // Noise: one byte of a u32 draw per value, uniform in [-noise, noise].
    let scale = 2.0 * cfg.noise / 255.0;
    for chunk in img.chunks_mut(4) {
        let w = r.next_u32().to_le_bytes();
        for (v, b) in chunk.iter_mut().zip(w) {
            *v += f32::from(b) * scale - cfg.noise;
        }
    }
    for (o, v) in out.iter_mut().zip(img) {
        *o = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    }
    label
}

fn split(t: &Templates, cfg: &SyntheticConfig, stream: u64, n: usize) -> Result<Split> {
    let mut images = vec![0u8; n * IMAGE_BYTES];
    let mut labels = Vec::with_capacity(n);
    let mut r = rng::stream(cfg.seed, rng::SYNTH_IMAGES, stream);
    for (i, out) in images.chunks_exact_mut(IMAGE_BYTES).enumerate() {
        r.set_word_pos(i as u128 * WORDS_PER_IMAGE);
        labels.push(image(t, cfg, &mut r, out));
    }
    Split::new(images, labels)
}

/// Generates the synthetic dataset described by `cfg` (name "synthetic", classes named
/// `shape0`, `shape1`, ...).
pub fn load_synthetic(cfg: &SyntheticConfig) -> Result<Dataset> {
    if !(2..=100).contains(&cfg.num_classes) {
        return Err(DataError::InvalidConfig {
            field: "synthetic.num_classes",
            value: cfg.num_classes.to_string(),
            reason: "must be between 2 and 100",
        });
    }
    if !(0.0..=1.0).contains(&cfg.noise) {
        return Err(DataError::InvalidConfig {
            field: "synthetic.noise",
            value: cfg.noise.to_string(),
            reason: "must be in [0, 1]",
        });
    }
    if !(0.0..=1.0).contains(&cfg.tint) {
        return Err(DataError::InvalidConfig {
            field: "synthetic.tint",
            value: cfg.tint.to_string(),
            reason: "must be in [0, 1]",
        });
    }
    if cfg.train_size == 0
        || cfg.train_size > u32::MAX as usize
        || cfg.test_size > u32::MAX as usize
    {
        return Err(DataError::InvalidConfig {
            field: "synthetic.train_size",
            value: cfg.train_size.to_string(),
            reason: "must be at least 1 (and both sizes below 2^32)",
        });
    }
    let mut r = rng::stream(cfg.seed, rng::SYNTH_TEMPLATES, 0);
    let classes = (0..cfg.num_classes)
        .map(|_| random_pattern(&mut r).0)
        .collect();
    let tints = (0..cfg.num_classes)
        .map(|_| random_colour(&mut r))
        .collect();
    let distractors = (0..DISTRACTORS)
        .map(|_| {
            soft_disc(
                0.4 + 0.6 * rng::unit_f32(&mut r),
                0.4 + 0.6 * rng::unit_f32(&mut r),
            )
        })
        .collect();
    let t = Templates {
        classes,
        disc: soft_disc(1.0, 1.0),
        tints,
        distractors,
    };
    let names = (0..cfg.num_classes).map(|k| format!("shape{k}")).collect();
    Dataset::new(
        "synthetic",
        split(&t, cfg, 0, cfg.train_size)?,
        split(&t, cfg, 1, cfg.test_size)?,
        names,
    )
}
