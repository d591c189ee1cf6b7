//! PreResNet-n for CIFAR, as bearpaw/pytorch-classification `models/cifar/preresnet.py`
//! (basic blocks at every depth 6k+2).
//!
//! State-dict names: `conv1.weight`, `layer{1,2,3}.{i}.{bn1,conv1,bn2,conv2}.*`,
//! `layer{2,3}.0.downsample.0.weight`, `bn.*`, `fc.{weight,bias}`.

use candle_core::{Module, Tensor};
use explr_nn::{Conv2d, Init, Linear, Path, Role};
use explr_norm::Norm;

use crate::blocks::{conv, global_avg_pool, head, Ctx, Layer};
use crate::Result;

/// `BasicBlock`: out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x).
#[derive(Clone, Debug)]
struct BasicBlock {
    bn1: Norm,
    conv1: Conv2d,
    bn2: Norm,
    conv2: Conv2d,
    downsample: Option<Conv2d>,
}

impl BasicBlock {
    fn new(ctx: &Ctx, path: &Path, cin: usize, cout: usize, stride: usize) -> Result<Self> {
        // THEORY.md §1. conv1 feeds bn2 and conv2's output joins the residual stream, which
        // only ever reaches the network output through a normalization (the next block's bn1
        // or the final bn). Scaling the stem and every block conv by c scales the whole
        // residual stream by c, *provided* the 1×1 projection shortcuts are left alone: their
        // input is already scaled by c, so scaling them too would scale their output by c² and
        // break the sum's homogeneity. They are therefore `Other`, not scale invariant.
        let role = ctx.normalized_conv_role();
        let bn1 = ctx.norm(&path.push("bn1"), cin)?;
        let conv1 = conv(&path.push("conv1"), cin, cout, 3, stride, role)?;
        let bn2 = ctx.norm(&path.push("bn2"), cout)?;
        let conv2 = conv(&path.push("conv2"), cout, cout, 3, 1, role)?;
        let downsample = if stride != 1 || cin != cout {
            Some(conv(
                &path.push("downsample").push(0),
                cin,
                cout,
                1,
                stride,
                Role::Other,
            )?)
        } else {
            None
        };
        Ok(Self {
            bn1,
            conv1,
            bn2,
            conv2,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // Each norm's ReLU'd output is read by its convolution as it lays its input out
        // (never written), and conv2's output gets the residual while each sample's output is
        // in cache.
        let out = self.bn1.forward_relu_conv_t(x, &self.conv1, None, train)?;
        let residual = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        Ok(self
            .bn2
            .forward_relu_conv_t(&out, &self.conv2, Some(&residual), train)?)
    }

    fn layers<'a>(&'a self, out: &mut Vec<Layer<'a>>) {
        out.extend([
            Layer::Norm(&self.bn1),
            Layer::Conv(&self.conv1),
            Layer::Norm(&self.bn2),
            Layer::Conv(&self.conv2),
        ]);
        out.extend(self.downsample.as_ref().map(Layer::Conv));
    }
}

/// The whole network.
#[derive(Clone, Debug)]
pub(crate) struct PreResNet {
    conv1: Conv2d,
    blocks: Vec<BasicBlock>,
    bn: Norm,
    pub(crate) fc: Linear,
}

impl PreResNet {
    pub fn new(ctx: &Ctx, root: &Path) -> Result<Self> {
        let spec = &ctx.spec;
        let n = (spec.depth - 2) / 6;
        let w = spec.resolved_width();
        let conv1 = conv(&root.push("conv1"), 3, w, 3, 1, ctx.normalized_conv_role())?;
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
        let bn = ctx.final_norm(&root.push("bn"), cin)?;
        // bearpaw re-initializes only convs and BN; the fc keeps PyTorch's default init.
        let fc = head(
            &root.push("fc"),
            cin,
            spec.num_classes,
            Init::TorchDefault,
            spec.freeze_head,
        )?;
        Ok(Self {
            conv1,
            blocks,
            bn,
            fc,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.conv1.forward(x)?;
        for b in &self.blocks {
            x = b.forward_t(&x, train)?;
        }
        let x = self.bn.forward_relu_t(&x, train)?;
        Ok(self.fc.forward(&global_avg_pool(&x)?)?)
    }

    /// Every conv and norm layer in forward order.
    pub fn layers(&self) -> Vec<Layer<'_>> {
        let mut out = vec![Layer::Conv(&self.conv1)];
        for b in &self.blocks {
            b.layers(&mut out);
        }
        out.push(Layer::Norm(&self.bn));
        out
    }
}
