//! Gradients summed over several backward passes (micro-batches) before one optimizer step.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::sgd::Sgd;

/// Sums the gradients of a fixed set of variables over several backward passes, so that one
/// [`Sgd::step`] can follow several micro-batches. For the mean loss of a batch of N split into
/// micro-batches of n_i, scale each micro-batch's mean loss by n_i/N before its backward pass;
/// the sum is then the big batch's gradient (up to the order of the sums).
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use explr_schedule::{GradAccumulator, ParamGroup, Schedule, Sgd, SgdConfig};
///
/// let w = Var::from_tensor(&Tensor::new(&[1.0f64, 2.0], &Device::Cpu)?)?;
/// let mut sgd = Sgd::new(
///     Schedule::constant(0.1)?,
///     vec![ParamGroup::new("w", vec![("w".into(), w.clone())])],
///     SgdConfig::momentum(0.9),
/// )?;
/// let mut sum = GradAccumulator::for_optimizer(&sgd);
/// for x in [[1.0f64, 0.0], [0.0, 1.0]] {
///     let x = Tensor::new(&x, &Device::Cpu)?;
///     let half_loss = ((w.as_tensor() * &x)?.sum_all()? * 0.5)?; // each micro-batch: weight 1/2
///     sum.backward(&half_loss)?;
/// }
/// sgd.step(sum.grads())?;
/// sum.clear();
/// let w = w.as_tensor().to_vec1::<f64>()?; // θ − η·(x₁ + x₂)/2
/// assert!((w[0] - 0.95).abs() < 1e-15 && (w[1] - 1.95).abs() < 1e-15);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct GradAccumulator {
    vars: Vec<Var>,
    sums: GradStore,
    passes: usize,
}

impl GradAccumulator {
    /// An empty sum over `vars`.
    pub fn new(vars: impl IntoIterator<Item = Var>) -> Self {
        Self {
            vars: vars.into_iter().collect(),
            sums: GradStore::default(),
            passes: 0,
        }
    }

    /// An empty sum over every variable of `sgd`'s groups.
    pub fn for_optimizer(sgd: &Sgd) -> Self {
        Self::new(
            sgd.groups()
                .iter()
                .flat_map(|g| g.vars.iter().map(|(_, v)| v.clone())),
        )
    }

    /// Adds the gradients of one backward pass (variables without a gradient there add
    /// nothing; gradients of other tensors are ignored).
    pub fn add(&mut self, grads: &GradStore) -> Result<()> {
        for var in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let grad = grad.detach();
            let sum: Tensor = match self.sums.get(var.as_tensor()) {
                Some(sum) => (sum + grad)?,
                None => grad,
            };
            self.sums.insert(var.as_tensor(), sum);
        }
        self.passes += 1;
        Ok(())
    }

    /// Runs `loss.backward()` and adds its gradients.
    pub fn backward(&mut self, loss: &Tensor) -> Result<()> {
        self.add(&loss.backward()?)
    }

    /// The sums so far, for [`Sgd::step`].
    pub fn grads(&self) -> &GradStore {
        &self.sums
    }

    /// Number of backward passes added since the last [`GradAccumulator::clear`].
    pub fn passes(&self) -> usize {
        self.passes
    }

    /// Empties the sums (after the optimizer step).
    pub fn clear(&mut self) {
        self.sums = GradStore::default();
        self.passes = 0;
    }
}
