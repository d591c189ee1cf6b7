//! `explr-zoo`: the CIFAR models of the paper's experiments, each with any normalization.
//!
//! - [`ModelSpec`] is the plain config (serde, unknown keys rejected): `arch`
//!   ([`Arch::PreResNet`], [`Arch::ResNet`], [`Arch::Vgg`]), `depth`, `norm` (any
//!   [`explr_norm::NormKind`]), `final_norm` (PreResNet's norm before the head), `num_classes`,
//!   `width`, `freeze_norm_affine`, `freeze_head`, `eps`.
//! - [`Model`] is built from a spec on an [`explr_nn::ParamStore`]: [`Model::forward_t`] gives
//!   the logits in training or evaluation mode, in the store's dtype and on its device.
//! - [`Model::convs`], [`Model::norms`] and [`Model::head`] reach each layer's variables
//!   (weight/bias, γ/β, running statistics) without string names; the model's trainable
//!   parameters go to any candle-nn optimizer as `store.trainable_vars()` (the crate's example
//!   `candle_nn_optimizer` trains with candle-nn's AdamW).
//! - Every parameter carries a [`explr_nn::Role`]. The scale-invariant group (THEORY.md §1) is
//!   declared per architecture: [`Model::scale_invariant`], [`Model::scale_scale_invariant`]
//!   (multiply the group by c, for the S1 check) and [`Model::weight_norm`] of one layer.
//!
//! Tensor names equal the PyTorch references' `state_dict()` keys (bearpaw's `preresnet`,
//! akamaster's CIFAR `resnet`, kuangliu's `VGG`), so `ParamStore::save`/`load` exchange weights
//! with them.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use explr_nn::{ParamStore, Role};
//! use explr_zoo::{Model, ModelSpec};
//!
//! // A narrow PreResNet-8 with frozen γ/β and head: the paper's setup, small enough for a doctest.
//! let spec: ModelSpec = serde_yaml::from_str(
//!     "{arch: preresnet, depth: 8, norm: bn, width: 4, freeze_norm_affine: true, freeze_head: true,
//!       eps: 0}",
//! )?;
//! let store = ParamStore::new(&Device::Cpu, DType::F64, 7);
//! let model = Model::new(&spec, &store)?;
//! let x = Tensor::ones((2, 3, 8, 8), DType::F64, &Device::Cpu)?;
//! let x = (x + Tensor::arange(0.0, 384.0, &Device::Cpu)?.reshape((2, 3, 8, 8))?.sin()?)?;
//! let logits = model.forward_t(&x, true)?;
//! assert_eq!(logits.dims(), &[2, 10]);
//! // Left for the optimizer: the scale-invariant convs, and PreResNet's 1×1 projection
//! // shortcuts, which are not scale invariant (see `Model`).
//! let groups = store.trainable_groups();
//! assert_eq!(groups.keys().copied().collect::<Vec<_>>(), [Role::ScaleInvariant, Role::Other]);
//! assert_eq!(groups[&Role::Other][0].0, "layer2.0.downsample.0.weight");
//! // Scaling that group leaves the network function unchanged (exactly so with eps = 0).
//! model.scale_scale_invariant(10.0)?;
//! let scaled = model.forward_t(&x, true)?;
//! let diff = (scaled - &logits)?.abs()?.max_all()?.to_scalar::<f64>()?;
//! assert!(diff < 1e-10, "{diff}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod blocks;
mod model;
mod preresnet;
mod resnet;
mod spec;
mod vgg;

pub use model::Model;
pub use spec::{Arch, ModelSpec};

/// Errors of the model zoo.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Registering or loading parameters failed.
    #[error(transparent)]
    Nn(#[from] explr_nn::NnError),
    /// Building or running a normalization layer failed.
    #[error(transparent)]
    Norm(#[from] explr_norm::NormError),
    /// A depth the architecture does not define.
    #[error("{arch} has no depth {depth}: {hint}")]
    Depth {
        /// The architecture.
        arch: Arch,
        /// The depth asked for.
        depth: usize,
        /// Which depths exist.
        hint: &'static str,
    },
    /// A width the architecture cannot use.
    #[error("{arch} cannot use width {width}: {hint}")]
    Width {
        /// The architecture.
        arch: Arch,
        /// The width asked for.
        width: usize,
        /// Which widths work.
        hint: &'static str,
    },
    /// A `final_norm` the model cannot use.
    #[error("{arch}: {hint}")]
    FinalNorm {
        /// The architecture.
        arch: Arch,
        /// What is wrong and what works.
        hint: &'static str,
    },
    /// Zero output classes.
    #[error("num_classes must be at least 1, got {0}")]
    NumClasses(usize),
    /// An input the model cannot take.
    #[error("{arch} expects {expected}, got a {dtype:?} tensor of shape {shape:?}")]
    Input {
        /// The architecture.
        arch: Arch,
        /// What the model expects.
        expected: String,
        /// The input's shape.
        shape: Vec<usize>,
        /// The input's dtype.
        dtype: candle_core::DType,
    },
    /// A parameter or layer name that is not in the model.
    #[error("`{name}` is neither a parameter nor a layer with a `weight` in this model; parameters look like {example:?}")]
    UnknownParam {
        /// The name asked for.
        name: String,
        /// A parameter name that exists, as a hint.
        example: String,
    },
    /// A scale factor that is not a finite positive number.
    #[error("the scale factor must be finite and > 0 (scale invariance is L(cθ) = L(θ) for c > 0), got {0}")]
    Scale(f64),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ZooError>;
