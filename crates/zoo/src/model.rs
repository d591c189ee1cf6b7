//! `Model`: a built network with its parameter groups.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use explr_nn::{Conv2d, Linear, ParamStore, Role};
use explr_norm::Norm;

use crate::blocks::{check_input, Ctx, Layer};
use crate::preresnet::PreResNet;
use crate::resnet::ResNet;
use crate::vgg::Vgg;
use crate::{Arch, ModelSpec, Result, ZooError};

#[derive(Clone, Debug)]
enum Net {
    PreResNet(PreResNet),
    ResNet(ResNet),
    Vgg(Vgg),
}

/// A zoo network built from a [`ModelSpec`] on a [`ParamStore`], whose parameters and buffers
/// it registers under the PyTorch reference's state-dict names.
///
/// The scale-invariant group ([`Role::ScaleInvariant`], THEORY.md §1) holds the weights `θ`
/// with `f(cθ) = f(θ)` for every c > 0 in training mode (exact with eps = 0), whatever the
/// values of the other parameters:
/// - PreResNet: the stem conv and both convs of every block, but *not* the 1×1 projection
///   shortcuts (role `Other`);
/// - ResNet and VGG: every conv weight;
/// - with `norm: none`: nothing (conv weights and biases are `Other`).
///
/// The head is [`Role::Head`], γ/β are [`Role::NormAffine`].
#[derive(Clone, Debug)]
pub struct Model {
    spec: ModelSpec,
    store: ParamStore,
    net: Net,
}

impl Model {
    /// Validates `spec` and registers the model at the root of `store`, drawing every
    /// initial value from the store's seeded RNG (same seed, same weights). The store should
    /// be fresh: a name already taken is an error.
    pub fn new(spec: &ModelSpec, store: &ParamStore) -> Result<Self> {
        spec.validate()?;
        let ctx = Ctx::new(spec);
        let root = store.root();
        let net = match spec.arch {
            Arch::PreResNet => Net::PreResNet(PreResNet::new(&ctx, &root)?),
            Arch::ResNet => Net::ResNet(ResNet::new(&ctx, &root)?),
            Arch::Vgg => Net::Vgg(Vgg::new(&ctx, &root)?),
        };
        Ok(Self {
            spec: spec.clone(),
            store: store.clone(),
            net,
        })
    }

    /// The logits `(N, num_classes)` of a batch `(N, 3, H, W)` in the store's dtype. `train`
    /// selects batch statistics (and updates BatchNorm's running statistics) vs running
    /// statistics. VGG needs 32×32 inputs (its classifier sees the 1×1 map after five
    /// poolings); the ResNets take any size (global average pooling).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let exact = (self.spec.arch == Arch::Vgg).then_some(32);
        check_input(self.spec.arch, x, self.store.dtype(), exact)?;
        match &self.net {
            Net::PreResNet(n) => n.forward_t(x, train),
            Net::ResNet(n) => n.forward_t(x, train),
            Net::Vgg(n) => n.forward_t(x, train),
        }
    }

    /// Every convolution in forward order (PreResNet's projection shortcuts after their
    /// block's second conv), each with its [`Conv2d::name`], weight and bias.
    pub fn convs(&self) -> Vec<&Conv2d> {
        self.layers()
            .into_iter()
            .filter_map(|l| match l {
                Layer::Conv(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Every normalization layer in forward order, each with its [`Norm::name`], γ/β and
    /// running statistics ([`Norm::running_mean`], …); none with `norm: none`.
    pub fn norms(&self) -> Vec<&Norm> {
        self.layers()
            .into_iter()
            .filter_map(|l| match l {
                Layer::Norm(n) if !matches!(n, Norm::Identity) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// The final linear classifier (`fc`, `linear` or `classifier`, as the reference names it).
    pub fn head(&self) -> &Linear {
        match &self.net {
            Net::PreResNet(n) => &n.fc,
            Net::ResNet(n) => &n.linear,
            Net::Vgg(n) => &n.classifier,
        }
    }

    fn layers(&self) -> Vec<Layer<'_>> {
        match &self.net {
            Net::PreResNet(n) => n.layers(),
            Net::ResNet(n) => n.layers(),
            Net::Vgg(n) => n.layers(),
        }
    }

    /// The spec the model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The store holding the parameters and buffers.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Every parameter (trainable or frozen) by role, each group sorted by name; roles the
    /// model does not use are absent.
    pub fn groups(&self) -> BTreeMap<Role, Vec<(String, Var)>> {
        let mut out: BTreeMap<Role, Vec<(String, Var)>> = BTreeMap::new();
        for (name, p) in self.store.params() {
            out.entry(p.role).or_default().push((name, p.var));
        }
        out
    }

    /// The trainable parameters by role (what an optimizer gets), sorted by name.
    pub fn trainable_groups(&self) -> BTreeMap<Role, Vec<(String, Var)>> {
        self.store.trainable_groups()
    }

    /// The scale-invariant group, sorted by name (empty with `norm: none`).
    pub fn scale_invariant(&self) -> Vec<(String, Var)> {
        self.store.role(Role::ScaleInvariant)
    }

    /// Multiplies every weight of the scale-invariant group by `c` in place (the S1 check:
    /// the loss must not change).
    pub fn scale_scale_invariant(&self, c: f64) -> Result<()> {
        if !(c.is_finite() && c > 0.0) {
            return Err(ZooError::Scale(c));
        }
        for (_, v) in self.scale_invariant() {
            v.set(&v.as_tensor().affine(c, 0.0)?)?;
        }
        Ok(())
    }

    /// The Euclidean norm of one parameter, given by its full name (`layer1.0.conv1.weight`)
    /// or by its layer's name (`layer1.0.conv1`, meaning that layer's `weight`), computed in
    /// f64.
    pub fn weight_norm(&self, name: &str) -> Result<f64> {
        let params = self.store.params();
        let with_weight = format!("{name}.weight");
        let found = params
            .iter()
            .find(|(n, _)| n == name)
            .or_else(|| params.iter().find(|(n, _)| *n == with_weight));
        match found {
            Some((_, p)) => Ok(l2_norm(p.var.as_tensor())?),
            None => Err(ZooError::UnknownParam {
                name: name.to_string(),
                example: params
                    .iter()
                    .map(|(n, _)| n.clone())
                    .find(|n| n.ends_with(".weight"))
                    .unwrap_or_default(),
            }),
        }
    }

    /// The Euclidean norm of the whole scale-invariant group, computed in f64 over the
    /// tensors in sorted order.
    pub fn scale_invariant_norm(&self) -> Result<f64> {
        let mut sq = 0.0;
        for (_, v) in self.scale_invariant() {
            sq += l2_norm(v.as_tensor())?.powi(2);
        }
        Ok(sq.sqrt())
    }

    /// Number of scalar parameters (buffers excluded), as PyTorch's
    /// `sum(p.numel() for p in model.parameters())`.
    pub fn num_params(&self) -> usize {
        self.store.num_params()
    }
}

fn l2_norm(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?
        .sqrt())
}

impl candle_nn::ModuleT for Model {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Model::forward_t(self, x, train).map_err(candle_core::Error::wrap)
    }
}
