//! Seeded, portable random draws: every draw in this crate goes through here.
//!
//! A stream is a `ChaCha8Rng` keyed by `splitmix64(seed ^ splitmix64(purpose))` on ChaCha stream
//! `stream`, so e.g. the shuffle of epoch `e` is a pure function of `(seed, e)`. Bounded integers
//! use Lemire's multiply-and-reject on `u32` draws, so results do not depend on `usize` width.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Purpose tag of the per-epoch shuffle stream.
pub(crate) const SHUFFLE: u64 = 0x5348_5546_464c_4531;
/// Purpose tag of the per-(epoch, index) augmentation stream.
pub(crate) const AUGMENT: u64 = 0x4155_474d_454e_5431;
/// Purpose tag of the synthetic dataset's class templates.
pub(crate) const SYNTH_TEMPLATES: u64 = 0x5359_4e54_454d_504c;
/// Purpose tag of the synthetic dataset's per-image draws (train stream 0, test stream 1).
pub(crate) const SYNTH_IMAGES: u64 = 0x5359_4e49_4d41_4745;

/// ChaCha words reserved per image in the augmentation stream.
pub(crate) const AUGMENT_WORDS_PER_INDEX: u128 = 16;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator for `(seed, purpose)` positioned at the start of ChaCha stream `stream`.
pub(crate) fn stream(seed: u64, purpose: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(purpose)));
    rng.set_stream(stream);
    rng
}

/// Uniform integer in `0..n` (`n >= 1`), unbiased (Lemire's method with rejection).
pub(crate) fn below(rng: &mut impl RngCore, n: u32) -> u32 {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u64::from(rng.next_u32()) * u64::from(n);
        if (m as u32) >= threshold {
            return (m >> 32) as u32;
        }
    }
}

/// Uniform `f32` in `[0, 1)` from the top 24 bits of one `u32` draw.
pub(crate) fn unit_f32(rng: &mut impl RngCore) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Standard normal `f32` (Box–Muller on two uniform draws).
pub(crate) fn normal_f32(rng: &mut impl RngCore) -> f32 {
    let u1 = 1.0 - unit_f32(rng); // (0, 1]
    let u2 = unit_f32(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// A permutation of `0..n` by Fisher–Yates with [`below`].
pub(crate) fn permutation(rng: &mut impl RngCore, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = below(rng, (i + 1) as u32) as usize;
        order.swap(i, j);
    }
    order
}
