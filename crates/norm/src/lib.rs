//! `explr-norm`: the normalization layers whose scale invariance the paper rests on
//! (THEORY.md §1), matching PyTorch's `torch.nn` to the last digit.
//!
//! - [`BatchNorm2d`]: batch statistics in training (biased variance), running statistics in
//!   evaluation, updated exactly as PyTorch does (momentum 0.1 by default, unbiased variance in
//!   the running estimate, `momentum: None` for the cumulative average). The running statistics
//!   are *buffers* of the [`explr_nn::ParamStore`]: saved and loaded with the model, never
//!   handed to an optimizer.
//! - [`GroupNorm`], [`LayerNorm2d`] (over C, H, W; PyTorch's `nn.GroupNorm(1, C)`) and
//!   [`InstanceNorm2d`] (optionally tracking running statistics).
//! - [`NormKind`] parses manifest strings (`bn`, `gn:16`, `ln`, `in`, `none`) and builds a
//!   [`Norm`] for any channel count, so a model can take its normalization as a parameter.
//!
//! Each layer names its tensors through typed accessors (`weight()`, `bias()`,
//! `running_mean()`, `running_var()`, `num_batches_tracked()`, the same on [`Norm`]) and is a
//! `candle_nn::ModuleT`, so it drops into a candle-nn model (`xs.apply_t(&bn, train)`) whose
//! candle-nn layers live in the same store (`explr_nn::Path::var_builder`; the crate's example
//! `candle_nn_batchnorm` trains one).
//!
//! Every layer has an [`Affine`] mode: trainable γ/β, frozen at γ = 1, β = 0 (the paper's
//! setup), or none; eps is configurable and may be 0 for exactness runs. Bad input (wrong rank,
//! channel count or dtype, groups not dividing channels, bad eps or momentum) is a typed
//! [`NormError`], never a panic.
//!
//! **Kernels.** Training-mode statistics run through a [`Kernel`]: on the CPU with f32/f64,
//! [`Kernel::Auto`] uses fused kernels (a candle `CustomOp3` whose backward is itself one fused
//! op) that make 3 passes over memory forward and 2 backward instead of one per composite op
//! (a dozen or more); on any other device or dtype it uses candle's composite ops, so CUDA keeps working.
//! [`Kernel::Composite`] forces the portable path; the tests check that both agree (f64 within
//! 1e-12) and match PyTorch (fixtures from `scripts/pytorch/norm_fixtures.py`). The crate's
//! README has the benchmark table against PyTorch (`cargo bench -p explr-norm --bench norm`,
//! twin `scripts/pytorch/norm_bench.py`). [`Norm::forward_relu_t`] is a normalization followed
//! by `explr_nn::relu` (the pre-activation of the zoo's blocks), bit for bit, with the ReLU
//! inside the fused kernel's passes, forward and backward. [`Norm::forward_relu_conv_t`] goes
//! one step further for a convolution that reads that output: in training on the fused kernels
//! the convolution applies the normalization and its ReLU as it lays its input out
//! (`explr_nn::conv2d_normed`), so the normalized tensor is never written (a read and a write
//! of an activation less in the forward pass, and one activation-sized tensor less kept for the
//! backward pass), bit for bit the two in sequence. Evaluation with running statistics
//! (BatchNorm, InstanceNorm tracking them) follows the [`Kernel`] too: fused, it is one
//! parallel pass (with the ReLU), bit for bit the composite ops.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::ModuleT;
//! use explr_nn::ParamStore;
//! use explr_norm::{NormConfig, NormKind};
//!
//! let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
//! let kind: NormKind = "bn".parse()?;
//! let bn = kind.build(&store.root().push("bn1"), 4, &NormConfig::default())?;
//! let x = Tensor::arange(0.0f64, 64.0, &Device::Cpu)?.reshape((2, 4, 2, 4))?;
//! let y = bn.forward_t(&x, true)?; // training: batch statistics, running stats updated
//! assert_eq!(y.dims(), x.dims());
//! // running statistics are buffers, not parameters:
//! assert_eq!(store.buffers().len(), 3);
//! assert!(store.trainable_groups().values().flatten().all(|(n, _)| !n.contains("running")));
//! let running_mean = bn.running_mean().expect("BatchNorm keeps running statistics");
//! assert_eq!(running_mean.dims(), [4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod fused;
mod kind;
mod layers;
mod running;

pub use kind::{Norm, NormKind};
pub use layers::{Affine, BatchNorm2d, GroupNorm, InstanceNorm2d, Kernel, LayerNorm2d, NormConfig};

/// Errors of the normalization layers.
#[derive(Debug, thiserror::Error)]
pub enum NormError {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Registering parameters failed.
    #[error(transparent)]
    Nn(#[from] explr_nn::NnError),
    /// The input is not a 4-D (N, C, H, W) tensor.
    #[error("{layer} expects a 4-D input (N, C, H, W), got shape {shape:?}")]
    Rank {
        /// Layer kind.
        layer: &'static str,
        /// The offending shape.
        shape: Vec<usize>,
    },
    /// The input's channel count differs from the layer's.
    #[error("{layer} was built for {expected} channels, got input of shape {shape:?}")]
    Channels {
        /// Layer kind.
        layer: &'static str,
        /// Channels the layer was built for.
        expected: usize,
        /// The offending shape.
        shape: Vec<usize>,
    },
    /// A group count that does not divide the channel count (or is zero).
    #[error("GroupNorm with {groups} groups cannot split {channels} channels: the group count must be positive and divide the channel count")]
    Groups {
        /// Requested groups.
        groups: usize,
        /// Channels of the layer.
        channels: usize,
    },
    /// A training-mode statistic over a single value (PyTorch raises the same error).
    #[error("{layer} in training mode needs more than one value per channel to compute statistics, got input of shape {shape:?}")]
    TooFewValues {
        /// Layer kind.
        layer: &'static str,
        /// The offending shape.
        shape: Vec<usize>,
    },
    /// The input's dtype differs from the layer's (the parameter store's).
    #[error("{layer} was built for {expected:?} tensors, got a {got:?} input: convert it with `to_dtype` or build the store with {got:?}")]
    DType {
        /// Layer kind.
        layer: &'static str,
        /// The layer's dtype.
        expected: candle_core::DType,
        /// The input's dtype.
        got: candle_core::DType,
    },
    /// [`Kernel::Fused`] was requested for a tensor it cannot handle.
    #[error("{layer}: the fused kernel runs only on f32/f64 CPU tensors, got {dtype:?} on {device}; use Kernel::Auto or Kernel::Composite")]
    KernelUnavailable {
        /// Layer kind.
        layer: &'static str,
        /// The input's device.
        device: String,
        /// The input's dtype.
        dtype: candle_core::DType,
    },
    /// An impossible configuration value.
    #[error("invalid normalization config: {0}")]
    Config(String),
    /// A norm string that is not one of `bn`, `gn:<groups>`, `ln`, `in`, `none`.
    #[error("unknown normalization `{input}`: {reason}; valid kinds are `bn`, `gn:<groups>` (e.g. `gn:16`), `ln`, `in`, `none`")]
    ParseKind {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, NormError>;
