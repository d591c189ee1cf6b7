//! [`conv2d`]: the one 2-D convolution every explr model uses (through [`crate::Conv2d`]).
//!
//! On the CPU, for f32 and f64, it runs as a candle custom op on the kernels of `conv_kernels`
//! (the [`crate::ConvKernels`] set in use) whose backward computes the input and weight
//! gradients in one pass, so autograd works unchanged; candle 0.11's own CPU conv computes the
//! input gradient with a naive `conv_transpose2d` loop that is ~10× slower. [`conv2d_add`] is
//! the same op with a residual added to its output, and [`conv2d_normed`] the same op reading
//! a normalization's output as it lays its input out (the normalization applied per plane by
//! the kernels' fills, never written). On any other device or dtype the first two call
//! candle's `Tensor::conv2d`, and the third refuses (its caller normalizes first). [`conv_flops`] counts the floating-point work of the three passes.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Storage, Tensor};

use crate::conv_kernels::{self, Float, Geometry, Gradients};
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
    Ok(x.apply_op2(w, Conv2dForward { stride, padding })?)
}

/// `conv2d(x, w, stride, padding) + residual` in one pass: the residual sum of a residual
/// network's block, added to each sample's output while the convolution's kernels have it in
/// cache instead of in a pass of its own (CPU f32/f64; elsewhere [`conv2d`] then
/// [`crate::add`]). Every element is the convolution's value plus the residual's, rounded once,
/// bit for bit what [`conv2d`] followed by [`crate::add`] gives; the residual's gradient is the
/// output's, as for [`crate::add`].
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// let x = Tensor::ones((2, 3, 8, 8), DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((4, 3, 3, 3), DType::F32, &Device::Cpu)?;
/// let r = Tensor::full(0.5f32, (2, 4, 8, 8), &Device::Cpu)?;
/// let y = explr_nn::conv2d_add(&x, &w, 1, 1, &r)?;
/// let centre: f32 = y.get(0)?.get(0)?.get(4)?.get(4)?.to_scalar()?;
/// assert_eq!(centre, 27.5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`conv2d`], and [`NnError::InvalidConv`] when `residual` does not have the output's
/// shape, dtype and device.
pub fn conv2d_add(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    residual: &Tensor,
) -> Result<Tensor> {
    check(x, w, stride, padding)?;
    check_residual((x, w), (stride, padding), residual)?;
    let fast = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fast {
        return Ok(x.conv2d(w, padding, stride, 1, 1)?.add(residual)?);
    }
    Ok(x.apply_op3(w, residual, Conv2dForward { stride, padding })?)
}

/// A normalization (and its ReLU) as a convolution applies it to its input while its kernels
/// read it ([`conv2d_normed`]): per (sample, channel) plane of the input, `(x − centre)·scale +
/// shift`, then `max(·, 0)` when `relu` (NaN kept, as [`crate::relu`]). Each value is computed in
/// the input's type exactly so, so a normalization that writes its output by this formula gives
/// the convolution the same bits either way.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaneAffine {
    /// The centre of each plane (index `sample·channels + channel`), a value of the input's
    /// type (an f32 input's values widened, exactly).
    pub centre: Vec<f64>,
    /// The scale of each plane, a value of the input's type.
    pub scale: Vec<f64>,
    /// The shift of each plane, a value of the input's type.
    pub shift: Vec<f64>,
    /// Whether `max(·, 0)` follows.
    pub relu: bool,
}

/// The normalization in front of a [`conv2d_normed`]: it takes its statistics from the input
/// when the convolution runs, and maps the gradient at its output back to its input and
/// parameters in the backward pass. explr-norm implements it for its layers.
pub trait InputNorm: Send + Sync {
    /// The statistics of the contiguous input `x` (`[n, c, h, w]` of the convolution's dtype),
    /// as the per-plane map the convolution applies; the implementation keeps what its
    /// [`InputNorm::backward`] needs.
    fn forward(
        &self,
        x: candle_core::CpuStorageRef<'_>,
        dims: [usize; 4],
    ) -> candle_core::Result<PlaneAffine>;

    /// From the input `x` and the gradient `dy` at the normalization's output (after the ReLU),
    /// the gradients of `x`, `γ` and `β` (`[c]` each), in `x`'s dtype.
    fn backward(&self, x: &Tensor, dy: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)>;
}

/// `conv2d(norm(x), w, stride, padding)` (plus `residual` when given, as [`conv2d_add`]) where
/// the normalization `norm` (with its ReLU, [`PlaneAffine`]) is applied while the convolution
/// lays each sample out for its kernels, in the forward pass and again for the weight gradient,
/// so that `norm(x)` is never written to memory: one pass over memory less in the forward step
/// and no activation-sized tensor kept for the backward pass. The result and every gradient
/// (`x`, `w`, `γ`, `β`, the residual) are bit for bit those of the normalization followed by
/// [`conv2d`] (or [`conv2d_add`]), on every kernel set (im2col writes the normalized input
/// first). CPU f32/f64 only: a caller on another device normalizes first.
///
/// # Errors
/// As [`conv2d_add`]; [`NnError::InvalidConv`] also when `x` is not a CPU f32/f64 tensor or `γ`,
/// `β` are not `[c]` tensors of `x`'s dtype.
pub fn conv2d_normed(
    (x, norm): (&Tensor, std::sync::Arc<dyn InputNorm>),
    (gamma, beta): (&Tensor, &Tensor),
    w: &Tensor,
    (stride, padding): (usize, usize),
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    check(x, w, stride, padding)?;
    let invalid = |reason: String| invalid_conv((x, w), (stride, padding), reason);
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)) {
        return Err(invalid(format!(
            "a normalized input is read in place only by the CPU f32/f64 kernels, not on {:?} \
             in {:?}: normalize first, then call conv2d",
            x.device().location(),
            x.dtype()
        )));
    }
    let c = x.dims()[1];
    for (name, t) in [("γ", gamma), ("β", beta)] {
        if t.dims() != [c] || t.dtype() != x.dtype() {
            return Err(invalid(format!(
                "{name} is a {:?} {:?} tensor; it must be [{c}] in the input's dtype",
                t.dtype(),
                t.dims()
            )));
        }
    }
    if let Some(r) = residual {
        check_residual((x, w), (stride, padding), r)?;
    }
    let op = Conv2dNormed {
        conv: Conv2dForward { stride, padding },
        w_dims: w.dims4()?,
        norm,
        map: Default::default(),
        residual: residual.is_some(),
    };
    let x = x.contiguous()?;
    Ok(match residual {
        // Three operands at most: with a residual, the weight and the normalization's
        // parameters travel as one (a copy of the weight, small next to the activations of the
        // residual blocks that use it), and autograd splits its gradient back.
        Some(r) => x.apply_op3(&Tensor::cat(&[&w.flatten_all()?, gamma, beta], 0)?, r, op)?,
        None => x.apply_op3(w, &Tensor::cat(&[gamma, beta], 0)?, op)?,
    })
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
    conv2d(x, w, stride, padding).map_err(candle_error)
}

/// An [`NnError`] as candle's error type: candle's own unwrapped, ours wrapped.
pub(crate) fn candle_error(e: NnError) -> candle_core::Error {
    match e {
        NnError::Candle(e) => e,
        other => candle_core::Error::wrap(other),
    }
}

/// [`NnError::InvalidConv`] for the convolution of `x` with `w`, saying `reason`.
pub(crate) fn invalid_conv(
    (x, w): (&Tensor, &Tensor),
    (stride, padding): (usize, usize),
    reason: String,
) -> NnError {
    NnError::InvalidConv {
        x: x.dims().to_vec(),
        w: w.dims().to_vec(),
        stride,
        padding,
        reason,
    }
}

/// Validates shapes and arguments, so that the kernels never see inconsistent input.
fn check(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<()> {
    let invalid = |reason: String| invalid_conv((x, w), (stride, padding), reason);
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

/// Validates a residual added to the output of the (checked) convolution of `x` with `w`: the
/// output's shape, dtype and device.
fn check_residual(
    (x, w): (&Tensor, &Tensor),
    (stride, padding): (usize, usize),
    residual: &Tensor,
) -> Result<()> {
    let g = geometry(x.dims(), w.dims(), stride, padding);
    let out = [g.n, g.k, g.oh, g.ow];
    if residual.dims() != out
        || residual.dtype() != x.dtype()
        || !residual.device().same_device(x.device())
    {
        return Err(invalid_conv(
            (x, w),
            (stride, padding),
            format!(
                "the residual is a {:?} {:?} tensor on {:?}, but the output is a {:?} {:?} \
                 tensor on {:?}: the residual must match the output",
                residual.dtype(),
                residual.dims(),
                residual.device().location(),
                x.dtype(),
                out,
                x.device().location()
            ),
        ));
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

/// A convolution's forward pass on CPU storages, stride and padding of `op`, the weight of
/// `w_dims` the first `k·c·kh·kw` values of the second operand, with the residual of
/// [`conv2d_add`] when given, and the input mapped by the normalization `norm`
/// ([`conv2d_normed`]) when given; returns the output and that normalization's map.
fn forward_storage(
    (op, name): (&Conv2dForward, &'static str),
    (s1, l1): (&CpuStorage, &Layout),
    ((s2, l2), w_dims): ((&CpuStorage, &Layout), &[usize]),
    residual: Option<(&CpuStorage, &Layout)>,
    norm: Option<&dyn InputNorm>,
) -> candle_core::Result<(CpuStorage, Shape, Option<PlaneAffine>)> {
    fn typed<T: Float>(
        g: &Geometry,
        ((s1, l1), (s2, l2)): ((&CpuStorage, &Layout), (&CpuStorage, &Layout)),
        residual: Option<(&CpuStorage, &Layout)>,
        norm: Option<&dyn InputNorm>,
    ) -> candle_core::Result<(Vec<T>, Option<PlaneAffine>)> {
        let r = match residual {
            Some((s3, l3)) => Some(contiguous(s3.as_slice::<T>()?, l3)),
            None => None,
        };
        let (x, w) = (s1.as_slice::<T>()?, s2.as_slice::<T>()?);
        let (x, w) = (contiguous(x, l1), contiguous(w, l2));
        let dims = [g.n, g.c, g.h, g.w];
        let map = norm
            .map(|norm| norm.forward(T::cpu_storage_ref(&x), dims))
            .transpose()?;
        let affine = map.as_ref().map(conv_kernels::InputAffine::of);
        let y = conv_kernels::forward(g, (&x, affine.as_ref()), &w[..g.w_len()], r.as_deref());
        Ok((y, map))
    }
    let g = geometry(l1.dims(), w_dims, op.stride, op.padding);
    let operands = ((s1, l1), (s2, l2));
    let (y, map) = match s1.dtype() {
        DType::F32 => {
            let (y, map) = typed(&g, operands, residual, norm)?;
            (CpuStorage::F32(y), map)
        }
        DType::F64 => {
            let (y, map) = typed(&g, operands, residual, norm)?;
            (CpuStorage::F64(y), map)
        }
        other => return Err(candle_core::Error::UnsupportedDTypeForOp(other, name)),
    };
    count(0, &g);
    Ok((y, (g.n, g.k, g.oh, g.ow).into(), map))
}

/// Forward op: `(x, w) ↦ y` ([`conv2d`]) and `(x, w, r) ↦ y + r` ([`conv2d_add`]); its
/// backward computes both gradients in one pass ([`Conv2dForward::gradients`]; `dy` itself for
/// `r`).
struct Conv2dForward {
    stride: usize,
    padding: usize,
}

impl Conv2dForward {
    /// The input and weight gradients of `dy`, each only where that operand tracks a gradient
    /// (the input of a network's first convolution, the data, and a frozen weight do not), in
    /// one backward pass of the kernels ([`conv_kernels::backward`]).
    fn gradients(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        self.kernel_gradients((x, None), w, dy, (x.track_op(), w.track_op()))
    }

    /// The gradients of [`Conv2dForward::gradients`] where `wanted`, of the input `x` mapped by
    /// `map` where given ([`conv2d_normed`]: the input gradient is then the one at the map's
    /// output, and the weight gradient's samples are laid out through the map).
    fn kernel_gradients(
        &self,
        (x, map): (&Tensor, Option<&PlaneAffine>),
        w: &Tensor,
        dy: &Tensor,
        (want_dx, want_dw): (bool, bool),
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !want_dx && !want_dw {
            return Ok((None, None));
        }
        let g = geometry(x.dims(), w.dims(), self.stride, self.padding);
        // The kernels on x, w and dy's values as `T`, each gathered where not contiguous.
        fn typed<T: Float>(
            g: &Geometry,
            ((x, map), w, dy): ((&Tensor, Option<&PlaneAffine>), &Tensor, &Tensor),
            (want_dx, want_dw): (bool, bool),
        ) -> candle_core::Result<Gradients<T>> {
            let ((xs, xl), (ws, wl), (ds, dl)) = (
                x.storage_and_layout(),
                w.storage_and_layout(),
                dy.storage_and_layout(),
            );
            let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(ds)) = (&*xs, &*ws, &*ds) else {
                candle_core::bail!("explr-conv2d backward: x, w and dy must be CPU tensors")
            };
            let (x, w) = (
                contiguous(xs.as_slice::<T>()?, xl),
                contiguous(ws.as_slice::<T>()?, wl),
            );
            let map = map.map(conv_kernels::InputAffine::of);
            let wanted = (want_dx.then_some(&*w), want_dw.then_some(&*x));
            Ok(conv_kernels::backward(
                g,
                &contiguous(ds.as_slice::<T>()?, dl),
                wanted,
                map.as_ref(),
            ))
        }
        let args = ((x, map), w, dy);
        let wanted = (want_dx, want_dw);
        let (dx, dw) = match x.dtype() {
            DType::F32 => {
                let (dx, dw) = typed::<f32>(&g, args, wanted)?;
                (dx.map(CpuStorage::F32), dw.map(CpuStorage::F32))
            }
            DType::F64 => {
                let (dx, dw) = typed::<f64>(&g, args, wanted)?;
                (dx.map(CpuStorage::F64), dw.map(CpuStorage::F64))
            }
            other => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other,
                    "explr-conv2d",
                ))
            }
        };
        let tensor = |s: CpuStorage, dims: &[usize], pass: usize| {
            count(pass, &g);
            Tensor::from_storage(Storage::Cpu(s), dims.to_vec(), BackpropOp::none(), false)
        };
        Ok((
            dx.map(|s| tensor(s, x.dims(), 1)),
            dw.map(|s| tensor(s, w.dims(), 2)),
        ))
    }
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
        let name = CustomOp2::name(self);
        let w = ((s2, l2), l2.dims());
        let (y, shape, _) = forward_storage((self, name), (s1, l1), w, None, None)?;
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        self.gradients(x, w, dy)
    }
}

impl CustomOp3 for Conv2dForward {
    fn name(&self) -> &'static str {
        "explr-conv2d-add"
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
        let name = CustomOp3::name(self);
        let w = ((s2, l2), l2.dims());
        let (y, shape, _) = forward_storage((self, name), (s1, l1), w, Some((s3, l3)), None)?;
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _r: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.gradients(x, w, dy)?;
        Ok((dx, dw, Some(dy.clone())))
    }
}

/// The op of [`conv2d_normed`]: `(x, w, [γ, β]) ↦ conv(norm(x), w)`, or with `residual`
/// `(x, [w, γ, β], r) ↦ conv(norm(x), w) + r`.
struct Conv2dNormed {
    conv: Conv2dForward,
    w_dims: (usize, usize, usize, usize),
    norm: std::sync::Arc<dyn InputNorm>,
    /// The map of the forward pass, which the weight gradient applies again.
    map: std::sync::OnceLock<PlaneAffine>,
    /// Whether the operands are `(x, [w, γ, β], r)` rather than `(x, w, [γ, β])`.
    residual: bool,
}

impl Conv2dNormed {
    fn w_len(&self) -> usize {
        let (k, c, kh, kw) = self.w_dims;
        k * c * kh * kw
    }

    /// The gradients `(x, w, γ, β)` from `dy`, `params` the weight's operand (the weight, or
    /// `[w, γ, β]` with a residual; the weight's gradient only where that operand tracks one):
    /// the convolution's input gradient (at the normalization's output) and weight gradient in
    /// one pass, the weight gradient's samples laid out through the forward's map, then the
    /// normalization's backward.
    fn gradients(
        &self,
        x: &Tensor,
        params: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Tensor, Tensor)> {
        let Some(map) = self.map.get() else {
            candle_core::bail!("explr-conv2d-normed backward: the forward's map is missing")
        };
        let w = params
            .flatten_all()?
            .narrow(0, 0, self.w_len())?
            .reshape(self.w_dims)?;
        let (dn, dw) =
            self.conv
                .kernel_gradients((x, Some(map)), &w, dy, (true, params.track_op()))?;
        let Some(dn) = dn else {
            candle_core::bail!("explr-conv2d-normed backward: no input gradient")
        };
        let (dx, dgamma, dbeta) = self.norm.backward(x, &dn)?;
        Ok((x.track_op().then_some(dx), dw, dgamma, dbeta))
    }
}

impl CustomOp3 for Conv2dNormed {
    fn name(&self) -> &'static str {
        if self.residual {
            "explr-conv2d-normed-add"
        } else {
            "explr-conv2d-normed"
        }
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
        let residual = self.residual.then_some((s3, l3));
        let (k, c, kh, kw) = self.w_dims;
        let w = ((s2, l2), &[k, c, kh, kw][..]);
        let op = (&self.conv, self.name());
        let (y, shape, map) = forward_storage(op, (s1, l1), w, residual, Some(&*self.norm))?;
        if let Some(map) = map {
            let _ = self.map.set(map);
        }
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        third: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, dgamma, dbeta) = self.gradients(x, w, dy)?;
        if self.residual {
            // (x, [w, γ, β], r).
            let dparams = match dw {
                Some(dw) => Some(Tensor::cat(&[&dw.flatten_all()?, &dgamma, &dbeta], 0)?),
                None => None,
            };
            Ok((dx, dparams, Some(dy.clone())))
        } else {
            // (x, w, [γ, β]).
            let dgb = third
                .track_op()
                .then(|| Tensor::cat(&[&dgamma, &dbeta], 0))
                .transpose()?;
            Ok((dx, dw, dgb))
        }
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
