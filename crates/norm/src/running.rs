//! Evaluation with running statistics (BatchNorm's, and InstanceNorm's when it tracks them) in
//! one pass over memory (THEORY.md §1 layers): `y = (x − μ̂)/σ̂·γ + β`, then the ReLU when it is
//! fused, with μ̂ the running mean and σ̂ = √(running variance + eps) per channel. The composite
//! path makes four or five passes (subtract, divide, scale, shift, ReLU), each a candle op on
//! one thread; this is one parallel pass with the same operations in the same order for every
//! element, so the same bits.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use crate::fused::{fill_planes, parallel_for, three_storages, Float, Geometry, Grouping};

/// The op: `x` (N, C, H, W), `stats` (2, C) = (μ̂, σ̂), `affine` (2, C) = (γ, β), where the
/// flags say which of γ and β the layer has (one it lacks is skipped, not applied as 1 or 0:
/// `−0 + 0` is `+0`). Statistics per channel: BatchNorm's, and InstanceNorm's running ones.
pub(crate) struct RunningNorm {
    pub geom: Geometry,
    pub weight: bool,
    pub bias: bool,
    pub relu: bool,
}

impl RunningNorm {
    /// The op on `x` (N, C, H, W).
    pub fn new(
        (n, c, h, w): (usize, usize, usize, usize),
        weight: bool,
        bias: bool,
        relu: bool,
    ) -> Self {
        let geom = Geometry {
            n,
            c,
            s: h * w,
            grouping: Grouping::PerChannel,
        };
        RunningNorm {
            geom,
            weight,
            bias,
            relu,
        }
    }

    fn run<T: Float>(&self, x: &[T], stats: &[T], affine: &[T]) -> Vec<T> {
        let (c, s) = (self.geom.c, self.geom.s);
        let zero = T::of(0.0);
        fill_planes(x.len(), &self.geom, parallel_for(x.len()), |p, out| {
            let ch = p % c;
            let (mean, std) = (stats[ch], stats[c + ch]);
            let (gamma, beta) = (affine[ch], affine[c + ch]);
            for (o, &v) in out.iter_mut().zip(&x[p * s..(p + 1) * s]) {
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
        })
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
        let shape = (1, self.geom.c, 1, 1);
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
