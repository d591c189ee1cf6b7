//! `ModelSpec`: the plain config a model is built from.

use std::fmt;

use explr_norm::NormKind;
use serde::{Deserialize, Serialize};

use crate::{Result, ZooError};

/// The architecture family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Pre-activation ResNet for CIFAR (BN→ReLU→conv basic blocks, identity shortcuts, a
    /// 1×1 projection where the shape changes), as bearpaw/pytorch-classification's
    /// `preresnet`. Depth 6k+2. The paper's main model is PreResNet-32.
    #[serde(rename = "preresnet")]
    PreResNet,
    /// The original CIFAR ResNet (conv→BN→ReLU, option-A zero-padding shortcut), as
    /// akamaster/pytorch_resnet_cifar10. Depth 6k+2 (20, 32, 44, 56, 110, …).
    #[serde(rename = "resnet")]
    ResNet,
    /// VGG-11/13/16/19 for CIFAR (conv→norm→ReLU, max pooling, one linear classifier), as
    /// kuangliu/pytorch-cifar.
    Vgg,
}

impl Arch {
    /// The base width when the spec gives none: 16 for the ResNets (stages 16/32/64), 64 for
    /// VGG (64…512).
    pub fn default_width(self) -> usize {
        match self {
            Arch::PreResNet | Arch::ResNet => 16,
            Arch::Vgg => 64,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::PreResNet => "PreResNet",
            Arch::ResNet => "ResNet",
            Arch::Vgg => "VGG",
        })
    }
}

fn default_norm() -> NormKind {
    NormKind::Batch
}

fn default_num_classes() -> usize {
    10
}

fn default_eps() -> f64 {
    1e-5
}

/// What model to build. Deserializes from a manifest (unknown keys are rejected); only
/// `arch` and `depth` are required.
///
/// The defaults reproduce the PyTorch references (BatchNorm, 10 classes, trainable γ/β and
/// head, eps 1e-5); the paper's setup sets `freeze_norm_affine` and `freeze_head`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The architecture family.
    pub arch: Arch,
    /// Depth: 6k+2 for the ResNets, 11/13/16/19 for VGG.
    pub depth: usize,
    /// Normalization after every conv that the reference normalizes (default `bn`).
    #[serde(default = "default_norm")]
    pub norm: NormKind,
    /// PreResNet only: the normalization before the pooled head, when it should differ from
    /// `norm`. InstanceNorm there leaves the network nothing to classify with: it standardizes
    /// every channel of every image over its positions, so the global average pool that
    /// follows sees the same mean and scale for every image (a PreResNet with `norm: in`
    /// throughout stays at chance accuracy); `final_norm: bn` keeps InstanceNorm in every
    /// block. Must make the network scale invariant (not `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_norm: Option<NormKind>,
    /// Output classes (default 10).
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
    /// Base width (channels of the first stage); `None` takes the reference's
    /// ([`Arch::default_width`]). Narrow widths make tiny test models.
    #[serde(default)]
    pub width: Option<usize>,
    /// Freeze every normalization γ = 1, β = 0 (registered and saved, never trained).
    #[serde(default)]
    pub freeze_norm_affine: bool,
    /// Freeze the final linear layer at its initialization.
    #[serde(default)]
    pub freeze_head: bool,
    /// The normalization eps (default 1e-5, PyTorch's); 0 makes scale invariance exact.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

impl ModelSpec {
    /// A spec with the reference defaults for `arch` at `depth`.
    pub fn new(arch: Arch, depth: usize) -> Self {
        Self {
            arch,
            depth,
            norm: default_norm(),
            final_norm: None,
            num_classes: default_num_classes(),
            width: None,
            freeze_norm_affine: false,
            freeze_head: false,
            eps: default_eps(),
        }
    }

    /// The paper's model: PreResNet-32, BatchNorm, 10 classes, γ/β and head frozen.
    pub fn paper() -> Self {
        Self {
            freeze_norm_affine: true,
            freeze_head: true,
            ..Self::new(Arch::PreResNet, 32)
        }
    }

    /// The same spec with another normalization.
    pub fn with_norm(mut self, norm: NormKind) -> Self {
        self.norm = norm;
        self
    }

    /// The same spec with another base width.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = Some(width);
        self
    }

    /// The base width in use.
    pub fn resolved_width(&self) -> usize {
        self.width.unwrap_or_else(|| self.arch.default_width())
    }

    /// Checks depth, width and class count; normalization settings are checked when the
    /// layers are built.
    pub fn validate(&self) -> Result<()> {
        let width = self.resolved_width();
        match self.arch {
            Arch::PreResNet | Arch::ResNet => {
                if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
                    return Err(ZooError::Depth {
                        arch: self.arch,
                        depth: self.depth,
                        hint: "the depth must be 6k+2 with k >= 1 (8, 14, 20, 32, 44, 56, 110, …)",
                    });
                }
                if width == 0 || (self.arch == Arch::ResNet && !width.is_multiple_of(2)) {
                    return Err(ZooError::Width {
                        arch: self.arch,
                        width,
                        hint: "the width must be positive, and even for ResNet (its option-A \
                               shortcut pads half the input channels on each side)",
                    });
                }
            }
            Arch::Vgg => {
                if crate::vgg::config(self.depth).is_none() {
                    return Err(ZooError::Depth {
                        arch: self.arch,
                        depth: self.depth,
                        hint: "VGG exists in depths 11, 13, 16 and 19",
                    });
                }
                if width == 0 {
                    return Err(ZooError::Width {
                        arch: self.arch,
                        width,
                        hint: "the width must be positive (64 is the reference)",
                    });
                }
            }
        }
        if self.num_classes == 0 {
            return Err(ZooError::NumClasses(self.num_classes));
        }
        if let Some(final_norm) = &self.final_norm {
            if self.arch != Arch::PreResNet {
                return Err(ZooError::FinalNorm {
                    arch: self.arch,
                    hint: "final_norm applies to preresnet only (the norm before its pooled \
                           head); remove it",
                });
            }
            if !final_norm.is_scale_invariant() || !self.norm.is_scale_invariant() {
                return Err(ZooError::FinalNorm {
                    arch: self.arch,
                    hint: "final_norm and norm must both be a normalization (bn, gn:<groups>, \
                           ln, in), not none: the last block's convs reach the head only \
                           through the final norm",
                });
            }
        }
        Ok(())
    }
}
