//! [`conv2d`]: the one 2-D convolution every explr model uses (through [`crate::Conv2d`]).
//!
//! On the CPU, for f32 and f64, it runs as three candle custom ops (forward, input gradient,
//! weight gradient) on the kernels of `conv_kernels` (the [`crate::ConvKernels`] set in use), so
//! autograd works unchanged; candle 0.11's own CPU conv computes the input gradient with a naive
//! `conv_transpose2d` loop that is ~10× slower. On any other device or dtype it calls
//! candle's `Tensor::conv2d`. [`conv_flops`] counts the floating-point work of the three ops.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use crate::conv_kernels::{self, Geometry};
use crate::{NnError, Result};

/// 2-D convolution of `x` `[n, c, h, w]` with `w` `[k, c, kh, kw]`, stride `stride` and zero
/// padding `padding` on every side (dilation 1, one group, no bias), output
/// `[n, k, (h + 2·padding − kh)/stride + 1, (w + 2·padding − kw)/stride + 1]`.
///
/// The result matches `x.conv2d(w, padding, stride, 1, 1)` and is differentiable wrt both
/// `x` and `w`. CPU f32/f64 tensors run on explr's kernels ([`crate::ConvKernels`]), every other
/// device or dtype on candle's own convolution. A gradient nobody asked for is not computed: not
/// the input's when `x` tracks no operation (a network's data), not the weight's when `w` does
/// not (a frozen weight).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// let x = Tensor::ones((2, 3, 8, 8), DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((4, 3, 3, 3), DType::F32, &Device::Cpu)?;
/// let y = explr_nn::conv2d(&x, &w, 2, 1)?;
/// assert_eq!(y.dims(), &[2, 4, 4, 4]);
/// // The centre of the output sees a full 3×3×3 patch of ones.
/// let centre: f32 = y.get(0)?.get(0)?.get(1)?.get(1)?.to_scalar()?;
/// assert_eq!(centre, 27.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`NnError::InvalidConv`] when the ranks, channel counts, dtypes or devices disagree, the
/// stride is zero, or the kernel is larger than the padded input; [`NnError::Candle`] when
/// the underlying op fails.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    check(x, w, stride, padding)?;
    let fast = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fast {
        return Ok(x.conv2d(w, padding, stride, 1, 1)?);
    }
    let (_, _, h, wi) = x.dims4()?;
    Ok(x.apply_op2(
        w,
        Conv2dForward {
            stride,
            padding,
            in_hw: (h, wi),
        },
    )?)
}

/// Floating-point operations of the CPU convolution passes ([`conv2d`] on f32/f64 CPU tensors,
/// on any [`crate::ConvKernels`] set), summed over the process so far. A pass of a `[n, c, h, w]`
/// input, a `[k, c, kh, kw]` weight and a `[n, k, oh, ow]` output is `2·n·k·oh·ow·c·kh·kw`
/// operations (one multiply and one add per product), whichever pass it is: the count follows
/// the shapes, like PyTorch's `torch.utils.flop_counter`, not what a kernel set executes (zero
/// padding, layout copies). Convolutions on other devices are not counted.
///
/// ```
/// use candle_core::{DType, Device, Tensor, Var};
/// let x = Tensor::ones((2, 3, 8, 8), DType::F32, &Device::Cpu)?;
/// let w = Var::ones((4, 3, 3, 3), DType::F32, &Device::Cpu)?;
/// let before = explr_nn::conv_flops();
/// let y = explr_nn::conv2d(&x, &w, 1, 1)?;
/// y.sum_all()?.backward()?;
/// let work = explr_nn::conv_flops().since(before);
/// // 2·(2·4·8·8)·(3·3·3) forward; the same for the weight gradient; none for the input's.
/// assert_eq!((work.forward, work.input_grad, work.weight_grad), (27648, 0, 27648));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvFlops {
    /// Forward passes.
    pub forward: u64,
    /// Input gradients.
    pub input_grad: u64,
    /// Weight gradients.
    pub weight_grad: u64,
}

impl ConvFlops {
    /// The work done between the count `earlier` and this one.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            forward: self.forward.saturating_sub(earlier.forward),
            input_grad: self.input_grad.saturating_sub(earlier.input_grad),
            weight_grad: self.weight_grad.saturating_sub(earlier.weight_grad),
        }
    }

    /// Both gradients.
    pub fn backward(self) -> u64 {
        self.input_grad + self.weight_grad
    }
}

/// [`ConvFlops`] so far, in the order forward, input gradient, weight gradient.
static FLOPS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// The CPU convolution work of this process so far ([`ConvFlops`]); the difference of two
/// counts ([`ConvFlops::since`]) is the work in between, from every thread.
pub fn conv_flops() -> ConvFlops {
    let [forward, input_grad, weight_grad] = FLOPS.each_ref().map(|c| c.load(Ordering::Relaxed));
    ConvFlops {
        forward,
        input_grad,
        weight_grad,
    }
}

/// Adds one pass of `g` to the count of `pass` (0 forward, 1 input, 2 weight gradient).
fn count(pass: usize, g: &Geometry) {
    let flops = 2 * g.n as u64 * g.out_len() as u64 * g.ckk() as u64;
    FLOPS[pass].fetch_add(flops, Ordering::Relaxed);
}

/// [`conv2d`] with candle's error type, for `Module::forward`.
pub(crate) fn conv2d_candle(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    conv2d(x, w, stride, padding).map_err(|e| match e {
        NnError::Candle(e) => e,
        other => candle_core::Error::wrap(other),
    })
}

/// Validates shapes and arguments, so that the kernels never see inconsistent input.
fn check(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<()> {
    let invalid = |reason: String| NnError::InvalidConv {
        x: x.dims().to_vec(),
        w: w.dims().to_vec(),
        stride,
        padding,
        reason,
    };
    if x.rank() != 4 || w.rank() != 4 {
        return Err(invalid(
            "input and weight must both have rank 4 ([n, c, h, w] and [k, c, kh, kw]); \
             unsqueeze a single image to a batch of one"
                .into(),
        ));
    }
    if x.dims()[1] != w.dims()[1] {
        return Err(invalid(format!(
            "the input has {} channels but the weight expects {}: dim 1 of both must agree",
            x.dims()[1],
            w.dims()[1]
        )));
    }
    if stride == 0 {
        return Err(invalid("the stride must be at least 1".into()));
    }
    let (h, wi) = (x.dims()[2] + 2 * padding, x.dims()[3] + 2 * padding);
    if w.dims()[2] > h || w.dims()[3] > wi || w.dims()[2] == 0 || w.dims()[3] == 0 {
        return Err(invalid(format!(
            "a {}×{} kernel does not fit the {h}×{wi} padded input: use a smaller kernel or \
             more padding",
            w.dims()[2],
            w.dims()[3]
        )));
    }
    if x.dtype() != w.dtype() {
        return Err(invalid(format!(
            "input is {:?} but weight is {:?}: convert one with `to_dtype`",
            x.dtype(),
            w.dtype()
        )));
    }
    if !x.device().same_device(w.device()) {
        return Err(invalid(format!(
            "input is on {:?} but weight on {:?}: move one with `to_device`",
            x.device().location(),
            w.device().location()
        )));
    }
    Ok(())
}

/// The slice of a rank-4 tensor's storage in contiguous order: borrowed when the layout is
/// already contiguous, gathered otherwise.
fn contiguous<'a, T: Copy>(s: &'a [T], l: &Layout) -> Cow<'a, [T]> {
    if let Some((a, b)) = l.contiguous_offsets() {
        return Cow::Borrowed(&s[a..b]);
    }
    let (d, st, o) = (l.dims(), l.stride(), l.start_offset());
    let mut out = Vec::with_capacity(l.shape().elem_count());
    for i0 in 0..d[0] {
        for i1 in 0..d[1] {
            for i2 in 0..d[2] {
                let base = o + i0 * st[0] + i1 * st[1] + i2 * st[2];
                out.extend((0..d[3]).map(|i3| s[base + i3 * st[3]]));
            }
        }
    }
    Cow::Owned(out)
}

/// Builds the geometry from the input `[n, c, h, w]` and weight `[k, c, kh, kw]` dims.
fn geometry(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Geometry {
    Geometry {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        k: w[0],
        kh: w[2],
        kw: w[3],
        stride,
        padding,
        oh: (x[2] + 2 * padding - w[2]) / stride + 1,
        ow: (x[3] + 2 * padding - w[3]) / stride + 1,
    }
}

/// Dispatches a two-operand kernel on the dtype (f32 or f64, the only ones [`conv2d`] sends).
fn run2(
    name: &'static str,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    f32_kernel: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_kernel: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<CpuStorage> {
    match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => Ok(CpuStorage::F32(f32_kernel(
            &contiguous(a, l1),
            &contiguous(b, l2),
        ))),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => Ok(CpuStorage::F64(f64_kernel(
            &contiguous(a, l1),
            &contiguous(b, l2),
        ))),
        _ => Err(candle_core::Error::UnsupportedDTypeForOp(s1.dtype(), name)),
    }
}

/// Forward op: `(x, w) ↦ y`; its backward is the two gradient ops below.
struct Conv2dForward {
    stride: usize,
    padding: usize,
    in_hw: (usize, usize),
}

impl CustomOp2 for Conv2dForward {
    fn name(&self) -> &'static str {
        "explr-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geometry(l1.dims(), l2.dims(), self.stride, self.padding);
        let y = run2(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            |x, w| conv_kernels::forward(&g, x, w),
            |x, w| conv_kernels::forward(&g, x, w),
        )?;
        count(0, &g);
        Ok((y, (g.n, g.k, g.oh, g.ow).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // A gradient nobody asked for is not computed: the input of a network's first
        // convolution (the data) and a frozen weight track no operation.
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(
                w,
                &Conv2dInputGrad {
                    stride: self.stride,
                    padding: self.padding,
                    in_hw: self.in_hw,
                },
            )?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                dy,
                &Conv2dWeightGrad {
                    stride: self.stride,
                    padding: self.padding,
                    kernel: (w.dims()[2], w.dims()[3]),
                },
            )?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// Input-gradient op: `(dy, w) ↦ dx`.
struct Conv2dInputGrad {
    stride: usize,
    padding: usize,
    in_hw: (usize, usize),
}

impl CustomOp2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "explr-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (dy, w) = (l1.dims(), l2.dims());
        let x = [dy[0], w[1], self.in_hw.0, self.in_hw.1];
        let g = geometry(&x, w, self.stride, self.padding);
        let dx = run2(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            |dy, w| conv_kernels::backward_input::<f32>(&g, dy, w),
            |dy, w| conv_kernels::backward_input::<f64>(&g, dy, w),
        )?;
        count(1, &g);
        Ok((dx, Shape::from(x.to_vec())))
    }
}

/// Weight-gradient op: `(x, dy) ↦ dw`.
struct Conv2dWeightGrad {
    stride: usize,
    padding: usize,
    kernel: (usize, usize),
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "explr-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, dy) = (l1.dims(), l2.dims());
        let w = [dy[1], x[1], self.kernel.0, self.kernel.1];
        let g = geometry(x, &w, self.stride, self.padding);
        let dw = run2(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            |x, dy| conv_kernels::backward_weight::<f32>(&g, x, dy),
            |x, dy| conv_kernels::backward_weight::<f64>(&g, x, dy),
        )?;
        count(2, &g);
        Ok((dw, Shape::from(w.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::*;

    /// The work one forward + backward adds to [`conv_flops`], for an input and a weight that
    /// do or do not track gradients. The unit tests of this binary that convolve call the
    /// kernels directly, not these ops, so no other test moves the counts meanwhile.
    fn work(x_tracks: bool, w_tracks: bool, stride: usize, padding: usize) -> ConvFlops {
        let dev = Device::Cpu;
        let x = Tensor::ones((3, 2, 7, 6), DType::F64, &dev).unwrap();
        let w = Tensor::ones((5, 2, 3, 2), DType::F64, &dev).unwrap();
        let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
        let x = if x_tracks { xv.as_tensor() } else { &x };
        let w = if w_tracks { wv.as_tensor() } else { &w };
        let before = conv_flops();
        // Multiplied by a var so that there is a backward pass even when neither tracks.
        let y = conv2d(x, w, stride, padding).unwrap();
        let scale = Var::ones((), DType::F64, &dev).unwrap();
        let loss = y
            .broadcast_mul(scale.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap();
        loss.backward().unwrap();
        conv_flops().since(before)
    }

    #[test]
    fn flops_count_each_pass_that_runs() {
        // Output 3·5·oh·ow, patch 2·3·2 = 12: stride 1, padding 1 → 7×7; stride 2, padding 0
        // → 3×3.
        let full = 2 * 3 * 5 * 7 * 7 * 12;
        let strided = 2 * 3 * 5 * 3 * 3 * 12;
        let cases = [
            ((true, true, 1, 1), (full, full, full)),
            ((false, true, 1, 1), (full, 0, full)),
            ((true, false, 2, 0), (strided, strided, 0)),
            ((false, false, 2, 0), (strided, 0, 0)),
        ];
        for ((xt, wt, s, p), (f, i, w)) in cases {
            let got = work(xt, wt, s, p);
            assert_eq!(
                (got.forward, got.input_grad, got.weight_grad),
                (f, i, w),
                "x tracks {xt}, w tracks {wt}, stride {s}, padding {p}"
            );
            assert_eq!(got.backward(), i + w);
        }
    }
}
