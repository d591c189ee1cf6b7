//! VGG-11/13/16/19 for CIFAR, as kuangliu/pytorch-cifar `models/vgg.py`.
//!
//! State-dict names: `features.{i}.weight` (conv), `features.{i+1}.*` (norm), then ReLU at
//! `i+2` and `M` (max pooling) as their own indices, exactly as the reference's
//! `nn.Sequential`; `classifier.{weight,bias}`. With `norm: none` the norm slot stays in the
//! numbering (an `nn.Identity` in the PyTorch twin), so names do not depend on the norm.
//!
//! Differences from the reference, both required by the scale-invariance setup: a conv that
//! feeds a normalization has no bias (the reference's `bias=True` is cancelled by BatchNorm
//! and would break scale invariance under GroupNorm/LayerNorm), and convs use Kaiming normal
//! (fan-out) instead of PyTorch's default init. With `norm: none` the convs keep their bias.

use candle_core::{Module, Tensor};
use explr_nn::{Conv2d, Conv2dConfig, Init, Linear, Path, Role};
use explr_norm::Norm;

use crate::blocks::{conv, head, Ctx, Layer};
use crate::Result;

/// One entry of the reference's `cfg`: a conv with this many channels (in units of width/64),
/// or `M`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    Conv(usize),
    Pool,
}

/// The reference's `cfg[f"VGG{depth}"]`, channels divided by 64 (so width 64 reproduces it).
pub(crate) fn config(depth: usize) -> Option<Vec<Item>> {
    use Item::{Conv as C, Pool as M};
    Some(match depth {
        11 => vec![
            C(1),
            M,
            C(2),
            M,
            C(4),
            C(4),
            M,
            C(8),
            C(8),
            M,
            C(8),
            C(8),
            M,
        ],
        13 => vec![
            C(1),
            C(1),
            M,
            C(2),
            C(2),
            M,
            C(4),
            C(4),
            M,
            C(8),
            C(8),
            M,
            C(8),
            C(8),
            M,
        ],
        16 => vec![
            C(1),
            C(1),
            M,
            C(2),
            C(2),
            M,
            C(4),
            C(4),
            C(4),
            M,
            C(8),
            C(8),
            C(8),
            M,
            C(8),
            C(8),
            C(8),
            M,
        ],
        19 => vec![
            C(1),
            C(1),
            M,
            C(2),
            C(2),
            M,
            C(4),
            C(4),
            C(4),
            C(4),
            M,
            C(8),
            C(8),
            C(8),
            C(8),
            M,
            C(8),
            C(8),
            C(8),
            C(8),
            M,
        ],
        _ => return None,
    })
}

#[derive(Clone, Debug)]
enum Feature {
    ConvNorm(Conv2d, Norm),
    Pool,
}

/// The whole network.
#[derive(Clone, Debug)]
pub(crate) struct Vgg {
    features: Vec<Feature>,
    pub(crate) classifier: Linear,
}

impl Vgg {
    pub fn new(ctx: &Ctx, root: &Path) -> Result<Self> {
        let spec = &ctx.spec;
        let w = spec.resolved_width();
        // `validate` has checked the depth.
        let items = config(spec.depth).unwrap_or_default();
        let features_path = root.push("features");
        let normalized = spec.norm.is_scale_invariant();
        let mut features = Vec::with_capacity(items.len());
        let mut idx = 0usize;
        let mut cin = 3;
        for item in items {
            match item {
                Item::Conv(mult) => {
                    let cout = mult * w;
                    let p = features_path.push(idx);
                    // THEORY.md §1: each conv feeds a normalization directly, so its weight
                    // is scale invariant on its own. Without a norm it keeps the reference's
                    // bias and nothing is scale invariant.
                    let c = if normalized {
                        conv(&p, cin, cout, 3, 1, Role::ScaleInvariant)?
                    } else {
                        Conv2d::new(&p, cin, cout, 3, Conv2dConfig::same(1), true, Role::Other)?
                    };
                    let n = ctx.norm(&features_path.push(idx + 1), cout)?;
                    features.push(Feature::ConvNorm(c, n));
                    cin = cout;
                    idx += 3;
                }
                Item::Pool => {
                    features.push(Feature::Pool);
                    idx += 1;
                }
            }
        }
        let classifier = head(
            &root.push("classifier"),
            cin,
            spec.num_classes,
            Init::TorchDefault,
            spec.freeze_head,
        )?;
        Ok(Self {
            features,
            classifier,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // `x` is the input of `pending`'s norm and ReLU, not yet applied: a conv that follows
        // applies them as it lays its input out, so the norm's output is never written.
        let mut x = x.clone();
        let mut pending: Option<&Norm> = None;
        for layer in &self.features {
            x = match (layer, pending.take()) {
                (Feature::ConvNorm(c, n), before) => {
                    pending = Some(n);
                    match before {
                        Some(p) => p.forward_relu_conv_t(&x, c, None, train)?,
                        None => c.forward(&x)?,
                    }
                }
                (Feature::Pool, Some(p)) => p.forward_relu_t(&x, train)?.max_pool2d(2)?,
                (Feature::Pool, None) => x.max_pool2d(2)?,
            };
        }
        if let Some(p) = pending {
            x = p.forward_relu_t(&x, train)?;
        }
        // 32×32 inputs reach 1×1 here; the reference's AvgPool2d(1) is the identity.
        Ok(self.classifier.forward(&x.flatten_from(1)?)?)
    }

    /// Every conv and norm layer in forward order.
    pub fn layers(&self) -> Vec<Layer<'_>> {
        let mut out = Vec::with_capacity(2 * self.features.len());
        for f in &self.features {
            if let Feature::ConvNorm(c, n) = f {
                out.extend([Layer::Conv(c), Layer::Norm(n)]);
            }
        }
        out
    }
}
