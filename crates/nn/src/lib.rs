//! `explr-nn`: the parameter store every explr model is built on.
//!
//! candle-nn's `VarMap` is a `HashMap` and keeps BatchNorm running statistics beside the
//! weights, so an optimizer handed "all variables" decays them too. This crate fixes both:
//!
//! - [`ParamStore`] holds *parameters* (trainable or frozen, each tagged with a [`Role`]) and
//!   *buffers* (state such as running statistics that no optimizer ever sees) in sorted maps,
//!   so every iteration over them is deterministic. It saves and loads both as safetensors
//!   under PyTorch's state-dict names, atomically.
//! - [`Path`] is the builder handed to layers (`store.root().push("layer1").push(0)`), like
//!   candle-nn's `VarBuilder`; [`Init`] draws every initial value from the store's seeded RNG,
//!   so the same seed gives the same weights on any machine.
//! - [`Conv2d`] and [`Linear`] are the two weight layers the zoo shares. [`Conv2d`] runs on
//!   [`conv2d`], the one convolution entry point: on the CPU (f32/f64) a candle custom op on
//!   explr's kernels (direct AVX-512 or AVX2 kernels, im2col + `gemm` elsewhere:
//!   [`ConvKernels`], which a benchmark can force) whose backward computes both gradients in
//!   one pass over the batch, elsewhere candle's own `conv2d`. [`conv2d_add`]
//!   ([`Conv2d::forward_add`]) adds a residual block's shortcut to each sample's output while
//!   it is in cache, and [`conv2d_normed`] ([`Conv2d::forward_normed`]) applies a
//!   normalization and its ReLU ([`InputNorm`], [`PlaneAffine`]) as it lays its input out, so
//!   that the normalized tensor is never written. [`conv_flops`] counts the work those kernels
//!   did.
//! - [`relu`] is the models' ReLU, with a one-pass backward on the CPU (PyTorch's gradient
//!   rule at 0); [`add`] a sum of two activations, on every core.
//! - [`tune_cpu_process`] is the process setup every CPU training binary starts with.
//!
//! **candle-nn.** A store speaks candle-nn's two interfaces: [`Path::var_builder`] is a
//! `candle_nn::VarBuilder` that registers candle-nn layers in the store (with a role, drawn from
//! the seeded RNG, running statistics as buffers), and [`ParamStore::trainable_vars`] /
//! [`ParamStore::to_var_map`] are what a candle-nn optimizer takes: the trainable parameters,
//! never a buffer.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Module, Optimizer};
//! use explr_nn::{Conv2d, Conv2dConfig, ParamStore, Role};
//!
//! let store = ParamStore::new(&Device::Cpu, DType::F64, 42);
//! let conv = Conv2d::new(&store.root().push("conv1"), 3, 8, 3, Conv2dConfig::same(1), false,
//!                        Role::ScaleInvariant)?;
//! let x = Tensor::zeros((2, 3, 8, 8), DType::F64, &Device::Cpu)?;
//! assert_eq!(conv.forward(&x)?.dims(), &[2, 8, 8, 8]);
//! let groups = store.trainable_groups();
//! assert_eq!(groups[&Role::ScaleInvariant][0].0, "conv1.weight");
//!
//! // A candle-nn layer in the same store, trained by a candle-nn optimizer.
//! let fc = candle_nn::linear(8, 10, store.root().push("fc").var_builder(Role::Head))?;
//! let logits = fc.forward(&conv.forward(&x)?.mean((2, 3))?)?;
//! let mut sgd = candle_nn::SGD::new(store.trainable_vars(), 0.1)?;
//! sgd.backward_step(&logits.sum_all()?)?;
//! assert_eq!(store.trainable_groups()[&Role::Head].len(), 2); // fc.bias, fc.weight
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod activation;
mod conv;
mod conv_kernels;
mod interop;
mod layers;
mod process;
mod store;

pub use activation::{add, relu};
pub use conv::{conv2d, conv2d_add, conv2d_normed, conv_flops, ConvFlops, InputNorm, PlaneAffine};
pub use conv_kernels::ConvKernels;
pub use interop::BUFFER_NAMES;
pub use layers::{Conv2d, Conv2dConfig, Linear};
pub use process::tune_cpu_process;
pub use store::{Init, Param, ParamStore, Path, Role};

/// Errors of the parameter store and the shared layers.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Two parameters or buffers were registered under one name.
    #[error("`{name}` is registered twice: every parameter and buffer needs a unique name")]
    DuplicateName {
        /// The name used twice.
        name: String,
    },
    /// A loaded tensor's shape differs from the model's.
    #[error("`{name}` has shape {found:?} in the file but {expected:?} in the model")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape in the model.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor the model needs is absent from the loaded file.
    #[error("`{name}` is missing from {source_desc}: the file was saved from another model or is incomplete")]
    MissingTensor {
        /// Tensor name.
        name: String,
        /// What was being loaded.
        source_desc: String,
    },
    /// A tensor in the file matches nothing in the model.
    #[error("`{name}` in {source_desc} matches no parameter or buffer of this model")]
    UnexpectedTensor {
        /// Tensor name.
        name: String,
        /// What was being loaded.
        source_desc: String,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] explr_io::IoError),
    /// A file that should hold safetensors does not (truncated, or another format).
    #[error("{}: not a safetensors file ({message}); it is truncated or was written by something else: write it again", path.display())]
    NotSafetensors {
        /// The file.
        path: std::path::PathBuf,
        /// What the reader found wrong.
        message: String,
    },
    /// A layer was configured with an impossible value.
    #[error("invalid layer configuration: {0}")]
    InvalidConfig(String),
    /// [`conv2d`] was called with inconsistent input and weight.
    #[error(
        "conv2d of input {x:?} with weight {w:?} (stride {stride}, padding {padding}): {reason}"
    )]
    InvalidConv {
        /// Input dims, `[n, c, h, w]` expected.
        x: Vec<usize>,
        /// Weight dims, `[k, c, kh, kw]` expected.
        w: Vec<usize>,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// [`ConvKernels::force`] was asked for a kernel set this CPU cannot run.
    #[error(
        "the {requested} convolution kernels need {}, which this CPU is not: force one of {} \
         (or None for the widest)",
        requested.requirement(),
        supported.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    )]
    UnsupportedConvKernels {
        /// The set asked for.
        requested: ConvKernels,
        /// The sets this CPU runs, widest first.
        supported: Vec<ConvKernels>,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, NnError>;
