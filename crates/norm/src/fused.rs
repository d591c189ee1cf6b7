//! Fused CPU kernels for training-mode normalization (THEORY.md §1 layers).
//!
//! candle's composite ops (mean, subtract, square, sum, divide, scale, shift, and their
//! autograd mirrors) each make a full pass over memory; these kernels work block by block
//! (see below): the forward pass takes the block's sum and centered sum of squares and writes
//! its output, the backward pass takes the block's two gradient sums and writes its input
//! gradient, each while the block is still in cache, with the affine transform folded in. They
//! are used only for f32/f64 tensors on the CPU; every other device keeps the composite path,
//! which the tests check agrees with these kernels.
//!
//! Layout: the input is a contiguous (N, C, H, W) tensor, seen as N·C *planes* of S = H·W
//! values. A *block* is the set of planes one statistic is taken over: channel c's planes
//! across the batch (BatchNorm), or the C/G consecutive planes of one sample's group
//! (GroupNorm; LayerNorm is G = 1, InstanceNorm G = C). Each block is processed by one thread,
//! which combines its per-plane sums in plane order, so results do not depend on the thread
//! count.
//!
//! Precision: sums accumulate in f64 across planes; within a plane, f32 lanes add deviations
//! (from the block's first value, then from the mean rounded to f32), and outputs and input
//! gradients are written as `(x − m̃)·a + b`. So f32 keeps its digits when a block's mean is
//! large against its spread, where `x·a + b'` would cancel them (a test checks f32 against f64
//! at mean 1000, standard deviation 1: within 1e-6).

use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

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

    /// The planes of block `b`, in increasing order.
    fn block_planes(&self, b: usize) -> impl Iterator<Item = usize> {
        let (n, c) = (self.n, self.c);
        let (step, first, len) = match self.grouping {
            Grouping::PerChannel => (c, b, n),
            Grouping::Groups(g) => (1, (b / g) * c + (b % g) * (c / g), c / g),
        };
        (0..len).map(move |j| first + j * step)
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
    Copy
    + Send
    + Sync
    + 'static
    + PartialOrd
    + std::ops::Mul<Output = Self>
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
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

/// Σ f(v) over `xs` with [`LANES`] independent accumulators of the tensor's own type, so the
/// sum pipelines and vectorizes at full width (f32 lanes for f32 tensors; callers combine
/// these per-plane sums in f64). The tail is summed in f64.
#[inline(always)]
fn lane_sum<T: Float>(xs: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut acc = [T::of(0.0); LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = *a + f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v).f64()).sum();
    acc.iter().map(|a| a.f64()).sum::<f64>() + tail
}

/// (Σ u, Σ f(u, x)) over `u = gate(ds[i], xs[i])`, `x = xs[i]` in one pass, as [`lane_sum`].
#[inline(always)]
fn lane_sum_pair<T: Float>(
    ds: &[T],
    xs: &[T],
    gate: impl Fn(T, T) -> T,
    f: impl Fn(T, T) -> T,
) -> (f64, f64) {
    let zero = T::of(0.0);
    let (mut su, mut sf) = ([zero; LANES], [zero; LANES]);
    let (mut cd, mut cx) = (ds.chunks_exact(LANES), xs.chunks_exact(LANES));
    for (d, x) in (&mut cd).zip(&mut cx) {
        for l in 0..LANES {
            let u = gate(d[l], x[l]);
            su[l] = su[l] + u;
            sf[l] = sf[l] + f(u, x[l]);
        }
    }
    let (mut tu, mut tf) = (0.0, 0.0);
    for (&d, &x) in cd.remainder().iter().zip(cx.remainder()) {
        let u = gate(d, x);
        tu += u.f64();
        tf += f(u, x).f64();
    }
    (
        su.iter().map(|a| a.f64()).sum::<f64>() + tu,
        sf.iter().map(|a| a.f64()).sum::<f64>() + tf,
    )
}

/// Whether a call on `elems` values is worth Rayon's workers (not below ~64K values).
fn parallel_for(elems: usize) -> bool {
    elems >= 1 << 16 && rayon::current_num_threads() > 1
}

/// `f(block)` for every block, in parallel when `parallel`; results in block order.
///
/// The loops are compiled for the baseline x86-64 (SSE2 vectors). Run-time dispatch to AVX2
/// was tried and removed: through `pulp::Arch::dispatch` the block bodies were never inlined
/// into its AVX2 function (they ran as SSE2 code all the same), and through a
/// `#[target_feature]` function that did inline them they ran no faster (these passes are bound
/// by memory, not by vector width).
fn map_blocks<R: Send>(blocks: usize, parallel: bool, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if parallel {
        (0..blocks).into_par_iter().map(&f).collect()
    } else {
        (0..blocks).map(f).collect()
    }
}

/// An output buffer whose planes are written by different threads, each plane by exactly one.
struct PlaneWriter<T> {
    ptr: *mut MaybeUninit<T>,
    s: usize,
}

// SAFETY: threads only ever write disjoint planes (each block owns its planes).
unsafe impl<T: Send> Send for PlaneWriter<T> {}
unsafe impl<T: Send> Sync for PlaneWriter<T> {}

impl<T> PlaneWriter<T> {
    /// Plane `p` of the buffer.
    ///
    /// # Safety
    /// `p` must be in bounds, and no other live reference may address plane `p`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn plane(&self, p: usize) -> &mut [MaybeUninit<T>] {
        std::slice::from_raw_parts_mut(self.ptr.add(p * self.s), self.s)
    }
}

/// A new vector of `len` values, written block by block by `f(block, writer)`, which must
/// write every plane of its block through the writer and no other; returns `f`'s results in
/// block order. The memory is not zero-filled first.
fn fill_blocks<T: Float, R: Send>(
    len: usize,
    g: &Geometry,
    parallel: bool,
    f: impl Fn(usize, &PlaneWriter<T>) -> R + Sync,
) -> (Vec<T>, Vec<R>) {
    let mut out: Vec<T> = Vec::with_capacity(len);
    let writer = PlaneWriter {
        ptr: out.spare_capacity_mut().as_mut_ptr(),
        s: g.s,
    };
    let results = map_blocks(g.blocks(), parallel, |b| f(b, &writer));
    // SAFETY: the blocks partition the planes, which cover the first `len` slots, and `f`
    // wrote every element of each plane of its block.
    unsafe { out.set_len(len) };
    (out, results)
}

/// The mean rounded to `T`, m̃, and what the rounding left out, m − m̃ (0 for f64): every pass
/// centres on m̃, where `x − m̃` is exact for x near the mean, and adds the rest back in f64.
#[inline(always)]
fn rounded_mean<T: Float>(mean: f64) -> (T, f64) {
    let m_t = T::of(mean);
    (m_t, mean - m_t.f64())
}

/// The output transform of one plane, `y = (x − m̃)·scale + shift`: `scale = rstd·γ` and
/// `shift = β − (m − m̃)·rstd·γ` rounded to `T` (`off = m − m̃`, [`rounded_mean`]). The forward
/// pass writes `y` with it, and the backward pass recomputes the ReLU's gate `y > 0` with it
/// bit for bit, instead of reading the forward's output.
#[inline(always)]
fn plane_affine<T: Float>(rstd: f64, gamma: f64, beta: f64, off: f64) -> (T, T) {
    let a = rstd * gamma;
    (T::of(a), T::of(beta - off * a))
}

/// `(x − m̃)·scale + shift` ([`plane_affine`]), written once for both passes.
#[inline(always)]
fn affine<T: Float>(x: T, m_t: T, (scale, shift): (T, T)) -> T {
    (x - m_t) * scale + shift
}

/// Statistics of block `b` of `x` (two passes over the block, which stays in cache: mean, then
/// centered sum of squares; per-plane sums combined in plane order): `(mean, var)`.
#[inline(always)]
fn block_stats<T: Float>(x: &[T], g: &Geometry, b: usize) -> (f64, f64) {
    let s = g.s;
    let count = g.count() as f64;
    // Summed as deviations from the block's first value, so that the T-typed lanes add small
    // numbers even when the mean is large against the spread.
    let shift = g
        .block_planes(b)
        .next()
        .and_then(|p| x.get(p * s))
        .copied()
        .unwrap_or(T::of(0.0));
    let mut sum = 0.0;
    for p in g.block_planes(b) {
        sum += lane_sum(&x[p * s..(p + 1) * s], |v| v - shift);
    }
    let mean = shift.f64() + sum / count;
    // Centered on the mean rounded to T; Σ(x − m)² = Σ(x − m̃)² − M·(m − m̃)² (0 for f64).
    let (m_t, off) = rounded_mean::<T>(mean);
    let mut ss = 0.0;
    for p in g.block_planes(b) {
        ss += lane_sum(&x[p * s..(p + 1) * s], |v| {
            let d = v - m_t;
            d * d
        });
    }
    (mean, ((ss - count * off * off) / count).max(0.0))
}

fn slice<'a, T>(v: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused norm kernel: `{what}` must be contiguous"),
    }
}

/// Forward: `y = (x − mean)·rstd·γ + β`, or with `relu` `max(y, 0)` (NaN kept, as
/// `explr_nn::relu`) in the same pass; records the block statistics for the backward pass and
/// for the running-statistics update.
pub(crate) struct NormFwd {
    pub geom: Geometry,
    pub eps: f64,
    pub relu: bool,
    pub stats: Arc<OnceLock<Arc<Stats>>>,
}

impl NormFwd {
    /// Block by block: the block's statistics, then its output while the block is still in
    /// cache (a block is at most N·H·W values: 128 KiB for BatchNorm at batch 128 and 16×16).
    fn run<T: Float>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        if self.relu {
            self.run_with::<T, true>(x, gamma, beta)
        } else {
            self.run_with::<T, false>(x, gamma, beta)
        }
    }

    /// [`NormFwd::run`] with the ReLU chosen at compile time.
    fn run_with<T: Float, const RELU: bool>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let g = &self.geom;
        let s = g.s;
        let (y, moments) = fill_blocks(x.len(), g, parallel_for(x.len()), |b, out| {
            let (mean, var) = block_stats(x, g, b);
            let rstd = 1.0 / (var + self.eps).sqrt();
            // y = (x − m̃)·a + (β − (m − m̃)·a), m̃ the mean rounded to T: x − m̃ loses nothing
            // where x·a + (β − m·a) would cancel digits of a mean large against the spread.
            let (m_t, off) = rounded_mean::<T>(mean);
            for p in g.block_planes(b) {
                let c = p % g.c;
                let t = plane_affine::<T>(rstd, gamma[c].f64(), beta[c].f64(), off);
                // SAFETY: plane p belongs to block b only.
                let o = unsafe { out.plane(p) };
                for (o, &v) in o.iter_mut().zip(&x[p * s..(p + 1) * s]) {
                    let y = affine(v, m_t, t);
                    // A select, not a branch per value (see `gate` in the backward pass).
                    o.write(if RELU {
                        std::hint::select_unpredictable(y < T::of(0.0), T::of(0.0), y)
                    } else {
                        y
                    });
                }
            }
            (mean, var, rstd)
        });
        let _ = self.stats.set(Arc::new(Stats {
            mean: moments.iter().map(|m| m.0).collect(),
            var: moments.iter().map(|m| m.1).collect(),
            rstd: moments.iter().map(|m| m.2).collect(),
        }));
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
        beta: &Tensor,
        _z: &Tensor,
        dz: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = match self.stats.get() {
            Some(s) => s.clone(),
            None => candle_core::bail!("fused norm backward: forward statistics are missing"),
        };
        let f64s = |t: &Tensor| t.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>();
        let op = NormBwd {
            geom: self.geom,
            stats,
            relu: self.relu,
            gamma: f64s(gamma)?,
            beta: f64s(beta)?,
            param_grads: Default::default(),
        };
        let param_grads = op.param_grads.clone();
        let dz = dz.contiguous()?;
        let dx = x.apply_op2_no_bwd(&dz, &op)?;
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

/// Backward of [`NormFwd`] on `(x, dz)`, `dz` the gradient at the forward's output `z`:
/// returns `dx` and records `dγ`, `dβ` (C each, f64) in `param_grads`.
///
/// The gradient at the normalization's output is `dy = dz`, or with `relu` `dy = dz` where
/// `z > 0` and 0 elsewhere (`explr_nn::relu`'s rule), taken on the fly. `z > 0` is `y > 0`, and
/// `y` is recomputed from `x` exactly as the forward pass computed it ([`affine`]), so the
/// forward's output is never read: two streams over memory per pass instead of three. With
/// x̂ = (x − mean)·rstd and block sums over its M values,
/// `dx = rstd·(γ·dy − Σγ·dy/M − x̂·Σγ·dy·x̂/M)`, `dγ = Σ_{n,h,w} dy·x̂`, `dβ = Σ_{n,h,w} dy`.
struct NormBwd {
    geom: Geometry,
    stats: Arc<Stats>,
    relu: bool,
    /// γ and β per channel, in f64 (exact for f32 and f64 tensors).
    gamma: Vec<f64>,
    beta: Vec<f64>,
    param_grads: Arc<OnceLock<(Vec<f64>, Vec<f64>)>>,
}

impl NormBwd {
    /// Block by block, as the forward pass: the block's sums, then its `dx` from cache.
    fn run<T: Float>(&self, x: &[T], dz: &[T]) -> Vec<T> {
        if self.relu {
            self.run_with::<T, true>(x, dz)
        } else {
            self.run_with::<T, false>(x, dz)
        }
    }

    /// [`NormBwd::run`] with the ReLU chosen at compile time.
    fn run_with<T: Float, const RELU: bool>(&self, x: &[T], dz: &[T]) -> Vec<T> {
        let g = &self.geom;
        let st = &self.stats;
        let s = g.s;
        let count = g.count() as f64;
        let planes = g.n * g.c;
        let gamma = &self.gamma;
        let mut per_plane: Vec<(f64, f64)> = Vec::with_capacity(planes);
        let sums = PlaneWriter {
            ptr: per_plane.spare_capacity_mut().as_mut_ptr(),
            s: 1,
        };
        let (dx, _) = fill_blocks(x.len(), g, parallel_for(x.len()), |b, out| {
            let (m, r) = (st.mean[b], st.rstd[b]);
            let (m_t, off) = rounded_mean::<T>(m);
            // Per plane: (Σ dy, Σ dy·x̂), into `per_plane`; per block: Σγ·dy and Σγ·dy·x̂, in
            // plane order.
            // dy from dz and, with the ReLU, the plane's recomputed y = (x − m̃)·scale + shift.
            // `select_unpredictable`: left to itself, the compiler may turn the select into a
            // branch per lane of the sums, which made these passes 2-4 × slower in some builds.
            let gate = |d: T, xv: T, t: (T, T)| {
                if RELU {
                    std::hint::select_unpredictable(affine(xv, m_t, t) > T::of(0.0), d, T::of(0.0))
                } else {
                    d
                }
            };
            let (mut a, mut bsum) = (0.0, 0.0);
            for p in g.block_planes(b) {
                let c = p % g.c;
                let t = plane_affine::<T>(r, gamma[c], self.beta[c], off);
                let plane = p * s..(p + 1) * s;
                let (xs, ds) = (&x[plane.clone()], &dz[plane]);
                // Σ dy·(x − m) = Σ dy·(x − m̃) − (m − m̃)·Σ dy, m̃ the mean rounded to T.
                let (sdy, sdyx) =
                    lane_sum_pair(ds, xs, |d, xv| gate(d, xv, t), |d, xv| d * (xv - m_t));
                let sdyx = (sdyx - off * sdy) * r;
                // SAFETY: plane p belongs to block b only.
                unsafe { sums.plane(p)[0].write((sdy, sdyx)) };
                let gc = gamma[c];
                a += gc * sdy;
                bsum += gc * sdyx;
            }
            // dx = k_dy·dy + k_x·(x − m̃) + k_0: centred on m̃ as the sums are, so that a block
            // whose mean is large against its spread loses no digits to k_x·x ≈ k_x·m.
            let k_x = -r * r * bsum / count;
            let k_0 = -r * a / count - off * k_x;
            for p in g.block_planes(b) {
                let c = p % g.c;
                let t = plane_affine::<T>(r, gamma[c], self.beta[c], off);
                // k_dy = rstd·γ rounded to T: the plane's scale.
                let k_dy = t.0;
                let (k_x, k_0) = (T::of(k_x), T::of(k_0));
                // SAFETY: plane p belongs to block b only.
                let o = unsafe { out.plane(p) };
                let plane = p * s..(p + 1) * s;
                let (xs, ds) = (&x[plane.clone()], &dz[plane]);
                for ((o, &xv), &dv) in o.iter_mut().zip(xs).zip(ds) {
                    o.write(k_dy * gate(dv, xv, t) + k_x * (xv - m_t) + k_0);
                }
            }
        });
        // SAFETY: every plane belongs to exactly one block, which wrote its sums.
        unsafe { per_plane.set_len(planes) };
        let mut dgamma = vec![0.0; g.c];
        let mut dbeta = vec![0.0; g.c];
        for c in 0..g.c {
            for n in 0..g.n {
                let (sdy, sdyx) = per_plane[n * g.c + c];
                dgamma[c] += sdyx;
                dbeta[c] += sdy;
            }
        }
        let _ = self.param_grads.set((dgamma, dbeta));
        dx
    }
}

impl CustomOp2 for NormBwd {
    fn name(&self) -> &'static str {
        "explr-norm-fused-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(d)) => {
                CpuStorage::F32(self.run(slice(x, l1, "x")?, slice(d, l2, "dz")?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(d)) => {
                CpuStorage::F64(self.run(slice(x, l1, "x")?, slice(d, l2, "dz")?))
            }
            _ => candle_core::bail!(
                "fused norm backward: x and dz must both be f32 or both f64, got {:?}, {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}
