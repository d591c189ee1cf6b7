//! Helpers shared by the convolution tests: the shapes of one case, seeded test tensors, and
//! their values.

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One convolution: input `[n, c, h, w]`, weight `[k, c, kh, kw]`, stride, padding.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Case {
    /// The output's dims, `[n, k, oh, ow]`.
    pub fn out_dims(&self) -> [usize; 4] {
        let oh = (self.h + 2 * self.padding - self.kh) / self.stride + 1;
        let ow = (self.w + 2 * self.padding - self.kw) / self.stride + 1;
        [self.n, self.k, oh, ow]
    }
}

/// The case of input `(n, c, h, w)`, weight `(k, kh, kw)`, `stride` and `padding`.
pub fn case(
    (n, c, h, w): (usize, usize, usize, usize),
    (k, kh, kw): (usize, usize, usize),
    stride: usize,
    padding: usize,
) -> Case {
    Case {
        n,
        c,
        h,
        w,
        k,
        kh,
        kw,
        stride,
        padding,
    }
}

/// A tensor of `dims` drawn uniformly from [−1, 1) by `rng`, in `dtype`.
pub fn uniform(rng: &mut ChaCha8Rng, dims: &[usize], dtype: DType) -> Tensor {
    let len = dims.iter().product();
    let v: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("building a test tensor")
}

/// A tensor's values in f64 (exact for f32 and f64), in order.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}
