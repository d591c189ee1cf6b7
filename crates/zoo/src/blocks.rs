//! Pieces every architecture shares: convs, the classifier head, pooling, input checks.

use candle_core::Tensor;
use explr_nn::{Conv2d, Conv2dConfig, Init, Linear, Path, Role};
use explr_norm::{Affine, Norm, NormConfig};

use crate::{Arch, ModelSpec, Result, ZooError};

/// A conv or norm layer of a built network, borrowed ([`crate::Model::convs`],
/// [`crate::Model::norms`]).
pub(crate) enum Layer<'a> {
    Conv(&'a Conv2d),
    Norm(&'a Norm),
}

/// Everything a layer constructor needs from the spec.
pub(crate) struct Ctx {
    pub norm_cfg: NormConfig,
    pub spec: ModelSpec,
}

impl Ctx {
    pub fn new(spec: &ModelSpec) -> Self {
        let mut norm_cfg = NormConfig::default().with_eps(spec.eps);
        if spec.freeze_norm_affine {
            norm_cfg.affine = Affine::Frozen;
        }
        Self {
            norm_cfg,
            spec: spec.clone(),
        }
    }

    /// The normalization layer `path` for `channels` channels.
    pub fn norm(&self, path: &Path, channels: usize) -> Result<Norm> {
        Ok(self.spec.norm.build(path, channels, &self.norm_cfg)?)
    }

    /// The normalization before the pooled head: `final_norm` when set, else `norm`.
    pub fn final_norm(&self, path: &Path, channels: usize) -> Result<Norm> {
        let kind = self.spec.final_norm.as_ref().unwrap_or(&self.spec.norm);
        Ok(kind.build(path, channels, &self.norm_cfg)?)
    }

    /// The role of a conv whose weight is scale invariant when a normalization follows it:
    /// [`Role::ScaleInvariant`] unless the model has no normalization (THEORY.md §1).
    pub fn normalized_conv_role(&self) -> Role {
        if self.spec.norm.is_scale_invariant() {
            Role::ScaleInvariant
        } else {
            Role::Other
        }
    }
}

/// A bias-free square convolution (`nn.Conv2d(…, bias=False)`), Kaiming normal fan-out init.
pub(crate) fn conv(
    path: &Path,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    role: Role,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        stride,
        padding: kernel / 2,
    };
    Ok(Conv2d::new(path, cin, cout, kernel, cfg, false, role)?)
}

/// Rescales a Kaiming-normal fan-out draw into a fan-in one: both are N(0, 2/fan), so
/// multiplying by √(fan_out/fan_in) = √(cout/cin) gives exactly `kaiming_normal_(mode='fan_in')`
/// from the same seeded draw.
pub(crate) fn fan_out_to_fan_in(conv: &Conv2d) -> Result<()> {
    let w = conv.weight();
    let (cout, cin, _, _) = w.dims4()?;
    if cout != cin {
        w.set(
            &w.as_tensor()
                .affine((cout as f64 / cin as f64).sqrt(), 0.0)?,
        )?;
    }
    Ok(())
}

/// The final linear classifier (`nn.Linear(in, classes)`) with the reference's weight init;
/// role [`Role::Head`] for weight and bias, both frozen with `frozen`.
pub(crate) fn head(
    path: &Path,
    in_features: usize,
    classes: usize,
    weight_init: Init,
    frozen: bool,
) -> Result<Linear> {
    let head = Linear::with_init(path, in_features, classes, true, Role::Head, weight_init)?;
    if frozen {
        path.set_trainable("weight", false);
        path.set_trainable("bias", false);
    }
    Ok(head)
}

/// Mean over H and W: (N, C, H, W) → (N, C). At the references' 8×8 final maps this is
/// bearpaw's `AvgPool2d(8)` and akamaster's `avg_pool2d(out, out.size()[3])`.
pub(crate) fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.flatten_from(2)?.mean(2)?)
}

/// Checks that `x` is (N, 3, H, W) in the model's dtype, with H, W ≥ `min_hw` (and exactly
/// `exact_hw` when given).
pub(crate) fn check_input(
    arch: Arch,
    x: &Tensor,
    dtype: candle_core::DType,
    exact_hw: Option<usize>,
) -> Result<()> {
    let ok_shape = match x.dims() {
        [n, 3, h, w] => {
            *n > 0
                && match exact_hw {
                    Some(s) => *h == s && *w == s,
                    None => *h > 0 && *w > 0,
                }
        }
        _ => false,
    };
    if !ok_shape || x.dtype() != dtype {
        let size = match exact_hw {
            Some(s) => format!("{s}×{s}"),
            None => "H×W".to_string(),
        };
        return Err(ZooError::Input {
            arch,
            expected: format!("a {dtype:?} batch of RGB images, shape (N, 3, {size}), N > 0"),
            shape: x.dims().to_vec(),
            dtype: x.dtype(),
        });
    }
    Ok(())
}
