//! The four normalization layers. Formulas follow PyTorch's `torch.nn` (THEORY.md §1 for why
//! they make the preceding weights scale invariant).

use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use explr_nn::{Conv2d, Init, Path, Role};
use serde::{Deserialize, Serialize};

use crate::fused::{f64s, Geometry, Grouping, NormFwd, NormInput};
use crate::{NormError, Result};

/// What a layer does with its per-channel scale γ and shift β.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Affine {
    /// γ and β are trainable parameters (PyTorch's `affine=True`).
    #[default]
    Trainable,
    /// γ and β are registered (saved, loaded, same names as PyTorch) at γ = 1, β = 0 but
    /// frozen: no optimizer sees them. This is the paper's setup.
    Frozen,
    /// No γ or β at all (PyTorch's `affine=False`).
    None,
}

/// Settings shared by every normalization kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormConfig {
    /// Added to the variance before the square root; 0 is allowed (exactness runs).
    pub eps: f64,
    /// Running-statistics momentum (`None`: cumulative average, BatchNorm only).
    pub momentum: Option<f64>,
    /// γ/β handling.
    pub affine: Affine,
    /// Whether BatchNorm/InstanceNorm keep running statistics; `None` takes PyTorch's default
    /// for the kind (BatchNorm: yes, InstanceNorm: no).
    pub track_running_stats: Option<bool>,
}

impl Default for NormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: Some(0.1),
            affine: Affine::Trainable,
            track_running_stats: None,
        }
    }
}

impl NormConfig {
    /// The same config with γ = 1, β = 0 frozen (the paper's setup).
    pub fn frozen(mut self) -> Self {
        self.affine = Affine::Frozen;
        self
    }

    /// The same config with another eps.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(NormError::Config(format!(
                "eps must be a finite number >= 0, got {}",
                self.eps
            )));
        }
        if let Some(m) = self.momentum {
            if !(0.0..=1.0).contains(&m) {
                return Err(NormError::Config(format!(
                    "momentum must lie in [0, 1] (or be null for a cumulative average), got {m}"
                )));
            }
        }
        Ok(())
    }
}

/// γ and β of one layer, per channel.
#[derive(Clone, Debug)]
struct AffineParams {
    /// The layer's path (`layer1.0.bn1`), which every layer has, with or without γ/β.
    name: String,
    weight: Option<Var>,
    bias: Option<Var>,
    /// The layer's dtype (the store's), which inputs must match.
    dtype: DType,
}

impl AffineParams {
    fn new(path: &Path, channels: usize, affine: Affine) -> Result<Self> {
        if affine == Affine::None {
            return Ok(Self {
                name: path.prefix().to_string(),
                weight: None,
                bias: None,
                dtype: path.dtype(),
            });
        }
        let weight = path.param("weight", channels, Init::Ones, Role::NormAffine)?;
        let bias = path.param("bias", channels, Init::Zeros, Role::NormAffine)?;
        if affine == Affine::Frozen {
            path.set_trainable("weight", false);
            path.set_trainable("bias", false);
        }
        Ok(Self {
            name: path.prefix().to_string(),
            weight: Some(weight),
            bias: Some(bias),
            dtype: path.dtype(),
        })
    }

    /// γ and β as the fused kernels take them, `c` values each: the layer's own, or 1 and 0
    /// where it has none (in `x`'s dtype and on its device).
    fn or_identity(&self, c: usize, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let own = |v: &Option<Var>, fill: f64| match v {
            Some(v) => Ok(v.as_tensor().clone()),
            None => Tensor::full(fill, c, x.device())?.to_dtype(x.dtype()),
        };
        Ok((own(&self.weight, 1.0)?, own(&self.bias, 0.0)?))
    }

    /// `y·γ + β` with γ, β broadcast over (N, ·, H, W).
    fn apply(&self, y: Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Some(w) => y.broadcast_mul(&w.as_tensor().reshape((1, (), 1, 1))?)?,
            None => y,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.as_tensor().reshape((1, (), 1, 1))?)?,
            None => y,
        })
    }
}

/// Running mean/var (and PyTorch's `num_batches_tracked`) as store buffers.
#[derive(Clone, Debug)]
struct RunningStats {
    mean: Var,
    var: Var,
    num_batches_tracked: Var,
    momentum: Option<f64>,
}

impl RunningStats {
    fn new(path: &Path, channels: usize, momentum: Option<f64>) -> Result<Self> {
        let dev = path.device();
        let dt = path.dtype();
        Ok(Self {
            mean: path.buffer("running_mean", Tensor::zeros(channels, dt, dev)?)?,
            var: path.buffer("running_var", Tensor::ones(channels, dt, dev)?)?,
            num_batches_tracked: path
                .buffer("num_batches_tracked", Tensor::zeros((), DType::I64, dev)?)?,
            momentum,
        })
    }

    /// PyTorch's update: `r ← (1 − m)·r + m·s`, with s the batch mean and the *unbiased*
    /// batch variance; `m = 1/num_batches_tracked` when momentum is None.
    fn update(&self, mean: &Tensor, unbiased_var: &Tensor, count_batches: bool) -> Result<()> {
        if count_batches {
            let n = self.num_batches_tracked.as_tensor();
            self.num_batches_tracked.set(&(n + n.ones_like()?)?)?;
        }
        let m = match self.momentum {
            Some(m) => m,
            None => {
                1.0 / self
                    .num_batches_tracked
                    .as_tensor()
                    .to_scalar::<i64>()?
                    .max(1) as f64
            }
        };
        let blend = |r: &Var, s: &Tensor| -> Result<()> {
            let s = s.detach().flatten_all()?;
            r.set(&((s * m)? + (r.as_tensor() * (1.0 - m))?)?)?;
            Ok(())
        };
        blend(&self.mean, mean)?;
        blend(&self.var, unbiased_var)
    }

    fn mean(&self) -> &Tensor {
        self.mean.as_tensor()
    }

    fn var(&self) -> &Tensor {
        self.var.as_tensor()
    }
}

/// The accessors every layer has: its name and γ/β.
macro_rules! affine_accessors {
    ($layer:ty) => {
        impl $layer {
            /// The path the layer was registered under (`layer1.0.bn1`): its tensors are
            /// `<name>.weight`, `<name>.bias` and, where kept, `<name>.running_mean`, ….
            pub fn name(&self) -> &str {
                &self.affine.name
            }

            /// γ (`weight`, per channel), unless the layer was built with [`Affine::None`].
            /// Frozen with [`Affine::Frozen`]: registered, but in no optimizer's variables.
            pub fn weight(&self) -> Option<&Var> {
                self.affine.weight.as_ref()
            }

            /// β (`bias`, per channel), unless the layer was built with [`Affine::None`].
            pub fn bias(&self) -> Option<&Var> {
                self.affine.bias.as_ref()
            }
        }
    };
}

/// The accessors of a layer that may keep running statistics (store buffers, never
/// parameters: no optimizer sees them).
macro_rules! running_accessors {
    ($layer:ty) => {
        impl $layer {
            /// The running mean (`running_mean`, per channel), when the layer keeps running
            /// statistics.
            pub fn running_mean(&self) -> Option<&Var> {
                self.running.as_ref().map(|r| &r.mean)
            }

            /// The running (unbiased) variance (`running_var`, per channel), when the layer
            /// keeps running statistics.
            pub fn running_var(&self) -> Option<&Var> {
                self.running.as_ref().map(|r| &r.var)
            }

            /// The number of training batches seen (`num_batches_tracked`, an `i64` scalar),
            /// when the layer keeps running statistics.
            pub fn num_batches_tracked(&self) -> Option<&Var> {
                self.running.as_ref().map(|r| &r.num_batches_tracked)
            }
        }
    };
}

/// candle-nn's `ModuleT`, so that a layer fits `xs.apply_t(&bn, train)` in a candle-nn model
/// (the error is the layer's [`NormError`](crate::NormError), wrapped).
macro_rules! module_t {
    ($layer:ty) => {
        impl candle_nn::ModuleT for $layer {
            fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
                <$layer>::forward_t(self, x, train).map_err(candle_core::Error::wrap)
            }
        }
    };
}

module_t!(BatchNorm2d);
module_t!(GroupNorm);
module_t!(LayerNorm2d);
module_t!(InstanceNorm2d);
affine_accessors!(BatchNorm2d);
affine_accessors!(GroupNorm);
affine_accessors!(InstanceNorm2d);
running_accessors!(BatchNorm2d);
running_accessors!(InstanceNorm2d);

/// Which implementation runs normalization: training mode (batch statistics) for every kind,
/// and evaluation with running statistics (BatchNorm, InstanceNorm tracking them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The fused CPU kernel for f32/f64 tensors on the CPU, the composite path otherwise.
    #[default]
    Auto,
    /// candle's composite tensor ops: works on every device and dtype.
    Composite,
    /// The fused CPU kernel; an error for tensors that are not f32/f64 on the CPU.
    Fused,
}

fn check_input(
    layer: &'static str,
    x: &Tensor,
    channels: usize,
    dtype: DType,
) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = x.dims4().map_err(|_| NormError::Rank {
        layer,
        shape: x.dims().to_vec(),
    })?;
    if c != channels {
        return Err(NormError::Channels {
            layer,
            expected: channels,
            shape: x.dims().to_vec(),
        });
    }
    if x.dtype() != dtype {
        return Err(NormError::DType {
            layer,
            expected: dtype,
            got: x.dtype(),
        });
    }
    Ok((n, c, h, w))
}

/// What a normalization call computes after the normalization itself.
#[derive(Clone, Copy)]
pub(crate) struct Act<'a> {
    /// The kernel for batch statistics.
    pub kernel: Kernel,
    /// Whether `explr_nn::relu` follows.
    pub relu: bool,
    /// A convolution that reads the output, and a residual added to the convolution's output:
    /// on the fused kernels it applies the normalization as it reads its input
    /// (`explr_nn::conv2d_normed`), elsewhere it runs after it.
    pub conv: Option<(&'a Conv2d, Option<&'a Tensor>)>,
}

impl Act<'_> {
    /// The normalization alone, on `kernel`.
    pub fn plain(kernel: Kernel) -> Self {
        Act {
            kernel,
            relu: false,
            conv: None,
        }
    }
}

/// `y` through the convolution of `conv` (and its residual), if any.
pub(crate) fn then_conv(y: Tensor, conv: Option<(&Conv2d, Option<&Tensor>)>) -> Result<Tensor> {
    use candle_core::Module;
    Ok(match conv {
        None => y,
        Some((conv, None)) => conv.forward(&y)?,
        Some((conv, Some(r))) => conv.forward_add(&y, r)?,
    })
}

/// The normalized output (affine applied; through the convolution of [`Act::conv`] where there
/// is one) and the detached per-block batch statistics: shape (C) per channel, or (N, G) per
/// sample and group.
struct Normalized {
    y: Tensor,
    mean: Tensor,
    /// Biased variance.
    var: Tensor,
}

/// Batch-statistics normalization `(x − mean)/√(var + eps)·γ + β` (THEORY.md §1), with the
/// statistics taken over each block of `grouping`; with `relu`, `explr_nn::relu` of it (in the
/// same pass on the fused kernel).
fn normalize(
    layer: &'static str,
    x: &Tensor,
    grouping: Grouping,
    eps: f64,
    affine: &AffineParams,
    act: Act<'_>,
) -> Result<Normalized> {
    let (kernel, relu) = (act.kernel, act.relu);
    let (n, c, h, w) = x.dims4()?;
    let geom = Geometry {
        n,
        c,
        s: h * w,
        grouping,
    };
    if geom.count() <= 1 {
        return Err(NormError::TooFewValues {
            layer,
            shape: x.dims().to_vec(),
        });
    }
    let stats_shape = match grouping {
        Grouping::PerChannel => vec![c],
        Grouping::Groups(g) => vec![n, g],
    };
    if fused(layer, x, kernel)? {
        let (gamma, beta) = affine.or_identity(c, x)?;
        let op = NormFwd {
            geom,
            eps,
            relu,
            stats: Default::default(),
        };
        let stats = op.stats.clone();
        let y = match act.conv {
            Some((conv, residual)) if conv.bias().is_none() => {
                let norm = NormInput {
                    fwd: op,
                    gamma: f64s(&gamma)?,
                    beta: f64s(&beta)?,
                };
                let x = (
                    &x.contiguous()?,
                    Arc::new(norm) as Arc<dyn explr_nn::InputNorm>,
                );
                conv.forward_normed(x, (&gamma, &beta), residual)?
            }
            conv => then_conv(x.contiguous()?.apply_op3(&gamma, &beta, op)?, conv)?,
        };
        let st = stats.get().ok_or_else(|| {
            candle_core::Error::Msg("fused norm kernel recorded no statistics".into())
        })?;
        let to = |v: &[f64]| -> Result<Tensor> {
            Ok(
                Tensor::from_vec(v.to_vec(), stats_shape.as_slice(), x.device())?
                    .to_dtype(x.dtype())?,
            )
        };
        return Ok(Normalized {
            y,
            mean: to(&st.mean)?,
            var: to(&st.var)?,
        });
    }
    let count = geom.count();
    let (xs, dims): (Tensor, &[usize]) = match grouping {
        Grouping::PerChannel => (x.clone(), &[0, 2, 3]),
        Grouping::Groups(g) => (x.reshape((n, g, count))?, &[2]),
    };
    let mean = xs.mean_keepdim(dims)?;
    let xc = xs.broadcast_sub(&mean)?;
    let var = xc
        .sqr()?
        .sum_keepdim(dims)?
        .affine(1.0 / count as f64, 0.0)?;
    let y = xc
        .broadcast_div(&var.affine(1.0, eps)?.sqrt()?)?
        .reshape((n, c, h, w))?;
    Ok(Normalized {
        y: then_conv(activate(affine.apply(y)?, relu)?, act.conv)?,
        mean: mean.detach().reshape(stats_shape.as_slice())?,
        var: var.detach().reshape(stats_shape.as_slice())?,
    })
}

/// `explr_nn::relu(y)` when `relu`, else `y`.
fn activate(y: Tensor, relu: bool) -> Result<Tensor> {
    Ok(if relu { explr_nn::relu(&y)? } else { y })
}

/// Whether `kernel` runs the fused CPU kernels on `x` (an error for [`Kernel::Fused`] where
/// they cannot).
fn fused(layer: &'static str, x: &Tensor, kernel: Kernel) -> Result<bool> {
    let fusable = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    match kernel {
        Kernel::Auto => Ok(fusable),
        Kernel::Composite => Ok(false),
        Kernel::Fused if fusable => Ok(true),
        Kernel::Fused => Err(NormError::KernelUnavailable {
            layer,
            device: format!("{:?}", x.device()),
            dtype: x.dtype(),
        }),
    }
}

/// Evaluation with running statistics: `(x − r_mean)/√(r_var + eps)·γ + β`, then the ReLU
/// when `act` fuses it; the fused kernel ([`crate::running`]) in one pass, bit for bit the
/// composite path.
fn normalize_running(
    layer: &'static str,
    x: &Tensor,
    (r, eps): (&RunningStats, f64),
    affine: &AffineParams,
    act: Act<'_>,
) -> Result<Tensor> {
    let (kernel, relu) = (act.kernel, act.relu);
    let std = r.var().affine(1.0, eps)?.sqrt()?;
    if fused(layer, x, kernel)? {
        let dims = x.dims4()?;
        let (gamma, beta) = affine.or_identity(dims.1, x)?;
        let op = crate::running::RunningNorm::new(
            dims,
            affine.weight.is_some(),
            affine.bias.is_some(),
            relu,
        );
        let stats = Tensor::stack(&[r.mean().detach(), std.detach()], 0)?;
        let affine = Tensor::stack(&[gamma, beta], 0)?;
        return then_conv(x.contiguous()?.apply_op3(&stats, &affine, op)?, act.conv);
    }
    let shape = (1, (), 1, 1);
    let mean = r.mean().reshape(shape)?;
    let y = affine.apply(
        x.broadcast_sub(&mean)?
            .broadcast_div(&std.reshape(shape)?)?,
    )?;
    then_conv(activate(y, relu)?, act.conv)
}

/// `nn.BatchNorm2d`: per-channel statistics over (N, H, W).
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    channels: usize,
    eps: f64,
    affine: AffineParams,
    running: Option<RunningStats>,
}

impl BatchNorm2d {
    /// Registers `weight`/`bias` (per `cfg.affine`) and, unless disabled, the buffers
    /// `running_mean`, `running_var`, `num_batches_tracked` under `path`.
    pub fn new(path: &Path, channels: usize, cfg: &NormConfig) -> Result<Self> {
        cfg.validate()?;
        check_channels("BatchNorm2d", channels)?;
        let running = if cfg.track_running_stats.unwrap_or(true) {
            Some(RunningStats::new(path, channels, cfg.momentum)?)
        } else {
            None
        };
        Ok(Self {
            channels,
            eps: cfg.eps,
            affine: AffineParams::new(path, channels, cfg.affine)?,
            running,
        })
    }

    /// Training mode normalizes with the batch statistics and updates the running ones;
    /// evaluation mode uses the running statistics (batch statistics when none are kept).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, Kernel::Auto)
    }

    /// [`BatchNorm2d::forward_t`] with an explicit [`Kernel`] for batch statistics.
    pub fn forward_with(&self, x: &Tensor, train: bool, kernel: Kernel) -> Result<Tensor> {
        self.forward_act(x, train, Act::plain(kernel))
    }

    /// [`BatchNorm2d::forward_with`], followed by what `act` asks for.
    pub(crate) fn forward_act(&self, x: &Tensor, train: bool, act: Act<'_>) -> Result<Tensor> {
        let layer = "BatchNorm2d";
        let (n, _, h, w) = check_input(layer, x, self.channels, self.affine.dtype)?;
        if let (Some(r), false) = (&self.running, train) {
            return normalize_running(layer, x, (r, self.eps), &self.affine, act);
        }
        let out = normalize(layer, x, Grouping::PerChannel, self.eps, &self.affine, act)?;
        if let (Some(r), true) = (&self.running, train) {
            let count = (n * h * w) as f64;
            r.update(
                &out.mean,
                &out.var.affine(count / (count - 1.0), 0.0)?,
                true,
            )?;
        }
        Ok(out.y)
    }
}

fn check_channels(layer: &'static str, channels: usize) -> Result<()> {
    if channels == 0 {
        return Err(NormError::Config(format!(
            "{layer} needs at least one channel, got 0"
        )));
    }
    Ok(())
}

/// `nn.GroupNorm(groups, C)`: statistics per sample over each group of C/groups channels
/// and H, W.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    channels: usize,
    groups: usize,
    eps: f64,
    affine: AffineParams,
    kind: &'static str,
}

impl GroupNorm {
    /// Registers `weight`/`bias` per `cfg.affine`; `groups` must divide `channels`.
    pub fn new(path: &Path, groups: usize, channels: usize, cfg: &NormConfig) -> Result<Self> {
        Self::of_kind("GroupNorm", path, groups, channels, cfg)
    }

    fn of_kind(
        kind: &'static str,
        path: &Path,
        groups: usize,
        channels: usize,
        cfg: &NormConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        check_channels(kind, channels)?;
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(NormError::Groups { groups, channels });
        }
        Ok(Self {
            channels,
            groups,
            eps: cfg.eps,
            affine: AffineParams::new(path, channels, cfg.affine)?,
            kind,
        })
    }

    /// Normalizes; group statistics do not depend on the mode.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, Kernel::Auto)
    }

    /// [`GroupNorm::forward_t`] with an explicit [`Kernel`].
    pub fn forward_with(&self, x: &Tensor, train: bool, kernel: Kernel) -> Result<Tensor> {
        self.forward_act(x, train, Act::plain(kernel))
    }

    /// [`GroupNorm::forward_with`], followed by what `act` asks for.
    pub(crate) fn forward_act(&self, x: &Tensor, _train: bool, act: Act<'_>) -> Result<Tensor> {
        check_input(self.kind, x, self.channels, self.affine.dtype)?;
        let grouping = Grouping::Groups(self.groups);
        Ok(normalize(self.kind, x, grouping, self.eps, &self.affine, act)?.y)
    }
}

/// Layer normalization over (C, H, W) with a per-channel γ/β: PyTorch's `nn.GroupNorm(1, C)`
/// (which is what CIFAR codebases use for "LayerNorm" on feature maps, since `nn.LayerNorm`'s
/// affine would depend on the spatial size).
#[derive(Clone, Debug)]
pub struct LayerNorm2d(GroupNorm);

impl LayerNorm2d {
    /// Registers `weight`/`bias` per `cfg.affine`.
    pub fn new(path: &Path, channels: usize, cfg: &NormConfig) -> Result<Self> {
        Ok(Self(GroupNorm::of_kind(
            "LayerNorm2d",
            path,
            1,
            channels,
            cfg,
        )?))
    }

    /// Normalizes each sample over all its channels and positions.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward_t(x, train)
    }

    /// [`LayerNorm2d::forward_t`] with an explicit [`Kernel`].
    pub fn forward_with(&self, x: &Tensor, train: bool, kernel: Kernel) -> Result<Tensor> {
        self.0.forward_with(x, train, kernel)
    }

    /// [`LayerNorm2d::forward_with`], followed by what `act` asks for.
    pub(crate) fn forward_act(&self, x: &Tensor, train: bool, act: Act<'_>) -> Result<Tensor> {
        self.0.forward_act(x, train, act)
    }

    /// The path the layer was registered under: its tensors are `<name>.weight`, `<name>.bias`.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// γ (`weight`, per channel), unless the layer was built with [`Affine::None`].
    pub fn weight(&self) -> Option<&Var> {
        self.0.weight()
    }

    /// β (`bias`, per channel), unless the layer was built with [`Affine::None`].
    pub fn bias(&self) -> Option<&Var> {
        self.0.bias()
    }
}

/// `nn.InstanceNorm2d`: statistics per sample and channel over H, W; optionally tracking
/// running statistics (PyTorch's `track_running_stats=True`), which evaluation then uses.
#[derive(Clone, Debug)]
pub struct InstanceNorm2d {
    channels: usize,
    eps: f64,
    affine: AffineParams,
    running: Option<RunningStats>,
}

impl InstanceNorm2d {
    /// Registers `weight`/`bias` per `cfg.affine` and, when `cfg.track_running_stats` is
    /// `Some(true)`, the running buffers.
    pub fn new(path: &Path, channels: usize, cfg: &NormConfig) -> Result<Self> {
        cfg.validate()?;
        check_channels("InstanceNorm2d", channels)?;
        let running = if cfg.track_running_stats.unwrap_or(false) {
            let momentum = cfg.momentum.ok_or_else(|| {
                NormError::Config(
                    "InstanceNorm2d with running statistics needs a momentum (PyTorch ignores \
                     momentum=None there and never updates them); set momentum, e.g. 0.1"
                        .into(),
                )
            })?;
            Some(RunningStats::new(path, channels, Some(momentum))?)
        } else {
            None
        };
        Ok(Self {
            channels,
            eps: cfg.eps,
            affine: AffineParams::new(path, channels, cfg.affine)?,
            running,
        })
    }

    /// Training (or no running statistics): instance statistics; the running ones move toward
    /// the batch average of the instance mean and unbiased variance, as in PyTorch.
    /// Evaluation with running statistics: those.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, Kernel::Auto)
    }

    /// [`InstanceNorm2d::forward_t`] with an explicit [`Kernel`] for instance statistics.
    pub fn forward_with(&self, x: &Tensor, train: bool, kernel: Kernel) -> Result<Tensor> {
        self.forward_act(x, train, Act::plain(kernel))
    }

    /// [`InstanceNorm2d::forward_with`], followed by what `act` asks for.
    pub(crate) fn forward_act(&self, x: &Tensor, train: bool, act: Act<'_>) -> Result<Tensor> {
        let layer = "InstanceNorm2d";
        let (_, c, h, w) = check_input(layer, x, self.channels, self.affine.dtype)?;
        if let (Some(r), false) = (&self.running, train) {
            return normalize_running(layer, x, (r, self.eps), &self.affine, act);
        }
        let out = normalize(layer, x, Grouping::Groups(c), self.eps, &self.affine, act)?;
        if let (Some(r), true) = (&self.running, train) {
            let count = (h * w) as f64;
            let unbiased = out.var.affine(count / (count - 1.0), 0.0)?;
            // PyTorch never increments num_batches_tracked for InstanceNorm.
            r.update(&out.mean.mean(0)?, &unbiased.mean(0)?, false)?;
        }
        Ok(out.y)
    }
}
