//! [`SeedGrad`], the backward pass's seed shared by the crate's bench and its `norm_passes`
//! example (each includes this file as a module).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

/// The seed of the backward pass: a scalar standing for `sum(y·G)` whose backward hands `G`
/// to the layer, as PyTorch's `y.backward(G)` does, so that a backward pass times the layer
/// alone. Its value is never read, so the forward pass does not compute the dot product
/// (PyTorch's twin does not either). candle's own `(y * G).sum_all()` backward broadcasts the
/// scalar gradient through its strided slow path, which would swamp the layer being measured.
pub struct SeedGrad;

impl CustomOp2 for SeedGrad {
    fn name(&self) -> &'static str {
        "seed-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let zero = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(vec![0.0]),
            CpuStorage::F64(_) => CpuStorage::F64(vec![0.0]),
            _ => candle_core::bail!("seed-grad: f32 or f64 only"),
        };
        Ok((zero, Shape::from(())))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // The incoming gradient is the backward pass's seed, 1: hand G over without a copy.
        let s = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let dy = if s == 1.0 {
            g.clone()
        } else {
            g.affine(s, 0.0)?
        };
        Ok((Some(dy), None))
    }
}
