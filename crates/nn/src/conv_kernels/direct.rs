//! Direct stride-1 convolution kernels for f32 on CPUs with AVX-512: no im2col.
//!
//! **The wide-row trick.** Pad one input sample into planes of `hp × wp` (`wp = w + 2·padding`)
//! and compute the output on the padded width: position `p' = oy·wp + ox` for `ox < wp`, of
//! which the first `ow` of each row are real and the rest are discarded. Patch entry
//! `r = (c, ki, kj)` of position `p'` is then `xpad[off_r + p']` with
//! `off_r = c·plane + ki·wp + kj`, so row `r` of the im2col matrix *is* the padded input read
//! from `off_r`: contiguous, never copied. All three passes become products over such rows:
//!
//! - forward:         `y'[k, p'] = Σ_r W[k, r] · xpad[off_r + p']`             ([`nn`])
//! - input gradient:  the forward of `dy` padded by `kh − 1 − padding`, with the weight flipped
//!   in space and transposed in channels (`Wf[c, (k, q, u)] = W[k, c, kh−1−q, kw−1−u]`)
//! - weight gradient: `dW[k, r] = Σ_n Σ_p' dy'_n[k, p'] · xpad_n[off_r + p']`, `dy'` being `dy`
//!   widened to `wp` with zeros in the discarded columns ([`nt`]).
//!
//! The working set is the padded sample (at most `1.3×` the input sample), not a 9× larger
//! patch matrix, so it stays in L1/L2 and the kernels run at FMA speed. Register blocks:
//! [`nn`] keeps an `8 × 48` block of `y'` in 24 zmm accumulators and broadcasts one weight per
//! row; [`nt`] keeps `4 × 4` dot products of 16 lanes each across the samples of a pass (a
//! few samples of a weight group), and sums lanes once at the pass's end. Summation orders depend only on the shapes.

use super::Geometry;

/// Whether the direct kernels run `g` on this CPU: stride 1, padding below the kernel size
/// (so the input gradient is a valid convolution), AVX-512.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.stride == 1 && g.padding < g.kh && g.padding < g.kw && avx512()
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Zero-padded planes: `planes` planes of `h × w` from `src`, each written at row `top`,
/// column `left` of a `dh × dw` plane followed by `extra` zeros (so that reads of the wide
/// rows past a plane's end stay inside it).
struct Padded {
    dh: usize,
    dw: usize,
    extra: usize,
}

impl Padded {
    fn plane(&self) -> usize {
        self.dh * self.dw + self.extra
    }

    fn fill(
        &self,
        src: &[f32],
        (h, w): (usize, usize),
        (top, left): (usize, usize),
        dst: &mut [f32],
    ) {
        let planes = src.len() / (h * w);
        for (s, d) in src
            .chunks_exact(h * w)
            .zip(dst.chunks_exact_mut(self.plane()))
        {
            d[..top * self.dw].fill(0.0);
            for (y, row) in s.chunks_exact(w).enumerate() {
                let dr = &mut d[(top + y) * self.dw..(top + y + 1) * self.dw];
                dr[..left].fill(0.0);
                dr[left..left + w].copy_from_slice(row);
                dr[left + w..].fill(0.0);
            }
            d[(top + h) * self.dw..].fill(0.0);
        }
        debug_assert_eq!(dst.len(), planes * self.plane());
    }
}

/// Offsets `off_r` of the rows `r = (c, ki, kj)` of a `channels × kh × kw` patch.
fn offsets(channels: usize, kh: usize, kw: usize, plane: usize, wp: usize) -> Vec<usize> {
    let mut offs = Vec::with_capacity(channels * kh * kw);
    for c in 0..channels {
        for ki in 0..kh {
            for kj in 0..kw {
                offs.push(c * plane + ki * wp + kj);
            }
        }
    }
    offs
}

/// Copies the first `ow` columns of every `wp`-wide row of `wide` into `out` (`[rows, ow]`).
fn compact(wide: &[f32], wp: usize, ow: usize, out: &mut [f32]) {
    for (o, row) in out.chunks_exact_mut(ow).zip(wide.chunks_exact(wp)) {
        o.copy_from_slice(&row[..ow]);
    }
}

/// Stride-1 convolution of padded samples: `out_n[m, oh, ow]` from the `a` matrix
/// (`[m, offs.len()]`) and each sample's padded planes; parallel over samples.
fn conv_padded(
    n: usize,
    m: usize,
    (oh, ow, wp): (usize, usize, usize),
    a: &[f32],
    offs: &[usize],
    pad: impl Fn(usize, &mut [f32]) + Sync,
    padded_len: usize,
) -> Vec<f32> {
    use rayon::prelude::*;
    let out_len = m * oh * ow;
    let mut out = vec![0.0f32; n * out_len];
    out.par_chunks_mut(out_len.max(1))
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; padded_len], vec![0.0f32; m * oh * wp]),
            |(xp, wide), (i, on)| {
                pad(i, xp);
                // SAFETY: every offset plus `oh·wp` stays inside `xp` (Padded::extra), `a` is
                // [m, offs.len()], `wide` is [m, oh·wp]; the CPU has AVX-512 (`applies`).
                unsafe { nn(m, oh * wp, a, offs, xp.as_ptr(), wide.as_mut_ptr()) };
                compact(wide, wp, ow, on);
            },
        );
    out
}

/// Forward pass of a geometry that [`applies`].
pub(crate) fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (hp, wp) = (g.h + 2 * g.padding, g.w + 2 * g.padding);
    let padded = Padded {
        dh: hp,
        dw: wp,
        extra: g.kw,
    };
    let offs = offsets(g.c, g.kh, g.kw, padded.plane(), wp);
    conv_padded(
        g.n,
        g.k,
        (g.oh, g.ow, wp),
        w,
        &offs,
        |i, xp| {
            let xn = &x[i * g.in_len()..(i + 1) * g.in_len()];
            padded.fill(xn, (g.h, g.w), (g.padding, g.padding), xp);
        },
        g.c * padded.plane(),
    )
}

/// Input gradient of a geometry that [`applies`]: the forward convolution of `dy` padded by
/// `kh − 1 − padding` with the flipped, channel-transposed weight.
pub(crate) fn backward_input(g: &Geometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (pt, pl) = (g.kh - 1 - g.padding, g.kw - 1 - g.padding);
    let (hp, wp) = (g.oh + 2 * pt, g.ow + 2 * pl);
    let padded = Padded {
        dh: hp,
        dw: wp,
        extra: g.kw,
    };
    let kk = g.kh * g.kw;
    // Wf[c, (k, q, u)] = W[k, c, kh−1−q, kw−1−u]
    let mut wf = vec![0.0f32; g.w_len()];
    for k in 0..g.k {
        for c in 0..g.c {
            for q in 0..kk {
                wf[(c * g.k + k) * kk + q] = w[(k * g.c + c) * kk + (kk - 1 - q)];
            }
        }
    }
    let offs = offsets(g.k, g.kh, g.kw, padded.plane(), wp);
    conv_padded(
        g.n,
        g.c,
        (g.h, g.w, wp),
        &wf,
        &offs,
        |i, dp| {
            let dyn_ = &dy[i * g.out_len()..(i + 1) * g.out_len()];
            padded.fill(dyn_, (g.oh, g.ow), (pt, pl), dp);
        },
        g.k * padded.plane(),
    )
}

/// Weight gradient of a geometry that [`applies`]; samples in groups of `group`, each group's
/// sum formed in registers, groups summed in order.
pub(crate) fn backward_weight(g: &Geometry, x: &[f32], dy: &[f32], group: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let (hp, wp) = (g.h + 2 * g.padding, g.w + 2 * g.padding);
    let padded = Padded {
        dh: hp,
        dw: wp,
        extra: g.kw,
    };
    let widened = Padded {
        dh: g.oh,
        dw: wp,
        extra: 0,
    };
    let offs = offsets(g.c, g.kh, g.kw, padded.plane(), wp);
    let (xp_len, dyp_len) = (g.c * padded.plane(), g.k * widened.plane());
    let len = g.oh * wp;
    // Samples per register pass: enough that a pass streams ~1024 positions per dot product
    // (the lane sums at its end are then cheap), few enough that its padded samples stay in
    // L2. A function of the shapes only, like the groups.
    let pass = (1024 / len).clamp(1, group);
    let groups = g.n.div_ceil(group);
    let partial: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|gi| {
            let mut xp = vec![0.0f32; pass * xp_len];
            let mut dyp = vec![0.0f32; pass * dyp_len];
            let mut acc = vec![0.0f32; g.w_len()];
            let members: Vec<usize> = (gi * group..((gi + 1) * group).min(g.n)).collect();
            for samples in members.chunks(pass) {
                for (j, &i) in samples.iter().enumerate() {
                    let xn = &x[i * g.in_len()..(i + 1) * g.in_len()];
                    let xpj = &mut xp[j * xp_len..][..xp_len];
                    padded.fill(xn, (g.h, g.w), (g.padding, g.padding), xpj);
                    let dyn_ = &dy[i * g.out_len()..(i + 1) * g.out_len()];
                    let dypj = &mut dyp[j * dyp_len..][..dyp_len];
                    widened.fill(dyn_, (g.oh, g.ow), (0, 0), dypj);
                }
                // SAFETY: as in `conv_padded`; the strides address whole padded samples.
                unsafe {
                    nt(
                        g.k,
                        len,
                        samples.len(),
                        (dyp.as_ptr(), dyp_len),
                        (xp.as_ptr(), xp_len),
                        &offs,
                        acc.as_mut_ptr(),
                    )
                };
            }
            acc
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0.0; g.w_len()]);
    for part in parts {
        for (d, s) in dw.iter_mut().zip(&part) {
            *d += *s;
        }
    }
    dw
}

/// `c[i, t] = Σ_r a[i, r] · b[offs[r] + t]` for `i < m`, `t < len`; `a` is `[m, offs.len()]`,
/// `c` is `[m, len]`, both row-major.
///
/// # Safety
/// `b` must be readable at `offs[r] + t` for every `r` and `t < len`; `a` and `c` must hold
/// `m · offs.len()` and `m · len` elements; the CPU must have AVX-512F.
unsafe fn nn(m: usize, len: usize, a: &[f32], offs: &[usize], b: *const f32, c: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    x86::nn(m, len, a, offs, b, c);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "the direct kernels need AVX-512 ({m}, {len}, {:?}, {b:?}, {c:?})",
        (a, offs)
    );
}

/// `c[i, r] += Σ_s Σ_t a_s[i·len + t] · b_s[offs[r] + t]` for `i < m`, `r < offs.len()`, over
/// `samples` samples, sample `s` at `a + s·a_stride` and `b + s·b_stride`; `c` is
/// `[m, offs.len()]`.
///
/// # Safety
/// As [`nn`], for every sample.
unsafe fn nt(
    m: usize,
    len: usize,
    samples: usize,
    a: (*const f32, usize),
    b: (*const f32, usize),
    offs: &[usize],
    c: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    x86::nt(m, len, samples, a, b, offs, c);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "the direct kernels need AVX-512 ({m}, {len}, {samples}, {a:?}, {b:?}, {offs:?}, {c:?})"
    );
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Lanes of a zmm register.
    const L: usize = 16;

    /// `block::<M, N>(args…)` for the run-time block size `(m, n)`, `M` one of `rows` and `N`
    /// one of `cols` (`args` the parenthesized arguments).
    macro_rules! dispatch {
        ($block:ident, $m:expr, $n:expr, [$($mm:literal),*], $cols:tt, $args:tt) => {
            match $m {
                $($mm => dispatch!(@cols $block, $mm, $n, $cols, $args),)*
                _ => unreachable!("block rows {}", $m),
            }
        };
        (@cols $block:ident, $mm:literal, $n:expr, [$($nn:literal),*], $args:tt) => {
            match $n {
                $($nn => $block::<$mm, $nn> $args,)*
                _ => unreachable!("block columns {}", $n),
            }
        };
    }

    /// Mask of the first `n` lanes (`n ≤ 16`).
    fn mask(n: usize) -> __mmask16 {
        if n >= L {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    }

    /// [`super::nn`]: blocks of 8 rows × 3 vectors, smaller ones at the edges.
    pub(super) unsafe fn nn(
        m: usize,
        len: usize,
        a: &[f32],
        offs: &[usize],
        b: *const f32,
        c: *mut f32,
    ) {
        const MR: usize = 8;
        const NV: usize = 3;
        let kdim = offs.len();
        let mut i = 0;
        while i < m {
            let mb = (m - i).min(MR);
            let ai = a.as_ptr().add(i * kdim);
            let mut t = 0;
            while t < len {
                let nv = (len - t).div_ceil(L).min(NV);
                let last = mask(len - t - (nv - 1) * L);
                let (bt, ct) = (b.add(t), c.add(i * len + t));
                dispatch!(
                    nn_block,
                    mb,
                    nv,
                    [8, 7, 6, 5, 4, 3, 2, 1],
                    [3, 2, 1],
                    (kdim, ai, offs, bt, ct, len, last)
                );
                t += nv * L;
            }
            i += mb;
        }
    }

    /// One `M`-row × `V`-vector block of `c`; the last vector's lanes are `last`.
    #[target_feature(enable = "avx512f")]
    unsafe fn nn_block<const M: usize, const V: usize>(
        kdim: usize,
        a: *const f32,
        offs: &[usize],
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        last: __mmask16,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; M];
        let lane_mask = |v: usize| if v + 1 == V { last } else { 0xffff };
        for (r, &off) in offs.iter().enumerate() {
            let br = b.add(off);
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(lane_mask(v), br.add(v * L));
            }
            for (ii, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(ii * kdim + r));
                for (x, bx) in row.iter_mut().zip(&bv) {
                    *x = _mm512_fmadd_ps(av, *bx, *x);
                }
            }
        }
        for (ii, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(ii * ldc + v * L), lane_mask(v), *x);
            }
        }
    }

    /// [`super::nt`]: blocks of 4 rows of `a` × 4 rows of `b` (8 loads per 16 FMAs; wider
    /// blocks measured slower), smaller ones at the edges.
    pub(super) unsafe fn nt(
        m: usize,
        len: usize,
        samples: usize,
        a: (*const f32, usize),
        b: (*const f32, usize),
        offs: &[usize],
        c: *mut f32,
    ) {
        const MR: usize = 4;
        const NR: usize = 4;
        let n = offs.len();
        let mut j = 0;
        while j < n {
            let nb = (n - j).min(NR);
            let mut i = 0;
            while i < m {
                let mb = (m - i).min(MR);
                let ai = (a.0.add(i * len), a.1);
                let (bo, ci) = (&offs[j..j + nb], c.add(i * n + j));
                dispatch!(
                    nt_block,
                    mb,
                    nb,
                    [4, 3, 2, 1],
                    [4, 3, 2, 1],
                    (len, samples, ai, b, bo, ci, n)
                );
                i += mb;
            }
            j += nb;
        }
    }

    /// One `M`×`N` block of dot products, accumulated over every sample, then lane-summed
    /// into `c` (row stride `ldc`). Plain indexed loops: a closure-and-iterator version of
    /// this loop left accumulators on the stack (measured 20–40% slower).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn nt_block<const M: usize, const N: usize>(
        len: usize,
        samples: usize,
        a: (*const f32, usize),
        b: (*const f32, usize),
        offs: &[usize],
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); N]; M];
        for s in 0..samples {
            let (as_, bs) = (a.0.add(s * a.1), b.0.add(s * b.1));
            let mut rows = [bs; N];
            for (r, &off) in rows.iter_mut().zip(offs) {
                *r = bs.add(off);
            }
            let mut t = 0;
            while t < len {
                let k = mask(len - t);
                let mut bv = [_mm512_setzero_ps(); N];
                for jj in 0..N {
                    bv[jj] = _mm512_maskz_loadu_ps(k, rows[jj].add(t));
                }
                for ii in 0..M {
                    let av = _mm512_maskz_loadu_ps(k, as_.add(ii * len + t));
                    for jj in 0..N {
                        acc[ii][jj] = _mm512_fmadd_ps(av, bv[jj], acc[ii][jj]);
                    }
                }
                t += L;
            }
        }
        for (ii, row) in acc.iter().enumerate() {
            for (jj, x) in row.iter().enumerate() {
                *c.add(ii * ldc + jj) += _mm512_reduce_add_ps(*x);
            }
        }
    }
}
