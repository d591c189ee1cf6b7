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

use std::sync::{Arc, OnceLock};

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

/// f32 and f64, converted to f64 for accumulation.
trait Float: Copy + Send + Sync + 'static {
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

const LANES: usize = 8;

/// Σ f(i) over a plane with independent accumulators, so the sum vectorizes.
#[inline(always)]
fn lane_sum(len: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let whole = len / LANES * LANES;
    let mut i = 0;
    while i < whole {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
        i += LANES;
    }
    let mut tail = 0.0;
    for j in whole..len {
        tail += f(j);
    }
    acc.iter().sum::<f64>() + tail
}

/// Worker threads for `elems` values: one below ~64K values, else candle's thread count.
fn threads_for(elems: usize) -> usize {
    if elems < 1 << 16 {
        1
    } else {
        candle_core::utils::get_num_threads().clamp(1, 64)
    }
}

/// `f(plane)` for every plane, planes split across threads; results in plane order.
fn map_planes<R: Send + Default + Clone>(
    planes: usize,
    threads: usize,
    f: impl Fn(usize) -> R + Sync,
) -> Vec<R> {
    let mut out = vec![R::default(); planes];
    let chunk = planes.div_ceil(threads.max(1)).max(1);
    if threads <= 1 || planes <= 1 {
        for (p, o) in out.iter_mut().enumerate() {
            *o = f(p);
        }
        return out;
    }
    std::thread::scope(|sc| {
        for (k, part) in out.chunks_mut(chunk).enumerate() {
            let f = &f;
            sc.spawn(move || {
                for (j, o) in part.iter_mut().enumerate() {
                    *o = f(k * chunk + j);
                }
            });
        }
    });
    out
}

/// Fills `out` plane by plane (`f(plane, plane_slice)`), planes split across threads.
fn fill_planes<T: Float>(
    out: &mut [T],
    s: usize,
    threads: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let planes = out.len() / s.max(1);
    let chunk = planes.div_ceil(threads.max(1)).max(1);
    if threads <= 1 || planes <= 1 {
        for (p, plane) in out.chunks_mut(s).enumerate() {
            f(p, plane);
        }
        return;
    }
    std::thread::scope(|sc| {
        for (k, part) in out.chunks_mut(chunk * s).enumerate() {
            let f = &f;
            sc.spawn(move || {
                for (j, plane) in part.chunks_mut(s).enumerate() {
                    f(k * chunk + j, plane);
                }
            });
        }
    });
}

fn slice<'a, T>(v: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused norm kernel: `{what}` must be contiguous"),
    }
}

/// Block statistics of `x` (two passes: mean, then centered sum of squares).
fn stats<T: Float>(x: &[T], g: &Geometry, eps: f64, threads: usize) -> Stats {
    let s = g.s;
    let planes = g.n * g.c;
    let count = g.count() as f64;
    let psum = map_planes(planes, threads, |p| {
        let xs = &x[p * s..(p + 1) * s];
        lane_sum(s, |i| xs[i].f64())
    });
    let mut mean = vec![0.0; g.blocks()];
    for (p, v) in psum.iter().enumerate() {
        mean[g.block_of(p)] += v;
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let pss = map_planes(planes, threads, |p| {
        let xs = &x[p * s..(p + 1) * s];
        let m = mean[g.block_of(p)];
        lane_sum(s, |i| {
            let d = xs[i].f64() - m;
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
        let threads = threads_for(x.len());
        let st = stats(x, g, self.eps, threads);
        let mut y = vec![T::of(0.0); x.len()];
        fill_planes(&mut y, g.s, threads, |p, out| {
            let c = p % g.c;
            let b = g.block_of(p);
            let a = st.rstd[b] * gamma[c].f64();
            let shift = beta[c].f64() - st.mean[b] * a;
            let xs = &x[p * g.s..(p + 1) * g.s];
            for (o, &v) in out.iter_mut().zip(xs) {
                *o = T::of(v.f64() * a + shift);
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
        };
        let dy = dy.contiguous()?;
        let packed = x.apply_op3_no_bwd(&dy, gamma, &op)?;
        let (len, c) = (x.elem_count(), self.geom.c);
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, len, c)?;
        let dbeta = packed.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Backward of [`NormFwd`]: packs `dx` (N·C·S), `dγ` (C), `dβ` (C) into one vector.
///
/// With x̂ = (x − mean)·rstd and block sums over its M values,
/// `dx = rstd·(γ·dy − Σγ·dy/M − x̂·Σγ·dy·x̂/M)`, `dγ = Σ_{n,h,w} dy·x̂`, `dβ = Σ_{n,h,w} dy`.
struct NormBwd {
    geom: Geometry,
    stats: Arc<Stats>,
}

impl NormBwd {
    fn run<T: Float>(&self, x: &[T], dy: &[T], gamma: &[T]) -> Vec<T> {
        let g = &self.geom;
        let st = &self.stats;
        let s = g.s;
        let planes = g.n * g.c;
        let threads = threads_for(x.len());
        // Per plane: (Σ dy, Σ dy·x̂).
        let sums = map_planes(planes, threads, |p| {
            let b = g.block_of(p);
            let (m, r) = (st.mean[b], st.rstd[b]);
            let xs = &x[p * s..(p + 1) * s];
            let ds = &dy[p * s..(p + 1) * s];
            let sdy = lane_sum(s, |i| ds[i].f64());
            let sdyx = lane_sum(s, |i| ds[i].f64() * (xs[i].f64() - m)) * r;
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
        let mut out = vec![T::of(0.0); x.len() + 2 * g.c];
        let (dx, dparams) = out.split_at_mut(x.len());
        fill_planes(dx, s, threads, |p, o| {
            let c = p % g.c;
            let b = g.block_of(p);
            let (m, r) = (st.mean[b], st.rstd[b]);
            // dx = k_dy·dy + k_x·x + k_0
            let k_dy = r * gamma[c].f64();
            let k_x = -r * r * bsum[b] / count;
            let k_0 = -r * a[b] / count - m * k_x;
            let xs = &x[p * s..(p + 1) * s];
            let ds = &dy[p * s..(p + 1) * s];
            for ((o, &xv), &dv) in o.iter_mut().zip(xs).zip(ds) {
                *o = T::of(k_dy * dv.f64() + k_x * xv.f64() + k_0);
            }
        });
        let (dgamma, dbeta) = dparams.split_at_mut(g.c);
        for c in 0..g.c {
            let (mut sg, mut sb) = (0.0, 0.0);
            for n in 0..g.n {
                let (sdy, sdyx) = sums[n * g.c + c];
                sg += sdyx;
                sb += sdy;
            }
            dgamma[c] = T::of(sg);
            dbeta[c] = T::of(sb);
        }
        out
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
        let len = l1.shape().elem_count() + 2 * self.geom.c;
        Ok((out, Shape::from(len)))
    }
}
