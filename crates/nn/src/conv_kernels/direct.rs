//! Direct convolution kernels on x86-64 CPUs with AVX-512 or AVX2 + FMA, f32 and f64: no
//! im2col.
//!
//! **The wide-row trick.** Pad one input sample into planes of `hp × wp` (`wp = w + 2·padding`)
//! and compute a stride-1 output on the padded width: position `p' = oy·wp + ox` for `ox < wp`,
//! of which the first `ow` of each row are real. Patch entry `r = (c, ki, kj)` of position `p'`
//! is then `xpad[off_r + p']` with `off_r = c·plane + ki·wp + kj`, so row `r` of the im2col
//! matrix *is* the padded input read from `off_r`: contiguous, never copied. The product is told
//! which vectors of columns to compute ([`Column`]): where an output row is a whole number of
//! vectors (32, 16 and 8 columns in f32 on AVX2), only the real columns, written straight into
//! the output; otherwise every wide column, the discarded ones copied away after.
//!
//! **Strides.** With stride `s`, the padded input is split into `s²` phase planes,
//! `P[c, (ri, rj)][u, v] = xpad[c, s·u + ri, s·v + rj]` of `⌈hp/s⌉ × ⌈wp/s⌉`; writing
//! `ki = s·qi + ri` and `kj = s·qj + rj`, input `(s·oy + ki, s·ox + kj)` is phase `(ri, rj)` at
//! `(oy + qi, ox + qj)`, a stride-1 read again (`off_r` picks the phase plane, then `qi`, `qj`).
//! Stride 1 is the case of one phase ([`Phases`]).
//!
//! All passes become one product kernel, [`Float::product`]:
//!
//! - forward:         `y'[k, p'] = Σ_r W[k, r] · xpad[off_r + p']`
//! - input gradient: per phase `(ri, rj)` of the input, a stride-1 correlation of `dy`,
//!   zero-padded, with the taps `ki ≡ ri`, `kj ≡ rj` of the weight flipped in space and
//!   transposed in channels (for stride 1, one phase: `Wf[c, (k, q, u)] = W[k, c, kh−1−q,
//!   kw−1−u]`)
//! - weight gradient: `dWᵀ[r, k] = Σ_n Σ_p xpad_n[off_r + p'] · dyᵀ_n[p, k]` over the real
//!   positions `p = oy·ow + ox` (`p' = oy·wp + ox`), one run of the reduction ([`Run`]) per
//!   output row, `dyᵀ` being `dy` transposed to `[p, k]`.
//!
//! The working set is the padded sample (at most `1.3×` the input sample), not a 9× larger
//! patch matrix, so it stays in L1/L2. The product keeps an 8-row × 3-vector block of its
//! output in 24 zmm accumulators (AVX-512; 6 × 2 ymm with AVX2), broadcasting one left-factor
//! value per row and loading one right-factor vector per column block for every 24 FMAs; its
//! rows are split into blocks as even as the block height allows. On Zen 4, whose 512-bit
//! FMAs are two 256-bit halves, a product whose rows are whole 256-bit vectors but not 512-bit
//! ones (8 × 8 maps in f32) runs the same 8 × 3 block on ymm registers ([`Isa::for_width`]),
//! computing no discarded columns. Summation orders depend only
//! on the shapes and the batch's weight groups, never on the thread count or the blocking.

use std::mem::MaybeUninit;

use super::{Float, Geometry, Gradients, InputAffine};

/// The instruction set of a direct kernel set ([`super::ConvKernels::isa`] chooses it for each
/// convolution pass; it is only ever one this CPU has), and the width of its vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// 512-bit vectors, mask registers (AVX-512F).
    Avx512,
    /// AVX-512 on 256-bit vectors (AVX-512VL): the 32 registers and masks of AVX-512 with
    /// AVX2's lanes, for the products whose rows are a whole number of 256-bit vectors but not
    /// of 512-bit ones ([`Isa::for_width`]).
    Avx512Narrow,
    /// 256-bit vectors with FMA (AVX2 + FMA).
    Avx2,
}

impl Isa {
    /// The vectors for a product whose output rows are `width` values: 512-bit AVX-512 ones
    /// unless `narrow` and a row is a whole number of 256-bit vectors but not of 512-bit ones
    /// (the 8 × 8 maps in f32), where 256-bit ones compute no discarded columns (with 16
    /// lanes, an 8-wide output row takes its padded row's 10 columns, 2 of them discarded,
    /// and a copy to compact them). Every output is the same chain of fused multiply-adds
    /// either way, so the same bits. `narrow` may only be true on a CPU with AVX-512VL
    /// ([`narrow_vectors_pay`] is).
    pub fn for_width<T: Float>(self, width: usize, narrow: bool) -> Isa {
        let whole = |isa: Isa| width.is_multiple_of(T::lanes(isa));
        if self == Isa::Avx512 && narrow && !whole(Isa::Avx512) && whole(Isa::Avx512Narrow) {
            Isa::Avx512Narrow
        } else {
            self
        }
    }
}

/// Whether the CPU has AVX-512VL, which [`Isa::Avx512Narrow`] runs on.
pub(crate) fn has_avx512vl() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether 256-bit vectors cost AVX-512 no peak on this CPU, so that [`Isa::for_width`] may
/// choose them: AMD's Zen 4 (family 19h with AVX-512; Zen 3, the same family, has none)
/// executes each 512-bit operation as two 256-bit halves, so its FMA peak is the same with
/// either width (`step_bench --peak`). Where 512-bit FMAs run at full width (Intel's server
/// cores, AMD's Zen 5), 256-bit vectors would halve the peak, and the discarded columns of
/// 512-bit ones cost less. Needs AVX-512VL for the 256-bit AVX-512 instructions.
pub(crate) fn narrow_vectors_pay() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static PAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *PAY.get_or_init(|| {
            use std::arch::x86_64::__cpuid;
            let (vendor, signature) = (__cpuid(0), __cpuid(1).eax);
            amd_family_19h((vendor.ebx, vendor.edx, vendor.ecx), signature)
                && is_x86_feature_detected!("avx512f")
                && has_avx512vl()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether CPUID's vendor registers (leaf 0: EBX, EDX, ECX) and processor signature (leaf 1:
/// EAX) name an AMD CPU of family 19h (Zen 3 and Zen 4): the family is the base family, plus
/// the extended family where the base is 0Fh.
fn amd_family_19h(vendor: (u32, u32, u32), signature: u32) -> bool {
    // "AuthenticAMD" in EBX, EDX, ECX.
    let amd = vendor == (0x6874_7541, 0x6974_6E65, 0x444D_4163);
    let base = (signature >> 8) & 0xF;
    let family = if base == 0xF {
        base + ((signature >> 20) & 0xFF)
    } else {
        base
    };
    amd && family == 0x19
}

/// A convolution's input as the kernels read it: the values, and the map applied to them as
/// each sample is laid out (none: the values themselves).
pub(crate) type Input<'a, T> = (&'a [T], Option<&'a InputAffine<T>>);

/// How samples are laid out for the kernels: each channel of `h × w` becomes `stride²` zero-
/// padded phase planes of `hq × wq` (padding `top`, `left` before the phase split), each
/// followed by `extra` zeros so that reads of the wide rows past a plane's end stay inside it.
/// Only the phases the kernel's taps read are ever filled (a 1 × 1 kernel with stride 2 reads
/// one of four); the others stay zero.
struct Phases {
    stride: usize,
    top: usize,
    left: usize,
    hq: usize,
    wq: usize,
    extra: usize,
    /// Phases `(ri, rj)` with `ri < read.0`, `rj < read.1` are read.
    read: (usize, usize),
}

impl Phases {
    /// Phases of an `h × w` input padded by `(top, left)` before and `(bottom, right)` after,
    /// read by a `kh × kw` kernel with `stride`.
    fn new(
        (h, w): (usize, usize),
        (top, left): (usize, usize),
        (bottom, right): (usize, usize),
        (kh, kw): (usize, usize),
        stride: usize,
    ) -> Self {
        Phases {
            stride,
            top,
            left,
            hq: (h + top + bottom).div_ceil(stride),
            wq: (w + left + right).div_ceil(stride),
            extra: kw,
            // Tap ki reads phase ki mod s.
            read: (kh.min(stride), kw.min(stride)),
        }
    }

    fn plane(&self) -> usize {
        self.hq * self.wq + self.extra
    }

    /// Lays sample `i` of the input `x` (`g`'s shapes) out in `dst` ([`Phases::fill`]), each
    /// value mapped by `map` where given.
    fn fill_sample<T: Float>(&self, g: &Geometry, (x, map): Input<'_, T>, i: usize, dst: &mut [T]) {
        let xn = &x[i * g.in_len()..(i + 1) * g.in_len()];
        match map {
            None => self.fill(xn, (g.h, g.w), dst),
            Some(map) => self.fill_mapped(xn, (g.h, g.w), dst, |c| map.plane(i * g.c + c)),
        }
    }

    /// Elements of one laid-out sample of `channels` channels.
    fn sample_len(&self, channels: usize) -> usize {
        channels * self.stride * self.stride * self.plane()
    }

    /// Offsets `off_r` of the rows `r = (c, ki, kj)` of a `channels × kh × kw` patch.
    fn offsets(&self, channels: usize, kh: usize, kw: usize) -> Vec<usize> {
        let (s, plane) = (self.stride, self.plane());
        let mut offs = Vec::with_capacity(channels * kh * kw);
        for c in 0..channels {
            for ki in 0..kh {
                for kj in 0..kw {
                    let phase = (ki % s) * s + kj % s;
                    offs.push((c * s * s + phase) * plane + (ki / s) * self.wq + kj / s);
                }
            }
        }
        offs
    }

    /// Copies the channels of `src` (`h × w` each) into their phase planes in `dst`, the phases
    /// that are read only. Writes only the input's positions: the padding and unread phases of
    /// `dst` must already be zero, which they stay from one sample to the next (buffers start
    /// zeroed and nothing else writes them).
    fn fill<T: Float>(&self, src: &[T], (h, w): (usize, usize), dst: &mut [T]) {
        self.fill_mapped(src, (h, w), dst, |_| |v: T| v);
    }

    /// [`Phases::fill`] with channel `c`'s values mapped by `map(c)` as they are copied (a
    /// normalization's output, [`InputAffine`], written straight into the layout).
    fn fill_mapped<T: Float, F: Fn(T) -> T>(
        &self,
        src: &[T],
        (h, w): (usize, usize),
        dst: &mut [T],
        map: impl Fn(usize) -> F,
    ) {
        if self.stride == 2 {
            self.fill_stride2(src, (h, w), dst, map);
        } else {
            self.fill_any_stride(src, (h, w), dst, map);
        }
    }

    /// [`Phases::fill_mapped`] for any stride, one phase at a time.
    fn fill_any_stride<T: Float, F: Fn(T) -> T>(
        &self,
        src: &[T],
        (h, w): (usize, usize),
        dst: &mut [T],
        map: impl Fn(usize) -> F,
    ) {
        let (s, plane) = (self.stride, self.plane());
        for (c, x) in src.chunks_exact(h * w).enumerate() {
            let f = map(c);
            for ri in 0..self.read.0 {
                for rj in 0..self.read.1 {
                    let d = &mut dst[(c * s * s + ri * s + rj) * plane..][..plane];
                    // Padded column s·v + rj is input column s·v + rj − left, for v ≥ v0.
                    let v0 = self.left.saturating_sub(rj).div_ceil(s);
                    for u in 0..self.hq {
                        let Some(y) = (s * u + ri).checked_sub(self.top).filter(|y| *y < h) else {
                            continue;
                        };
                        let row = &x[y * w..(y + 1) * w];
                        let first = s * v0 + rj - self.left;
                        let dr = &mut d[u * self.wq + v0..(u + 1) * self.wq];
                        let src = &row[first.min(w)..];
                        if s == 1 {
                            let n = dr.len().min(src.len());
                            for (dv, xv) in dr[..n].iter_mut().zip(&src[..n]) {
                                *dv = f(*xv);
                            }
                        } else {
                            for (dv, xv) in dr.iter_mut().zip(src.iter().step_by(s)) {
                                *dv = f(*xv);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Phases {
    /// [`Phases::fill`] for stride 2, the same values in the same places: each input row is read
    /// once and split into its even and odd columns (the two column phases) by a loop that
    /// vectorizes, where the general fill reads it once per column phase, element by element.
    fn fill_stride2<T: Float, F: Fn(T) -> T>(
        &self,
        src: &[T],
        (h, w): (usize, usize),
        dst: &mut [T],
        map: impl Fn(usize) -> F,
    ) {
        debug_assert_eq!(self.stride, 2);
        let plane = self.plane();
        // Input column x is padded column x + left: column phase (x + left) % 2, at
        // (x + left) / 2. Columns 2t and 2t + 1 go to phases `even` and `1 − even`.
        let even = self.left % 2;
        let at = [self.left / 2, self.left.div_ceil(2)];
        let pairs = w / 2;
        for (c, x) in src.chunks_exact(h * w).enumerate() {
            let f = map(c);
            for ri in 0..self.read.0 {
                for u in 0..self.hq {
                    let Some(y) = (2 * u + ri).checked_sub(self.top).filter(|y| *y < h) else {
                        continue;
                    };
                    let row = &x[y * w..(y + 1) * w];
                    let phase_row = |rj: usize| (c * 4 + ri * 2 + rj) * plane + u * self.wq;
                    let (p0, p1) = (phase_row(even), phase_row(1 - even));
                    if self.read.1 == 2 {
                        // Both column phases are read: two disjoint rows of `dst`.
                        let (d0, d1) = if p0 < p1 {
                            let (lo, hi) = dst.split_at_mut(p1);
                            (&mut lo[p0 + at[0]..][..pairs], &mut hi[at[1]..][..pairs])
                        } else {
                            let (lo, hi) = dst.split_at_mut(p0);
                            (&mut hi[at[0]..][..pairs], &mut lo[p1 + at[1]..][..pairs])
                        };
                        for ((a, b), xs) in d0.iter_mut().zip(d1).zip(row.chunks_exact(2)) {
                            *a = f(xs[0]);
                            *b = f(xs[1]);
                        }
                    } else if even == 0 {
                        // Only phase 0 is read, the even columns.
                        let d0 = &mut dst[p0 + at[0]..][..pairs];
                        for (a, xs) in d0.iter_mut().zip(row.chunks_exact(2)) {
                            *a = f(xs[0]);
                        }
                    } else {
                        // Only phase 0 is read, the odd columns.
                        let d1 = &mut dst[p1 + at[1]..][..pairs];
                        for (b, xs) in d1.iter_mut().zip(row.chunks_exact(2)) {
                            *b = f(xs[1]);
                        }
                    }
                    if w % 2 == 1 && (even == 0 || self.read.1 == 2) {
                        // The last column, 2·pairs, of phase `even`.
                        dst[p0 + at[0] + pairs] = f(row[w - 1]);
                    }
                }
            }
        }
    }
}

/// One vector of a product's output columns ([`Float::product`]): its `lanes` columns (a whole
/// vector, or fewer, masked) are read from `b` on in every right-factor row and written from
/// `c` on in every output row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Column {
    pub b: usize,
    pub c: usize,
    pub lanes: usize,
}

/// One run of a product's reduction ([`Float::product`]): `len` steps, in which left-factor row
/// `i` is read on from `a_rows[i] + a` and the right-factor rows are `b_rows[b..b + len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub a: usize,
    pub b: usize,
    pub len: usize,
}

impl Run {
    /// The whole reduction as one run: `len` steps from the start of every row.
    fn whole(len: usize) -> [Run; 1] {
        [Run { a: 0, b: 0, len }]
    }
}

/// Vectors of `lanes` columns over `width` columns read from `b` and written from `c` on: whole
/// vectors, then one masked vector for the rest.
fn push_columns(out: &mut Vec<Column>, (b, c): (usize, usize), width: usize, lanes: usize) {
    for start in (0..width).step_by(lanes) {
        out.push(Column {
            b: b + start,
            c: c + start,
            lanes: lanes.min(width - start),
        });
    }
}

/// The output columns of `rows` wide rows of which the first `width` columns are real, read
/// `stride` apart. When `width` is a whole number of vectors, each row's real columns alone,
/// written `width` apart (nothing discarded is computed, and the output is compact); otherwise
/// every column of the wide rows, written where it is read (a masked vector per row would
/// waste more lanes than the discarded columns do), for the caller to compact. Returns the
/// columns and the distance between output rows.
fn row_columns(rows: usize, width: usize, stride: usize, lanes: usize) -> (Vec<Column>, usize) {
    let mut columns = Vec::new();
    if width.is_multiple_of(lanes) {
        for r in 0..rows {
            push_columns(&mut columns, (r * stride, r * width), width, lanes);
        }
        (columns, width)
    } else {
        push_columns(&mut columns, (0, 0), rows * stride, lanes);
        (columns, stride)
    }
}

/// `dst = srcᵀ`: `src` is `[rows, cols]`, `dst` `[cols, rows]`. Square tiles of
/// [`Float::TILE`] in vector registers (AVX: both direct kernel sets have it), the edges one
/// element at a time.
fn transpose<T: Float>(src: &[T], cols: usize, dst: &mut [T]) {
    let rows = src.len() / cols;
    assert_eq!(dst.len(), rows * cols, "transpose of {rows} × {cols}");
    let t = T::TILE;
    let (rows_t, cols_t) = (rows / t * t, cols / t * t);
    for c0 in (0..cols_t).step_by(t) {
        for r0 in (0..rows_t).step_by(t) {
            // SAFETY: the tile's rows r0..r0+t and columns c0..c0+t are inside `src`
            // ([rows, cols]) and transposed inside `dst` ([cols, rows]); the direct kernels
            // run only where the CPU has AVX (AVX2 or AVX-512, both imply it).
            unsafe {
                T::transpose_tile(
                    src.as_ptr().add(r0 * cols + c0),
                    cols,
                    dst.as_mut_ptr().add(c0 * rows + r0),
                    rows,
                )
            };
        }
    }
    for c in 0..cols {
        let first = if c < cols_t { rows_t } else { 0 };
        for r in first..rows {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// Writes the first `ow` columns of every `wp`-wide row of `wide` into `out` (`[rows, ow]`).
fn compact<T: Float>(wide: &[T], wp: usize, ow: usize, out: &mut [MaybeUninit<T>]) {
    for (o, row) in out.chunks_exact_mut(ow).zip(wide.chunks_exact(wp)) {
        for (d, v) in o.iter_mut().zip(&row[..ow]) {
            d.write(*v);
        }
    }
}

/// Forward pass on the kernels of `isa` (on 256-bit vectors where `narrow` and
/// [`Isa::for_width`] choose them): per sample (in parallel), the padded phase planes and
/// the product, straight into `y` where the output rows are whole vectors, else into wide rows
/// whose first `ow` columns are then copied into `y`; then the sample's `residual`, if any,
/// added while its output is in cache.
pub(crate) fn forward<T: Float>(
    (isa, narrow): (Isa, bool),
    g: &Geometry,
    x: Input<'_, T>,
    w: &[T],
    residual: Option<&[T]>,
) -> Vec<T> {
    use rayon::prelude::*;
    let isa = isa.for_width::<T>(g.ow, narrow);
    let pad = (g.padding, g.padding);
    let phases = Phases::new((g.h, g.w), pad, pad, (g.kh, g.kw), g.stride);
    let offs = phases.offsets(g.c, g.kh, g.kw);
    let w_rows: Vec<usize> = (0..g.k).map(|k| k * offs.len()).collect();
    let (wq, out_len) = (phases.wq, g.out_len());
    let (columns, row_stride) = row_columns(g.oh, g.ow, wq, T::lanes(isa));
    let direct = row_stride == g.ow;
    let runs = Run::whole(offs.len());
    // Not zero-filled first: the product (or `compact`) writes every element of every
    // sample's chunk.
    let mut y: Vec<T> = Vec::with_capacity(g.n * out_len);
    y.spare_capacity_mut()[..g.n * out_len]
        .par_chunks_mut(out_len)
        .enumerate()
        .for_each_init(
            || {
                let xp = vec![T::zero(); phases.sample_len(g.c)];
                let wide = if direct { 0 } else { g.k * g.oh * wq };
                (xp, vec![T::zero(); wide])
            },
            |(xp, wide), (i, yn)| {
                phases.fill_sample(g, x, i, xp);
                let out = if direct {
                    yn.as_mut_ptr().cast::<T>()
                } else {
                    wide.as_mut_ptr()
                };
                // SAFETY: every offset plus the columns' reach stays inside `xp`
                // (Phases::extra), `w` is [k, offs.len()], the output (`yn` or `wide`) holds
                // k rows of oh·row_stride; the CPU has `isa` (`ConvKernels::isa`,
                // `Isa::for_width`).
                unsafe {
                    T::product(
                        isa,
                        (w.as_ptr(), &w_rows),
                        (xp.as_ptr(), &offs),
                        (&runs, &columns),
                        (out, g.oh * row_stride),
                        false,
                    )
                };
                if !direct {
                    compact(wide, wq, g.ow, yn);
                }
                if let Some(r) = residual {
                    // SAFETY: the product (into `yn`) or `compact` wrote all of `yn`.
                    let yn = unsafe { &mut *(yn as *mut [MaybeUninit<T>] as *mut [T]) };
                    super::add_residual(yn, &r[i * out_len..(i + 1) * out_len]);
                }
            },
        );
    // SAFETY: the chunks partition the first `n·out_len` slots, and the product (into `yn`)
    // or `compact` wrote each one.
    unsafe { y.set_len(g.n * out_len) };
    y
}

/// One phase `(ri, rj)` of the input gradient: the input positions `(s·U + ri − padding,
/// s·V + rj − padding)` for `U` in `u0..u0 + rows`, `V` in `v0..v0 + cols`, which the kernel
/// taps `ki = s·qi + ri`, `kj = s·qj + rj` (`qi < nqi`, `qj < nqj`) reach.
struct InputPhase<T> {
    /// Input row and column of the phase's first position (`u0`, `v0` are chosen so that they
    /// are inside the input).
    first: (usize, usize),
    rows: usize,
    cols: usize,
    /// `[c, k·nqi·nqj]`: `W[k, c, s·(nqi−1−q) + ri, s·(nqj−1−u) + rj]` at `(c, (k, q, u))`.
    a: Vec<T>,
    /// Offsets of `a`'s rows (`c · k·nqi·nqj`).
    a_rows: Vec<usize>,
    /// Offsets of `dy`'s padded rows for `(k, q, u)`.
    offs: Vec<usize>,
}

/// The input gradient's per-sample work on the kernels of `isa`, phase by phase. For stride
/// `s`, the input positions whose padded coordinates are `≡ (ri, rj) mod s` receive gradient
/// only through the taps `ki ≡ ri`, `kj ≡ rj`: `dx[s·U + ri, s·V + rj] = Σ_k Σ_qi Σ_qj W[k, c,
/// s·qi + ri, s·qj + rj] · dy[k, U − qi, V − qj]` (padded coordinates), a stride-1 correlation
/// of `dy`, zero-padded, with a flipped sub-kernel. Stride 1 is one phase with the whole kernel.
struct InputGrad<T> {
    /// The vectors of the phases' products ([`Isa::for_width`]).
    isa: Isa,
    phases: Vec<InputPhase<T>>,
    /// Per phase: its output columns and their row stride.
    outputs: Vec<(Vec<Column>, usize)>,
    /// How a sample of `dy` is padded for the phases' correlations.
    padded: Phases,
    /// Whether the product writes straight into `dx` (stride 1, rows of whole vectors).
    direct: bool,
    /// Whether some phase has no taps (three of four for a 1 × 1 kernel with stride 2): each
    /// sample is then zeroed first and only the tapped phases are computed.
    untapped: bool,
    /// Elements of the scratch output of the other cases (0 when `direct`).
    scratch_len: usize,
}

impl<T: Float> InputGrad<T> {
    fn new((isa, narrow): (Isa, bool), g: &Geometry, w: &[T]) -> Self {
        let (s, p) = (g.stride, g.padding);
        // Kernel taps of phase r along a kernel side k: qi < taps(kh, ri).
        let taps = |k: usize, r: usize| (k.saturating_sub(r)).div_ceil(s);
        // First phase index U (or V) whose input row s·U + r − p is ≥ 0, and the count below n.
        let range = |r: usize, n: usize| {
            let u0 = p.saturating_sub(r).div_ceil(s);
            (u0, (n + p).saturating_sub(r).div_ceil(s).saturating_sub(u0))
        };
        // Padding of dy: phase (ri, ·) reads padded rows u0 + q + top + 1 − nqi for q < nqi, over
        // its `rows` positions; enough above for the first, below for the last, in every phase.
        let pad_for = |n: usize, kn: usize, out: usize| {
            (0..s)
                .filter(|r| taps(kn, *r) > 0)
                .map(|r| {
                    let (u0, count) = range(r, n);
                    (
                        (taps(kn, r) - 1).saturating_sub(u0),
                        (u0 + count).saturating_sub(out),
                    )
                })
                .fold((0, 0), |(a, b), (c, d)| (a.max(c), b.max(d)))
        };
        let ((top, bottom), (left, right)) = (pad_for(g.h, g.kh, g.oh), pad_for(g.w, g.kw, g.ow));
        let padded = Phases::new((g.oh, g.ow), (top, left), (bottom, right), (g.kh, g.kw), 1);
        let (plane, wd) = (padded.plane(), padded.wq);
        let kk = g.kh * g.kw;
        let mut phases = Vec::with_capacity(s * s);
        for ri in 0..s {
            for rj in 0..s {
                let (nqi, nqj) = (taps(g.kh, ri), taps(g.kw, rj));
                let ((u0, rows), (v0, cols)) = (range(ri, g.h), range(rj, g.w));
                let mut a = Vec::with_capacity(g.c * g.k * nqi * nqj);
                for c in 0..g.c {
                    for k in 0..g.k {
                        for q in 0..nqi {
                            for u in 0..nqj {
                                let (ki, kj) = (s * (nqi - 1 - q) + ri, s * (nqj - 1 - u) + rj);
                                a.push(w[(k * g.c + c) * kk + ki * g.kw + kj]);
                            }
                        }
                    }
                }
                let mut offs = Vec::with_capacity(g.k * nqi * nqj);
                for k in 0..g.k {
                    for q in 0..nqi {
                        for u in 0..nqj {
                            let (row, col) = (u0 + q + top + 1 - nqi, v0 + u + left + 1 - nqj);
                            offs.push(k * plane + row * wd + col);
                        }
                    }
                }
                let first = (s * u0 + ri - p, s * v0 + rj - p);
                let a_rows = (0..g.c).map(|c| c * offs.len()).collect();
                phases.push(InputPhase {
                    first,
                    rows,
                    cols,
                    a,
                    a_rows,
                    offs,
                });
            }
        }
        // 256-bit vectors where every tapped phase's rows are whole ones of them only.
        let isa = phases
            .iter()
            .filter(|ph| !ph.offs.is_empty())
            .map(|ph| isa.for_width::<T>(ph.cols, narrow))
            .reduce(|a, b| if a == b { a } else { isa })
            .unwrap_or(isa);
        let lanes = T::lanes(isa);
        // Straight into `dx` for stride 1 when the rows are whole vectors (one phase, which
        // covers every position in order).
        let outputs: Vec<(Vec<Column>, usize)> = phases
            .iter()
            .map(|ph| row_columns(ph.rows, ph.cols, wd, lanes))
            .collect();
        let direct = s == 1 && outputs[0].1 == g.w;
        let scratch_len = phases
            .iter()
            .zip(&outputs)
            .map(|(ph, (_, stride))| g.c * ph.rows * stride)
            .max()
            .unwrap_or(0);
        let untapped = phases.iter().any(|ph| ph.offs.is_empty());
        InputGrad {
            isa,
            phases,
            outputs,
            padded,
            direct,
            untapped,
            scratch_len: if direct { 0 } else { scratch_len },
        }
    }

    /// `dxn`, one sample's input gradient, from `dyn_`, its output gradient, through the
    /// buffers `dp` (`padded.sample_len(k)`, zeroed once) and `scratch` (`scratch_len`).
    /// Writes every element of `dxn`: the phases partition the sample's positions; each phase
    /// that a tap reaches writes all of its own, and where some phase has no taps, zeros are
    /// written over the whole sample first.
    fn sample(
        &self,
        g: &Geometry,
        dyn_: &[T],
        dxn: &mut [MaybeUninit<T>],
        (dp, scratch): (&mut [T], &mut [T]),
    ) {
        let (s, hw) = (g.stride, g.h * g.w);
        self.padded.fill(dyn_, (g.oh, g.ow), dp);
        // Phases that no tap reaches receive zeros: one contiguous fill of the sample first,
        // then only the others are computed, instead of a product of no steps and a strided
        // scatter of its zeros.
        if self.untapped {
            for d in dxn.iter_mut() {
                d.write(T::zero());
            }
        }
        for (ph, (columns, stride)) in self.phases.iter().zip(&self.outputs) {
            if ph.offs.is_empty() {
                continue;
            }
            let out = if self.direct {
                dxn.as_mut_ptr().cast::<T>()
            } else {
                scratch.as_mut_ptr()
            };
            // SAFETY: every offset plus the columns' reach stays inside `dp` (bottom padding and
            // Phases::extra), `a` is [c, offs.len()], the output (`dxn` or `scratch`) holds c
            // rows of rows·stride; the CPU has `isa` (`ConvKernels::isa`, `Isa::for_width`).
            unsafe {
                T::product(
                    self.isa,
                    (ph.a.as_ptr(), &ph.a_rows),
                    (dp.as_ptr(), &ph.offs),
                    (&Run::whole(ph.offs.len()), columns),
                    (out, ph.rows * stride),
                    false,
                )
            };
            if self.direct {
                continue;
            }
            for c in 0..g.c {
                for r in 0..ph.rows {
                    let y = ph.first.0 + s * r;
                    let src = &scratch[(c * ph.rows + r) * stride..][..ph.cols];
                    let row = &mut dxn[c * hw + y * g.w..][..g.w];
                    let x0 = ph.first.1;
                    if s == 1 {
                        for (d, v) in row[x0..x0 + ph.cols].iter_mut().zip(src) {
                            d.write(*v);
                        }
                    } else {
                        for (d, v) in row[x0..].iter_mut().step_by(s).zip(src) {
                            d.write(*v);
                        }
                    }
                }
            }
        }
    }
}

/// The weight gradient's per-sample work on the kernels of `isa`, as its transpose
/// `dWᵀ[r, k] = Σ_n Σ_p xpad_n[off_r + p'] · dyᵀ_n[p, k]` over the output positions
/// `p = oy·ow + ox`, at `p' = oy·wq + ox` in the padded sample: the output channels are the
/// vector lanes, so this is the forward's [`Float::product`] with the roles of rows and
/// reductions swapped, the reduction in one run per output row.
struct WeightGrad {
    /// The vectors of the product, whose output rows are `k` wide ([`Isa::for_width`]).
    isa: Isa,
    phases: Phases,
    /// `off_r` of the patch rows `r = (c, ki, kj)`.
    offs: Vec<usize>,
    /// `dyᵀ` row `p = oy·ow + ox` starts at `p·k`.
    dyt_rows: Vec<usize>,
    /// Output row `oy` is one run of the reduction.
    runs: Vec<Run>,
    columns: Vec<Column>,
}

impl WeightGrad {
    fn new<T: Float>((isa, narrow): (Isa, bool), g: &Geometry) -> Self {
        let isa = isa.for_width::<T>(g.k, narrow);
        let pad = (g.padding, g.padding);
        let phases = Phases::new((g.h, g.w), pad, pad, (g.kh, g.kw), g.stride);
        let offs = phases.offsets(g.c, g.kh, g.kw);
        let dyt_rows = (0..g.oh * g.ow).map(|t| t * g.k).collect();
        let runs = (0..g.oh)
            .map(|oy| Run {
                a: oy * phases.wq,
                b: oy * g.ow,
                len: g.ow,
            })
            .collect();
        let mut columns = Vec::new();
        push_columns(&mut columns, (0, 0), g.k, T::lanes(isa));
        WeightGrad {
            isa,
            phases,
            offs,
            dyt_rows,
            runs,
            columns,
        }
    }

    /// Adds one sample's `dWᵀ` to `acc_t` (`[ckk, k]`; overwrites every value unless
    /// `accumulate`, which needs them written), from the sample's input `xn` and output
    /// gradient `dyn_`, through the buffers `xp` (`phases.sample_len(c)`, zeroed once) and `dyt`
    /// (`oh·ow·k`).
    fn sample<T: Float>(
        &self,
        g: &Geometry,
        ((x, i), dyn_): ((Input<'_, T>, usize), &[T]),
        (xp, dyt): (&mut [T], &mut [T]),
        acc_t: &mut [MaybeUninit<T>],
        accumulate: bool,
    ) {
        assert!(acc_t.len() >= self.offs.len() * g.k, "dWᵀ buffer too short");
        self.phases.fill_sample(g, x, i, xp);
        transpose(dyn_, g.oh * g.ow, dyt);
        // SAFETY: as in `forward`, with xp's rows at `offs` (each run stays inside its output
        // row's reach) and dyᵀ [hw, k]; acc_t is [ckk, k].
        unsafe {
            T::product(
                self.isa,
                (xp.as_ptr(), &self.offs),
                (dyt.as_ptr(), &self.dyt_rows),
                (&self.runs, &self.columns),
                (acc_t.as_mut_ptr().cast::<T>(), g.k),
                accumulate,
            )
        };
    }
}

/// The backward pass on the kernels of `isa` (each product on 256-bit vectors where `narrow`
/// and [`Isa::for_width`] choose them): the input gradient when the weight `w` is given,
/// the weight gradient when the input `x` is, both from `dy` in one pass over the batch. Samples
/// go in groups of `group`, in parallel; within a group, sample by sample, the input gradient
/// and then the sample's term of the weight gradient, so `dy`'s sample is read from memory once
/// for both and is still in cache for the second. Each group's weight gradient is accumulated
/// sample by sample and the groups are summed in order, so every bit of `dW` depends on the
/// shapes and `group` only, never on the thread count.
pub(crate) fn backward<T: Float>(
    (isa, narrow): (Isa, bool),
    g: &Geometry,
    dy: &[T],
    (w, x): (Option<&[T]>, Option<Input<'_, T>>),
    group: usize,
) -> Gradients<T> {
    use rayon::prelude::*;
    let input = w.map(|w| InputGrad::new((isa, narrow), g, w));
    let weight = x.map(|x| (x, WeightGrad::new::<T>((isa, narrow), g)));
    let (in_len, out_len, hw, k) = (g.in_len(), g.out_len(), g.oh * g.ow, g.k);
    let groups = g.n.div_ceil(group);
    // Not zero-filled first: each group's samples write every element of their chunks.
    let mut dx: Vec<T> = Vec::with_capacity(if input.is_some() { g.n * in_len } else { 0 });
    let chunks: Vec<Option<&mut [MaybeUninit<T>]>> = match input {
        Some(_) => dx.spare_capacity_mut()[..g.n * in_len]
            .chunks_mut(group * in_len)
            .map(Some)
            .collect(),
        None => (0..groups).map(|_| None).collect(),
    };
    // Buffers per Rayon job, reused by its groups: the padding of `dp` and `xp` stays zero
    // from one sample to the next (only the data positions are ever written), and `scratch`
    // and `dyt` are written whole before each read.
    let buffers = || {
        let dp = input.as_ref().map_or(0, |ig| ig.padded.sample_len(k));
        let scratch = input.as_ref().map_or(0, |ig| ig.scratch_len);
        let xp = weight
            .as_ref()
            .map_or(0, |(_, wg)| wg.phases.sample_len(g.c));
        let dyt = if weight.is_some() { hw * k } else { 0 };
        [dp, scratch, xp, dyt].map(|len| vec![T::zero(); len])
    };
    let ckk_k = g.ckk() * k;
    let partial: Vec<Option<Vec<T>>> = chunks
        .into_par_iter()
        .enumerate()
        .map_init(buffers, |[dp, scratch, xp, dyt], (gi, mut dx_group)| {
            // Not zero-filled: the group's first sample overwrites it (`accumulate` false).
            let mut acc_t: Option<Vec<T>> = weight.as_ref().map(|_| Vec::with_capacity(ckk_k));
            for (j, i) in (gi * group..((gi + 1) * group).min(g.n)).enumerate() {
                let dyn_ = &dy[i * out_len..(i + 1) * out_len];
                if let (Some(ig), Some(dxg)) = (&input, dx_group.as_deref_mut()) {
                    let dxn = &mut dxg[j * in_len..(j + 1) * in_len];
                    ig.sample(g, dyn_, dxn, (dp, scratch));
                }
                if let (Some((x, wg)), Some(acc_t)) = (&weight, acc_t.as_mut()) {
                    let out = acc_t.spare_capacity_mut();
                    wg.sample(g, ((*x, i), dyn_), (xp, dyt), out, j > 0);
                }
            }
            acc_t.map(|mut acc_t| {
                // SAFETY: a group has at least one sample, whose product wrote all `ckk·k`
                // values (later ones accumulated into them).
                unsafe { acc_t.set_len(ckk_k) };
                acc_t
            })
        })
        .collect();
    let dx = input.map(|_| {
        // SAFETY: the groups' chunks partition the first `n·in_len` slots, and each sample
        // wrote all of its own (`InputGrad::sample`).
        unsafe { dx.set_len(g.n * in_len) };
        dx
    });
    let dw = weight.map(|_| {
        // The groups' dWᵀ summed in group order from zero, element by element, then transposed
        // to dW `[k, ckk]`.
        let mut sum_t = vec![T::zero(); ckk_k];
        for part in partial.iter().flatten() {
            for (s, v) in sum_t.iter_mut().zip(part) {
                *s += *v;
            }
        }
        let mut dw = vec![T::zero(); g.w_len()];
        transpose(&sum_t, k, &mut dw);
        dw
    });
    (dx, dw)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{Column, Run};

    /// `block::<M, N, TAIL>(args…)` for the run-time block size `(m, n)`, `M` one of `rows` and
    /// `N` one of `cols` (`args` the parenthesized arguments).
    macro_rules! dispatch {
        ($block:ident, $m:expr, $n:expr, [$($mm:literal),*], $cols:tt, $tail:literal, $args:tt) => {
            match $m {
                $($mm => dispatch!(@cols $block, $mm, $n, $cols, $tail, $args),)*
                _ => unreachable!("block rows {}", $m),
            }
        };
        (@cols $block:ident, $mm:literal, $n:expr, [$($nn:literal),*], $tail:literal, $args:tt) => {
            match $n {
                $($nn => { let (a0, a1, a2, a3, a4, a5, a6, a7, a8) = $args; $block::<$mm, $nn, $tail>(a0, a1, a2, a3, a4, a5, a6, a7, a8) },)*
                _ => unreachable!("block columns {}", $n),
            }
        };
    }

    /// The product ([`super::Float::product`]) for one element type and instruction set: its
    /// vector type, lanes, rows and vectors per block (each listed down to 1), target features,
    /// and
    /// the operations, each written as `|args| expression` and substituted inline (masks are
    /// built inside the kernel from lane counts, so no vector crosses a call without the
    /// features).
    macro_rules! product_kernel {
        ($product:ident, $block:ident, $t:ty, $v:ty, lanes: $lanes:literal, rows: [$($rows:literal),*],
         vectors: [$($vectors:literal),*],
         features: $features:literal,
         mask: |$mn:ident| $mask:expr,
         zero: $zero:expr,
         splat: |$sx:ident| $splat:expr,
         load: |$lk:ident, $lp:ident| $load:expr,
         loadu: |$up:ident| $loadu:expr,
         fma: |$fa:ident, $fb:ident, $fc:ident| $fma:expr,
         add: |$aa:ident, $ab:ident| $add:expr,
         store: |$sp:ident, $sk:ident, $sv:ident| $store:expr,
         storeu: |$tp:ident, $tv:ident| $storeu:expr) => {
            /// [`crate::conv_kernels::Float::product`] on these instructions: blocks of up to
            /// `rows[0]` rows × `vectors[0]` vectors of accumulators (one broadcast per row and
            /// one load per vector), smaller ones at the edges.
            ///
            /// # Safety
            /// As [`crate::conv_kernels::Float::product`]; the CPU must have the features.
            pub(crate) unsafe fn $product(
                (a, a_rows): (*const $t, &[usize]),
                (b, b_rows): (*const $t, &[usize]),
                (runs, columns): (&[Run], &[Column]),
                (c, ldc): (*mut $t, usize),
                accumulate: bool,
            ) {
                const MR: usize = [$($rows),*][0];
                const NV: usize = [$($vectors),*][0];
                const L: usize = $lanes;
                let m = a_rows.len();
                // Rows in blocks as even as `MR` allows (16 = 6 + 5 + 5, not 6 + 6 + 4): a
                // block of few rows has too few accumulators to hide the FMA latency.
                let blocks = m.div_ceil(MR);
                let mut i = 0;
                for bi in 0..blocks {
                    let mb = m / blocks + usize::from(bi < m % blocks);
                    let (rows, ci) = (&a_rows[i..i + mb], c.add(i * ldc));
                    let mut v = 0;
                    while v < columns.len() {
                        if columns[v].lanes < L {
                            // A part of a vector: masked loads and stores, alone in its block.
                            let args = (a, rows, b, b_rows, runs, &columns[v..v + 1], ci, ldc, accumulate);
                            dispatch!($block, mb, 1, [$($rows),*], [1], true, args);
                            v += 1;
                        } else {
                            // Whole vectors: plain loads and stores. 4 vectors as 2 + 2, not
                            // 3 + 1 (a 1-vector block has too few accumulators to hide the
                            // FMA latency).
                            let full = columns[v..].iter().take(NV + 2).take_while(|x| x.lanes == L).count();
                            let nv = if NV == 3 && full == 4 { 2 } else { full.min(NV) };
                            let args = (a, rows, b, b_rows, runs, &columns[v..v + nv], ci, ldc, accumulate);
                            dispatch!($block, mb, nv, [$($rows),*], [$($vectors),*], false, args);
                            v += nv;
                        }
                    }
                    i += mb;
                }
            }

            /// One `M`-row × `V`-vector block of `c` (row stride `ldc`): whole vectors, or
            /// (`TAIL`, `V = 1`) one vector of its first `lanes` lanes, masked.
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $block<const M: usize, const V: usize, const TAIL: bool>(
                a: *const $t,
                a_rows: &[usize],
                b: *const $t,
                b_rows: &[usize],
                runs: &[Run],
                columns: &[Column],
                c: *mut $t,
                ldc: usize,
                accumulate: bool,
            ) {
                let k = { let $mn = columns[0].lanes; $mask };
                let load = |p: *const $t| if TAIL { let ($lk, $lp) = (k, p); $load } else { let $up = p; $loadu };
                let cb: [usize; V] = std::array::from_fn(|x| columns[x].b);
                let mut acc: [[$v; V]; M] = [[$zero; V]; M];
                // Index loops over the fixed-size arrays, here and in the stores below, not
                // zipped iterators: with those, an incremental build kept the accumulators on
                // the stack across the reduction's steps, and so did release's AVX-512 blocks
                // of 8 and 7 rows (docs/PERFORMANCE.md, "The dev profile's kernels" and "The
                // AVX-512 machine").
                for run in runs {
                    let mut ar = [a; M];
                    for i in 0..M {
                        ar[i] = a.add(a_rows[i] + run.a);
                    }
                    let steps = &b_rows[run.b..run.b + run.len];
                    for j in 0..steps.len() {
                        let br = b.add(steps[j]);
                        let mut bv: [$v; V] = [$zero; V];
                        for x in 0..V {
                            bv[x] = load(br.add(cb[x]));
                        }
                        for i in 0..M {
                            let av = { let $sx = *ar[i].add(j); $splat };
                            for x in 0..V {
                                acc[i][x] = { let ($fa, $fb, $fc) = (av, bv[x], acc[i][x]); $fma };
                            }
                        }
                    }
                }
                for ii in 0..M {
                    for x in 0..V {
                        let dst = c.add(ii * ldc + columns[x].c);
                        let sum = if accumulate {
                            let ($aa, $ab) = (acc[ii][x], load(dst));
                            $add
                        } else {
                            acc[ii][x]
                        };
                        if TAIL {
                            let ($sp, $sk, $sv) = (dst, k, sum);
                            $store
                        } else {
                            let ($tp, $tv) = (dst, sum);
                            $storeu
                        }
                    }
                }
            }
        };
    }

    /// AVX-512: 32 zmm registers, 8 rows × 3 vectors = 24 accumulators.
    pub(crate) mod avx512 {
        use super::*;

        product_kernel!(product_f32, block_f32, f32, __m512, lanes: 16, rows: [8, 7, 6, 5, 4, 3, 2, 1], vectors: [3, 2, 1],
            features: "avx512f",
            mask: |n| if n >= 16 { u16::MAX } else { (1u16 << n) - 1 },
            zero: _mm512_setzero_ps(),
            splat: |x| _mm512_set1_ps(x),
            load: |k, p| _mm512_maskz_loadu_ps(k, p),
            loadu: |p| _mm512_loadu_ps(p),
            fma: |a, b, c| _mm512_fmadd_ps(a, b, c),
            add: |a, b| _mm512_add_ps(a, b),
            store: |p, k, v| _mm512_mask_storeu_ps(p, k, v),
            storeu: |p, v| _mm512_storeu_ps(p, v));
        product_kernel!(product_f64, block_f64, f64, __m512d, lanes: 8, rows: [8, 7, 6, 5, 4, 3, 2, 1], vectors: [3, 2, 1],
            features: "avx512f",
            mask: |n| if n >= 8 { u8::MAX } else { (1u8 << n) - 1 },
            zero: _mm512_setzero_pd(),
            splat: |x| _mm512_set1_pd(x),
            load: |k, p| _mm512_maskz_loadu_pd(k, p),
            loadu: |p| _mm512_loadu_pd(p),
            fma: |a, b, c| _mm512_fmadd_pd(a, b, c),
            add: |a, b| _mm512_add_pd(a, b),
            store: |p, k, v| _mm512_mask_storeu_pd(p, k, v),
            storeu: |p, v| _mm512_storeu_pd(p, v));
    }

    /// AVX-512 on 256-bit vectors (AVX-512VL): the 32 registers of AVX-512, so the same 8 rows
    /// × 3 vectors of accumulators, with AVX2's lanes ([`super::Isa::Avx512Narrow`]).
    pub(crate) mod avx512_narrow {
        use super::*;

        product_kernel!(product_f32, block_f32, f32, __m256, lanes: 8, rows: [8, 7, 6, 5, 4, 3, 2, 1], vectors: [3, 2, 1],
            features: "avx512f,avx512vl,fma",
            mask: |n| if n >= 8 { u8::MAX } else { (1u8 << n) - 1 },
            zero: _mm256_setzero_ps(),
            splat: |x| _mm256_set1_ps(x),
            load: |k, p| _mm256_maskz_loadu_ps(k, p),
            loadu: |p| _mm256_loadu_ps(p),
            fma: |a, b, c| _mm256_fmadd_ps(a, b, c),
            add: |a, b| _mm256_add_ps(a, b),
            store: |p, k, v| _mm256_mask_storeu_ps(p, k, v),
            storeu: |p, v| _mm256_storeu_ps(p, v));
        product_kernel!(product_f64, block_f64, f64, __m256d, lanes: 4, rows: [8, 7, 6, 5, 4, 3, 2, 1], vectors: [3, 2, 1],
            features: "avx512f,avx512vl,fma",
            mask: |n| if n >= 4 { 0xF } else { (1u8 << n) - 1 },
            zero: _mm256_setzero_pd(),
            splat: |x| _mm256_set1_pd(x),
            load: |k, p| _mm256_maskz_loadu_pd(k, p),
            loadu: |p| _mm256_loadu_pd(p),
            fma: |a, b, c| _mm256_fmadd_pd(a, b, c),
            add: |a, b| _mm256_add_pd(a, b),
            store: |p, k, v| _mm256_mask_storeu_pd(p, k, v),
            storeu: |p, v| _mm256_storeu_pd(p, v));
    }

    /// `dst[j·ldd + i] = src[i·lds + j]` for `i, j < 8`.
    ///
    /// # Safety
    /// `src` readable and `dst` writable at those places; the CPU must have AVX.
    #[target_feature(enable = "avx")]
    pub(crate) unsafe fn transpose_f32(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
        // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped.
        let (t0, t1) = (
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
        );
        let (t2, t3) = (
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
        );
        let (t4, t5) = (
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
        );
        let (t6, t7) = (
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        );
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, v) in out.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(j * ldd), v);
        }
    }

    /// `dst[j·ldd + i] = src[i·lds + j]` for `i, j < 4`.
    ///
    /// # Safety
    /// `src` readable and `dst` writable at those places; the CPU must have AVX.
    #[target_feature(enable = "avx")]
    pub(crate) unsafe fn transpose_f64(src: *const f64, lds: usize, dst: *mut f64, ldd: usize) {
        let r: [__m256d; 4] = std::array::from_fn(|i| _mm256_loadu_pd(src.add(i * lds)));
        let (t0, t1) = (
            _mm256_unpacklo_pd(r[0], r[1]),
            _mm256_unpackhi_pd(r[0], r[1]),
        );
        let (t2, t3) = (
            _mm256_unpacklo_pd(r[2], r[3]),
            _mm256_unpackhi_pd(r[2], r[3]),
        );
        let out = [
            _mm256_permute2f128_pd::<0x20>(t0, t2),
            _mm256_permute2f128_pd::<0x20>(t1, t3),
            _mm256_permute2f128_pd::<0x31>(t0, t2),
            _mm256_permute2f128_pd::<0x31>(t1, t3),
        ];
        for (j, v) in out.into_iter().enumerate() {
            _mm256_storeu_pd(dst.add(j * ldd), v);
        }
    }

    /// AVX2 + FMA: 16 ymm registers, 6 rows × 2 vectors = 12 accumulators (4 × 3 spilled one);
    /// masks are vectors of all-ones lanes (`lane < n`).
    pub(crate) mod avx2 {
        use super::*;

        product_kernel!(product_f32, block_f32, f32, __m256, lanes: 8, rows: [6, 5, 4, 3, 2, 1], vectors: [2, 1],
            features: "avx2,fma",
            mask: |n| _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
            zero: _mm256_setzero_ps(),
            splat: |x| _mm256_set1_ps(x),
            load: |k, p| _mm256_maskload_ps(p, k),
            loadu: |p| _mm256_loadu_ps(p),
            fma: |a, b, c| _mm256_fmadd_ps(a, b, c),
            add: |a, b| _mm256_add_ps(a, b),
            store: |p, k, v| _mm256_maskstore_ps(p, k, v),
            storeu: |p, v| _mm256_storeu_ps(p, v));
        product_kernel!(product_f64, block_f64, f64, __m256d, lanes: 4, rows: [6, 5, 4, 3, 2, 1], vectors: [2, 1],
            features: "avx2,fma",
            mask: |n| _mm256_cmpgt_epi64(_mm256_set1_epi64x(n as i64), _mm256_setr_epi64x(0, 1, 2, 3)),
            zero: _mm256_setzero_pd(),
            splat: |x| _mm256_set1_pd(x),
            load: |k, p| _mm256_maskload_pd(p, k),
            loadu: |p| _mm256_loadu_pd(p),
            fma: |a, b, c| _mm256_fmadd_pd(a, b, c),
            add: |a, b| _mm256_add_pd(a, b),
            store: |p, k, v| _mm256_maskstore_pd(p, k, v),
            storeu: |p, v| _mm256_storeu_pd(p, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 256-bit vectors only for AVX-512, only when asked, and only for rows that are whole
    /// 256-bit vectors but not whole 512-bit ones (8 lanes of f32 against 16, 4 of f64 against 8).
    #[test]
    fn narrow_vectors_only_where_rows_fit_them_alone() {
        use Isa::{Avx2, Avx512, Avx512Narrow};
        let cases: [(Isa, usize, bool, Isa, Isa); 9] = [
            // (set, row width, narrow, f32's choice, f64's choice)
            (Avx512, 8, true, Avx512Narrow, Avx512),
            (Avx512, 24, true, Avx512Narrow, Avx512),
            (Avx512, 4, true, Avx512, Avx512Narrow),
            (Avx512, 16, true, Avx512, Avx512),
            (Avx512, 32, true, Avx512, Avx512),
            (Avx512, 10, true, Avx512, Avx512),
            (Avx512, 0, true, Avx512, Avx512),
            (Avx512, 8, false, Avx512, Avx512),
            (Avx2, 4, true, Avx2, Avx2),
        ];
        for (set, width, narrow, f32s, f64s) in cases {
            assert_eq!(
                set.for_width::<f32>(width, narrow),
                f32s,
                "{set:?} {width} {narrow}"
            );
            assert_eq!(
                set.for_width::<f64>(width, narrow),
                f64s,
                "{set:?} {width} {narrow}"
            );
        }
    }

    /// CPUID's family decoding: Zen 3 and Zen 4 are AMD family 19h, Zen 2 17h, Zen 5 1Ah;
    /// Intel's family 6 is not.
    #[test]
    fn amd_family_19h_from_cpuid() {
        let amd = (0x6874_7541, 0x6974_6E65, 0x444D_4163); // "AuthenticAMD"
        let intel = (0x756E_6547, 0x4965_6E69, 0x6C65_746E); // "GenuineIntel"
        let cases = [
            (amd, 0x00A1_0F11, true),    // EPYC 9004 (Zen 4)
            (amd, 0x00A0_0F11, true),    // EPYC 7003 (Zen 3)
            (amd, 0x0083_0F10, false),   // EPYC 7002 (Zen 2, family 17h)
            (amd, 0x00B0_0F21, false),   // EPYC 9005 (Zen 5, family 1Ah)
            (intel, 0x0008_06F8, false), // Xeon Sapphire Rapids (family 6)
            (intel, 0x00A1_0F11, false), // a family-19h signature, but not AMD
        ];
        for (vendor, signature, expected) in cases {
            assert_eq!(
                amd_family_19h(vendor, signature),
                expected,
                "{signature:#x}"
            );
        }
    }

    /// The tiled transpose equals the definition for whole tiles, ragged edges and both types.
    #[test]
    fn transpose_matches_its_definition() {
        if !std::is_x86_feature_detected!("avx") {
            return; // the direct kernels (its only callers) need AVX too
        }
        fn check<T: Float>(rows: usize, cols: usize) {
            let src: Vec<T> = (0..rows * cols).map(|i| T::from_f64(i as f64)).collect();
            let mut dst = vec![T::zero(); rows * cols];
            transpose(&src, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r].to_f64(),
                        src[r * cols + c].to_f64(),
                        "{rows}×{cols} at {r}, {c}"
                    );
                }
            }
        }
        for (rows, cols) in [(16, 1024), (64, 64), (13, 77), (3, 5), (8, 9), (1, 1)] {
            check::<f32>(rows, cols);
            check::<f64>(rows, cols);
        }
    }

    /// The stride-2 fill puts every value where the general one does, and nothing else, mapped
    /// by its channel's map.
    #[test]
    fn stride2_fill_matches_the_general_fill() {
        let mut cases = 0;
        for (h, w) in [(8, 8), (7, 9), (16, 15), (1, 1), (2, 3)] {
            for padding in 0..3 {
                for k in 1..=3 {
                    if h + 2 * padding < k || w + 2 * padding < k {
                        continue;
                    }
                    for (top, left) in [(padding, padding), (padding, padding + 1)] {
                        let pad = (top, left);
                        let phases = Phases::new((h, w), pad, (padding, padding), (k, k), 2);
                        let channels = 3;
                        let x: Vec<f64> = (1..=channels * h * w).map(|i| i as f64).collect();
                        let len = phases.sample_len(channels);
                        let (mut general, mut split) = (vec![0.0; len], vec![0.0; len]);
                        // A different map per channel: values land in their channel's planes.
                        let map = |c: usize| move |v: f64| v * (c as f64 + 2.0) - 0.5;
                        phases.fill_any_stride(&x, (h, w), &mut general, map);
                        phases.fill_stride2(&x, (h, w), &mut split, map);
                        assert_eq!(general, split, "{h}×{w}, pad {pad:?}, kernel {k}");
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 84, "the geometries above");
    }
}
