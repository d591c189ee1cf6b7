//! CPU kernels of [`crate::conv2d`], in three kernel sets ([`ConvKernels`]): the direct
//! kernels of `direct` on x86-64 CPUs with AVX-512 or AVX2 + FMA (no im2col), and im2col /
//! col2im per sample with `gemm` matrix products, parallel over samples with Rayon, on every
//! CPU. Each convolution pass runs on [`ConvKernels::in_use`]: the widest set the CPU has, unless
//! [`ConvKernels::force`] chose another.
//!
//! Notation (NCHW, as in PyTorch's `nn.Conv2d`; THEORY.md has no convolution formula): input `x` is `[n, c, h, w]`, weight `[k, c, kh, kw]`,
//! output `y` is `[n, k, oh, ow]`, `p = oh·ow` output positions and `ckk = c·kh·kw` patch length.
//! For one sample, `col` is the `[ckk, p]` matrix of input patches, and
//!
//! - forward:         `y_n  = W · col_n`                 (`[k, p] = [k, ckk]·[ckk, p]`)
//! - input gradient:  `dx_n = col2im(Wᵀ · dy_n)`         (`[ckk, p] = [ckk, k]·[k, p]`)
//! - weight gradient: `dW   = Σ_n dy_n · col_nᵀ`          (`[k, ckk] = [k, p]·[p, ckk]`)
//!
//! A 1×1 convolution with stride 1 and no padding skips im2col: `col_n` is `x_n` itself.
//! Per-sample buffers (at most `ckk·p` elements, 590 KB for 16 channels at 32×32 in f32) stay
//! in cache, where a whole-batch im2col would need 75 MB.

mod direct;

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::WithDType;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::{NnError, Result};

/// The CPU kernel sets [`crate::conv2d`] runs on. By default every convolution uses the widest
/// this CPU has ([`ConvKernels::detected`]); [`ConvKernels::force`] makes the whole process use
/// another, so that a benchmark can measure each set on one machine, or a user can check that a
/// result does not depend on it. All three compute the same convolution; they sum in different
/// orders, so results differ at rounding level.
///
/// ```
/// use explr_nn::ConvKernels;
///
/// // im2col + gemm runs on every CPU.
/// ConvKernels::force(Some(ConvKernels::Im2col))?;
/// assert_eq!(ConvKernels::in_use(), ConvKernels::Im2col);
/// // A set this CPU lacks is refused, and the previous choice stays.
/// if !ConvKernels::Avx512.is_supported() {
///     assert!(ConvKernels::force(Some(ConvKernels::Avx512)).is_err());
///     assert_eq!(ConvKernels::in_use(), ConvKernels::Im2col);
/// }
/// ConvKernels::force(None)?; // back to the widest this CPU has
/// assert_eq!(ConvKernels::in_use(), ConvKernels::detected());
/// # Ok::<(), explr_nn::NnError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvKernels {
    /// Direct kernels on 512-bit vectors: x86-64 with AVX-512F (on a CPU that executes them
    /// as two 256-bit halves, AMD's Zen 4, the products whose rows are a whole number of
    /// 256-bit vectors but not of 512-bit ones, such as 8 f32 or 4 f64 values, run on 256-bit
    /// AVX-512VL vectors, which compute no discarded columns; the same bits).
    Avx512,
    /// Direct kernels on 256-bit vectors: x86-64 with AVX2 and FMA.
    Avx2,
    /// im2col / col2im and `gemm` (which picks its own SIMD): every CPU.
    Im2col,
}

/// The set [`ConvKernels::force`] chose: 0 for none, else 1 + its index in [`ConvKernels::ALL`].
static FORCED: AtomicU8 = AtomicU8::new(0);

impl ConvKernels {
    /// Every kernel set, widest first.
    pub const ALL: [Self; 3] = [Self::Avx512, Self::Avx2, Self::Im2col];

    /// The set's name: `avx512`, `avx2` or `im2col` (what [`str::parse`] reads).
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Im2col => "im2col",
        }
    }

    /// What a CPU needs to run the set.
    pub fn requirement(self) -> &'static str {
        match self {
            Self::Avx512 => "an x86-64 CPU with AVX-512F",
            Self::Avx2 => "an x86-64 CPU with AVX2 and FMA",
            Self::Im2col => "nothing",
        }
    }

    /// Whether this CPU can run the set.
    pub fn is_supported(self) -> bool {
        match self {
            Self::Im2col => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx512 | Self::Avx2 => false,
        }
    }

    /// The widest set this CPU runs: what [`crate::conv2d`] uses unless [`ConvKernels::force`]
    /// chose another.
    pub fn detected() -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.is_supported())
            .unwrap_or(Self::Im2col)
    }

    /// The set convolutions run on now: the forced one, else [`ConvKernels::detected`].
    pub fn in_use() -> Self {
        match FORCED.load(Ordering::Relaxed) {
            0 => Self::detected(),
            i => Self::ALL[usize::from(i - 1)],
        }
    }

    /// Makes every convolution of the process started from now on run on `choice`, or (`None`)
    /// on the detected set again. Each convolution pass reads the choice once when it starts,
    /// so calling this while another thread convolves is safe: that pass finishes on the set it
    /// started with.
    ///
    /// # Errors
    /// [`NnError::UnsupportedConvKernels`] when this CPU cannot run `choice`; the previous
    /// choice stays in effect.
    pub fn force(choice: Option<Self>) -> Result<()> {
        let code = match choice {
            None => 0,
            Some(k) if !k.is_supported() => {
                return Err(NnError::UnsupportedConvKernels {
                    requested: k,
                    supported: Self::ALL.into_iter().filter(|k| k.is_supported()).collect(),
                })
            }
            Some(k) => 1 + Self::ALL.iter().position(|&a| a == k).unwrap_or(0) as u8,
        };
        FORCED.store(code, Ordering::Relaxed);
        Ok(())
    }

    /// The instruction set of a direct set (`None` for im2col). Only a supported set is ever
    /// in use, so the CPU has the returned one.
    fn isa(self) -> Option<direct::Isa> {
        match self {
            Self::Avx512 => Some(direct::Isa::Avx512),
            Self::Avx2 => Some(direct::Isa::Avx2),
            Self::Im2col => None,
        }
    }
}

impl fmt::Display for ConvKernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ConvKernels {
    type Err = NnError;

    /// `avx512`, `avx2` or `im2col`.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                NnError::InvalidConfig(format!(
                    "unknown convolution kernel set `{s}`: expected avx512, avx2 or im2col"
                ))
            })
    }
}

/// Shapes, stride and padding of one convolution; every size is in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub k: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride in both spatial dimensions.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Geometry {
    /// Output positions per channel.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Length of one patch (rows of `col`).
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Elements of one input sample.
    pub fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Elements of one output sample.
    pub fn out_len(&self) -> usize {
        self.k * self.p()
    }

    /// Elements of the weight.
    pub fn w_len(&self) -> usize {
        self.k * self.ckk()
    }

    /// True when `col_n` is `x_n` itself (1×1 kernel, stride 1, no padding).
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    fn col_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.ckk() * self.p()
        }
    }

    /// Output columns `lo..hi` whose input column `ox·stride + kj − padding` lies in `0..w`.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let (s, pad) = (self.stride, self.padding);
        let lo = if pad > kj { (pad - kj).div_ceil(s) } else { 0 }.min(self.ow);
        let hi = if self.w + pad > kj {
            ((self.w - 1 + pad - kj) / s + 1).min(self.ow)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
}

/// The map a convolution applies to its input as its kernels read it: the output of a
/// normalization and its ReLU, `max((x − centre)·scale + shift, 0)` per (sample, channel) plane
/// ([`crate::PlaneAffine`] in the kernels' type), so that the normalized tensor is never
/// written out. Each value is computed exactly as the normalization computes it, so the
/// convolution sees the same bits.
pub(crate) struct InputAffine<T> {
    /// `[centre, scale, shift]` of plane `sample·c + channel`.
    pub planes: Vec<[T; 3]>,
    /// Whether the ReLU follows the affine map.
    pub relu: bool,
}

impl<T: Float> InputAffine<T> {
    /// `map` in the kernels' type: every value is one of `T` (it came from one), so the
    /// conversion is exact.
    pub fn of(map: &crate::PlaneAffine) -> Self {
        let planes = (map.centre.iter().zip(&map.scale).zip(&map.shift))
            .map(|((&m, &a), &b)| [T::from_f64(m), T::from_f64(a), T::from_f64(b)])
            .collect();
        InputAffine {
            planes,
            relu: map.relu,
        }
    }

    /// The value map of plane `p`.
    #[inline(always)]
    pub fn plane(&self, p: usize) -> impl Fn(T) -> T + Copy {
        let ([m, a, b], relu) = (self.planes[p], self.relu);
        move |v: T| {
            let y = (v - m) * a + b;
            // A select, not a branch per value, as the normalization's own pass.
            if relu {
                std::hint::select_unpredictable(y < T::zero(), T::zero(), y)
            } else {
                y
            }
        }
    }

    /// The whole mapped input, `x` being `planes.len()` planes of `plane_len` values: for the
    /// kernel sets that read their input in place (im2col), which need it written out.
    pub fn materialize(&self, x: &[T], plane_len: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(x.len());
        for (p, xs) in x.chunks_exact(plane_len.max(1)).enumerate() {
            out.extend(xs.iter().map(|&v| self.plane(p)(v)));
        }
        out
    }
}

/// The element types the kernels run on (`gemm` supports both natively), with the direct
/// kernels' product for each.
pub(crate) trait Float: WithDType {
    /// Lanes of one vector of this type on `isa`.
    fn lanes(isa: direct::Isa) -> usize;

    /// The side of the square tiles [`Float::transpose_tile`] transposes.
    const TILE: usize;

    /// `dst[j·ldd + i] = src[i·lds + j]` for `i, j < TILE`, in vector registers.
    ///
    /// # Safety
    /// `src` must be readable and `dst` writable at those places, and the CPU must have AVX.
    unsafe fn transpose_tile(src: *const Self, lds: usize, dst: *mut Self, ldd: usize);

    /// `c[i·ldc + col.c + l] (+)= Σ_run Σ_{j < run.len} a[a_rows[i] + run.a + j] ·
    /// b[b_rows[run.b + j] + col.b + l]` for every row `i < a_rows.len()`, column vector `col`
    /// of `columns` and lane `l < col.lanes`, overwritten unless `accumulate`. Row `i` of the
    /// left factor is contiguous within a run, row `j` of the right factor from `b_rows[j]`: the
    /// weight matrix and a padded sample's shifted rows in the forward pass, a padded sample's
    /// shifted rows and `dyᵀ` in the weight gradient. Each output's sum runs over the runs and
    /// their steps in order, whatever the blocking.
    ///
    /// # Safety
    /// `a` must be readable at every `a_rows[i] + run.a + j`, `b` at every `b_rows[run.b + j] +
    /// col.b + l`; `c` must be writable, exclusively, at every `i·ldc + col.c + l`; no column may
    /// have more lanes than a vector; the CPU must have `isa`.
    unsafe fn product(
        isa: direct::Isa,
        a: (*const Self, &[usize]),
        b: (*const Self, &[usize]),
        reduction_and_columns: (&[direct::Run], &[direct::Column]),
        c: (*mut Self, usize),
        accumulate: bool,
    );
}

/// `Float` for a type whose products are `$kernel` in `direct::x86::{avx512, avx2}`, with
/// `$avx512` and `$avx2` lanes per vector, and whose tiles `direct::x86::$transpose` transposes.
macro_rules! float_with_product {
    ($t:ty, $kernel:ident, $avx512:literal, $avx2:literal, $transpose:ident) => {
        impl Float for $t {
            const TILE: usize = 32 / std::mem::size_of::<$t>();

            unsafe fn transpose_tile(src: *const $t, lds: usize, dst: *mut $t, ldd: usize) {
                #[cfg(target_arch = "x86_64")]
                direct::x86::$transpose(src, lds, dst, ldd);
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("no CPU off x86-64 has AVX ({src:?}, {lds}, {dst:?}, {ldd})");
            }

            fn lanes(isa: direct::Isa) -> usize {
                match isa {
                    direct::Isa::Avx512 => $avx512,
                    direct::Isa::Avx512Narrow | direct::Isa::Avx2 => $avx2,
                }
            }

            unsafe fn product(
                isa: direct::Isa,
                a: (*const $t, &[usize]),
                b: (*const $t, &[usize]),
                reduction_and_columns: (&[direct::Run], &[direct::Column]),
                c: (*mut $t, usize),
                accumulate: bool,
            ) {
                #[cfg(target_arch = "x86_64")]
                match isa {
                    direct::Isa::Avx512 => {
                        direct::x86::avx512::$kernel(a, b, reduction_and_columns, c, accumulate)
                    }
                    direct::Isa::Avx512Narrow => direct::x86::avx512_narrow::$kernel(
                        a,
                        b,
                        reduction_and_columns,
                        c,
                        accumulate,
                    ),
                    direct::Isa::Avx2 => {
                        direct::x86::avx2::$kernel(a, b, reduction_and_columns, c, accumulate)
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!(
                    "no CPU off x86-64 supports {isa:?} ({a:?}, {b:?}, {reduction_and_columns:?}, {c:?}, {accumulate})"
                );
            }
        }
    };
}
float_with_product!(f32, product_f32, 16, 8, transpose_f32);
float_with_product!(f64, product_f64, 8, 4, transpose_f64);

/// Inner `gemm` parallelism: none when Rayon already splits `jobs` across every thread.
fn inner_parallelism(jobs: usize) -> Parallelism {
    let threads = candle_core::utils::get_num_threads();
    if threads <= 1 || jobs >= threads {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// Row-major strides `(row, column)` of a matrix view.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

// SAFETY: a `Mat` is a read-only view of data the caller keeps alive and unmodified for the
// whole parallel section, so sharing it between Rayon workers is sound.
unsafe impl<T: Sync> Send for Mat<T> {}
unsafe impl<T: Sync> Sync for Mat<T> {}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, `dst` row-major with row stride `n`.
///
/// # Safety
/// Every view must address `m·k`, `k·n` and `m·n` valid elements, `dst` exclusively.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    par: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        T::one(),
        T::one(),
        false,
        false,
        false,
        par,
    )
}

/// Fills `col` (`[ckk, p]`) with the zero-padded patches of one input sample `x` (`[c, h, w]`).
fn im2col<T: Float>(g: &Geometry, x: &[T], col: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    for c in 0..g.c {
        let xc = &x[c * hw..(c + 1) * hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &mut col[((c * g.kh + ki) * g.kw + kj) * p..][..p];
                let (lo, hi) = g.valid_cols(kj);
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let iy = oy * g.stride + ki;
                    if iy < g.padding || iy - g.padding >= g.h {
                        dst.fill(T::zero());
                        continue;
                    }
                    let src = &xc[(iy - g.padding) * g.w..][..g.w];
                    dst[..lo].fill(T::zero());
                    dst[hi..].fill(T::zero());
                    let first = lo * g.stride + kj - g.padding;
                    if g.stride == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                    } else {
                        for (d, s) in dst[lo..hi]
                            .iter_mut()
                            .zip(src[first..].iter().step_by(g.stride))
                        {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// Adds every entry of `col` (`[ckk, p]`) into the input position it was read from by
/// [`im2col`]; `dx` (`[c, h, w]`) accumulates.
fn col2im<T: Float>(g: &Geometry, col: &[T], dx: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    for c in 0..g.c {
        let dxc = &mut dx[c * hw..(c + 1) * hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &col[((c * g.kh + ki) * g.kw + kj) * p..][..p];
                let (lo, hi) = g.valid_cols(kj);
                for oy in 0..g.oh {
                    let iy = oy * g.stride + ki;
                    if iy < g.padding || iy - g.padding >= g.h {
                        continue;
                    }
                    let src = &row[oy * g.ow..(oy + 1) * g.ow];
                    let dst = &mut dxc[(iy - g.padding) * g.w..][..g.w];
                    let first = lo * g.stride + kj - g.padding;
                    if g.stride == 1 {
                        for (d, s) in dst[first..first + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[first..].iter_mut().step_by(g.stride).zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

/// Forward pass: `y = conv2d(map(x), w)`, plus `residual` (of `y`'s shape) when given, `x`,
/// `w` and `residual` contiguous, `map` the identity when `None`; returns `y` contiguous. On the
/// kernel set in use (the direct kernels apply `map` as they lay each sample out, im2col
/// writes the mapped input first).
pub(crate) fn forward<T: Float>(
    g: &Geometry,
    (x, map): (&[T], Option<&InputAffine<T>>),
    w: &[T],
    residual: Option<&[T]>,
) -> Vec<T> {
    match ConvKernels::in_use().isa() {
        Some(isa) if g.out_len() > 0 => direct::forward(
            (isa, direct::narrow_vectors_pay()),
            g,
            (x, map),
            w,
            residual,
        ),
        _ => match map {
            Some(map) => forward_im2col(g, &map.materialize(x, g.h * g.w), w, residual),
            None => forward_im2col(g, x, w, residual),
        },
    }
}

/// `y += r` over one sample's output, which the product has just written and which is still in
/// cache: the residual sum costs one read of `r` instead of a pass of its own over `y`. Each
/// element is `y + r` rounded once, as a separate addition computes it.
fn add_residual<T: Float>(y: &mut [T], r: &[T]) {
    for (y, r) in y.iter_mut().zip(r) {
        *y += *r;
    }
}

/// [`forward`] through im2col and `gemm`: every geometry, on every CPU.
fn forward_im2col<T: Float>(g: &Geometry, x: &[T], w: &[T], residual: Option<&[T]>) -> Vec<T> {
    let mut y = vec![T::zero(); g.n * g.out_len()];
    if g.out_len() == 0 {
        return y;
    }
    let par = inner_parallelism(g.n);
    let (k, p, ckk) = (g.k, g.p(), g.ckk());
    let w_mat = Mat {
        ptr: w.as_ptr(),
        rs: ckk as isize,
        cs: 1,
    };
    y.par_chunks_mut(g.out_len()).enumerate().for_each_init(
        || vec![T::zero(); g.col_len()],
        |col, (i, yn)| {
            let xn = &x[i * g.in_len()..(i + 1) * g.in_len()];
            let col: &[T] = if g.pointwise() {
                xn
            } else {
                im2col(g, xn, col);
                col
            };
            let rhs = Mat {
                ptr: col.as_ptr(),
                rs: p as isize,
                cs: 1,
            };
            // SAFETY: w is [k, ckk], col is [ckk, p], yn is [k, p], all contiguous.
            unsafe { matmul(k, p, ckk, yn.as_mut_ptr(), false, w_mat, rhs, par) }
            if let Some(r) = residual {
                add_residual(yn, &r[i * g.out_len()..(i + 1) * g.out_len()]);
            }
        },
    );
    y
}

/// The input and weight gradients of a backward pass, each `None` unless asked for.
pub(crate) type Gradients<T> = (Option<Vec<T>>, Option<Vec<T>>);

/// Backward pass from `dy`: the input gradient `dx = conv2d_x_grad(dy, w)` when the weight `w`
/// is given, the weight gradient `dW = conv2d_w_grad(map(x), dy)` when the input `x` is (`map`
/// as in [`forward`]); all contiguous. On the kernel set in use: the direct kernels compute both in one pass over the
/// batch, im2col one after the other.
pub(crate) fn backward<T: Float>(
    g: &Geometry,
    dy: &[T],
    (w, x): (Option<&[T]>, Option<&[T]>),
    map: Option<&InputAffine<T>>,
) -> Gradients<T> {
    match ConvKernels::in_use().isa() {
        Some(isa) if g.n > 0 && g.in_len() > 0 && g.out_len() > 0 && g.w_len() > 0 => {
            let vectors = (isa, direct::narrow_vectors_pay());
            direct::backward(vectors, g, dy, (w, x.map(|x| (x, map))), weight_group(g.n))
        }
        _ => (
            w.map(|w| backward_input_im2col(g, dy, w)),
            x.map(|x| match map {
                Some(map) => backward_weight_im2col(g, &map.materialize(x, g.h * g.w), dy),
                None => backward_weight_im2col(g, x, dy),
            }),
        ),
    }
}

/// The input gradient of [`backward`] through im2col and `gemm`: every geometry, on every CPU.
fn backward_input_im2col<T: Float>(g: &Geometry, dy: &[T], w: &[T]) -> Vec<T> {
    let mut dx = vec![T::zero(); g.n * g.in_len()];
    if g.in_len() == 0 || g.out_len() == 0 {
        return dx;
    }
    let par = inner_parallelism(g.n);
    let (k, p, ckk) = (g.k, g.p(), g.ckk());
    // Wᵀ: [ckk, k] view of the row-major [k, ckk] weight.
    let wt = Mat {
        ptr: w.as_ptr(),
        rs: 1,
        cs: ckk as isize,
    };
    dx.par_chunks_mut(g.in_len()).enumerate().for_each_init(
        || vec![T::zero(); g.col_len()],
        |col, (i, dxn)| {
            let rhs = Mat {
                ptr: dy[i * g.out_len()..].as_ptr(),
                rs: p as isize,
                cs: 1,
            };
            if g.pointwise() {
                // SAFETY: wt is [c, k], dy_n is [k, p], dx_n is [c, p], all in bounds.
                unsafe { matmul(ckk, p, k, dxn.as_mut_ptr(), false, wt, rhs, par) }
            } else {
                // SAFETY: wt is [ckk, k], dy_n is [k, p], col is [ckk, p], all in bounds.
                unsafe { matmul(ckk, p, k, col.as_mut_ptr(), false, wt, rhs, par) }
                col2im(g, col, dxn);
            }
        },
    );
    dx
}

/// Samples per weight-gradient group: a function of the batch size only, so that the
/// summation order, hence every bit of `dW`, does not depend on the thread count.
fn weight_group(n: usize) -> usize {
    n.div_ceil(16).max(1)
}

/// The weight gradient of [`backward`] through im2col and `gemm`: every geometry, on every CPU.
fn backward_weight_im2col<T: Float>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let w_len = g.w_len();
    if g.n == 0 || w_len == 0 || g.out_len() == 0 {
        return vec![T::zero(); w_len];
    }
    let group = weight_group(g.n);
    let groups = g.n.div_ceil(group);
    let par = inner_parallelism(groups);
    let (k, p, ckk) = (g.k, g.p(), g.ckk());
    let partial: Vec<Vec<T>> = (0..groups)
        .into_par_iter()
        .map(|gi| {
            let mut acc = vec![T::zero(); w_len];
            let mut col = vec![T::zero(); g.col_len()];
            for (j, i) in (gi * group..((gi + 1) * group).min(g.n)).enumerate() {
                let xn = &x[i * g.in_len()..(i + 1) * g.in_len()];
                let col: &[T] = if g.pointwise() {
                    xn
                } else {
                    im2col(g, xn, &mut col);
                    &col
                };
                let lhs = Mat {
                    ptr: dy[i * g.out_len()..].as_ptr(),
                    rs: p as isize,
                    cs: 1,
                };
                // colᵀ: [p, ckk] view of the row-major [ckk, p] patches.
                let rhs = Mat {
                    ptr: col.as_ptr(),
                    rs: 1,
                    cs: p as isize,
                };
                // SAFETY: dy_n is [k, p], colᵀ is [p, ckk], acc is [k, ckk].
                unsafe { matmul(k, ckk, p, acc.as_mut_ptr(), j > 0, lhs, rhs, par) }
            }
            acc
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![T::zero(); w_len]);
    for part in parts {
        for (d, s) in dw.iter_mut().zip(&part) {
            *d += *s;
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    //! The two implementations against each other. The integration tests compare
    //! `explr_nn::conv2d` with candle, but on an AVX-512 CPU they only reach the im2col path
    //! for the geometries the direct kernels do not take; here both run on every geometry.
    use super::*;

    fn geometry(
        n: usize,
        c: usize,
        (h, w): (usize, usize),
        k: usize,
        (kh, kw): (usize, usize),
        stride: usize,
        padding: usize,
    ) -> Geometry {
        let (oh, ow) = (
            (h + 2 * padding - kh) / stride + 1,
            (w + 2 * padding - kw) / stride + 1,
        );
        Geometry {
            n,
            c,
            h,
            w,
            k,
            kh,
            kw,
            stride,
            padding,
            oh,
            ow,
        }
    }

    /// Deterministic values in [−1, 1) (a multiplicative hash of the index and salt).
    fn values<T: Float>(len: usize, salt: usize) -> Vec<T> {
        (0..len)
            .map(|i| {
                let v = ((i * 2654435761 + salt * 40503) % 10007) as f64 / 10007.0 * 2.0 - 1.0;
                T::from_f64(v)
            })
            .collect()
    }

    fn max_rel<T: Float>(a: &[T], b: &[T]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().map(|v| v.to_f64().abs()).fold(1e-300, f64::max);
        a.iter()
            .zip(b)
            .map(|(x, y)| (x.to_f64() - y.to_f64()).abs())
            .fold(0.0, f64::max)
            / scale
    }

    fn compare<T: Float>(isa: direct::Isa, g: &Geometry, tol: f64) {
        let x = values::<T>(g.n * g.in_len(), 1);
        let w = values::<T>(g.w_len(), 2);
        let dy = values::<T>(g.n * g.out_len(), 3);
        let y = direct::forward((isa, false), g, (&x, None), &w, None);
        // Both gradients in one pass, and each alone: the same bits.
        let group = weight_group(g.n);
        let wide = (isa, false);
        let (Some(dx), Some(dw)) =
            direct::backward(wide, g, &dy, (Some(&w), Some((&x, None))), group)
        else {
            panic!("a gradient asked for is missing");
        };
        let alone = (
            direct::backward(wide, g, &dy, (Some(&w), None), group),
            direct::backward(wide, g, &dy, (None, Some((&x, None))), group),
        );
        assert!(
            matches!(&alone, ((Some(a), None), (None, Some(b))) if *a == dx && *b == dw),
            "the gradients of {g:?} in {} on {isa:?} alone differ from both at once",
            T::DTYPE.as_str()
        );
        // On 256-bit vectors where rows are whole ones of them (AVX-512 with VL only): the same
        // bits.
        let narrow = (isa, direct::has_avx512vl());
        assert!(
            direct::forward(narrow, g, (&x, None), &w, None) == y
                && direct::backward(narrow, g, &dy, (Some(&w), Some((&x, None))), group)
                    == (Some(dx.clone()), Some(dw.clone())),
            "{g:?} in {} on {isa:?} with 256-bit vectors differs",
            T::DTYPE.as_str()
        );
        // With a residual, each output is the plain one plus the residual, rounded once: bit
        // for bit what a separate addition gives (here `dy` serves as the residual).
        let with_residual = direct::forward(wide, g, (&x, None), &w, Some(&dy));
        let added: Vec<T> = y.iter().zip(&dy).map(|(a, b)| *a + *b).collect();
        assert!(
            with_residual == added,
            "forward of {g:?} with a residual in {} on {isa:?} differs from the sum",
            T::DTYPE.as_str()
        );
        let cases = [
            ("forward", y, forward_im2col(g, &x, &w, None)),
            (
                "forward with a residual",
                with_residual,
                forward_im2col(g, &x, &w, Some(&dy)),
            ),
            ("input gradient", dx, backward_input_im2col(g, &dy, &w)),
            ("weight gradient", dw, backward_weight_im2col(g, &x, &dy)),
        ];
        for (what, ours, reference) in cases {
            let d = max_rel(&ours, &reference);
            assert!(
                d <= tol,
                "{what} of {g:?} in {} on {isa:?}: {d:e} > {tol:e}",
                T::DTYPE.as_str()
            );
        }
    }

    #[test]
    fn direct_kernels_match_im2col() {
        let shapes = [
            geometry(3, 16, (32, 32), 16, (3, 3), 1, 1),
            geometry(5, 10, (13, 11), 19, (3, 3), 1, 1),
            geometry(2, 3, (9, 9), 7, (5, 5), 1, 2),
            geometry(4, 21, (10, 10), 17, (1, 1), 1, 0),
            geometry(1, 2, (7, 6), 3, (2, 3), 1, 0),
            geometry(37, 3, (6, 6), 4, (3, 3), 1, 1),
            // Strided (phase planes), and padding as large as the kernel or larger.
            geometry(3, 16, (32, 32), 32, (3, 3), 2, 1),
            geometry(2, 5, (13, 10), 9, (3, 3), 2, 1),
            geometry(2, 4, (11, 12), 6, (1, 1), 2, 0),
            geometry(2, 3, (14, 13), 5, (5, 4), 3, 2),
            geometry(1, 2, (5, 5), 3, (1, 1), 2, 2),
            geometry(2, 3, (6, 7), 4, (3, 3), 1, 3),
            geometry(2, 3, (8, 9), 4, (2, 2), 2, 0),
            geometry(1, 2, (4, 4), 2, (4, 4), 1, 0),
            // Output rows of 8 (f32) and 4 (f64) values: 256-bit vectors on AVX-512.
            geometry(3, 16, (8, 8), 24, (3, 3), 1, 1),
            geometry(2, 16, (16, 16), 32, (3, 3), 2, 1),
            geometry(2, 5, (4, 4), 6, (3, 3), 1, 1),
        ];
        // Every direct set this CPU has (none off x86-64: im2col is all there is there).
        let isas = ConvKernels::ALL
            .into_iter()
            .filter(|k| k.is_supported())
            .filter_map(ConvKernels::isa);
        for isa in isas {
            for g in &shapes {
                compare::<f32>(isa, g, 1e-5);
                compare::<f64>(isa, g, 1e-13);
            }
        }
    }

    /// `force` makes the entry points run the chosen set (bit for bit its kernels' output),
    /// refuses a set this CPU lacks with an error naming it, and `None` restores the detected
    /// set. Other tests of this binary may convolve meanwhile on a forced set: every set is
    /// correct, so that is harmless.
    #[test]
    fn forced_kernels_run_or_are_refused() {
        let g = geometry(2, 5, (13, 10), 9, (3, 3), 2, 1);
        let (x, w) = (
            values::<f64>(g.n * g.in_len(), 1),
            values::<f64>(g.w_len(), 2),
        );
        for set in ConvKernels::ALL {
            let before = ConvKernels::in_use();
            match (ConvKernels::force(Some(set)), set.is_supported()) {
                (Ok(()), true) => {
                    assert_eq!(ConvKernels::in_use(), set);
                    let expected = match set.isa() {
                        Some(isa) => direct::forward(
                            (isa, direct::narrow_vectors_pay()),
                            &g,
                            (&x, None),
                            &w,
                            None,
                        ),
                        None => forward_im2col(&g, &x, &w, None),
                    };
                    assert_eq!(forward(&g, (&x, None), &w, None), expected, "{set}");
                }
                (Err(e), false) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(set.name()) && msg.contains(set.requirement()),
                        "{msg}"
                    );
                    assert_eq!(
                        ConvKernels::in_use(),
                        before,
                        "a refused set changed nothing"
                    );
                }
                (got, supported) => panic!("{set}: supported {supported}, force gave {got:?}"),
            }
        }
        ConvKernels::force(None).unwrap();
        assert_eq!(ConvKernels::in_use(), ConvKernels::detected());
        assert!(ConvKernels::detected().is_supported());
    }

    #[test]
    fn kernel_set_names_parse() {
        for set in ConvKernels::ALL {
            assert_eq!(set.name().parse::<ConvKernels>().unwrap(), set);
        }
        let err = "sse".parse::<ConvKernels>().unwrap_err().to_string();
        assert!(
            err.contains("`sse`") && err.contains("avx512, avx2 or im2col"),
            "{err}"
        );
    }
}
