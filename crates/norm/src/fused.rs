//! Fused CPU kernels for training-mode normalization (THEORY.md §1 layers).
//!
//! candle's composite ops (mean, subtract, square, sum, divide, scale, shift, and their
//! autograd mirrors) each make a full pass over memory; these kernels work block by block
//! (see below): the forward pass takes the block's sum and centered sum of squares and writes
//! its output, the backward pass takes the block's two gradient sums and writes its input
//! gradient, each while the block is still in cache, with the affine transform folded in. They
//! are used only for f32/f64 tensors on the CPU; every other device keeps the composite path,
//! which the tests check agrees with these kernels. Where a convolution reads the output,
//! [`NormInput`] takes the statistics alone and hands the convolution each plane's map
//! (`explr_nn::conv2d_normed`), which it applies as it lays its input out: the output pass is
//! the convolution's own copy.
//!
//! Layout: the input is a contiguous (N, C, H, W) tensor, seen as N·C *planes* of S = H·W
//! values. A *block* is the set of planes one statistic is taken over: channel c's planes
//! across the batch (BatchNorm), or the C/G consecutive planes of one sample's group
//! (GroupNorm; LayerNorm is G = 1, InstanceNorm G = C). Every sum is taken per plane, and a
//! block's per-plane sums are combined in plane order, so results do not depend on the thread
//! count or on the schedule. Two schedules: where a block's planes are consecutive in memory
//! (GroupNorm and its kin), block by block, each pass over the block while it is in cache;
//! where they are not (BatchNorm: a channel's planes sit C·H·W apart, and reading them block by
//! block jumps through memory faster than the hardware prefetchers follow), in sweeps through
//! the whole tensor in memory order, the blocks' sums folded between sweeps. The two agree bit
//! for bit (a test checks it).
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

    /// The block plane `p` belongs to.
    fn block_of(&self, p: usize) -> usize {
        match self.grouping {
            Grouping::PerChannel => p % self.c,
            Grouping::Groups(g) => (p / self.c) * g + (p % self.c) / (self.c / g),
        }
    }

    /// Whether each block's planes are consecutive in memory: every grouping but BatchNorm's,
    /// and BatchNorm's for a single sample.
    fn blocks_contiguous(&self) -> bool {
        matches!(self.grouping, Grouping::Groups(_)) || self.n == 1
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

impl Stats {
    /// From each block's `(mean, var, rstd)`, in block order.
    fn from_moments(moments: &[(f64, f64, f64)]) -> Self {
        Stats {
            mean: moments.iter().map(|m| m.0).collect(),
            var: moments.iter().map(|m| m.1).collect(),
            rstd: moments.iter().map(|m| m.2).collect(),
        }
    }
}

/// f32 and f64: sums accumulate in f64, element-wise outputs are computed in the type itself.
pub(crate) trait Float:
    Copy
    + Send
    + Sync
    + 'static
    + PartialOrd
    + std::ops::Mul<Output = Self>
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Div<Output = Self>
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
pub(crate) fn parallel_for(elems: usize) -> bool {
    elems >= 1 << 16 && rayon::current_num_threads() > 1
}

/// `f(block)` for every block, in parallel when `parallel`; results in block order.
///
/// The loops are compiled for the baseline x86-64 (SSE2 vectors). Run-time dispatch to AVX2
/// was tried and removed: through `pulp::Arch::dispatch` the block bodies were never inlined
/// into its AVX2 function (they ran as SSE2 code all the same), and through a
/// `#[target_feature]` function that did inline them they ran no faster (nor did a whole build
/// for the native CPU make the step faster; docs/PERFORMANCE.md).
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

/// The value every sum of block `b` is shifted by: the block's first value (0 for an empty
/// block), so that the `T`-typed lanes add small numbers even when the mean is large against
/// the spread.
#[inline(always)]
fn block_shift<T: Float>(x: &[T], g: &Geometry, b: usize) -> T {
    g.block_planes(b)
        .next()
        .and_then(|p| x.get(p * g.s))
        .copied()
        .unwrap_or(T::of(0.0))
}

/// `Σ (v − shift)` over one plane ([`lane_sum`]): the first statistic of the forward pass.
#[inline(always)]
fn shifted_sum<T: Float>(plane: &[T], shift: T) -> f64 {
    lane_sum(plane, |v| v - shift)
}

/// `Σ (v − m̃)²` over one plane ([`lane_sum`]): the second statistic of the forward pass.
#[inline(always)]
fn centered_squares<T: Float>(plane: &[T], m_t: T) -> f64 {
    lane_sum(plane, |v| {
        let d = v - m_t;
        d * d
    })
}

/// Block `b`'s sum of the per-plane values `per_plane` (indexed by plane), from 0 in plane
/// order: the order a block's planes are summed in, whichever order they were computed in.
#[inline(always)]
fn fold_block(g: &Geometry, b: usize, per_plane: &[f64]) -> f64 {
    let mut sum = 0.0;
    for p in g.block_planes(b) {
        sum += per_plane[p];
    }
    sum
}

/// A block's mean from its shift and its shifted sum.
#[inline(always)]
fn block_mean<T: Float>(g: &Geometry, shift: T, sum: f64) -> f64 {
    shift.f64() + sum / g.count() as f64
}

/// A block's biased variance from its centered sum of squares around the rounded mean m̃,
/// `off = m − m̃`: Σ(x − m)² = Σ(x − m̃)² − M·(m − m̃)² (0 for f64).
#[inline(always)]
fn block_var(g: &Geometry, squares: f64, off: f64) -> f64 {
    let count = g.count() as f64;
    ((squares - count * off * off) / count).max(0.0)
}

/// Statistics of block `b` of `x` (two passes over the block, which stays in cache: mean, then
/// centered sum of squares; per-plane sums combined in plane order): `(mean, var)`.
#[inline(always)]
fn block_stats<T: Float>(x: &[T], g: &Geometry, b: usize) -> (f64, f64) {
    let s = g.s;
    let shift = block_shift(x, g, b);
    let mut sum = 0.0;
    for p in g.block_planes(b) {
        sum += shifted_sum(&x[p * s..(p + 1) * s], shift);
    }
    let mean = block_mean(g, shift, sum);
    let (m_t, off) = rounded_mean::<T>(mean);
    let mut ss = 0.0;
    for p in g.block_planes(b) {
        ss += centered_squares(&x[p * s..(p + 1) * s], m_t);
    }
    (mean, block_var(g, ss, off))
}

/// One output plane of the forward pass: `(x − m̃)·scale + shift` ([`affine`]), or with the
/// ReLU `max(·, 0)` (NaN kept, as `explr_nn::relu`).
#[inline(always)]
fn forward_plane<T: Float, const RELU: bool>(
    o: &mut [MaybeUninit<T>],
    xs: &[T],
    m_t: T,
    t: (T, T),
) {
    for (o, &v) in o.iter_mut().zip(xs) {
        let y = affine(v, m_t, t);
        // A select, not a branch per value (see `gate`).
        o.write(if RELU {
            std::hint::select_unpredictable(y < T::of(0.0), T::of(0.0), y)
        } else {
            y
        });
    }
}

/// The gradient at the normalization's output: `dz`, or with the ReLU `dz` where the
/// recomputed `y = (x − m̃)·scale + shift` is positive and 0 elsewhere (`explr_nn::relu`'s
/// rule). `select_unpredictable`: left to itself, the compiler may turn the select into a
/// branch per lane of the sums, which made these passes 2-4 × slower in some builds.
#[inline(always)]
fn gate<T: Float, const RELU: bool>(d: T, xv: T, m_t: T, t: (T, T)) -> T {
    if RELU {
        std::hint::select_unpredictable(affine(xv, m_t, t) > T::of(0.0), d, T::of(0.0))
    } else {
        d
    }
}

/// One plane's `(Σ dy, Σ dy·x̂)` for the backward pass, `x̂ = (x − m)·rstd`:
/// Σ dy·(x − m) = Σ dy·(x − m̃) − (m − m̃)·Σ dy, m̃ the mean rounded to T.
#[inline(always)]
fn gradient_sums<T: Float, const RELU: bool>(
    xs: &[T],
    ds: &[T],
    (m_t, off, rstd): (T, f64, f64),
    t: (T, T),
) -> (f64, f64) {
    let (sdy, sdyx) = lane_sum_pair(
        ds,
        xs,
        |d, xv| gate::<T, RELU>(d, xv, m_t, t),
        |d, xv| d * (xv - m_t),
    );
    (sdy, (sdyx - off * sdy) * rstd)
}

/// One plane of the input gradient, `dx = k_dy·dy + k_x·(x − m̃) + k_0` with `k_dy = t.0`:
/// centred on m̃ as the sums are, so that a block whose mean is large against its spread loses
/// no digits to k_x·x ≈ k_x·m.
#[inline(always)]
fn backward_plane<T: Float, const RELU: bool>(
    o: &mut [MaybeUninit<T>],
    (xs, ds): (&[T], &[T]),
    m_t: T,
    t: (T, T),
    (k_x, k_0): (T, T),
) {
    for ((o, &xv), &dv) in o.iter_mut().zip(xs).zip(ds) {
        o.write(t.0 * gate::<T, RELU>(dv, xv, m_t, t) + k_x * (xv - m_t) + k_0);
    }
}

/// Planes per parallel run of a sweep: enough for 16K values.
fn sweep_run(g: &Geometry) -> usize {
    ((1 << 14) / g.s.max(1)).max(1)
}

/// `f(plane)` for every plane, in memory order (in parallel when `parallel`, in runs of
/// [`sweep_run`] planes); results in plane order.
fn map_planes<R: Send>(g: &Geometry, parallel: bool, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let planes = g.n * g.c;
    if parallel {
        (0..planes)
            .into_par_iter()
            .with_min_len(sweep_run(g))
            .map(&f)
            .collect()
    } else {
        (0..planes).map(f).collect()
    }
}

/// A new vector of `len` values written plane by plane, in memory order, by `f(plane, out)`,
/// which must write all of `out` (in parallel when `parallel`, in runs of [`sweep_run`] planes).
pub(crate) fn fill_planes<T: Float>(
    len: usize,
    g: &Geometry,
    parallel: bool,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    if len > 0 {
        let slots = &mut out.spare_capacity_mut()[..len];
        if parallel {
            slots
                .par_chunks_mut(g.s)
                .enumerate()
                .with_min_len(sweep_run(g))
                .for_each(|(p, o)| f(p, o));
        } else {
            slots.chunks_mut(g.s).enumerate().for_each(|(p, o)| f(p, o));
        }
    }
    // SAFETY: the planes cover the first `len` slots and `f` wrote each.
    unsafe { out.set_len(len) };
    out
}

fn slice<'a, T>(v: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused norm kernel: `{what}` must be contiguous"),
    }
}

/// A three-input op's output over contiguous storages of one dtype, f32 (`f32`) or f64 (`f64`),
/// in the shape of the first; `names` name the inputs in errors.
pub(crate) fn three_storages(
    names: [&str; 3],
    inputs: [(&CpuStorage, &Layout); 3],
    f32: impl FnOnce([&[f32]; 3]) -> Vec<f32>,
    f64: impl FnOnce([&[f64]; 3]) -> Vec<f64>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let [(s1, l1), (s2, l2), (s3, l3)] = inputs;
    let out = match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => CpuStorage::F32(f32([
            slice(a, l1, names[0])?,
            slice(b, l2, names[1])?,
            slice(c, l3, names[2])?,
        ])),
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => CpuStorage::F64(f64([
            slice(a, l1, names[0])?,
            slice(b, l2, names[1])?,
            slice(c, l3, names[2])?,
        ])),
        _ => candle_core::bail!(
            "fused norm kernel: {}, {} and {} must all be f32 or all f64, got {:?}, {:?}, {:?}",
            names[0],
            names[1],
            names[2],
            s1.dtype(),
            s2.dtype(),
            s3.dtype()
        ),
    };
    Ok((out, l1.shape().clone()))
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
    /// The statistics and output, on the schedule the layout calls for: block by block while
    /// each block is in cache where a block's planes are consecutive (GroupNorm and its kin), or
    /// in three sweeps through memory in order where they are not (BatchNorm, whose channel's
    /// planes sit C·H·W apart, where reading block by block jumps from plane to plane faster
    /// than the hardware prefetchers follow). The same sums in the same order either way.
    fn run<T: Float>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        if self.relu {
            self.run_with::<T, true>(x, gamma, beta)
        } else {
            self.run_with::<T, false>(x, gamma, beta)
        }
    }

    /// [`NormFwd::run`] with the ReLU chosen at compile time.
    fn run_with<T: Float, const RELU: bool>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let (y, moments) = if self.geom.blocks_contiguous() {
            self.by_blocks::<T, RELU>(x, gamma, beta)
        } else {
            self.by_sweeps::<T, RELU>(x, gamma, beta)
        };
        let _ = self.stats.set(Arc::new(Stats::from_moments(&moments)));
        y
    }

    /// Block by block: the block's statistics, then its output while the block is still in
    /// cache. Returns the output and each block's `(mean, var, rstd)`.
    fn by_blocks<T: Float, const RELU: bool>(
        &self,
        x: &[T],
        gamma: &[T],
        beta: &[T],
    ) -> (Vec<T>, Vec<(f64, f64, f64)>) {
        let g = &self.geom;
        let s = g.s;
        fill_blocks(x.len(), g, parallel_for(x.len()), |b, out| {
            let (mean, var) = block_stats(x, g, b);
            let (mean, var, rstd) = self.moment(mean, var);
            // y = (x − m̃)·a + (β − (m − m̃)·a), m̃ the mean rounded to T: x − m̃ loses nothing
            // where x·a + (β − m·a) would cancel digits of a mean large against the spread.
            let (m_t, off) = rounded_mean::<T>(mean);
            for p in g.block_planes(b) {
                let c = p % g.c;
                let t = plane_affine::<T>(rstd, gamma[c].f64(), beta[c].f64(), off);
                // SAFETY: plane p belongs to block b only.
                let o = unsafe { out.plane(p) };
                forward_plane::<T, RELU>(o, &x[p * s..(p + 1) * s], m_t, t);
            }
            (mean, var, rstd)
        })
    }

    /// In three sweeps through memory in order: every plane's shifted sum, then (the means
    /// folded per block) every plane's centered squares, then (the variances folded) every
    /// output plane. Returns what [`NormFwd::by_blocks`] returns, bit for bit.
    fn by_sweeps<T: Float, const RELU: bool>(
        &self,
        x: &[T],
        gamma: &[T],
        beta: &[T],
    ) -> (Vec<T>, Vec<(f64, f64, f64)>) {
        let g = &self.geom;
        let par = parallel_for(x.len());
        let s = g.s;
        let plane = |p: usize| &x[p * s..(p + 1) * s];
        let moments = self.sweep_moments(x);
        let rounded: Vec<(T, f64)> = moments.iter().map(|m| rounded_mean::<T>(m.0)).collect();
        let y = fill_planes(x.len(), g, par, |p, o| {
            let (b, c) = (g.block_of(p), p % g.c);
            let (m_t, off) = rounded[b];
            let t = plane_affine::<T>(moments[b].2, gamma[c].f64(), beta[c].f64(), off);
            forward_plane::<T, RELU>(o, plane(p), m_t, t);
        });
        (y, moments)
    }

    /// The first two sweeps of [`NormFwd::by_sweeps`]: every plane's shifted sum, then (the
    /// means folded per block) every plane's centered squares. Returns each block's `(mean,
    /// var, rstd)`.
    fn sweep_moments<T: Float>(&self, x: &[T]) -> Vec<(f64, f64, f64)> {
        let g = &self.geom;
        let (s, blocks) = (g.s, g.blocks());
        let par = parallel_for(x.len());
        let plane = |p: usize| &x[p * s..(p + 1) * s];
        let shifts: Vec<T> = (0..blocks).map(|b| block_shift(x, g, b)).collect();
        let sums = map_planes(g, par, |p| shifted_sum(plane(p), shifts[g.block_of(p)]));
        let means: Vec<f64> = (0..blocks)
            .map(|b| block_mean(g, shifts[b], fold_block(g, b, &sums)))
            .collect();
        let rounded: Vec<(T, f64)> = means.iter().map(|&m| rounded_mean::<T>(m)).collect();
        let squares = map_planes(g, par, |p| {
            centered_squares(plane(p), rounded[g.block_of(p)].0)
        });
        (0..blocks)
            .map(|b| {
                let var = block_var(g, fold_block(g, b, &squares), rounded[b].1);
                self.moment(means[b], var)
            })
            .collect()
    }

    /// A block's `(mean, var, rstd)` from its mean and biased variance: rstd = 1/√(var + eps).
    #[inline(always)]
    fn moment(&self, mean: f64, var: f64) -> (f64, f64, f64) {
        (mean, var, 1.0 / (var + self.eps).sqrt())
    }

    /// Each block's `(mean, var, rstd)` alone, the same bits as [`NormFwd::run`] computes them
    /// on the same schedule.
    fn moments<T: Float>(&self, x: &[T]) -> Vec<(f64, f64, f64)> {
        let g = &self.geom;
        if g.blocks_contiguous() {
            map_blocks(g.blocks(), parallel_for(x.len()), |b| {
                let (mean, var) = block_stats(x, g, b);
                self.moment(mean, var)
            })
        } else {
            self.sweep_moments(x)
        }
    }
}

/// A normalization in front of a convolution that applies it as it reads its input
/// (`explr_nn::conv2d_normed`): the forward pass takes the statistics only (as [`NormFwd`]
/// does, the same bits) and hands the convolution each plane's `(m̃, scale, shift)`, which it
/// applies exactly as [`NormFwd`] writes its output ([`affine`], then the ReLU); the backward
/// pass is [`NormBwd`]'s.
pub(crate) struct NormInput {
    pub fwd: NormFwd,
    /// γ and β per channel, in f64 (exact for f32 and f64 tensors).
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
}

impl NormInput {
    /// Statistics of `x` and the per-plane map.
    fn map<T: Float>(&self, x: &[T]) -> explr_nn::PlaneAffine {
        let g = &self.fwd.geom;
        let moments = self.fwd.moments(x);
        let planes = g.n * g.c;
        let mut map = explr_nn::PlaneAffine {
            centre: Vec::with_capacity(planes),
            scale: Vec::with_capacity(planes),
            shift: Vec::with_capacity(planes),
            relu: self.fwd.relu,
        };
        for p in 0..planes {
            let (b, c) = (g.block_of(p), p % g.c);
            let (m_t, off) = rounded_mean::<T>(moments[b].0);
            let (scale, shift) = plane_affine::<T>(moments[b].2, self.gamma[c], self.beta[c], off);
            map.centre.push(m_t.f64());
            map.scale.push(scale.f64());
            map.shift.push(shift.f64());
        }
        let _ = self.fwd.stats.set(Arc::new(Stats::from_moments(&moments)));
        map
    }
}

impl explr_nn::InputNorm for NormInput {
    fn forward(
        &self,
        x: candle_core::CpuStorageRef<'_>,
        dims: [usize; 4],
    ) -> candle_core::Result<explr_nn::PlaneAffine> {
        let g = &self.fwd.geom;
        if [dims[0], dims[1], dims[2] * dims[3]] != [g.n, g.c, g.s] {
            candle_core::bail!(
                "fused norm: the convolution's input is {dims:?}, the normalization's {} × {} \
                 planes of {}",
                g.n,
                g.c,
                g.s
            )
        }
        match x {
            candle_core::CpuStorageRef::F32(x) => Ok(self.map(x)),
            candle_core::CpuStorageRef::F64(x) => Ok(self.map(x)),
            _ => candle_core::bail!("fused norm: the input must be f32 or f64"),
        }
    }

    fn backward(&self, x: &Tensor, dy: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        backward(&self.fwd, (&self.gamma, &self.beta), x, dy)
    }
}

/// A per-channel parameter's values in f64 (exact for f32 and f64 tensors).
pub(crate) fn f64s(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()
}

/// The backward pass of `fwd` ([`NormBwd`]) from `x` and the gradient `dz` at its output, with
/// `γ`, `β` in f64: `(dx, dγ, dβ)` in `x`'s dtype.
fn backward(
    fwd: &NormFwd,
    (gamma, beta): (&[f64], &[f64]),
    x: &Tensor,
    dz: &Tensor,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let stats = match fwd.stats.get() {
        Some(s) => s.clone(),
        None => candle_core::bail!("fused norm backward: forward statistics are missing"),
    };
    let op = NormBwd {
        geom: fwd.geom,
        stats,
        relu: fwd.relu,
        gamma: gamma.to_vec(),
        beta: beta.to_vec(),
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
        Tensor::from_slice(v, fwd.geom.c, x.device())?.to_dtype(x.dtype())
    };
    Ok((dx, param(dgamma)?, param(dbeta)?))
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
        three_storages(
            ["x", "weight", "bias"],
            [(s1, l1), (s2, l2), (s3, l3)],
            |[x, w, b]| self.run(x, w, b),
            |[x, w, b]| self.run(x, w, b),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _z: &Tensor,
        dz: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dgamma, dbeta) = backward(self, (&f64s(gamma)?, &f64s(beta)?), x, dz)?;
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
    /// On the forward pass's schedule ([`NormFwd::run`]): block by block, the block's sums then
    /// its `dx` from cache, or in two sweeps through memory in order.
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
        let (dx, per_plane) = if g.blocks_contiguous() {
            self.by_blocks::<T, RELU>(x, dz)
        } else {
            self.by_sweeps::<T, RELU>(x, dz)
        };
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

    /// `(m̃, m − m̃, rstd)` of block `b` ([`rounded_mean`]).
    fn centre<T: Float>(&self, b: usize) -> (T, f64, f64) {
        let (m_t, off) = rounded_mean::<T>(self.stats.mean[b]);
        (m_t, off, self.stats.rstd[b])
    }

    /// `(k_x, k_0)` of a block from its centre ([`NormBwd::centre`]) and its γ-weighted sums
    /// `a = Σγ·dy`, `bsum = Σγ·dy·x̂`.
    fn coefficients<T: Float>(&self, (_, off, r): (T, f64, f64), a: f64, bsum: f64) -> (T, T) {
        let count = self.geom.count() as f64;
        let k_x = -r * r * bsum / count;
        let k_0 = -r * a / count - off * k_x;
        (T::of(k_x), T::of(k_0))
    }

    /// A block's γ-weighted sums `(Σγ·dy, Σγ·dy·x̂)` from its planes' `(p, (Σ dy, Σ dy·x̂))`, in
    /// the order given (the block's plane order).
    fn weighted_sums(&self, planes: impl Iterator<Item = (usize, (f64, f64))>) -> (f64, f64) {
        let (mut a, mut bsum) = (0.0, 0.0);
        for (p, (sdy, sdyx)) in planes {
            let gc = self.gamma[p % self.geom.c];
            a += gc * sdy;
            bsum += gc * sdyx;
        }
        (a, bsum)
    }

    /// Block by block: the block's per-plane sums, then its `dx` while it is in cache. Returns
    /// `dx` and every plane's `(Σ dy, Σ dy·x̂)`.
    fn by_blocks<T: Float, const RELU: bool>(
        &self,
        x: &[T],
        dz: &[T],
    ) -> (Vec<T>, Vec<(f64, f64)>) {
        let g = &self.geom;
        let s = g.s;
        let planes = g.n * g.c;
        let mut per_plane: Vec<(f64, f64)> = Vec::with_capacity(planes);
        let sums = PlaneWriter {
            ptr: per_plane.spare_capacity_mut().as_mut_ptr(),
            s: 1,
        };
        let (dx, _) = fill_blocks(x.len(), g, parallel_for(x.len()), |b, out| {
            let centre = self.centre::<T>(b);
            let affine_of =
                |c: usize| plane_affine::<T>(centre.2, self.gamma[c], self.beta[c], centre.1);
            let (a, bsum) = self.weighted_sums(g.block_planes(b).map(|p| {
                let plane = p * s..(p + 1) * s;
                let sums_p = gradient_sums::<T, RELU>(
                    &x[plane.clone()],
                    &dz[plane],
                    centre,
                    affine_of(p % g.c),
                );
                // SAFETY: plane p belongs to block b only.
                unsafe { sums.plane(p)[0].write(sums_p) };
                (p, sums_p)
            }));
            let k = self.coefficients(centre, a, bsum);
            for p in g.block_planes(b) {
                // SAFETY: plane p belongs to block b only.
                let o = unsafe { out.plane(p) };
                let plane = p * s..(p + 1) * s;
                backward_plane::<T, RELU>(
                    o,
                    (&x[plane.clone()], &dz[plane]),
                    centre.0,
                    affine_of(p % g.c),
                    k,
                );
            }
        });
        // SAFETY: every plane belongs to exactly one block, which wrote its sums.
        unsafe { per_plane.set_len(planes) };
        (dx, per_plane)
    }

    /// In two sweeps through memory in order: every plane's sums, then (the blocks' sums folded
    /// in plane order) every plane of `dx`. Returns what [`NormBwd::by_blocks`] returns, bit for
    /// bit.
    fn by_sweeps<T: Float, const RELU: bool>(
        &self,
        x: &[T],
        dz: &[T],
    ) -> (Vec<T>, Vec<(f64, f64)>) {
        let g = &self.geom;
        let s = g.s;
        let par = parallel_for(x.len());
        let centres: Vec<(T, f64, f64)> = (0..g.blocks()).map(|b| self.centre::<T>(b)).collect();
        let affine_of = |p: usize| {
            let (c, centre) = (p % g.c, centres[g.block_of(p)]);
            plane_affine::<T>(centre.2, self.gamma[c], self.beta[c], centre.1)
        };
        let per_plane = map_planes(g, par, |p| {
            let plane = p * s..(p + 1) * s;
            gradient_sums::<T, RELU>(
                &x[plane.clone()],
                &dz[plane],
                centres[g.block_of(p)],
                affine_of(p),
            )
        });
        let ks: Vec<(T, T)> = (0..g.blocks())
            .map(|b| {
                let (a, bsum) = self.weighted_sums(g.block_planes(b).map(|p| (p, per_plane[p])));
                self.coefficients(centres[b], a, bsum)
            })
            .collect();
        let dx = fill_planes(x.len(), g, par, |p, o| {
            let b = g.block_of(p);
            let plane = p * s..(p + 1) * s;
            backward_plane::<T, RELU>(
                o,
                (&x[plane.clone()], &dz[plane]),
                centres[b].0,
                affine_of(p),
                ks[b],
            );
        });
        (dx, per_plane)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values around `offset`, spread about 1.
    fn values<T: Float>(len: usize, salt: f64, offset: f64) -> Vec<T> {
        (0..len)
            .map(|i| T::of(offset + (i as f64 * 0.7317 + salt).sin() * 1.3))
            .collect()
    }

    fn bits<T: Float>(v: &[T]) -> Vec<u64> {
        v.iter().map(|x| x.f64().to_bits()).collect()
    }

    /// BatchNorm's two schedules, block by block and in sweeps through memory, give the same
    /// statistics, output, input gradient and per-plane sums, bit for bit.
    fn schedules_agree<T: Float, const RELU: bool>(n: usize, c: usize, s: usize, offset: f64) {
        let geom = Geometry {
            n,
            c,
            s,
            grouping: Grouping::PerChannel,
        };
        let len = n * c * s;
        let (x, dz) = (values::<T>(len, 0.1, offset), values::<T>(len, 2.3, 0.0));
        let (gamma, beta) = (values::<T>(c, 4.0, 1.0), values::<T>(c, 5.0, 0.0));
        let fwd = NormFwd {
            geom,
            eps: 1e-5,
            relu: RELU,
            stats: Default::default(),
        };
        let (y_blocks, m_blocks) = fwd.by_blocks::<T, RELU>(&x, &gamma, &beta);
        let (y_sweeps, m_sweeps) = fwd.by_sweeps::<T, RELU>(&x, &gamma, &beta);
        let what = format!("{n}×{c}×{s}, offset {offset}, relu {RELU}");
        assert_eq!(bits(&y_blocks), bits(&y_sweeps), "forward output, {what}");
        let moments = |m: &[(f64, f64, f64)]| -> Vec<u64> {
            m.iter()
                .flat_map(|&(a, b, c)| [a, b, c].map(f64::to_bits))
                .collect()
        };
        assert_eq!(moments(&m_blocks), moments(&m_sweeps), "statistics, {what}");
        let bwd = NormBwd {
            geom,
            stats: Arc::new(Stats::from_moments(&m_blocks)),
            relu: RELU,
            gamma: gamma.iter().map(|v| v.f64()).collect(),
            beta: beta.iter().map(|v| v.f64()).collect(),
            param_grads: Default::default(),
        };
        let (dx_blocks, sums_blocks) = bwd.by_blocks::<T, RELU>(&x, &dz);
        let (dx_sweeps, sums_sweeps) = bwd.by_sweeps::<T, RELU>(&x, &dz);
        assert_eq!(bits(&dx_blocks), bits(&dx_sweeps), "input gradient, {what}");
        let sums = |v: &[(f64, f64)]| -> Vec<u64> {
            v.iter()
                .flat_map(|&(a, b)| [a, b].map(f64::to_bits))
                .collect()
        };
        assert_eq!(
            sums(&sums_blocks),
            sums(&sums_sweeps),
            "gradient sums, {what}"
        );
        // Not vacuous: without the ReLU, no output or input gradient is zero here.
        if !RELU {
            assert!(y_blocks.iter().all(|v| v.f64() != 0.0), "{what}");
            assert!(dx_blocks.iter().all(|v| v.f64() != 0.0), "{what}");
        }
    }

    #[test]
    fn batch_norm_sweeps_match_blocks_bit_for_bit() {
        // Planes shorter and longer than the lanes, with a remainder, one sample, and a mean
        // large against the spread (the f32 rounding path).
        for (n, c, s) in [(3, 4, 35), (5, 3, 64), (2, 2, 1), (1, 3, 20), (4, 6, 17)] {
            for offset in [0.0, 1000.0] {
                schedules_agree::<f32, false>(n, c, s, offset);
                schedules_agree::<f32, true>(n, c, s, offset);
                schedules_agree::<f64, false>(n, c, s, offset);
                schedules_agree::<f64, true>(n, c, s, offset);
            }
        }
    }
}
