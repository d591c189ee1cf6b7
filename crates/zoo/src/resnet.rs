//! The CIFAR ResNet-n with the option-A shortcut, as akamaster/pytorch_resnet_cifar10
//! `resnet.py`.
//!
//! State-dict names: `conv1.weight`, `bn1.*`, `layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}.*`,
//! `linear.{weight,bias}`. Convs and the linear weight use `kaiming_normal_` (fan-in), as the
//! reference's `_weights_init`.

use candle_core::{Module, Tensor};
use explr_nn::{Conv2d, Init, Linear, Path};
use explr_norm::Norm;

use crate::blocks::{conv, fan_out_to_fan_in, global_avg_pool, head, Ctx, Layer};
use crate::Result;

/// Option-A shortcut: `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))` with p = planes/4.
#[derive(Clone, Debug)]
struct PadShortcut {
    pad: usize,
}

impl PadShortcut {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let every_other = |n: usize| -> Result<Tensor> {
            let idx: Vec<u32> = (0..n as u32).step_by(2).collect();
            Ok(Tensor::from_vec(idx, n.div_ceil(2), x.device())?)
        };
        let x = x.index_select(&every_other(h)?, 2)?;
        let x = x.index_select(&every_other(w)?, 3)?;
        Ok(x.pad_with_zeros(1, self.pad, self.pad)?)
    }
}

/// `BasicBlock`: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
#[derive(Clone, Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: Norm,
    conv2: Conv2d,
    bn2: Norm,
    shortcut: Option<PadShortcut>,
}

impl BasicBlock {
    fn new(ctx: &Ctx, path: &Path, cin: usize, planes: usize, stride: usize) -> Result<Self> {
        // THEORY.md §1: every conv feeds a normalization directly, and the shortcut carries a
        // normalized (then ReLU'd) signal, so each conv weight is scale invariant on its own.
        let role = ctx.normalized_conv_role();
        let conv1 = conv(&path.push("conv1"), cin, planes, 3, stride, role)?;
        fan_out_to_fan_in(&conv1)?;
        let bn1 = ctx.norm(&path.push("bn1"), planes)?;
        let conv2 = conv(&path.push("conv2"), planes, planes, 3, 1, role)?;
        fan_out_to_fan_in(&conv2)?;
        let bn2 = ctx.norm(&path.push("bn2"), planes)?;
        let shortcut = (stride != 1 || cin != planes).then_some(PadShortcut { pad: planes / 4 });
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            shortcut,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // bn1's ReLU'd output is read by conv2 as it lays its input out (never written).
        let out = self.conv1.forward(x)?;
        let out = self
            .bn1
            .forward_relu_conv_t(&out, &self.conv2, None, train)?;
        let out = self.bn2.forward_t(&out, train)?;
        let short = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok(explr_nn::relu(&explr_nn::add(&out, &short)?)?)
    }

    fn layers<'a>(&'a self, out: &mut Vec<Layer<'a>>) {
        out.extend([
            Layer::Conv(&self.conv1),
            Layer::Norm(&self.bn1),
            Layer::Conv(&self.conv2),
            Layer::Norm(&self.bn2),
        ]);
    }
}

/// The whole network.
#[derive(Clone, Debug)]
pub(crate) struct ResNet {
    conv1: Conv2d,
    bn1: Norm,
    blocks: Vec<BasicBlock>,
    pub(crate) linear: Linear,
}

impl ResNet {
    pub fn new(ctx: &Ctx, root: &Path) -> Result<Self> {
        let spec = &ctx.spec;
        let n = (spec.depth - 2) / 6;
        let w = spec.resolved_width();
        let conv1 = conv(&root.push("conv1"), 3, w, 3, 1, ctx.normalized_conv_role())?;
        fan_out_to_fan_in(&conv1)?;
        let bn1 = ctx.norm(&root.push("bn1"), w)?;
        let mut blocks = Vec::with_capacity(3 * n);
        let mut cin = w;
        for (stage, (planes, stride)) in [(w, 1), (2 * w, 2), (4 * w, 2)].into_iter().enumerate() {
            let layer = root.push(format!("layer{}", stage + 1));
            for i in 0..n {
                let s = if i == 0 { stride } else { 1 };
                blocks.push(BasicBlock::new(ctx, &layer.push(i), cin, planes, s)?);
                cin = planes;
            }
        }
        let linear = head(
            &root.push("linear"),
            cin,
            spec.num_classes,
            Init::KaimingNormalFanIn,
            spec.freeze_head,
        )?;
        Ok(Self {
            conv1,
            bn1,
            blocks,
            linear,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        for b in &self.blocks {
            x = b.forward_t(&x, train)?;
        }
        Ok(self.linear.forward(&global_avg_pool(&x)?)?)
    }

    /// Every conv and norm layer in forward order.
    pub fn layers(&self) -> Vec<Layer<'_>> {
        let mut out = vec![Layer::Conv(&self.conv1), Layer::Norm(&self.bn1)];
        for b in &self.blocks {
            b.layers(&mut out);
        }
        out
    }
}
