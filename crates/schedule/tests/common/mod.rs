//! The toy scale-invariant objective of THEORY.md §6, shared by the integration tests.
#![allow(dead_code)]

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub const D: usize = 50;

fn normal(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// L_k(θ) = ½‖M_k·θ/‖θ‖‖², k = step mod 4, with M_k drawn (N(0, 1/d)) from a seeded ChaCha8.
pub struct Toy {
    pub matrices: Vec<Tensor>,
    pub theta0: Vec<f64>,
    pub dtype: DType,
}

impl Toy {
    pub fn new(seed: u64, dtype: DType) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let matrices = (0..4)
            .map(|_| {
                let v: Vec<f64> = normal(D * D, &mut rng)
                    .into_iter()
                    .map(|x| x / (D as f64).sqrt())
                    .collect();
                Tensor::from_vec(v, (D, D), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            })
            .collect();
        Self {
            matrices,
            theta0: normal(D, &mut rng),
            dtype,
        }
    }

    /// A fresh variable `theta` holding θ_0 (times `scale`).
    pub fn var(&self, scale: f64) -> Var {
        let t = Tensor::from_vec(self.theta0.clone(), D, &Device::Cpu)
            .unwrap()
            .affine(scale, 0.0)
            .unwrap();
        Var::from_tensor(&t.to_dtype(self.dtype).unwrap()).unwrap()
    }

    /// The objective as the checker's closure type.
    pub fn loss_and_grads(
        &self,
        step: u64,
        vars: &[(String, Var)],
    ) -> candle_core::Result<(f64, GradStore)> {
        let theta = vars[0].1.as_tensor();
        let m = &self.matrices[(step % 4) as usize];
        let unit = theta.broadcast_div(&theta.sqr()?.sum_all()?.sqrt()?)?;
        let y = m.matmul(&unit.unsqueeze(1)?)?;
        let loss = (y.sqr()?.sum_all()? * 0.5)?;
        let grads = loss.backward()?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads))
    }
}
