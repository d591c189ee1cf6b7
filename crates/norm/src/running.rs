//! BatchNorm's evaluation with running statistics in one pass over memory (THEORY.md §1
//! layers): `y = (x − μ̂)/σ̂·γ + β`, then the ReLU when it is fused, with μ̂ the running mean and
//! σ̂ = √(running variance + eps) per channel. The composite path makes four or five passes
//! (subtract, divide, scale, shift, ReLU), each a candle op on one thread; this is one parallel
//! pass with the same operations in the same order for every element, so the same bits.

use rayon::prelude::*;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use crate::fused::three_storages;

/// Elements per parallel task, at least (Rayon's overhead is not worth it below this).
const MIN_TASK: usize = 1 << 15;

/// The op: `x` (N, C, H, W), `stats` (2, C) = (μ̂, σ̂), `affine` (2, C) = (γ, β), where the
/// flags say which of γ and β the layer has (one it lacks is skipped, not applied as 1 or 0:
/// `−0 + 0` is `+0`).
pub(crate) struct RunningNorm {
    pub channels: usize,
    pub plane: usize,
    pub weight: bool,
    pub bias: bool,
    pub relu: bool,
}

/// The element types the kernel runs on.
trait Element:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Default
    + std::ops::Sub<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Add<Output = Self>
{
}
impl Element for f32 {}
impl Element for f64 {}

impl RunningNorm {
    fn run<T: Element>(&self, x: &[T], stats: &[T], affine: &[T]) -> Vec<T> {
        let (c, s) = (self.channels, self.plane);
        let zero = T::default();
        let mut y = Vec::with_capacity(x.len());
        y.spare_capacity_mut()
            .par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .with_min_len(MIN_TASK.div_ceil(s))
            .enumerate()
            .for_each(|(p, (out, x))| {
                let ch = p % c;
                let (mean, std) = (stats[ch], stats[c + ch]);
                let (gamma, beta) = (affine[ch], affine[c + ch]);
                for (o, &v) in out.iter_mut().zip(x) {
                    // The composite path's ops, in its order: sub, div, mul, add, ReLU
                    // (`v < 0 ? 0 : v`, as explr_nn::relu, which keeps −0 and NaN).
                    let mut v = (v - mean) / std;
                    if self.weight {
                        v = v * gamma;
                    }
                    if self.bias {
                        v = v + beta;
                    }
                    if self.relu && v < zero {
                        v = zero;
                    }
                    o.write(v);
                }
            });
        // SAFETY: the chunks partition the first `x.len()` slots and each wrote all of its own.
        unsafe { y.set_len(x.len()) };
        y
    }
}

impl CustomOp3 for RunningNorm {
    fn name(&self) -> &'static str {
        "explr-norm-running"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        three_storages(
            ["x", "statistics", "affine"],
            [(s1, l1), (s2, l2), (s3, l3)],
            |[x, st, af]| self.run(x, st, af),
            |[x, st, af]| self.run(x, st, af),
        )
    }

    /// The gradients of `x` and of (γ, β), with candle's ops (evaluation-mode backward is rare:
    /// a model fine-tuned with frozen statistics); the statistics are buffers and get none, as
    /// in PyTorch.
    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = (1, self.channels, 1, 1);
        let dz = if self.relu {
            // The gradient passes where the output is positive (explr_nn::relu's rule).
            dy.mul(&y.gt(&y.zeros_like()?)?.to_dtype(dy.dtype())?)?
        } else {
            dy.clone()
        };
        let std = stats.get(1)?.reshape(shape)?;
        let xhat = x
            .broadcast_sub(&stats.get(0)?.reshape(shape)?)?
            .broadcast_div(&std)?;
        let dx = match self.weight {
            true => dz.broadcast_mul(&affine.get(0)?.reshape(shape)?)?,
            false => dz.clone(),
        }
        .broadcast_div(&std)?;
        let per_channel = |t: &Tensor| t.sum(3)?.sum(2)?.sum(0);
        let daffine = Tensor::stack(&[per_channel(&(&dz * &xhat)?)?, per_channel(&dz)?], 0)?;
        Ok((Some(dx), None, Some(daffine)))
    }
}
