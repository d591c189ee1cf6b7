//! [`relu`]: the ReLU every explr model uses, with a one-pass backward on the CPU; [`add`]: the
//! residual sum of the zoo's blocks, on every core.
//!
//! candle 0.11 differentiates `Tensor::relu` as `dy · (x ≥ 0)`: a zero tensor, a comparison,
//! a cast and a product, four passes and three temporaries per activation, about a tenth of a
//! PreResNet training step on the CPU. Here the backward is one pass over `dy` and the saved
//! output `y`, `dx = dy` where `y > 0` and 0 elsewhere — PyTorch's `threshold_backward`, which
//! also differs from candle's rule at `x = 0` (candle passes the gradient there, PyTorch does
//! not).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `max(x, 0)` elementwise (NaN stays NaN), differentiable; CPU f32/f64 tensors run on
/// explr's kernels (one pass forward, one pass backward), every other device or dtype on
/// candle's `relu`.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// let x = Var::new(&[-1.0f64, 0.0, 2.0], &Device::Cpu)?;
/// let y = explr_nn::relu(x.as_tensor())?;
/// assert_eq!(y.to_vec1::<f64>()?, [0.0, 0.0, 2.0]);
/// let grads = y.sum_all()?.backward()?;
/// // The gradient passes where the output is positive only (as in PyTorch).
/// assert_eq!(grads.get(&x).unwrap().to_vec1::<f64>()?, [0.0, 0.0, 1.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// When the underlying candle operation fails.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Relu)
}

/// `a + b` for two tensors of one shape, differentiable (the gradient passes to both unchanged).
/// CPU f32/f64 tensors are summed on Rayon's pool; candle's `Tensor::add` would run on the
/// calling thread alone under [`crate::tune_cpu_process`], which limits candle's own pool to it.
/// Every other device or dtype uses `Tensor::add`. The sum is the same either way, element by
/// element.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// let a = Var::new(&[1.0f64, 2.0], &Device::Cpu)?;
/// let b = Tensor::new(&[0.5f64, -4.0], &Device::Cpu)?;
/// let y = explr_nn::add(a.as_tensor(), &b)?;
/// assert_eq!(y.to_vec1::<f64>()?, [1.5, -2.0]);
/// let grads = (y * 3.0)?.sum_all()?.backward()?;
/// assert_eq!(grads.get(&a).unwrap().to_vec1::<f64>()?, [3.0, 3.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// When the shapes differ, or the underlying candle operation fails.
pub fn add(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let cpu_float =
        |t: &Tensor| t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64);
    if !(cpu_float(a) && cpu_float(b)) || a.dtype() != b.dtype() || a.shape() != b.shape() {
        return a.add(b);
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, Add)
}

/// `f(a, b)` element by element over two contiguous storages of one dtype, f32 or f64 (each
/// with its own closure), in the shape of the first.
fn zip_storages(
    op: &'static str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f32: impl Fn(f32, f32) -> f32 + Sync,
    f64: impl Fn(f64, f64) -> f64 + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let out = match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(zip_map(slice(a, l1, op)?, slice(b, l2, op)?, f32))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            CpuStorage::F64(zip_map(slice(a, l1, op)?, slice(b, l2, op)?, f64))
        }
        _ => return Err(candle_core::Error::UnsupportedDTypeForOp(s1.dtype(), op)),
    };
    Ok((out, l1.shape().clone()))
}

/// Forward op of [`add`]; its backward hands `dy` to both inputs.
struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "explr-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        zip_storages(self.name(), (s1, l1), (s2, l2), |x, y| x + y, |x, y| x + y)
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(dy.clone()), Some(dy.clone())))
    }
}

/// Elements per parallel chunk (Rayon's overhead is not worth it below this).
const CHUNK: usize = 1 << 15;

/// `out[i] = f(a[i], b[i])` for the contiguous `a` and `b` (of one length), parallel in chunks
/// of [`CHUNK`], written straight into the new vector (no zero-fill first) by a plain loop per
/// chunk, which the compiler vectorizes (Rayon's element-wise `collect` does not).
fn zip_map<T: Copy + Send + Sync>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    assert_eq!(a.len(), b.len(), "zip_map over slices of different lengths");
    let mut out = Vec::with_capacity(a.len());
    out.spare_capacity_mut()
        .par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                o.write(f(*a, *b));
            }
        });
    // SAFETY: the chunks partition the first `a.len()` slots and each was written above.
    unsafe { out.set_len(a.len()) };
    out
}

/// The contiguous slice of a storage's layout; the callers only pass contiguous tensors.
fn slice<'a, T>(s: &'a [T], l: &Layout, op: &'static str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => Err(candle_core::Error::RequiresContiguous { op }),
    }
}

/// Forward op: `x ↦ max(x, 0)`; its backward is [`ReluGrad`].
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "explr-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        // `x < 0 ? 0 : x` keeps NaN (a NaN never compares below 0).
        zip_storages(
            self.name(),
            (s, l),
            (s, l),
            |v, _| if v < 0.0 { 0.0 } else { v },
            |v, _| if v < 0.0 { 0.0 } else { v },
        )
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(y, &ReluGrad)?))
    }
}

/// Backward op: `(dy, y) ↦ dy · [y > 0]`.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "explr-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        zip_storages(
            self.name(),
            (s1, l1),
            (s2, l2),
            |d, v| if v > 0.0 { d } else { 0.0 },
            |d, v| if v > 0.0 { d } else { 0.0 },
        )
    }
}
