//! The weight layers every zoo model shares.

use candle_core::{Module, Tensor, Var};

use crate::{Init, NnError, Path, Result, Role};

/// Stride and zero padding of a square 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Stride in both spatial dimensions.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl Conv2dConfig {
    /// Stride `stride` and padding 1, the 3×3 "same" convolution of every CIFAR model.
    pub fn same(stride: usize) -> Self {
        Self { stride, padding: 1 }
    }
}

/// `nn.Conv2d` with a square kernel and optional bias; PyTorch names `weight` and `bias`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    name: String,
    weight: Var,
    bias: Option<Var>,
    cfg: Conv2dConfig,
}

impl Conv2d {
    /// Registers `weight` (Kaiming normal, fan-out, as the CIFAR references do) and, when
    /// `bias` is set, `bias` (PyTorch's default uniform init, role [`Role::Other`]).
    pub fn new(
        path: &Path,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        cfg: Conv2dConfig,
        bias: bool,
        role: Role,
    ) -> Result<Self> {
        if in_channels == 0 || out_channels == 0 || kernel == 0 || cfg.stride == 0 {
            return Err(NnError::InvalidConfig(format!(
                "conv2d at `{}` needs positive channels, kernel and stride, got in={in_channels} \
                 out={out_channels} kernel={kernel} stride={}",
                path.prefix(),
                cfg.stride
            )));
        }
        let weight = path.param(
            "weight",
            (out_channels, in_channels, kernel, kernel),
            Init::KaimingNormalFanOut,
            role,
        )?;
        let bias = if bias {
            Some(path.param(
                "bias",
                out_channels,
                Init::TorchDefaultBias {
                    fan_in: in_channels * kernel * kernel,
                },
                Role::Other,
            )?)
        } else {
            None
        };
        Ok(Self {
            name: path.prefix().to_string(),
            weight,
            bias,
            cfg,
        })
    }

    /// The path the layer was registered under (`layer1.0.conv1`): its tensors are
    /// `<name>.weight` and `<name>.bias`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weight `(out, in, k, k)`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The bias `(out)`, when the layer has one.
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }

    /// `forward(x) + residual`, the residual sum of a residual block: without a bias in one
    /// pass ([`crate::conv2d_add`]), with one as `forward` then [`crate::add`]. Bit for bit
    /// `add(&forward(x)?, residual)` either way.
    ///
    /// # Errors
    /// As [`Module::forward`], and when `residual` does not have the output's shape, dtype and
    /// device.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        match &self.bias {
            Some(_) => crate::add(&self.forward(x)?, residual),
            None => crate::conv::conv2d_add(
                x,
                self.weight.as_tensor(),
                self.cfg.stride,
                self.cfg.padding,
                residual,
            )
            .map_err(crate::conv::candle_error),
        }
    }
}

impl Conv2d {
    /// `self.forward(norm(x))` (plus `residual` when given) with the normalization `norm` and its
    /// parameters `γ`, `β` applied as the convolution reads `x` ([`crate::conv2d_normed`]): the
    /// normalized tensor is never written. Bit for bit the normalization's output followed by
    /// [`Conv2d::forward`] (or [`Conv2d::forward_add`]).
    ///
    /// # Errors
    /// As [`crate::conv2d_normed`], and [`NnError::InvalidConv`] for a convolution with a bias,
    /// which this path does not add: apply the normalization, then [`Conv2d::forward`].
    pub fn forward_normed(
        &self,
        (x, norm): (&Tensor, std::sync::Arc<dyn crate::InputNorm>),
        (gamma, beta): (&Tensor, &Tensor),
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        let (stride, padding) = (self.cfg.stride, self.cfg.padding);
        if self.bias.is_some() {
            return Err(crate::conv::invalid_conv(
                (x, w),
                (stride, padding),
                format!(
                    "`{}` has a bias, which a normalized input's convolution does not add: \
                     normalize first, then call forward",
                    self.name
                ),
            ));
        }
        crate::conv2d_normed((x, norm), (gamma, beta), w, (stride, padding), residual)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = crate::conv::conv2d_candle(
            x,
            self.weight.as_tensor(),
            self.cfg.stride,
            self.cfg.padding,
        )?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.as_tensor().reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

/// `nn.Linear`: `y = x·Wᵀ + b`, PyTorch's default init, names `weight` and `bias`.
#[derive(Clone, Debug)]
pub struct Linear {
    name: String,
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    /// Registers `weight` `[out, in]` (PyTorch's default init) and optionally `bias` `[out]`,
    /// both with `role`.
    pub fn new(
        path: &Path,
        in_features: usize,
        out_features: usize,
        bias: bool,
        role: Role,
    ) -> Result<Self> {
        Self::with_init(
            path,
            in_features,
            out_features,
            bias,
            role,
            Init::TorchDefault,
        )
    }

    /// [`Linear::new`] with the weight drawn from `weight_init` (the bias keeps PyTorch's
    /// default init).
    pub fn with_init(
        path: &Path,
        in_features: usize,
        out_features: usize,
        bias: bool,
        role: Role,
        weight_init: Init,
    ) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(NnError::InvalidConfig(format!(
                "linear at `{}` needs positive sizes, got in={in_features} out={out_features}",
                path.prefix()
            )));
        }
        let weight = path.param("weight", (out_features, in_features), weight_init, role)?;
        let bias = if bias {
            Some(path.param(
                "bias",
                out_features,
                Init::TorchDefaultBias {
                    fan_in: in_features,
                },
                role,
            )?)
        } else {
            None
        };
        Ok(Self {
            name: path.prefix().to_string(),
            weight,
            bias,
        })
    }

    /// The path the layer was registered under (`fc`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weight `(out, in)`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The bias `(out)`, when the layer has one.
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.weight.as_tensor().t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b.as_tensor()),
            None => Ok(y),
        }
    }
}
