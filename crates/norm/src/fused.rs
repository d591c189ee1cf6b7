//! Fused CPU kernels for training-mode normalization (THEORY.md §1 layers).
//!
//! candle's composite ops (mean, subtract, square, sum, divide, scale, shift, and their
//! autograd mirrors) each make a full pass over memory; these kernels do the forward in three
//! passes (sum, centered sum of squares, write) and the backward in two (per-plane sums, write),
//! with the affine transform folded in. They are used only for f32/f64 tensors on the CPU; every
//! other device keeps the composite path, which the tests check agrees with these kernels.
//!
//! Layout: the input is a contiguous (N, C, H, W) tensor, seen as N·C *planes* of S = H·W
//! values. A *block* is the set of planes one statistic is taken over: channel c's planes
//! across the batch (BatchNorm), or the C/G consecutive planes of one sample's group
//! (GroupNorm; LayerNorm is G = 1, InstanceNorm G = C). Every per-plane sum is computed by one
//! thread and blocks are combined in a fixed order, so results do not depend on the thread
//! count.

use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// Which planes share statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grouping {
    /// One block per channel over (N, H, W): BatchNorm.
    PerChannel,
    /// One block per sample and group of C/G channels: GroupNorm, LayerNorm (1), InstanceNorm (C).
    Groups(usize),
}

/// Geometry of one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub s: usize,
    pub grouping: Grouping,
}

impl Geometry {
    pub fn blocks(&self) -> usize {
        match self.grouping {
            Grouping::PerChannel => self.c,
            Grouping::Groups(g) => self.n * g,
        }
    }

    /// Values per block.
    pub fn count(&self) -> usize {
        match self.grouping {
            Grouping::PerChannel => self.n * self.s,
            Grouping::Groups(g) => self.c / g * self.s,
        }
    }

    /// The block of plane `p` = n·C + c.
    #[inline]
    fn block_of(&self, p: usize) -> usize {
        let (n, c) = (p / self.c, p % self.c);
        match self.grouping {
            Grouping::PerChannel => c,
            Grouping::Groups(g) => n * g + c / (self.c / g),
        }
    }
}

/// Per-block statistics of one forward call (f64 whatever the tensor dtype).
#[derive(Debug)]
pub(crate) struct Stats {
    pub mean: Vec<f64>,
    /// Biased variance.
    pub var: Vec<f64>,
    pub rstd: Vec<f64>,
}

/// f32 and f64: sums accumulate in f64, element-wise outputs are computed in the type itself.
trait Float:
    Copy + Send + Sync + 'static + std::ops::Mul<Output = Self> + std::ops::Add<Output = Self>
{
    fn f64(self) -> f64;
    fn of(v: f64) -> Self;
}

impl Float for f32 {
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn of(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn of(v: f64) -> Self {
        v
    }
}

/// Independent accumulators per sum: enough to hide the latency of the f64 additions.
const LANES: usize = 16;

/// Σ f(v) over `xs` with [`LANES`] independent accumulators, so the sum pipelines and
/// vectorizes.
#[inline(always)]
fn lane_sum<T: Float>(xs: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f64>() + tail
}

/// (Σ (u − offset), Σ f(u, v)) over the pairs of `us` and `vs` in one pass, with [`LANES`]
/// independent accumulators each, so the sums pipeline and vectorize.
#[inline(always)]
fn lane_sum_pair<T: Float>(us: &[T], vs: &[T], f: impl Fn(T, T) -> f64) -> (f64, f64) {
    let (mut su, mut sf) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (mut cu, mut cv) = (us.chunks_exact(LANES), vs.chunks_exact(LANES));
    for (a, b) in (&mut cu).zip(&mut cv) {
        for l in 0..LANES {
            su[l] += a[l].f64();
            sf[l] += f(a[l], b[l]);
        }
    }
    let (mut tu, mut tf) = (0.0, 0.0);
    for (&u, &v) in cu.remainder().iter().zip(cv.remainder()) {
        tu += u.f64();
        tf += f(u, v);
    }
    (su.iter().sum::<f64>() + tu, sf.iter().sum::<f64>() + tf)
}

/// Whether a call on `elems` values is worth Rayon's workers (not below ~64K values).
fn parallel_for(elems: usize) -> bool {
    elems >= 1 << 16 && rayon::current_num_threads() > 1
}

/// `f(plane)` for every plane, in parallel when `parallel`; results in plane order. Each
/// plane's body runs under [`pulp::Arch::dispatch`], so its loops use the widest SIMD the CPU
/// has (the crate itself is compiled for the baseline x86-64).
fn map_planes<R: Send>(planes: usize, parallel: bool, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let arch = pulp::Arch::new();
    let run = |p: usize| {
        arch.dispatch(
            #[inline(always)]
            || f(p),
        )
    };
    if parallel {
        (0..planes).into_par_iter().map(run).collect()
    } else {
        (0..planes).map(run).collect()
    }
}

/// A new vector of `len` values written plane by plane (`f(plane, plane_slice)` must write
/// every element of its slice), in parallel when `parallel`, each plane under
/// [`pulp::Arch::dispatch`] as in [`map_planes`]. The memory is not zero-filled first.
fn fill_planes<T: Float>(
    len: usize,
    s: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    let arch = pulp::Arch::new();
    let run = |(p, plane): (usize, &mut [MaybeUninit<T>])| {
        arch.dispatch(
            #[inline(always)]
            || f(p, plane),
        )
    };
    let spare = &mut out.spare_capacity_mut()[..len];
    if parallel {
        spare.par_chunks_mut(s.max(1)).enumerate().for_each(run);
    } else {
        spare.chunks_mut(s.max(1)).enumerate().for_each(run);
    }
    // SAFETY: the chunks cover the first `len` slots and `f` wrote every element of each.
    unsafe { out.set_len(len) };
    out
}

fn slice<'a, T>(v: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused norm kernel: `{what}` must be contiguous"),
    }
}

/// Block statistics of `x` (two passes: mean, then centered sum of squares).
fn stats<T: Float>(x: &[T], g: &Geometry, eps: f64, parallel: bool) -> Stats {
    let s = g.s;
    let planes = g.n * g.c;
    let count = g.count() as f64;
    let psum = map_planes(planes, parallel, |p| {
        let xs = &x[p * s..(p + 1) * s];
        lane_sum(xs, T::f64)
    });
    let mut mean = vec![0.0; g.blocks()];
    for (p, v) in psum.iter().enumerate() {
        mean[g.block_of(p)] += v;
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let pss = map_planes(planes, parallel, |p| {
        let xs = &x[p * s..(p + 1) * s];
        let m = mean[g.block_of(p)];
        lane_sum(xs, |v| {
            let d = v.f64() - m;
            d * d
        })
    });
    let mut var = vec![0.0; g.blocks()];
    for (p, v) in pss.iter().enumerate() {
        var[g.block_of(p)] += v;
    }
    var.iter_mut().for_each(|v| *v /= count);
    let rstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Stats { mean, var, rstd }
}

/// Forward: `y = (x − mean)·rstd·γ + β`; records the block statistics for the backward pass
/// and for the running-statistics update.
pub(crate) struct NormFwd {
    pub geom: Geometry,
    pub eps: f64,
    pub stats: Arc<OnceLock<Arc<Stats>>>,
}

impl NormFwd {
    fn run<T: Float>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let g = &self.geom;
        let parallel = parallel_for(x.len());
        let st = stats(x, g, self.eps, parallel);
        let y = fill_planes(x.len(), g.s, parallel, |p, out| {
            let c = p % g.c;
            let b = g.block_of(p);
            let a = st.rstd[b] * gamma[c].f64();
            let (scale, shift) = (T::of(a), T::of(beta[c].f64() - st.mean[b] * a));
            let xs = &x[p * g.s..(p + 1) * g.s];
            for (o, &v) in out.iter_mut().zip(xs) {
                o.write(v * scale + shift);
            }
        });
        let _ = self.stats.set(Arc::new(st));
        y
    }
}

impl CustomOp3 for NormFwd {
    fn name(&self) -> &'static str {
        "explr-norm-fused-forward"
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
        let shape = l1.shape().clone();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => CpuStorage::F32(
                self.run(slice(x, l1, "x")?, slice(w, l2, "weight")?, slice(b, l3, "bias")?),
            ),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => CpuStorage::F64(
                self.run(slice(x, l1, "x")?, slice(w, l2, "weight")?, slice(b, l3, "bias")?),
            ),
            _ => candle_core::bail!(
                "fused norm kernel: input, weight and bias must all be f32 or all f64, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = match self.stats.get() {
            Some(s) => s.clone(),
            None => candle_core::bail!("fused norm backward: forward statistics are missing"),
        };
        let op = NormBwd {
            geom: self.geom,
            stats,
            param_grads: Default::default(),
        };
        let param_grads = op.param_grads.clone();
        let dy = dy.contiguous()?;
        let dx = x.apply_op3_no_bwd(&dy, gamma, &op)?;
        let Some((dgamma, dbeta)) = param_grads.get() else {
            candle_core::bail!("fused norm backward recorded no parameter gradients")
        };
        // Own small tensors: parameter gradients live until the optimizer step and must not
        // keep a buffer the size of x alive.
        let param = |v: &[f64]| -> candle_core::Result<Tensor> {
            Tensor::from_slice(v, self.geom.c, x.device())?.to_dtype(x.dtype())
        };
        let (dgamma, dbeta) = (param(dgamma)?, param(dbeta)?);
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Backward of [`NormFwd`]: returns `dx` and records `dγ`, `dβ` (C each, f64) in `param_grads`.
///
/// With x̂ = (x − mean)·rstd and block sums over its M values,
/// `dx = rstd·(γ·dy − Σγ·dy/M − x̂·Σγ·dy·x̂/M)`, `dγ = Σ_{n,h,w} dy·x̂`, `dβ = Σ_{n,h,w} dy`.
struct NormBwd {
    geom: Geometry,
    stats: Arc<Stats>,
    param_grads: Arc<OnceLock<(Vec<f64>, Vec<f64>)>>,
}

impl NormBwd {
    fn run<T: Float>(&self, x: &[T], dy: &[T], gamma: &[T]) -> Vec<T> {
        let g = &self.geom;
        let st = &self.stats;
        let s = g.s;
        let planes = g.n * g.c;
        let parallel = parallel_for(x.len());
        // Per plane: (Σ dy, Σ dy·x̂).
        let sums = map_planes(planes, parallel, |p| {
            let b = g.block_of(p);
            let (m, r) = (st.mean[b], st.rstd[b]);
            let xs = &x[p * s..(p + 1) * s];
            let ds = &dy[p * s..(p + 1) * s];
            let (sdy, sdyx) = lane_sum_pair(ds, xs, |d, x| d.f64() * (x.f64() - m));
            let sdyx = sdyx * r;
            (sdy, sdyx)
        });
        let count = g.count() as f64;
        let mut a = vec![0.0; g.blocks()];
        let mut bsum = vec![0.0; g.blocks()];
        for (p, &(sdy, sdyx)) in sums.iter().enumerate() {
            let gc = gamma[p % g.c].f64();
            a[g.block_of(p)] += gc * sdy;
            bsum[g.block_of(p)] += gc * sdyx;
        }
        let dx = fill_planes(x.len(), s, parallel, |p, o| {
            let c = p % g.c;
            let b = g.block_of(p);
            let (m, r) = (st.mean[b], st.rstd[b]);
            // dx = k_dy·dy + k_x·x + k_0
            let k_dy = r * gamma[c].f64();
            let k_x = -r * r * bsum[b] / count;
            let k_0 = -r * a[b] / count - m * k_x;
            let (k_dy, k_x, k_0) = (T::of(k_dy), T::of(k_x), T::of(k_0));
            let xs = &x[p * s..(p + 1) * s];
            let ds = &dy[p * s..(p + 1) * s];
            for ((o, &xv), &dv) in o.iter_mut().zip(xs).zip(ds) {
                o.write(k_dy * dv + k_x * xv + k_0);
            }
        });
        let mut dgamma = vec![0.0; g.c];
        let mut dbeta = vec![0.0; g.c];
        for c in 0..g.c {
            for n in 0..g.n {
                let (sdy, sdyx) = sums[n * g.c + c];
                dgamma[c] += sdyx;
                dbeta[c] += sdy;
            }
        }
        let _ = self.param_grads.set((dgamma, dbeta));
        dx
    }
}

impl CustomOp3 for NormBwd {
    fn name(&self) -> &'static str {
        "explr-norm-fused-backward"
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
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(d), CpuStorage::F32(w)) => CpuStorage::F32(
                self.run(slice(x, l1, "x")?, slice(d, l2, "dy")?, slice(w, l3, "weight")?),
            ),
            (CpuStorage::F64(x), CpuStorage::F64(d), CpuStorage::F64(w)) => CpuStorage::F64(
                self.run(slice(x, l1, "x")?, slice(d, l2, "dy")?, slice(w, l3, "weight")?),
            ),
            _ => candle_core::bail!(
                "fused norm backward: x, dy and weight must all be f32 or all f64, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}
