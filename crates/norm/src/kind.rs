//! `NormKind`: a normalization chosen by name, built for any channel count.

use std::fmt;
use std::str::FromStr;

use candle_core::{Tensor, Var};
use explr_nn::Path;

use crate::layers::{then_conv, Act};
use crate::{
    BatchNorm2d, GroupNorm, InstanceNorm2d, Kernel, LayerNorm2d, NormConfig, NormError, Result,
};

/// Which normalization a model uses; parses from `bn`, `gn:<groups>`, `ln`, `in`, `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormKind {
    /// [`BatchNorm2d`].
    Batch,
    /// [`GroupNorm`] with this many groups.
    Group(usize),
    /// [`LayerNorm2d`].
    Layer,
    /// [`InstanceNorm2d`].
    Instance,
    /// No normalization (identity): the network is then *not* scale invariant.
    None,
}

impl NormKind {
    /// Builds the layer for `channels` channels under `path`.
    pub fn build(&self, path: &Path, channels: usize, cfg: &NormConfig) -> Result<Norm> {
        Ok(match *self {
            NormKind::Batch => Norm::Batch(BatchNorm2d::new(path, channels, cfg)?),
            NormKind::Group(g) => Norm::Group(GroupNorm::new(path, g, channels, cfg)?),
            NormKind::Layer => Norm::Layer(LayerNorm2d::new(path, channels, cfg)?),
            NormKind::Instance => Norm::Instance(InstanceNorm2d::new(path, channels, cfg)?),
            NormKind::None => Norm::Identity,
        })
    }

    /// True for every kind except `none`: the weights feeding it are scale invariant.
    pub fn is_scale_invariant(&self) -> bool {
        !matches!(self, NormKind::None)
    }
}

impl FromStr for NormKind {
    type Err = NormError;

    fn from_str(s: &str) -> Result<Self> {
        let err = |reason: &str| NormError::ParseKind {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "bn" => Ok(NormKind::Batch),
            "ln" => Ok(NormKind::Layer),
            "in" => Ok(NormKind::Instance),
            "none" => Ok(NormKind::None),
            "gn" => Err(err("GroupNorm needs a group count")),
            other => match other.strip_prefix("gn:") {
                Some(g) => match g.parse::<usize>() {
                    Ok(0) => Err(err("the group count must be positive")),
                    Ok(g) => Ok(NormKind::Group(g)),
                    Err(_) => Err(err(
                        "the group count after `gn:` must be a positive integer",
                    )),
                },
                None => Err(err("not a known kind")),
            },
        }
    }
}

impl fmt::Display for NormKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NormKind::Batch => write!(f, "bn"),
            NormKind::Group(g) => write!(f, "gn:{g}"),
            NormKind::Layer => write!(f, "ln"),
            NormKind::Instance => write!(f, "in"),
            NormKind::None => write!(f, "none"),
        }
    }
}

impl serde::Serialize for NormKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NormKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A built normalization layer of any kind.
#[derive(Clone, Debug)]
pub enum Norm {
    /// BatchNorm.
    Batch(BatchNorm2d),
    /// GroupNorm.
    Group(GroupNorm),
    /// LayerNorm over (C, H, W).
    Layer(LayerNorm2d),
    /// InstanceNorm.
    Instance(InstanceNorm2d),
    /// No normalization.
    Identity,
}

impl Norm {
    /// Normalizes `x` (N, C, H, W); `train` selects batch vs running statistics where the kind
    /// has them.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, Kernel::Auto)
    }

    /// [`Norm::forward_t`] with an explicit [`Kernel`] for batch statistics.
    pub fn forward_with(&self, x: &Tensor, train: bool, kernel: Kernel) -> Result<Tensor> {
        match self {
            Norm::Batch(l) => l.forward_with(x, train, kernel),
            Norm::Group(l) => l.forward_with(x, train, kernel),
            Norm::Layer(l) => l.forward_with(x, train, kernel),
            Norm::Instance(l) => l.forward_with(x, train, kernel),
            Norm::Identity => Ok(x.clone()),
        }
    }

    /// `explr_nn::relu(self.forward_t(x, train))`, the pre-activation of explr's residual
    /// blocks, bit for bit; on the fused CPU kernel in one pass forward and one backward (the
    /// ReLU's mask applied inside the normalization's), saving the ReLU's two passes over
    /// memory.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, None)
    }

    /// `conv.forward(self.forward_relu_t(x, train))`, plus `residual` when given
    /// (`conv.forward_add`): the pre-activation and the convolution of explr's residual blocks,
    /// bit for bit. In training on the fused CPU kernels, the convolution applies the
    /// normalization and its ReLU as it reads `x` (`explr_nn::conv2d_normed`), so the normalized
    /// tensor is never written: one pass over memory less and one activation-sized tensor less
    /// kept for the backward pass. Elsewhere (evaluation, other devices, a convolution with a
    /// bias) the normalization's output is written and then convolved.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use explr_nn::{Conv2d, Conv2dConfig, ParamStore, Role};
    /// use explr_norm::{NormConfig, NormKind};
    ///
    /// let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    /// let root = store.root();
    /// let bn = NormKind::Batch.build(&root.push("bn"), 3, &NormConfig::default())?;
    /// let conv = Conv2d::new(&root.push("conv"), 3, 4, 3, Conv2dConfig::same(1), false, Role::Other)?;
    /// let x = Tensor::arange(0f32, 384., &Device::Cpu)?.reshape((2, 3, 8, 8))?.sin()?;
    /// let fused = bn.forward_relu_conv_t(&x, &conv, None, true)?;
    /// let apart = candle_core::Module::forward(&conv, &bn.forward_relu_t(&x, true)?)?;
    /// let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
    /// assert_eq!(values(&fused)?, values(&apart)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn forward_relu_conv_t(
        &self,
        x: &Tensor,
        conv: &explr_nn::Conv2d,
        residual: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_act(x, train, Some((conv, residual)))
    }

    /// The normalization with its ReLU, then the convolution `conv` where given.
    fn forward_act(
        &self,
        x: &Tensor,
        train: bool,
        conv: Option<(&explr_nn::Conv2d, Option<&Tensor>)>,
    ) -> Result<Tensor> {
        let act = Act {
            kernel: Kernel::Auto,
            relu: true,
            conv,
        };
        match self {
            Norm::Batch(l) => l.forward_act(x, train, act),
            Norm::Group(l) => l.forward_act(x, train, act),
            Norm::Layer(l) => l.forward_act(x, train, act),
            Norm::Instance(l) => l.forward_act(x, train, act),
            Norm::Identity => then_conv(explr_nn::relu(x)?, conv),
        }
    }

    /// The path the layer was registered under; `None` for [`Norm::Identity`].
    pub fn name(&self) -> Option<&str> {
        match self {
            Norm::Batch(l) => Some(l.name()),
            Norm::Group(l) => Some(l.name()),
            Norm::Layer(l) => Some(l.name()),
            Norm::Instance(l) => Some(l.name()),
            Norm::Identity => None,
        }
    }

    /// γ (`weight`), when the layer has one.
    pub fn weight(&self) -> Option<&Var> {
        match self {
            Norm::Batch(l) => l.weight(),
            Norm::Group(l) => l.weight(),
            Norm::Layer(l) => l.weight(),
            Norm::Instance(l) => l.weight(),
            Norm::Identity => None,
        }
    }

    /// β (`bias`), when the layer has one.
    pub fn bias(&self) -> Option<&Var> {
        match self {
            Norm::Batch(l) => l.bias(),
            Norm::Group(l) => l.bias(),
            Norm::Layer(l) => l.bias(),
            Norm::Instance(l) => l.bias(),
            Norm::Identity => None,
        }
    }

    /// The running mean, when the layer keeps running statistics (BatchNorm, InstanceNorm
    /// with `track_running_stats`).
    pub fn running_mean(&self) -> Option<&Var> {
        match self {
            Norm::Batch(l) => l.running_mean(),
            Norm::Instance(l) => l.running_mean(),
            Norm::Group(_) | Norm::Layer(_) | Norm::Identity => None,
        }
    }

    /// The running variance, when the layer keeps running statistics.
    pub fn running_var(&self) -> Option<&Var> {
        match self {
            Norm::Batch(l) => l.running_var(),
            Norm::Instance(l) => l.running_var(),
            Norm::Group(_) | Norm::Layer(_) | Norm::Identity => None,
        }
    }

    /// The count of training batches, when the layer keeps running statistics.
    pub fn num_batches_tracked(&self) -> Option<&Var> {
        match self {
            Norm::Batch(l) => l.num_batches_tracked(),
            Norm::Instance(l) => l.num_batches_tracked(),
            Norm::Group(_) | Norm::Layer(_) | Norm::Identity => None,
        }
    }
}

impl candle_nn::ModuleT for Norm {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Norm::forward_t(self, x, train).map_err(candle_core::Error::wrap)
    }
}
